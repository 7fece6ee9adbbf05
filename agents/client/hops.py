"""`warren connect --hops 2`: the exit's tunnel runs inside a tunnel to a relay node.

Two :class:`agents.client.agent.ClientAgent` objects, one per hop, each with its own TUN, channel,
meter, standby and failover (the machinery of one hop, reused whole):

* the **relay hop** (outer): a normal paid session at the relay, whose session request names the
  exit endpoints (``relay_to``); the relay's exit table then forwards only WireGuard datagrams from
  this session to those endpoints (agents.node.exit). Its peer carries only the exits' ``/32`` and the
  node's control address; the host routes each exit endpoint's ``/32`` into this TUN. The relay is paid
  for the outer bytes it carries and sees only ciphertext between us and the exit's address.
* the **exit hop** (inner): the full tunnel (wg-quick's routes, DNS, the kill switch's tunnel), an
  ordinary session at the exit, paid on the inner bytes. Its UDP socket carries the tunnel's fwmark,
  so it follows the main table, where the exit's ``/32`` leads into the relay's TUN: the exit sees the
  relay's address as the client's, never ours.

The kill switch lets out only the relay endpoints on the uplink (plus both TUNs by name): when the
relay hop dies, nothing leaves until the standby relay is up; when its TUN is gone (the client
crashed) the exit's ``/32`` goes with it and the exit's datagrams meet the kill switch on the uplink.
The relay hop's tunnel runs in a child process (agents.wireguard.child; service.py starts it), so
the two tunnels' encryption, which holds the GIL, runs on two cores; the client agent of the relay
hop calls it over a socket pair. The child dies with the client (``PR_SET_PDEATHSIG``); a child that
dies alone takes its TUN and the exits' routes with it (the kill switch then drops the exit's
datagrams on the uplink) and is started again with the same key, the exits routed into the new TUN
and the relay hop failed over by its liveness (:meth:`TwoHops._outer_restarted`).
Both nodes use the same control address (fd77:7272::1), so the relay hop's route to it lives in a
table of its own, used only from the relay tunnel's quarantine address (``control_table``).

Relay and exit come from different operators (:func:`pair_plans`), the relay from ``--relay-region``
when given. The exit's endpoint comes from its signed PeerRecord only: the client never probes the
exit directly (a public exit endpoint is required: the relay cannot punch a NAT for us).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging

from agents.client.agent import NODE_CONTROL_V6, ClientAgent, Route
from agents.client.selection import Candidate
from agents.control import MAX_RELAY_TARGETS

__all__ = ["INNER_MTU", "RELAY_CONTROL_TABLE", "TwoHops", "exit_endpoint", "pair_plans", "relay_allowed_ips"]

log = logging.getLogger("warren.client")

#: The exit tunnel's MTU: the relay tunnel's 1420 less a second encapsulation's 80 bytes (IPv6
#: header 40 + UDP 8 + WireGuard's 32), so an inner packet fits the outer tunnel whatever family
#: carries it, and still >= 1280, the least IPv6 allows (RFC 8200) inside the tunnel.
INNER_MTU = 1340
#: The routing table of the relay hop's control route (any number wg-quick's 51820 does not use).
RELAY_CONTROL_TABLE = 51821
#: The exit hop's liveness is judged more patiently than the relay's: while the relay hop fails over
#: (about a second and a half) the exit hears nothing either, and must not fail over too.
INNER_PATIENCE_S = 4.0


def pair_plans(exits: list[Candidate], relays: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    """Exit and relay plans (best first) whose first choices belong to different operators.

    The exit plan keeps only exits whose operator differs from the first relay's, the relay plan only
    relays whose operator differs from the first exit's and that are not in the exit plan; so no
    operator sees both ends of the first pair. Returns ``([], [])`` when no such pair exists.
    """
    for first in exits:
        relay_plan = [r for r in relays if r.node.operator != first.node.operator]
        if not relay_plan:
            continue
        exit_plan = [first] + [e for e in exits if e is not first
                               and e.node.operator != relay_plan[0].node.operator]
        in_exit = {e.node.node_id for e in exit_plan}
        relay_plan = [r for r in relay_plan if r.node.node_id not in in_exit]
        if relay_plan:
            return exit_plan[:MAX_RELAY_TARGETS], relay_plan
    return [], []


def exit_endpoint(record) -> tuple[str, int] | None:
    """The first IPv4 endpoint of an exit's PeerRecord (the relay's exit table is IPv4), or None."""
    for host, port in getattr(record, "endpoints", ()) or ():
        with contextlib.suppress(ValueError):
            return str(ipaddress.IPv4Address(host)), int(port)
    return None


def relay_allowed_ips(exit_endpoints: list[tuple[str, int]]) -> tuple[str, ...]:
    """What the relay's peer carries: the exits' addresses and the node's control address, no more
    (the relay cannot put any other source address into our host)."""
    return tuple(dict.fromkeys(f"{host}/32" for host, _ in exit_endpoints)) + (f"{NODE_CONTROL_V6}/128",)


class _NoEndpoints:
    """The exit hop's kill switch view: its endpoints are reached only through the relay's TUN
    (which the kill switch lets through by name), so none is opened on the uplink."""

    def set_endpoints(self, endpoints) -> None:
        pass


class TwoHops:
    """A connection through a relay to an exit, as :mod:`agents.client.service` uses an agent.

    Args:
        outer_tunnel / inner_tunnel: started Tunnels (the relay's TUN, the exit's full-tunnel TUN); the
            outer one may be a :class:`agents.wireguard.child.ChildTunnel`.
        chain: the client's chain port (both channels).
        killswitch: the engaged kill switch's endpoint view (relay endpoints only).
        resolv: DNS pointing, for the exit hop.
        budget: each channel's deposit (token wei).
        dead_after_s / max_latency_s: the relay hop's liveness limits (the exit's are wider).
    """

    def __init__(self, *, outer_tunnel, inner_tunnel, chain, killswitch, resolv, budget: int,
                 exit_routes: list[Route], dead_after_s: float = 1.5, max_latency_s: float = 2.0) -> None:
        endpoints = [r.endpoint for r in exit_routes]
        self.exit_routes = list(exit_routes)
        self.outer_tunnel, self.inner_tunnel = outer_tunnel, inner_tunnel
        self.relay = ClientAgent(tunnel=outer_tunnel, chain=chain, killswitch=killswitch, budget=budget,
                                 dead_after_s=dead_after_s, max_latency_s=max_latency_s,
                                 allowed_ips=relay_allowed_ips(endpoints), control_table=RELAY_CONTROL_TABLE,
                                 request_extra={"relay_to": [list(e) for e in dict.fromkeys(endpoints)]})
        self.exit = ClientAgent(tunnel=inner_tunnel, chain=chain, killswitch=_NoEndpoints(), resolv=resolv,
                                budget=budget, dead_after_s=dead_after_s + INNER_PATIENCE_S,
                                max_latency_s=max_latency_s + INNER_PATIENCE_S)
        if hasattr(outer_tunnel, "on_restart"):  # a relay tunnel in a child process (agents.wireguard.child)
            outer_tunnel.on_restart = self._outer_restarted

    def _route_exits(self) -> None:
        """Route each exit endpoint's ``/32`` into the relay's TUN."""
        tun = self.outer_tunnel.tun
        for host, _ in dict.fromkeys(r.endpoint for r in self.exit_routes):
            tun.ip("-4", "route", "replace", f"{host}/32", "dev", tun.name)

    def _outer_restarted(self) -> None:
        """The relay tunnel's process died and a new one runs (same key, a new TUN and socket, no peer).

        Its TUN went with it, and with the TUN the exits' routes: until now the exit's datagrams met
        the kill switch on the uplink. The exits' routes are put back; the relay hop's peer is not:
        its counters now read None, so the relay hop's liveness finds it silent and fails over within
        ``dead_after_s`` (a fresh session, a fresh meter), while the exit hop waits for it.
        """
        log.warning("two hops: the relay tunnel's process was restarted: exits routed again, the relay hop "
                    "fails over")
        self._route_exits()

    def connect(self, relay_routes: list[Route]) -> None:
        """Relay hop first (with the exits' routes into it), then the exit hop through it.

        Raises:
            ConnectError: no relay or no exit could be used.
        """
        self._route_exits()
        self.relay.connect(relay_routes)
        try:
            self.exit.connect(self.exit_routes)
        except Exception:
            with contextlib.suppress(Exception):
                self.relay.disconnect()
            raise
        log.info("two hops: relay %s, exit %s", self.relay.session.route.candidate.node.node_id.hex()[:12],
                 self.exit.session.route.candidate.node.node_id.hex()[:12])

    @property
    def ip_rules(self) -> list[list[str]]:
        """``ip`` arguments that delete what this connection added outside its TUNs (for undo)."""
        rule = self.relay.control_rule
        return [["-6", "rule", "del", *rule]] if rule else []

    def status(self) -> dict:
        """The exit hop's status (what single-hop shows) plus the relay hop's under ``relay``."""
        exit_status, relay_status = self.exit.status(), self.relay.status()
        if hasattr(self.outer_tunnel, "restarts"):  # the relay tunnel's process (agents.wireguard.child)
            relay_status["tunnel_process"] = {"pid": self.outer_tunnel.pid, "alive": self.outer_tunnel.alive,
                                              "restarts": list(self.outer_tunnel.restarts)}
        return {**exit_status, "hops": 2, "relay": relay_status,
                "connected": bool(exit_status.get("connected") and relay_status.get("connected"))}

    def disconnect(self) -> dict:
        """Close the exit's channel first (its close travels through the relay), then the relay's."""
        summary = {"exit": self.exit.disconnect()}
        summary["relay"] = self.relay.disconnect()
        return summary
