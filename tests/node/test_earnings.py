"""Earnings per day and per channel from a real store: exact integer totals, fee rounded per channel
as payment_channels does, the chain's settled figures preferred, and a rich rendering."""

import pytest
from eth_account import Account
from eth_utils import keccak
from rich.console import Console

from agents.metering import GIB, ChannelTerms, ReceiptLedger, ReceiptSigner
from agents.node import earnings
from agents.node.store import NodeStore

DAY1 = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY2 = DAY1 + 86_400
PRICE = 3 * 10**17 + 7  # token wei per GiB, odd so that amounts and fees round
FEE_BPS = 100


class Clock:
    now = DAY1 + 60.0

    def __call__(self):
        return self.now


@pytest.fixture
def setup(tmp_path):
    clock = Clock()
    store = NodeStore(tmp_path / "node.db", clock=clock)
    pay = {}
    for n in range(2):
        key = keccak(b"earnings signer %d" % n)
        terms = ChannelTerms(keccak(b"earnings channel %d" % n), Account.from_key(key).address, 10**21, PRICE,
                             10 * GIB, 31337, "0x" + "11" * 20)
        store.upsert_channel(terms)
        ledger = ReceiptLedger(terms, store.receipt_store(terms.channel_id))
        signer = ReceiptSigner(terms, key)

        def _pay(nbytes, ledger=ledger, signer=signer):
            assert ledger.accept(*signer.sign(nbytes), nbytes).accepted
            return ledger.latest().receipt

        pay[n] = (terms.channel_id, _pay)
    yield store, clock, pay
    store.close()


def test_from_store__days_channels_and_totals_add_up(setup):
    store, clock, pay = setup
    (a, pay_a), (b, pay_b) = pay[0], pay[1]
    a1 = pay_a(GIB // 3)
    b1 = pay_b(GIB)
    sid = store.settlement_started(a, a1.cumulative_amount, a1.cumulative_bytes, DAY1 + 100)
    store.settlement_confirmed(sid, b"\x01" * 32, 61_882, DAY1 + 120)
    failed = store.settlement_started(b, b1.cumulative_amount, b1.cumulative_bytes, DAY1 + 130)
    store.settlement_failed(failed, "payment_channels: stale amount", DAY1 + 140)
    clock.now = DAY2 + 5
    a2 = pay_a(2 * GIB)

    report = earnings.from_store(store, FEE_BPS)
    by_id = {c.channel_id: c for c in report.channels}
    assert (by_id[a].earned, by_id[a].settled, by_id[a].unsettled, by_id[a].receipts) == (
        a2.cumulative_amount, a1.cumulative_amount, a2.cumulative_amount - a1.cumulative_amount, 2)
    assert (by_id[b].earned, by_id[b].settled, by_id[b].unsettled) == (b1.cumulative_amount, 0, b1.cumulative_amount)
    for c in report.channels:
        assert c.fee == c.earned * FEE_BPS // 10_000 and c.net == c.earned - c.fee
    assert report.earned == a2.cumulative_amount + b1.cumulative_amount
    assert report.settled + report.unsettled == report.earned
    assert report.fee == sum(c.fee for c in report.channels) and report.net + report.fee == report.earned
    assert [(d.day, d.earned, d.settled, d.receipts) for d in report.days] == [
        ("2026-01-01", a1.cumulative_amount + b1.cumulative_amount, a1.cumulative_amount, 2),
        ("2026-01-02", a2.cumulative_amount - a1.cumulative_amount, 0, 1)]
    assert sum(d.earned for d in report.days) == report.earned


def test_chain_settled__overrides_store(setup):
    store, _, pay = setup
    (a, pay_a) = pay[0]
    latest = pay_a(GIB)
    report = earnings.from_store(store, FEE_BPS, chain_settled={a: latest.cumulative_amount - 5})
    [row] = report.channels
    assert (row.settled, row.unsettled) == (latest.cumulative_amount - 5, 5)
    lost = earnings.from_store(store, FEE_BPS, chain_settled={a: latest.cumulative_amount + 9})
    assert (lost.earned, lost.unsettled) == (latest.cumulative_amount + 9, 0)  # never negative


def test_fee__rounded_down_per_channel():
    from agents.chain.eip712 import Receipt
    from agents.metering import AcceptedReceipt

    history = [(AcceptedReceipt(Receipt(bytes([n]) * 32, 1, 199), b"", 1), DAY1) for n in range(3)]
    report = earnings.compute(history, [], FEE_BPS)
    assert [c.fee for c in report.channels] == [1, 1, 1] and report.fee == 3  # not 597 // 100 = 5
    assert report.net == 3 * 198


def test_render__shows_rows_and_totals(setup):
    store, _, pay = setup
    latest = pay[0][1](GIB)
    console = Console(record=True, width=200)
    console.print(earnings.render(earnings.from_store(store, FEE_BPS)))
    text = console.export_text()
    assert "2026-01-01" in text and "0x" + pay[0][0].hex()[:16] in text
    assert text.count(str(latest.cumulative_amount)) >= 3  # day row, channel row, totals
