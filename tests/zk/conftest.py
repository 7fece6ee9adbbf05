"""Shared zk fixtures: a small voucher circuit, its development keys, a tree of notes, one proof.

Depth 3 (8 notes) keeps the whole zk suite quick; the benchmark uses depth 20. Keys and the proof
are built once per session: they are read-only inputs to every test.
"""

import pytest

from zk.groth16 import prove, setup_dev
from zk.merkle import LeanIMT
from zk.voucher import Note, ext_data_hash, voucher_circuit, voucher_inputs

#: Circuit depth used by the tests (the contracts side's TEST_DEPTH is 3 as well).
TEST_DEPTH = 3
NODE_ID = bytes.fromhex("11" * 32)
SIGNER = "0x" + "22" * 20
FEE = 10**17


@pytest.fixture(scope="session")
def depth():
    return TEST_DEPTH


@pytest.fixture(scope="session")
def destination():
    """(node_id, signer, relayer_fee) the test redemption pays."""
    return NODE_ID, SIGNER, FEE


@pytest.fixture(scope="session")
def circuit():
    return voucher_circuit(TEST_DEPTH)


@pytest.fixture(scope="session")
def keys(circuit):
    return setup_dev(circuit)


@pytest.fixture(scope="session")
def notes():
    return [Note.random() for _ in range(6)]


@pytest.fixture(scope="session")
def tree(notes):
    return LeanIMT([n.commitment for n in notes])


@pytest.fixture(scope="session")
def redemption(circuit, keys, notes, tree):
    """(public inputs, proof) redeeming note 4 to NODE_ID / SIGNER / FEE."""
    ext = ext_data_hash(NODE_ID, SIGNER, FEE)
    witness = circuit.witness(voucher_inputs(notes[4], tree.proof(4), ext, TEST_DEPTH))
    return circuit.public_values(witness), prove(keys[0], circuit, witness)
