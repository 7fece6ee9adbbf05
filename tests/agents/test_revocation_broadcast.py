"""The overlay path of a revocation, on real UDP (loopback) with real keys and the chain's guardians:
a node that reads the revocation from the chain broadcasts its certificate; nodes that do not read the
chain check it against revocation_registry's guardian set and refuse the node from then on."""

import random
import time
import types

import pytest

from agents.chain.bindings import WarrenContracts
from agents.chain.deploy import DeployParameters, deploy_all
from agents.chain.revocations import ChainRevocationAuthority, ChainRevocationPort, RevocationFollower
from agents.node.revocations import BACKUP_BROADCAST_S, NodeRevocations
from agents.overlay.core import Joined, OverlayConfig, OverlayNode
from agents.overlay.ids import node_id_from_wg_key
from agents.overlay.records import InMemoryDirectory, RecordValidator, revocation_key
from agents.overlay.revocation import RevocationList
from agents.overlay.runtime import UdpReactor
from agents.overlay.store import RecordStore
from agents.overlay.trust import guard
from agents.wireguard.config import generate_private_key, public_key

from revocation_helpers import register_and_revoke

HOSTS = 5


@pytest.fixture(scope="module")
def warren(project, chain, owner, guardians):
    params = DeployParameters(guardians=[g.address for g in guardians], revocation_quorum=2)
    deployment = deploy_all(project, owner, chain, params, log=lambda _: None)
    return WarrenContracts.at(project, deployment, chain.chain_id)


class _NatStub:
    """No NAT traversal in this ring: forgetting a peer is a no-op."""

    def forget(self, peer, now):
        pass


@pytest.fixture
def ring(warren, owner, operator, guardians):
    """Five authenticated overlay nodes on loopback, each with a revocation list, and a victim key
    revoked on chain (not running); yields (runtimes, lists, victim id)."""
    victim_key = public_key(generate_private_key())
    keys = [generate_private_key() for _ in range(HOSTS)]
    ids = [node_id_from_wg_key(public_key(k)) for k in keys]
    directory = InMemoryDirectory({i: operator.address for i in ids + [node_id_from_wg_key(victim_key)]})
    authority = ChainRevocationAuthority(warren)
    cfg = OverlayConfig(stabilize_interval=1.0, rpc_timeout=0.5)
    with UdpReactor() as reactor:
        rts, lists = [], []
        for key, nid in zip(keys, ids):
            node = OverlayNode(nid, cfg, store=RecordStore(RecordValidator(directory, authority)),
                               rng=random.SystemRandom(), now=time.time())
            rl = RevocationList()
            guard(node, revocations=rl, directory=directory, auth_key=key)
            rts.append(reactor.add_udp(node))
            lists.append(rl)
        rts[0].call(lambda n, now: n.start_alone())
        for rt in rts[1:]:
            rt.call(lambda n, now: n.bootstrap(rts[0].address, now))
            assert rt.wait_for(lambda e: isinstance(e, Joined), 10)
        deadline = time.time() + 15  # the ring settles: every node knows the others
        while time.time() < deadline and not all(len(list(rt.node.table.contacts())) >= HOSTS - 1 for rt in rts):
            time.sleep(0.1)
        node_id, _ = register_and_revoke(warren, owner, operator, guardians, victim_key, evidence=b"\x0b" * 32,
                                         nonce=2)
        yield rts, lists, int.from_bytes(node_id, "big")


def _glue(warren, rts, lists, readers):
    """NodeRevocations per node; only the nodes in ``readers`` follow the chain."""
    return [NodeRevocations(rl, RevocationFollower(ChainRevocationPort(warren), rl) if i in readers else None,
                            presence=types.SimpleNamespace(rt=rt, nat=_NatStub(), joined=True))
            for i, (rt, rl) in enumerate(zip(rts, lists))]


def _refused_by_all(others, victim_id, timeout=5.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and not all(victim_id in g.refused_at for g in others):
        time.sleep(0.02)
    return all(victim_id in g.refused_at for g in others)


def test_certificate__broadcast_by_the_chain_reader__every_other_node_refuses(warren, ring):
    rts, lists, victim_id = ring
    key = revocation_key(victim_id)
    announcer = next(i for i, rt in enumerate(rts) if rt.node.table.owns(key))  # by the ring's own reckoning
    glue = _glue(warren, rts, lists, {announcer})
    started = time.time()
    fresh = glue[announcer].step()  # reads the chain, then broadcasts
    assert [f.node_id for f in fresh if f.node_id == victim_id] == [victim_id]
    assert glue[announcer].broadcasts == 1
    others = [g for i, g in enumerate(glue) if i != announcer]
    assert _refused_by_all(others, victim_id)
    took = {i: round(g.refused_at[victim_id] - started, 3) for i, g in enumerate(others)}
    print(f"\nannouncer's chain read + broadcast -> refused at {len(others)} nodes over loopback: {took} s")
    assert all(g.list.facts(victim_id).source == "overlay" for g in others)
    for rt in rts:
        assert rt.node.refuse(victim_id) and not rt.node.table.admits(victim_id)
        assert rt.node.store.validator.is_revoked(victim_id)
    assert rts[announcer].node.store.get(key, time.time())  # the DHT holds the certificate too


def test_announcer_not_reading__another_reader_broadcasts_after_the_backup_delay(warren, ring):
    rts, lists, victim_id = ring
    key = revocation_key(victim_id)
    reader = next(i for i, rt in enumerate(rts) if not rt.node.table.owns(key))  # not the announcer
    glue = _glue(warren, rts, lists, {reader})
    now = time.time()
    glue[reader].step(now)
    assert glue[reader].broadcasts == 0 and victim_id in glue[reader].refused_at  # refuses, waits
    glue[reader].step(now + BACKUP_BROADCAST_S / 2)
    assert glue[reader].broadcasts == 0
    glue[reader].step(now + BACKUP_BROADCAST_S + 0.1)  # nobody broadcast it: it does
    assert glue[reader].broadcasts == 1
    assert _refused_by_all([g for i, g in enumerate(glue) if i != reader], victim_id)
