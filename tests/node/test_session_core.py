"""The node's session core with a fake clock: quarantine, setup checks, metering gates."""

import os

import pytest
from eth_account import Account
from eth_utils import keccak

from agents.chain.bindings import ChannelState, ChannelStatus
from agents.control import SessionRequest, sign_request
from agents.metering import ReceiptSigner
from agents.node.session import (
    REQUEST_WINDOW_S,
    Admit,
    AddressPool,
    Forget,
    NodeOffer,
    NodeSessions,
    RemovePeer,
    Resume,
    SetAllowedIPs,
    SetupRefused,
    Suspend,
    quarantine_address,
)

CHAIN_ID = 31337
CHANNELS = "0x" + "cc" * 20
NODE_ID = keccak(b"node key")
OTHER_NODE = keccak(b"other node key")
PRICE = 10**18  # token wei per GiB
DEPOSIT = 10**18
WALL = 1_800_000_000.0


class MemoryStore:
    """A ReceiptStore stand-in kept in memory (the durable one is tested in test_store.py)."""

    def __init__(self):
        self.records = []

    def load(self):
        return list(self.records)

    def append(self, record):
        self.records.append(record)


def channel_id_of(node_id, client, signer):
    return keccak(node_id + bytes.fromhex(client[2:]) + bytes.fromhex(signer[2:]))


@pytest.fixture
def parties():
    client, signer = Account.create(), Account.create()
    return client, signer


@pytest.fixture
def node():
    stores = {}

    def ledger_for(terms):
        from agents.metering import ReceiptLedger
        return ReceiptLedger(terms, stores.setdefault(terms.channel_id, MemoryStore()))

    offer = NodeOffer(NODE_ID, CHAIN_ID, CHANNELS, PRICE, credit_bytes=1 << 20, receipt_bytes=1 << 18,
                      max_pending=2, setup_timeout_s=10)
    return NodeSessions(offer, AddressPool("10.77.0.0/16", "fd77:7272::/64"), ledger_for, channel_id_of)


def make_request(parties, wg_key, *, node_id=NODE_ID, timestamp=WALL, nonce=None, sign_with=None):
    client, signer = parties
    cid = channel_id_of(node_id, client.address, signer.address)
    request = SessionRequest(cid, node_id, wg_key, int(timestamp), nonce or os.urandom(32))
    signature = sign_request(request, (sign_with or signer).key, CHAIN_ID, CHANNELS)
    return request, signature, {"client": client.address, "signer": signer.address}


def open_channel(parties, node_id=NODE_ID, status=ChannelStatus.OPEN, deposit=DEPOSIT):
    client, signer = parties
    cid = channel_id_of(node_id, client.address, signer.address)
    return ChannelState(cid, node_id, client.address, deposit, 0, 0, 0, status)


def set_up(node, parties, wg_key=None, now=0.0):
    wg_key = wg_key or os.urandom(32)
    assert node.admit_unknown(wg_key, now)
    request, signature, names = make_request(parties, wg_key)
    return node.setup(wg_key, request, signature, names, open_channel(parties), now, WALL)


def test_quarantine_address__derived_from_key__stable_and_in_prefix():
    key = os.urandom(32)
    assert quarantine_address(key) == quarantine_address(key)
    assert quarantine_address(key).startswith("fd77:7272:0:ffff:")
    assert quarantine_address(key) != quarantine_address(os.urandom(32))


def test_admit_unknown__bounded__refuses_past_max_pending(node):
    assert node.admit_unknown(b"a" * 32, 0) == [quarantine_address(b"a" * 32) + "/128"]
    assert node.admit_unknown(b"b" * 32, 0)
    assert node.admit_unknown(b"c" * 32, 0) is None
    assert node.refusals["quarantine_full"] == 1
    assert node.admit_unknown(b"a" * 32, 1)  # a pending key may handshake again


def test_quarantine__unpaid_key__removed_after_setup_timeout(node):
    node.admit_unknown(b"a" * 32, 0)
    assert node.tick(5) == []
    assert node.tick(11) == [RemovePeer(b"a" * 32)]
    assert not node.pending


def test_setup__valid_request__addresses_and_exit_opened(node, parties):
    session, terms, actions = set_up(node, parties, wg_key=b"k" * 32)
    assert terms.address_v4 == "10.77.0.2" and terms.address_v6 == "fd77:7272::2"
    assert terms.dns == ("10.77.0.1", "fd77:7272::1")
    assert terms.price_per_gib == PRICE and terms.credit_bytes == 1 << 20
    assert actions == [SetAllowedIPs(b"k" * 32, (quarantine_address(b"k" * 32) + "/128", "10.77.0.2/32",
                                                 "fd77:7272::2/128")), Admit("10.77.0.2", "fd77:7272::2")]
    assert b"k" * 32 in node.sessions and not node.pending


@pytest.mark.parametrize("case, reason", [
    ("wrong_key", "wrong_tunnel"),
    ("other_node", "wrong_node"),
    ("stale", "stale_request"),
    ("future", "stale_request"),
    ("forged", "bad_signature"),
    ("closing", "channel_not_open"),
    ("none", "unknown_channel"),
    ("foreign", "foreign_channel"),
    ("empty", "no_room"),
    ("no_quarantine", "not_in_quarantine"),
])
def test_setup__bad_request__refused_and_nothing_changes(node, parties, case, reason):
    wg_key = os.urandom(32)
    if case != "no_quarantine":
        node.admit_unknown(wg_key, 0)
    kwargs, channel = {}, open_channel(parties)
    if case == "stale":
        kwargs["timestamp"] = WALL - REQUEST_WINDOW_S - 1
    elif case == "future":
        kwargs["timestamp"] = WALL + REQUEST_WINDOW_S + 1
    elif case == "forged":
        kwargs["sign_with"] = Account.create()
    elif case == "other_node":
        kwargs["node_id"] = OTHER_NODE
    request, signature, names = make_request(parties, os.urandom(32) if case == "wrong_key" else wg_key, **kwargs)
    if case == "closing":
        channel = open_channel(parties, status=ChannelStatus.CLOSING)
    elif case == "none":
        channel = open_channel(parties, status=ChannelStatus.NONE)
    elif case == "foreign":
        channel = ChannelState(channel.channel_id, OTHER_NODE, channel.client, DEPOSIT, 0, 0, 0, ChannelStatus.OPEN)
    elif case == "empty":
        channel = ChannelState(channel.channel_id, NODE_ID, channel.client, DEPOSIT, DEPOSIT, 0, 0, ChannelStatus.OPEN)
    with pytest.raises(SetupRefused) as refused:
        node.setup(wg_key, request, signature, names, channel, 0, WALL)
    assert refused.value.reason == reason
    assert not node.sessions
    assert node.refusals == {reason: 1}


def test_setup__replayed_request__refused(node, parties):
    wg_key = os.urandom(32)
    node.admit_unknown(wg_key, 0)
    request, signature, names = make_request(parties, wg_key)
    node.setup(wg_key, request, signature, names, open_channel(parties), 0, WALL)
    node.end(wg_key)
    node.admit_unknown(wg_key, 1)
    with pytest.raises(SetupRefused, match="replayed_request"):
        node.setup(wg_key, request, signature, names, open_channel(parties), 1, WALL + 1)


def test_setup__channel_names_mismatch__wrong_channel(node, parties):
    wg_key = os.urandom(32)
    node.admit_unknown(wg_key, 0)
    request, signature, names = make_request(parties, wg_key)
    names["client"] = Account.create().address
    with pytest.raises(SetupRefused, match="wrong_channel"):
        node.setup(wg_key, request, signature, names, open_channel(parties), 0, WALL)


def test_setup__same_channel_from_two_tunnels__second_refused(node, parties):
    set_up(node, parties)
    with pytest.raises(SetupRefused, match="channel_in_use"):
        set_up(node, parties)


def test_metering__unpaid_past_credit__suspended_then_resumed_when_paid(node, parties):
    session, terms, _ = set_up(node, parties, wg_key=b"k" * 32)
    node.update_billed(b"k" * 32, (1 << 20) - 1, 1)
    assert node.tick(1) == []
    node.update_billed(b"k" * 32, (1 << 20) + 5000, 2)
    assert node.tick(2) == [Suspend(session.v4, session.v6, (1 << 20) + 5000)]
    assert node.tick(3) == []  # suspended once
    signer = ReceiptSigner(session.ledger.terms, parties[1].key)
    receipt, signature = signer.sign((1 << 20) + 5000)
    decision, actions = node.on_receipt(b"k" * 32, receipt, signature, 4)
    assert decision.accepted and actions == [Resume(session.v4, session.v6)]


def test_metering__newer_count_past_credit__suspended_before_it_is_billed(node, parties):
    """The bill lags a meter period (only packets the exit has judged are billed); the credit is
    checked against the runtime's newer count, so the cut-off does not wait for the bill."""
    session, _, _ = set_up(node, parties, wg_key=b"k" * 32)
    node.update_billed(b"k" * 32, 1000, 1, counted_bytes=(1 << 20) + 5000)
    assert session.billed_bytes == 1000  # nothing billed from the newer count
    assert node.tick(1) == [Suspend(session.v4, session.v6, (1 << 20) + 5000)]


def test_metering__replayed_receipt__refused(node, parties):
    session, _, _ = set_up(node, parties, wg_key=b"k" * 32)
    node.update_billed(b"k" * 32, 1000, 1)
    signer = ReceiptSigner(session.ledger.terms, parties[1].key)
    receipt, signature = signer.sign(1000)
    assert node.on_receipt(b"k" * 32, receipt, signature, 1)[0].accepted
    decision, _ = node.on_receipt(b"k" * 32, receipt, signature, 2)
    assert not decision.accepted and decision.reason.value == "replayed"


def test_reconnect__new_tunnel_on_same_channel__counts_from_paid_bytes(node, parties):
    session, _, _ = set_up(node, parties, wg_key=b"a" * 32)
    node.update_billed(b"a" * 32, 5000, 1)
    signer = ReceiptSigner(session.ledger.terms, parties[1].key)
    receipt, signature = signer.sign(5000)
    assert node.on_receipt(b"a" * 32, receipt, signature, 1)[0].accepted
    assert node.end(b"a" * 32) == [Forget(session.v4, session.v6), RemovePeer(b"a" * 32)]
    again, terms, _ = set_up(node, parties, wg_key=b"b" * 32, now=2)
    assert terms.paid_bytes == 5000 and terms.paid_amount == receipt.cumulative_amount
    assert again.observed_bytes == 5000 and again.v4 == session.v4  # the freed address is reused


def test_idle_session__ends_after_timeout(node, parties):
    node.offer = node.offer.__class__(**{**node.offer.__dict__, "idle_timeout_s": 30})
    session, _, _ = set_up(node, parties, wg_key=b"k" * 32)
    assert node.tick(29) == []
    assert node.tick(31) == [Forget(session.v4, session.v6), RemovePeer(b"k" * 32)]
