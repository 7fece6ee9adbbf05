"""Overlay records are judged against node_registry: its operator signs, its revocations refuse."""

import pytest
from eth_account import Account

from agents.chain import eip712
from agents.chain.bindings import WarrenContracts, node_id_of
from agents.chain.deploy import TOKEN, DeployParameters, deploy_all
from agents.chain.directory import RegistryDirectory
from agents.overlay.errors import RecordRejected
from agents.overlay.records import RecordValidator, make_peer_record

STAKE = 100 * TOKEN
NOW = 1_800_000_000
ENDPOINTS = [("203.0.113.7", 51820)]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def warren(project, chain, owner, operator, guardians):
    """A deployment whose revocations need 2 of the 3 guardians."""
    params = DeployParameters(guardians=[g.address for g in guardians], revocation_quorum=2)
    deployment = deploy_all(project, owner, chain, params, log=lambda _: None)
    return WarrenContracts.at(project, deployment, chain.chain_id)


@pytest.fixture
def wg_key(owner, operator, warren):
    key = bytes(range(1, 33))
    warren.token.mint(operator, STAKE, sender=owner)
    warren.token.approve(warren.registry, STAKE, sender=operator)
    warren.registry.register_node(key, "NL", TOKEN, STAKE, sender=operator)
    return key


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def validator(warren, clock):
    return RecordValidator(RegistryDirectory(warren, cache_seconds=30, clock=clock))


def test_peer_record__signed_by_registered_operator__accepted(operator, wg_key, validator):
    record = make_peer_record(operator.private_key, wg_key, ENDPOINTS, seq=1, expires=NOW + 600)
    assert validator.validate(record, NOW).node_id == int.from_bytes(node_id_of(wg_key), "big")


def test_peer_record__signed_by_someone_else__refused(wg_key, validator):
    record = make_peer_record(Account.create().key, wg_key, ENDPOINTS, seq=1, expires=NOW + 600)
    with pytest.raises(RecordRejected, match="mis-signed"):
        validator.validate(record, NOW)


def test_peer_record__unregistered_key__refused(operator, validator):
    record = make_peer_record(operator.private_key, b"\x42" * 32, ENDPOINTS, seq=1, expires=NOW + 600)
    with pytest.raises(RecordRejected, match="unknown-node"):
        validator.validate(record, NOW)


def test_peer_record__node_revoked_on_chain__refused_once_cache_expires(
    owner, operator, guardians, warren, wg_key, validator, clock
):
    record = make_peer_record(operator.private_key, wg_key, ENDPOINTS, seq=1, expires=NOW + 600)
    validator.validate(record, NOW)  # accepted, and the answer "not revoked" is now cached

    node_id = node_id_of(wg_key)
    revocation = eip712.Revocation(node_id, b"\x0e" * 32, 1)
    signers = sorted(guardians[:2], key=lambda g: int(g.address, 16))
    signatures = [warren.sign_revocation(revocation, g.private_key) for g in signers]
    warren.revocations.revoke(node_id, revocation.evidence_hash, 1, signatures, sender=owner)

    validator.validate(record, NOW)  # still within the cache period: the chain is not asked again
    clock.now += 31
    with pytest.raises(RecordRejected, match="revoked"):
        validator.validate(record, NOW)


class _FlakyRegistry:
    """node_registry's two views, failing while ``down``."""

    def __init__(self, registry):
        self.registry, self.down = registry, False

    def node_operator(self, key):
        if self.down:
            raise ConnectionError("connection refused")
        return self.registry.node_operator(key)

    def is_revoked(self, key):
        if self.down:
            raise ConnectionError("connection refused")
        return self.registry.is_revoked(key)


def test_rpc_down__known_node_still_accepted__unknown_refused_not_raised(operator, wg_key, warren, clock):
    import dataclasses

    flaky = _FlakyRegistry(warren.registry)
    validator = RecordValidator(RegistryDirectory(dataclasses.replace(warren, registry=flaky), cache_seconds=30,
                                                  clock=clock))
    record = make_peer_record(operator.private_key, wg_key, ENDPOINTS, seq=1, expires=NOW + 600)
    assert validator.validate(record, NOW)  # seen once while the chain answers
    flaky.down, clock.now = True, 100.0  # the cache has expired and the RPC fails
    assert validator.validate(record, NOW).node_id == int.from_bytes(node_id_of(wg_key), "big")
    stranger_key = bytes(range(2, 34))
    stranger = make_peer_record(operator.private_key, stranger_key, ENDPOINTS, seq=1, expires=NOW + 600)
    with pytest.raises(RecordRejected, match="unverifiable.*connection refused"):
        validator.validate(stranger, NOW)
