"""The R1CS builder, the gadgets against their plain-Python twins, and the LeanIMT."""

import random

import pytest
from hypothesis import given, settings, strategies as st

from zk.field import R, FieldError, batch_inverse, root_of_unity
from zk.gadgets import lean_imt_root, poseidon_gadget
from zk.merkle import LeanIMT, hash_pair
from zk.ntt import coset_intt, coset_ntt, intt, ntt
from zk.poseidon import poseidon
from zk.r1cs import LC, Circuit, CircuitError, UnsatisfiedError


def test_circuit__cubic__witness_satisfies_and_wrong_input_fails():
    c = Circuit()
    x = c.public("x")
    y = c.private("y")
    y3 = c.mul(c.mul(y, y), y)
    c.assert_equal(y3 + y + 5, x)  # y^3 + y + 5 == x
    w = c.witness({"x": 35, "y": 3})
    assert w[:2] == [1, 35] and c.public_values(w) == [35]
    with pytest.raises(UnsatisfiedError):
        c.witness({"x": 36, "y": 3})


def test_circuit__misuse__raises():
    c = Circuit()
    c.private("a")
    with pytest.raises(CircuitError):
        c.public("late")  # public inputs must come first
    with pytest.raises(CircuitError):
        c.witness({})
    with pytest.raises(CircuitError):
        c.witness({"a": R})
    with pytest.raises(CircuitError):
        LC.of(1) * LC({1: 1})


def test_lc__linear_ops_are_free_and_cancel():
    c = Circuit()
    a = c.private("a")
    assert (a + 3 - a).is_const() and (a - a).terms == {}
    assert c.mul(a, 5).terms == {1: 5} and not c.constraints


@pytest.mark.parametrize("n", [1, 2, 3])
def test_poseidon_gadget__equals_poseidon(n):
    c = Circuit()
    ins = [c.private(f"x{i}") for i in range(n)]
    out = poseidon_gadget(c, ins)
    values = [random.randrange(R) for _ in range(n)]
    w = c.witness({f"x{i}": v for i, v in enumerate(values)})
    assert out.eval(w) == poseidon(values)


def test_poseidon_gadget__t3__costs_240_constraints():
    c = Circuit()
    poseidon_gadget(c, [c.private("a"), c.private("b")])
    assert len(c.constraints) == 240  # circomlib's Poseidon(2) has 240 too


def test_leanimt__small_trees__match_hand_computed_roots():
    assert LeanIMT().root == 0
    assert LeanIMT([7]).root == 7
    assert LeanIMT([1, 2]).root == hash_pair(1, 2)
    assert LeanIMT([1, 2, 3]).root == hash_pair(hash_pair(1, 2), 3)
    assert LeanIMT([1, 2, 3, 4, 5]).root == hash_pair(hash_pair(hash_pair(1, 2), hash_pair(3, 4)), 5)


@pytest.mark.parametrize("bad", [0, R, -1])
def test_leanimt__zero_or_out_of_field_leaf__raises(bad):
    with pytest.raises(FieldError):
        LeanIMT().insert(bad)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, R - 1), min_size=1, max_size=13, unique=True), st.data())
def test_leanimt__every_proof_recomputes_the_root(leaves, data):
    tree = LeanIMT(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    proof = tree.proof(i)
    assert proof.leaf == leaves[i] and proof.compute_root() == tree.root
    assert len(proof.siblings) <= tree.depth


@pytest.mark.parametrize("size,index", [(1, 0), (2, 1), (5, 4), (6, 2), (8, 7)])
def test_lean_imt_gadget__equals_tree_root(size, index):
    max_depth = 3
    c = Circuit()
    leaf, depth = c.private("leaf"), c.private("depth")
    bits = [c.private(f"b{i}") for i in range(max_depth)]
    sibs = [c.private(f"s{i}") for i in range(max_depth)]
    root = lean_imt_root(c, leaf, depth, bits, sibs)
    tree = LeanIMT([random.randrange(1, R) for _ in range(size)])
    p = tree.proof(index)
    pad = max_depth - len(p.siblings)
    inputs = {"leaf": p.leaf, "depth": len(p.siblings)}
    inputs |= {f"b{i}": b for i, b in enumerate(list(p.path_bits) + [0] * pad)}
    inputs |= {f"s{i}": s for i, s in enumerate(list(p.siblings) + [0] * pad)}
    assert root.eval(c.witness(inputs)) == tree.root
    inputs["depth"] = max_depth + 1  # beyond the circuit: root 0, which no pool accepts
    assert root.eval(c.witness(inputs)) == 0


def test_ntt__roundtrips_and_matches_naive_evaluation():
    n = 16
    coeffs = [random.randrange(R) for _ in range(n)]
    w = root_of_unity(n)
    assert ntt(coeffs)[3] == sum(c * pow(w, 3 * j, R) for j, c in enumerate(coeffs)) % R
    assert intt(ntt(coeffs)) == coeffs and coset_intt(coset_ntt(coeffs)) == coeffs


def test_batch_inverse__matches_pow():
    vals = [random.randrange(1, R) for _ in range(10)]
    assert batch_inverse(vals) == [pow(v, -1, R) for v in vals]
