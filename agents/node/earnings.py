"""What the node earned, per day and per channel, from its store (and the chain's settled figures).

All figures are integers in token wei. Per channel: *earned* is the latest receipt's cumulative
amount, *settled* what is settled on chain (the chain's figure when given, else the store's confirmed
settlements), *unsettled* = earned - settled, *fee* = payment_channels' ``fee_of(earned)``
(``earned * fee_bps // 10_000``, rounded down per channel as the contract does) and *net* = earned -
fee, the operator's share. Totals are sums of the channel rows, so settled + unsettled = earned holds
exactly. Per day (UTC, by when the node stored each receipt / confirmed each settlement): the growth
of the cumulative amounts that day; the days' sums equal the store's totals.

:func:`compute` is pure; :func:`from_store` reads a :class:`NodeStore`; :func:`render` makes rich
tables.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

from rich.console import Group
from rich.table import Table

from agents.metering import AcceptedReceipt
from agents.node.store import CONFIRMED, NodeStore, SettlementRow

__all__ = ["ChannelEarnings", "DayEarnings", "Earnings", "chain_settled", "compute", "from_chain", "from_store",
           "render"]

#: Basis points in one whole (payment_channels' _BPS).
BPS = 10_000


@dataclasses.dataclass(frozen=True)
class ChannelEarnings:
    """One channel's figures (token wei)."""

    channel_id: bytes
    earned: int
    settled: int
    unsettled: int
    fee: int
    net: int
    receipts: int


@dataclasses.dataclass(frozen=True)
class DayEarnings:
    """One UTC day: growth of what was earned (receipts stored) and settled (confirmed) that day.

    ``unsettled`` is what was earned but not settled at the end of the day (a running balance, from
    the store's settlements: the last day's can differ from the total's chain figure when settlements
    were made elsewhere); ``fee`` the protocol fee on that day's earnings (rounded down per day, so
    the days' fees may sum a few wei under the per-channel total); ``gas`` the gas that day's
    confirmed settlements used.
    """

    day: str
    earned: int
    settled: int
    receipts: int
    unsettled: int = 0
    fee: int = 0
    gas: int = 0


@dataclasses.dataclass(frozen=True)
class Earnings:
    """Per channel, per day, and totals (sums of the channel rows)."""

    channels: list[ChannelEarnings]
    days: list[DayEarnings]
    earned: int
    settled: int
    unsettled: int
    fee: int
    net: int


def _day(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.timezone.utc).date().isoformat()


def compute(history: Iterable[tuple[AcceptedReceipt, float]], settlements: Iterable[SettlementRow], fee_bps: int,
            chain_settled: dict[bytes, int] | None = None) -> Earnings:
    """Earnings from stored receipts and settlement rows.

    Args:
        history: (receipt, stored_at unix seconds), in store order (each channel's amounts grow).
        settlements: settlement rows (only confirmed ones count).
        fee_bps: payment_channels' fee in basis points.
        chain_settled: the chain's settled amount per channel, overriding the store's where given.

    Returns:
        The report. If the chain shows more settled than the latest stored receipt (receipts lost),
        that channel's earned is the chain's figure, so unsettled is never negative.
    """
    latest: dict[bytes, int] = {}
    count: dict[bytes, int] = defaultdict(int)
    day_earned: dict[str, int] = defaultdict(int)
    day_receipts: dict[str, int] = defaultdict(int)
    for record, at in history:
        cid, amount = record.receipt.channel_id, record.receipt.cumulative_amount
        day_earned[_day(at)] += amount - latest.get(cid, 0)
        day_receipts[_day(at)] += 1
        latest[cid] = amount
        count[cid] += 1
    store_settled: dict[bytes, int] = {}
    day_settled: dict[str, int] = defaultdict(int)
    day_gas: dict[str, int] = defaultdict(int)
    for row in sorted((r for r in settlements if r.status == CONFIRMED), key=lambda r: (r.finished_at or 0, r.id)):
        day = _day(row.finished_at or row.started_at)
        day_gas[day] += row.gas or 0
        previous = store_settled.get(row.channel_id, 0)
        if row.amount > previous:
            day_settled[day] += row.amount - previous
            store_settled[row.channel_id] = row.amount
    settled_of = dict(store_settled)
    settled_of.update(chain_settled or {})
    rows = []
    for cid in sorted(set(latest) | set(settled_of)):
        settled = settled_of.get(cid, 0)
        earned = max(latest.get(cid, 0), settled)
        fee = earned * fee_bps // BPS
        rows.append(ChannelEarnings(cid, earned, settled, earned - settled, fee, earned - fee, count.get(cid, 0)))
    days, owed = [], 0
    for d in sorted(set(day_earned) | set(day_settled)):
        owed += day_earned.get(d, 0) - day_settled.get(d, 0)
        days.append(DayEarnings(d, day_earned.get(d, 0), day_settled.get(d, 0), day_receipts.get(d, 0),
                                max(0, owed), day_earned.get(d, 0) * fee_bps // BPS, day_gas.get(d, 0)))
    return Earnings(rows, days, sum(r.earned for r in rows), sum(r.settled for r in rows),
                    sum(r.unsettled for r in rows), sum(r.fee for r in rows), sum(r.net for r in rows))


def from_store(store: NodeStore, fee_bps: int, chain_settled: dict[bytes, int] | None = None) -> Earnings:
    """:func:`compute` over everything in the node's store."""
    return compute(store.receipt_history(), store.settlements(), fee_bps, chain_settled)


def chain_settled(store: NodeStore, contracts) -> dict[bytes, int]:
    """The chain's settled amount of each payment channel in the store (voucher channels: the store's)."""
    return {c.channel_id: contracts.channel(c.channel_id).settled for c in store.channels() if c.kind == "channels"}


def from_chain(store: NodeStore, contracts) -> Earnings:
    """The report `warren node earnings` and the dashboard show: the store's receipts, the chain's fee
    and settled amounts (one source of numbers for both)."""
    return from_store(store, int(contracts.channels.fee_bps()), chain_settled(store, contracts))


def render(report: Earnings) -> Group:
    """Two rich tables, per day and per channel, amounts in token wei; totals in the footers."""
    days = Table(title="Earnings per day (UTC)", show_footer=True)
    days.add_column("day", footer="total")
    for name, total in (("earned", sum(d.earned for d in report.days)),
                        ("settled", sum(d.settled for d in report.days)),
                        ("receipts", sum(d.receipts for d in report.days))):
        days.add_column(name, justify="right", footer=str(total))
    for d in report.days:
        days.add_row(d.day, str(d.earned), str(d.settled), str(d.receipts))
    channels = Table(title="Earnings per channel (token wei)", show_footer=True)
    channels.add_column("channel", footer="total")
    for name in ("earned", "settled", "unsettled", "fee", "net"):
        channels.add_column(name, justify="right", footer=str(getattr(report, name)))
    channels.add_column("receipts", justify="right", footer=str(sum(c.receipts for c in report.channels)))
    for c in report.channels:
        channels.add_row("0x" + c.channel_id.hex()[:16], str(c.earned), str(c.settled), str(c.unsettled),
                         str(c.fee), str(c.net), str(c.receipts))
    return Group(days, channels)
