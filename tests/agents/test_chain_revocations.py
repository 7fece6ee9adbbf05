"""Revocations read from the chain: NodeRevoked events with their transaction's guardian signatures,
and certificates judged by the chain's guardian set (as revoke() judges them)."""

import time

import pytest
from eth_account import Account

from agents.chain import eip712
from agents.chain.bindings import WarrenContracts
from agents.chain.deploy import DeployParameters, deploy_all
from agents.chain.revocations import ChainRevocationAuthority, ChainRevocationPort, RevocationFollower
from agents.overlay.records import RecordValidator, InMemoryDirectory
from agents.overlay.revocation import RevocationList, certificate

from revocation_helpers import register_and_revoke


@pytest.fixture(scope="module")
def warren(project, chain, owner, guardians):
    """A deployment whose revocations need 2 of the 3 guardians."""
    params = DeployParameters(guardians=[g.address for g in guardians], revocation_quorum=2)
    deployment = deploy_all(project, owner, chain, params, log=lambda _: None)
    return WarrenContracts.at(project, deployment, chain.chain_id)


@pytest.fixture
def revoked_node(owner, operator, guardians, warren):
    """Register a node, revoke it with 2 guardian signatures; returns (node id bytes, signatures)."""
    return register_and_revoke(warren, owner, operator, guardians, bytes(range(7, 39)), evidence=b"\x0e" * 32,
                               nonce=3)


def test_follower__revoke_tx__facts_with_the_transactions_signatures(chain, warren, revoked_node):
    node_id, signatures = revoked_node
    rl = RevocationList()
    follower = RevocationFollower(ChainRevocationPort(warren), rl)
    fresh = follower.step(time.time())
    facts = [f for f in fresh if f.node_id == int.from_bytes(node_id, "big")]
    assert len(facts) == 1
    f = facts[0]
    assert (f.evidence_hash, f.nonce, f.signatures, f.source) == (b"\x0e" * 32, 3, tuple(signatures), "chain")
    assert len(f.tx_hash) == 32 and f.block == chain.blocks.head.number
    assert follower.step(time.time()) == []  # read once


def test_authority__certificate_from_the_tx__accepted_by_chain_guardians(warren, revoked_node):
    node_id, signatures = revoked_node
    follower = RevocationFollower(ChainRevocationPort(warren), RevocationList())
    facts = next(f for f in follower.step(time.time()) if f.node_id == int.from_bytes(node_id, "big"))
    validator = RecordValidator(InMemoryDirectory(), ChainRevocationAuthority(warren))
    now = time.time()
    assert validator.validate(certificate(facts, now), now).node_id == facts.node_id


def test_authority__non_guardian_or_short_quorum__refused(warren, guardians):
    authority = ChainRevocationAuthority(warren)
    node_id = b"\x05" * 32
    msg = eip712.Revocation(node_id, b"\x01" * 32, 1)
    outsider = warren.sign_revocation(msg, Account.create().key)
    one = warren.sign_revocation(msg, guardians[0].private_key)
    two = warren.sign_revocation(msg, guardians[1].private_key)
    n = int.from_bytes(node_id, "big")
    assert not authority.check(n, b"\x01" * 32, 1, [one, outsider])
    assert not authority.check(n, b"\x01" * 32, 1, [one, one])
    assert authority.check(n, b"\x01" * 32, 1, [one, two])
    assert not authority.check(n, b"\x01" * 32, 2, [one, two])  # signed another nonce
