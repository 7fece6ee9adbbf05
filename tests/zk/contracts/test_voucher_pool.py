"""voucher_pool.vy on the real chain: tree, deposits, redemptions and the attacks of issue 5.

The verifier is the generated one for the trapdoor key of conftest.py, so every proof here is a
valid Groth16 proof for exactly the public inputs it was made for; Poseidon is the generated
bytecode contract; token, registry and payment_channels are the real contracts. A redemption opens a
channel held by the pool itself (one storage slot: the terms hash, also the spent-nullifier mark);
the channel side (settle, closes) is in test_voucher_channels.py, the relayer ledger in
test_relayer_fees.py.
"""

import ape
import pytest
from eth_abi import encode
from eth_utils import keccak
from trapdoor_keys import DENOMINATION, TEST_DEPTH, find_g2_outside_subgroup

from zk.field import R
from zk.merkle import LeanIMT

FEE = 10**17  # relayer fee: 0.1 token
ZERO_ADDRESS = "0x" + "00" * 20
OPEN, FINALISED = 1, 3
EXIT = 3  # ChannelClosed kind: exit from a revoked or unregistered node


def expected_channel_id(chain, pool, nullifier_hash) -> bytes:
    """keccak256(abi_encode(chain.id, pool, nullifier_hash)), computed off chain."""
    return keccak(encode(["uint256", "address", "uint256"], [chain.chain_id, pool.address, nullifier_hash]))


def expected_terms(node_id, signer, deposit) -> bytes:
    """keccak256(abi_encode(node_id, signer, deposit)), computed off chain."""
    return keccak(encode(["bytes32", "address", "uint256"], [bytes(node_id), signer, deposit]))


@pytest.fixture
def funded(vouchers):
    """`vouchers` with three notes deposited."""
    for _ in range(3):
        vouchers.deposit()
    return vouchers


# DEPOSIT


def test_deposit__roots_equal_python_leanimt(pool, deposit, make_note):
    tree = LeanIMT()
    for i in range(2**TEST_DEPTH):
        commitment = make_note(100 + i).commitment
        receipt = deposit(commitment)
        expected_root = tree.insert(commitment)
        [event] = pool.Deposit.from_receipt(receipt)
        assert (event.commitment, event.leaf_index, event.new_root) == (commitment, i, expected_root)
        assert pool.root() == expected_root and pool.size() == i + 1
        assert pool.depth() == tree.depth
        assert pool.is_known_root(expected_root)
        assert pool.commitment_used(commitment)


def test_deposit__pulls_exactly_the_denomination(pool, deposit, token, client, make_note):
    before = token.balanceOf(client)
    deposit(make_note(1).commitment)
    assert token.balanceOf(client) == before - DENOMINATION
    assert token.balanceOf(pool) == DENOMINATION


@pytest.mark.parametrize("amount", [DENOMINATION - 1, DENOMINATION + 1, 0])
def test_deposit__wrong_amount__reverts(deposit, make_note, amount):
    with ape.reverts("voucher_pool: wrong amount"):
        deposit(make_note(1).commitment, amount=amount)


def test_deposit__zero_commitment__reverts(deposit):
    with ape.reverts("voucher_pool: zero commitment"):
        deposit(0)


@pytest.mark.parametrize("commitment", [R, 2**256 - 1])
def test_deposit__commitment_not_in_field__reverts(deposit, commitment):
    with ape.reverts("voucher_pool: commitment not in field"):
        deposit(commitment)


def test_deposit__duplicate_commitment__reverts(deposit, stranger, make_note):
    commitment = make_note(1).commitment
    deposit(commitment)
    with ape.reverts("voucher_pool: duplicate commitment"):
        deposit(commitment, sender=stranger)


def test_deposit__tree_full__reverts(deploy_pool, deposit, make_note):
    small = deploy_pool(max_depth=1)
    deposit(make_note(1).commitment, target=small)
    deposit(make_note(2).commitment, target=small)
    with ape.reverts("voucher_pool: tree full"):
        deposit(make_note(3).commitment, target=small)


def test_deposit__without_allowance__reverts(pool, client, make_note):
    with ape.reverts():  # snekmate's erc20 reason; the pool adds none of its own
        pool.deposit(make_note(1).commitment, DENOMINATION, sender=client)


def test_pool_with_vyper_poseidon__same_roots(deploy_pool, poseidon_vyper, deposit, make_note):
    vyper_pool = deploy_pool(poseidon_=poseidon_vyper)
    tree = LeanIMT()
    for i in range(5):
        commitment = make_note(600 + i).commitment
        deposit(commitment, target=vyper_pool)
        assert vyper_pool.root() == tree.insert(commitment)


# CONSTRUCTOR


def test_constructor__reads_rules_from_payment_channels(pool, token, registry, channels, treasury, verifier):
    assert pool.token() == token.address and pool.registry() == registry.address
    assert pool.channels() == channels.address and pool.verifier() == verifier.address
    assert (pool.fee_bps(), pool.treasury(), pool.challenge_period()) == (
        channels.fee_bps(), treasury.address, channels.challenge_period()
    )
    assert (pool.denomination(), pool.max_depth()) == (DENOMINATION, TEST_DEPTH)


@pytest.mark.parametrize(
    "denomination, depth, reason",
    [
        (0, TEST_DEPTH, "voucher_pool: zero denomination"),
        (2**96, TEST_DEPTH, "voucher_pool: denomination too large"),
        (DENOMINATION, 0, "voucher_pool: bad depth"),
        (DENOMINATION, 33, "voucher_pool: bad depth"),
    ],
)
def test_constructor__bad_parameters__revert(deploy_pool, denomination, depth, reason):
    with ape.reverts(reason):
        deploy_pool(denomination=denomination, max_depth=depth)


# REDEEM: THE CHANNEL IT OPENS


def test_redeem__opens_channel_in_the_pool(funded, node_id, make_signer, token, channels, chain, operator, stranger):
    pool, note = funded.pool, funded.notes[1]
    _, signer = make_signer()
    pool_before, channels_before = token.balanceOf(pool), token.balanceOf(channels)
    node_before, signer_before = token.balanceOf(operator), token.balanceOf(signer)

    receipt = funded.redeem(note, node_id, signer, FEE, sender=stranger)

    channel_id = bytes(receipt.return_value)
    assert channel_id == expected_channel_id(chain, pool, note.nullifier_hash)
    assert channel_id == bytes(pool.channel_id_of(note.nullifier_hash))
    terms = expected_terms(node_id, signer, DENOMINATION - FEE)
    assert bytes(pool.terms_hash(node_id, signer, DENOMINATION - FEE)) == terms
    state = pool.channel(channel_id)
    assert (bytes(state[0]), state[1], state[2], state[3], state[4]) == (terms, 0, 0, 0, OPEN)
    assert pool.nullifier_spent(note.nullifier_hash)
    assert not pool.nullifier_spent(funded.notes[0].nullifier_hash)
    # Tokens stay in the pool; nobody is paid; payment_channels is not involved.
    assert token.balanceOf(pool) == pool_before == 3 * DENOMINATION
    assert token.balanceOf(channels) == channels_before
    assert (token.balanceOf(operator), token.balanceOf(signer)) == (node_before, signer_before)
    assert pool.relayer_balance(stranger) == FEE
    assert pool.relayer_balance(operator) == 0 and pool.relayer_balance(signer) == 0

    [event] = pool.Redeemed.from_receipt(receipt)
    assert bytes(event.channel_id) == channel_id and bytes(event.node_id) == bytes(node_id)
    assert event.nullifier_hash == note.nullifier_hash
    assert (event.signer, event.relayer, event.relayer_fee) == (signer, stranger.address, FEE)


def test_redeem__zero_fee__no_relayer_credit(funded, node_id, make_signer, operator):
    _, signer = make_signer()
    receipt = funded.redeem(funded.notes[0], node_id, signer, 0, sender=operator)
    assert funded.pool.relayer_balance(operator) == 0
    [event] = funded.pool.Redeemed.from_receipt(receipt)
    assert event.relayer_fee == 0
    assert bytes(funded.pool.channel(bytes(receipt.return_value))[0]) == expected_terms(node_id, signer, DENOMINATION)


def test_redeem__channel_view_of_unknown_id__empty(pool):
    assert tuple(pool.channel(b"\x01" * 32))[1:] == (0, 0, 0, 0)
    assert bytes(pool.channel(b"\x01" * 32)[0]) == b"\x00" * 32


def test_redeem__second_voucher_same_signer__second_channel(funded, node_id, make_signer, operator):
    # No top-ups: every voucher is its own channel, so two redemptions are never linked on chain.
    pool = funded.pool
    _, signer = make_signer()
    first = bytes(funded.redeem(funded.notes[0], node_id, signer, 0, sender=operator).return_value)
    second = bytes(funded.redeem(funded.notes[2], node_id, signer, FEE, sender=operator).return_value)
    assert first != second
    assert bytes(pool.channel(first)[0]) == expected_terms(node_id, signer, DENOMINATION)
    assert bytes(pool.channel(second)[0]) == expected_terms(node_id, signer, DENOMINATION - FEE)
    assert pool.channel(first)[4] == pool.channel(second)[4] == OPEN


def test_redeem__same_signer_to_two_nodes__two_channels(funded, register_node, node_id, make_signer, operator):
    _, signer = make_signer()
    other = register_node()
    first = bytes(funded.redeem(funded.notes[0], node_id, signer, 0, sender=operator).return_value)
    second = bytes(funded.redeem(funded.notes[1], other, signer, 0, sender=operator).return_value)
    assert bytes(funded.pool.channel(second)[0]) == expected_terms(other, signer, DENOMINATION) != bytes(
        funded.pool.channel(first)[0]
    )


def test_redeem__unregistered_node__opens_and_anyone_exits_at_once(funded, make_signer, token, treasury, stranger):
    pool = funded.pool
    unknown = b"\x42" * 32  # no registration (the pool does not ask the registry at redeem)
    _, signer = make_signer()
    channel_id = bytes(funded.redeem(funded.notes[0], unknown, signer, FEE, sender=stranger).return_value)
    assert pool.channel(channel_id)[4] == OPEN
    treasury_before = token.balanceOf(treasury)
    tx = pool.exit_revoked(channel_id, unknown, signer, DENOMINATION - FEE, sender=stranger)
    assert token.balanceOf(signer) == DENOMINATION - FEE
    assert token.balanceOf(treasury) == treasury_before
    assert token.balanceOf(pool) == 2 * DENOMINATION + FEE  # two notes + the relayer's credit
    [closed] = pool.ChannelClosed.from_receipt(tx)
    assert bytes(closed.channel_id) == channel_id
    assert (closed.kind, closed.settled, closed.refund, closed.fee) == (EXIT, 0, DENOMINATION - FEE, 0)
    assert pool.channel(channel_id)[4] == FINALISED


def test_redeem__zero_signer__reverts(funded, node_id, operator):
    with ape.reverts("voucher_pool: zero signer"):
        funded.redeem(funded.notes[0], node_id, ZERO_ADDRESS, 0, sender=operator)


@pytest.mark.parametrize("fee", [DENOMINATION, DENOMINATION + 1, 2**256 - 1])
def test_redeem__fee_not_below_denomination__reverts(funded, node_id, make_signer, operator, fee):
    _, signer = make_signer()
    with ape.reverts("voucher_pool: fee too high"):
        funded.redeem(funded.notes[0], node_id, signer, fee, sender=operator)


def test_redeem__fee_just_below_denomination__one_wei_channel(funded, node_id, make_signer, operator):
    _, signer = make_signer()
    receipt = funded.redeem(funded.notes[0], node_id, signer, DENOMINATION - 1, sender=operator)
    assert bytes(funded.pool.channel(bytes(receipt.return_value))[0]) == expected_terms(node_id, signer, 1)
    assert funded.pool.relayer_balance(operator) == DENOMINATION - 1


# REDEEM: ATTACKS (issue 5)


def test_redeem__reused_nullifier__reverts(funded, node_id, make_signer, operator):
    note = funded.notes[0]
    _, signer = make_signer()
    funded.redeem(note, node_id, signer, FEE, sender=operator)
    _, other_signer = make_signer()
    with ape.reverts("voucher_pool: nullifier spent"):  # a fresh valid proof, to another signer
        funded.redeem(note, node_id, other_signer, FEE, sender=operator)
    with ape.reverts("voucher_pool: nullifier spent"):  # the very same redemption again
        funded.redeem(note, node_id, signer, FEE, sender=operator)


@pytest.mark.parametrize("root", [0, 12345])
def test_redeem__unknown_root__reverts(funded, node_id, make_signer, operator, root):
    _, signer = make_signer()
    with ape.reverts("voucher_pool: unknown root"):
        funded.redeem(funded.notes[0], node_id, signer, 0, sender=operator, root=root)


def test_redeem__recent_old_root__accepted(vouchers, node_id, make_signer, operator):
    note = vouchers.deposit()
    old_root = vouchers.tree.root
    for _ in range(3):
        vouchers.deposit()
    assert vouchers.pool.root() != old_root and vouchers.pool.is_known_root(old_root)
    _, signer = make_signer()
    vouchers.redeem(note, node_id, signer, 0, sender=operator, root=old_root)
    assert vouchers.pool.nullifier_spent(note.nullifier_hash)


def test_redeem__proof_for_another_root__reverts(funded, node_id, make_signer, operator):
    note = funded.notes[0]
    _, signer = make_signer()
    proof = funded.prove(note, node_id, signer, 0)
    funded.deposit()
    with ape.reverts("voucher_pool: invalid proof"):
        funded.redeem(note, node_id, signer, 0, sender=operator, proof=proof)  # against the newer root


def test_redeem__root_older_than_history__reverts(
    deploy_pool, make_vouchers, token, chain, client, make_note, node_id, make_signer, operator
):
    vouchers = make_vouchers(deploy_pool(max_depth=7))
    note = vouchers.deposit()
    first_root = vouchers.tree.root
    # 99 filler deposits sent straight to anvil (ape's per-transaction bookkeeping would take ~10 s).
    token.approve(vouchers.pool, 99 * DENOMINATION, sender=client)
    web3 = chain.provider.web3
    for i in range(99):
        data = vouchers.pool.deposit.encode_input(make_note(300 + i).commitment, DENOMINATION)
        web3.eth.send_transaction({"from": client.address, "to": vouchers.pool.address, "data": data, "gas": 600_000})
    assert vouchers.pool.size() == 100
    assert vouchers.pool.is_known_root(first_root)  # 99 deposits later: still in the history
    vouchers.deposit()
    assert not vouchers.pool.is_known_root(first_root)  # ROOT_HISTORY_SIZE = 100 later: expired
    _, signer = make_signer()
    with ape.reverts("voucher_pool: unknown root"):
        vouchers.redeem(note, node_id, signer, 0, sender=operator, root=first_root)


@pytest.mark.parametrize("changed", ["node_id", "signer", "fee", "nullifier_hash"])
def test_redeem__front_run_with_changed_argument__reverts(
    funded, register_node, node_id, make_signer, operator, stranger, changed
):
    pool, tree = funded.pool, funded.tree
    nh = funded.notes[0].nullifier_hash
    _, signer = make_signer()
    proof = funded.prove(nh, node_id, signer, FEE)
    args = {"nullifier_hash": nh, "node_id": node_id, "signer": signer, "fee": FEE}
    args[changed] = {
        "node_id": register_node(),
        "signer": stranger.address,
        "fee": FEE * 5,
        "nullifier_hash": funded.notes[1].nullifier_hash,
    }[changed]
    with ape.reverts("voucher_pool: invalid proof"):
        pool.redeem(proof, tree.root, args["nullifier_hash"], args["node_id"], args["signer"], args["fee"],
                    sender=stranger)
    assert not pool.nullifier_spent(args["nullifier_hash"])
    # The honest submission still goes through afterwards, to the node and signer the proof names.
    receipt = pool.redeem(proof, tree.root, nh, node_id, signer, FEE, sender=operator)
    assert bytes(pool.channel(bytes(receipt.return_value))[0]) == expected_terms(node_id, signer, DENOMINATION - FEE)


def test_redeem__front_runner_copying_redemption__takes_only_the_fee(funded, node_id, make_signer, operator, stranger):
    # The relayer is not bound by the proof (contract NatSpec): a copier earns the fee, but the
    # channel goes to the same node and signer, and the honest relayer's copy is then refused.
    pool, note = funded.pool, funded.notes[0]
    _, signer = make_signer()
    proof = funded.prove(note, node_id, signer, FEE)
    receipt = funded.redeem(note, node_id, signer, FEE, sender=stranger, proof=proof)
    assert pool.relayer_balance(stranger) == FEE
    assert bytes(pool.channel(bytes(receipt.return_value))[0]) == expected_terms(node_id, signer, DENOMINATION - FEE)
    with ape.reverts("voucher_pool: nullifier spent"):
        funded.redeem(note, node_id, signer, FEE, sender=operator, proof=proof)


@pytest.mark.parametrize("element", ["A", "B", "C"])
def test_redeem__tampered_proof__reverts(funded, node_id, make_signer, operator, element):
    note = funded.notes[0]
    _, signer = make_signer()
    proof = list(funded.prove(note, node_id, signer, 0))
    other = funded.prove(note, node_id, signer, 0)  # another valid proof: mixing the two breaks both
    span = {"A": slice(0, 2), "B": slice(2, 6), "C": slice(6, 8)}[element]
    proof[span] = other[span]
    with ape.reverts("voucher_pool: invalid proof"):
        funded.redeem(note, node_id, signer, 0, sender=operator, proof=proof)
    assert not funded.pool.nullifier_spent(note.nullifier_hash)


def test_redeem__off_curve_point__verifier_reason_bubbles_up(funded, node_id, make_signer, operator):
    note = funded.notes[0]
    _, signer = make_signer()
    proof = list(funded.prove(note, node_id, signer, 0))
    proof[0] += 1
    with ape.reverts("groth16_verifier: point not on curve"):
        funded.redeem(note, node_id, signer, 0, sender=operator, proof=proof)


def test_redeem__nullifier_hash_not_in_field__reverts(funded, node_id, make_signer, operator):
    # nh + R is the same field element: without the range check it would be a second nullifier.
    pool, tree = funded.pool, funded.tree
    nh = funded.notes[0].nullifier_hash
    _, signer = make_signer()
    proof = funded.prove(nh, node_id, signer, 0)
    with ape.reverts("groth16_verifier: public input not in field"):
        pool.redeem(proof, tree.root, nh + R, node_id, signer, 0, sender=operator)


def test_redeem__b_outside_subgroup__reverts(funded, node_id, make_signer, operator):
    note = funded.notes[0]
    _, signer = make_signer()
    proof = list(funded.prove(note, node_id, signer, 0))
    (x_re, x_im), (y_re, y_im) = find_g2_outside_subgroup()
    proof[2:6] = [x_im, x_re, y_im, y_re]
    with ape.reverts("groth16_verifier: pairing input rejected"):
        funded.redeem(note, node_id, signer, 0, sender=operator, proof=proof)
