"""``price_per_gib = "auto"`` in a running node: the pricer's decisions, read from the store and sent to
the registry (the I/O edge around :class:`agents.node.pricing.AutoPricer`).

Once per epoch (the registry's update epoch, read from the chain) :meth:`AutoPrice.step` measures the
bytes the node's receipts added in the epoch that ended, asks the rule for the next price and, when it
moved, lists it with ``node_registry.update_node``. Nothing here is fatal to the node:

* the registry refusing (``"node_registry: updated this epoch"``: the price was changed elsewhere this
  epoch; a revoked key) is logged, and the next epoch decides again;
* the chain not answering (a read or the transaction) is logged, and the same decision is tried again
  every ``retry_s`` until the epoch after it ends;
* an operator without ETH for gas is told so in the log, and the next epoch tries again.

A listed price reaches new channels only: a channel is quoted the price it was opened at
(:mod:`agents.node.session`), so clients holding older channels are never asked for more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agents.errors import UserError
from agents.node.chain import PriceUpdateRefused
from agents.node.pricing import AutoPricer, Proposal

__all__ = ["AutoPrice"]

log = logging.getLogger("warren.node")


class AutoPrice:
    """The auto price of one running node.

    Args:
        pricer: the rule and its epoch state.
        chain: the node's chain port (``listed_price()``, ``update_price(region, price)``).
        store: the node's store (``paid_bytes_between(start, end)``).
        region: the node's region (``update_node`` sets region and price together).
        apply: called with the listed price after every decision, so the running node offers it
            (:meth:`agents.node.agent.NodeAgent.set_price` and the overlay record).
    """

    def __init__(self, pricer: AutoPricer, chain, store, region: str, apply: Callable[[int], None]) -> None:
        self.pricer = pricer
        self.chain = chain
        self.store = store
        self.region = region
        self.apply = apply

    def step(self, now: float) -> Proposal | None:
        """Decide the finished epoch's price if it is due (never raises); returns the decision or None."""
        window = self.pricer.due(now)
        if window is None:
            return None
        retry_s = self.pricer.retry_s
        try:
            carried = self.store.paid_bytes_between(window.start, window.end)
            listed = self.chain.listed_price()
        except Exception as exc:  # noqa: BLE001 - the chain or the disk: tried again shortly
            log.warning("auto price: reading the listed price or the receipts failed (%s): trying again in %g s",
                        exc, retry_s)
            self.pricer.retry(f"read failed: {exc}", now)
            return None
        proposal = self.pricer.propose(window, carried, listed)
        if not proposal.changed:
            log.info("auto price: epoch %d: %s (%d token wei/GiB)", window.epoch, proposal.reason, listed)
            self.pricer.done(proposal, "unchanged", now)
            self.apply(listed)
            return proposal
        try:
            tx = self.chain.update_price(self.region, proposal.new_price)
        except PriceUpdateRefused as exc:
            log.warning("auto price: the registry refused %d -> %d token wei/GiB (%s): the next epoch decides "
                        "again", proposal.old_price, proposal.new_price, exc)
            self.pricer.done(proposal, f"refused: {exc}", now)
            self.apply(listed)
            return proposal
        except UserError as exc:
            log.error("auto price: %s; the next epoch tries again", exc)
            self.pricer.done(proposal, f"not sent: {exc}", now)
            return proposal
        except Exception as exc:  # noqa: BLE001 - no answer from the chain: the same decision shortly
            log.warning("auto price: updating %d -> %d token wei/GiB failed (%s): trying again in %g s",
                        proposal.old_price, proposal.new_price, exc, retry_s)
            self.pricer.retry(f"not sent yet: {exc}", now, proposal)
            return proposal
        log.info("auto price: %d -> %d token wei/GiB after epoch %d: %s (tx %s)", proposal.old_price,
                 proposal.new_price, window.epoch, proposal.reason, tx)
        self.pricer.done(proposal, "updated", now)
        self.apply(proposal.new_price)
        return proposal

    def status(self) -> dict:
        """What `warren node status` shows (see :meth:`AutoPricer.status`)."""
        return self.pricer.status()
