"""NAT traversal: reflexive addresses, rendezvous, simultaneous punching, keepalives, relay.

A sans-I/O part plugged into an :class:`~agents.overlay.core.OverlayNode` (its NAT and RELAYED
message types, its outbox and its timers), so it runs wherever the node runs: on the WireGuard
tunnel's socket, on a socket of its own, in a network-namespace lab.

The flow (as in libp2p's DCUtR and circuit relay, ICE-lite without STUN servers):

1. **Register / reflexive address.** A host behind a NAT sends REGISTER to a public overlay peer (its
   rendezvous); the peer records the address the datagram came from and answers REGISTERED with it:
   that is the host's reflexive (public) address. Re-registering every :data:`KEEPALIVE_S` keeps the
   NAT mapping (and the rendezvous' record of it) alive.
2. **Rendezvous.** To reach peer B, A sends CONNECT(B) to the rendezvous, which sends INTRO to both:
   each learns the other's reflexive address.
3. **Simultaneous punching.** Each first sends one PUNCH with a low IP TTL (:data:`LOW_TTL`) that
   opens its own NAT but dies before the peer's, then both send PUNCH to the other's address every
   :data:`PUNCH_INTERVAL_S`
   for :data:`PUNCH_TIMEOUT_S`. Each outgoing PUNCH opens the sender's own NAT for the reply; a PUNCH
   that gets through is answered with PUNCH_ACK to the address it came from (which, from a symmetric
   NAT, is a fresh mapping: answering there is what lets symmetric <-> cone pairs connect). The first
   PUNCH or PUNCH_ACK received makes the path **direct**.
4. **Relay.** If punching fails (symmetric NAT on one side and filtering on the other), the initiator
   asks a peer that volunteers as relay (RELAY_REQ); the relay opens a session with a byte and time
   budget (:class:`RelayLimits`) and tells both (RELAY_OK); data then travels as RELAYED frames
   through it. The pair keeps retrying a direct path every :data:`RETRY_DIRECT_S` and **upgrades**
   when a punch succeeds.
5. **Keepalives.** Direct paths get a KEEPALIVE every :data:`KEEPALIVE_S` so the NAT mappings stay.

NAT message body: ``sub-type u8 | fields``; sub-types are the ``_`` constants below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import wire
from .wire import Contact, Msg, decode_address, encode_address

__all__ = [
    "KEEPALIVE_S",
    "PUNCH_SYNC_S",
    "LOW_TTL",
    "PUNCH_INTERVAL_S",
    "PUNCH_TIMEOUT_S",
    "RETRY_DIRECT_S",
    "RelayLimits",
    "NatAgent",
    "Registered",
    "PathUp",
    "PathDown",
    "DataReceived",
]

# 15 s: below the shortest common UDP mapping timeout (30 s; RFC 4787 REQ-5 asks for >= 2 min, but
# many home routers use 30 s), as WireGuard's persistent-keepalive advice (25 s) also assumes.
KEEPALIVE_S = 15.0
PUNCH_INTERVAL_S = 0.2  # a punch every 200 ms: quick to succeed, cheap while it fails
PUNCH_TIMEOUT_S = 3.0  # give up on punching (and fall back to a relay) after this long
RETRY_DIRECT_S = 10.0  # while relayed, try a direct path again this often
# Delay between INTRO and the first punch, on both ends. Linux conntrack (and many home routers)
# creates a state entry for an unsolicited inbound datagram it drops; when the local host then sends
# to that same remote address and port, masquerade finds its usual source port "in use" by that entry
# and picks another one, so a port-restricted peer that punched first is filtered out forever. The
# punches must cross: both ends start at INTRO + PUNCH_SYNC_S (the rendezvous sends both INTROs at
# once; libp2p's DCUtR uses a measured RTT for the same purpose).
PUNCH_SYNC_S = 0.1
# IP TTL of the first punch: enough to leave our own NAT (host -> NAT router: 1 hop, and a home CPE
# chain rarely adds more than one more) but not to cross the internet to the peer's NAT, where an
# unsolicited datagram would leave exactly the conntrack entry described above. The classic "low-TTL"
# hole-punching trick (e.g. Ford, Srisuresh, Kegel, "Peer-to-Peer Communication Across NATs", 2005).
LOW_TTL = 2

_REGISTER, _REGISTERED, _CONNECT, _INTRO, _FAIL = 1, 2, 3, 4, 5
_PUNCH, _PUNCH_ACK, _RELAY_REQ, _RELAY_OK, _RELAY_END, _DATA, _KEEPALIVE = 6, 7, 8, 9, 10, 11, 12


@dataclass(frozen=True)
class RelayLimits:
    """What a volunteer relay grants one session.

    Attributes:
        max_bytes: payload bytes relayed per session (both directions together).
        max_seconds: session lifetime.
        max_sessions: concurrent sessions this relay carries.
    """

    max_bytes: int = 64 << 20
    max_seconds: float = 600.0
    max_sessions: int = 64


@dataclass
class Registered:
    """The rendezvous told us our reflexive (public) address."""

    addr: tuple


@dataclass
class PathUp:
    """A path to ``peer`` works: ``kind`` is ``"direct"`` (addr = peer's endpoint) or ``"relay"``
    (addr = relay's endpoint, session = relay session id)."""

    peer: int
    kind: str
    addr: tuple
    session: int = 0


@dataclass
class PathDown:
    """No path to ``peer`` (punching and relay both failed, or the relay ended the session)."""

    peer: int
    reason: str


@dataclass
class DataReceived:
    """Application data from ``peer`` over a ``direct`` or ``relay`` path."""

    peer: int
    data: bytes
    via: str


@dataclass
class _Peer:
    peer: int
    addr: tuple | None = None  # reflexive address from INTRO (where we punch)
    direct: tuple | None = None  # confirmed direct endpoint
    relay: tuple | None = None  # (relay address, session id)
    initiator: bool = False
    punch_until: float = 0.0
    next_punch: float = 0.0
    next_retry: float = float("inf")
    next_keepalive: float = float("inf")
    failed: bool = False


@dataclass
class _Session:
    a: int
    a_addr: tuple
    b: int
    b_addr: tuple
    bytes_left: int
    expires: float


@dataclass
class NatAgent:
    """NAT traversal for one overlay node (see the module docstring).

    Args:
        node: the overlay node whose socket and timers we share.
        relay_volunteer: whether this (public) node relays for others.
        limits: the relay's per-session budget.
    """

    node: object
    relay_volunteer: bool = False
    limits: RelayLimits = field(default_factory=RelayLimits)
    rendezvous: tuple | None = None
    #: More rendezvous we stay registered with (kept alive with the first), so that peers still find
    #: us through one of them when another dies; only the first's answer sets :attr:`reflexive`.
    backups: list = field(default_factory=list)
    #: Rendezvous (first and backups) that have answered REGISTERED.
    registered_at: set = field(default_factory=set)
    reflexive: tuple | None = None
    peers: dict = field(default_factory=dict)
    registry: dict = field(default_factory=dict)  # rendezvous side: node id -> (addr, last seen)
    sessions: dict = field(default_factory=dict)  # relay side: session id -> _Session
    stats: dict = field(default_factory=lambda: {"relayed_bytes": 0, "relay_refused": 0, "punches": 0})
    _next_register: float = float("inf")

    def __post_init__(self) -> None:
        self.node.handlers[wire.NAT] = self._on_nat
        self.node.handlers[wire.RELAYED] = self._on_relayed
        self.node.components.append(self)

    # ------------------------------------------------------------------ plumbing

    def _send(self, addr: tuple, sub: int, body: bytes = b"", ttl: int | None = None) -> None:
        self.node._send(addr, Msg(wire.NAT, self.node.id, sub=sub, data=body), ttl=ttl)

    def _emit(self, ev) -> None:
        self.node.events.append(ev)

    def _peer(self, peer: int) -> _Peer:
        p = self.peers.get(peer)
        if p is None:
            p = self.peers[peer] = _Peer(peer)
        return p

    def path(self, peer: int) -> str | None:
        """``"direct"``, ``"relay"`` or None: how data to ``peer`` would travel now."""
        p = self.peers.get(peer)
        if p is None:
            return None
        return "direct" if p.direct else "relay" if p.relay else None

    # ------------------------------------------------------------------ commands

    def register(self, rendezvous: tuple, now: float) -> None:
        """Register with a public overlay peer (and keep doing so every KEEPALIVE_S)."""
        self.rendezvous = tuple(rendezvous)
        for addr in [self.rendezvous, *self.backups]:
            self._send(addr, _REGISTER)
        self._next_register = now + KEEPALIVE_S

    def register_backup(self, rendezvous: tuple, now: float) -> None:
        """Also stay registered with ``rendezvous`` (see :attr:`backups`)."""
        addr = tuple(rendezvous)
        if addr != self.rendezvous and addr not in self.backups:
            self.backups.append(addr)
        self._send(addr, _REGISTER)

    def connect(self, peer: int, now: float) -> None:
        """Set up a path to ``peer`` (registered at the same rendezvous); PathUp/PathDown report."""
        p = self._peer(peer)
        p.initiator = True
        p.failed = False
        self._send(self.rendezvous, _CONNECT, peer.to_bytes(32, "big"))

    def send(self, peer: int, data: bytes, now: float) -> str:
        """Send application data to ``peer`` over its current path; returns the path used."""
        p = self.peers.get(peer)
        if p is not None and p.direct:
            self._send(p.direct, _DATA, data)
            return "direct"
        if p is not None and p.relay:
            relay, sid = p.relay
            self.node._send(relay, Msg(wire.RELAYED, self.node.id, sub=sid, data=data))
            return "relay"
        return ""

    def forget(self, peer: int, now: float) -> None:
        """Drop everything held for ``peer`` (a revoked node): its registration, paths, relay sessions."""
        self.registry.pop(peer, None)
        self.peers.pop(peer, None)
        for sid in [sid for sid, s in self.sessions.items() if peer in (s.a, s.b)]:
            self._end_session(sid)

    # ------------------------------------------------------------------ input

    def _on_nat(self, m: Msg, sender: Contact, now: float) -> None:
        sub, body, src = m.sub, m.data, sender.addr
        if sub == _REGISTER:
            if len(self.registry) < 4096 or sender.node_id in self.registry:
                self.registry[sender.node_id] = (src, now)
            self._send(src, _REGISTERED, encode_address(src))
        elif sub == _REGISTERED:
            addr, _ = decode_address(body, 0)
            if src != self.rendezvous and src not in self.backups:
                return  # nobody we registered with
            self.registered_at.add(src)
            if src == self.rendezvous and addr != self.reflexive:
                self.reflexive = addr
                self._emit(Registered(addr))
        elif sub == _CONNECT and len(body) >= 32:
            target = int.from_bytes(body[:32], "big")
            entry = self.registry.get(target)
            if entry is None or now - entry[1] > 3 * KEEPALIVE_S:
                self._send(src, _FAIL, body[:32])
                return
            self._send(src, _INTRO, body[:32] + encode_address(entry[0]))
            self._send(entry[0], _INTRO, sender.node_id.to_bytes(32, "big") + encode_address(src))
        elif sub == _INTRO and len(body) > 32:
            peer = int.from_bytes(body[:32], "big")
            addr, _ = decode_address(body, 32)
            p = self._peer(peer)
            p.addr = addr
            # Open our own NAT towards the peer with a punch that expires before reaching the peer's
            # NAT (see LOW_TTL), then punch for real a little later, when the peer has done the same.
            self._send(addr, _PUNCH, ttl=LOW_TTL)
            p.next_punch = now + PUNCH_SYNC_S
            p.punch_until = p.next_punch + PUNCH_TIMEOUT_S
        elif sub == _FAIL:
            peer = int.from_bytes(body[:32], "big")
            self._emit(PathDown(peer, "peer not registered at the rendezvous"))
        elif sub == _PUNCH:
            p = self.peers.get(sender.node_id)
            if p is None or p.addr is None:  # we were not introduced: ignore (no amplification)
                return
            self._send(src, _PUNCH_ACK)
            self._direct_up(p, src, now)
        elif sub == _PUNCH_ACK:
            p = self.peers.get(sender.node_id)
            if p is not None and p.addr is not None:
                self._direct_up(p, src, now)
        elif sub == _DATA:
            p = self.peers.get(sender.node_id)
            if p is not None and p.direct:
                self._emit(DataReceived(sender.node_id, body, "direct"))
        elif sub == _KEEPALIVE:
            pass
        elif sub == _RELAY_REQ and len(body) >= 32:
            self._relay_request(sender, int.from_bytes(body[:32], "big"), now)
        elif sub == _RELAY_OK and len(body) >= 40:
            sid = int.from_bytes(body[:8], "big")
            peer = int.from_bytes(body[8:40], "big")
            p = self._peer(peer)
            p.relay = (src, sid)
            if not p.direct:
                self._emit(PathUp(peer, "relay", src, sid))
            if p.initiator:
                p.next_retry = now + RETRY_DIRECT_S
        elif sub == _RELAY_END and len(body) >= 8:
            sid = int.from_bytes(body[:8], "big")
            for p in self.peers.values():
                if p.relay and p.relay[1] == sid:
                    p.relay = None
                    if not p.direct:
                        self._emit(PathDown(p.peer, "relay session ended"))

    def _direct_up(self, p: _Peer, addr: tuple, now: float) -> None:
        first = p.direct is None
        p.direct = addr
        p.punch_until = 0.0
        p.next_retry = float("inf")
        p.next_keepalive = now + KEEPALIVE_S
        if first:
            self._emit(PathUp(p.peer, "direct", addr))

    def _punch(self, p: _Peer, now: float) -> None:
        self._send(p.addr, _PUNCH)
        self.stats["punches"] += 1
        p.next_punch = now + PUNCH_INTERVAL_S

    # ------------------------------------------------------------------ relay side

    def _relay_request(self, sender: Contact, target: int, now: float) -> None:
        entry = self.registry.get(target)
        self._expire_sessions(now)
        if not self.relay_volunteer or entry is None or len(self.sessions) >= self.limits.max_sessions:
            self.stats["relay_refused"] += 1
            self._send(sender.addr, _FAIL, target.to_bytes(32, "big"))
            return
        sid = int.from_bytes(os.urandom(8), "big")
        self.sessions[sid] = _Session(sender.node_id, sender.addr, target, entry[0], self.limits.max_bytes,
                                      now + self.limits.max_seconds)
        self._send(sender.addr, _RELAY_OK, sid.to_bytes(8, "big") + target.to_bytes(32, "big"))
        self._send(entry[0], _RELAY_OK, sid.to_bytes(8, "big") + sender.node_id.to_bytes(32, "big"))

    def _expire_sessions(self, now: float) -> None:
        for sid in [sid for sid, s in self.sessions.items() if s.expires <= now]:
            self._end_session(sid)

    def _end_session(self, sid: int) -> None:
        s = self.sessions.pop(sid)
        for addr in (s.a_addr, s.b_addr):
            self._send(addr, _RELAY_END, sid.to_bytes(8, "big"))

    def _on_relayed(self, m: Msg, sender: Contact, now: float) -> None:
        s = self.sessions.get(m.sub)
        if s is not None:  # we are the relay
            if s.expires <= now or len(m.data) > s.bytes_left:
                self._end_session(m.sub)
                return
            if sender.node_id == s.a:
                s.a_addr, dst = sender.addr, s.b_addr
            elif sender.node_id == s.b:
                s.b_addr, dst = sender.addr, s.a_addr
            else:
                return
            s.bytes_left -= len(m.data)
            self.stats["relayed_bytes"] += len(m.data)
            self.node._send(dst, Msg(wire.RELAYED, sender.node_id, sub=m.sub, data=m.data))
            return
        p = self.peers.get(sender.node_id)  # we are an end: the frame keeps its origin's id
        if p is not None and p.relay and p.relay[1] == m.sub and tuple(p.relay[0]) == tuple(sender.addr):
            self._emit(DataReceived(sender.node_id, m.data, "relay"))

    # ------------------------------------------------------------------ time

    def next_deadline(self) -> float:
        t = self._next_register
        for p in self.peers.values():
            if p.punch_until:
                t = min(t, p.next_punch, p.punch_until)
            t = min(t, p.next_retry, p.next_keepalive)
        if self.sessions:
            t = min(t, min(s.expires for s in self.sessions.values()))
        return t

    def tick(self, now: float) -> None:
        if now >= self._next_register and self.rendezvous is not None:
            self.register(self.rendezvous, now)
        self._expire_sessions(now)
        for p in list(self.peers.values()):
            if p.punch_until:
                if now >= p.punch_until:
                    p.punch_until = 0.0
                    if p.direct is None and p.initiator and p.relay is None:
                        self._send(self.rendezvous, _RELAY_REQ, p.peer.to_bytes(32, "big"))
                    if p.relay is not None and p.initiator:
                        p.next_retry = now + RETRY_DIRECT_S
                elif now >= p.next_punch:
                    self._punch(p, now)
            if now >= p.next_retry:
                p.next_retry = float("inf")
                self._send(self.rendezvous, _CONNECT, p.peer.to_bytes(32, "big"))  # try direct again
            if now >= p.next_keepalive and p.direct:
                self._send(p.direct, _KEEPALIVE)
                p.next_keepalive = now + KEEPALIVE_S
