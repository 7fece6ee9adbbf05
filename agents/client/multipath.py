"""`warren connect --paths N`: N exits at once, new flows spread over them (the I/O around
:mod:`agents.client.paths`).

Each path is a whole :class:`agents.client.agent.ClientAgent` with its own TUN, channel, meter,
standby and failover, so each path's node is paid for exactly the bytes its own tunnel counted.
The first path's TUN is the full tunnel's (wg-quick's routes, the node's DNS); the others' nodes are
reached through their own TUNs, each with the route to its node's control address in a table of its
own (:data:`agents.client.paths.CONTROL_TABLE_BASE` + index), as the relay hop of `--hops 2` does.

:class:`PathRouting` installs the paths' rules and routes and applies the spreading table that
:class:`agents.client.paths.PathPolicy` decides; :class:`MultiPath` runs the agents and, every
:data:`LOOK_S` (and at once when an agent connects or fails over), reads their counters and liveness
and applies the policy's decision when it changed. :class:`SharedEndpoints` is the kill switch as
each agent sees it: every agent sets its own endpoints, the kill switch lets out the union.

Exits behind a NAT: the endpoint the first tunnel's discovery punched (or its relay bridge) belongs
to that tunnel's socket, so every later path with such an exit in its plan runs a discovery of its
own on its own socket (:func:`reach_from_paths`, :meth:`agents.client.discovery.ClientDiscovery.sibling`):
it punches its own mapping through the exit's NAT, or falls back on a relay bridge of its own. Those
discoveries live as long as the paths (they keep the rendezvous registration and a relayed path up)
and :meth:`MultiPath.close` closes them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from agents.chain.revocations import RevocationFollower
from agents.client.agent import CONTROL_RULE_PRIORITY, NODE_CONTROL_V6, ClientAgent, Route
from agents.client.chain import OneCallAtATime
from agents.client.hostcmd import run
from agents.client.paths import (
    CONTROL_TABLE_BASE,
    NFT_TABLE,
    PathPolicy,
    PathSample,
    nft_script,
    route_commands,
)
from agents.client.revocation import ClientRevocations
from agents.node.session import quarantine_address
from agents.overlay.revocation import RevocationList
from agents.wireguard.tun import DEFAULT_FWMARK

__all__ = ["LOOK_S", "MultiPath", "PathRouting", "SharedEndpoints", "reach_from_paths"]

log = logging.getLogger("warren.client")

#: How often the paths are looked at (seconds): a dead path's weight moves within this of the agent
#: judging it dead (``dead_after_s``).
LOOK_S = 0.5
#: `warren status` waits this long for a path's agent (seconds): one failing over holds its lock
#: through a setup attempt (up to agents.client.agent.SETUP_TIMEOUT_S), and the status of the other
#: paths (`warren fetch` polls it to cut a dead path's transfer) must not wait for that.
STATUS_WAIT_S = 0.2


class SharedEndpoints:
    """The kill switch's endpoint set, shared by N agents: each sets its own, the union is let out.

    Args:
        killswitch: the engaged :class:`agents.client.killswitch.KillSwitch`.
        bootstrap: overlay bootstrap endpoints, always kept.
    """

    def __init__(self, killswitch, bootstrap: list) -> None:
        self._ks, self._bootstrap = killswitch, [tuple(b) for b in bootstrap]
        self._by_path: dict[int, list] = {}
        self._lock = threading.Lock()

    def view(self, index: int) -> "_PathEndpoints":
        """What path ``index``'s agent calls ``set_endpoints`` on."""
        return _PathEndpoints(self, index)

    def set(self, index: int, endpoints) -> None:
        """Path ``index``'s endpoints are now ``endpoints``; the kill switch gets the union."""
        with self._lock:
            self._by_path[index] = [tuple(e) for e in endpoints]
            union = dict.fromkeys(self._bootstrap + [e for each in self._by_path.values() for e in each])
            self._ks.set_endpoints(list(union))


class _PathEndpoints:
    def __init__(self, shared: SharedEndpoints, index: int) -> None:
        self._shared, self._index = shared, index

    def set_endpoints(self, endpoints) -> None:
        self._shared.set(self._index, endpoints)


def reach_from_paths(discoveries: dict, wanted: dict, stop: threading.Event | None = None) -> dict:
    """Each later path's own endpoints for the exits it must reach from its own socket.

    Args:
        discoveries: path index -> its :class:`agents.client.discovery.ClientDiscovery` (on that
            path's tunnel).
        wanted: path index -> candidates (from :func:`agents.client.paths.own_lookups`).
        stop: stop looking (the exits not tried yet are left out).

    Returns:
        ``{(path index, node id): endpoint}`` for every exit found; the paths look in parallel (each
        punch waits on round trips, not on the CPU), each path its exits one after the other.
    """
    found: dict = {}
    lock = threading.Lock()

    def look(index: int) -> None:
        for candidate in wanted[index]:
            if stop is not None and stop.is_set():
                return
            try:
                endpoint = discoveries[index].path_to(candidate.node.node_id)
            except Exception:
                log.exception("path %d: looking for node %s failed", index, candidate.node.node_id.hex()[:12])
                endpoint = None
            kind = discoveries[index].paths.get(int.from_bytes(candidate.node.node_id, "big"), ("none",))[0]
            log.info("path %d: node %s %s", index, candidate.node.node_id.hex()[:12],
                     f"reached {kind} at {endpoint[0]}:{endpoint[1]}" if endpoint else "not reached from its socket")
            if endpoint is not None:
                with lock:
                    found[(index, candidate.node.node_id)] = tuple(endpoint)

    threads = [threading.Thread(target=look, args=(index,), name=f"client-path{index}-discovery", daemon=True)
               for index in wanted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


class PathRouting:
    """The paths' rules, routes and spreading table (agents.client.paths), installed and undone.

    Args:
        tuns: each path's TUN, the first path's first (the full tunnel's).
        full_table: the full tunnel's routing table (agents.client.routes: wg-quick's, the fwmark).
        table: the nftables table.
        netns: act in this namespace (``ip netns exec``); None: the caller's own.
    """

    def __init__(self, tuns: list[str], *, full_table: int = DEFAULT_FWMARK, table: str = NFT_TABLE,
                 netns: str | None = None) -> None:
        self.tuns = list(tuns)
        self.table = table
        self.netns = netns
        self._install, self._undo = route_commands(self.tuns, full_table)

    @property
    def undo_ip(self) -> list[list[str]]:
        """``ip`` arguments that undo :meth:`install` (for the state file, written before it runs)."""
        return [list(args) for args in self._undo]

    def install(self) -> None:
        """Rules, routes and the spread source addresses; the table starts with nothing drawn.

        Raises:
            HostCommandError: `ip` or `nft` refused.
        """
        for args in self._install:
            run(["ip", *args], netns=self.netns)

    def apply(self, states, buckets, keep=()) -> None:
        """Replace the spreading table in one transaction (agents.client.paths.nft_script).

        Raises:
            HostCommandError: `nft` refused.
        """
        run(["nft", "-f", "-"], netns=self.netns, input=nft_script(states, buckets, keep=keep, table=self.table))

    def remove(self) -> None:
        """Undo everything (idempotent: what is already gone is skipped)."""
        for args in self._undo:
            run(["ip", *args], netns=self.netns, check=False)
        run(["nft", "-f", "-"], netns=self.netns, input=f"table inet {self.table} {{}}\ndelete table inet {self.table}\n")


class MultiPath:
    """N paths at once, as :mod:`agents.client.service` uses an agent.

    Args:
        tunnels: started Tunnels, one per path (the first is the full tunnel's).
        chain: the client's chain port (every path's channels).
        endpoints: the kill switch as the agents share it.
        resolv: DNS pointing (the first path's node answers DNS).
        budget: each channel's deposit (token wei).
        routing: the paths' :class:`PathRouting`.
        dead_after_s / max_latency_s: each path's liveness limits.
        discoveries: the later paths' own discoveries (:func:`reach_from_paths`), closed by
            :meth:`close`.
    """

    def __init__(self, *, tunnels, chain, endpoints: SharedEndpoints, resolv, budget: int, routing: PathRouting,
                 dead_after_s: float = 1.5, max_latency_s: float = 2.0, discoveries=()) -> None:
        self.tunnels = list(tunnels)
        self.discoveries = list(discoveries)
        self.routing = routing
        chain = OneCallAtATime(chain)
        self._wake = threading.Event()
        self.agents = [ClientAgent(tunnel=tunnel, chain=chain, killswitch=endpoints.view(index),
                                   resolv=resolv if index == 0 else None, budget=budget, dead_after_s=dead_after_s,
                                   max_latency_s=max_latency_s, on_event=lambda kind, data: self._wake.set(),
                                   control_table=None if index == 0 else CONTROL_TABLE_BASE + index)
                       for index, tunnel in enumerate(self.tunnels)]
        self.policy = PathPolicy(len(self.agents))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._revocations: list[ClientRevocations] = []

    @property
    def ip_rules(self) -> list[list[str]]:
        """``ip`` arguments that delete what this connection adds outside its TUNs: the paths' rules,
        tables and addresses, and each later path's control rule (known before it is added)."""
        undo = self.routing.undo_ip
        for index, tunnel in enumerate(self.tunnels[1:], start=1):
            table = str(CONTROL_TABLE_BASE + index)
            undo += [["-6", "rule", "del", "from", f"{quarantine_address(tunnel.public_key)}/128", "table", table,
                      "priority", str(CONTROL_RULE_PRIORITY)], ["-6", "route", "flush", "table", table]]
        return undo

    def connect(self, plans: list[list[Route]]) -> None:
        """Each path's agent on its plan (first route first), then the routing and the spreading.

        Raises:
            ConnectError: a path could not be brought up on any route of its plan (the paths already
                up are disconnected).
        """
        try:
            for agent, plan in zip(self.agents, plans):
                agent.connect(plan)
        except Exception:
            self.disconnect()
            self.close()
            raise
        self.routing.install()
        self.step(time.monotonic())
        self._thread = threading.Thread(target=self._run, name="client-paths", daemon=True)
        self._thread.start()
        log.info("%d paths: %s", len(self.agents), ", ".join(
            a.session.route.candidate.node.node_id.hex()[:12] for a in self.agents))

    # -- looking at the paths --------------------------------------------------------------------------

    def samples(self, now: float) -> list[PathSample]:
        """Each agent's session, addresses, liveness and counter, read now."""
        out = []
        for index, agent in enumerate(self.agents):
            session = agent.session
            if session is None:
                out.append(PathSample(index, agent.tunnel.tun.name, None, None, None, False))
                continue
            rx, tx = agent.tunnel.peer_counters(session.route.candidate.node.wg_public_key) or (0, 0)
            out.append(PathSample(index, agent.tunnel.tun.name, session.route.channel.channel_id.hex(),
                                  session.terms.address_v4, session.terms.address_v6,
                                  session.liveness.dead(now) is None, rx + tx))
        return out

    def step(self, now: float) -> None:
        """Look once; apply the policy's decision when it changed."""
        decision = self.policy.observe(self.samples(now), now)
        if not decision.changed:
            return
        first = self.agents[0].session
        keep = [NODE_CONTROL_V6, *(first.terms.dns if first is not None else ())]
        self.routing.apply(decision.states, decision.buckets, keep)
        log.info("paths: weights %s (live %s)", list(decision.buckets), [s.alive for s in decision.states])

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(LOOK_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.step(time.monotonic())
            except Exception:
                log.exception("paths: step failed")

    # -- the service's hooks -----------------------------------------------------------------------------

    def follow_revocations(self, port, start_block: int) -> "MultiPath":
        """One revocation follower per path (each fails its own agent over, refunds its own channels);
        closed by :meth:`close`."""
        self._revocations = [ClientRevocations(agent, RevocationFollower(port, RevocationList(),
                                                                         start_block=start_block)).start()
                             for agent in self.agents]
        return self

    def close(self) -> None:
        """Stop following revocations; close the later paths' discoveries."""
        for each in self._revocations:
            each.close()
        for each in self.discoveries:
            with contextlib.suppress(Exception):
                each.close()
        self.discoveries = []

    def status(self) -> dict:
        """The first path's status (what one path shows), ``connected`` while any path is, and every
        path's under ``paths`` (its TUN, weight, measured rate and liveness beside its session)."""
        applied = self.policy.applied
        paths = []
        for index, agent in enumerate(self.agents):
            state = applied.states[index] if applied else None
            paths.append({**_status_of(agent), "index": index, "tun": agent.tunnel.tun.name,
                          "alive": bool(state and state.alive),
                          "weight": applied.buckets[index] if applied else 0,
                          "rate_mbps": round(self.policy.meter.rate(index) * 8 / 1e6, 2)})
        return {**paths[0], "connected": any(p.get("connected") for p in paths), "paths": paths}

    def disconnect(self) -> dict:
        """Stop spreading, then close every path's channel (the later paths first, one at a time)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
        summary = {}
        for index in reversed(range(len(self.agents))):
            with contextlib.suppress(Exception):
                summary[index] = self.agents[index].disconnect()
        return {"paths": [summary.get(i, {}) for i in range(len(self.agents))]}


def _status_of(agent: ClientAgent) -> dict:
    """The agent's status, or a note while it is busy failing over (see :data:`STATUS_WAIT_S`)."""
    if not agent.lock.acquire(timeout=STATUS_WAIT_S):
        session = agent.session  # the one being left: who and which channel, read without the lock
        names = {} if session is None else {"node_id": session.route.candidate.node.node_id.hex(),
                                            "channel_id": session.route.channel.channel_id.hex()}
        return {**names, "connected": False, "note": "failing over"}
    try:
        return agent.status()
    finally:
        agent.lock.release()
