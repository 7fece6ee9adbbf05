"""How a revocation reaches a running node's data plane.

Sources (whichever comes first, see :mod:`agents.overlay.revocation`):

* the chain: :class:`agents.chain.revocations.RevocationFollower` reads ``NodeRevoked`` every
  :data:`POLL_S`;
* the overlay: a checked revocation certificate delivered by ring broadcast
  (:meth:`NodeRevocations.on_overlay_event`).

What a new revocation does here, at once and in this order (:meth:`NodeRevocations.apply`):

1. the list (persistent, ``revocations.db``) holds the id, so the WireGuard responder's admission
   (:meth:`agents.node.session.NodeSessions.admit_unknown`) refuses the key's next handshake before
   any data flows, and the overlay drops its datagrams, records and routing entries;
2. sessions and quarantined peers with that key are ended (their WireGuard peer removed, exit
   closed, receipts already stored stay settled as usual);
3. the overlay forgets it: routing table, NAT registrations and relay sessions.

Announcing: one node per revocation broadcasts the certificate round the ring and stores it in the
DHT: the owner of ``revocation_key(node_id)`` in its own routing table (every node computes the same
owner, so normally exactly one broadcasts, N - 1 messages). Any other node that learned it from the
chain and has not heard the broadcast within :data:`BACKUP_BROADCAST_S` broadcasts too (the owner
may be down or far behind the chain): one more broadcast costs N - 1 messages, a missed one costs
every node that does not read the chain its protection.
"""

from __future__ import annotations

import logging
import threading
import time

from agents.chain.revocations import Poller
from agents.overlay.core import BroadcastDelivered
from agents.overlay.errors import LocalProtocolError
from agents.overlay.records import REVOCATION, decode_record, revocation_key
from agents.overlay.revocation import RevocationFacts, RevocationList, certificate, facts_from_record

__all__ = ["BACKUP_BROADCAST_S", "POLL_S", "NodeRevocations"]

log = logging.getLogger("warren.node")

#: How often the node reads revocation_registry's events (seconds): one eth_blockNumber (and, when
#: blocks arrived, one eth_getLogs) per second, well within a public RPC's free rate.
POLL_S = 1.0
#: A node that saw a revocation on chain and heard no broadcast of it within this long broadcasts it
#: itself (seconds): a ring broadcast of 1,000 nodes takes well under 2 s (docs/BENCHMARKS.md).
BACKUP_BROADCAST_S = 3.0


class NodeRevocations:
    """A node's revocation list wired to its chain follower, WireGuard admission and overlay.

    Args:
        revocations: the list (persistent in production).
        follower: reads the chain (None: the overlay is the only source).
        agent: the running :class:`agents.node.agent.NodeAgent` (or None).
        presence: the running :class:`agents.node.presence.NodePresence` (or None).
        clock: wall seconds.
    """

    def __init__(self, revocations: RevocationList, follower=None, *, agent=None, presence=None,
                 clock=time.time) -> None:
        self.list = revocations
        self.follower = follower
        self.agent = agent
        self.presence = presence
        self.clock = clock
        self.refused_at: dict[int, float] = {}  # node id -> when this node began refusing it
        self.torn_down: dict[int, int] = {}  # node id -> sessions / quarantined peers ended
        self.broadcasts = 0
        self._heard_broadcast: set[int] = set()
        self._backup_due: dict[int, float] = {}
        self._poller: Poller | None = None
        revocations.listeners.append(self.apply)
        if agent is not None:
            agent.core.revoked = revocations.is_revoked_key
            agent.revocations = self  # `warren node status` shows the list's figures
        if presence is not None:
            self.attach_presence(presence)

    def attach_presence(self, presence) -> None:
        """Hear certificates delivered to ``presence``'s overlay, and announce through it."""
        self.presence = presence
        presence.rt.listeners.append(self.on_overlay_event)

    # -- the data plane ------------------------------------------------------------------------------

    def apply(self, facts: RevocationFacts) -> None:
        """A node id was newly revoked: refuse it everywhere now (called by the list, once per id)."""
        node_id = facts.node_id
        self.refused_at.setdefault(node_id, self.clock())
        ended = 0
        agent = self.agent
        if agent is not None:
            with agent.lock:
                for wg_key in agent.core.keys_of_node(node_id):
                    if wg_key in agent.core.sessions:
                        agent._end_session(wg_key)  # records the session's end in the store
                    else:
                        agent._apply(agent.core.end(wg_key))
                    ended += 1
        self.torn_down[node_id] = ended
        if self.presence is not None:
            self.presence.rt.call(lambda node, now: _forget(self.presence, node, node_id, now))
        log.warning("node %064x revoked (%s%s): refusing its key; %d session(s) ended", node_id, facts.source,
                    f", tx 0x{facts.tx_hash.hex()}" if facts.tx_hash else "", ended)

    def on_overlay_event(self, ev) -> None:
        """Runtime listener (its lock held): a delivered broadcast may be a checked certificate."""
        if not isinstance(ev, BroadcastDelivered):
            return
        try:
            rec = decode_record(ev.payload)
        except Exception:  # noqa: BLE001 - RecordRejected: another kind of broadcast payload
            return
        if rec.kind != REVOCATION:
            return
        self._heard_broadcast.add(rec.node_id)
        # the core checked the guardian quorum before delivering it. The overlay refuses the id from
        # now on already (the validator's set is the list's); the rest (sessions: the agent's lock)
        # runs on a thread of its own, not under the runtime's lock
        self.list.ids.add(rec.node_id)
        threading.Thread(target=self.list.add, args=(facts_from_record(rec, self.clock()),),
                         name="node-revoke", daemon=True).start()

    # -- the chain -----------------------------------------------------------------------------------

    def step(self, now: float | None = None) -> list[RevocationFacts]:
        """Read the chain once; announce what is new (when we are its announcer); returns it."""
        now = self.clock() if now is None else now
        fresh = self.follower.step(now) if self.follower is not None else []
        for facts in fresh:
            if self._is_announcer(facts.node_id):
                self.announce(facts, now)
            elif facts.node_id not in self._heard_broadcast:
                self._backup_due[facts.node_id] = now + BACKUP_BROADCAST_S
        for node_id, due in list(self._backup_due.items()):
            if node_id in self._heard_broadcast:
                del self._backup_due[node_id]
            elif now >= due:
                del self._backup_due[node_id]
                facts = self.list.facts(node_id)
                if facts is not None:
                    log.info("no broadcast heard of revocation %064x: broadcasting it", node_id)
                    self.announce(facts, now)
        return fresh

    def _is_announcer(self, node_id: int) -> bool:
        if self.presence is None or not self.presence.joined:
            return False
        with self.presence.rt.lock:
            return self.presence.rt.node.table.owns(revocation_key(node_id))

    def announce(self, facts: RevocationFacts, now: float) -> bool:
        """Broadcast the certificate round the ring and store it in the DHT; False if it cannot be."""
        if self.presence is None:
            return False
        try:
            record = certificate(facts, now)
            self.presence.rt.call(lambda node, t: node.broadcast(record, t))
            self.presence.rt.call(lambda node, t: node.put(record, t, republish=False))
        except LocalProtocolError as exc:  # no signatures known, or our overlay refuses it
            log.warning("revocation %064x not broadcast: %s", facts.node_id, exc)
            return False
        self._heard_broadcast.add(facts.node_id)
        self.broadcasts += 1
        return True

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self, period_s: float = POLL_S) -> "NodeRevocations":
        """Follow the chain on a thread of its own."""
        self._poller = Poller(self.step, period_s, "node-revocations").start()
        return self

    def close(self) -> None:
        if self._poller is not None:
            self._poller.close()

    def status(self) -> dict:
        """For `warren node status`."""
        return {"revoked": len(self.list), "broadcasts": self.broadcasts,
                "chain_error": getattr(self.follower, "last_error", None),
                # node id -> (wall time this node began refusing it, how it heard, sessions ended)
                "refusing": {f"{nid:064x}": {"since": at, "source": getattr(self.list.facts(nid), "source", "?"),
                                              "ended": self.torn_down.get(nid, 0)}
                             for nid, at in list(self.refused_at.items())}}


def _forget(presence, node, node_id: int, now: float) -> None:
    node.table.remove(node_id)
    presence.nat.forget(node_id, now)
