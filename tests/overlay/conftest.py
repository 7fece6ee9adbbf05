"""Fixtures for the overlay tests: operators, a directory, validators, stores, simulated rings."""

from __future__ import annotations

import os

import pytest
from eth_account import Account

from agents.overlay.core import OverlayConfig
from agents.overlay.ids import node_id_from_wg_key
from agents.overlay.records import InMemoryDirectory, RecordValidator, RevocationAuthority
from agents.overlay.sim import SimNetwork
from agents.overlay.store import RecordStore

from overlay_consts import CHAIN_ID, REVOCATION_REGISTRY


@pytest.fixture
def operator():
    """An operator account (signs its node's records)."""
    return Account.create()


@pytest.fixture
def guardians():
    """Three guardian accounts of revocation_registry (quorum 2)."""
    return [Account.create() for _ in range(3)]


@pytest.fixture
def make_node_key():
    """Factory: a fresh 32-byte WireGuard public key (random bytes stand in: only its hash matters)."""
    return lambda: os.urandom(32)


@pytest.fixture
def directory():
    """An in-memory OperatorDirectory (on chain: node_registry.node_operator)."""
    return InMemoryDirectory()


@pytest.fixture
def authority(guardians):
    """Guardians of revocation_registry with quorum 2."""
    return RevocationAuthority({g.address for g in guardians}, 2, CHAIN_ID, REVOCATION_REGISTRY)


@pytest.fixture
def validator(directory, authority):
    return RecordValidator(directory, authority)


@pytest.fixture
def make_store(validator):
    """Factory: a RecordStore over the shared validator, with overridable limits."""
    return lambda **kw: RecordStore(validator, **kw)


@pytest.fixture
def registered(directory, operator, make_node_key):
    """Factory: a WireGuard key registered to ``operator`` in the directory; returns (wg_key, node_id)."""

    def make(op=None):
        wg = make_node_key()
        nid = node_id_from_wg_key(wg)
        directory.register(nid, (op or operator).address)
        return wg, nid

    return make


@pytest.fixture
def make_net():
    """Factory: a simulated network with small-ring timing (seconds of simulated time)."""

    def make(seed=1, **kw):
        cfg = kw.pop("config", None) or OverlayConfig(stabilize_interval=2.0, rpc_timeout=0.5)
        return SimNetwork(seed=seed, config=cfg, **kw)

    return make
