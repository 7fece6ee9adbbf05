"""The sans-I/O overlay node: datagrams and time in, datagrams and events out.

:class:`OverlayNode` holds one node's ring state and runs the Chord-style protocol (see
:mod:`agents.overlay.ring` for why fingers): iterative lookups, periodic stabilisation, finger repair,
record put/get replicated on successors, and ring broadcast (:mod:`agents.overlay.broadcast`). It has
no sockets, threads or clocks: callers pass ``now`` (seconds, any monotonic origin) into every call,
feed received datagrams to :meth:`OverlayNode.receive_datagram`, call :meth:`OverlayNode.tick` at
:meth:`OverlayNode.next_deadline`, and send what :meth:`OverlayNode.drain_outbox` returns. The same
class runs on real UDP sockets (:mod:`agents.overlay.runtime`) and in the simulator
(:mod:`agents.overlay.sim`).

Lookups are *iterative*: the originator asks one node at a time, each answering either "I own the key"
or with closer contacts. State lives only at the originator, so a dead hop costs one timeout and the
next-best candidate is tried; the ids of dead hops travel in the request so that the next node does
not point back at them (and a node whose predecessor died can claim ownership at once).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Callable

from . import wire
from .broadcast import BroadcastState
from .errors import LocalProtocolError, RecordRejected, RemoteProtocolError
from .ids import RING, in_half_open, in_open
from .records import REVOCATION
from .ring import SUCCESSORS, RoutingTable
from .wire import Contact, Msg

__all__ = ["TENTATIVE_EXTRA_QUERIES", "RECENTLY_DEAD_MAX", "OverlayConfig", "OverlayNode", "LookupDone", "Joined",
           "PutDone", "GetDone", "BroadcastDelivered", "ReflexiveAddress"]


# Queries a lookup may still spend looking for a better owner after a tentative answer (a node that
# claimed the key only because its predecessors died): enough to go back to the last node before the
# key and follow its fresher successor list (two or three hops).
TENTATIVE_EXTRA_QUERIES = 6

# Bound on the ids remembered as recently dead (memory per node); at 10% churn per period a node
# times out on a handful of peers per period, so this is never reached in practice.
RECENTLY_DEAD_MAX = 64


@dataclass
class OverlayConfig:
    """Tunables of one node.

    Attributes:
        stabilize_interval: seconds between stabilisation rounds (Chord's periodic stabilize).
        rpc_timeout: seconds before an unanswered request counts its target as failed; several times
            a WAN round trip (~100-300 ms). Split evenly between the first attempt and the retries.
        rpc_retries: retransmissions of an unanswered request within rpc_timeout, so that one lost
            datagram is not taken for a dead node.
        successors: successor list length (ring.SUCCESSORS).
        fingers_per_round: fingers refreshed by lookup per stabilisation round (Chord's fix_fingers
            refreshes one; fingers are also learned from every node heard from).
        max_lookup_queries: a lookup gives up after this many queries (bounded work per lookup).
        replicas: copies of each record: the owner and its next ``replicas - 1`` successors.
        republish_interval: seconds between re-publications of our own records and pushes of owned
            records to successors.
        broadcast_seen: how many broadcast ids to remember for duplicate suppression.
        liveness_checks: times per stabilisation period that a joined node pings its successor and
            predecessor (faster failure detection, as Pastry's leaf-set keepalives; 1 = only at
            stabilisation). A dead successor triggers stabilisation at once, so a node whose
            successor crashed re-announces itself to the next one within about
            ``stabilize_interval / liveness_checks + rpc_timeout`` rather than a whole period.
        lookup_attempts: searches a user lookup (:meth:`OverlayNode.lookup`) may run before it
            reports failure; a search that ends without an owner is started again.
        lookup_deadline: seconds after which a user lookup starts no new search (bounded time; a
            search itself is bounded by ``max_lookup_queries`` timeouts).
    """

    stabilize_interval: float = 10.0
    rpc_timeout: float = 1.0
    rpc_retries: int = 1
    successors: int = SUCCESSORS
    fingers_per_round: int = 2
    max_lookup_queries: int = 48
    replicas: int = 3
    republish_interval: float = 600.0
    broadcast_seen: int = 4096
    liveness_checks: int = 4
    lookup_attempts: int = 3
    lookup_deadline: float = 10.0


# ---------------------------------------------------------------------------------------- events


@dataclass
class LookupDone:
    """A lookup finished. ``owner`` is None if it failed; ``hops`` counts queries sent."""

    lookup_id: int
    key: int
    owner: Contact | None
    hops: int


@dataclass
class Joined:
    """The node found its successor and is part of the ring."""

    successor: Contact


@dataclass
class PutDone:
    """A record put finished: ``ok`` with the number of owners that acknowledged, or a reason."""

    op_id: int
    key: int
    ok: bool
    reason: str = ""


@dataclass
class GetDone:
    """A get finished with the valid records found (possibly none); ``rejected`` holds the raw
    records that failed validation here (e.g. a mesh IPRecord whose certificate we lack yet)."""

    op_id: int
    key: int
    records: list
    rejected: list = field(default_factory=list)


@dataclass
class BroadcastDelivered:
    """A ring broadcast reached this node (exactly once per id)."""

    bid: bytes
    payload: bytes
    depth: int


@dataclass
class ReflexiveAddress:
    """A peer told us the address it sees us at (our NAT's public mapping)."""

    addr: tuple
    reporter: int


# ---------------------------------------------------------------------------------------- internals


@dataclass
class _Pending:
    deadline: float
    target: Contact
    on_reply: Callable
    on_timeout: Callable
    expect: int  # reply message type
    datagram: bytes = b""  # the request, for a retransmission
    retries: int = 0  # retransmissions left before the target counts as failed


@dataclass
class _Lookup:
    lid: int
    key: int
    done: Callable
    guesses: list = field(default_factory=list)
    preceding: dict = field(default_factory=dict)
    queried: dict = field(default_factory=dict)  # node id -> (dead count, bound) when asked
    dead: list = field(default_factory=list)
    hops: int = 0
    finished: bool = False
    live_before: int | None = None  # closest live node whose successor list spans the key
    refills: int = 0  # times the candidates ran out and were refilled from our own table
    tentative: tuple | None = None  # (owner, its successors) claimed without a live predecessor
    budget: int = 1 << 30  # stop after this many queries (set once a tentative owner is known)
    contacts: dict = field(default_factory=dict)  # id -> contact of nodes that answered
    definitive: bool = False  # refuse tentative owners (a join must not start from a guess)
    verified: bool = False  # the tentative owner was asked again just before settling
    trace: list | None = None


class OverlayNode:
    """One overlay node's protocol state machine.

    Args:
        node_id: this node's ring id (keccak256 of its WireGuard public key).
        config: tunables.
        store: a :class:`agents.overlay.store.RecordStore` for records this node holds, or None for a
            node that only routes.
        rng: randomness source (seeded in tests and the simulator).
        now: the current time, to schedule the first stabilisation.
    """

    def __init__(self, node_id: int, config: OverlayConfig | None = None, *, store=None, rng=None, now: float = 0.0):
        self.id = node_id
        self.cfg = config or OverlayConfig()
        self.table = RoutingTable(node_id, self.cfg.successors)
        self.store = store
        self.rng = rng or random.Random()
        self.outbox: list[tuple[tuple, bytes]] = []
        self.events: list = []
        self.bcast = BroadcastState(self.cfg.broadcast_seen)
        self.handlers: dict[int, Callable] = {}  # extra message types (NAT, relay) -> fn(msg, sender, now)
        self.components: list = []  # extra sans-I/O parts (NAT agent) with tick(now)/next_deadline()
        self.reflexive: tuple | None = None
        self.stats = {"sent": 0, "received": 0, "dropped": 0, "timeouts": 0, "bcast_sent": 0, "retransmits": 0,
                      "lookup_retries": 0}
        self._pending: dict[int, _Pending] = {}
        self._txid = self.rng.getrandbits(32)
        self._next_op = 1
        self._next_stab = now + self.rng.uniform(0.5, 1.0) * self.cfg.stabilize_interval
        self._next_republish = now + self.cfg.republish_interval
        self._next_check = self._next_stab + self._check_period()
        self._recently_dead: dict[int, float] = {}  # node id -> until when to distrust hearsay of it
        self._finger_cursor = 0
        self._bootstrap: tuple | None = None
        self._joined = False
        self._published: dict[int, bytes] = {}  # our own records, by (kind, key) hash, to republish
        self.alive = True
        self.debug_lookups: list | None = None  # tests/diagnostics: keep lookup traces here
        self.gateway: Contact | None = None  # client mode: a ring member that routes our lookups
        self.refuse: Callable | None = None  # refuse(id): drop every datagram from it (revoked nodes)
        self.vet_owner: Callable | None = None  # vet_owner(key, id): believe its claim to own key?
        self.auth = None  # agents.overlay.auth.OverlayAuth: sender ids proven per datagram, or None

    # ------------------------------------------------------------------ plumbing

    def _send(self, addr: tuple, m: Msg, ttl: int | None = None) -> None:
        if ttl is None:
            self.outbox.append((addr, wire.encode(m)))
        else:  # an IP TTL for this datagram (NAT punching); transports that cannot set it drop it
            self.outbox.append((addr, wire.encode(m), ttl))
        self.stats["sent"] += 1

    def _new_txid(self) -> int:
        self._txid = (self._txid + 1) & 0xFFFFFFFF
        return self._txid

    def _request(self, target: Contact, m: Msg, expect: int, on_reply, on_timeout, now: float) -> None:
        m.txid = self._new_txid()
        attempts = self.cfg.rpc_retries + 1
        self._send(target.addr, m)
        self._pending[m.txid] = _Pending(now + self.cfg.rpc_timeout / attempts, target, on_reply, on_timeout,
                                         expect, self.outbox[-1][1], self.cfg.rpc_retries)

    def drain_outbox(self) -> list[tuple]:
        """Datagrams to send, as ``(address, bytes)`` pairs, or ``(address, bytes, ttl)`` for the
        few that need a given IP TTL (low-TTL NAT punches); clears the queue."""
        out, self.outbox = self.outbox, []
        return out if self.auth is None else self.auth.seal(out)

    def drain_events(self) -> list:
        """Events since the last call; clears the queue."""
        out, self.events = self.events, []
        return out

    def next_deadline(self) -> float:
        """The time :meth:`tick` next has work to do."""
        t = min(self._next_stab, self._next_republish, self._next_check)
        for p in self._pending.values():
            if p.deadline < t:
                t = p.deadline
        for comp in self.components:
            t = min(t, comp.next_deadline())
        return t

    def new_op_id(self) -> int:
        """A fresh operation id for lookups, puts, gets."""
        self._next_op += 1
        return self._next_op

    # ------------------------------------------------------------------ input

    def receive_datagram(self, data: bytes, addr: tuple, now: float) -> None:
        """Feed one datagram received from ``addr``; malformed (or, with auth, unproven) ones are dropped."""
        try:
            m = wire.decode(data if self.auth is None else self.auth.open(data, tuple(addr), now))
        except RemoteProtocolError:
            self.stats["dropped"] += 1
            return
        if m.sender == self.id or (self.refuse is not None and self.refuse(m.sender)):
            self.stats["dropped"] += 1
            return
        self.stats["received"] += 1
        sender = Contact(m.sender, tuple(addr))
        t = m.type
        if t in (wire.PONG, wire.FOUND, wire.NEIGHBOURS, wire.STORE_ACK, wire.VALUE, wire.BROADCAST_ACK):
            p = self._pending.get(m.txid)
            if p is None or p.expect != t or (p.target.node_id not in (0, m.sender)):
                self.stats["dropped"] += 1
                return
            del self._pending[m.txid]
            self.table.observe(sender)
            p.on_reply(m, sender, now)
            return
        if t == wire.BROADCAST:
            # learn nothing from a broadcast sender's table position: it is alive, so observe it
            self.table.observe(sender)
            self._on_broadcast(m, sender, now)
            return
        if t in self.handlers:  # NAT traversal and relay: the sender need not be a ring member
            self.handlers[t](m, sender, now)
            return
        if t not in (wire.PING, wire.FIND, wire.FETCH, wire.STORE):
            # requests that a joining node or a client (use_gateway) sends prove no ring membership
            self.table.observe(sender)
        if t == wire.PING:
            self._send(sender.addr, Msg(wire.PONG, self.id, m.txid, addr=sender.addr))
        elif t == wire.FIND:
            self._on_find(m, sender)
        elif t == wire.GET_NEIGHBOURS:
            tb = self.table
            old_pred = tb.predecessor or tb.pred2
            if m.flag:  # a joining node's handshake: notify first, so the reply confirms it
                tb.observe(sender)
                if tb.notified(sender, old_pred):
                    self._tell_successor()
            pred = tb.predecessor
            if m.flag and old_pred is not None and pred is not None and pred.node_id == sender.node_id:
                pred = old_pred  # the joiner's own predecessor: it owns (old_pred, joiner] at once
            cs = ((pred,) if pred else ()) + tuple(tb.successors[: wire.MAX_CONTACTS - 1])
            self._send(sender.addr, Msg(wire.NEIGHBOURS, self.id, m.txid, flag=1 if pred else 0, contacts=cs))
        elif t == wire.NOTIFY:
            tb = self.table
            before = tb.predecessor
            if tb.notified(sender, m.contacts[0] if m.contacts else None):
                if before != sender:
                    self._tell_successor()
            elif before is None and tb.predecessor is not None:
                # took our old predecessor's predecessor back instead: check it is alive
                self._request(tb.predecessor, Msg(wire.PING, self.id), wire.PONG,
                              lambda m, s, n: None, lambda t, n: None, now)
        elif t == wire.STORE:
            self._on_store(m, sender, now)
        elif t == wire.FETCH:
            recs = tuple(self.store.get(m.key, now)) if self.store is not None else ()
            out, size = [], wire.HEADER_SIZE + 1
            for r in recs:
                if size + 2 + len(r) > wire.MAX_DATAGRAM:
                    break
                out.append(r)
                size += 2 + len(r)
            self._send(sender.addr, Msg(wire.VALUE, self.id, m.txid, records=tuple(out)))
        elif t in self.handlers:
            self.handlers[t](m, sender, now)
        else:
            self.stats["dropped"] += 1

    def _tell_successor(self) -> None:
        """Our predecessor changed: tell our successor at once, so its pred2 stays current."""
        tb = self.table
        if tb.successors and tb.predecessor is not None:
            self._send(tb.successors[0].addr, Msg(wire.NOTIFY, self.id, contacts=(tb.predecessor,)))

    def _on_find(self, m: Msg, sender: Contact) -> None:
        tb, key, excl = self.table, m.key, set(m.ids)
        if not self._joined:  # still joining: we own nothing yet
            self._send(sender.addr, Msg(wire.FOUND, self.id, m.txid, flag=0, contacts=()))
            return
        mine = tb.ownership(key, excl, m.limit if m.flag & 1 else None)
        if mine:
            cs = (Contact(self.id, ("0.0.0.0", 0)),) + tuple(
                c for c in tb.successors[: self.cfg.replicas + 2] if c.node_id not in excl
            )
            self._send(sender.addr, Msg(wire.FOUND, self.id, m.txid, flag=1 if mine == 1 else 4, contacts=cs))
            return
        if m.flag & 4:  # the asker wants our contacts just before the key
            cs = tb.closest_preceding(key, excl | {sender.node_id})
            self._send(sender.addr, Msg(wire.FOUND, self.id, m.txid, flag=0, contacts=tuple(cs)))
            return
        guess = tb.owner_guess(key, excl)
        if guess:
            self._send(sender.addr, Msg(wire.FOUND, self.id, m.txid, flag=2, contacts=tuple(guess)))
            return
        back = tb.predecessor_guess(key, excl) if m.flag & 2 else []
        if back:
            self._send(sender.addr, Msg(wire.FOUND, self.id, m.txid, flag=3, contacts=tuple(back)))
        else:
            cs = tb.closest_preceding(key, excl | {sender.node_id})
            self._send(sender.addr, Msg(wire.FOUND, self.id, m.txid, flag=0, contacts=tuple(cs)))

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Fire due timers: request timeouts, stabilisation, re-publication."""
        if self._pending:
            due = [tx for tx, p in self._pending.items() if p.deadline <= now]
            for tx in due:
                p = self._pending.get(tx)
                if p is None:
                    continue
                if p.retries > 0:  # a lost datagram is not a dead node: send the request again
                    p.retries -= 1
                    p.deadline = now + self.cfg.rpc_timeout / (self.cfg.rpc_retries + 1)
                    self.outbox.append((p.target.addr, p.datagram))
                    self.stats["sent"] += 1
                    self.stats["retransmits"] += 1
                    continue
                del self._pending[tx]
                self.stats["timeouts"] += 1
                if p.target.node_id:
                    self.table.remove(p.target.node_id)
                    self._note_dead(p.target.node_id, now)
                p.on_timeout(p.target, now)
        for comp in self.components:
            comp.tick(now)
        if now >= self._next_stab:
            self._next_stab = now + self.rng.uniform(0.8, 1.2) * self.cfg.stabilize_interval
            self._next_check = now + self._check_period()
            self._stabilize(now)
        elif now >= self._next_check:
            self._next_check = now + self._check_period()
            self._check_neighbours(now)
        if now >= self._next_republish:
            self._next_republish = now + self.cfg.republish_interval
            self._republish(now)

    # ------------------------------------------------------------------ join / stabilise

    def use_gateway(self, addr: tuple, now: float) -> None:
        """Client mode (a host behind a NAT that does not join the ring): send lookups, puts and gets
        through the ring member at ``addr``; its id is learned from its PONG."""

        def learned(sender, now):
            self.gateway = sender

        self.ping(Contact(0, tuple(addr)), now, learned)

    def start_alone(self) -> None:
        """Be the first node of a new ring (no bootstrap peer)."""
        self._joined = True

    def bootstrap(self, addr: tuple, now: float) -> None:
        """Join the ring through any known peer at ``addr`` (its id is learned from its PONG)."""
        self._bootstrap = tuple(addr)
        self.ping(Contact(0, tuple(addr)), now, self._after_bootstrap_pong)

    def ping(self, target: Contact, now: float, then=None) -> None:
        """PING a contact (id 0 if unknown); its PONG reports our reflexive address."""

        def reply(m, sender, now):
            if m.addr is not None:
                if self.reflexive != m.addr:
                    self.reflexive = m.addr
                    self.events.append(ReflexiveAddress(m.addr, m.sender))
            if then:
                then(sender, now)

        def timeout(target, now):
            if then and not target.node_id:
                self._bootstrap_failed(now)

        self._request(target, Msg(wire.PING, self.id), wire.PONG, reply, timeout, now)

    def _bootstrap_failed(self, now: float) -> None:
        self._next_stab = now + self.cfg.stabilize_interval  # stabilisation retries the bootstrap

    def _after_bootstrap_pong(self, boot: Contact, now: float) -> None:
        def found(owner, hops, now, extra=()):
            if owner is None:
                return
            if owner.node_id != self.id:
                self.table.merge_successors(owner, extra)
            self._join_complete(now)

        self._lookup(self.id, now, found, seeds=[boot], definitive=True)

    def _join_complete(self, now: float) -> None:
        """Join handshake: GET_NEIGHBOURS with the notify flag, so that when its reply arrives our
        successor has already adopted us as predecessor; only then are we part of the ring."""
        tb = self.table
        if not tb.successors:
            return
        succ = tb.successors[0]

        def reply(m, sender, now):
            cs = list(m.contacts)
            pred = cs.pop(0) if m.flag else None
            if pred is not None and pred.node_id != self.id and in_open(pred.node_id, self.id, sender.node_id):
                # the lookup's answer was stale: a closer successor exists; handshake with it instead
                tb.merge_successors(pred, [sender] + cs)
                self._join_complete(now)
                return
            tb.merge_successors(sender, cs)
            if pred is not None and pred.node_id != self.id and tb.predecessor is None:
                tb.predecessor = pred  # our successor's previous predecessor is ours
            if self._joined:
                return
            self._joined = True
            self.events.append(Joined(sender))
            if tb.predecessor is not None:
                # Say hello to our predecessor: hearing from us puts us at the head of its successor
                # list now rather than at its next stabilisation (if our successor crashed meanwhile,
                # nobody else would know we exist).
                self._request(tb.predecessor, Msg(wire.GET_NEIGHBOURS, self.id), wire.NEIGHBOURS,
                              lambda m, s, n: None, lambda t, n: None, now)
            # Chord's init_finger_table: look every finger up once on join
            for i in tb.finger_indices()[::-1]:
                self._fix_finger(i, now)

        def timeout(target, now):
            if tb.successors:
                self._join_complete(now)

        self._request(succ, Msg(wire.GET_NEIGHBOURS, self.id, flag=1, contacts=()), wire.NEIGHBOURS, reply, timeout, now)

    def _note_dead(self, node_id: int, now: float) -> None:
        """Remember for one stabilisation period that ``node_id`` did not answer us, so that hearsay
        (a neighbour that has not noticed yet) does not put it straight back as our successor."""
        dead = self._recently_dead
        if len(dead) >= RECENTLY_DEAD_MAX:
            for k in [k for k, t in dead.items() if t <= now] or list(dead)[: RECENTLY_DEAD_MAX // 2]:
                del dead[k]
        dead[node_id] = now + self.cfg.stabilize_interval

    def _is_recently_dead(self, node_id: int, now: float) -> bool:
        t = self._recently_dead.get(node_id)
        return t is not None and t > now

    def _check_period(self) -> float:
        return self.cfg.stabilize_interval / max(self.cfg.liveness_checks, 1)

    def _check_neighbours(self, now: float) -> None:
        """Between stabilisations: ping successor and predecessor. A silent successor is dropped
        (in :meth:`tick`) and stabilisation runs at once with the next one, which then hears of us."""
        tb = self.table
        if not self._joined or self.cfg.liveness_checks <= 1:
            return
        if tb.successors:

            def succ_dead(target, now):
                if tb.successors:
                    self._stabilize(now, fix_fingers=False)

            self._request(tb.successors[0], Msg(wire.PING, self.id), wire.PONG, lambda m, s, n: None, succ_dead, now)
        p = tb.predecessor
        if p is not None:
            self._request(p, Msg(wire.PING, self.id), wire.PONG, lambda m, s, n: None, lambda t, n: None, now)

    def _stabilize(self, now: float, fix_fingers: bool = True) -> None:
        tb = self.table
        if not self._joined:
            if self._bootstrap is None:
                return  # a client (use_gateway) or a node never told to join: no ring upkeep
            if tb.successors:
                self._join_complete(now)  # we learned a successor: finish joining through it
            else:
                self.bootstrap(self._bootstrap, now)
            return
        if not tb.successors:
            if tb.predecessor is not None:
                tb.successors = [tb.predecessor]
            elif self._bootstrap is not None:
                self.bootstrap(self._bootstrap, now)
                return
            else:
                return
        succ = tb.successors[0]

        def reply(m, sender, now):
            cs = list(m.contacts)
            pred = cs.pop(0) if m.flag else None
            if pred is not None and pred.node_id != self.id and not self._is_recently_dead(pred.node_id, now) and (
                pred.node_id - self.id
            ) % RING < (sender.node_id - self.id) % RING:
                # someone joined between us and our successor: it becomes our successor
                tb.merge_successors(pred, [sender] + cs)
                nxt = pred
            else:
                tb.merge_successors(sender, cs)
                nxt = sender
            p = tb.predecessor
            self._send(nxt.addr, Msg(wire.NOTIFY, self.id, contacts=(p,) if p else ()))

        def timeout(target, now):
            if tb.successors:  # the dead successor was removed: try the next one at once
                self._stabilize(now, fix_fingers=False)

        self._request(succ, Msg(wire.GET_NEIGHBOURS, self.id), wire.NEIGHBOURS, reply, timeout, now)
        p = tb.predecessor
        if p is not None:
            self._request(p, Msg(wire.PING, self.id), wire.PONG, lambda m, s, n: None, lambda t, n: None, now)
        if fix_fingers:
            idx = tb.finger_indices()
            if idx:
                for _ in range(min(self.cfg.fingers_per_round, len(idx))):
                    self._finger_cursor = (self._finger_cursor + 1) % len(idx)
                    self._fix_finger(idx[-1 - self._finger_cursor], now)

    def _fix_finger(self, i: int, now: float) -> None:
        target = self.table.finger_target(i)

        def done(owner, hops, now, extra=()):
            if owner is not None:
                self.table.set_finger(i, owner)

        self._lookup(target, now, done)

    # ------------------------------------------------------------------ lookups

    def lookup(self, key: int, now: float) -> int:
        """Find the node responsible for ``key``; a :class:`LookupDone` event reports it.

        What a user gets: if a search ends without an owner (every candidate it knew timed out), the
        lookup starts again from our own, by then repaired, routing table, at most
        ``lookup_attempts`` times in all and only while ``lookup_deadline`` seconds have not passed
        since the call. ``hops`` counts the queries of every attempt. Bounded work: at most
        ``lookup_attempts * max_lookup_queries`` queries.
        """
        lid = self.new_op_id()
        deadline = now + self.cfg.lookup_deadline
        state = {"attempts": 1, "hops": 0}

        def done(owner, hops, now, extra=()):
            state["hops"] += hops
            if owner is None and state["attempts"] < self.cfg.lookup_attempts and now < deadline:
                state["attempts"] += 1
                self.stats["lookup_retries"] += 1
                self._lookup(key, now, done, lid=lid)
                return
            self.events.append(LookupDone(lid, key, owner, state["hops"]))

        self._lookup(key, now, done, lid=lid)
        return lid

    def _lookup(self, key: int, now: float, done: Callable, seeds=(), lid: int = 0, definitive: bool = False) -> None:
        tb = self.table
        if not seeds and not self._joined and self.gateway is not None:
            seeds = [self.gateway]  # a client outside the ring asks its gateway
        lk = _Lookup(lid, key, done, definitive=definitive)
        if self.debug_lookups is not None:
            lk.trace = []
            self.debug_lookups.append(lk)
        if not seeds:
            if self._joined and tb.owns(key):
                done(Contact(self.id, self.reflexive or ("0.0.0.0", 0)), 0, now, tuple(tb.successors))
                return
            lk.guesses = [(c, None, 2) for c in tb.owner_guess(key)]
            if lk.guesses:
                lk.live_before = self.id
            for c in tb.closest_preceding(key, n=3) or tb.successors[:3]:
                lk.preceding[c.node_id] = c
        else:
            for c in seeds:
                lk.preceding[c.node_id] = c
        self._lookup_step(lk, now)

    def _lookup_step(self, lk: _Lookup, now: float) -> None:
        if lk.finished:
            return
        nxt, back, mode = None, None, 2
        while lk.guesses:
            c, b, md = lk.guesses.pop(0)
            if md == 4 and c.node_id not in lk.dead:
                nxt, back, mode = c, None, 4
                break
            if c.node_id == self.id:
                if self._joined and self.table.owns(lk.key, set(lk.dead), lk.live_before):
                    # others point at us and our own table agrees: we are the owner
                    lk.finished = True
                    lk.done(Contact(self.id, self.reflexive or ("0.0.0.0", 0)), lk.hops, now, tuple(self.table.successors))
                    return
                continue
            if lk.queried.get(c.node_id) != (len(lk.dead), lk.live_before) and c.node_id not in lk.dead:
                # never asked, or asked before we knew what we know now
                nxt, back, mode = c, b, md
                break
        if nxt is None and not lk.preceding and lk.refills < 3:
            # out of candidates (all dead): fall back on our own table, minus the dead
            lk.refills += 1
            dead = set(lk.dead)
            state = (len(lk.dead), lk.live_before)
            for c in self.table.closest_preceding(lk.key, dead, n=3) or self.table.successors[:3]:
                if c.node_id not in dead and lk.queried.get(c.node_id) != state:
                    lk.preceding[c.node_id] = c
        if nxt is None and lk.preceding:
            key = lk.key
            best = min(lk.preceding.values(), key=lambda c: (key - c.node_id) % RING)
            del lk.preceding[best.node_id]
            nxt, mode = best, 0
        if nxt is None or lk.hops >= min(lk.budget, self.cfg.max_lookup_queries):
            tent = lk.tentative
            if tent is not None and not lk.definitive and not lk.verified and lk.hops < self.cfg.max_lookup_queries:
                # Before settling for a tentative owner, ask it once more: the extra queries took
                # time, and it may have crashed meanwhile (then the search goes on without it).
                lk.verified = True
                lk.budget = lk.hops + 1
                nxt, back, mode = tent[0], None, 2
            else:
                lk.finished = True
                if tent is not None and not lk.definitive:
                    lk.done(tent[0], lk.hops, now, tent[1])
                else:
                    lk.done(None, lk.hops, now)
                return
        lk.queried[nxt.node_id] = (len(lk.dead), lk.live_before)
        lk.hops += 1

        def reply(m, sender, now):
            if lk.finished:
                return
            if lk.trace is not None:
                lk.trace.append((sender.node_id, m.flag, [c.node_id for c in m.contacts]))
            if m.flag == 1 and self.vet_owner is not None and not self.vet_owner(lk.key, sender.node_id):
                lk.dead.append(sender.node_id)  # an implausible claim (agents.overlay.trust): ask on
                self._lookup_step(lk, now)
                return
            if m.flag == 1:
                lk.finished = True
                lk.done(Contact(sender.node_id, sender.addr), lk.hops, now, m.contacts[1:])
                return
            key = lk.key
            if m.flag == 4:
                # a tentative owner (its predecessors died): look just before the key for a node that
                # joined there meanwhile, within a small budget, before settling for it
                if lk.tentative is None or in_open(sender.node_id, key, lk.tentative[0].node_id):
                    lk.tentative = (Contact(sender.node_id, sender.addr), m.contacts[1:])
                    lk.budget = min(lk.budget, lk.hops + TENTATIVE_EXTRA_QUERIES)
                lb = lk.live_before
                if lb is not None and lb != self.id and lb in lk.contacts:
                    lk.guesses.insert(0, (lk.contacts[lb], None, 4))
                else:
                    for c in self.table.closest_preceding(key, set(lk.dead), n=3):
                        lk.preceding.setdefault(c.node_id, c)
                self._lookup_step(lk, now)
                return
            state = (len(lk.dead), lk.live_before)
            fresh = [c for c in m.contacts if lk.queried.get(c.node_id) != state and c.node_id not in lk.dead
                     and self.table.admits(c.node_id)]
            if m.flag == 2 and m.contacts:
                lk.contacts[sender.node_id] = sender
                if lk.live_before is None or in_open(sender.node_id, lk.live_before, key):
                    # its successor list spans the key: it is the closest live node known before the key
                    lk.live_before = sender.node_id
                lk.guesses = [(c, sender, 2) for c in fresh] + lk.guesses
            elif m.flag == 3:
                # the key lies before the sender's predecessor: walk back towards it
                lk.guesses = [(c, sender, 2) for c in fresh] + lk.guesses
            else:
                for c in fresh:
                    if c.node_id != self.id:
                        lk.preceding.setdefault(c.node_id, c)
            self._lookup_step(lk, now)

        def timeout(target, now):
            if lk.trace is not None:
                lk.trace.append((target.node_id, "timeout"))
            lk.dead.append(target.node_id)
            if lk.tentative is not None and lk.tentative[0].node_id == target.node_id:
                # the tentative owner is dead: search on around the key for the next one
                lk.tentative = None
                lk.budget = lk.hops + TENTATIVE_EXTRA_QUERIES
                for c in self.table.closest_preceding(lk.key, set(lk.dead), n=3):
                    lk.preceding.setdefault(c.node_id, c)
                lb = lk.live_before
                if lb is not None and lb != self.id and lb in lk.contacts:
                    lk.guesses.insert(0, (lk.contacts[lb], None, 4))
            if back is not None:
                # ``back`` referred us to ``target``, which is dead: ask ``back`` again, now telling it
                # so (after any other candidates it gave us)
                lk.guesses.append((back, None, 2))
            self._lookup_step(lk, now)

        lb = lk.live_before
        flags = (1 if lb is not None else 0) | mode
        m = Msg(wire.FIND, self.id, key=lk.key, ids=tuple(lk.dead[-8:]), flag=flags, limit=lb)
        self._request(nxt, m, wire.FOUND, reply, timeout, now)

    # ------------------------------------------------------------------ records

    def put(self, record: bytes, now: float, republish: bool = True) -> int:
        """Store a signed record on its key's owner and replicas; a :class:`PutDone` reports it.

        Raises:
            LocalProtocolError: no store is configured, or our own record is invalid.
        """
        if self.store is None:
            raise LocalProtocolError("overlay: node has no record store")
        try:
            rec = self.store.validator.validate(record, now)
        except RecordRejected as exc:
            raise LocalProtocolError(f"overlay: refusing to publish own record: {exc.reason}") from exc
        op = self.new_op_id()
        if republish:
            self._published[hash((rec.kind, rec.key))] = record
        key = rec.key

        def found(owner, hops, now, extra=()):
            if owner is None:
                self.events.append(PutDone(op, key, False, "lookup failed"))
                return
            if owner.node_id == self.id:
                try:
                    self.store.put(record, self.id, now)
                except RecordRejected as exc:
                    self.events.append(PutDone(op, key, False, exc.reason))
                    return
                self._replicate(record, now)
                self.events.append(PutDone(op, key, True))
                return

            def ack(m, sender, now):
                self.events.append(PutDone(op, key, bool(m.flag), m.data.decode("ascii", "replace")))

            def timeout(target, now):
                self.events.append(PutDone(op, key, False, "owner timed out"))

            self._request(owner, Msg(wire.STORE, self.id, flag=0, data=record), wire.STORE_ACK, ack, timeout, now)

        self._lookup(key, now, found)
        return op

    def _replicate(self, record: bytes, now: float) -> None:
        for c in self.table.successors[: self.cfg.replicas - 1]:
            self._send(c.addr, Msg(wire.STORE, self.id, flag=1, data=record))

    def _on_store(self, m: Msg, sender: Contact, now: float) -> None:
        if self.store is None:
            self._send(sender.addr, Msg(wire.STORE_ACK, self.id, m.txid, flag=0, data=b"no store"))
            return
        try:
            rec = self.store.put(m.data, sender.addr, now)
        except RecordRejected as exc:
            if not m.flag:
                self._send(sender.addr, Msg(wire.STORE_ACK, self.id, m.txid, flag=0, data=exc.reason.encode()))
            return
        if not m.flag:
            if self.table.owns(rec.key):
                self._replicate(m.data, now)
            self._send(sender.addr, Msg(wire.STORE_ACK, self.id, m.txid, flag=1, data=b"stored"))

    def get(self, key: int, now: float) -> int:
        """Fetch the valid records under ``key`` from its owner (or replicas); :class:`GetDone` reports."""
        op = self.new_op_id()

        def found(owner, hops, now, extra=()):
            if owner is None:
                self.events.append(GetDone(op, key, []))
                return
            cands = [owner] + [c for c in extra if c.node_id != owner.node_id]
            self._fetch(op, key, cands, now)

        self._lookup(key, now, found)
        return op

    def _fetch(self, op: int, key: int, cands: list, now: float) -> None:
        if not cands:
            self.events.append(GetDone(op, key, []))
            return
        c, rest = cands[0], cands[1:]
        if c.node_id == self.id:
            recs = [self.store.validator.validate(r, now) for r in self.store.get(key, now)] if self.store is not None else []
            if recs or not rest:
                self.events.append(GetDone(op, key, recs))
            else:
                self._fetch(op, key, rest, now)
            return

        def value(m, sender, now):
            good, bad = [], []
            for raw in m.records:
                try:
                    rec = self.store.validator.validate(raw, now) if self.store is not None else None
                except RecordRejected:
                    bad.append(raw)
                    continue
                if rec is not None and rec.key == key:
                    good.append(rec)
            if good or not rest:
                self.events.append(GetDone(op, key, good, bad))
            else:
                self._fetch(op, key, rest, now)

        self._request(c, Msg(wire.FETCH, self.id, key=key), wire.VALUE, value, lambda t, n: self._fetch(op, key, rest, n), now)

    def _republish(self, now: float) -> None:
        for record in list(self._published.values()):
            try:
                self.put(record, now, republish=False)
            except LocalProtocolError:
                pass  # expired: stop republishing it
        if self.store is not None:
            self.store.expire(now)
            for key, raws in self.store.items():
                if self.table.owns(key):
                    for raw in raws:
                        self._replicate(raw, now)

    # ------------------------------------------------------------------ broadcast

    def broadcast(self, payload: bytes, now: float) -> bytes:
        """Deliver ``payload`` to every live node once; returns the broadcast id.

        A node with a record store broadcasts only valid signed records (a revocation certificate is
        the use case) and applies them itself, as every receiver does.

        Raises:
            LocalProtocolError: we hold a store and ``payload`` is not a valid record.
        """
        if self.store is not None:
            try:
                self._apply_broadcast_record(payload, now)
            except RecordRejected as exc:
                raise LocalProtocolError(f"overlay: refusing to broadcast: {exc.reason}") from exc
        bid = os.urandom(16) if not isinstance(self.rng, random.Random) else self.rng.getrandbits(128).to_bytes(16, "big")
        self.bcast.seen_add(bid)
        self.events.append(BroadcastDelivered(bid, payload, 0))
        self._bcast_forward(bid, self.id, 0, payload, now)
        return bid

    def _on_broadcast(self, m: Msg, sender: Contact, now: float) -> None:
        self._send(sender.addr, Msg(wire.BROADCAST_ACK, self.id, m.txid, bid=m.bid))
        if self.bcast.seen(m.bid):
            self.bcast.duplicates += 1
            return
        self.bcast.seen_add(m.bid)
        if self.store is not None:
            try:
                self._apply_broadcast_record(m.data, now)
            except RecordRejected:
                self.stats["dropped"] += 1  # forged or stale: neither delivered nor forwarded
                return
        self.events.append(BroadcastDelivered(m.bid, m.data, m.depth))
        self._bcast_forward(m.bid, m.limit, m.depth, m.data, now)

    def _apply_broadcast_record(self, payload: bytes, now: float) -> None:
        rec = self.store.validator.validate(payload, now)
        if rec.kind == REVOCATION:
            self.store.apply_revocation(rec)  # refuse the node's records from now on, drop held ones
            self.table.remove(rec.node_id)

    def _bcast_forward(self, bid: bytes, limit: int, depth: int, payload: bytes, now: float) -> None:
        for target, sub_limit in self.bcast.plan(self.id, limit, self.table.links()):
            self._bcast_send(bid, target, sub_limit, depth + 1, payload, now)

    def _bcast_send(self, bid, target: Contact, limit: int, depth: int, payload: bytes, now: float) -> None:
        def timeout(dead, now):
            # Repair: hand the dead node's range [dead, limit) to the next live node we know in it,
            # or find that range's first node by lookup.
            alt = [c for c in self.table.links() if c.node_id != dead.node_id and in_half_open(c.node_id, dead.node_id, (limit - 1) % RING)]
            if alt:
                self._bcast_send(bid, alt[0], limit, depth, payload, now)
                return

            def found(owner, hops, now, extra=()):
                if owner is not None and owner.node_id != self.id and in_half_open(owner.node_id, dead.node_id, (limit - 1) % RING):
                    self._bcast_send(bid, owner, limit, depth, payload, now)

            self._lookup((dead.node_id + 1) % RING, now, found)

        self.stats["bcast_sent"] += 1
        m = Msg(wire.BROADCAST, self.id, bid=bid, limit=limit, depth=min(depth, 255), data=payload)
        self._request(target, m, wire.BROADCAST_ACK, lambda m, s, n: None, timeout, now)
