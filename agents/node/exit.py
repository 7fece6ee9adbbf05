"""The exit: one nftables table of the node's own (forwarding, masquerade, policy sets, drop counters).

:class:`ExitTable` writes table ``inet warren_exit`` in the current network namespace (the node runs
inside its own) with one ``nft -f -`` transaction, so it appears and disappears whole, and swaps the
policy part in one transaction too, so no packet ever sees half a policy. What it does, for packets
that come in on the WireGuard TUN interface:

* to the node itself (input): the control port (TCP) on the node's tunnel addresses from anyone in
  the pools or the quarantine prefix; DNS (UDP and TCP) on those addresses from admitted clients;
  anything else is dropped, so clients never reach the node's own services or its uplink address;
* forwarded: only from admitted (not suspended) clients, only out of the uplink, never to a denied
  range (the policy's fixed private/reserved denials plus its extra ones, checked on every packet);
  then established and related flows pass; new flows need an allowed port and, if the policy has an
  allow list, a destination in ``allow_cidrs`` or in the sets of addresses the node's resolver
  answered for allowed domains (entries expire with the record's TTL); replies come back only to
  admitted clients; the pools are masqueraded (IPv4 and IPv6) on the uplink;
* a relay session (the outer hop of `warren connect --hops 2`) is not in the admitted sets but in
  ``relaying4``: its IPv4 address may send only UDP to the exit endpoints it named at setup
  (``relay4``: client . address . port), only WireGuard messages (first payload byte 1-4, then three
  zero bytes), only out of the uplink, and gets only the replies; no DNS, no IPv6, nothing else. The
  relay never holds the inner keys, so it forwards ciphertext it cannot read or alter undetected.

Because established flows pass before the allow lists, a policy change or an expired DNS entry never
cuts a flow that was allowed when it started, and a running download survives :meth:`set_policy`;
denied ranges still apply to every packet.

Every packet dropped for a known client (admitted or suspended), in either direction, is counted in
that client's element of a counting set; :meth:`ExitTable.dropped` reads them so the node can leave
them out of the bill. Quarantined addresses are counted too, in a set whose entries expire.

Why ``nft`` as a subprocess and not Python bindings: the official bindings (``python3-nftables``,
over libnftables) are a Debian package for the system Python and are not on PyPI, so the node's
virtual environment cannot install them; the PyPI copies are unofficial and unmaintained. The ``nft``
command is the same library, takes the same script text, and applies a whole script as one
transaction. Reading the drop counters, four times a second, goes over netlink instead
(:mod:`agents.node.set_counters`): one ``nft -j`` listing costs milliseconds of CPU.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from agents.node.policy import ExitPolicy, address_denied
from agents.node.set_counters import SetCounters

__all__ = [
    "ExitError",
    "ExitTable",
    "MAX_RESOLVED_TTL_S",
    "MIN_RESOLVED_TTL_S",
    "default_uplink",
]

#: A resolved address stays allowed at least this long (seconds), whatever the record's TTL: clients
#: connect a moment after resolving, and stub resolvers and browsers cache answers for about a minute
#: even when the TTL is lower (Chrome's host cache keeps entries 60 s). Flows already open never need
#: the entry (established traffic passes), so a longer floor would only widen stale permissions.
MIN_RESOLVED_TTL_S = 60
#: ...and at most this long (one day, the cache-max-ttl of unbound and BIND): bounds how long an
#: address that has moved to someone else stays reachable. The resolver caps the TTL it hands clients
#: at the same value, so a client never caches an answer longer than its address stays allowed.
MAX_RESOLVED_TTL_S = 86_400
#: Entries in a counting set or a resolved-address set at most (a /16 pool has 65,534 clients).
SET_SIZE = 65_536
#: A quarantined address's drop counter is forgotten this long (seconds) after its last drop; the
#: session core drops an unpaid peer from quarantine well before (setup timeout, 20 s by default).
QUARANTINE_COUNTER_TIMEOUT_S = 600
#: Longest an ``nft`` or ``sysctl`` call may take (seconds), so a wedged netlink cannot hang the node.
COMMAND_TIMEOUT_S = 20.0
#: Interface names as Linux allows them (IFNAMSIZ 16 with the NUL), and nothing that could escape
#: the quotes of an nft script.
_IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
#: The first 32 bits of every WireGuard message (the paper's message types 1-4, then three reserved
#: zero bytes), as ``@th,64,32`` reads them: the UDP payload's first word, big-endian.
WG_FIRST_WORDS = ", ".join(f"0x{kind:02x}000000" for kind in (1, 2, 3, 4))

Runner = Callable[..., subprocess.CompletedProcess]


class ExitError(RuntimeError):
    """nft or sysctl refused: the message carries the command and its error output."""


def _local_run(argv: Sequence[str], *, check: bool = False, input: bytes | None = None,
               timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, input=input, timeout=timeout, check=check)


def default_uplink(run: Runner = _local_run) -> str:
    """The interface of the default route (IPv4 first, then IPv6).

    Raises:
        ExitError: there is no default route.
    """
    for family in ("-4", "-6"):
        proc = run(["ip", "-j", family, "route", "show", "default"], check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            for route in json.loads(proc.stdout):
                if route.get("dev"):
                    return route["dev"]
    raise ExitError("no default route: name the uplink interface")


def _addr(text: str, version: int) -> str:
    addr = ipaddress.ip_address(text.split("%")[0])
    if addr.version != version:
        raise ValueError(f"expected an IPv{version} address, got {text!r}")
    return str(addr)


def _net(text: str, version: int) -> str:
    net = ipaddress.ip_network(text)
    if net.version != version:
        raise ValueError(f"expected an IPv{version} prefix, got {text!r}")
    return str(net)


def _ifname(text: str, what: str) -> str:
    if not _IFNAME.match(text):
        raise ValueError(f"{what}: {text!r} is not an interface name")
    return text


def _port(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"expected a port 1-65535, got {value!r}")
    return value


def _elements(items: Iterable[str]) -> str:
    return ", ".join(items)


class ExitTable:
    """The node's exit (see the module docstring). Thread-safe; every change is one nft transaction.

    Args:
        tun: the WireGuard TUN interface clients arrive on.
        uplink: the interface towards the internet; None = the default route's (found at install).
        node_v4, node_v6: the node's own tunnel addresses.
        pool_v4, pool_v6: the clients' tunnel address pools (masqueraded on the uplink).
        quarantine_v6: the prefix of not-yet-paid clients' control addresses.
        control_port: the node's control service (TCP) on its tunnel addresses.
        dns_port: the node's resolver (UDP and TCP) on its tunnel addresses.
        policy: the exit policy to start with.
        table: the nftables table's name (family inet).
        run: how to run a command: ``run(argv, check=False, input=None) -> CompletedProcess``;
            default a local subprocess (tests pass a namespace's ``run``).

    Attributes:
        policy: the policy in force.
    """

    def __init__(self, tun: str, uplink: str | None, *, node_v4: str, node_v6: str, pool_v4: str,
                 pool_v6: str, quarantine_v6: str, control_port: int, dns_port: int,
                 policy: ExitPolicy, table: str = "warren_exit", run: Runner | None = None,
                 counters: SetCounters | None = None) -> None:
        self.tun = _ifname(tun, "tun")
        self.uplink = _ifname(uplink, "uplink") if uplink is not None else None
        self.node_v4 = _addr(node_v4, 4)
        self.node_v6 = _addr(node_v6, 6)
        self.pool_v4 = _net(pool_v4, 4)
        self.pool_v6 = _net(pool_v6, 6)
        self.quarantine_v6 = _net(quarantine_v6, 6)
        for port, what in ((control_port, "control_port"), (dns_port, "dns_port")):
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"{what}: expected a port 1-65535, got {port!r}")
        self.control_port = control_port
        self.dns_port = dns_port
        if not isinstance(policy, ExitPolicy):
            raise TypeError("policy: expected an ExitPolicy")
        self.policy = policy
        if not _NAME.match(table):
            raise ValueError(f"table: {table!r} is not a plain nftables name")
        self.table = table
        self._run = run or _local_run
        # The drop counters' netlink socket, opened on first use in the caller's namespace unless
        # given (one opened in the namespace ``run`` works in).
        self._counters, self._own_counters = counters, counters is None
        self._lock = threading.RLock()
        self._installed = False
        self._saved_sysctls: dict[str, str] = {}
        self._known: dict[str, str] = {}      # v4 -> v6 of every client not forgotten
        self._relays: dict[str, tuple[tuple[str, int], ...]] = {}  # v4 -> exit endpoints of a relay session
        self._active: set[str] = set()        # v4 of clients admitted and not suspended
        self._resolved: dict[str, float] = {}  # address -> monotonic expiry of its set entry

    # -- commands ---------------------------------------------------------------------------------

    def _nft(self, script: str) -> None:
        proc = self._run(["nft", "-f", "-"], check=False, input=script.encode())
        if proc.returncode != 0:
            raise ExitError(f"nft refused the exit table update: "
                            f"{proc.stderr.decode(errors='replace').strip()}")

    def _sysctl_get(self, key: str) -> str | None:
        proc = self._run(["sysctl", "-n", key], check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def _sysctl_set(self, key: str, value: str) -> None:
        proc = self._run(["sysctl", "-q", "-w", f"{key}={value}"], check=False)
        if proc.returncode != 0:
            raise ExitError(f"sysctl {key}={value} failed: {proc.stderr.decode(errors='replace').strip()}")

    # -- the ruleset ------------------------------------------------------------------------------

    def _t(self, kind: str, name: str) -> str:
        return f"{kind} inet {self.table} {name}"

    def _policy_script(self, policy: ExitPolicy, *, flush_resolved: bool) -> str:
        """Replace the policy sets and chains (run inside one transaction)."""
        lines = []
        for version, fam in ((4, "ip"), (6, "ip6")):
            lines.append(f"flush set inet {self.table} deny{version}")
            lines.append(f"add element inet {self.table} deny{version} "
                         f"{{ {_elements(policy.denied_networks(version))} }}")
            lines.append(f"flush set inet {self.table} allow{version}")
            allowed = policy.allowed_networks(version)
            if allowed:
                lines.append(f"add element inet {self.table} allow{version} {{ {_elements(allowed)} }}")
            if flush_resolved:
                lines.append(f"flush set inet {self.table} resolved{version}")
        lines.append(f"flush set inet {self.table} ports")
        ranges = policy.port_ranges()
        if ranges:
            lines.append(f"add element inet {self.table} ports "
                         f"{{ {_elements(str(a) if a == b else f'{a}-{b}' for a, b in ranges)} }}")
        for version, fam in ((4, "ip"), (6, "ip6")):
            chain = f"policy{version}"
            drop = f"goto drop_src{version}"
            rules = [
                f'oifname != "{self.uplink}" {drop}',
                f"{fam} daddr @deny{version} {drop}",
                "ct state established,related accept",
            ]
            if ranges is not None:
                rules += [f"meta l4proto != {{ tcp, udp }} {drop}", f"th dport != @ports {drop}"]
            if policy.restricted:
                rules += [f"{fam} daddr @allow{version} accept", f"{fam} daddr @resolved{version} accept",
                          drop]
            else:
                rules.append("accept")
            lines.append(f"flush chain inet {self.table} {chain}")
            lines += [f"add rule inet {self.table} {chain} {rule}" for rule in rules]
        return "\n".join(lines) + "\n"

    def _table_script(self) -> str:
        t, tun, up = self.table, self.tun, self.uplink
        n4, n6, p4, p6, q6 = self.node_v4, self.node_v6, self.pool_v4, self.pool_v6, self.quarantine_v6
        cp, dp = self.control_port, self.dns_port
        return f"""
table inet {t}
delete table inet {t}
table inet {t} {{
    set admitted4 {{ type ipv4_addr; size {SET_SIZE}; }}
    set admitted6 {{ type ipv6_addr; size {SET_SIZE}; }}
    set drops4 {{ type ipv4_addr; size {SET_SIZE}; counter; }}
    set drops6 {{ type ipv6_addr; size {SET_SIZE}; counter; }}
    set qdrops6 {{ type ipv6_addr; size {SET_SIZE}; flags dynamic,timeout; timeout {QUARANTINE_COUNTER_TIMEOUT_S}s; counter; }}
    set deny4 {{ type ipv4_addr; flags interval; auto-merge; }}
    set deny6 {{ type ipv6_addr; flags interval; auto-merge; }}
    set allow4 {{ type ipv4_addr; flags interval; auto-merge; }}
    set allow6 {{ type ipv6_addr; flags interval; auto-merge; }}
    set resolved4 {{ type ipv4_addr; size {SET_SIZE}; flags timeout; }}
    set resolved6 {{ type ipv6_addr; size {SET_SIZE}; flags timeout; }}
    set ports {{ type inet_service; flags interval; auto-merge; }}
    set relaying4 {{ type ipv4_addr; size {SET_SIZE}; }}
    set relay4 {{ type ipv4_addr . ipv4_addr . inet_service; size {SET_SIZE}; }}

    chain drop_src4 {{
        ip saddr @drops4 drop
        counter drop
    }}
    chain drop_src6 {{
        ip6 saddr @drops6 drop
        ip6 saddr {q6} update @qdrops6 {{ ip6 saddr }} drop
        counter drop
    }}
    chain drop_dst4 {{
        ip daddr @drops4 drop
        counter drop
    }}
    chain drop_dst6 {{
        ip6 daddr @drops6 drop
        ip6 daddr {q6} update @qdrops6 {{ ip6 daddr }} drop
        counter drop
    }}
    chain relay4 {{
        oifname != "{up}" goto drop_src4
        meta l4proto udp ip saddr . ip daddr . udp dport @relay4 @th,64,32 {{ {WG_FIRST_WORDS} }} accept
        goto drop_src4
    }}
    chain policy4 {{ }}
    chain policy6 {{ }}

    chain input {{
        type filter hook input priority filter; policy accept;
        iifname != "{tun}" accept
        ip saddr {p4} ip daddr {n4} tcp dport {cp} accept
        ip6 saddr {{ {p6}, {q6} }} ip6 daddr {n6} tcp dport {cp} accept
        ip saddr @admitted4 ip daddr {n4} meta l4proto {{ tcp, udp }} th dport {dp} accept
        ip6 saddr @admitted6 ip6 daddr {n6} meta l4proto {{ tcp, udp }} th dport {dp} accept
        meta nfproto ipv4 goto drop_src4
        meta nfproto ipv6 goto drop_src6
        drop
    }}
    chain from_tun {{
        ip saddr @relaying4 goto relay4
        ip saddr @admitted4 goto policy4
        ip6 saddr @admitted6 goto policy6
        meta nfproto ipv4 goto drop_src4
        meta nfproto ipv6 goto drop_src6
        drop
    }}
    chain to_tun {{
        ip daddr @relaying4 ct state established,related accept
        ip daddr @admitted4 ct state established,related accept
        ip6 daddr @admitted6 ct state established,related accept
        meta nfproto ipv4 goto drop_dst4
        meta nfproto ipv6 goto drop_dst6
        drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{tun}" jump from_tun
        oifname "{tun}" jump to_tun
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{up}" ip saddr {p4} masquerade
        oifname "{up}" ip6 saddr {p6} masquerade
    }}
}}
"""

    # -- lifecycle --------------------------------------------------------------------------------

    def install(self) -> None:
        """Create the table (replacing a stale one of the same name) and enable forwarding.

        The table and the first policy go in one transaction. Old sysctl values are remembered for
        :meth:`remove`. IPv6 forwarding makes Linux ignore router advertisements unless accept_ra is
        2, so the uplink's accept_ra goes from 1 to 2 (SLAAC keeps working on a home connection).

        Raises:
            ExitError: nft or sysctl failed (nothing is left half made: the table is removed again).
        """
        with self._lock:
            if self.uplink is None:
                self.uplink = default_uplink(self._run)
            self._nft(self._table_script() + self._policy_script(self.policy, flush_resolved=False))
            self._installed = True
            self._known.clear()
            self._active.clear()
            self._relays.clear()
            self._resolved.clear()
            try:
                wanted = {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}
                ra = f"net.ipv6.conf.{self.uplink.replace('.', '/')}.accept_ra"
                if self._sysctl_get(ra) == "1":
                    wanted[ra] = "2"
                for key, value in wanted.items():
                    old = self._sysctl_get(key)
                    if old is None:
                        raise ExitError(f"cannot read sysctl {key}")
                    if old != value:
                        self._saved_sysctls.setdefault(key, old)
                        self._sysctl_set(key, value)
            except Exception:
                self.remove()
                raise

    def remove(self) -> None:
        """Delete the table and restore the sysctls (idempotent; also fine if never installed).

        Raises:
            ExitError: nft refused (the sysctls are restored anyway).
        """
        with self._lock:
            try:
                # "add" then "delete" in one transaction succeeds whether or not the table exists.
                self._nft(f"table inet {self.table}\ndelete table inet {self.table}\n")
            finally:
                self._installed = False
                if self._own_counters and self._counters is not None:
                    self._counters.close()
                    self._counters = None
                self._known.clear()
                self._active.clear()
                self._relays.clear()
                self._resolved.clear()
                saved, self._saved_sysctls = self._saved_sysctls, {}
                for key, value in saved.items():
                    self._sysctl_set(key, value)

    # -- clients ----------------------------------------------------------------------------------

    def _check_installed(self) -> None:
        if not self._installed:
            raise ExitError("the exit table is not installed")

    def admit(self, v4: str, v6: str, relay_to: Iterable[tuple[str, int]] | None = None) -> None:
        """Open the exit for a client's tunnel addresses (idempotent; resumes a suspended client).

        Args:
            relay_to: for a relay session, the IPv4 WireGuard endpoints ``(address, port)`` its
                datagrams may go to (and nothing else: see the module docstring); None: as at the
                first admission (a plain exit client, unless it was admitted as a relay).
        """
        v4, v6 = _addr(v4, 4), _addr(v6, 6)
        with self._lock:
            self._check_installed()
            t = self.table
            if relay_to is not None and v4 not in self._relays and relay_to:
                self._relays[v4] = tuple((_addr(a, 4), _port(p)) for a, p in relay_to)
            relays = self._relays.get(v4)
            script = f"add element inet {t} drops4 {{ {v4} }}\nadd element inet {t} drops6 {{ {v6} }}\n"
            if relays:
                targets = ", ".join(f"{v4} . {a} . {p}" for a, p in relays)
                script += (f"add element inet {t} relay4 {{ {targets} }}\n"
                           f"add element inet {t} relaying4 {{ {v4} }}\n")
            else:
                script += (f"add element inet {t} admitted4 {{ {v4} }}\n"
                           f"add element inet {t} admitted6 {{ {v6} }}\n")
            self._nft(script)
            self._known[v4] = v6
            self._active.add(v4)

    def suspend(self, v4: str, v6: str) -> None:
        """Cut a client off (nothing forwarded, no DNS; control port still open) but keep its counters."""
        v4, v6 = _addr(v4, 4), _addr(v6, 6)
        with self._lock:
            self._check_installed()
            if v4 not in self._known:
                raise ValueError(f"suspend: {v4} was never admitted")
            if v4 in self._active:
                self._nft("\n".join(self._admission_lines(v4, v6)) + "\n")
                self._active.discard(v4)

    def resume(self, v4: str, v6: str) -> None:
        """Serve a suspended client again."""
        self.admit(v4, v6)

    def forget(self, v4: str, v6: str) -> None:
        """Close the exit for a client and drop its counters (idempotent)."""
        v4, v6 = _addr(v4, 4), _addr(v6, 6)
        with self._lock:
            if not self._installed or v4 not in self._known:
                return
            t = self.table
            lines = [f"delete element inet {t} drops4 {{ {v4} }}",
                     f"delete element inet {t} drops6 {{ {v6} }}"]
            if v4 in self._active:
                lines += self._admission_lines(v4, v6)
            relays = self._relays.pop(v4, ())
            if relays:
                lines.append(f"delete element inet {t} relay4 {{ "
                             + ", ".join(f"{v4} . {a} . {p}" for a, p in relays) + " }")
            self._nft("\n".join(lines) + "\n")
            self._known.pop(v4, None)
            self._active.discard(v4)

    def _admission_lines(self, v4: str, v6: str) -> list[str]:
        """The deletions that stop forwarding for an active client (relay or exit)."""
        t = self.table
        if v4 in self._relays:
            return [f"delete element inet {t} relaying4 {{ {v4} }}"]
        return [f"delete element inet {t} admitted4 {{ {v4} }}", f"delete element inet {t} admitted6 {{ {v6} }}"]

    def is_admitted(self, address: str) -> bool:
        """Whether ``address`` (either family) belongs to an admitted, not suspended client."""
        try:
            addr = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        text = str(addr)
        with self._lock:
            active = self._active - self._relays.keys()  # a relay session gets no DNS, no exit
            if addr.version == 4:
                return text in active
            return any(self._known[v4] == text for v4 in active)

    # -- policy -----------------------------------------------------------------------------------

    def set_policy(self, policy: ExitPolicy) -> None:
        """Swap the policy in one transaction; admitted clients and established flows are kept.

        Addresses resolved for allowed domains are kept while the domain list is unchanged and
        flushed when it changes (clients resolve again; flows already open go on).
        """
        if not isinstance(policy, ExitPolicy):
            raise TypeError("policy: expected an ExitPolicy")
        with self._lock:
            if self._installed:
                flush = policy.allow_domains != self.policy.allow_domains
                self._nft(self._policy_script(policy, flush_resolved=flush))
                if flush:
                    self._resolved.clear()
            self.policy = policy

    def allow_resolved(self, answers: Iterable[tuple[str, float]]) -> None:
        """Let clients reach addresses the resolver answered for allowed domains, for their TTL.

        Each entry's timeout is the TTL clamped to [:data:`MIN_RESOLVED_TTL_S`,
        :data:`MAX_RESOLVED_TTL_S`]; an entry that would outlive the new one is left alone. Denied
        addresses (private, v4-mapped, ...) are skipped: the deny sets would refuse them anyway.
        """
        now = time.monotonic()
        with self._lock:
            if not self._installed:
                return
            lines = []
            for address, ttl in answers:
                try:
                    addr = ipaddress.ip_address(address)
                except ValueError:
                    continue
                text = str(addr)
                if address_denied(self.policy, text):
                    continue
                timeout = int(min(max(ttl, MIN_RESOLVED_TTL_S), MAX_RESOLVED_TTL_S))
                if self._resolved.get(text, 0.0) >= now + timeout - 1:
                    continue
                name = f"inet {self.table} resolved{addr.version}"
                # add (no-op if present), delete, add again: sets the new timeout in one transaction.
                lines += [f"add element {name} {{ {text} }}", f"delete element {name} {{ {text} }}",
                          f"add element {name} {{ {text} timeout {timeout}s }}"]
                self._resolved[text] = now + timeout
            if lines:
                self._nft("\n".join(lines) + "\n")
            for text in [a for a, expiry in self._resolved.items() if expiry < now]:
                del self._resolved[text]

    # -- counters ---------------------------------------------------------------------------------

    def dropped(self) -> dict[str, tuple[int, int]]:
        """Packets and bytes dropped per client address (both directions, since admission).

        Keys are canonical address text (IPv4 and compressed IPv6); a client's IPv4 and IPv6 figures
        are separate entries. Quarantined control addresses appear too, while they keep dropping.

        Raises:
            ExitError: the table is not installed or nft failed.
        """
        with self._lock:
            self._check_installed()
            if self._counters is None:
                self._counters = SetCounters(self.table)
            counters = self._counters
        out: dict[str, tuple[int, int]] = {}
        for name in ("drops4", "drops6", "qdrops6"):
            try:
                elements = counters.read(name)
            except OSError as exc:
                raise ExitError(f"could not read the exit's drop counters ({name}): {exc}") from exc
            for key, (p, b) in elements.items():
                p0, b0 = out.get(key, (0, 0))
                out[key] = (p0 + p, b0 + b)
        return out
