"""The challenger as a silverback app: `silverback run agents.challenger.app:bot` and `warren challenger run`.

Both start this same bot (the warren command execs silverback with this module). The config file is
named by ``WARREN_CHALLENGER_CONFIG``. A cron task every minute first slashes the nodes it reported
failed in the previous epoch if at least half of that epoch's reports on them failed
(:meth:`Challenger.slash_previous`: reputation slashes only once an epoch is over, during the next
one), then runs :meth:`Challenger.tick` (the plan's random times fall inside the minute they are
due; nothing in the wire or the chain shows the cron). One task does both, so the challenger's
transactions go out one at a time (no two tasks race for its nonce). The startup task sends what a
previous run left unreported (backfill). Event handlers
follow the chain: a registration or a revocation changes the next tick's candidates (read fresh each
tick), slashes and reports are logged. Ticks that fail (RPC down, chain restarting) are logged and
the next minute tries again: the transcript store keeps everything until its report is mined.
"""

from __future__ import annotations

import logging
import os

from silverback import SilverbackBot

from agents.challenger.config import load_config

__all__ = ["bot"]

log = logging.getLogger("warren.challenger")

bot = SilverbackBot()
_config = load_config(os.environ.get("WARREN_CHALLENGER_CONFIG", "challenger.toml"))
_state: dict = {}


def _challenger():
    from agents.challenger.service import build

    if "challenger" not in _state:
        from ape import project

        _state["challenger"] = build(_config, project)
    return _state["challenger"]


@bot.on_startup()
def backfill(startup_state):
    """Send the reports a previous run stored but did not get mined."""
    challenger = _challenger()
    epoch = int(challenger._chain_time() // challenger.epoch_length)
    challenger.store.expire(epoch)
    return {"backfilled": challenger.report_pending(epoch)}


@bot.cron("* * * * *")
def tick(time):
    """Slash the previous epoch's failing nodes, run the challenges due now and send their reports."""
    try:
        challenger = _challenger()
        slashes = challenger.slash_previous()
        return {"slashes": len(slashes), "challenges": len(challenger.tick())}
    except Exception as exc:  # noqa: BLE001 - the next minute tries again
        log.warning("challenge tick failed: %s", exc)
        return {"error": str(exc)}


def _follow():
    from agents.chain.connect import load_contracts
    from ape import project

    contracts = load_contracts(project, _config.client.deployment, _config.client.network)

    @bot.on_(contracts.registry.NodeRegistered)
    def registered(event):
        log.info("node %s registered: a candidate from the next tick", bytes(event.node_id).hex()[:12])

    @bot.on_(contracts.revocations.NodeRevoked)
    def revoked(event):
        log.info("node %s revoked: no longer challenged", bytes(event.node_id).hex()[:12])

    @bot.on_(contracts.reputation.QuorumSlashed)
    def slashed(event):
        log.info("node %s slashed %d token wei for epoch %d (%d of %d reports failed)",
                 bytes(event.node_id).hex()[:12], event.amount, event.epoch, event.failures, event.reports)


try:
    _follow()
except Exception as exc:  # noqa: BLE001 - no chain at import (a syntax check): the cron still works
    log.info("not following contract events: %s", exc)
