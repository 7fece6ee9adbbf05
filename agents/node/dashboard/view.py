"""What the dashboard shows and changes, read from the running node's own parts.

One source of numbers: the chain facts are :func:`agents.node.status.chain_facts` (as `warren node
status`), the earnings :func:`agents.node.earnings.from_chain` (as `warren node earnings`), the live
sessions the agent's status (as the status socket), the settlements the store's rows. Amounts are
sent as decimal strings: token wei pass JavaScript's 2**53 long before they pass a token.

The controls send the operator's transactions under the node's transaction lock (the settler and
voucher redemptions share the operator's nonces), apply the change to the running node, and write
it to the config file so that a restart keeps it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from agents.errors import UserError, preflight
from agents.node import earnings
from agents.node.policy import ExitPolicy
from agents.node.status import chain_facts

__all__ = ["NodeView"]

log = logging.getLogger("warren.node.dashboard")

#: Gas of update_node and request_unbonding, with margin (agents.node.chain.UPDATE_GAS; the CLI's).
UPDATE_GAS, UNBOND_GAS = 60_000, 80_000
#: How many challenger reports the page lists (newest first).
REPORTS_SHOWN = 50


def _wei(value: int) -> str:
    return str(int(value))


def _revert_text(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc).strip() or type(exc).__name__


class NodeView:
    """The dashboard's view of one running node (see :mod:`agents.node.dashboard.app` for the calls)."""

    def __init__(self, *, contracts, chain, agent, store, settler, exit_table, presence=None,
                 config=None, config_path: Path | None = None) -> None:
        self.contracts, self.chain, self.agent, self.store = contracts, chain, agent, store
        self.settler, self.exit, self.presence = settler, exit_table, presence
        self.config, self.config_path = config, config_path
        self.node_id: bytes = chain.node_id
        self._reports: list[dict] = []
        self._reports_from = 0
        self._lock = threading.Lock()  # one reader of the report log at a time

    # -- reading -----------------------------------------------------------------------------------

    def overview(self) -> dict:
        facts = chain_facts(self.contracts, self.node_id)
        report = earnings.from_chain(self.store, self.contracts)
        live = self.agent.status()
        live["settlement"] = self.settler.status()
        return {
            "now": time.time(),
            "chain": {**facts, "price_per_gib": _wei(facts["price_per_gib"]), "stake": _wei(facts["stake"]),
                      "operator_balance": _wei(facts["operator_balance"])},
            "live": {
                "uptime_s": live["uptime_s"], "pending": live["pending"],
                "price_per_gib": _wei(live["price_per_gib"]),
                "sessions": [{**s, "paid_amount": _wei(s["paid_amount"])} for s in live["sessions"]],
                "counters": live["counters"], "refusals": live["refusals"],
                "receipt_refusals": live.get("receipt_refusals", {}),
                "unsettled_amount": _wei(live["settlement"]["unsettled_amount"]),
                "last_error": live["settlement"].get("last_error"),
            },
            "earnings": {
                "total": {k: _wei(getattr(report, k)) for k in ("earned", "settled", "unsettled", "fee", "net")},
                "days": [{"day": d.day, "earned": _wei(d.earned), "settled": _wei(d.settled),
                          "unsettled": _wei(d.unsettled), "fee": _wei(d.fee), "gas": d.gas, "receipts": d.receipts}
                         for d in report.days],
                "channels": [{"channel_id": "0x" + c.channel_id.hex(), "earned": _wei(c.earned),
                              "settled": _wei(c.settled), "unsettled": _wei(c.unsettled), "fee": _wei(c.fee),
                              "receipts": c.receipts} for c in report.channels],
            },
            "settlements": [{"channel_id": "0x" + r.channel_id.hex(), "amount": _wei(r.amount), "bytes": r.nbytes,
                             "tx_hash": "0x" + r.tx_hash.hex() if r.tx_hash else None, "gas": r.gas,
                             "status": r.status, "reason": r.reason, "at": r.finished_at or r.started_at}
                            for r in reversed(self.store.settlements())],
            "reports": self.reports(),
            "policy": self.exit.policy.to_dict(),
        }

    def reports(self) -> list[dict]:
        """The latest challenger reports on this node (ReportPosted), newest first; read incrementally."""
        import ape

        with self._lock:
            head = int(ape.chain.blocks.head.number)
            if head >= self._reports_from:
                event = self.contracts.reputation.ReportPosted
                for entry in event.range(self._reports_from, head + 1, search_topics={"node_id": self.node_id}):
                    self._reports.append({
                        "block": int(entry.block_number), "epoch": int(entry.epoch),
                        "challenger": str(entry.challenger), "throughput_kbps": int(entry.throughput_kbps),
                        "latency_ms": int(entry.latency_ms), "passed": bool(entry.passed), "score": int(entry.score),
                        "tx_hash": str(entry.transaction_hash)})
                self._reports = self._reports[-REPORTS_SHOWN:]
                self._reports_from = head + 1
            return list(reversed(self._reports))

    # -- controls ----------------------------------------------------------------------------------

    def _send(self, what: str, gas: int, call) -> str:
        """Send one operator transaction; its hash, or a UserError saying why the chain refused it."""
        from ape.exceptions import ApeException, ContractLogicError

        from agents.chain.txsend import NonceInUse, TransactionDropped, send_as

        with self.chain.tx_lock:
            preflight(self.chain.operator, gas, what)  # UserError: not enough ETH for gas
            try:
                receipt = send_as(self.chain.operator, call, what)  # waits out a pending tx sent elsewhere
            except (NonceInUse, TransactionDropped) as exc:
                raise UserError(str(exc)) from None
            except ContractLogicError as exc:
                raise UserError(f"{what}: the chain refused it ({_revert_text(exc)})") from None
            except ApeException as exc:
                raise UserError(f"{what}: the transaction failed ({_revert_text(exc)})") from None
        return str(receipt.txn_hash)

    def set_price(self, price_per_gib: int) -> dict:
        if self.config is not None and getattr(self.config, "auto_price", False):
            raise UserError('the price is automatic (price_per_gib = "auto"): it moves once per epoch between '
                            'the [price] floor and ceiling of the config file; change those, or set a fixed '
                            'price there, and restart the node')
        facts = chain_facts(self.contracts, self.node_id)
        if facts["revoked"]:
            raise UserError("the node is revoked: its price cannot change")
        if price_per_gib == facts["price_per_gib"]:
            raise UserError(f"the price is already {price_per_gib} token wei per GiB")
        if price_per_gib >= 1 << 128:
            raise UserError("a price must be below 2**128 token wei per GiB (the overlay record holds 16 bytes)")
        tx = self._send("changing the price", UPDATE_GAS, lambda: self.contracts.registry.update_node(
            self.node_id, facts["region"], price_per_gib, sender=self.chain.operator))
        self.agent.set_price(price_per_gib)  # new channels get it; open ones keep the price they opened at
        if self.presence is not None:
            self.presence.price_per_gib = price_per_gib  # the next PeerRecord carries it
        self._save(price_per_gib=price_per_gib)
        log.info("dashboard: price now %d token wei/GiB (tx %s)", price_per_gib, tx)
        return {"message": f"price changed to {price_per_gib} token wei per GiB", "tx_hash": tx}

    def set_policy(self, raw: dict) -> dict:
        try:
            policy = ExitPolicy.from_dict(raw)
        except Exception as exc:  # noqa: BLE001 - whatever the policy refuses, the operator must read it
            raise UserError(f"exit policy not changed: {exc}") from None
        self.exit.set_policy(policy)
        self._save(exit=policy.to_dict())
        log.info("dashboard: exit policy now %s", policy.to_dict())
        return {"message": "exit policy changed", "policy": policy.to_dict()}

    def unbond(self) -> dict:
        registry = self.contracts.registry
        if int(registry.node_unbond_at(self.node_id)):
            raise UserError(f"the node is already unbonding: the stake can be withdrawn from unix time "
                            f"{int(registry.node_unbond_at(self.node_id))}")
        tx = self._send("unbonding", UNBOND_GAS, lambda: registry.request_unbonding(
            self.node_id, sender=self.chain.operator))
        at = int(registry.node_unbond_at(self.node_id))
        log.info("dashboard: unbonding requested (tx %s), withdrawable from %d", tx, at)
        return {"message": f"unbonding: the stake can be withdrawn from unix time {at} with `warren node withdraw`",
                "tx_hash": tx, "unbond_at": at}

    def _save(self, **changes) -> None:
        """Write ``changes`` into the config file (a restart keeps them); a failure is logged, not raised:
        the change is on chain and in force already."""
        if self.config_path is None:
            return
        from agents.node.config import load_config, write_config

        try:
            write_config(self.config_path, load_config(self.config_path).replace(**changes), force=True)
        except Exception as exc:  # noqa: BLE001 - the page says so; the node keeps running
            log.error("dashboard: the change is in force but %s was not updated (%s): edit it by hand", self.config_path,
                      exc)
