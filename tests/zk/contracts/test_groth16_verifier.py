"""The generated Groth16 verifier on the real chain, against a trapdoor key (see conftest.py)."""

import random

import ape
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from py_ecc import optimized_bn128 as bn

from trapdoor_keys import P, Trapdoor, find_g2_outside_subgroup, g1, g2, python_verify
from zk.field import R

PUBLIC = [11, 22, 33]


@pytest.fixture(scope="module")
def valid(trapdoor):
    """A valid proof for PUBLIC."""
    return trapdoor.prove(PUBLIC, random.Random(1))


@pytest.fixture(scope="module")
def g2_outside_subgroup():
    """A point on the twist curve that is not in the order-r subgroup."""
    return find_g2_outside_subgroup()


def test_verify__valid_proof__true(verifier, trapdoor, valid):
    assert verifier.verify_proof(valid, PUBLIC) is True
    assert python_verify(trapdoor.vk, valid, PUBLIC)


@pytest.mark.parametrize("index", range(3))
def test_verify__other_public_input__false(verifier, valid, index):
    changed = list(PUBLIC)
    changed[index] += 1
    assert verifier.verify_proof(valid, changed) is False


@pytest.mark.parametrize("element", ["A", "B", "C"])
def test_verify__element_replaced_by_another_group_point__false(verifier, valid, element):
    proof = list(valid)
    if element == "A":
        proof[0:2] = g1(bn.multiply(bn.G1, 12345))
    elif element == "C":
        proof[6:8] = g1(bn.multiply(bn.G1, 12345))
    else:
        (x_re, x_im), (y_re, y_im) = g2(bn.multiply(bn.G2, 12345))
        proof[2:6] = [x_im, x_re, y_im, y_re]
    assert verifier.verify_proof(proof, PUBLIC) is False


@pytest.mark.parametrize("index", range(8))
def test_verify__tampered_coordinate__reverts(verifier, trapdoor, valid, index):
    proof = list(valid)
    proof[index] = (proof[index] + 1) % P
    reason = "groth16_verifier: pairing input rejected" if 2 <= index <= 5 else "groth16_verifier: point not on curve"
    with ape.reverts(reason):
        verifier.verify_proof(proof, PUBLIC)
    assert not python_verify(trapdoor.vk, proof, PUBLIC)


@pytest.mark.parametrize("index", range(3))
def test_verify__public_input_plus_r__reverts(verifier, valid, index):
    aliased = list(PUBLIC)
    aliased[index] += R  # same value mod r: accepting it would make the proof malleable
    with ape.reverts("groth16_verifier: public input not in field"):
        verifier.verify_proof(valid, aliased)


@pytest.mark.parametrize("index", range(8))
def test_verify__coordinate_plus_p__reverts(verifier, valid, index):
    proof = list(valid)
    proof[index] += P  # an alias of the same point
    with ape.reverts("groth16_verifier: coordinate not in field"):
        verifier.verify_proof(proof, PUBLIC)


def test_verify__g2_point_outside_subgroup__reverts(verifier, trapdoor, valid, g2_outside_subgroup):
    (x_re, x_im), (y_re, y_im) = g2_outside_subgroup
    proof = list(valid)
    proof[2:6] = [x_im, x_re, y_im, y_re]
    with ape.reverts("groth16_verifier: pairing input rejected"):
        verifier.verify_proof(proof, PUBLIC)
    assert not python_verify(trapdoor.vk, proof, PUBLIC)


def test_verify__points_at_infinity__false(verifier):
    assert verifier.verify_proof([0] * 8, PUBLIC) is False


MUTATIONS = ["none", "input", "swap_ac", "negate_a", "scale_c", "other_key"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32),
    inputs=st.lists(st.integers(0, R - 1), min_size=3, max_size=3),
    mutation=st.sampled_from(MUTATIONS),
)
def test_verify__random_proofs__contract_agrees_with_python(verifier, trapdoor, seed, inputs, mutation):
    rng = random.Random(seed)
    proof = trapdoor.prove(inputs, rng)
    if mutation == "input":
        inputs = [(inputs[0] + 1) % R, *inputs[1:]]
    elif mutation == "swap_ac":
        proof = proof[6:8] + proof[2:6] + proof[0:2]
    elif mutation == "negate_a":
        proof = [proof[0], (P - proof[1]) % P, *proof[2:]]
    elif mutation == "scale_c":
        c = (bn.FQ(proof[6]), bn.FQ(proof[7]), bn.FQ.one())
        proof = proof[:6] + list(g1(bn.multiply(c, 2)))
    elif mutation == "other_key":
        proof = Trapdoor.make(seed=seed).prove(inputs, rng)
    expected = python_verify(trapdoor.vk, proof, inputs)
    assert expected == (mutation == "none")
    assert verifier.verify_proof(proof, inputs) is expected
