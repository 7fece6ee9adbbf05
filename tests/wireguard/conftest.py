"""Fixtures shared by the WireGuard tests.

Core tests (fake clock, no I/O) use ``pair``: Alice and Bob in memory with a session established.
Network tests build hosts with the netns lab: every test that (directly or through another fixture)
uses ``root`` or ``lab`` is marked ``netns`` and skipped unless it runs as root (CI does), so files
mixing pure and namespace tests need no module-wide ``pytestmark``.
"""

from pathlib import Path

import pytest

from agents.netlab import Lab, can_build_namespaces
from agents.wireguard.perf import LoopbackPair

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    """Mark this folder's tests that need root and network namespaces as ``netns``."""
    for item in items:
        if "root" in getattr(item, "fixturenames", ()) and _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.netns)


@pytest.fixture
def root():
    """Skip unless root: namespaces, TUN devices and wireguard-go need it."""
    if not can_build_namespaces():
        pytest.skip("network namespaces and TUN devices need root (CI runs as root)")


@pytest.fixture
def lab(root):
    """A netns lab, torn down (namespaces, interfaces, processes) after the test."""
    with Lab() as lab:
        yield lab


@pytest.fixture
def hosts(lab):
    """Two hosts joined by a veth pair: (a at 10.200.x.1, b at 10.200.x.2, the link)."""
    a, b = lab.add_host("a"), lab.add_host("b")
    return a, b, lab.connect(a, b)


@pytest.fixture
def pair():
    """Alice and Bob (`LoopbackPair`) after one completed handshake, events already drained."""
    pair = LoopbackPair()
    pair.handshake()
    pair.alice.drain_events()
    pair.bob.drain_events()
    return pair
