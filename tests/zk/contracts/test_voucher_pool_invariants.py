"""Property test of voucher_pool: random deposits and redemptions keep the pool's books and tree right.

Deployed once per module; every hypothesis example runs inside `chain.isolate()`.
Invariants after every step: the root equals zk.merkle's LeanIMT over the same commitments, the
pool holds exactly denomination * (deposits - redemptions), each note redeems at most once, and
every redemption's tokens land in payment_channels (minus the fee) and with the relayer (the fee).
"""

import os
import random

import ape
import pytest
from eth_account import Account
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trapdoor_keys import DENOMINATION

from zk.merkle import LeanIMT
from zk.voucher import Note, ext_data_hash

MIN_NODE_STAKE = 100 * 10**18


@pytest.fixture(scope="module")
def setup(project, owner, operator, token, registry, channels, verifier, poseidon_bytecode):
    """(pool, node_id) deployed once for the module."""
    pool = owner.deploy(project.voucher_pool, channels, verifier, poseidon_bytecode, DENOMINATION, 4)
    wg_key = os.urandom(32)
    token.approve(registry, MIN_NODE_STAKE, sender=operator)
    registry.register_node(wg_key, "DE", 10**15, MIN_NODE_STAKE, sender=operator)
    return pool, keccak(wg_key)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), st.integers(0, 2**64)),
        st.tuples(st.just("redeem"), st.integers(0, 15), st.sampled_from([0, 1, 10**17])),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=steps)
def test_pool__random_deposits_and_redemptions__books_and_tree_consistent(
    chain, setup, trapdoor, token, channels, client, stranger, ops
):
    pool, node_id = setup
    with chain.isolate():
        token.approve(pool, 2**256 - 1, sender=client)
        tree, notes, spent = LeanIMT(), [], set()
        pool_before, channels_before, relayer_before = (
            token.balanceOf(pool), token.balanceOf(channels), token.balanceOf(stranger)
        )
        fees = 0
        for op in ops:
            if op[0] == "deposit":
                rng = random.Random(op[1])
                note = Note(rng.getrandbits(248), rng.getrandbits(248))
                if note.commitment in tree.leaves:
                    continue
                pool.deposit(note.commitment, DENOMINATION, sender=client)
                tree.insert(note.commitment)
                notes.append(note)
            elif notes:
                note = notes[op[1] % len(notes)]
                fee = op[2]
                signer = Account.create().address
                public = [tree.root, note.nullifier_hash, ext_data_hash(bytes(node_id), signer, fee)]
                proof = trapdoor.prove(public)
                if note.nullifier_hash in spent:
                    with ape.reverts("voucher_pool: nullifier spent"):
                        pool.redeem(proof, tree.root, note.nullifier_hash, node_id, signer, fee, sender=stranger)
                    continue
                pool.redeem(proof, tree.root, note.nullifier_hash, node_id, signer, fee, sender=stranger)
                spent.add(note.nullifier_hash)
                fees += fee
            assert pool.root() == tree.root and pool.size() == tree.size
        redeemed = len(spent)
        assert token.balanceOf(pool) - pool_before == DENOMINATION * (len(notes) - redeemed)
        assert token.balanceOf(channels) - channels_before == DENOMINATION * redeemed - fees
        assert token.balanceOf(stranger) - relayer_before == fees
        assert all(pool.nullifier_spent(n.nullifier_hash) == (n.nullifier_hash in spent) for n in notes)
