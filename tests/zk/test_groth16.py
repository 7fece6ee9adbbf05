"""Groth16 on the voucher circuit: valid proofs verify, every tampering is rejected."""

import dataclasses
import random

import pytest
from gmpy2 import invert, mpz

from zk.curve import G1, G2, G2_GEN, in_subgroup_g2, on_curve_g2
from zk.field import Q, R
from zk.groth16 import Proof, ProofError, Prover, prove, setup_dev, verify
from zk.merkle import LeanIMT
from zk.voucher import Note, ext_data_hash, voucher_circuit, voucher_inputs
from zk.r1cs import UnsatisfiedError

# Same destination and depth as conftest.py's fixtures (conftest modules are not importable).
NODE_ID = bytes.fromhex("11" * 32)
SIGNER = "0x" + "22" * 20
FEE = 10**17
TEST_DEPTH = 3


def test_constants__match_fixtures(destination, depth):
    assert destination == (NODE_ID, SIGNER, FEE) and depth == TEST_DEPTH


def test_verify__valid_redemption__accepted(keys, redemption, tree, notes):
    public, proof = redemption
    assert public == [tree.root, notes[4].nullifier_hash, ext_data_hash(NODE_ID, SIGNER, FEE)]
    assert verify(keys[1], public, proof)


def test_verify__fresh_blinding__second_proof_differs_and_verifies(circuit, keys, notes, tree):
    ext = ext_data_hash(NODE_ID, SIGNER, FEE)
    w = circuit.witness(voucher_inputs(notes[0], tree.proof(0), ext, TEST_DEPTH))
    p1, p2 = prove(keys[0], circuit, w), prove(keys[0], circuit, w)
    assert p1 != p2 and verify(keys[1], circuit.public_values(w), p2)


@pytest.mark.parametrize("element", ["a", "b", "c"])
def test_verify__tampered_proof_element__rejected(keys, redemption, element):
    public, proof = redemption
    group = G2 if element == "b" else G1
    point = getattr(proof, element)
    other = group.add(point, group.generator)  # still a valid group element, just the wrong one
    assert not verify(keys[1], public, dataclasses.replace(proof, **{element: other}))


def test_verify__swapped_a_and_c__rejected(keys, redemption):
    public, proof = redemption
    assert not verify(keys[1], public, Proof(proof.c, proof.b, proof.a))


@pytest.mark.parametrize("position", [0, 1, 2])
def test_verify__changed_public_input__rejected(keys, redemption, position):
    public, proof = redemption
    changed = list(public)
    changed[position] = (changed[position] + 1) % R
    assert not verify(keys[1], changed, proof)


@pytest.mark.parametrize("node_id,signer,fee", [
    (bytes.fromhex("12" * 32), SIGNER, FEE),   # re-pointed to another node
    (NODE_ID, "0x" + "33" * 20, FEE),           # another channel signer
    (NODE_ID, SIGNER, FEE + 1),                 # a front-runner raising the fee
])
def test_verify__changed_node_signer_or_fee_after_proving__rejected(keys, redemption, node_id, signer, fee):
    public, proof = redemption
    assert not verify(keys[1], public[:2] + [ext_data_hash(node_id, signer, fee)], proof)


def test_verify__proof_for_another_root__rejected(keys, redemption, notes):
    public, proof = redemption
    other_root = LeanIMT([n.commitment for n in notes[:5]]).root  # an older root of the same pool
    assert other_root != public[0]
    assert not verify(keys[1], [other_root] + public[1:], proof)


@pytest.mark.parametrize("position", [0, 1, 2])
def test_verify__public_input_at_or_above_modulus__rejected(keys, redemption, position):
    public, proof = redemption
    aliased = list(public)
    aliased[position] += R  # same value mod R: only the range check stops it
    assert not verify(keys[1], aliased, proof)
    assert not verify(keys[1], public[:position] + [R] + public[position + 1:], proof)


def test_verify__wrong_input_count__rejected(keys, redemption):
    public, proof = redemption
    assert not verify(keys[1], public[:2], proof)
    assert not verify(keys[1], public + [0], proof)


def test_verify__coordinate_at_or_above_base_modulus__rejected(keys, redemption):
    public, proof = redemption
    a = proof.a
    assert not verify(keys[1], public, dataclasses.replace(proof, a=(a[0] + Q, a[1])))
    assert not verify(keys[1], public, dataclasses.replace(proof, c=(proof.c[0], proof.c[1] + Q)))
    b = proof.b
    assert not verify(keys[1], public, dataclasses.replace(proof, b=((b[0][0] + Q, b[0][1]), b[1])))


def test_verify__point_off_curve_or_at_infinity__rejected(keys, redemption):
    public, proof = redemption
    assert not verify(keys[1], public, dataclasses.replace(proof, a=(proof.a[0], proof.a[1] + 1)))
    assert not verify(keys[1], public, dataclasses.replace(proof, c=None))
    b = proof.b
    assert not verify(keys[1], public, dataclasses.replace(proof, b=(b[0], (b[1][0], b[1][1] + 1))))


def _fq2_sqrt(a):
    """A square root in F_q2 = F_q[u]/(u^2+1) (q = 3 mod 4), or None."""
    q = mpz(Q)
    a0, a1 = mpz(a[0]), mpz(a[1])
    norm = (a0 * a0 + a1 * a1) % q
    alpha = pow(norm, (q + 1) // 4, q)
    if alpha * alpha % q != norm:
        return None
    for delta in ((a0 + alpha) * invert(2, q) % q, (a0 - alpha) * invert(2, q) % q):
        x0 = pow(delta, (q + 1) // 4, q)
        if x0 * x0 % q == delta and x0:
            x1 = a1 * invert(2 * x0, q) % q
            return (x0, x1)
    return None


def _twist_point_outside_subgroup():
    b2 = (mpz(19485874751759354771024239261021720505790618469301721065564631296452457478373),
          mpz(266929791119991161246907387137283842545076965332900288569378510910307636690))
    q = mpz(Q)
    rng = random.Random(5)
    while True:
        x = (mpz(rng.randrange(Q)), mpz(rng.randrange(Q)))
        x2 = ((x[0] * x[0] - x[1] * x[1]) % q, 2 * x[0] * x[1] % q)
        x3 = ((x2[0] * x[0] - x2[1] * x[1]) % q, (x2[0] * x[1] + x2[1] * x[0]) % q)
        y = _fq2_sqrt(((x3[0] + b2[0]) % q, (x3[1] + b2[1]) % q))
        if y is not None:
            p = (x, y)
            if on_curve_g2(p) and not in_subgroup_g2(p):
                return p


def test_verify__g2_point_on_twist_but_outside_subgroup__rejected(keys, redemption):
    public, proof = redemption
    bad = _twist_point_outside_subgroup()
    assert on_curve_g2(bad) and not in_subgroup_g2(bad) and in_subgroup_g2(G2_GEN)
    assert not verify(keys[1], public, dataclasses.replace(proof, b=bad))


def test_prove__note_not_in_tree__cannot_make_a_witness(circuit, tree):
    stranger = Note.random()
    fake = LeanIMT([stranger.commitment, 5]).proof(0)  # a path to a root the pool never had
    inputs = voucher_inputs(stranger, fake, 1, TEST_DEPTH)
    inputs["root"] = tree.root  # claim the pool's real root
    with pytest.raises(UnsatisfiedError):
        circuit.witness(inputs)


def test_prove__unsatisfying_witness_forced__raises(circuit, keys, tree, notes):
    inputs = voucher_inputs(notes[1], tree.proof(1), 1, TEST_DEPTH)
    inputs["root"] = (tree.root + 1) % R  # an unknown root
    w = circuit.witness(inputs, check=False)
    with pytest.raises(ProofError):
        prove(keys[0], circuit, w)


def test_prove__same_note__same_nullifier_hash(circuit, keys, notes, tree):
    """Two redemptions of one note expose the same nullifier hash, which the pool refuses twice."""
    pubs = [circuit.public_values(circuit.witness(voucher_inputs(notes[2], tree.proof(2), e, TEST_DEPTH)))
            for e in (1, 2)]
    assert pubs[0][1] == pubs[1][1] == notes[2].nullifier_hash


def test_prover__precomputed_tables_and_workers__verify():
    """The fast path (shifted Pippenger tables, two worker processes) on a depth-1 voucher circuit."""
    circuit = voucher_circuit(1)
    pk, vk = setup_dev(circuit)
    notes = [Note.random(), Note.random()]
    tree = LeanIMT([n.commitment for n in notes])
    w = circuit.witness(voucher_inputs(notes[1], tree.proof(1), ext_data_hash(NODE_ID, SIGNER, 0), 1))
    with Prover(pk, circuit, workers=2) as prover:
        proof = prover.prove(w)
        assert 2 <= len(prover.last_cpu) <= 3  # main process + one or both workers
    assert verify(vk, circuit.public_values(w), proof)
    assert not verify(vk, circuit.public_values(w)[:2] + [ext_data_hash(NODE_ID, SIGNER, 1)], proof)


def test_witness__internal_node_opened_as_a_note__unsatisfiable(circuit, tree, notes):
    """With a LeanIMT a proof may start at any level: an internal node H(left, right) must not pass
    for a note (nullifier = left, secret = right). The leaf is H(Poseidon(nullifier), secret), so it
    does not: the root the circuit reaches is not the pool's."""
    from zk.merkle import MerkleProof, hash_pair

    left, right = notes[0].commitment, notes[1].commitment
    node = hash_pair(left, right)
    full = tree.proof(0)  # level-0 path of leaf 0; its first sibling is leaf 1
    from_level_1 = MerkleProof(tree.root, node, 0, full.siblings[1:], full.path_bits[1:])
    assert from_level_1.compute_root() == tree.root  # the path itself is genuine
    forged = Note(left, right)
    inputs = voucher_inputs(forged, dataclasses.replace(from_level_1, leaf=forged.commitment), 1, TEST_DEPTH)
    with pytest.raises(UnsatisfiedError):
        circuit.witness(inputs)
