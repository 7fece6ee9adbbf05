"""When the node settles its receipts on chain, and the loop that does it without losing or double-sending.

Three parts:

* :class:`SettlementPolicy` (pure, fake-clock tested): which channels to settle now, from each
  channel's latest receipt, what is already settled, and whether a unilateral close has started.
* :class:`Settler`: the runtime over a :class:`ChainPort` and the :class:`agents.node.store.NodeStore`.
  Before every send it re-reads the channel on chain; it records the attempt as *pending* (committed)
  before sending and *confirmed* after, so a crash between the two leaves a pending row that the
  next run reconciles against the chain's settled amount. payment_channels settles cumulative amounts
  and refuses a stale one, so even a resend can never pay twice; the store keeps us from wasting gas
  on it and tells the operator what happened.
* :class:`ContractsChainPort`: the port on real contracts (payment_channels, and voucher pools for
  channels the store marks ``"voucher"``).

Errors from the port come in two families: :class:`ChainUnavailable` (RPC trouble: retried with
exponential backoff) and :class:`SettlementRejected` (the chain refused the transaction: recorded as
failed, retried later with the same backoff per channel).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import math
import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Protocol

from agents.chain.bindings import ChannelState, ChannelStatus, VoucherChannel, VoucherChannelError, VoucherChannels
from agents.metering import AcceptedReceipt, LocalProtocolError
from agents.node.store import NodeStore, StoredChannel

__all__ = [
    "FEE_CAP_DIVISOR",
    "Backoff",
    "ChainPort",
    "ChainUnavailable",
    "ChannelView",
    "ContractsChainPort",
    "Outcome",
    "Reason",
    "SettleOrder",
    "SettlementError",
    "SettlementPolicy",
    "SettlementRejected",
    "Settler",
    "default_threshold",
]

log = logging.getLogger("warren.node.settlement")

#: Gas may cost at most 1 / FEE_CAP_DIVISOR (1 %) of what one settlement moves (issue 9).
FEE_CAP_DIVISOR = 100
#: token wei in one whole token (the Warren token has 18 decimals, like ETH).
TOKEN = 10**18


class SettlementError(Exception):
    """Base class of the chain port's errors."""


class ChainUnavailable(SettlementError):
    """The RPC failed (connection, timeout, node error): try again later."""


class SettlementRejected(SettlementError):
    """The chain refused the settlement (a revert); the reason is the contract's string."""


def default_threshold(settle_gas: int, gas_price_wei: int, token_price_in_wei_of_eth) -> int:
    """The smallest unsettled amount worth a settlement, in token wei.

    A settlement costs ``settle_gas * gas_price_wei`` wei of ETH; at ``P`` wei of ETH per whole token
    (10**18 token wei) that is ``settle_gas * gas_price_wei * 10**18 / P`` token wei. Settling only
    when the unsettled amount exceeds 100 times that keeps gas <= 1 % of every settled amount::

        threshold = ceil(100 * settle_gas * gas_price_wei * 10**18 / token_price_in_wei_of_eth)

    (settle gas is ~62,000 on payment_channels: docs/BENCHMARKS.md, 61,882.)

    Args:
        settle_gas: gas of one ``settle``.
        gas_price_wei: gas price, wei of ETH per gas.
        token_price_in_wei_of_eth: what one whole token is worth, in wei of ETH (int, Fraction or float).

    Raises:
        LocalProtocolError: a non-positive price or negative gas.
    """
    price = Fraction(token_price_in_wei_of_eth)
    if price <= 0 or settle_gas < 0 or gas_price_wei < 0:
        raise LocalProtocolError("token price must be positive, gas and gas price not negative")
    return math.ceil(FEE_CAP_DIVISOR * settle_gas * gas_price_wei * TOKEN / price)


# -- the policy ------------------------------------------------------------------------------------

class Reason(str, enum.Enum):
    """Why a channel is settled now."""

    CLOSING = "closing"      # a unilateral close started on chain: settle before close_at
    SHUTDOWN = "shutdown"    # the node is stopping: settle everything
    RESTART = "restart"      # stored but unsettled when the node started
    THRESHOLD = "threshold"  # unsettled amount passed the threshold


@dataclasses.dataclass(frozen=True)
class ChannelView:
    """What the policy knows about one channel (amounts cumulative, token wei; times unix seconds).

    Attributes:
        channel_id: the channel.
        latest_amount: the latest stored receipt's amount.
        settled_amount: what is settled on chain (as far as we know).
        close_started: a unilateral close has started on chain.
        close_at: end of its challenge period (settling is possible before it).
    """

    channel_id: bytes
    latest_amount: int
    settled_amount: int
    close_started: bool = False
    close_at: float = 0

    @property
    def unsettled(self) -> int:
        return max(0, self.latest_amount - self.settled_amount)


@dataclasses.dataclass(frozen=True)
class SettleOrder:
    """Settle this channel now, for this reason."""

    channel_id: bytes
    reason: Reason


@dataclasses.dataclass(frozen=True)
class SettlementPolicy:
    """Which channels to settle now.

    Rules, first match wins, only for channels with something unsettled: a close started on chain
    settles at once if ``now < close_at`` (after it the contract refuses: nothing to do); on shutdown
    everything; after a restart everything; otherwise when unsettled > ``threshold``.
    Closing channels come first (soonest deadline first), then the largest unsettled amounts.

    Attributes:
        threshold: token wei (see :func:`default_threshold`).
    """

    threshold: int

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise LocalProtocolError("settlement threshold must not be negative")

    def decide(self, views: Iterable[ChannelView], now: float, *, shutting_down: bool = False,
               restarted: bool = False) -> list[SettleOrder]:
        """The channels to settle now, in the order to settle them."""
        closing, rest = [], []
        for view in views:
            if view.unsettled <= 0:
                continue
            if view.close_started:
                if now < view.close_at:
                    closing.append(view)
            elif shutting_down or restarted or view.unsettled > self.threshold:
                rest.append(view)
        closing.sort(key=lambda v: (v.close_at, v.channel_id))
        rest.sort(key=lambda v: (-v.unsettled, v.channel_id))
        other = Reason.SHUTDOWN if shutting_down else Reason.RESTART if restarted else Reason.THRESHOLD
        return ([SettleOrder(v.channel_id, Reason.CLOSING) for v in closing]
                + [SettleOrder(v.channel_id, other) for v in rest])


# -- the runtime -----------------------------------------------------------------------------------

class ChainPort(Protocol):
    """What the settler needs from the chain."""

    def channel_state(self, channel: StoredChannel) -> ChannelState:
        """The channel as the chain holds it now (raises ChainUnavailable)."""

    def settle(self, channel: StoredChannel, record: AcceptedReceipt) -> tuple[bytes, int]:
        """Send ``settle`` with the receipt and its signature, wait for it: (tx hash, gas used).

        Raises ChainUnavailable or SettlementRejected."""

    def close_events(self, from_block: int | None) -> tuple[list[tuple[bytes, int]], int]:
        """(channel id, close_at) of every ChannelCloseStarted from ``from_block`` on (None: from now),
        and the block to ask from next time (raises ChainUnavailable)."""


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``attempts`` tries in one go, sleeping initial, initial*factor, ... (<= cap)
    between them; a channel whose tries all failed is deferred for the next delay (<= cap) after that.

    Attributes:
        initial: first delay, seconds.
        factor: growth per failure.
        cap: longest delay, seconds.
        attempts: tries per settlement before deferring the channel.
    """

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 60.0
    attempts: int = 4

    def delay(self, failures: int) -> float:
        """The delay after ``failures`` consecutive failures (>= 1)."""
        return min(self.cap, self.initial * self.factor ** (failures - 1))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one settle order.

    Attributes:
        channel_id: the channel.
        result: ``"settled"`` (we sent it), ``"already"`` (the chain had it), ``"too_late"`` (closed or
            past close_at), ``"rejected"`` (reverted), ``"unavailable"`` (RPC failed every try).
        amount: the receipt's cumulative amount, token wei.
        tx_hash: our transaction, when settled.
        gas: its gas.
        reason: the revert string or RPC error.
    """

    channel_id: bytes
    result: str
    amount: int
    tx_hash: bytes | None = None
    gas: int | None = None
    reason: str = ""


class Settler:
    """Settles stored receipts on chain as :class:`SettlementPolicy` says.

    Single-threaded: call :meth:`recover` once at start, :meth:`step` periodically, :meth:`shutdown`
    at the end.

    Args:
        store: the node's store (channels, receipts, settlement rows).
        port: the chain.
        policy: when to settle.
        clock: unix seconds (the chain's time scale: close_at is compared with it).
        sleep: sleeps between retries (tests pass a fake).
        backoff: retry schedule.
    """

    def __init__(self, store: NodeStore, port: ChainPort, policy: SettlementPolicy, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 backoff: Backoff = Backoff()) -> None:
        self.store = store
        self.port = port
        self.policy = policy
        self.clock = clock
        self.sleep = sleep
        self.backoff = backoff
        self.closing: dict[bytes, int] = {}  # channel id -> close_at, from ChannelCloseStarted
        self._from_block: int | None = None
        self._too_late: set[bytes] = set()
        self._deferred: dict[bytes, tuple[float, int]] = {}  # channel id -> (not before, failures)
        self.counters = {"settled": 0, "already": 0, "too_late": 0, "rejected": 0, "unavailable": 0,
                         "gas": 0, "reconciled": 0}
        self.last_error = ""

    # -- entry points ------------------------------------------------------------------------------

    def recover(self, now: float | None = None) -> list[Outcome]:
        """At start: reconcile pending rows, then settle everything stored but not settled."""
        now = self.clock() if now is None else now
        self._poll_closes()
        return self._run(now, restarted=True)

    def step(self, now: float | None = None) -> list[Outcome]:
        """Look for new closes on chain, then settle what the policy says."""
        now = self.clock() if now is None else now
        self._poll_closes()
        return self._run(now)

    def shutdown(self, now: float | None = None, *, patience_s: float = 0.0) -> list[Outcome]:
        """Settle everything unsettled (deferrals ignored).

        While the chain is unavailable (a round had "unavailable" outcomes), rounds repeat with the
        backoff's delays for up to ``patience_s`` seconds in all, so a node stopped during an RPC
        outage still settles when the chain comes back soon; what is left settles on the next start.
        """
        started = self.clock()
        now = started if now is None else now
        outcomes: list[Outcome] = []
        rounds = 0
        while True:
            self._deferred.clear()
            self._poll_closes()
            done = self._run(now, shutting_down=True)
            outcomes += done
            if not any(o.result == "unavailable" for o in done):
                return outcomes
            rounds += 1
            delay = self.backoff.delay(rounds)
            if self.clock() + delay - started > patience_s:
                return outcomes
            log.warning("chain unavailable at shutdown: trying again in %.1f s", delay)
            self.sleep(delay)
            now = self.clock()

    def status(self) -> dict:
        """Figures for ``warren node status`` (amounts in token wei)."""
        unsettled = self.store.unsettled()
        return {
            "threshold": self.policy.threshold,
            "unsettled_channels": len(unsettled),
            "unsettled_amount": sum(r.receipt.cumulative_amount - s for _, r, s in unsettled),
            "closing": {cid.hex(): at for cid, at in self.closing.items()},
            "pending": len(self.store.settlements(status="pending")),
            **self.counters,
            "last_error": self.last_error,
        }

    # -- internals ---------------------------------------------------------------------------------

    def _poll_closes(self) -> None:
        try:
            events, self._from_block = self.port.close_events(self._from_block)
        except ChainUnavailable as exc:
            self.last_error = f"close events: {exc}"
            log.warning("reading close events failed: %s", exc)
            return
        for channel_id, close_at in events:
            if self.store.channel(channel_id) is not None:
                log.info("channel %s: close started on chain, challenge period ends at %d",
                         channel_id.hex()[:16], close_at)
                self.closing[channel_id] = close_at
                self._deferred.pop(channel_id, None)

    def _views(self) -> tuple[list[ChannelView], dict[bytes, AcceptedReceipt]]:
        views, latest = [], {}
        for channel_id, record, settled in self.store.unsettled():
            if channel_id in self._too_late:
                continue
            latest[channel_id] = record
            close_at = self.closing.get(channel_id)
            views.append(ChannelView(channel_id, record.receipt.cumulative_amount, settled,
                                     close_at is not None, close_at or 0))
        return views, latest

    def _run(self, now: float, *, shutting_down: bool = False, restarted: bool = False) -> list[Outcome]:
        self._reconcile_pending(now)
        views, latest = self._views()
        outcomes = []
        for order in self.policy.decide(views, now, shutting_down=shutting_down, restarted=restarted):
            not_before, _ = self._deferred.get(order.channel_id, (0.0, 0))
            if now < not_before:
                continue
            outcome = self._settle(order, latest[order.channel_id], now)
            self.counters[outcome.result] += 1
            outcomes.append(outcome)
            if outcome.result in ("rejected", "unavailable"):
                failures = self._deferred.get(order.channel_id, (0.0, 0))[1] + 1
                self._deferred[order.channel_id] = (self.clock() + self.backoff.delay(failures), failures)
                self.last_error = f"0x{order.channel_id.hex()[:16]}: {outcome.reason}"
            else:
                self._deferred.pop(order.channel_id, None)
        return outcomes

    def _reconcile_pending(self, now: float) -> None:
        """Resolve pending rows (a crash or an RPC failure after a send) against the chain."""
        for channel_id in {row.channel_id for row in self.store.settlements(status="pending")}:
            channel = self.store.channel(channel_id)
            try:
                self._absorb(channel, self.port.channel_state(channel), now)
            except (ChainUnavailable, LocalProtocolError) as exc:
                self.last_error = f"reconcile: {exc}"
                log.warning("reconciling channel %s failed: %s", channel_id.hex()[:16], exc)

    def _absorb(self, channel: StoredChannel, state: ChannelState, now: float) -> None:
        """Bring the store in line with the chain's settled amount for one channel."""
        cid = channel.channel_id
        for row in self.store.settlements(cid, status="pending"):
            if state.settled >= row.amount:
                self.store.settlement_confirmed(row.id, None, None, now)
                log.info("channel %s: pending settlement of %d token wei is on chain", cid.hex()[:16], row.amount)
            else:
                self.store.settlement_failed(row.id, "not on chain when reconciled", now)
            self.counters["reconciled"] += 1
        if state.settled > self.store.settled_amount(cid):
            self.store.settlement_observed(cid, state.settled, state.settled_bytes, now)

    def _settle(self, order: SettleOrder, record: AcceptedReceipt, now: float) -> Outcome:
        channel = self.store.channel(order.channel_id)
        amount = record.receipt.cumulative_amount
        reason = ""
        for attempt in range(1, self.backoff.attempts + 1):
            if attempt > 1:
                self.sleep(self.backoff.delay(attempt - 1))
            try:
                state = self.port.channel_state(channel)  # re-read before every send
                self._absorb(channel, state, now)
                if state.settled >= amount:
                    return Outcome(order.channel_id, "already", amount)
                if (state.status not in (ChannelStatus.OPEN, ChannelStatus.CLOSING)
                        or (state.status is ChannelStatus.CLOSING and now >= state.close_at)):
                    self._too_late.add(order.channel_id)
                    log.error("channel %s: %d token wei unsettled but the channel is %s (close_at %d)",
                              order.channel_id.hex()[:16], amount - state.settled, state.status.name,
                              state.close_at)
                    return Outcome(order.channel_id, "too_late", amount, reason=state.status.name.lower())
                sid = self.store.settlement_started(order.channel_id, amount, record.receipt.cumulative_bytes, now)
                try:
                    tx_hash, gas = self.port.settle(channel, record)
                except (SettlementRejected, LocalProtocolError) as exc:
                    self.store.settlement_failed(sid, str(exc), now)
                    log.warning("channel %s: settlement rejected: %s", order.channel_id.hex()[:16], exc)
                    return Outcome(order.channel_id, "rejected", amount, reason=str(exc))
                self.store.settlement_confirmed(sid, tx_hash, gas, now)
                self.counters["gas"] += gas
                log.info("channel %s: settled %d token wei (%s), gas %d, tx 0x%s", order.channel_id.hex()[:16],
                         amount, order.reason.value, gas, tx_hash.hex())
                return Outcome(order.channel_id, "settled", amount, tx_hash, gas)
            except (SettlementRejected, LocalProtocolError) as exc:  # reading the channel: our data is wrong
                log.error("channel %s: cannot settle: %s", order.channel_id.hex()[:16], exc)
                return Outcome(order.channel_id, "rejected", amount, reason=str(exc))
            except ChainUnavailable as exc:  # a pending row, if any, is reconciled on the next try
                reason = str(exc)
                log.warning("channel %s: chain unavailable (try %d of %d): %s", order.channel_id.hex()[:16],
                            attempt, self.backoff.attempts, exc)
        return Outcome(order.channel_id, "unavailable", amount, reason=reason)


# -- the port on real contracts --------------------------------------------------------------------

class ContractsChainPort:
    """:class:`ChainPort` on a deployment's contracts, through ape.

    Args:
        contracts: the deployment (payment_channels channels).
        operator: the operator's ape account (sends ``settle``).
        voucher_channels: voucher pool bindings by pool address, for channels the store marks
            ``"voucher"`` (their terms come from the store's voucher_terms JSON).
        tx_lock: held while ``settle`` is sent; shared with the node's other senders of the same
            account (:class:`agents.node.chain.NodeChain`'s redemptions), so no two pick one nonce.
    """

    def __init__(self, contracts, operator, voucher_channels: dict[str, VoucherChannels] | None = None,
                 tx_lock: threading.Lock | None = None) -> None:
        from eth_utils import to_checksum_address

        self.contracts = contracts
        self.operator = operator
        self.tx_lock = tx_lock or threading.Lock()
        self.voucher_channels = {to_checksum_address(k): v for k, v in (voucher_channels or {}).items()}

    def _voucher(self, channel: StoredChannel) -> tuple[VoucherChannels, VoucherChannel]:
        from eth_utils import to_checksum_address

        try:
            pool = self.voucher_channels[to_checksum_address(channel.pool)]
            return pool, VoucherChannel.from_json(channel.voucher_terms)
        except (KeyError, ValueError, VoucherChannelError) as exc:
            raise LocalProtocolError(f"voucher channel 0x{channel.channel_id.hex()}: no binding for pool "
                                     f"{channel.pool} or bad terms: {exc}") from None

    def channel_state(self, channel: StoredChannel) -> ChannelState:
        if channel.kind == "voucher":
            pool, voucher = self._voucher(channel)
            read = lambda: pool.channel(voucher)  # noqa: E731
        else:
            read = lambda: self.contracts.channel(channel.channel_id)  # noqa: E731
        try:
            return read()
        except VoucherChannelError as exc:  # the pool stores other terms than ours: our data is wrong
            raise LocalProtocolError(f"voucher channel 0x{channel.channel_id.hex()}: {exc}") from None
        except Exception as exc:  # ape/web3 raise many types for a failed RPC
            raise ChainUnavailable(str(exc)) from exc

    def settle(self, channel: StoredChannel, record: AcceptedReceipt) -> tuple[bytes, int]:
        from ape.exceptions import ContractLogicError, OutOfGasError, TransactionError, VirtualMachineError

        from agents.chain.txsend import NonceInUse, send_as

        receipt = record.receipt
        try:
            with self.tx_lock:
                if channel.kind == "voucher":
                    pool, voucher = self._voucher(channel)
                    call = lambda: pool.settle(voucher, receipt, record.signature, sender=self.operator)  # noqa: E731
                else:
                    call = lambda: self.contracts.channels.settle(  # noqa: E731
                        receipt.channel_id, receipt.cumulative_bytes, receipt.cumulative_amount, record.signature,
                        sender=self.operator)
                # A transaction of the operator's sent elsewhere takes ape's nonce: wait it out, send again.
                tx = send_as(self.operator, call, f"settling channel 0x{receipt.channel_id.hex()[:16]}")
        except NonceInUse as exc:
            raise ChainUnavailable(str(exc)) from exc  # retried with backoff, its words in last_error
        except (ContractLogicError, VirtualMachineError, OutOfGasError) as exc:
            raise SettlementRejected(getattr(exc, "message", None) or str(exc)) from exc
        except LocalProtocolError:
            raise
        except TransactionError as exc:
            raise SettlementRejected(str(exc)) from exc
        except Exception as exc:
            raise ChainUnavailable(str(exc)) from exc
        if getattr(tx, "failed", False):
            raise SettlementRejected("settle transaction failed")
        return bytes.fromhex(str(tx.txn_hash).removeprefix("0x")), int(tx.gas_used)

    def close_events(self, from_block: int | None) -> tuple[list[tuple[bytes, int]], int]:
        import ape

        try:
            head = int(ape.chain.blocks.head.number)
            if from_block is None:
                return [], head + 1
            if from_block > head:
                return [], from_block
            events = []
            for contract in (self.contracts.channels, *(v.pool for v in self.voucher_channels.values())):
                for entry in contract.ChannelCloseStarted.range(from_block, head + 1):
                    events.append((bytes(entry.channel_id), int(entry.close_at)))
        except Exception as exc:
            raise ChainUnavailable(str(exc)) from exc
        return events, head + 1
