"""The node's session core on voucher-pool channels, with a fake clock (no chain: the pool's view is
handed in as a ChannelState, as the runtime's chain port reads it).

What a voucher session must get right: the request is signed for the pool's EIP-712 domain, the
pool is one of the node's, the channel's terms (this node, the signer, the deposit) are the pool's,
a replayed or stale request is refused as for payment channels, receipts are checked in the pool's
domain, and the ledger is made with the channel's VoucherChannel record (the store keeps it for the
settler). A redemption carried by the request is submitted only if it pays this node and opens the
channel the request names.
"""

import os
from dataclasses import dataclass

import pytest
from eth_account import Account

from agents.chain.bindings import ChannelState, ChannelStatus, VoucherChannel
from agents.control import SessionRequest, sign_request
from agents.chain import eip712
from agents.metering import ReceiptLedger, ReceiptSigner, price_of
from test_session_core import MemoryStore  # tests/node is on sys.path (pytest's rootdir-less import)

from agents.node.session import (
    REQUEST_WINDOW_S,
    AddressPool,
    NodeOffer,
    NodeSessions,
    SetupRefused,
    Suspend,
    voucher_channel_id,
)

CHAIN_ID = 31337
CHANNELS = "0x" + "cc" * 20
POOL = Account.from_key(b"\x01" * 32).address
OTHER_POOL = Account.from_key(b"\x02" * 32).address
NODE_ID = bytes.fromhex("ab" * 32)
OTHER_NODE = bytes.fromhex("cd" * 32)
PRICE = 10**18
DEPOSIT = 99 * 10**17
NULLIFIER_HASH = 123456789
WALL = 1_800_000_000.0


@dataclass(frozen=True)
class FakeRedemption:
    """The fields of agents.prover.redemption.Redemption the core reads."""

    pool: str
    node_id: str
    signer: str
    nullifier_hash: int
    relayer_fee: int = 10**16


@pytest.fixture
def signer():
    return Account.create()


@pytest.fixture
def made():
    """(ledger terms, voucher record) of every ledger the core asked for."""
    return []


@pytest.fixture
def node(made):
    stores = {}

    def ledger_for(terms, voucher=None):
        made.append((terms, voucher))
        return ReceiptLedger(terms, stores.setdefault(terms.channel_id, MemoryStore()))

    offer = NodeOffer(NODE_ID, CHAIN_ID, CHANNELS, PRICE, credit_bytes=1 << 20, receipt_bytes=1 << 18,
                      max_pending=4, setup_timeout_s=10, voucher_pools=(POOL,), min_relayer_fee=10**15)
    return NodeSessions(offer, AddressPool("10.77.0.0/16", "fd77:7272::/64"), ledger_for,
                        lambda *a: pytest.fail("a voucher channel's id is not payment_channels'"))


def channel_id(pool=POOL, nullifier_hash=NULLIFIER_HASH):
    return voucher_channel_id(CHAIN_ID, pool, nullifier_hash)


def make_request(signer, wg_key, *, pool=POOL, domain=None, node_id=NODE_ID, timestamp=WALL, nonce=None,
                 deposit=DEPOSIT, sign_with=None, cid=None):
    request = SessionRequest(cid or channel_id(pool), node_id, wg_key, int(timestamp), nonce or os.urandom(32))
    signature = sign_request(request, (sign_with or signer).key, CHAIN_ID, domain or pool)
    return request, signature, {"signer": signer.address, "pool": pool, "deposit": deposit}


def pool_view(signer, *, status=ChannelStatus.OPEN, node_id=NODE_ID, settled=0, deposit=DEPOSIT, cid=None):
    """The pool's channel as VoucherChannels.channel gives it (client = the signer)."""
    return ChannelState(cid or channel_id(), node_id, signer.address, deposit, settled, 0, 0, status)


def set_up(node, signer, wg_key=None, now=0.0, **kwargs):
    wg_key = wg_key or os.urandom(32)
    assert node.admit_unknown(wg_key, now)
    request, signature, names = make_request(signer, wg_key, **kwargs)
    return node.setup(wg_key, request, signature, names, pool_view(signer), now, WALL + now)


def test_voucher_channel_id__matches_the_pool_formula():
    from eth_abi import encode
    from eth_utils import keccak

    assert channel_id() == keccak(encode(["uint256", "address", "uint256"], [CHAIN_ID, POOL, NULLIFIER_HASH]))
    assert channel_id(OTHER_POOL) != channel_id() != channel_id(nullifier_hash=NULLIFIER_HASH + 1)


def test_setup__voucher_channel__session_open_ledger_in_the_pools_domain(node, signer, made):
    session, terms, actions = set_up(node, signer)
    assert session.channel_id == channel_id()
    ledger_terms, voucher = made[-1]
    assert ledger_terms.verifying_contract == POOL and ledger_terms.signer == signer.address
    assert ledger_terms.deposit == DEPOSIT
    assert voucher == VoucherChannel(POOL, CHAIN_ID, channel_id(), NODE_ID, signer.address, DEPOSIT)
    assert terms.price_per_gib == PRICE and terms.paid_bytes == 0

    # Receipts: the pool's domain pays; a receipt signed for payment_channels' domain does not.
    node.update_billed(session.wg_key, 5000, 1)
    pool_receipts = ReceiptSigner(session.ledger.terms, signer.key)
    receipt, signature = pool_receipts.sign(5000)
    assert node.on_receipt(session.wg_key, receipt, signature, 1)[0].accepted
    wrong_domain = ReceiptSigner(ledger_terms.__class__(**{**ledger_terms.__dict__, "verifying_contract": CHANNELS}),
                                 signer.key)
    receipt, signature = wrong_domain.sign(6000)
    decision, _ = node.on_receipt(session.wg_key, receipt, signature, 2)
    assert not decision.accepted


def test_receipt__signed_by_another_key__refused_and_cut_off_at_credit(node, signer):
    session, _, _ = set_up(node, signer, wg_key=b"k" * 32)
    receipt = eip712.Receipt(session.channel_id, 4096, price_of(4096, PRICE))
    signature = eip712.sign(receipt, Account.create().key, CHAIN_ID, POOL)  # the right domain, another key
    node.update_billed(b"k" * 32, 4096, 1)
    decision, _ = node.on_receipt(b"k" * 32, receipt, signature, 1)
    assert not decision.accepted and decision.reason.value == "wrong_signer"
    node.update_billed(b"k" * 32, (1 << 20) + 1, 2)
    assert node.tick(2) == [Suspend(session.v4, session.v6, (1 << 20) + 1)]


@pytest.mark.parametrize("case, reason", [
    ("payment_domain", "bad_signature"),     # signed for payment_channels, not the pool
    ("forged", "bad_signature"),
    ("foreign_pool", "foreign_pool"),
    ("stale", "stale_request"),
    ("other_node", "wrong_node"),
    ("closing", "channel_not_open"),
    ("none", "unknown_channel"),
    ("foreign", "foreign_channel"),
    ("other_deposit", "wrong_channel"),
    ("spent", "no_room"),
    ("no_deposit", "bad_request"),
])
def test_setup__bad_voucher_request__refused_and_nothing_changes(node, signer, case, reason):
    wg_key = os.urandom(32)
    node.admit_unknown(wg_key, 0)
    kwargs, view = {}, pool_view(signer)
    if case == "payment_domain":
        kwargs["domain"] = CHANNELS
    elif case == "forged":
        kwargs["sign_with"] = Account.create()
    elif case == "foreign_pool":
        kwargs["pool"] = OTHER_POOL
    elif case == "stale":
        kwargs["timestamp"] = WALL - REQUEST_WINDOW_S - 1
    elif case == "other_node":
        kwargs["node_id"] = OTHER_NODE
    elif case == "other_deposit":
        kwargs["deposit"] = DEPOSIT + 1
    elif case == "closing":
        view = pool_view(signer, status=ChannelStatus.CLOSING)
    elif case == "none":
        view = pool_view(signer, status=ChannelStatus.NONE)
    elif case == "foreign":
        view = pool_view(signer, node_id=OTHER_NODE)
    elif case == "spent":
        view = pool_view(signer, settled=DEPOSIT)
    request, signature, names = make_request(signer, wg_key, **kwargs)
    if case == "no_deposit":
        del names["deposit"]
    with pytest.raises(SetupRefused) as refused:
        node.setup(wg_key, request, signature, names, view, 0, WALL)
    assert refused.value.reason == reason
    assert not node.sessions and wg_key in node.pending
    assert node.refusals == {reason: 1}


def test_setup__replayed_voucher_request__refused_even_while_its_session_lives(node, signer):
    wg_key = os.urandom(32)
    node.admit_unknown(wg_key, 0)
    request, signature, names = make_request(signer, wg_key)
    node.setup(wg_key, request, signature, names, pool_view(signer), 0, WALL)
    with pytest.raises(SetupRefused, match="replayed_request"):
        node.setup(wg_key, request, signature, names, pool_view(signer), 1, WALL + 1)
    # From another tunnel the captured request binds the wrong key anyway; a fresh nonce there is a
    # second session on a channel in use.
    other = os.urandom(32)
    node.admit_unknown(other, 2)
    with pytest.raises(SetupRefused, match="wrong_tunnel"):
        node.setup(other, *make_request(signer, wg_key), pool_view(signer), 2, WALL + 2)
    with pytest.raises(SetupRefused, match="channel_in_use"):
        node.setup(other, *make_request(signer, other), pool_view(signer), 3, WALL + 3)


def test_setup__voucher_channel_reused_by_a_new_tunnel__counts_from_paid(node, signer):
    session, _, _ = set_up(node, signer, wg_key=b"a" * 32)
    node.update_billed(b"a" * 32, 70_000, 1)
    receipt, signature = ReceiptSigner(session.ledger.terms, signer.key).sign(70_000)
    assert node.on_receipt(b"a" * 32, receipt, signature, 1)[0].accepted
    node.end(b"a" * 32)
    _, terms, _ = set_up(node, signer, wg_key=b"b" * 32, now=5)
    assert (terms.paid_bytes, terms.paid_amount) == (70_000, receipt.cumulative_amount)


def test_check_request__no_chain_needed__refuses_before_any_gas(node, signer):
    wg_key = os.urandom(32)
    node.admit_unknown(wg_key, 0)
    request, signature, names = make_request(signer, wg_key)
    assert node.check_request(wg_key, request, signature, names, WALL) == POOL
    assert wg_key in node.pending and not node.sessions  # nothing changed
    with pytest.raises(SetupRefused, match="bad_signature"):
        node.check_request(wg_key, request, signature, {**names, "signer": Account.create().address}, WALL)
    with pytest.raises(SetupRefused, match="not_in_quarantine"):
        node.check_request(os.urandom(32), request, signature, names, WALL)


def test_check_redemption__ours__passes(node, signer):
    request, _, names = make_request(signer, os.urandom(32))
    node.check_redemption(request, names, FakeRedemption(POOL, "0x" + NODE_ID.hex(), signer.address, NULLIFIER_HASH))
    assert node.refusals == {}


@pytest.mark.parametrize("change, reason", [
    ({"node_id": "0x" + OTHER_NODE.hex()}, "foreign_redemption"),
    ({"pool": OTHER_POOL}, "wrong_redemption"),
    ({"signer": Account.from_key(b"\x03" * 32).address}, "wrong_redemption"),
    ({"nullifier_hash": NULLIFIER_HASH + 1}, "wrong_redemption"),   # opens another channel
    ({"relayer_fee": 10**15 - 1}, "fee_too_low"),
])
def test_check_redemption__not_worth_submitting__refused(node, signer, change, reason):
    request, _, names = make_request(signer, os.urandom(32))
    redemption = FakeRedemption(**{"pool": POOL, "node_id": "0x" + NODE_ID.hex(), "signer": signer.address,
                                   "nullifier_hash": NULLIFIER_HASH, **change})
    with pytest.raises(SetupRefused) as refused:
        node.check_redemption(request, names, redemption)
    assert refused.value.reason == reason
    assert node.refusals == {reason: 1}


def test_check_redemption__payment_channel_request__refused(node, signer):
    request, _, names = make_request(signer, os.urandom(32))
    with pytest.raises(SetupRefused, match="wrong_redemption"):
        node.check_redemption(request, {"client": signer.address, "signer": signer.address},
                              FakeRedemption(POOL, "0x" + NODE_ID.hex(), signer.address, NULLIFIER_HASH))
