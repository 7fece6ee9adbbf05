"""voucher_pool.vy on the real chain: tree, deposits, redemptions and the attacks of issue 5.

The verifier is the generated one for the trapdoor key of conftest.py, so every proof here is a
valid Groth16 proof for exactly the public inputs it was made for; Poseidon is the generated
bytecode contract; token, registry and payment_channels are the real contracts.
"""

import random

import ape
import pytest
from eth_account import Account

from trapdoor_keys import DENOMINATION, TEST_DEPTH
from zk.field import R
from zk.merkle import LeanIMT
from zk.voucher import Note, ext_data_hash

FEE = 10**17  # relayer fee: 0.1 token


@pytest.fixture
def fresh_signer():
    """A one-off payment signer address, as a client makes per channel."""
    return Account.create().address


def _note(seed: int) -> Note:
    rng = random.Random(seed)
    return Note(rng.getrandbits(248), rng.getrandbits(248))


@pytest.fixture
def funded_pool(pool, deposit):
    """A pool with three notes deposited; returns (pool, notes, python tree)."""
    notes = [_note(i) for i in range(3)]
    tree = LeanIMT()
    for note in notes:
        deposit(note.commitment)
        tree.insert(note.commitment)
    return pool, notes, tree


@pytest.fixture
def prove(trapdoor):
    """Factory: a proof for (root, nullifier_hash, ext_data_hash(node_id, signer, fee))."""

    def _prove(root, nullifier_hash, node_id, signer, fee):
        return trapdoor.prove([root, nullifier_hash, ext_data_hash(bytes(node_id), signer, fee)])

    return _prove


# DEPOSIT


def test_deposit__roots_equal_python_leanimt(pool, deposit):
    tree = LeanIMT()
    for i in range(2**TEST_DEPTH):
        commitment = _note(100 + i).commitment
        receipt = deposit(commitment)
        expected_root = tree.insert(commitment)
        [event] = pool.Deposit.from_receipt(receipt)
        assert (event.commitment, event.leaf_index, event.new_root) == (commitment, i, expected_root)
        assert pool.root() == expected_root and pool.size() == i + 1
        assert pool.depth() == tree.depth
        assert pool.is_known_root(expected_root)


def test_deposit__pulls_exactly_the_denomination(pool, deposit, token, client):
    before = token.balanceOf(client)
    deposit(_note(1).commitment)
    assert token.balanceOf(client) == before - DENOMINATION
    assert token.balanceOf(pool) == DENOMINATION


@pytest.mark.parametrize("amount", [DENOMINATION - 1, DENOMINATION + 1, 0])
def test_deposit__wrong_amount__reverts(deposit, amount):
    with ape.reverts("voucher_pool: wrong amount"):
        deposit(_note(1).commitment, amount=amount)


def test_deposit__zero_commitment__reverts(deposit):
    with ape.reverts("voucher_pool: zero commitment"):
        deposit(0)


@pytest.mark.parametrize("commitment", [R, 2**256 - 1])
def test_deposit__commitment_not_in_field__reverts(deposit, commitment):
    with ape.reverts("voucher_pool: commitment not in field"):
        deposit(commitment)


def test_deposit__duplicate_commitment__reverts(deposit, stranger):
    commitment = _note(1).commitment
    deposit(commitment)
    with ape.reverts("voucher_pool: duplicate commitment"):
        deposit(commitment, sender=stranger)


def test_deposit__tree_full__reverts(deploy_pool, deposit):
    small = deploy_pool(max_depth=1)
    deposit(_note(1).commitment, target=small)
    deposit(_note(2).commitment, target=small)
    with ape.reverts("voucher_pool: tree full"):
        deposit(_note(3).commitment, target=small)


def test_deposit__without_allowance__reverts(pool, client):
    with ape.reverts():
        pool.deposit(_note(1).commitment, DENOMINATION, sender=client)


# REDEEM


def test_redeem__opens_channel_and_pays_relayer(funded_pool, prove, node_id, fresh_signer, token, channels, operator):
    pool, notes, tree = funded_pool
    note = notes[1]
    proof = prove(tree.root, note.nullifier_hash, node_id, fresh_signer, FEE)
    relayer_before = token.balanceOf(operator)
    channels_before = token.balanceOf(channels)

    receipt = pool.redeem(proof, tree.root, note.nullifier_hash, node_id, fresh_signer, FEE, sender=operator)

    channel_id = bytes(receipt.return_value)
    assert channel_id == bytes(channels.channel_id_of(fresh_signer, fresh_signer))
    state = channels.channel(channel_id)
    assert (bytes(state[0]), state[1], state[2]) == (bytes(node_id), fresh_signer, DENOMINATION - FEE)
    assert token.balanceOf(operator) == relayer_before + FEE
    assert token.balanceOf(channels) == channels_before + DENOMINATION - FEE
    assert token.balanceOf(pool) == 2 * DENOMINATION
    assert pool.nullifier_spent(note.nullifier_hash)
    assert bytes(pool.channel_of(node_id, fresh_signer)) == channel_id
    [event] = pool.Redeemed.from_receipt(receipt)
    assert event.nullifier_hash == note.nullifier_hash
    assert bytes(event.node_id) == bytes(node_id) and bytes(event.channel_id) == channel_id
    assert (event.signer, event.relayer, event.relayer_fee) == (fresh_signer, operator, FEE)
    [opened] = channels.ChannelOpened.from_receipt(receipt)
    assert opened.signer == fresh_signer and opened.deposit == DENOMINATION - FEE


def test_redeem__second_note_same_node_and_signer__tops_up(funded_pool, prove, node_id, fresh_signer, channels, stranger):
    pool, notes, tree = funded_pool
    first = pool.redeem(
        prove(tree.root, notes[0].nullifier_hash, node_id, fresh_signer, 0),
        tree.root, notes[0].nullifier_hash, node_id, fresh_signer, 0, sender=stranger,
    )
    second = pool.redeem(
        prove(tree.root, notes[2].nullifier_hash, node_id, fresh_signer, FEE),
        tree.root, notes[2].nullifier_hash, node_id, fresh_signer, FEE, sender=stranger,
    )
    assert bytes(first.return_value) == bytes(second.return_value)
    assert channels.channel(bytes(first.return_value))[2] == 2 * DENOMINATION - FEE
    [topped] = channels.ChannelToppedUp.from_receipt(second)
    assert topped.amount == DENOMINATION - FEE


def test_redeem__reused_nullifier__reverts(funded_pool, prove, node_id, fresh_signer, operator):
    pool, notes, tree = funded_pool
    nh = notes[0].nullifier_hash
    pool.redeem(prove(tree.root, nh, node_id, fresh_signer, FEE), tree.root, nh, node_id, fresh_signer, FEE, sender=operator)
    other_signer = Account.create().address
    with ape.reverts("voucher_pool: nullifier spent"):
        pool.redeem(
            prove(tree.root, nh, node_id, other_signer, FEE), tree.root, nh, node_id, other_signer, FEE, sender=operator
        )


@pytest.mark.parametrize("root", [0, 12345])
def test_redeem__unknown_root__reverts(funded_pool, prove, node_id, fresh_signer, operator, root):
    pool, notes, _ = funded_pool
    nh = notes[0].nullifier_hash
    with ape.reverts("voucher_pool: unknown root"):
        pool.redeem(prove(root, nh, node_id, fresh_signer, 0), root, nh, node_id, fresh_signer, 0, sender=operator)


def test_redeem__recent_old_root__accepted(pool, deposit, prove, node_id, fresh_signer, operator):
    tree = LeanIMT()
    note = _note(7)
    deposit(note.commitment)
    old_root = tree.insert(note.commitment)
    for i in range(3):
        deposit(_note(200 + i).commitment)
    assert pool.root() != old_root and pool.is_known_root(old_root)
    nh = note.nullifier_hash
    pool.redeem(prove(old_root, nh, node_id, fresh_signer, 0), old_root, nh, node_id, fresh_signer, 0, sender=operator)
    assert pool.nullifier_spent(nh)


def test_redeem__proof_for_another_root__reverts(funded_pool, deposit, prove, node_id, fresh_signer, operator):
    pool, notes, tree = funded_pool
    nh = notes[0].nullifier_hash
    proof = prove(tree.root, nh, node_id, fresh_signer, 0)
    deposit(_note(99).commitment)
    newer = pool.root()
    with ape.reverts("voucher_pool: invalid proof"):
        pool.redeem(proof, newer, nh, node_id, fresh_signer, 0, sender=operator)


@pytest.mark.parametrize("changed", ["node_id", "signer", "fee", "nullifier_hash"])
def test_redeem__front_run_with_changed_argument__reverts(
    funded_pool, prove, register_node, node_id, fresh_signer, operator, stranger, changed
):
    pool, notes, tree = funded_pool
    nh = notes[0].nullifier_hash
    proof = prove(tree.root, nh, node_id, fresh_signer, FEE)
    args = {"nullifier_hash": nh, "node_id": node_id, "signer": fresh_signer, "fee": FEE}
    args[changed] = {
        "node_id": register_node(),
        "signer": stranger.address,
        "fee": FEE * 5,
        "nullifier_hash": notes[1].nullifier_hash,
    }[changed]
    with ape.reverts("voucher_pool: invalid proof"):
        pool.redeem(
            proof, tree.root, args["nullifier_hash"], args["node_id"], args["signer"], args["fee"], sender=stranger
        )
    # The honest submission still goes through afterwards.
    pool.redeem(proof, tree.root, nh, node_id, fresh_signer, FEE, sender=operator)


@pytest.mark.parametrize("element", ["A", "B", "C"])
def test_redeem__tampered_proof__reverts(funded_pool, prove, node_id, fresh_signer, operator, element):
    pool, notes, tree = funded_pool
    nh = notes[0].nullifier_hash
    proof = list(prove(tree.root, nh, node_id, fresh_signer, 0))
    other = prove(tree.root, nh, node_id, fresh_signer, 0)  # another valid proof: mixing the two breaks both
    span = {"A": slice(0, 2), "B": slice(2, 6), "C": slice(6, 8)}[element]
    proof[span] = other[span]
    with ape.reverts("voucher_pool: invalid proof"):
        pool.redeem(proof, tree.root, nh, node_id, fresh_signer, 0, sender=operator)


def test_redeem__off_curve_point__verifier_reason_bubbles_up(funded_pool, prove, node_id, fresh_signer, operator):
    pool, notes, tree = funded_pool
    nh = notes[0].nullifier_hash
    proof = list(prove(tree.root, nh, node_id, fresh_signer, 0))
    proof[0] += 1
    with ape.reverts("groth16_verifier: point not on curve"):
        pool.redeem(proof, tree.root, nh, node_id, fresh_signer, 0, sender=operator)


def test_redeem__nullifier_hash_not_in_field__reverts(funded_pool, prove, node_id, fresh_signer, operator):
    pool, notes, tree = funded_pool
    nh = notes[0].nullifier_hash
    proof = prove(tree.root, nh, node_id, fresh_signer, 0)
    with ape.reverts("groth16_verifier: public input not in field"):
        pool.redeem(proof, tree.root, nh + R, node_id, fresh_signer, 0, sender=operator)


def test_redeem__fee_not_below_denomination__reverts(funded_pool, prove, node_id, fresh_signer, operator):
    pool, notes, tree = funded_pool
    nh = notes[0].nullifier_hash
    proof = prove(tree.root, nh, node_id, fresh_signer, DENOMINATION)
    with ape.reverts("voucher_pool: fee too high"):
        pool.redeem(proof, tree.root, nh, node_id, fresh_signer, DENOMINATION, sender=operator)


def test_redeem__zero_signer__reverts(funded_pool, prove, node_id, operator):
    pool, notes, tree = funded_pool
    nh = notes[0].nullifier_hash
    zero = "0x" + "00" * 20
    with ape.reverts("voucher_pool: zero signer"):
        pool.redeem(prove(tree.root, nh, node_id, zero, 0), tree.root, nh, node_id, zero, 0, sender=operator)


def test_redeem__inactive_node__reverts(funded_pool, prove, fresh_signer, operator):
    pool, notes, tree = funded_pool
    nh = notes[0].nullifier_hash
    unknown = b"\x42" * 32
    with ape.reverts("payment_channels: node not active"):
        pool.redeem(prove(tree.root, nh, unknown, fresh_signer, 0), tree.root, nh, unknown, fresh_signer, 0, sender=operator)
    assert not pool.nullifier_spent(nh)  # the whole redemption rolled back


def test_redeem__root_older_than_history__reverts(deploy_pool, token, client, prove, node_id, fresh_signer, operator):
    pool = deploy_pool(max_depth=7)
    token.approve(pool, 101 * DENOMINATION, sender=client)
    note = _note(5)
    pool.deposit(note.commitment, DENOMINATION, sender=client)
    first_root = pool.root()
    for i in range(99):
        pool.deposit(_note(300 + i).commitment, DENOMINATION, sender=client)
    assert pool.is_known_root(first_root)  # 99 deposits later: still in the history
    pool.deposit(_note(500).commitment, DENOMINATION, sender=client)
    assert not pool.is_known_root(first_root)  # ROOT_HISTORY_SIZE = 100 later: expired
    nh = note.nullifier_hash
    with ape.reverts("voucher_pool: unknown root"):
        pool.redeem(prove(first_root, nh, node_id, fresh_signer, 0), first_root, nh, node_id, fresh_signer, 0, sender=operator)


def test_pool_with_vyper_poseidon__same_roots(deploy_pool, poseidon_vyper, deposit):
    vyper_pool = deploy_pool(poseidon_=poseidon_vyper)
    tree = LeanIMT()
    for i in range(5):
        commitment = _note(600 + i).commitment
        deposit(commitment, target=vyper_pool)
        assert vyper_pool.root() == tree.insert(commitment)


def test_redeem__signer_has_channel_to_another_node__reverts(
    funded_pool, prove, register_node, node_id, fresh_signer, operator
):
    pool, notes, tree = funded_pool
    first, second = notes[0].nullifier_hash, notes[1].nullifier_hash
    pool.redeem(prove(tree.root, first, node_id, fresh_signer, 0), tree.root, first, node_id, fresh_signer, 0,
                sender=operator)
    other_node = register_node()
    assert bytes(pool.channel_of(other_node, fresh_signer)) == b"\x00" * 32
    with ape.reverts("voucher_pool: signer has a channel to another node"):
        pool.redeem(prove(tree.root, second, other_node, fresh_signer, 0), tree.root, second, other_node,
                    fresh_signer, 0, sender=operator)


def test_redeem__channel_opened_outside_the_pool__topped_up(
    funded_pool, prove, node_id, token, channels, client, operator
):
    pool, notes, tree = funded_pool
    signer = client.address  # the client opened its own (client, client) channel to the node earlier
    token.approve(channels, DENOMINATION, sender=client)
    channel_id = bytes(channels.open_channel(node_id, signer, signer, DENOMINATION, sender=client).return_value)
    assert bytes(pool.channel_of(node_id, signer)) == channel_id
    nh = notes[0].nullifier_hash
    receipt = pool.redeem(prove(tree.root, nh, node_id, signer, FEE), tree.root, nh, node_id, signer, FEE,
                          sender=operator)
    assert bytes(receipt.return_value) == channel_id
    assert channels.channel(channel_id)[2] == 2 * DENOMINATION - FEE
