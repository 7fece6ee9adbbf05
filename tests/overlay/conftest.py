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


@pytest.fixture
def lab():
    """A network-namespace lab (only for tests marked netns, which need root); cleaned up after."""
    from agents.netlab import Lab

    with Lab(prefix="wov") as lab:
        yield lab


@pytest.fixture
def reactor():
    """A started overlay UDP reactor; its thread is joined and its sockets closed after the test."""
    from agents.overlay.runtime import UdpReactor

    with UdpReactor() as r:
        yield r


@pytest.fixture
def internet(lab):
    """Two internet segments joined by a transit router (so at least one router lies between any two
    NATs, as on the real internet); returns ``(public_host(name), nat_host(name, flavour, side))``."""
    west, east = lab.add_internet("198.51.100.0/24", "west"), lab.add_internet("203.0.113.0/24", "east")
    transit = lab.add_host("transit")
    via = {"west": west.attach(transit), "east": east.attach(transit)}
    transit.sysctl("net.ipv4.ip_forward", 1)
    segments = {"west": (west, east), "east": (east, west)}

    def public_host(name, side="west"):
        inet, other = segments[side]
        ns = lab.add_host(name)
        ip = inet.attach(ns)
        ns.ip("route", "add", str(other.subnet), "via", via[side])
        return ns, ip

    def nat_host(name, flavour, side):
        inet, other = segments[side]
        router = lab.add_nat(f"nat{name}", flavour, inet)
        router.namespace.ip("route", "add", str(other.subnet), "via", via[side])
        ns = lab.add_host(name)
        router.attach(ns)
        return ns, router

    return public_host, nat_host
