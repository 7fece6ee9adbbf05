"""zk.groth16.verify (py-ecc) and the generated Vyper verifier agree on real proofs, valid and not.

The contract reverts on malformed input (coordinates >= q, points off the curve, inputs >= r); a revert
counts as "rejected", as it does for the pool.
"""

import random

import pytest
from ape.exceptions import ContractLogicError

from zk.curve import G1, G2
from zk.export import proof_calldata
from zk.field import Q, R
from zk.groth16 import Proof, verify


@pytest.fixture(scope="module")
def onchain_verifier(keys, accounts):
    from zk.onchain import deploy_verifier

    return deploy_verifier(keys[1], accounts[0])


def _mutations(public, proof):
    a, b, c = proof.a, proof.b, proof.c
    yield "valid", public, proof
    yield "a+g", public, Proof(G1.add(a, G1.generator), b, c)
    yield "b+g", public, Proof(a, G2.add(b, G2.generator), c)
    yield "c+g", public, Proof(a, b, G1.add(c, G1.generator))
    yield "-a", public, Proof(G1.neg(a), b, c)
    yield "swap a,c", public, Proof(c, b, a)
    yield "root+1", [(public[0] + 1) % R] + public[1:], proof
    yield "inputs swapped", [public[1], public[0], public[2]], proof
    yield "ext+r", public[:2] + [public[2] + R], proof
    yield "a.x+q", public, Proof((a[0] + Q, a[1]), b, c)
    yield "c off curve", public, Proof(a, b, (c[0], (c[1] + 1) % Q))
    yield "random ext", public[:2] + [random.randrange(R)], proof


def test_contract_and_python__agree_on_valid_and_invalid_proofs(keys, redemption, onchain_verifier):
    public, proof = redemption
    seen = []
    for name, pub, pr in _mutations(public, proof):
        ours = verify(keys[1], pub, pr)
        try:
            theirs = bool(onchain_verifier.verify_proof(proof_calldata(pr), pub))
        except (ContractLogicError, OverflowError, ValueError):
            theirs = False
        assert ours == theirs, name
        seen.append(ours)
    assert seen[0] and not any(seen[1:])
