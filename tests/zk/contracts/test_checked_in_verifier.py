"""contracts/groth16_verifier.vy: generated from zk/vk/voucher-depth20.json, compiled by ape, and sane.

Its proving key (4.5 MB) is not in the repository but is remade from a public seed by
`python -m zk.keys --depth 20 --seed "warren development key v1"` (a test below checks that the
checked-in key is exactly that one). The template behind it is exercised with valid proofs by
test_groth16_verifier.py (trapdoor key) and test_real_proofs.py (the prover's development key).
"""

from pathlib import Path

import ape
import pytest
from trapdoor_keys import P, Trapdoor

from zk.field import R
from zk.groth16 import setup_dev
from zk.voucher import voucher_circuit
from zk.vyper_verifier import CHECKED_IN_CIRCUIT, CHECKED_IN_SEED, CHECKED_IN_VK, render_verifier, verifier_key

PUBLIC = [1, 2, 3]


@pytest.fixture(scope="module")
def checked_in(project, owner):
    return owner.deploy(project.groth16_verifier)


def test_source__equals_generator_output():
    source = (Path(__file__).resolve().parents[3] / "contracts" / "groth16_verifier.vy").read_text()
    assert source == render_verifier(CHECKED_IN_VK, circuit=CHECKED_IN_CIRCUIT)


def test_checked_in_key__remade_from_its_public_seed():
    _, vk = setup_dev(voucher_circuit(20), CHECKED_IN_SEED.encode())
    assert verifier_key(vk) == verifier_key(CHECKED_IN_VK)


def test_verify__proof_for_another_key__false(checked_in):
    proof = Trapdoor.make(seed=20).prove(PUBLIC)
    assert checked_in.verify_proof(proof, PUBLIC) is False


def test_verify__malformed__reverts(checked_in):
    proof = Trapdoor.make(seed=20).prove(PUBLIC)
    with ape.reverts("groth16_verifier: public input not in field"):
        checked_in.verify_proof(proof, [1, 2, R])
    with ape.reverts("groth16_verifier: coordinate not in field"):
        checked_in.verify_proof([P, *proof[1:]], PUBLIC)
    with ape.reverts("groth16_verifier: point not on curve"):
        checked_in.verify_proof([1, 1, *proof[2:]], PUBLIC)


def test_deploy_voucher_pool__defaults_to_checked_in_verifier(project, owner, token, channels):
    from trapdoor_keys import DENOMINATION

    from zk.onchain import deploy_voucher_pool

    deployed = deploy_voucher_pool(project, owner, channels, DENOMINATION, 20)
    assert deployed.pool.verifier() == deployed.verifier.address
    assert deployed.pool.poseidon() == deployed.poseidon.address
    assert deployed.pool.max_depth() == 20 and deployed.pool.denomination() == DENOMINATION
    assert deployed.poseidon.hash(1, 2) == 7853200120776062878684798364095072458815029376092732009249414926327459813530
    assert deployed.verifier.verify_proof(Trapdoor.make(seed=20).prove(PUBLIC), PUBLIC) is False
