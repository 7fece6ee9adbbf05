"""Typed bindings read the same state the contracts hold, and refuse another chain's deployment.

Voucher channels: a real pool (small-depth voucher circuit, its own development key and generated
verifier), real deposits, proofs and redemptions through the prover agent, then the binding settles
and closes the channel as node code would.
"""

import ape
import pytest
from eth_account import Account

from agents.chain import eip712
from agents.chain.bindings import (
    ChannelStatus,
    VoucherChannel,
    VoucherChannelError,
    WarrenContracts,
    node_id_of,
)
from agents.chain.deploy import TOKEN, DeployParameters, deploy_all

STAKE = 100 * TOKEN
DEPOSIT = 5 * TOKEN
PRICE = 2 * TOKEN
#: The voucher circuit's depth here: 4 notes per pool, enough for one test (each test starts afresh).
VOUCHER_DEPTH = 2
DENOMINATION = 10 * TOKEN
RELAYER_FEE = TOKEN // 10


@pytest.fixture(scope="module")
def warren(project, chain, owner, operator, client, guardians):
    """One deployment per module; the roles that act on it are set up first (ape's isolation wants
    session fixtures before module ones)."""
    deployment = deploy_all(
        project, owner, chain, DeployParameters(guardians=[g.address for g in guardians]), log=lambda _: None
    )
    return WarrenContracts.at(project, deployment, chain.chain_id)


@pytest.fixture
def registered(owner, operator, warren):
    wg_key = bytes(range(32))
    warren.token.mint(operator, STAKE, sender=owner)
    warren.token.approve(warren.registry, STAKE, sender=operator)
    warren.registry.register_node(wg_key, "NL", PRICE, STAKE, sender=operator)
    return wg_key


def test_node__reads_registration(operator, warren, registered):
    info = warren.node(node_id_of(registered))
    assert (info.operator, info.wg_public_key, info.region) == (operator.address, registered, "NL")
    assert (info.price_per_gib, info.stake, info.active, info.revoked) == (PRICE, STAKE, True, False)


def test_node__unknown_id__empty(warren):
    info = warren.node(b"\x07" * 32)
    assert int(info.operator, 16) == 0 and not info.active and info.stake == 0


def test_channel__open_then_settle__fields_follow(owner, operator, client, warren, registered):
    signer = Account.create()
    warren.token.mint(client, DEPOSIT, sender=owner)
    warren.token.approve(warren.channels, DEPOSIT, sender=client)
    node_id = node_id_of(registered)
    warren.channels.open_channel(node_id, client, signer.address, DEPOSIT, sender=client)
    channel_id = warren.channel_id_of(node_id, client.address, signer.address)

    state = warren.channel(channel_id)
    assert (state.node_id, state.client, state.deposit, state.status) == (
        node_id, client.address, DEPOSIT, ChannelStatus.OPEN)

    receipt = eip712.Receipt(channel_id, 1_000, TOKEN)
    warren.channels.settle(channel_id, 1_000, TOKEN, warren.sign(receipt, signer.key), sender=operator)
    state = warren.channel(channel_id)
    assert (state.settled, state.settled_bytes, state.remaining) == (TOKEN, 1_000, DEPOSIT - TOKEN)


def test_channel__never_opened__status_none(warren):
    assert warren.channel(b"\x01" * 32).status is ChannelStatus.NONE


def test_at__other_chain__refused(project, warren, chain):
    from agents.chain.deployment import Deployment

    deployment = Deployment(chain_id=chain.chain_id + 1, addresses={"warren_token": warren.token.address})
    with pytest.raises(ValueError, match="connected chain is"):
        WarrenContracts.at(project, deployment, chain.chain_id)


@pytest.mark.parametrize("length", [0, 31, 33])
def test_node_id_of__wrong_key_length__refused(length):
    with pytest.raises(ValueError, match="32 bytes"):
        node_id_of(b"\x00" * length)


# -- voucher channels ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def voucher_keys():
    """Development keys of the small voucher circuit (made once per module)."""
    from zk.groth16 import setup_dev
    from zk.voucher import voucher_circuit

    return setup_dev(voucher_circuit(VOUCHER_DEPTH))


@pytest.fixture(scope="module")
def pool_channels(project, owner, warren, voucher_keys):
    """A voucher pool over the deployment's payment_channels, with the verifier of `voucher_keys`."""
    from zk.export import vk_to_json
    from zk.onchain import deploy_voucher_pool
    from zk.vyper_verifier import vk_from_snarkjs

    deployed = deploy_voucher_pool(project, owner, warren.channels, DENOMINATION, VOUCHER_DEPTH,
                                   vk=vk_from_snarkjs(vk_to_json(voucher_keys[1])))
    return warren.voucher_channels(project, deployed.pool.address)


@pytest.fixture
def redeem_voucher(tmp_path, pool_channels, voucher_keys, warren, client, operator):
    """Factory: the client deposits a note, proves it to `node_id` for `signer`, the operator submits;
    returns the VoucherChannel the redemption opened."""
    from agents.prover.chain import deposit_note, pool_tree, submit_redemption
    from agents.prover.notes import NoteStore
    from agents.prover.redemption import make_redemption

    def _redeem(node_id, signer, fee=RELAYER_FEE):
        pool = pool_channels.pool
        note = deposit_note(NoteStore(tmp_path / "notes.json"), pool, warren.token, client, DENOMINATION)
        redemption = make_redemption(note, pool_tree(pool), voucher_keys[0], VOUCHER_DEPTH, node_id, signer, fee)
        return submit_redemption(pool, redemption, operator).channel

    return _redeem


@pytest.fixture
def funded_client(owner, warren, client):
    warren.token.mint(client, 4 * DENOMINATION, sender=owner)
    return client


def _balances(warren, *who):
    return [int(warren.token.balanceOf(w)) for w in who]


def test_voucher_channel__settle_twice_then_cooperative_close__refunds_signer(
        owner, operator, funded_client, warren, registered, pool_channels, redeem_voucher):
    payer = Account.create()  # the client's fresh payment signer
    node_id = node_id_of(registered)
    channel = redeem_voucher(node_id, payer.address)
    deposit = DENOMINATION - RELAYER_FEE
    state = pool_channels.channel(channel)
    assert (state.node_id, state.client, state.deposit, state.settled, state.status) == (
        node_id, payer.address, deposit, 0, ChannelStatus.OPEN)

    fee_of = lambda amount: amount * int(warren.channels.fee_bps()) // 10_000  # noqa: E731
    treasury = owner  # deploy_all's default treasury is the deployer
    operator_before, treasury_before = _balances(warren, operator, treasury)
    for nbytes, amount in ((1_000, TOKEN), (3_000, 3 * TOKEN)):
        receipt = eip712.Receipt(channel.channel_id, nbytes, amount)
        tx = pool_channels.settle(channel, receipt, pool_channels.sign(receipt, payer.key), sender=operator)
        [event] = tx.decode_logs(pool_channels.pool.ReceiptSettled)
        assert (bytes(event.channel_id), event.cumulative_bytes, event.cumulative_amount) == (
            channel.channel_id, nbytes, amount)
        state = pool_channels.channel(channel)
        assert (state.settled, state.settled_bytes, state.remaining) == (amount, nbytes, deposit - amount)
    assert _balances(warren, operator)[0] - operator_before == 3 * TOKEN - fee_of(3 * TOKEN)

    final = eip712.Receipt(channel.channel_id, 4_000, 4 * TOKEN)
    node_consent = eip712.CooperativeClose(*final.__dict__.values())
    tx = pool_channels.cooperative_close(channel, final, pool_channels.sign(final, payer.key),
                                         pool_channels.sign(node_consent, operator.private_key),
                                         sender=funded_client)
    [closed] = tx.decode_logs(pool_channels.pool.ChannelClosed)
    assert (closed.kind, closed.settled, closed.refund, closed.fee) == (
        1, 4 * TOKEN, deposit - 4 * TOKEN, fee_of(4 * TOKEN))
    assert int(warren.token.balanceOf(payer.address)) == deposit - 4 * TOKEN  # the signer is refunded
    operator_after, treasury_after = _balances(warren, operator, treasury)
    assert operator_after - operator_before == 4 * TOKEN - fee_of(4 * TOKEN)
    assert treasury_after - treasury_before == fee_of(4 * TOKEN)
    assert pool_channels.channel(channel).status is ChannelStatus.FINALISED


def test_voucher_channel__unilateral_close__signer_refunded_after_challenge_period(
        owner, operator, funded_client, warren, registered, pool_channels, redeem_voucher, accounts, chain):
    payer = accounts.generate_test_account()  # the signer sends start_close itself: it needs gas money
    owner.transfer(payer, 10**17)
    channel = redeem_voucher(node_id_of(registered), payer.address, fee=0)
    receipt = eip712.Receipt(channel.channel_id, 2_000, TOKEN)
    pool_channels.settle(channel, receipt, pool_channels.sign(receipt, payer.private_key), sender=operator)
    with ape.reverts("voucher_pool: not the signer"):
        pool_channels.start_close(channel, sender=operator)
    tx = pool_channels.start_close(channel, sender=payer)
    [started] = tx.decode_logs(pool_channels.pool.ChannelCloseStarted)
    state = pool_channels.channel(channel)
    assert state.status is ChannelStatus.CLOSING and state.close_at == started.close_at
    with ape.reverts("voucher_pool: challenge period not over"):
        pool_channels.finalize_close(channel, sender=operator)
    chain.pending_timestamp = state.close_at
    tx = pool_channels.finalize_close(channel, sender=operator)  # anyone may finish it
    [closed] = tx.decode_logs(pool_channels.pool.ChannelClosed)
    assert (closed.kind, closed.refund) == (2, DENOMINATION - TOKEN)
    assert int(warren.token.balanceOf(payer)) == DENOMINATION - TOKEN
    assert pool_channels.channel(channel).status is ChannelStatus.FINALISED


def test_voucher_channel__relayed_close_request__signer_without_gas_refunded(
        operator, funded_client, warren, registered, pool_channels, redeem_voucher, chain):
    payer = Account.create()  # a fresh signer: no gas money, it only signs
    channel = redeem_voucher(node_id_of(registered), payer.address, fee=0)
    request = pool_channels.sign(eip712.CloseRequest(channel.channel_id), payer.key)
    tx = pool_channels.start_close_for(channel, request, sender=operator)  # any relayer
    [started] = tx.decode_logs(pool_channels.pool.ChannelCloseStarted)
    chain.pending_timestamp = started.close_at
    pool_channels.finalize_close(channel, sender=operator)
    assert int(warren.token.balanceOf(payer.address)) == DENOMINATION
    assert pool_channels.channel(channel).status is ChannelStatus.FINALISED


def test_voucher_channel__receipt_for_payment_channels_domain__refused(
        operator, funded_client, warren, registered, pool_channels, redeem_voucher):
    payer = Account.create()
    channel = redeem_voucher(node_id_of(registered), payer.address)
    receipt = eip712.Receipt(channel.channel_id, 1_000, TOKEN)
    other_domain = warren.sign(receipt, payer.key)  # verifying contract = payment_channels
    assert other_domain != pool_channels.sign(receipt, payer.key)
    with ape.reverts("voucher_pool: wrong signer"):
        pool_channels.settle(channel, receipt, other_domain, sender=operator)
    assert pool_channels.channel(channel).settled == 0


def test_voucher_channel__wrong_terms_or_other_pool__refused(
        operator, funded_client, warren, registered, pool_channels, redeem_voucher):
    payer = Account.create()
    channel = redeem_voucher(node_id_of(registered), payer.address)
    lied = VoucherChannel(channel.pool, channel.chain_id, channel.channel_id, channel.node_id, channel.signer,
                          channel.deposit + RELAYER_FEE)  # the denomination: as if no relayer fee was paid
    with pytest.raises(VoucherChannelError, match="other terms"):
        pool_channels.channel(lied)
    receipt = eip712.Receipt(channel.channel_id, 1_000, TOKEN)
    with ape.reverts("voucher_pool: wrong terms"):
        pool_channels.settle(lied, receipt, pool_channels.sign(receipt, payer.key), sender=operator)
    elsewhere = VoucherChannel(warren.channels.address, channel.chain_id, channel.channel_id, channel.node_id,
                               channel.signer, channel.deposit)
    with pytest.raises(VoucherChannelError, match="belongs to pool"):
        pool_channels.settle(elsewhere, receipt, pool_channels.sign(receipt, payer.key), sender=operator)
    unknown = VoucherChannel(channel.pool, channel.chain_id, b"\x05" * 32, channel.node_id, channel.signer,
                             channel.deposit)
    assert pool_channels.channel(unknown).status is ChannelStatus.NONE


def test_voucher_channel__unregistered_node__exit_refunds_signer_at_once(
        operator, funded_client, warren, pool_channels, redeem_voucher):
    payer = Account.create()
    channel = redeem_voucher(b"\x0b" * 32, payer.address)  # nobody registered this node id
    tx = pool_channels.exit_revoked(channel, sender=operator)
    [closed] = tx.decode_logs(pool_channels.pool.ChannelClosed)
    assert (closed.kind, closed.refund) == (3, DENOMINATION - RELAYER_FEE)
    assert int(warren.token.balanceOf(payer.address)) == DENOMINATION - RELAYER_FEE
