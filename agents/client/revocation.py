"""A connected client hears of revocations from the chain and leaves a revoked node at once.

The candidates were read from the chain at connect (``eligible`` drops nodes revoked by then); while
connected, :class:`ClientRevocations` follows revocation_registry's ``NodeRevoked`` from that block
on (:class:`agents.chain.revocations.RevocationFollower`, one read per :data:`POLL_S`). A revoked node
leaves the plan, the spares and the standby slot; when it is the current exit, the client fails over
to the standby at once (:meth:`agents.client.agent.ClientAgent.failover`), so the kill switch holds
throughout, as for a dead node: traffic is blocked, never sent in clear, until the next node is up.
"""

from __future__ import annotations

import logging
import time

from agents.chain.revocations import Poller
from agents.overlay.revocation import RevocationFacts

__all__ = ["POLL_S", "ClientRevocations", "drop_revoked"]

log = logging.getLogger("warren.client")

#: How often a connected client reads the chain's revocations (seconds).
POLL_S = 1.0


def drop_revoked(agent, node_id: bytes) -> bool:
    """Remove ``node_id`` from ``agent``'s plan, spares and standby; fail over if it is the current
    node. Returns True when the current session was on it."""
    def other(route) -> bool:
        return route.candidate.node.node_id != node_id

    with agent.lock:
        agent.plan = [r for r in agent.plan if other(r)]
        agent.spare = [r for r in agent.spare if other(r)]
        if agent.standby is not None and not other(agent.standby):
            agent.standby = None
        current = agent.session is not None and not other(agent.session.route)
        if current:
            agent.failover("revoked")
        elif agent.standby is None:
            agent._prepare_standby()
    return current


class ClientRevocations:
    """Follows the chain's revocations for a connected :class:`~agents.client.agent.ClientAgent`.

    Args:
        agent: the connected agent.
        follower: a :class:`agents.chain.revocations.RevocationFollower` started at the candidates' block.
    """

    def __init__(self, agent, follower) -> None:
        self.agent = agent
        self.follower = follower
        self.revoked: list[dict] = []
        self._poller: Poller | None = None

    def step(self, now: float | None = None) -> list[RevocationFacts]:
        """Read the chain once and act on what is new."""
        fresh = self.follower.step(time.time() if now is None else now)
        for facts in fresh:
            node_id = facts.node_id.to_bytes(32, "big")
            current = drop_revoked(self.agent, node_id)
            self.revoked.append({"node_id": node_id.hex(), "was_current": current, "tx": facts.tx_hash.hex()})
            log.warning("node %s revoked on chain%s", node_id.hex()[:12], ": failed over" if current else "")
        return fresh

    def start(self, period_s: float = POLL_S) -> "ClientRevocations":
        """Follow the chain on a thread of its own."""
        self._poller = Poller(self.step, period_s, "client-revocations").start()
        return self

    def close(self) -> None:
        if self._poller is not None:
            self._poller.close()
