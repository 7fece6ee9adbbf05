"""payment_channels: opening, settlement, closing and every bad input of issue 2, on a real anvil chain."""

import os

import ape
import pytest
from eth_account import Account

from agents.chain import eip712
from channel_model import channel_id as model_channel_id

# secp256k1 group order (SEC 2, section 2.4.1): s and n - s both verify, EIP-2 keeps only s <= n / 2.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
DEPOSIT = 50 * 10**18

# ChannelClosed kinds (payment_channels.vy).
COOPERATIVE, UNILATERAL, EXIT = 1, 2, 3


@pytest.fixture
def channel_id(open_channel, node_id):
    """A channel from `client` to `node_id` with DEPOSIT, receipts signed by `signer`."""
    return open_channel(node_id, deposit=DEPOSIT)


def fee(channels, amount):
    return amount * channels.fee_bps() // 10_000


def share(channels, amount):
    return amount - fee(channels, amount)


def split(signature):
    return int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), signature[64]


def join(r, s, v):
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])


def start_close(channels, channel_id, client, chain):
    tx = channels.start_close(channel_id, sender=client)
    return tx.decode_logs(channels.ChannelCloseStarted)[0].close_at


# --- opening and funding ------------------------------------------------------------------------


def test_open_channel__pulls_deposit_and_logs(channels, token, client, signer, node_id):
    before = token.balanceOf(client)
    token.approve(channels, DEPOSIT, sender=client)
    tx = channels.open_channel(node_id, client, signer, DEPOSIT, sender=client)
    channel_id = bytes(tx.return_value)
    assert channel_id == bytes(channels.channel_id_of(node_id, client, signer))
    assert token.balanceOf(client) == before - DEPOSIT
    assert token.balanceOf(channels) == DEPOSIT
    assert tuple(channels.channel(channel_id)) == (node_id, client, DEPOSIT, 0, 0, 0, 1)
    [log] = tx.decode_logs(channels.ChannelOpened)
    assert (bytes(log.channel_id), bytes(log.node_id)) == (channel_id, node_id)
    assert (log.client, log.signer, log.deposit) == (client, signer, DEPOSIT)


def test_open_channel__funder_differs_from_client(channels, token, stranger, client, node_id, open_channel):
    before = token.balanceOf(client)
    channel_id = open_channel(node_id, funder=stranger)
    assert channels.channel(channel_id)[1] == client
    assert token.balanceOf(client) == before


def test_open_channel__zero_deposit__reverts(channels, client, signer, node_id):
    with ape.reverts("payment_channels: zero deposit"):
        channels.open_channel(node_id, client, signer, 0, sender=client)


def test_open_channel__zero_client_or_signer__reverts(channels, client, signer, node_id):
    with ape.reverts("payment_channels: zero address"):
        channels.open_channel(node_id, ape.utils.ZERO_ADDRESS, signer, 1, sender=client)
    with ape.reverts("payment_channels: zero address"):
        channels.open_channel(node_id, client, ape.utils.ZERO_ADDRESS, 1, sender=client)


def test_open_channel__deposit_above_uint96__reverts(channels, token, owner, client, signer, node_id):
    too_much = 2**96
    token.mint(client, too_much, sender=owner)
    token.approve(channels, too_much, sender=client)
    with ape.reverts("payment_channels: deposit too large"):
        channels.open_channel(node_id, client, signer, too_much, sender=client)


def test_open_channel__unregistered_node__reverts(channels, client, signer):
    with ape.reverts("payment_channels: node not active"):
        channels.open_channel(os.urandom(32), client, signer, 1, sender=client)


def test_open_channel__unbonding_node__reverts(channels, registry, operator, client, signer, node_id):
    registry.request_unbonding(node_id, sender=operator)
    with ape.reverts("payment_channels: node not active"):
        channels.open_channel(node_id, client, signer, 1, sender=client)


def test_open_channel__same_client_and_signer_twice__reverts(channels, client, signer, node_id, open_channel):
    open_channel(node_id)
    with ape.reverts("payment_channels: channel exists"):
        channels.open_channel(node_id, client, signer, 1, sender=client)


# --- channel ids commit to the node -------------------------------------------------------------


def test_channel_id_of__is_keccak_of_chain_contract_node_client_signer(channels, chain, client, signer, node_id):
    expected = model_channel_id(chain.chain_id, channels.address, node_id, client.address, signer)
    assert bytes(channels.channel_id_of(node_id, client, signer)) == expected


def test_channel_id_of__same_client_and_signer__differs_per_node(channels, client, signer, node_id, register_node):
    other_node = register_node()
    ids = {bytes(channels.channel_id_of(node, client, signer)) for node in (node_id, other_node, os.urandom(32))}
    assert len(ids) == 3


def test_open_channel__front_run_to_another_node__client_still_opens_its_own(
    channels, token, stranger, client, signer, node_id, register_node, open_channel
):
    # A front-runner copies (client, signer) out of the pending open and opens a 1-wei channel with
    # them to its own node first: that is another channel, so the client's open goes through.
    their_node = register_node(sender=stranger)
    theirs = open_channel(their_node, deposit=1, funder=stranger)
    before = token.balanceOf(client)
    token.approve(channels, DEPOSIT, sender=client)
    mine = bytes(channels.open_channel(node_id, client, signer, DEPOSIT, sender=client).return_value)
    assert mine != theirs
    assert mine == bytes(channels.channel_id_of(node_id, client, signer))
    assert theirs == bytes(channels.channel_id_of(their_node, client, signer))
    assert tuple(channels.channel(mine)) == (node_id, client, DEPOSIT, 0, 0, 0, 1)
    assert tuple(channels.channel(theirs)) == (their_node, client, 1, 0, 0, 0, 1)
    assert token.balanceOf(client) == before - DEPOSIT


def test_open_channel__same_client_and_signer_to_another_node__second_open_there_reverts(
    channels, client, signer, node_id, register_node, open_channel
):
    # One channel per (node, client, signer): a second open to either node still reverts.
    other_node = register_node()
    open_channel(node_id)
    open_channel(other_node)
    for node in (node_id, other_node):
        with ape.reverts("payment_channels: channel exists"):
            channels.open_channel(node, client, signer, 1, sender=client)


def test_open_channel__without_allowance__reverts_in_token(channels, client, signer, node_id):
    with ape.reverts("erc20: insufficient allowance"):
        channels.open_channel(node_id, client, signer, 1, sender=client)


def test_open_channel_with_permit__opens_in_one_transaction(channels, token, chain, client, signer, node_id, sign_permit):
    deadline = chain.pending_timestamp + 3600
    v, r, s = sign_permit(client, channels, DEPOSIT, deadline)
    tx = channels.open_channel_with_permit(node_id, client, signer, DEPOSIT, deadline, v, r, s, sender=client)
    assert bytes(tx.return_value) == bytes(channels.channel_id_of(node_id, client, signer))
    assert token.balanceOf(channels) == DEPOSIT
    assert token.allowance(client, channels) == 0


def test_open_channel_with_permit__permit_front_run__still_opens(
    channels, token, chain, client, stranger, signer, node_id, sign_permit
):
    # Someone copies the permit out of the pending transaction and submits it first: the nonce is
    # used up, so the permit call inside the open fails, but the allowance it granted is there.
    deadline = chain.pending_timestamp + 3600
    v, r, s = sign_permit(client, channels, DEPOSIT, deadline)
    token.permit(client, channels, DEPOSIT, deadline, v, r, s, sender=stranger)
    tx = channels.open_channel_with_permit(node_id, client, signer, DEPOSIT, deadline, v, r, s, sender=client)
    assert tuple(channels.channel(bytes(tx.return_value)))[2] == DEPOSIT
    assert token.allowance(client, channels) == 0


def test_open_channel_with_permit__bad_permit_without_allowance__reverts(
    channels, chain, client, stranger, signer, node_id, sign_permit
):
    deadline = chain.pending_timestamp + 3600
    v, r, s = sign_permit(stranger, channels, DEPOSIT, deadline)  # signed by someone else
    with ape.reverts("payment_channels: permit failed"):
        channels.open_channel_with_permit(node_id, client, signer, DEPOSIT, deadline, v, r, s, sender=client)


def test_top_up__anyone_adds_to_deposit_and_logs(channels, token, stranger, channel_id):
    token.approve(channels, 7, sender=stranger)
    tx = channels.top_up(channel_id, 7, sender=stranger)
    assert channels.channel(channel_id)[2] == DEPOSIT + 7
    [log] = tx.decode_logs(channels.ChannelToppedUp)
    assert (bytes(log.channel_id), log.amount, log.deposit) == (channel_id, 7, DEPOSIT + 7)


def test_top_up__zero__reverts(channels, client, channel_id):
    with ape.reverts("payment_channels: zero amount"):
        channels.top_up(channel_id, 0, sender=client)


def test_top_up__unknown_channel__reverts(channels, client):
    with ape.reverts("payment_channels: unknown channel"):
        channels.top_up(os.urandom(32), 1, sender=client)


def test_top_up__closing_channel__reverts(channels, client, chain, channel_id):
    start_close(channels, channel_id, client, chain)
    with ape.reverts("payment_channels: channel closing"):
        channels.top_up(channel_id, 1, sender=client)


# --- settlement ---------------------------------------------------------------------------------


def test_settle__pays_node_its_share_and_logs(channels, token, operator, channel_id, sign_receipt):
    before = token.balanceOf(operator)
    amount = 10**18
    tx = channels.settle(channel_id, 1000, amount, sign_receipt(channel_id, 1000, amount), sender=operator)
    assert token.balanceOf(operator) == before + share(channels, amount)
    assert token.balanceOf(channels) == DEPOSIT - share(channels, amount)
    assert tuple(channels.channel(channel_id))[3:5] == (amount, 1000)
    [log] = tx.decode_logs(channels.ReceiptSettled)
    assert bytes(log.channel_id) == channel_id
    assert (log.cumulative_bytes, log.cumulative_amount, log.node_amount) == (1000, amount, share(channels, amount))


def test_settle__second_receipt_pays_only_the_increase(channels, token, operator, channel_id, sign_receipt):
    channels.settle(channel_id, 1000, 150, sign_receipt(channel_id, 1000, 150), sender=operator)
    before = token.balanceOf(operator)
    tx = channels.settle(channel_id, 2000, 250, sign_receipt(channel_id, 2000, 250), sender=operator)
    # The fee is taken on the cumulative amount (1 % rounded down): 1 wei of 150, then 2 of 250.
    assert tx.decode_logs(channels.ReceiptSettled)[0].node_amount == 248 - 149
    assert token.balanceOf(operator) == before + 99


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        ((2000, 100), "payment_channels: stale amount"),  # equal amount
        ((2000, 99), "payment_channels: stale amount"),  # decreasing amount
        ((1000, 101), "payment_channels: stale bytes"),  # equal bytes
        ((999, 101), "payment_channels: stale bytes"),  # decreasing bytes
    ],
)
def test_settle__stale_equal_or_decreasing_receipt__reverts(channels, operator, channel_id, sign_receipt, second, reason):
    channels.settle(channel_id, 1000, 100, sign_receipt(channel_id, 1000, 100), sender=operator)
    with ape.reverts(reason):
        channels.settle(channel_id, *second, sign_receipt(channel_id, *second), sender=operator)


def test_settle__same_receipt_twice__reverts(channels, operator, channel_id, sign_receipt):
    signature = sign_receipt(channel_id, 1000, 100)
    channels.settle(channel_id, 1000, 100, signature, sender=operator)
    with ape.reverts("payment_channels: stale amount"):
        channels.settle(channel_id, 1000, 100, signature, sender=operator)


def test_settle__zero_receipt__reverts(channels, operator, channel_id, sign_receipt):
    with ape.reverts("payment_channels: stale amount"):
        channels.settle(channel_id, 0, 0, sign_receipt(channel_id, 0, 0), sender=operator)


def test_settle__amount_above_deposit__reverts_until_topped_up(channels, token, client, operator, channel_id, sign_receipt):
    signature = sign_receipt(channel_id, 1, DEPOSIT + 1)
    with ape.reverts("payment_channels: amount exceeds deposit"):
        channels.settle(channel_id, 1, DEPOSIT + 1, signature, sender=operator)
    token.approve(channels, 1, sender=client)
    channels.top_up(channel_id, 1, sender=client)
    channels.settle(channel_id, 1, DEPOSIT + 1, signature, sender=operator)
    assert token.balanceOf(channels) == DEPOSIT + 1 - share(channels, DEPOSIT + 1)


def test_settle__bytes_above_uint64__reverts(channels, operator, channel_id, sign_receipt):
    with ape.reverts("payment_channels: bytes too large"):
        channels.settle(channel_id, 2**64, 1, sign_receipt(channel_id, 2**64, 1), sender=operator)


def test_settle__signed_by_someone_else__reverts(channels, operator, client, channel_id, sign_receipt):
    for key in (client.private_key, operator.private_key, os.urandom(32)):
        with ape.reverts("payment_channels: wrong signer"):
            channels.settle(channel_id, 1, 1, sign_receipt(channel_id, 1, 1, key=key), sender=operator)


def test_settle__high_s_signature__reverts(channels, operator, channel_id, sign_receipt):
    r, s, v = split(sign_receipt(channel_id, 1, 1))
    malleable = join(r, SECP256K1_N - s, 55 - v)  # the other valid signature of the same digest
    assert Account._recover_hash(bytes(channels.receipt_digest(channel_id, 1, 1)), vrs=(v, r, s)) == Account._recover_hash(
        bytes(channels.receipt_digest(channel_id, 1, 1)), vrs=(55 - v, r, SECP256K1_N - s)
    )
    with ape.reverts("signature_recovery: malleable signature"):
        channels.settle(channel_id, 1, 1, malleable, sender=operator)


def test_settle__zero_address_recovery__reverts(channels, operator, channel_id):
    # r = 0 is not a curve point's x coordinate: ecrecover returns the zero address.
    with ape.reverts("ecdsa: invalid signature"):
        channels.settle(channel_id, 1, 1, join(0, 1, 27), sender=operator)


@pytest.mark.parametrize("v", [0, 1, 26, 29])
def test_settle__bad_v__reverts(channels, operator, channel_id, sign_receipt, v):
    r, s, _ = split(sign_receipt(channel_id, 1, 1))
    with ape.reverts("signature_recovery: invalid signature v"):
        channels.settle(channel_id, 1, 1, join(r, s, v), sender=operator)


def test_settle__compact_64_byte_signature__reverts(channels, operator, channel_id, sign_receipt):
    with ape.reverts("signature_recovery: invalid signature length"):
        channels.settle(channel_id, 1, 1, sign_receipt(channel_id, 1, 1)[:64], sender=operator)


def test_settle__receipt_of_another_channel__reverts(channels, operator, stranger, signer, node_id, open_channel, sign_receipt):
    # Same signer, two clients: two channels; a receipt for one never pays the other.
    first = open_channel(node_id)
    second = open_channel(node_id, funder=stranger, client_address=stranger, signer_address=signer)
    with ape.reverts("payment_channels: wrong signer"):
        channels.settle(second, 1, 1, sign_receipt(first, 1, 1), sender=operator)


def test_settle__receipt_of_same_signer_channel_to_another_node__reverts(
    channels, token, operator, node_id, register_node, open_channel, sign_receipt, sign_close
):
    # The same client and signer have channel A to one node and B to another node of the same
    # operator: a receipt for A neither settles nor closes B, and A still settles with it.
    a = open_channel(node_id)
    b = open_channel(register_node())
    receipt_a = sign_receipt(a, 10, 100)
    with ape.reverts("payment_channels: wrong signer"):
        channels.settle(b, 10, 100, receipt_a, sender=operator)
    with ape.reverts("payment_channels: wrong signer"):
        channels.cooperative_close(b, 10, 100, receipt_a, sign_close(b, 10, 100), sender=operator)
    assert tuple(channels.channel(b))[3:] == (0, 0, 0, 1)
    before = token.balanceOf(operator)
    channels.settle(a, 10, 100, receipt_a, sender=operator)
    assert token.balanceOf(operator) == before + share(channels, 100)
    channels.settle(b, 10, 100, sign_receipt(b, 10, 100), sender=operator)


def test_settle__receipt_for_another_contract__reverts(
    project, owner, channels, token, registry, treasury, operator, client, signer, node_id, open_channel, sign_receipt
):
    other = owner.deploy(project.payment_channels, token, registry, 100, treasury, 3600)
    token.approve(other, DEPOSIT, sender=client)
    other_id = bytes(other.open_channel(node_id, client, signer, DEPOSIT, sender=client).return_value)
    this_id = open_channel(node_id)
    # The other contract's receipt replayed here (its channel id, its domain), then this channel's id
    # signed under the other contract's domain: both recover someone other than the signer.
    with ape.reverts("payment_channels: wrong signer"):
        channels.settle(this_id, 1, 1, sign_receipt(other_id, 1, 1, contract=other.address), sender=operator)
    with ape.reverts("payment_channels: wrong signer"):
        channels.settle(this_id, 1, 1, sign_receipt(this_id, 1, 1, contract=other.address), sender=operator)
    other.settle(other_id, 1, 1, sign_receipt(other_id, 1, 1, contract=other.address), sender=operator)


def test_settle__receipt_for_another_chain_id__reverts(channels, chain, operator, channel_id, sign_receipt):
    with ape.reverts("payment_channels: wrong signer"):
        channels.settle(channel_id, 1, 1, sign_receipt(channel_id, 1, 1, chain_id=chain.chain_id + 1), sender=operator)


def test_settle__not_the_node_operator__reverts(channels, client, channel_id, sign_receipt):
    with ape.reverts("payment_channels: not the node operator"):
        channels.settle(channel_id, 1, 1, sign_receipt(channel_id, 1, 1), sender=client)


def test_settle__unknown_channel__reverts(channels, operator, sign_receipt):
    channel_id = os.urandom(32)
    with ape.reverts("payment_channels: unknown channel"):
        channels.settle(channel_id, 1, 1, sign_receipt(channel_id, 1, 1), sender=operator)


def test_settle__finalised_channel__reverts(channels, operator, client, chain, channel_id, sign_receipt):
    close_at = start_close(channels, channel_id, client, chain)
    chain.pending_timestamp = close_at
    channels.finalize_close(channel_id, sender=client)
    with ape.reverts("payment_channels: channel finalised"):
        channels.settle(channel_id, 1, 1, sign_receipt(channel_id, 1, 1), sender=operator)


def test_settle__revoked_node__reverts_and_client_exits_at_once(
    channels, registry, token, revoker, treasury, operator, client, node_id, channel_id, sign_receipt
):
    channels.settle(channel_id, 10, 100, sign_receipt(channel_id, 10, 100), sender=operator)
    registry.revoke(node_id, treasury, sender=revoker)
    with ape.reverts("payment_channels: node revoked"):
        channels.settle(channel_id, 20, 200, sign_receipt(channel_id, 20, 200), sender=operator)
    before = token.balanceOf(client)
    tx = channels.exit_revoked(channel_id, sender=client)
    assert token.balanceOf(client) == before + DEPOSIT - 100
    [log] = tx.decode_logs(channels.ChannelClosed)
    assert (log.kind, log.settled, log.refund, log.fee) == (EXIT, 100, DEPOSIT - 100, fee(channels, 100))
    assert channels.channel(channel_id)[6] == 3


def test_exit_revoked__node_not_revoked__reverts(channels, client, channel_id):
    with ape.reverts("payment_channels: node not revoked"):
        channels.exit_revoked(channel_id, sender=client)


def test_exit_revoked__node_withdrew__refunds(channels, registry, token, operator, client, chain, node_id, channel_id):
    tx = registry.request_unbonding(node_id, sender=operator)
    chain.pending_timestamp = tx.decode_logs(registry.NodeUnbondingRequested)[0].unbond_at
    registry.withdraw_stake(node_id, sender=operator)
    before = token.balanceOf(client)
    channels.exit_revoked(channel_id, sender=client)
    assert token.balanceOf(client) == before + DEPOSIT


def test_settle__while_node_unbonding__still_pays(channels, registry, token, operator, node_id, channel_id, sign_receipt):
    registry.request_unbonding(node_id, sender=operator)
    before = token.balanceOf(operator)
    amount = 10_000
    tx = channels.settle(channel_id, 1, amount, sign_receipt(channel_id, 1, amount), sender=operator)
    assert token.balanceOf(operator) == before + share(channels, amount)
    [log] = tx.decode_logs(channels.ReceiptSettled)
    assert (log.cumulative_bytes, log.cumulative_amount, log.node_amount) == (1, amount, share(channels, amount))
    assert tuple(channels.channel(channel_id))[3:5] == (amount, 1)


# --- unilateral close and its challenge period --------------------------------------------------


def test_start_close__logs_close_at(channels, client, chain, channel_id):
    tx = channels.start_close(channel_id, sender=client)
    [log] = tx.decode_logs(channels.ChannelCloseStarted)
    assert log.close_at == tx.timestamp + channels.challenge_period()
    assert tuple(channels.channel(channel_id))[5:] == (log.close_at, 2)


def test_start_close__not_the_client__reverts(channels, operator, signer, channel_id):
    with ape.reverts("payment_channels: not the client"):
        channels.start_close(channel_id, sender=operator)


def test_start_close__twice__reverts(channels, client, chain, channel_id):
    start_close(channels, channel_id, client, chain)
    with ape.reverts("payment_channels: channel closing"):
        channels.start_close(channel_id, sender=client)


def test_start_close__unknown_channel__reverts(channels, client):
    with ape.reverts("payment_channels: unknown channel"):
        channels.start_close(os.urandom(32), sender=client)


@pytest.mark.parametrize("function", ["finalize_close", "exit_revoked"])
def test_close__unknown_channel__reverts(channels, client, function):
    with ape.reverts("payment_channels: unknown channel"):
        getattr(channels, function)(os.urandom(32), sender=client)


def test_finalize_close__while_open__reverts(channels, client, channel_id):
    with ape.reverts("payment_channels: channel not closing"):
        channels.finalize_close(channel_id, sender=client)


def test_challenge_period__one_second_before_end__node_settles_client_cannot_finalize(
    channels, operator, client, chain, channel_id, sign_receipt
):
    close_at = start_close(channels, channel_id, client, chain)
    chain.pending_timestamp = close_at - 1
    with ape.reverts("payment_channels: challenge period not over"):
        channels.finalize_close(channel_id, sender=client)
    chain.pending_timestamp = close_at - 1
    channels.settle(channel_id, 1, 1, sign_receipt(channel_id, 1, 1), sender=operator)


def test_challenge_period__at_end__node_cannot_settle_client_finalizes(
    channels, token, treasury, operator, client, chain, channel_id, sign_receipt
):
    channels.settle(channel_id, 5, 1000, sign_receipt(channel_id, 5, 1000), sender=operator)
    close_at = start_close(channels, channel_id, client, chain)
    chain.pending_timestamp = close_at
    with ape.reverts("payment_channels: challenge period over"):
        channels.settle(channel_id, 6, 2000, sign_receipt(channel_id, 6, 2000), sender=operator)
    client_before, treasury_before = token.balanceOf(client), token.balanceOf(treasury)
    chain.pending_timestamp = close_at
    tx = channels.finalize_close(channel_id, sender=client)
    assert token.balanceOf(client) == client_before + DEPOSIT - 1000
    assert token.balanceOf(treasury) == treasury_before + fee(channels, 1000)
    assert token.balanceOf(channels) == 0
    [log] = tx.decode_logs(channels.ChannelClosed)
    assert (log.kind, log.settled, log.refund, log.fee) == (UNILATERAL, 1000, DEPOSIT - 1000, 10)


def test_challenge_period__after_end__anyone_finalizes_for_the_client(channels, token, stranger, client, chain, channel_id):
    close_at = start_close(channels, channel_id, client, chain)
    chain.pending_timestamp = close_at + 1
    before = token.balanceOf(client)
    channels.finalize_close(channel_id, sender=stranger)
    assert token.balanceOf(client) == before + DEPOSIT


@pytest.mark.parametrize("how", ["cooperative", "unilateral", "exit_revoked"])
def test_channel__finalised__keeps_node_id_client_and_close_time(
    channels, registry, revoker, treasury, operator, client, chain, node_id, channel_id, sign_receipt, sign_close, how
):
    # Outside review: the view returned a zero node id and close time once finalised, so a channel's
    # history could be read only from the logs. Each way of finalising keeps them.
    channels.settle(channel_id, 10, 100, sign_receipt(channel_id, 10, 100), sender=operator)
    if how == "cooperative":
        tx = channels.cooperative_close(
            channel_id, 20, 200, sign_receipt(channel_id, 20, 200), sign_close(channel_id, 20, 200), sender=client
        )
        settled = (200, 20)
    elif how == "unilateral":
        chain.pending_timestamp = start_close(channels, channel_id, client, chain) + 5
        tx = channels.finalize_close(channel_id, sender=client)
        settled = (100, 10)
    else:
        registry.revoke(node_id, treasury, sender=revoker)
        tx = channels.exit_revoked(channel_id, sender=client)
        settled = (100, 10)
    assert tuple(channels.channel(channel_id)) == (node_id, client, DEPOSIT, *settled, tx.timestamp, 3)


def test_channel__finalised_after_node_withdrew__still_names_the_node(
    channels, registry, operator, client, chain, node_id, channel_id
):
    tx = registry.request_unbonding(node_id, sender=operator)
    chain.pending_timestamp = tx.decode_logs(registry.NodeUnbondingRequested)[0].unbond_at
    registry.withdraw_stake(node_id, sender=operator)
    tx = channels.exit_revoked(channel_id, sender=client)
    assert tuple(channels.channel(channel_id)) == (node_id, client, DEPOSIT, 0, 0, tx.timestamp, 3)


def test_finalize_close__twice__reverts(channels, client, chain, channel_id):
    close_at = start_close(channels, channel_id, client, chain)
    chain.pending_timestamp = close_at
    channels.finalize_close(channel_id, sender=client)
    with ape.reverts("payment_channels: channel finalised"):
        channels.finalize_close(channel_id, sender=client)
    with ape.reverts("payment_channels: channel finalised"):
        channels.start_close(channel_id, sender=client)
    with ape.reverts("payment_channels: channel finalised"):
        channels.exit_revoked(channel_id, sender=client)


def test_finalised_channel__cannot_be_reopened(channels, client, signer, chain, node_id, channel_id):
    close_at = start_close(channels, channel_id, client, chain)
    chain.pending_timestamp = close_at
    channels.finalize_close(channel_id, sender=client)
    with ape.reverts("payment_channels: channel exists"):
        channels.open_channel(node_id, client, signer, 1, sender=client)


# --- cooperative close --------------------------------------------------------------------------


def test_cooperative_close__pays_everyone_at_once_and_logs(
    channels, token, treasury, operator, client, stranger, channel_id, sign_receipt, sign_close
):
    channels.settle(channel_id, 10, 150, sign_receipt(channel_id, 10, 150), sender=operator)
    balances = [token.balanceOf(a) for a in (operator, client, treasury)]
    final = (20, 250)
    tx = channels.cooperative_close(
        channel_id, *final, sign_receipt(channel_id, *final), sign_close(channel_id, *final), sender=stranger
    )
    assert token.balanceOf(operator) == balances[0] + share(channels, 250) - share(channels, 150)
    assert token.balanceOf(client) == balances[1] + DEPOSIT - 250
    assert token.balanceOf(treasury) == balances[2] + fee(channels, 250)
    assert token.balanceOf(channels) == 0
    [log] = tx.decode_logs(channels.ChannelClosed)
    assert (log.kind, log.settled, log.refund, log.fee) == (COOPERATIVE, 250, DEPOSIT - 250, 2)
    assert channels.channel(channel_id)[6] == 3


def test_cooperative_close__at_settled_amount__refunds_the_rest(
    channels, token, treasury, operator, client, channel_id, sign_receipt, sign_close
):
    channels.settle(channel_id, 10, 150, sign_receipt(channel_id, 10, 150), sender=operator)
    balances = [token.balanceOf(a) for a in (operator, client, treasury)]
    tx = channels.cooperative_close(
        channel_id, 10, 150, sign_receipt(channel_id, 10, 150), sign_close(channel_id, 10, 150), sender=client
    )
    # Nothing new to pay the node; the client gets everything above the settled 150 back.
    assert token.balanceOf(operator) == balances[0]
    assert token.balanceOf(client) == balances[1] + DEPOSIT - 150
    assert token.balanceOf(treasury) == balances[2] + fee(channels, 150)
    assert token.balanceOf(channels) == 0
    [log] = tx.decode_logs(channels.ChannelClosed)
    assert (log.kind, log.settled, log.refund, log.fee) == (COOPERATIVE, 150, DEPOSIT - 150, fee(channels, 150))


def test_cooperative_close__during_challenge_period__works(
    channels, token, treasury, operator, client, chain, channel_id, sign_receipt, sign_close
):
    start_close(channels, channel_id, client, chain)
    amount = 10_000
    balances = [token.balanceOf(a) for a in (operator, client, treasury)]
    tx = channels.cooperative_close(
        channel_id, 5, amount, sign_receipt(channel_id, 5, amount), sign_close(channel_id, 5, amount), sender=client
    )
    assert token.balanceOf(operator) == balances[0] + share(channels, amount)
    assert token.balanceOf(client) == balances[1] + DEPOSIT - amount
    assert token.balanceOf(treasury) == balances[2] + fee(channels, amount)
    [log] = tx.decode_logs(channels.ChannelClosed)
    assert (log.kind, log.settled, log.refund) == (COOPERATIVE, amount, DEPOSIT - amount)
    assert tuple(channels.channel(channel_id))[3:] == (amount, 5, tx.timestamp, 3)


def test_cooperative_close__challenge_period_edges(channels, operator, client, chain, channel_id, sign_receipt, sign_close):
    # The node's last chance to be paid for a receipt is close_at - 1, cooperatively or not: at
    # close_at the client may finalise, and a late cooperative close would take from its refund.
    channels.settle(channel_id, 10, 100, sign_receipt(channel_id, 10, 100), sender=operator)
    close_at = start_close(channels, channel_id, client, chain)
    args = (channel_id, 20, 200, sign_receipt(channel_id, 20, 200), sign_close(channel_id, 20, 200))
    before_end = chain.snapshot()
    chain.pending_timestamp = close_at
    with ape.reverts("payment_channels: challenge period over"):
        channels.cooperative_close(*args, sender=operator)
    chain.restore(before_end)  # the reverted transaction was mined at close_at: go back in time
    chain.pending_timestamp = close_at - 1
    tx = channels.cooperative_close(*args, sender=operator)
    assert tuple(channels.channel(channel_id))[3:] == (200, 20, tx.timestamp, 3)


def test_cooperative_close__wrong_node_signature__reverts(channels, client, signer_key, channel_id, sign_receipt, sign_close):
    receipt = sign_receipt(channel_id, 1, 1)
    for key in (client.private_key, signer_key):
        with ape.reverts("payment_channels: wrong node signature"):
            channels.cooperative_close(channel_id, 1, 1, receipt, sign_close(channel_id, 1, 1, key=key), sender=client)
    # A receipt signature is not a close signature, even from the operator.
    with ape.reverts("payment_channels: wrong node signature"):
        channels.cooperative_close(channel_id, 1, 1, receipt, receipt, sender=client)


def test_cooperative_close__close_signature_for_other_figures__reverts(channels, client, channel_id, sign_receipt, sign_close):
    with ape.reverts("payment_channels: wrong node signature"):
        channels.cooperative_close(channel_id, 2, 2, sign_receipt(channel_id, 2, 2), sign_close(channel_id, 1, 1), sender=client)


def test_cooperative_close__wrong_receipt_signer__reverts(channels, client, channel_id, sign_receipt, sign_close):
    bad = sign_receipt(channel_id, 1, 1, key=client.private_key)
    with ape.reverts("payment_channels: wrong signer"):
        channels.cooperative_close(channel_id, 1, 1, bad, sign_close(channel_id, 1, 1), sender=client)


def test_cooperative_close__stale_or_excessive_amount__reverts(channels, operator, client, channel_id, sign_receipt, sign_close):
    channels.settle(channel_id, 10, 150, sign_receipt(channel_id, 10, 150), sender=operator)
    cases = [((10, 149), "payment_channels: stale amount"), ((9, 150), "payment_channels: stale bytes"),
             ((11, DEPOSIT + 1), "payment_channels: amount exceeds deposit")]
    for figures, reason in cases:
        with ape.reverts(reason):
            channels.cooperative_close(
                channel_id, *figures, sign_receipt(channel_id, *figures), sign_close(channel_id, *figures), sender=client
            )


def test_cooperative_close__double_close__reverts(channels, client, channel_id, sign_receipt, sign_close):
    args = (channel_id, 1, 1, sign_receipt(channel_id, 1, 1), sign_close(channel_id, 1, 1))
    channels.cooperative_close(*args, sender=client)
    with ape.reverts("payment_channels: channel finalised"):
        channels.cooperative_close(*args, sender=client)


def test_cooperative_close__unknown_channel__reverts(channels, client, sign_receipt, sign_close):
    channel_id = os.urandom(32)
    with ape.reverts("payment_channels: unknown channel"):
        channels.cooperative_close(channel_id, 1, 1, sign_receipt(channel_id, 1, 1), sign_close(channel_id, 1, 1), sender=client)


def test_cooperative_close__revoked_node__reverts(channels, registry, revoker, treasury, client, node_id, channel_id, sign_receipt, sign_close):
    registry.revoke(node_id, treasury, sender=revoker)
    with ape.reverts("payment_channels: node revoked"):
        channels.cooperative_close(channel_id, 1, 1, sign_receipt(channel_id, 1, 1), sign_close(channel_id, 1, 1), sender=client)


# --- a token whose transfers return false -------------------------------------------------------


@pytest.fixture
def false_token(project, owner, client):
    contract = owner.deploy(project.false_token)
    contract.mint(client, 10**21, sender=owner)
    return contract


@pytest.fixture
def false_channels(project, owner, false_token, registry, treasury):
    return owner.deploy(project.payment_channels, false_token, registry, 100, treasury, 3600)


def test_open_channel__token_transfer_returns_false__reverts(false_channels, false_token, client, signer, node_id):
    false_token.approve(false_channels, 10, sender=client)
    false_token.set_failing(True, sender=client)
    with ape.reverts("payment_channels: transfer failed"):
        false_channels.open_channel(node_id, client, signer, 10, sender=client)


def test_settle__token_transfer_returns_false__reverts(
    false_channels, false_token, chain, operator, client, signer, signer_key, node_id
):
    false_token.approve(false_channels, 1000, sender=client)
    channel_id = bytes(false_channels.open_channel(node_id, client, signer, 1000, sender=client).return_value)
    false_token.set_failing(True, sender=client)
    signature = eip712.sign(eip712.Receipt(channel_id, 1, 500), signer_key, chain.chain_id, false_channels.address)
    with ape.reverts("payment_channels: transfer failed"):
        false_channels.settle(channel_id, 1, 500, signature, sender=operator)
    false_token.set_failing(False, sender=client)
    false_channels.settle(channel_id, 1, 500, signature, sender=operator)
    assert false_token.balanceOf(operator) == 495


def test_register_node__token_transfer_returns_false__reverts(project, owner, false_token, operator):
    registry = owner.deploy(project.node_registry, false_token, 1, 1, 60)
    false_token.mint(operator, 10, sender=owner)
    false_token.approve(registry, 10, sender=operator)
    false_token.set_failing(True, sender=owner)
    with ape.reverts("node_registry: transfer failed"):
        registry.register_node(os.urandom(32), "DE", 1, 10, sender=operator)


# --- deployment ---------------------------------------------------------------------------------


def test_deploy__fee_above_ten_percent__reverts(project, owner, token, registry, treasury):
    with ape.reverts("payment_channels: fee too high"):
        owner.deploy(project.payment_channels, token, registry, 1001, treasury, 3600)


def test_deploy__zero_challenge_period__reverts(project, owner, token, registry, treasury):
    with ape.reverts("payment_channels: zero challenge period"):
        owner.deploy(project.payment_channels, token, registry, 0, treasury, 0)


def test_deploy__challenge_period_above_a_year__reverts(project, owner, token, registry, treasury):
    with ape.reverts("payment_channels: challenge period too long"):
        owner.deploy(project.payment_channels, token, registry, 0, treasury, 365 * 86_400 + 1)
