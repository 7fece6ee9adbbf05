"""A connected client hears of revocations from the chain and leaves a revoked node at once.

The candidates were read from the chain at connect (``eligible`` drops nodes revoked by then); while
connected, :class:`ClientRevocations` follows revocation_registry's ``NodeRevoked`` from that block
on (:class:`agents.chain.revocations.RevocationFollower`, one read per :data:`POLL_S`). A revoked node
leaves the plan, the spares and the standby slot; when it is the current exit, the client fails over
to the standby at once (:meth:`agents.client.agent.ClientAgent.failover`), so the kill switch holds
throughout, as for a dead node: traffic is blocked, never sent in clear, until the next node is up.

Money: a revoked node can no longer settle, so the client need not wait out a challenge period for
its deposits: every channel it holds to the revoked node is closed at once with payment_channels'
``exit_revoked`` (the unspent deposit comes back in that transaction), after :data:`REFUND_DELAY_S`
so that the failover's own transactions go first (ape takes the nonce when it signs). A voucher
channel is left to its pool (its signer has no gas; ``warren voucher close`` refunds it).
"""

from __future__ import annotations

import logging
import threading
import time

from agents.chain.revocations import Poller
from agents.overlay.revocation import RevocationFacts

__all__ = ["POLL_S", "REFUND_DELAY_S", "ClientRevocations", "drop_revoked", "refund_revoked"]

log = logging.getLogger("warren.client")

#: How often a connected client reads the chain's revocations (seconds).
POLL_S = 1.0
#: Wait before refunding the revoked node's channels (seconds): the failover's channel open and
#: unilateral close are sent first, so the transactions do not race for a nonce.
REFUND_DELAY_S = 3.0


def drop_revoked(agent, node_id: bytes) -> tuple[bool, list]:
    """Remove ``node_id`` from ``agent``'s plan, spares and standby; fail over if it is the current
    node. Returns whether the current session was on it, and the channels held to it."""
    def other(route) -> bool:
        return route.candidate.node.node_id != node_id

    with agent.lock:
        routes = [*agent.plan, *agent.spare, *([agent.standby] if agent.standby else []),
                  *([agent.session.route] if agent.session else [])]
        channels = {r.channel.channel_id: r.channel for r in routes if not other(r) and r.channel is not None}
        agent.plan = [r for r in agent.plan if other(r)]
        agent.spare = [r for r in agent.spare if other(r)]
        if agent.standby is not None and not other(agent.standby):
            agent.standby = None
        current = agent.session is not None and not other(agent.session.route)
        if current:
            agent.failover("revoked")
        elif agent.standby is None:
            agent._prepare_standby()
    return current, list(channels.values())


def refund_revoked(chain, channels) -> list[dict]:
    """Close each channel at once with ``exit_revoked``; returns what happened to each."""
    contracts, account = getattr(chain, "contracts", None), getattr(chain, "account", None)
    done = []
    for channel in channels:
        if contracts is None or account is None:  # a voucher channel: its signer has no gas
            done.append({"channel_id": channel.channel_id.hex(), "refund": "left to its pool"})
            continue
        try:
            contracts.channels.exit_revoked(channel.channel_id, sender=account)
            done.append({"channel_id": channel.channel_id.hex(), "refund": "exit_revoked"})
            log.info("channel %s to the revoked node closed: deposit refunded", channel.channel_id.hex()[:16])
        except Exception as exc:  # noqa: BLE001 - e.g. already finalised; logged, the rest still go
            done.append({"channel_id": channel.channel_id.hex(), "refund": f"failed: {exc}"})
            log.warning("refund of channel %s failed: %s", channel.channel_id.hex()[:16], exc)
    return done


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
        self._stop_refunds = threading.Event()

    def step(self, now: float | None = None) -> list[RevocationFacts]:
        """Read the chain once and act on what is new."""
        fresh = self.follower.step(time.time() if now is None else now)
        for facts in fresh:
            node_id = facts.node_id.to_bytes(32, "big")
            current, channels = drop_revoked(self.agent, node_id)
            entry = {"node_id": node_id.hex(), "was_current": current, "tx": facts.tx_hash.hex()}
            self.revoked.append(entry)
            log.warning("node %s revoked on chain%s", node_id.hex()[:12], ": failed over" if current else "")
            if channels and not self._stop_refunds.wait(REFUND_DELAY_S):
                entry["refunds"] = refund_revoked(self.agent.chain, channels)
        return fresh

    def start(self, period_s: float = POLL_S) -> "ClientRevocations":
        """Follow the chain on a thread of its own."""
        self._poller = Poller(self.step, period_s, "client-revocations").start()
        return self

    def close(self) -> None:
        self._stop_refunds.set()
        if self._poller is not None:
            self._poller.close()
