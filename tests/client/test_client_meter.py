"""The client's payment core with a fake clock: cadence, the credit cap, disputes, liveness."""

import os

import pytest
from eth_account import Account

from agents.client.session import ClientMeter, LatencyProbe, Liveness
from agents.control import SessionTerms
from agents.metering import ChannelTerms, ReceiptSigner, price_of

PRICE = 10**18
CREDIT = 1 << 20


@pytest.fixture
def meter():
    key = Account.create()
    terms = ChannelTerms(os.urandom(32), key.address, 10**18, PRICE, CREDIT, 31337, "0x" + "cc" * 20)
    session = SessionTerms("10.77.0.2", "fd77:7272::2", ("10.77.0.1",), PRICE, CREDIT, 1 << 20, 5.0)
    return ClientMeter(ReceiptSigner(terms, key.key), session, now=0.0)


def test_due__after_receipt_bytes_or_interval(meter):
    assert meter.next_receipt(1000, 1.0) is None          # neither 1 MiB nor 5 s yet
    receipt, _ = meter.next_receipt(1000, 5.0)             # interval passed
    assert receipt.cumulative_bytes == 1000
    meter.on_invoice(1000 + (1 << 20), 0)                   # the node has counted as much
    receipt, _ = meter.next_receipt(1000 + (1 << 20), 5.1)  # 1 MiB more
    assert receipt.cumulative_bytes == 1000 + (1 << 20)
    assert receipt.cumulative_amount == price_of(receipt.cumulative_bytes, PRICE)


def test_unbilled_bytes__not_paid(meter):
    meter.on_invoice(600_000, 400_000)  # the node's exit dropped 400,000 bytes and does not bill them
    receipt, _ = meter.next_receipt(1_500_000, 5.0)
    assert receipt.cumulative_bytes == 1_500_000 - 400_000 and meter.overclaim_bytes == 0


def test_invoice_ahead__in_flight_bytes_paid_up_to_the_credit(meter):
    meter.on_invoice((1 << 20) + 300_000, 0)  # sent by the node, still in flight to us
    receipt, _ = meter.next_receipt(1 << 20, 0.1)
    assert receipt.cumulative_bytes == (1 << 20) + 300_000


def test_bill_nearing_credit__receipt_due_before_the_cadence(meter):
    meter.on_invoice(CREDIT // 2 + 1, 0)
    receipt, _ = meter.next_receipt(1000, 0.1)  # neither 1 MiB of our own nor 5 s
    assert receipt.cumulative_bytes == CREDIT // 2 + 1


def test_stale_invoice__client_pays_its_own_current_count(meter):
    meter.on_invoice(1 << 20, 0)  # crossed the tunnel behind another MiB of traffic
    receipt, _ = meter.next_receipt(2 << 20, 0.1)
    assert receipt.cumulative_bytes == 2 << 20


def test_own_count_far_ahead_of_the_bill__paid_at_most_the_credit_ahead(meter):
    """A burst the node will report dropped only in its next invoice: pay no more than the credit ahead."""
    meter.on_invoice(1 << 20, 0)
    receipt, _ = meter.next_receipt(8 << 20, 0.1)  # 7 MiB more of our own, not yet on any invoice
    assert receipt.cumulative_bytes == (1 << 20) + CREDIT
    meter.on_invoice((1 << 20) + 1000, (7 << 20) - 1000)  # the node: all but 1,000 bytes were dropped
    assert meter.next_receipt(8 << 20, 5.2) is None  # already paid past what is owed: nothing new


def test_node_overclaims__paid_own_count_plus_credit_at_most__dispute_recorded(meter):
    meter.due(2 << 20, 0.0)
    meter.on_invoice(10 << 20, 0)
    receipt, _ = meter.next_receipt(2 << 20, 0.1)
    assert receipt.cumulative_bytes == (2 << 20) + CREDIT
    assert meter.overclaim_bytes == (10 << 20) - (2 << 20) - CREDIT


def test_resumed_channel__counts_from_paid_bytes(meter):
    meter.base_bytes = 5000
    receipt, _ = meter.next_receipt(1 << 20, 0.1)
    assert receipt.cumulative_bytes == 5000 + (1 << 20)


def test_final_receipt__nothing_new__none(meter):
    meter.next_receipt(1 << 20, 0.1)
    assert meter.final_receipt() is None
    meter.due((1 << 20) + 10, 0.2)
    meter.on_invoice((1 << 20) + 10, 0)
    assert meter.final_receipt()[0].cumulative_bytes == (1 << 20) + 10


def test_liveness__silence_and_slow_latency():
    live = Liveness(dead_after_s=1.5, max_latency_s=0.5, slow_samples=2)
    live.heard(100, 10.0)
    assert live.dead(11.0) is None
    assert "nothing received" in live.dead(11.6)
    live.heard(200, 11.7)
    live.latency(0.6)
    assert live.dead(11.8) is None
    live.latency(0.7)
    assert "latency" in live.dead(11.8)
    assert live.answering(11.8)  # slow but heard: a cooperative close is worth asking for
    assert not live.answering(13.3)  # silent past dead_after_s: no close signature will come


def test_latency_probe__one_ping_outstanding__rtt_waiting_samples_and_resend():
    probe = LatencyProbe(interval_s=1.0, resend_after_s=3.0)
    nonce, waited = probe.due(0.0)
    assert nonce is not None and waited is None
    assert probe.due(0.5) == (None, None)  # not due yet
    assert probe.on_pong(b"other nonce", 0.2) is None  # forged or stale: ignored
    assert probe.on_pong(nonce, 0.25) == 0.25 and probe.last_rtt_s == 0.25
    assert probe.on_pong(nonce, 0.3) is None  # answered once only
    second, waited = probe.due(1.0)
    assert second != nonce and waited is None
    # unanswered: each due time counts the wait so far, no new PING until resend_after_s
    assert probe.due(2.0) == (None, 1.0)
    assert probe.due(3.0) == (None, 2.0)
    third, waited = probe.due(4.0)
    assert third not in (None, second) and waited == 3.0
    assert probe.on_pong(second, 4.1) is None  # the replaced PING's late answer


def test_latency_probe__hung_control_channel__liveness_says_dead():
    live, probe = Liveness(dead_after_s=1.5, max_latency_s=2.0, slow_samples=3), LatencyProbe()
    probe.due(0.0)
    for t in range(1, 5):
        live.heard(100 + t, float(t))  # WireGuard keepalives still arrive
        _, waited = probe.due(float(t))
        live.waiting(waited)  # 1 and 2 s: no news; 3 and 4 s: slow
    assert live.dead(4.0) is None
    live.heard(105, 5.0)
    _, waited = probe.due(5.0)  # replaced by a new PING; the old one waited 5 s
    live.waiting(waited)
    assert "latency above 2000 ms 3 times" in live.dead(5.0)
    live.waiting(probe.due(6.0)[1])  # the new PING has waited 1 s: still no news, still dead
    assert live.dead(6.0) is not None


def test_node_overclaims_after_drops__cap_is_own_less_unbilled_plus_credit(meter):
    """The node checks receipts against its billed count (drops excluded): a cap of own + credit
    would be more than the credit beyond it, and refused."""
    meter.due(4 << 20, 0.0)
    meter.on_invoice(10 << 20, 300_000)  # inflated bill; 300,000 bytes dropped by the exit
    receipt, _ = meter.next_receipt(4 << 20, 0.1)
    assert receipt.cumulative_bytes == (4 << 20) - 300_000 + CREDIT
    assert meter.overclaim_bytes == (10 << 20) - ((4 << 20) - 300_000 + CREDIT)
