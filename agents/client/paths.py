"""`warren connect --paths N`: the policy of spreading new flows over N exits, with no I/O.

Each path is its own :class:`agents.client.agent.ClientAgent` (own TUN, channel, meter, liveness,
failover); this module decides how flows are spread over them and says so as text for the kernel
(agents.client.multipath applies it):

* **Which flows.** The full tunnel's default route (wg-quick's table, agents.client.routes) gets the
  source address :data:`SPREAD_V4` (RFC 7600's IPv4 dummy address) or :data:`SPREAD_V6`, held on
  ``lo``. A new connection from that address is one the full tunnel would carry and nobody bound to a
  path: it is spread. Everything else keeps its way: a socket bound to a path's TUN
  (``SO_BINDTODEVICE``, as `warren fetch` does), the nodes' control connections, the chain RPC's
  bypass, the LAN, and the first path's DNS resolvers (:func:`nft_script`'s ``keep``).
* **How.** An nftables ``route`` chain gives each new spread connection a conntrack mark drawn from
  a weighted ``numgen random mod 100`` map and copies it to the packet mark (conntrack keeps the
  flow on that path; the kernel routes the packet again when its mark changes); one ``ip rule`` per
  path sends the mark (its generation bits masked off) to the path's table, whose default route is
  the path's TUN; a ``snat`` per TUN gives the flow the path's tunnel address, so replies come back
  on the same TUN. Incoming packets get their TUN's mark, so strict reverse-path filtering (with
  ``src_valid_mark``, which the full tunnel sets) looks them up in the table they came from.
* **Weights.** In proportion to each live path's measured throughput (:class:`RateMeter`: the peak
  of a smoothed rate of the path's own tunnel counters, decaying, so a path keeps credit for what it
  showed it can carry), each live path at least :data:`MIN_SHARE` of the draws so that it keeps
  being measured; unmeasured paths count as the mean of the measured ones (:func:`weights`).
* **Dead paths.** A dead path draws nothing; its mark's *generation* is bumped, so its flows' old
  marks are stale: the filter chain answers their next TCP segment with a reset (other protocols are
  dropped), and the application reconnects over the live paths. A path back from a failover (a new
  session, maybe another address) gets a fresh generation too.

Marks: :data:`MARK_BASE` in the top 16 bits, the path index in bits 8-15, the generation in bits
0-7. Tables: :data:`PATH_TABLE_BASE` + index (its default route), :data:`CONTROL_TABLE_BASE` + index
(the node's control address of a path after the first, as the relay hop of `--hops 2` does).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "BUCKETS",
    "CONTROL_TABLE_BASE",
    "MARK_BASE",
    "MAX_PATHS",
    "MIN_SHARE",
    "NFT_TABLE",
    "PATH_TABLE_BASE",
    "PathPolicy",
    "PathSample",
    "PathState",
    "RateMeter",
    "SPREAD_V4",
    "SPREAD_V6",
    "choose_exits",
    "intervals",
    "nft_script",
    "own_lookups",
    "path_mark",
    "path_routes",
    "route_commands",
    "tun_name",
    "weights",
]

#: RFC 7600's "IPv4 dummy address", for a host with no address of its own to use: the source of the
#: flows the full tunnel carries, until a path's ``snat`` gives them that path's tunnel address.
SPREAD_V4 = "192.0.0.8"
#: The same for IPv6: a unique-local address of the client's own (``fd77:7061:7468::/48``, "path").
SPREAD_V6 = "fd77:7061:7468::8"
#: Our conntrack/packet marks: these 16 bits on top (no other Warren mark uses them; wg-quick's
#: fwmark, 51820, sits in the low 16 bits).
MARK_BASE = 0x5A500000
OURS_MASK = 0xFFFF0000
#: What an ``ip rule`` compares: base and path index, not the generation.
PATH_MASK = 0xFFFFFF00
#: At most this many paths (tables 51840-51847, control tables 51830-51837: next to wg-quick's 51820
#: and the relay hop's 51821).
MAX_PATHS = 8
PATH_TABLE_BASE = 51840
CONTROL_TABLE_BASE = 51830
#: Priority of the paths' rules: after the control rules (100), ahead of the chain RPC's bypass
#: (agents.client.routes.BYPASS_PRIORITY, 5210) and of wg-quick's two.
RULE_PRIORITY = 5100
#: The kernel's draw: ``numgen random mod BUCKETS``; a path's weight is its number of buckets.
BUCKETS = 100
#: A live path's least share of the draws (buckets): it keeps carrying some flows, so its rate
#: keeps being measured.
MIN_SHARE = 5
#: Weights are applied again when one moved by this many buckets (or a path's state changed).
REWEIGH_STEP = 5
#: A later path looks up exits behind a NAT from its own socket among the first this many of its
#: plan (its exit, its standby and one spare): each failed punch costs agents.client.discovery's
#: PATH_TIMEOUT_S, and the paths come up only once every path has looked.
OWN_LOOKUPS = 3
#: The nftables table (family inet) of the spreading.
NFT_TABLE = "warren_paths"
#: Smoothing of a path's rate (seconds, the time constant of an exponential average) and the
#: half-life of its remembered peak (seconds).
RATE_TAU_S = 2.0
PEAK_HALF_LIFE_S = 60.0
#: Rates below this (bytes/s, 2 Mbit/s) are keepalives, probes and light browsing, not a measure of
#: what the path can carry.
MEASURABLE_BPS = 256 * 1024
#: Generations cycle through 1..255 (0 is never live, so a fresh table never matches old flows).
GENERATIONS = 255


def tun_name(base: str, index: int) -> str:
    """Path ``index``'s TUN: the configured interface for the first, ``<base>p<index>`` after it
    (cut so the name stays within IFNAMSIZ's 15 characters)."""
    return base if index == 0 else f"{base[:12]}p{index}"


def path_mark(index: int, generation: int = 0) -> int:
    """The conntrack/packet mark of path ``index`` in ``generation`` (0: the ``ip rule``'s value)."""
    if not 0 <= index < MAX_PATHS or not 0 <= generation <= GENERATIONS:
        raise ValueError(f"path {index} generation {generation} out of range")
    return MARK_BASE | index << 8 | generation


# -- choosing exits ------------------------------------------------------------------------------


def choose_exits(ranked: Sequence, n: int) -> list[list]:
    """Plans for ``n`` paths from ranked candidates (best first): ``plans[i][0]`` is path i's exit.

    The first exits are the best of different operators, in rank order; the rest of each plan (its
    standby and spares) are the candidates no path starts on, of no other path's first operator.
    Where each path reaches each exit is :func:`path_routes`' concern (an exit behind a NAT is
    reached from every path's own socket).

    Returns:
        ``n`` plans, or ``[]`` when fewer than ``n`` operators can be used.
    """
    firsts: list = []
    operators: set = set()
    for candidate in ranked:
        if len(firsts) == n:
            break
        if candidate.node.operator not in operators:
            firsts.append(candidate)
            operators.add(candidate.node.operator)
    if len(firsts) < n:
        return []
    plans = []
    for first in firsts:
        others = operators - {first.node.operator}
        plans.append([first, *(c for c in ranked if c not in firsts and c.node.operator not in others)])
    return plans


def own_lookups(plans: Sequence[Sequence], local: Callable[[object], bool], *,
                limit: int = OWN_LOOKUPS) -> dict[int, list]:
    """The exits each later path must find its own way to: ``{path index: candidates}``.

    ``local(c)`` says that the endpoint the first tunnel found for ``c`` belongs to that tunnel's
    socket: punched through the exit's NAT (the mapping admits that socket's address and port only)
    or a relay bridge on that tunnel. Public endpoints serve every path as they are. Only the first
    ``limit`` candidates of each plan are looked up (a punch that fails costs seconds); local exits
    further down are left out of that path's plan (:func:`path_routes`).
    """
    return {index: wanted for index, plan in enumerate(plans)
            if index > 0 and (wanted := [c for c in plan[:limit] if local(c)])}


def path_routes(plans: Sequence[Sequence], shared: Mapping[bytes, tuple], local: Callable[[object], bool],
                own: Mapping[tuple[int, bytes], tuple]) -> list[list[tuple[object, tuple]]]:
    """Each path's plan as ``(candidate, endpoint)`` pairs, in plan order.

    Args:
        plans: from :func:`choose_exits`.
        shared: node id -> the endpoint found from the first tunnel's socket.
        local: whether that endpoint serves the first tunnel only (see :func:`own_lookups`).
        own: ``(path index, node id)`` -> the endpoint path index found from its own socket.

    Returns:
        The pairs; an exit a later path found no way to from its own socket is left out of that
        path's plan (its next candidate starts it), so a plan may come out empty.
    """
    out = []
    for index, plan in enumerate(plans):
        pairs = []
        for c in plan:
            endpoint = shared.get(c.node.node_id) if index == 0 or not local(c) else own.get((index, c.node.node_id))
            if endpoint is not None:
                pairs.append((c, tuple(endpoint)))
        out.append(pairs)
    return out


# -- weights -------------------------------------------------------------------------------------


def weights(capacities: Sequence[float | None], alive: Sequence[bool], *, total: int = BUCKETS,
            floor: int = MIN_SHARE) -> list[int]:
    """Buckets per path (summing to ``total`` over the live paths; 0 for dead ones).

    Each live path gets ``floor`` buckets (less if there are too many paths for that) and the rest
    is shared in proportion to its capacity (bytes/s); a live path with no capacity measured yet
    counts as the mean of those measured (as 1 when none is). Rounded by largest remainder, ties to
    the lower index.
    """
    if len(capacities) != len(alive):
        raise ValueError("one capacity per path")
    out = [0] * len(alive)
    live = [i for i, ok in enumerate(alive) if ok]
    if not live:
        return out
    known = [capacities[i] for i in live if capacities[i]]
    guess = sum(known) / len(known) if known else 1.0
    raw = {i: capacities[i] or guess for i in live}
    floor = min(floor, total // len(live))
    spare = total - floor * len(live)
    whole = sum(raw.values())
    exact = {i: floor + spare * raw[i] / whole for i in live}
    for i in live:
        out[i] = math.floor(exact[i])
    for i in sorted(live, key=lambda i: (out[i] - exact[i], i))[:total - sum(out)]:
        out[i] += 1
    return out


def intervals(buckets: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(first, last, index)`` bucket ranges of the draw (inclusive), for paths with weight."""
    out, start = [], 0
    for index, count in enumerate(buckets):
        if count > 0:
            out.append((start, start + count - 1, index))
            start += count
    return out


class RateMeter:
    """Each path's throughput from its tunnel's byte counter (rx + tx of its current peer).

    :meth:`sample` smooths the counter's rate (exponential average, :data:`RATE_TAU_S`) and keeps its
    peak, which halves every :data:`PEAK_HALF_LIFE_S` unless renewed: a path that showed it can carry
    50 Mbit/s is still believed while it carries less because it was given fewer flows. A new session
    (failover: another node) starts from nothing.
    """

    def __init__(self, tau_s: float = RATE_TAU_S, half_life_s: float = PEAK_HALF_LIFE_S) -> None:
        self.tau_s = tau_s
        self.half_life_s = half_life_s
        self._last: dict[int, tuple[object, int, float]] = {}
        self._rate: dict[int, float] = {}
        self._peak: dict[int, float] = {}

    def sample(self, index: int, session: object, counter: int, now: float) -> None:
        """Path ``index``'s counter (bytes) at ``now`` (seconds), on session ``session``."""
        last = self._last.get(index)
        self._last[index] = (session, counter, now)
        if last is None or last[0] != session or counter < last[1]:
            self._rate[index] = 0.0
            self._peak[index] = 0.0
            return
        dt = now - last[2]
        if dt <= 0:
            return
        alpha = 1 - math.exp(-dt / self.tau_s)
        rate = self._rate[index] + alpha * ((counter - last[1]) / dt - self._rate[index])
        self._rate[index] = rate
        self._peak[index] = max(rate, self._peak[index] * 0.5 ** (dt / self.half_life_s))

    def rate(self, index: int) -> float:
        """The smoothed rate now (bytes/s)."""
        return self._rate.get(index, 0.0)

    def capacity(self, index: int) -> float | None:
        """The remembered peak (bytes/s), or None while it is below :data:`MEASURABLE_BPS`."""
        peak = self._peak.get(index, 0.0)
        return peak if peak >= MEASURABLE_BPS else None


# -- path states ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PathSample:
    """What the runtime reads from one path's agent.

    Attributes:
        index: the path's number (0 is the first: DNS, the full tunnel's own TUN).
        tun: its TUN's name.
        session: what names its current session (a channel id), None while it has none.
        address_v4 / address_v6: its tunnel addresses (None while it has no session).
        alive: whether the agent counts its node as answering.
        counter: rx + tx bytes of its current peer.
    """

    index: int
    tun: str
    session: str | None
    address_v4: str | None
    address_v6: str | None
    alive: bool
    counter: int = 0


@dataclasses.dataclass(frozen=True)
class PathState:
    """A path as the kernel is told of it: its TUN, addresses, whether it draws flows, its mark."""

    index: int
    tun: str
    address_v4: str | None
    address_v6: str | None
    alive: bool
    generation: int

    @property
    def mark(self) -> int:
        """The mark its new flows get now."""
        return path_mark(self.index, self.generation)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What :meth:`PathPolicy.observe` concluded: states, buckets, and whether to apply them."""

    states: tuple[PathState, ...]
    buckets: tuple[int, ...]
    changed: bool


class PathPolicy:
    """Samples in, states and weights out (sans-I/O; the caller applies :func:`nft_script`).

    A path's generation moves on when its session changes (a failover) and when it dies, so its
    earlier flows' marks are stale from then on. Weights are reported as changed when a path's state
    changed or a weight moved by ``step`` buckets or more.
    """

    def __init__(self, count: int, *, step: int = REWEIGH_STEP, meter: RateMeter | None = None) -> None:
        if not 1 <= count <= MAX_PATHS:
            raise ValueError(f"1 to {MAX_PATHS} paths, not {count}")
        self.count = count
        self.step = step
        self.meter = meter or RateMeter()
        self._generation = [1] * count
        self._seen: list[tuple | None] = [None] * count
        self.applied: Decision | None = None

    def observe(self, samples: Sequence[PathSample], now: float) -> Decision:
        """One look at every path (``samples`` in index order)."""
        if [s.index for s in samples] != list(range(self.count)):
            raise ValueError("one sample per path, in index order")
        states = []
        for s in samples:
            seen = (s.session, s.alive and s.address_v4 is not None)
            before = self._seen[s.index]
            if before is not None and seen != before and (seen[0] != before[0] or before[1]):
                self._generation[s.index] = self._generation[s.index] % GENERATIONS + 1
            self._seen[s.index] = seen
            self.meter.sample(s.index, s.session, s.counter, now)
            states.append(PathState(s.index, s.tun, s.address_v4, s.address_v6, seen[1], self._generation[s.index]))
        buckets = weights([self.meter.capacity(i) for i in range(self.count)], [s.alive for s in states])
        last = self.applied
        changed = (last is None or tuple(states) != last.states
                   or max(abs(a - b) for a, b in zip(buckets, last.buckets)) >= self.step)
        if not changed:
            return Decision(last.states, last.buckets, False)
        self.applied = Decision(tuple(states), tuple(buckets), True)
        return self.applied


# -- the kernel's view -----------------------------------------------------------------------------


def _elements(items: Sequence[str]) -> str:
    return f" elements = {{ {', '.join(items)} }};" if items else ""


def nft_script(states: Sequence[PathState], buckets: Sequence[int], *, keep: Sequence[str] = (),
               table: str = NFT_TABLE) -> str:
    """The whole spreading table, replacing any previous one in the same transaction.

    Args:
        states: every path (dead ones included: their TUN still marks incoming packets).
        buckets: weights from :func:`weights` (a dead path's 0).
        keep: destinations never spread (the first path's DNS resolvers): they leave by the first
            path's TUN, as with one path.
        table: the nftables table (family inet).
    """
    keep4 = [str(ipaddress.IPv4Address(a)) for a in keep if ":" not in a]
    keep6 = [str(ipaddress.IPv6Address(a)) for a in keep if ":" in a]
    live = [s for s in states if s.alive and buckets[s.index] > 0]
    draw = [f"{first}-{last} : {path_mark(i, states[i].generation):#x}" for first, last, i in intervals(
        [buckets[s.index] if s in live else 0 for s in states])]
    ours = f"ct mark and {OURS_MASK:#x} == {MARK_BASE:#x}"
    lines = [f"table inet {table} {{}}", f"delete table inet {table}", f"table inet {table} {{"]
    lines.append(f"  map draw {{ typeof numgen random mod {BUCKETS} : ct mark; flags interval;{_elements(draw)} }}")
    lines.append(f"  set live {{ type mark;{_elements([f'{s.mark:#x}' for s in live])} }}")
    lines.append(f"  set keep4 {{ type ipv4_addr;{_elements(keep4)} }}")
    lines.append(f"  set keep6 {{ type ipv6_addr;{_elements(keep6)} }}")
    lines += ["  chain spread {", "    type route hook output priority mangle; policy accept;"]
    if draw:
        pick = f"ct mark set numgen random mod {BUCKETS} map @draw"
        lines.append(f"    ct state new ip saddr {SPREAD_V4} ip daddr != @keep4 {pick}")
        lines.append(f"    ct state new ip6 saddr {SPREAD_V6} ip6 daddr != @keep6 {pick}")
    lines += [f"    {ours} meta mark set ct mark", "  }"]
    lines += ["  chain stale {", "    type filter hook output priority filter - 1; policy accept;",
              f"    {ours} ct mark != @live meta l4proto tcp reject with tcp reset",
              f"    {ours} ct mark != @live drop", "  }"]
    by_tun = ", ".join(f"{json.dumps(s.tun)} : {path_mark(s.index):#x}" for s in states)
    lines += ["  chain arrive {", "    type filter hook prerouting priority mangle + 10; policy accept;",
              f"    meta mark set iifname map {{ {by_tun} }}", "  }"]
    lines += ["  chain source {", "    type nat hook postrouting priority srcnat; policy accept;"]
    for s in states:
        if s.address_v4:
            lines.append(f"    oifname {json.dumps(s.tun)} ip saddr {SPREAD_V4} snat ip to "
                         f"{ipaddress.IPv4Address(s.address_v4)}")
        if s.address_v6:
            lines.append(f"    oifname {json.dumps(s.tun)} ip6 saddr {SPREAD_V6} snat ip6 to "
                         f"{ipaddress.IPv6Address(s.address_v6)}")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def route_commands(tuns: Sequence[str], full_table: int) -> tuple[list[list[str]], list[list[str]]]:
    """``ip`` arguments that install the paths' routing, and those that undo it.

    Per path: its table's default route into its TUN (and an ``unreachable`` default at the worst
    metric: when the TUN is gone, its flows find nothing rather than the main table), one rule for
    its mark and one for sockets bound to its TUN. Then the spread source addresses on ``lo`` and the
    full tunnel's default routes (table ``full_table``) given them as their source. Undoing deletes
    the rules and addresses and flushes the tables (the full tunnel's routes are
    agents.client.routes' to remove).
    """
    install: list[list[str]] = []
    undo: list[list[str]] = []
    for family in ("-4", "-6"):
        for index, tun in enumerate(tuns):
            table = str(PATH_TABLE_BASE + index)
            install += [[family, "route", "replace", "default", "dev", tun, "table", table],
                        [family, "route", "replace", "unreachable", "default", "table", table, "metric", "4294967295"]]
            for selector in (["fwmark", f"{path_mark(index):#x}/{PATH_MASK:#x}"], ["oif", tun]):
                rule = [*selector, "table", table, "priority", str(RULE_PRIORITY)]
                install.append([family, "rule", "add", *rule])
                undo.append([family, "rule", "del", *rule])
            # `ip -6 route flush` leaves unreachable routes in place: that one is deleted by name.
            undo += [[family, "route", "del", "unreachable", "default", "table", table, "metric", "4294967295"],
                     [family, "route", "flush", "table", table]]
    install += [["-4", "addr", "replace", f"{SPREAD_V4}/32", "dev", "lo"],
                ["-6", "addr", "replace", f"{SPREAD_V6}/128", "dev", "lo", "nodad"],
                ["-4", "route", "replace", "default", "dev", tuns[0], "src", SPREAD_V4, "table", str(full_table)],
                ["-6", "route", "replace", "default", "dev", tuns[0], "src", SPREAD_V6, "table", str(full_table)]]
    undo += [["-4", "addr", "del", f"{SPREAD_V4}/32", "dev", "lo"], ["-6", "addr", "del", f"{SPREAD_V6}/128", "dev", "lo"]]
    return install, undo
