"""Real Groth16 proofs of the voucher circuit (zk/, small depth) against the generated verifier and the pool.

Uses the zk fixtures of tests/zk/conftest.py (`circuit`, `keys`, `notes`, `tree`, `redemption`,
`destination`, depth 3): development keys and a proof made by zk.groth16's prover.
"""

import random

import ape
import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from py_ecc import optimized_bn128 as bn
from trapdoor_keys import DENOMINATION, find_g2_outside_subgroup, g1, g2

from zk.export import proof_calldata, vk_to_json
from zk.field import R
from zk.groth16 import Proof, prove, verify
from zk.onchain import deploy_verifier
from zk.vyper_verifier import vk_from_snarkjs
from zk.voucher import ext_data_hash, voucher_inputs

FEE = 10**17


@pytest.fixture(scope="module")
def real_verifier(keys, owner):
    """The verifier generated from the development key's snarkjs JSON."""
    return deploy_verifier(vk_from_snarkjs(vk_to_json(keys[1])), owner)


def _calldata_to_proof(data: list[int]) -> Proof:
    return Proof(a=(data[0], data[1]), b=((data[3], data[2]), (data[5], data[4])), c=(data[6], data[7]))


def _contract_verdict(verifier, data, public) -> bool:
    """The contract's answer; a revert (malformed input) counts as a rejection."""
    try:
        return verifier.verify_proof(data, public)
    except ape.exceptions.ContractLogicError:
        return False


def test_real_proof__verifies_on_chain_and_in_python(real_verifier, keys, redemption):
    public, proof = redemption
    assert verify(keys[1], public, proof)
    assert real_verifier.verify_proof(proof_calldata(proof), public) is True


MUTATIONS = ["none", "public", "a_other", "b_other", "c_other", "a_neg", "coord", "public_plus_r", "b_outside_subgroup"]
#: A G2 point on the curve but outside the order-r subgroup (found once).
_OUTSIDE = find_g2_outside_subgroup()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=st.sampled_from(MUTATIONS), seed=st.integers(0, 2**32), index=st.integers(0, 7))
def test_real_proof__mutations__contract_agrees_with_python_verifier(
    real_verifier, keys, redemption, mutation, seed, index
):
    public, proof = redemption
    data, public = list(proof_calldata(proof)), list(public)
    k = random.Random(seed).randrange(1, R)
    if mutation == "public":
        public[index % 3] = (public[index % 3] + k) % R
    elif mutation == "a_other":
        data[0:2] = g1(bn.multiply(bn.G1, k))
    elif mutation == "c_other":
        data[6:8] = g1(bn.multiply(bn.G1, k))
    elif mutation == "b_other":
        (x_re, x_im), (y_re, y_im) = g2(bn.multiply(bn.G2, k))
        data[2:6] = [x_im, x_re, y_im, y_re]
    elif mutation == "a_neg":
        data[1] = bn.field_modulus - data[1]
    elif mutation == "coord":
        data[index] = (data[index] + k) % bn.field_modulus
    elif mutation == "public_plus_r":
        public[index % 3] += R
    elif mutation == "b_outside_subgroup":
        (x_re, x_im), (y_re, y_im) = _OUTSIDE
        data[2:6] = [x_im, x_re, y_im, y_re]
    python = verify(keys[1], public, _calldata_to_proof(data))
    assert python == (mutation == "none")
    assert _contract_verdict(real_verifier, data, public) is python


def test_pool__deposit_real_notes_then_redeem_with_real_proof(
    deploy_pool, real_verifier, token, client, operator, node_id, circuit, keys, notes, tree, depth
):
    pool = deploy_pool(verifier_=real_verifier, max_depth=depth)
    token.approve(pool, len(notes) * DENOMINATION, sender=client)
    for note in notes:
        pool.deposit(note.commitment, DENOMINATION, sender=client)
    assert pool.root() == tree.root
    signer = Account.create().address
    ext = ext_data_hash(bytes(node_id), signer, FEE)
    witness = circuit.witness(voucher_inputs(notes[2], tree.proof(2), ext, depth))
    public = circuit.public_values(witness)
    assert public == [tree.root, notes[2].nullifier_hash, ext]
    data = proof_calldata(prove(keys[0], circuit, witness))

    with ape.reverts("voucher_pool: invalid proof"):  # the proof is bound to the signer
        pool.redeem(data, tree.root, notes[2].nullifier_hash, node_id, client.address, FEE, sender=operator)
    receipt = pool.redeem(data, tree.root, notes[2].nullifier_hash, node_id, signer, FEE, sender=operator)
    assert pool.nullifier_spent(notes[2].nullifier_hash)
    channel_id = bytes(receipt.return_value)
    assert channel_id == bytes(pool.channel_id_of(notes[2].nullifier_hash))
    assert bytes(pool.channel(channel_id)[0]) == bytes(pool.terms_hash(node_id, signer, DENOMINATION - FEE))
    assert pool.relayer_balance(operator) == FEE
    with ape.reverts("voucher_pool: nullifier spent"):
        pool.redeem(data, tree.root, notes[2].nullifier_hash, node_id, signer, FEE, sender=operator)


def test_real_proof__b_outside_subgroup__both_verifiers_reject(real_verifier, keys, redemption):
    public, proof = redemption
    data = list(proof_calldata(proof))
    (x_re, x_im), (y_re, y_im) = _OUTSIDE
    data[2:6] = [x_im, x_re, y_im, y_re]
    assert not verify(keys[1], public, _calldata_to_proof(data))
    with ape.reverts("groth16_verifier: pairing input rejected"):
        real_verifier.verify_proof(data, public)
