"""Voucher channels: the channels voucher_pool.vy holds for its redemptions, on the real chain.

Every call names the channel's terms (node_id, signer, deposit); the pool checks them against the
one stored hash. Receipts and cooperative closes are payment_channels' EIP-712 types signed for the
POOL's domain. Payouts must follow payment_channels' rules exactly (fee_bps, treasury and challenge
period read from it): one test runs the same receipts through both contracts and compares.
"""

import os

import ape
import pytest
from eth_abi import encode
from eth_utils import keccak
from trapdoor_keys import DENOMINATION

from agents.chain import eip712

FEE = 10**17  # relayer fee: 0.1 token
DEPOSIT = DENOMINATION - FEE  # what a channel funded with FEE holds
OPEN, CLOSING, FINALISED = 1, 2, 3
COOPERATIVE, UNILATERAL, EXIT = 1, 2, 3  # ChannelClosed kinds
MAX_BYTES = 2**64 - 1
#: Order of the secp256k1 group (SEC 2): s and n - s are both valid, only the low one is canonical.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def fee_of(pool, amount):
    return amount * pool.fee_bps() // 10_000


def share_of(pool, amount):
    return amount - fee_of(pool, amount)


@pytest.fixture
def ch(vouchers, node_id, stranger):
    """A voucher channel to `node_id` (operator's node), redeemed by `stranger` with a FEE."""
    return vouchers.open(node_id, fee=FEE, sender=stranger)


@pytest.fixture
def start_close(as_signer):
    """Factory: the signer starts a unilateral close; returns close_at."""

    def _start(channel):
        tx = channel.pool.start_close(*channel.terms, sender=as_signer(channel))
        [log] = channel.pool.ChannelCloseStarted.from_receipt(tx)
        return log.close_at

    return _start


# DOMAIN AND DIGESTS


def test_digests__equal_agents_eip712_for_the_pool_domain(pool, chain, ch):
    for message, view in ((eip712.Receipt, pool.receipt_digest), (eip712.CooperativeClose, pool.close_digest)):
        expected = eip712.digest(message(ch.channel_id, 12, 345), chain.chain_id, pool.address)
        assert bytes(view(ch.channel_id, 12, 345)) == expected
    domain = pool.eip712Domain()
    assert (domain[1], domain[2], domain[3], domain[4]) == ("Warren", "1", chain.chain_id, pool.address)
    domain_type = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    separator = keccak(encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [keccak(domain_type), keccak(b"Warren"), keccak(b"1"), chain.chain_id, pool.address],
    ))
    assert bytes(pool.DOMAIN_SEPARATOR()) == separator


# SETTLE


def test_settle__pays_node_share_and_logs(pool, token, operator, treasury, ch):
    pool_before, node_before = token.balanceOf(pool), token.balanceOf(operator)
    treasury_before = token.balanceOf(treasury)
    amount = 3 * 10**18 + 7
    tx = pool.settle(*ch.terms, 1000, amount, ch.receipt(1000, amount), sender=operator)
    assert token.balanceOf(operator) == node_before + share_of(pool, amount)
    assert token.balanceOf(pool) == pool_before - share_of(pool, amount)
    assert token.balanceOf(treasury) == treasury_before  # the fee waits for the close
    [log] = pool.ReceiptSettled.from_receipt(tx)
    assert bytes(log.channel_id) == ch.channel_id
    assert (log.cumulative_bytes, log.cumulative_amount, log.node_amount) == (1000, amount, share_of(pool, amount))
    assert tuple(pool.channel(ch.channel_id))[1:] == (amount, 1000, 0, OPEN)

    tx = pool.settle(*ch.terms, 2000, DEPOSIT, ch.receipt(2000, DEPOSIT), sender=operator)
    [log] = pool.ReceiptSettled.from_receipt(tx)
    assert log.node_amount == share_of(pool, DEPOSIT) - share_of(pool, amount)
    assert token.balanceOf(operator) == node_before + share_of(pool, DEPOSIT)


def test_settle__fee_math_equals_payment_channels(
    pool, channels, token, operator, client, treasury, node_id, ch, open_channel, sign_receipt, sign_close
):
    # The same receipts (awkward amounts for the rounding) through payment_channels and the pool.
    steps = [(10, 1), (20, 199), (30, 10**18 + 37), (40, 5 * 10**18 + 9_999), (50, DEPOSIT - 3)]
    pc_id = open_channel(node_id, deposit=DEPOSIT)
    for nbytes, amount in steps:
        pc_tx = channels.settle(pc_id, nbytes, amount, sign_receipt(pc_id, nbytes, amount), sender=operator)
        pool_tx = pool.settle(*ch.terms, nbytes, amount, ch.receipt(nbytes, amount), sender=operator)
        [pc_log] = channels.ReceiptSettled.from_receipt(pc_tx)
        [pool_log] = pool.ReceiptSettled.from_receipt(pool_tx)
        assert pool_log.node_amount == pc_log.node_amount
    final = (60, DEPOSIT - 1)
    pc_close = channels.cooperative_close(
        pc_id, *final, sign_receipt(pc_id, *final), sign_close(pc_id, *final), sender=client
    )
    pool_close = pool.cooperative_close(
        *ch.terms, *final, ch.receipt(*final), ch.close(*final, operator.private_key), sender=client
    )
    [pc_log] = channels.ChannelClosed.from_receipt(pc_close)
    [pool_log] = pool.ChannelClosed.from_receipt(pool_close)
    assert (pool_log.kind, pool_log.settled, pool_log.refund, pool_log.fee) == (
        pc_log.kind, pc_log.settled, pc_log.refund, pc_log.fee
    )
    assert pool.fee_bps() == channels.fee_bps() and pool.treasury() == treasury.address


def test_settle__not_the_node_operator__reverts(pool, client, stranger, as_signer, ch):
    for sender in (client, stranger, as_signer(ch)):
        with ape.reverts("voucher_pool: not the node operator"):
            pool.settle(*ch.terms, 1, 1, ch.receipt(1, 1), sender=sender)


def test_settle__wrong_terms__reverts(pool, vouchers, register_node, node_id, make_signer, operator, ch):
    channel_id, node, signer, deposit = ch.terms
    other = vouchers.open(node_id, fee=FEE)  # a real channel with the same node and deposit, another signer
    for wrong in (
        (channel_id, register_node(), signer, deposit),  # operator's other node: the operator check would pass
        (channel_id, node, make_signer()[1], deposit),
        (channel_id, node, signer, DENOMINATION),  # as if no relayer fee had been taken
        (other.channel_id, node, signer, deposit),
    ):
        with ape.reverts("voucher_pool: wrong terms"):
            pool.settle(*wrong, 1, 1, ch.receipt(1, 1), sender=operator)


def test_settle__unknown_channel__reverts(pool, operator, ch):
    with ape.reverts("voucher_pool: unknown channel"):
        pool.settle(os.urandom(32), *ch.terms[1:], 1, 1, ch.receipt(1, 1), sender=operator)


def test_settle__receipt_signed_by_someone_else__reverts(pool, operator, make_signer, ch):
    other_key, _ = make_signer()
    with ape.reverts("voucher_pool: wrong signer"):
        pool.settle(*ch.terms, 1, 1, ch.receipt(1, 1, key=other_key), sender=operator)
    with ape.reverts("voucher_pool: wrong signer"):  # the node operator signing for itself
        pool.settle(*ch.terms, 1, 1, ch.receipt(1, 1, key=operator.private_key), sender=operator)


def test_settle__malformed_signatures__shared_recovery_reasons(pool, operator, ch):
    signature = ch.receipt(1, 1)
    s = int.from_bytes(signature[32:64], "big")
    flipped_v = bytes([55 - signature[64]])  # 27 <-> 28
    for bad, reason in (
        (signature[:64], "signature_recovery: invalid signature length"),
        (signature[:64] + bytes([29]), "signature_recovery: invalid signature v"),
        (signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + flipped_v, "signature_recovery: malleable signature"),
    ):
        with ape.reverts(reason):
            pool.settle(*ch.terms, 1, 1, bad, sender=operator)


def test_settle__receipt_for_payment_channels_domain__reverts(pool, channels, operator, ch):
    with ape.reverts("voucher_pool: wrong signer"):
        pool.settle(*ch.terms, 1, 1, ch.receipt(1, 1, contract=channels.address), sender=operator)


def test_settle__receipt_for_another_pool__reverts(pool, deploy_pool, operator, ch):
    other = deploy_pool()
    with ape.reverts("voucher_pool: wrong signer"):
        pool.settle(*ch.terms, 1, 1, ch.receipt(1, 1, contract=other.address), sender=operator)


def test_settle__receipt_for_another_chain__reverts(pool, chain, operator, ch):
    with ape.reverts("voucher_pool: wrong signer"):
        pool.settle(*ch.terms, 1, 1, ch.receipt(1, 1, chain_id=chain.chain_id + 1), sender=operator)


def test_settle__receipt_for_another_channel__reverts(pool, vouchers, node_id, operator, ch):
    # The same signer key on a second voucher channel: a receipt for one does not settle the other.
    twin = vouchers.open(node_id, fee=FEE, key=ch.key)
    with ape.reverts("voucher_pool: wrong signer"):
        pool.settle(*twin.terms, 1, 1, ch.receipt(1, 1), sender=operator)


def test_settle__pool_receipt_refused_by_payment_channels(channels, operator, node_id, open_channel, signer_key, ch):
    # Cross-contract replay the other way: a receipt signed for the pool, for a payment_channels channel.
    pc_id = open_channel(node_id)
    forged = eip712.sign(eip712.Receipt(pc_id, 1, 1), signer_key, ch.chain_id, ch.pool.address)
    with ape.reverts("payment_channels: wrong signer"):
        channels.settle(pc_id, 1, 1, forged, sender=operator)


def test_settle__bad_figures__revert(pool, operator, ch):
    pool.settle(*ch.terms, 100, 1000, ch.receipt(100, 1000), sender=operator)
    for nbytes, amount, reason in (
        (100, 1000, "voucher_pool: stale amount"),  # same receipt again
        (200, 999, "voucher_pool: stale amount"),
        (100, 2000, "voucher_pool: stale bytes"),
        (99, 2000, "voucher_pool: stale bytes"),
        (200, DEPOSIT + 1, "voucher_pool: amount exceeds deposit"),
        (MAX_BYTES + 1, 2000, "voucher_pool: bytes too large"),
    ):
        with ape.reverts(reason):
            pool.settle(*ch.terms, nbytes, amount, ch.receipt(nbytes, amount), sender=operator)


def test_settle__whole_deposit_and_max_bytes__accepted(pool, operator, ch):
    pool.settle(*ch.terms, MAX_BYTES, DEPOSIT, ch.receipt(MAX_BYTES, DEPOSIT), sender=operator)
    assert tuple(pool.channel(ch.channel_id))[1:3] == (DEPOSIT, MAX_BYTES)


def test_settle__node_revoked__reverts(pool, registry, revoker, treasury, operator, node_id, ch):
    registry.revoke(node_id, treasury, sender=revoker)
    with ape.reverts("voucher_pool: node revoked"):
        pool.settle(*ch.terms, 1, 1, ch.receipt(1, 1), sender=operator)


def test_settle__while_node_unbonding__still_pays(pool, registry, operator, node_id, ch):
    registry.request_unbonding(node_id, sender=operator)
    pool.settle(*ch.terms, 1, 100, ch.receipt(1, 100), sender=operator)
    assert pool.channel(ch.channel_id)[1] == 100


def test_settle__node_withdrew__nobody_is_its_operator(pool, registry, chain, operator, node_id, ch):
    tx = registry.request_unbonding(node_id, sender=operator)
    chain.pending_timestamp = tx.decode_logs(registry.NodeUnbondingRequested)[0].unbond_at
    registry.withdraw_stake(node_id, sender=operator)
    with ape.reverts("voucher_pool: not the node operator"):
        pool.settle(*ch.terms, 1, 1, ch.receipt(1, 1), sender=operator)


def _withdraw_and_register_again(registry, token, chain, operator, newcomer, node_id):
    """The operator withdraws; ``newcomer`` registers the same (public) WireGuard key."""
    wg_key = registry.node_wg_key(node_id)
    tx = registry.request_unbonding(node_id, sender=operator)
    chain.pending_timestamp = tx.decode_logs(registry.NodeUnbondingRequested)[0].unbond_at
    registry.withdraw_stake(node_id, sender=operator)
    token.approve(registry, registry.min_node_stake(), sender=newcomer)
    registry.register_node(wg_key, "DE", 10**15, registry.min_node_stake(), sender=newcomer)


def test_settle__never_settled__key_registered_again__follows_the_new_registration(
    pool, registry, token, chain, operator, stranger, ch
):
    # Until its first settlement a channel is bound to the node id only (docs/CONTRACTS.md): once
    # the operator has withdrawn, whoever registers the same public key settles it, and
    # exit_revoked is refused again.
    _withdraw_and_register_again(registry, token, chain, operator, stranger, ch.node_id)
    with ape.reverts("voucher_pool: node not revoked"):
        pool.exit_revoked(*ch.terms, sender=stranger)
    with ape.reverts("voucher_pool: not the node operator"):
        pool.settle(*ch.terms, 1, 100, ch.receipt(1, 100), sender=operator)
    before = token.balanceOf(stranger)
    pool.settle(*ch.terms, 1, 100, ch.receipt(1, 100), sender=stranger)
    assert token.balanceOf(stranger) == before + share_of(pool, 100)


def test_settle__first_settlement_pins_the_registration__newcomer_gets_nothing(
    pool, registry, token, chain, operator, stranger, ch
):
    # The first settlement pins the registration (as payment_channels binds its index): after the
    # operator withdraws, a newcomer with the same key can neither settle nor block the exit.
    pool.settle(*ch.terms, 1, 100, ch.receipt(1, 100), sender=operator)
    _withdraw_and_register_again(registry, token, chain, operator, stranger, ch.node_id)
    with ape.reverts("voucher_pool: not the node operator"):
        pool.settle(*ch.terms, 2, 200, ch.receipt(2, 200), sender=stranger)
    refund_before = token.balanceOf(ch.signer)
    pool.exit_revoked(*ch.terms, sender=stranger)
    assert token.balanceOf(ch.signer) == refund_before + ch.deposit - 100


def test_start_close__keeps_the_pinned_registration(pool, registry, token, chain, operator, stranger, ch, start_close):
    pool.settle(*ch.terms, 1, 100, ch.receipt(1, 100), sender=operator)
    start_close(ch)
    _withdraw_and_register_again(registry, token, chain, operator, stranger, ch.node_id)
    # Unpinned, the newcomer's active registration would refuse this ("node not revoked").
    pool.exit_revoked(*ch.terms, sender=stranger)
    assert pool.channel(ch.channel_id)[4] == 3


def test_settle__challenge_period_edges(pool, chain, operator, ch, start_close):
    close_at = start_close(ch)
    chain.pending_timestamp = close_at - 1
    pool.settle(*ch.terms, 1, 100, ch.receipt(1, 100), sender=operator)  # last second: allowed
    chain.pending_timestamp = close_at
    with ape.reverts("voucher_pool: challenge period over"):
        pool.settle(*ch.terms, 2, 200, ch.receipt(2, 200), sender=operator)


def test_settle__finalised__reverts(pool, chain, operator, stranger, ch, start_close):
    chain.pending_timestamp = start_close(ch)
    pool.finalize_close(*ch.terms, sender=stranger)
    with ape.reverts("voucher_pool: channel finalised"):
        pool.settle(*ch.terms, 1, 1, ch.receipt(1, 1), sender=operator)


# COOPERATIVE CLOSE


def test_cooperative_close__pays_everyone_at_once(pool, token, operator, treasury, stranger, ch):
    pool.settle(*ch.terms, 10, 10**18, ch.receipt(10, 10**18), sender=operator)
    node_before, treasury_before, pool_before = (token.balanceOf(a) for a in (operator, treasury, pool))
    final = (20, 4 * 10**18 + 1)
    tx = pool.cooperative_close(
        *ch.terms, *final, ch.receipt(*final), ch.close(*final, operator.private_key), sender=stranger
    )
    amount = final[1]
    assert token.balanceOf(operator) == node_before + share_of(pool, amount) - share_of(pool, 10**18)
    assert token.balanceOf(treasury) == treasury_before + fee_of(pool, amount)
    assert token.balanceOf(ch.signer) == DEPOSIT - amount
    # The pool paid out exactly what the channel still held: deposit less what the node already got.
    assert token.balanceOf(pool) == pool_before - (DEPOSIT - share_of(pool, 10**18))
    [log] = pool.ChannelClosed.from_receipt(tx)
    assert bytes(log.channel_id) == ch.channel_id
    assert (log.kind, log.settled, log.refund, log.fee) == (COOPERATIVE, amount, DEPOSIT - amount, fee_of(pool, amount))
    assert tuple(pool.channel(ch.channel_id))[1:] == (amount, 20, 0, FINALISED)


def test_cooperative_close__at_settled_figures__accepted(pool, token, operator, ch):
    pool.settle(*ch.terms, 10, 500, ch.receipt(10, 500), sender=operator)
    before = token.balanceOf(operator)
    pool.cooperative_close(*ch.terms, 10, 500, ch.receipt(10, 500), ch.close(10, 500, operator.private_key),
                           sender=operator)
    assert token.balanceOf(operator) == before  # nothing new to pay the node
    assert token.balanceOf(ch.signer) == DEPOSIT - 500


def test_cooperative_close__wrong_node_signature__reverts(pool, channels, make_signer, operator, client, ch):
    other_key, _ = make_signer()
    for node_signature in (
        ch.close(5, 5, other_key),  # not the operator
        ch.close(5, 5, ch.key),  # the payment signer itself
        ch.close(5, 5, operator.private_key, contract=channels.address),  # payment_channels' domain
        ch.close(5, 6, operator.private_key),  # other figures
        ch.receipt(5, 5, key=operator.private_key),  # a Receipt, not a CooperativeClose
    ):
        with ape.reverts("voucher_pool: wrong node signature"):
            pool.cooperative_close(*ch.terms, 5, 5, ch.receipt(5, 5), node_signature, sender=client)


def test_cooperative_close__wrong_receipt_signature__reverts(pool, operator, client, make_signer, ch):
    other_key, _ = make_signer()
    node_signature = ch.close(5, 5, operator.private_key)
    for signature in (ch.receipt(5, 5, key=other_key), ch.close(5, 5, ch.key)):
        with ape.reverts("voucher_pool: wrong signer"):
            pool.cooperative_close(*ch.terms, 5, 5, signature, node_signature, sender=client)


def test_cooperative_close__bad_figures__revert(pool, operator, client, ch):
    pool.settle(*ch.terms, 10, 500, ch.receipt(10, 500), sender=operator)
    for nbytes, amount, reason in (
        (10, 499, "voucher_pool: stale amount"),
        (9, 500, "voucher_pool: stale bytes"),
        (10, DEPOSIT + 1, "voucher_pool: amount exceeds deposit"),
        (MAX_BYTES + 1, 500, "voucher_pool: bytes too large"),
    ):
        with ape.reverts(reason):
            pool.cooperative_close(*ch.terms, nbytes, amount, ch.receipt(nbytes, amount),
                                   ch.close(nbytes, amount, operator.private_key), sender=client)


def test_cooperative_close__while_closing_before_close_at__accepted(pool, chain, operator, client, ch, start_close):
    close_at = start_close(ch)
    chain.pending_timestamp = close_at - 1
    tx = pool.cooperative_close(*ch.terms, 5, 5, ch.receipt(5, 5), ch.close(5, 5, operator.private_key), sender=client)
    assert pool.ChannelClosed.from_receipt(tx)[0].kind == COOPERATIVE


def test_cooperative_close__at_close_at__reverts(pool, chain, operator, client, ch, start_close):
    chain.pending_timestamp = start_close(ch)
    with ape.reverts("voucher_pool: challenge period over"):
        pool.cooperative_close(*ch.terms, 5, 5, ch.receipt(5, 5), ch.close(5, 5, operator.private_key), sender=client)


def test_cooperative_close__twice__reverts(pool, operator, client, ch):
    args = (5, 5, ch.receipt(5, 5), ch.close(5, 5, operator.private_key))
    pool.cooperative_close(*ch.terms, *args, sender=client)
    with ape.reverts("voucher_pool: channel finalised"):
        pool.cooperative_close(*ch.terms, *args, sender=client)


def test_cooperative_close__node_revoked__reverts(pool, registry, revoker, treasury, operator, client, node_id, ch):
    registry.revoke(node_id, treasury, sender=revoker)
    with ape.reverts("voucher_pool: node revoked"):
        pool.cooperative_close(*ch.terms, 5, 5, ch.receipt(5, 5), ch.close(5, 5, operator.private_key), sender=client)


def test_cooperative_close__wrong_terms__reverts(pool, operator, client, ch):
    channel_id, node, signer, _ = ch.terms
    with ape.reverts("voucher_pool: wrong terms"):
        pool.cooperative_close(channel_id, node, signer, DEPOSIT + 1, 5, 5, ch.receipt(5, 5),
                               ch.close(5, 5, operator.private_key), sender=client)


# START CLOSE


def test_start_close__signer_only_logs_close_at(pool, chain, operator, stranger, as_signer, ch):
    for other in (operator, stranger):
        with ape.reverts("voucher_pool: not the signer"):
            pool.start_close(*ch.terms, sender=other)
    tx = pool.start_close(*ch.terms, sender=as_signer(ch))
    [log] = pool.ChannelCloseStarted.from_receipt(tx)
    assert bytes(log.channel_id) == ch.channel_id
    assert log.close_at == tx.timestamp + pool.challenge_period() == tx.timestamp + 24 * 3600
    assert tuple(pool.channel(ch.channel_id))[3:] == (log.close_at, CLOSING)


def test_start_close__keeps_settled_figures(pool, operator, ch, start_close):
    pool.settle(*ch.terms, 7, 700, ch.receipt(7, 700), sender=operator)
    close_at = start_close(ch)
    assert tuple(pool.channel(ch.channel_id))[1:] == (700, 7, close_at, CLOSING)


def test_start_close__twice__reverts(pool, as_signer, ch, start_close):
    start_close(ch)
    with ape.reverts("voucher_pool: channel closing"):
        pool.start_close(*ch.terms, sender=as_signer(ch))


def test_start_close__finalised__reverts(pool, operator, as_signer, ch):
    pool.cooperative_close(*ch.terms, 5, 5, ch.receipt(5, 5), ch.close(5, 5, operator.private_key), sender=operator)
    with ape.reverts("voucher_pool: channel finalised"):
        pool.start_close(*ch.terms, sender=as_signer(ch))


def _close_request(ch, key=None, contract=None) -> bytes:
    """The signer's (or ``key``'s) CloseRequest signature for this pool (or ``contract``)."""
    return eip712.sign(eip712.CloseRequest(ch.channel_id), key or ch.key, ch.chain_id, contract or ch.pool.address)


def test_start_close_for__anyone_carries_the_signers_request(pool, token, chain, stranger, ch):
    """The voucher signer holds no gas money: a relayer starts the close with its signed request."""
    assert bytes(pool.close_request_digest(ch.channel_id)) == eip712.digest(
        eip712.CloseRequest(ch.channel_id), ch.chain_id, pool.address)
    tx = pool.start_close_for(*ch.terms, _close_request(ch), sender=stranger)
    [log] = pool.ChannelCloseStarted.from_receipt(tx)
    assert log.close_at == tx.timestamp + pool.challenge_period()
    assert tuple(pool.channel(ch.channel_id))[3:] == (log.close_at, CLOSING)
    chain.pending_timestamp = log.close_at
    before = token.balanceOf(ch.signer)
    [closed] = pool.ChannelClosed.from_receipt(pool.finalize_close(*ch.terms, sender=stranger))
    assert (closed.kind, closed.refund) == (2, ch.deposit)
    assert token.balanceOf(ch.signer) == before + ch.deposit


def test_start_close_for__forged_or_foreign_request__refused(pool, channels, stranger, operator, ch):
    for signature in (
        _close_request(ch, key=operator.private_key),  # someone else's key
        _close_request(ch, contract=channels.address),  # signed for payment_channels' domain
        eip712.sign(eip712.Receipt(ch.channel_id, 0, 0), ch.key, ch.chain_id, pool.address),  # another type
    ):
        with ape.reverts("voucher_pool: wrong signer"):
            pool.start_close_for(*ch.terms, signature, sender=stranger)
    with ape.reverts("signature_recovery: invalid signature length"):
        pool.start_close_for(*ch.terms, _close_request(ch)[:64], sender=stranger)


def test_start_close_for__request_of_another_channel__refused(pool, stranger, vouchers, node_id, ch):
    """Same signer key, second voucher: a request names its channel, so it closes only that one."""
    other = vouchers.open(node_id, sender=stranger, key=ch.key)
    with ape.reverts("voucher_pool: wrong signer"):
        pool.start_close_for(*ch.terms, _close_request(other), sender=stranger)
    pool.start_close_for(*other.terms, _close_request(other), sender=stranger)
    assert pool.channel(ch.channel_id)[4] != CLOSING


def test_start_close_for__replayed__refused(pool, operator, stranger, ch):
    request = _close_request(ch)
    pool.start_close_for(*ch.terms, request, sender=stranger)
    with ape.reverts("voucher_pool: channel closing"):
        pool.start_close_for(*ch.terms, request, sender=stranger)
    pool.cooperative_close(*ch.terms, 5, 5, ch.receipt(5, 5), ch.close(5, 5, operator.private_key), sender=operator)
    with ape.reverts("voucher_pool: channel finalised"):
        pool.start_close_for(*ch.terms, request, sender=stranger)


def test_close__unknown_channel_or_wrong_terms__reverts(pool, as_signer, ch):
    sender = as_signer(ch)
    for call in (pool.start_close, pool.finalize_close, pool.exit_revoked):
        with ape.reverts("voucher_pool: unknown channel"):
            call(os.urandom(32), *ch.terms[1:], sender=sender)
        with ape.reverts("voucher_pool: wrong terms"):
            call(ch.channel_id, ch.node_id, ch.signer, DENOMINATION, sender=sender)


# FINALIZE CLOSE


def test_finalize_close__while_open__reverts(pool, stranger, ch):
    with ape.reverts("voucher_pool: channel not closing"):
        pool.finalize_close(*ch.terms, sender=stranger)


def test_finalize_close__before_close_at__reverts(pool, chain, stranger, ch, start_close):
    chain.pending_timestamp = start_close(ch) - 1
    with ape.reverts("voucher_pool: challenge period not over"):
        pool.finalize_close(*ch.terms, sender=stranger)


def test_finalize_close__exactly_at_close_at__refunds_signer_and_pays_fee(
    pool, token, chain, operator, treasury, stranger, ch, start_close
):
    pool.settle(*ch.terms, 5, 2 * 10**18 + 3, ch.receipt(5, 2 * 10**18 + 3), sender=operator)
    close_at = start_close(ch)
    treasury_before, pool_before = token.balanceOf(treasury), token.balanceOf(pool)
    chain.pending_timestamp = close_at
    tx = pool.finalize_close(*ch.terms, sender=stranger)  # anyone may finish it
    assert tx.timestamp == close_at
    settled = 2 * 10**18 + 3
    assert token.balanceOf(ch.signer) == DEPOSIT - settled
    assert token.balanceOf(treasury) == treasury_before + fee_of(pool, settled)
    assert token.balanceOf(pool) == pool_before - (DEPOSIT - settled) - fee_of(pool, settled)
    [log] = pool.ChannelClosed.from_receipt(tx)
    expected = (UNILATERAL, settled, DEPOSIT - settled, fee_of(pool, settled))
    assert (log.kind, log.settled, log.refund, log.fee) == expected
    assert pool.channel(ch.channel_id)[4] == FINALISED
    with ape.reverts("voucher_pool: channel finalised"):
        pool.finalize_close(*ch.terms, sender=stranger)


# EXIT FROM A REVOKED OR UNREGISTERED NODE


def test_exit_revoked__node_active__reverts(pool, stranger, ch):
    with ape.reverts("voucher_pool: node not revoked"):
        pool.exit_revoked(*ch.terms, sender=stranger)


def test_exit_revoked__node_unbonding__reverts(pool, registry, operator, stranger, node_id, ch):
    registry.request_unbonding(node_id, sender=operator)  # still registered, still settles
    with ape.reverts("voucher_pool: node not revoked"):
        pool.exit_revoked(*ch.terms, sender=stranger)


def test_exit_revoked__revoked_node__refunds_rest_and_pays_fee(
    pool, token, registry, revoker, operator, treasury, stranger, node_id, ch
):
    pool.settle(*ch.terms, 5, 10**18, ch.receipt(5, 10**18), sender=operator)
    registry.revoke(node_id, treasury, sender=revoker)
    treasury_before = token.balanceOf(treasury)
    tx = pool.exit_revoked(*ch.terms, sender=stranger)
    assert token.balanceOf(ch.signer) == DEPOSIT - 10**18
    assert token.balanceOf(treasury) == treasury_before + fee_of(pool, 10**18)
    [log] = pool.ChannelClosed.from_receipt(tx)
    assert (log.kind, log.settled, log.refund, log.fee) == (EXIT, 10**18, DEPOSIT - 10**18, fee_of(pool, 10**18))
    assert pool.channel(ch.channel_id)[4] == FINALISED
    with ape.reverts("voucher_pool: channel finalised"):
        pool.exit_revoked(*ch.terms, sender=stranger)


def test_exit_revoked__while_closing__refunds_at_once(
    pool, token, registry, revoker, treasury, node_id, ch, start_close
):
    start_close(ch)
    registry.revoke(node_id, treasury, sender=revoker)
    pool.exit_revoked(*ch.terms, sender=treasury)
    assert token.balanceOf(ch.signer) == DEPOSIT


def test_exit_revoked__node_withdrew__refunds(pool, token, registry, chain, operator, stranger, node_id, ch):
    tx = registry.request_unbonding(node_id, sender=operator)
    chain.pending_timestamp = tx.decode_logs(registry.NodeUnbondingRequested)[0].unbond_at
    registry.withdraw_stake(node_id, sender=operator)
    tx = pool.exit_revoked(*ch.terms, sender=stranger)
    assert token.balanceOf(ch.signer) == DEPOSIT
    assert pool.ChannelClosed.from_receipt(tx)[0].kind == EXIT
