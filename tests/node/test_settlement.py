"""Settlement policy (pure, fake clock) and the Settler over a fake chain with payment_channels' rules:
threshold, closes, shutdown, restart, backoff, and crashes between send and record."""

import pytest
from eth_account import Account
from eth_utils import keccak

from agents.chain.bindings import ChannelState, ChannelStatus
from agents.metering import GIB, ChannelTerms, LocalProtocolError, ReceiptLedger, ReceiptSigner
from agents.node.settlement import (
    Backoff,
    ChainUnavailable,
    ChannelView,
    Reason,
    SettleOrder,
    SettlementPolicy,
    SettlementRejected,
    Settler,
    default_threshold,
)
from agents.node.store import NodeStore

PRICE = 10**18  # token wei per GiB: one GiB costs one token
THRESHOLD = 5 * 10**17


# -- default_threshold -------------------------------------------------------------------------------

@pytest.mark.parametrize("gas, gas_price, token_price", [
    (62_000, 10**9, 10**15), (62_000, 3 * 10**10, 10**18), (61_882, 7, 3), (62_000, 10**9, 0.0004)])
def test_default_threshold__gas_is_at_most_one_percent(gas, gas_price, token_price):
    threshold = default_threshold(gas, gas_price, token_price)
    from fractions import Fraction
    gas_in_token_wei = Fraction(gas * gas_price) * 10**18 / Fraction(token_price)
    assert gas_in_token_wei * 100 <= threshold < gas_in_token_wei * 100 + 1


def test_default_threshold__known_figure():
    # 62,000 gas at 1 gwei = 6.2e13 wei of ETH; a token worth 1e15 wei: 0.062 token -> 6.2 tokens.
    assert default_threshold(62_000, 10**9, 10**15) == 62 * 10**17


def test_default_threshold__zero_price__refused():
    with pytest.raises(LocalProtocolError):
        default_threshold(62_000, 10**9, 0)


# -- policy --------------------------------------------------------------------------------------------

def _view(n, latest, settled=0, close_at=None):
    return ChannelView(bytes([n]) * 32, latest, settled, close_at is not None, close_at or 0)


def test_policy__threshold_is_strict():
    policy = SettlementPolicy(100)
    views = [_view(1, 100), _view(2, 151, 50), _view(3, 250, 100)]
    assert policy.decide(views, now=0) == [SettleOrder(bytes([3]) * 32, Reason.THRESHOLD),
                                           SettleOrder(bytes([2]) * 32, Reason.THRESHOLD)]


def test_policy__close_started__settles_tiny_amount_before_close_at_only():
    policy = SettlementPolicy(10**6)
    views = [_view(1, 5, close_at=1000), _view(2, 7, close_at=500), _view(3, 9, 9, close_at=900)]
    assert policy.decide(views, now=499) == [SettleOrder(bytes([2]) * 32, Reason.CLOSING),
                                             SettleOrder(bytes([1]) * 32, Reason.CLOSING)]
    assert policy.decide(views, now=500) == [SettleOrder(bytes([1]) * 32, Reason.CLOSING)]
    assert policy.decide(views, now=1000) == []


def test_policy__shutdown_and_restart__everything_unsettled():
    policy = SettlementPolicy(10**6)
    views = [_view(1, 5), _view(2, 5, 5), _view(3, 2, close_at=10)]
    assert policy.decide(views, now=0, shutting_down=True) == [
        SettleOrder(bytes([3]) * 32, Reason.CLOSING), SettleOrder(bytes([1]) * 32, Reason.SHUTDOWN)]
    assert policy.decide(views, now=0, restarted=True)[1] == SettleOrder(bytes([1]) * 32, Reason.RESTART)
    assert policy.decide(views, now=0) == [SettleOrder(bytes([3]) * 32, Reason.CLOSING)]


# -- the settler over a fake chain -------------------------------------------------------------------

class Crash(BaseException):
    """The process dies here (nothing after it runs)."""


class FakeChain:
    """payment_channels' settlement rules on a dict, with injectable RPC failures and crashes."""

    def __init__(self):
        self.state: dict[bytes, ChannelState] = {}
        self.sent = []
        self.fail_reads = 0
        self.fail_sends = 0
        self.crash_after_send = False
        self.crash_before_send = False
        self.events: list[tuple[bytes, int]] = []
        self.block = 1

    def open(self, channel_id, deposit=10**20):
        self.state[channel_id] = ChannelState(channel_id, b"\0" * 32, "0x" + "00" * 20, deposit, 0, 0, 0,
                                              ChannelStatus.OPEN)

    def set(self, channel_id, **changes):
        from dataclasses import replace
        self.state[channel_id] = replace(self.state[channel_id], **changes)

    def channel_state(self, channel):
        if self.fail_reads:
            self.fail_reads -= 1
            raise ChainUnavailable("connection refused")
        return self.state[channel.channel_id]

    def settle(self, channel, record):
        if self.crash_before_send:
            raise Crash()
        if self.fail_sends:
            self.fail_sends -= 1
            raise ChainUnavailable("timeout")
        state = self.state[channel.channel_id]
        r = record.receipt
        if r.cumulative_amount <= state.settled:
            raise SettlementRejected("payment_channels: stale amount")
        self.set(channel.channel_id, settled=r.cumulative_amount, settled_bytes=r.cumulative_bytes)
        self.sent.append((channel.channel_id, r.cumulative_amount))
        if self.crash_after_send:
            raise Crash()
        return keccak(b"tx %d" % len(self.sent)), 61_882

    def close_events(self, from_block):
        if from_block is None:
            return [], self.block
        events, self.events = self.events, []
        self.block += 1
        return events, self.block


class FakeTime:
    def __init__(self):
        self.now = 1_000.0
        self.sleeps = []

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def chain():
    return FakeChain()


@pytest.fixture
def clock():
    return FakeTime()


@pytest.fixture
def db(tmp_path):
    return tmp_path / "node.db"


@pytest.fixture
def channel(db, chain):
    """Factory: a channel on the fake chain and in the store; pay(tokens_wei) stores a receipt."""
    made = []

    def _make(n=0):
        key = keccak(b"settlement signer %d" % n)
        terms = ChannelTerms(keccak(b"settle channel %d" % n), Account.from_key(key).address, 10**20, PRICE,
                             10 * GIB, 31337, "0x" + "11" * 20)
        store = NodeStore(db)
        store.upsert_channel(terms)
        ledger = ReceiptLedger(terms, store.receipt_store(terms.channel_id))
        signer = ReceiptSigner(terms, key)
        chain.open(terms.channel_id)
        made.append(store)

        def pay(amount):
            nbytes = amount * GIB // PRICE
            assert ledger.accept(*signer.sign(nbytes), nbytes).accepted
            return ledger.latest().receipt.cumulative_amount

        return terms.channel_id, pay

    yield _make
    for store in made:
        store.close()


def _settler(db, chain, clock, threshold=THRESHOLD, **kw):
    store = NodeStore(db)
    return Settler(store, chain, SettlementPolicy(threshold), clock=lambda: clock.now, sleep=clock.sleep, **kw)


def test_step__over_threshold_only__settled_and_recorded(db, chain, clock, channel):
    cid, pay = channel()
    settler = _settler(db, chain, clock)
    settler.recover()
    pay(THRESHOLD)
    assert settler.step() == []
    amount = pay(THRESHOLD + 10**9)
    [outcome] = settler.step()
    assert (outcome.result, outcome.amount, outcome.gas) == ("settled", amount, 61_882)
    assert chain.state[cid].settled == amount and chain.sent == [(cid, amount)]
    [row] = settler.store.settlements(cid)
    assert (row.status, row.amount, row.tx_hash) == ("confirmed", amount, outcome.tx_hash)
    assert settler.store.unsettled() == [] and settler.step() == []


def test_step__rpc_errors__retried_with_exponential_backoff(db, chain, clock, channel):
    cid, pay = channel()
    amount = pay(2 * THRESHOLD)
    settler = _settler(db, chain, clock)
    chain.fail_reads = 2
    chain.fail_sends = 1
    [outcome] = settler.recover()
    assert outcome.result == "settled" and chain.state[cid].settled == amount
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert [r.status for r in settler.store.settlements(cid)] == ["failed", "confirmed"]  # the timed-out send


def test_step__chain_down__deferred_then_retried(db, chain, clock, channel):
    cid, pay = channel()
    pay(2 * THRESHOLD)
    settler = _settler(db, chain, clock, backoff=Backoff(initial=1, factor=2, cap=8, attempts=2))
    chain.fail_reads = 2
    [outcome] = settler.recover()
    assert outcome.result == "unavailable" and clock.sleeps == [1]
    assert settler.step(clock.now + 0.5) == []  # deferred by 1 s after the first failed round
    [outcome] = settler.step(clock.now + 1)
    assert outcome.result == "settled" and len(chain.sent) == 1


def test_crash_after_send__restart_reconciles__nothing_sent_twice(db, chain, clock, channel):
    cid, pay = channel()
    amount = pay(2 * THRESHOLD)
    chain.crash_after_send = True
    with pytest.raises(Crash):
        _settler(db, chain, clock).recover()
    assert [r.status for r in NodeStore(db).settlements(cid)] == ["pending"]
    chain.crash_after_send = False
    restarted = _settler(db, chain, clock)  # a new process on the same file
    assert restarted.recover() == []
    assert chain.sent == [(cid, amount)]
    [row] = restarted.store.settlements(cid)
    assert (row.status, row.tx_hash, restarted.store.settled_amount(cid)) == ("confirmed", None, amount)


def test_crash_before_send__restart_settles_once(db, chain, clock, channel):
    cid, pay = channel()
    amount = pay(THRESHOLD // 10)  # below the threshold: only the restart rule settles it
    chain.crash_before_send = True
    with pytest.raises(Crash):
        _settler(db, chain, clock).recover()
    chain.crash_before_send = False
    [outcome] = _settler(db, chain, clock).recover()
    assert outcome.result == "settled" and chain.sent == [(cid, amount)]
    assert [r.status for r in NodeStore(db).settlements(cid)] == ["failed", "confirmed"]


def test_close_started__settles_at_once_below_threshold(db, chain, clock, channel):
    cid, pay = channel()
    other, pay_other = channel(1)
    settler = _settler(db, chain, clock)
    settler.recover()
    amount = pay(10**12)
    pay_other(10**12)
    assert settler.step() == []
    chain.events.append((cid, int(clock.now) + 86_400))
    chain.set(cid, status=ChannelStatus.CLOSING, close_at=int(clock.now) + 86_400)
    [outcome] = settler.step()
    assert (outcome.channel_id, outcome.result) == (cid, "settled") and chain.sent == [(cid, amount)]


def test_close_past_deadline__too_late_not_retried(db, chain, clock, channel):
    cid, pay = channel()
    pay(2 * THRESHOLD)
    chain.set(cid, status=ChannelStatus.CLOSING, close_at=int(clock.now) - 1)
    settler = _settler(db, chain, clock)
    [outcome] = settler.recover()
    assert outcome.result == "too_late" and chain.sent == []
    assert settler.step() == [] and settler.shutdown() == []


def test_chain_already_has_it__observed_not_sent(db, chain, clock, channel):
    cid, pay = channel()
    amount = pay(2 * THRESHOLD)
    chain.set(cid, settled=amount, settled_bytes=1)  # e.g. a cooperative close the client submitted
    settler = _settler(db, chain, clock)
    [outcome] = settler.recover()
    assert outcome.result == "already" and chain.sent == []
    assert settler.store.settled_amount(cid) == amount and settler.store.unsettled() == []


def test_rejected__recorded_failed_and_deferred(db, chain, clock, channel):
    cid, pay = channel()
    pay(2 * THRESHOLD)
    settler = _settler(db, chain, clock)

    def revert(channel, record):
        raise SettlementRejected("payment_channels: not the node operator")

    chain.settle = revert
    [outcome] = settler.recover()
    assert outcome.reason == "payment_channels: not the node operator"
    [row] = settler.store.settlements(cid)
    assert (row.status, row.reason) == ("failed", "payment_channels: not the node operator")
    assert settler.step() == []  # deferred, not hammered every step
    assert "not the node operator" in settler.status()["last_error"]


def test_shutdown__settles_everything(db, chain, clock, channel):
    paid = {}
    for n in range(3):
        cid, pay = channel(n)
        paid[cid] = pay(10**12 * (n + 1))
    settler = _settler(db, chain, clock)
    assert settler.step() == []
    outcomes = settler.shutdown()
    assert {o.channel_id: o.amount for o in outcomes if o.result == "settled"} == paid
    assert settler.status()["unsettled_channels"] == 0
