"""Fixtures for the zk contracts: Poseidon on chain, the Groth16 verifier, the voucher pool.

The role and contract fixtures (`owner`, `operator`, `client`, `token`, `registry`, `channels`,
`register_node`, `node_id`, ...) come from tests/contract_fixtures.py.

Helpers (trapdoor keys, proofs from scalars, a py_ecc reference check) are in trapdoor_keys.py.
"""

import pytest
from trapdoor_keys import DENOMINATION, TEST_DEPTH, Trapdoor

from zk.onchain import deploy_poseidon_bytecode, deploy_verifier


@pytest.fixture(scope="session")
def trapdoor():
    """The trapdoor key every verifier and pool test here uses."""
    return Trapdoor.make(seed=5)


@pytest.fixture(scope="session")
def verifier(trapdoor, owner):
    """The generated Groth16 verifier for the trapdoor key, compiled and deployed."""
    return deploy_verifier(trapdoor.vk, owner)


@pytest.fixture(scope="session")
def poseidon_bytecode(owner):
    """The generated Poseidon(2) bytecode contract (the one the pool uses)."""
    return deploy_poseidon_bytecode(owner)


@pytest.fixture(scope="session")
def poseidon_vyper(project, owner):
    """contracts/poseidon_t3.vy."""
    return owner.deploy(project.poseidon_t3)


@pytest.fixture
def deploy_pool(project, owner, token, channels, verifier, poseidon_bytecode):
    """Factory: a voucher pool over the real token and channels (defaults: trapdoor verifier)."""

    def deploy(denomination=DENOMINATION, max_depth=TEST_DEPTH, verifier_=None, poseidon_=None):
        return owner.deploy(
            project.voucher_pool,
            channels,
            verifier_ or verifier,
            poseidon_ or poseidon_bytecode,
            denomination,
            max_depth,
        )

    return deploy


@pytest.fixture
def pool(deploy_pool):
    """A pool of DENOMINATION with TEST_DEPTH."""
    return deploy_pool()


@pytest.fixture
def deposit(pool, token, client):
    """Factory: deposit `commitment` from `sender` (default client); returns the receipt."""

    def _deposit(commitment, sender=None, amount=DENOMINATION, target=None):
        target = target or pool
        sender = sender or client
        token.approve(target, amount, sender=sender)
        return target.deposit(commitment, amount, sender=sender)

    return _deposit
