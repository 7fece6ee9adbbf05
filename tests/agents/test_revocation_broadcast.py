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
from agents.node.revocations import NodeRevocations
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


def test_certificate__broadcast_by_the_chain_reader__every_other_node_refuses(warren, owner, operator, guardians):
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
        # the ring settles: every node knows the others
        deadline = time.time() + 15
        while time.time() < deadline and not all(len(list(rt.node.table.contacts())) >= HOSTS - 1 for rt in rts):
            time.sleep(0.1)
        victim_id = int.from_bytes(register_and_revoke(warren, owner, operator, guardians, victim_key,
                                                       evidence=b"\x0b" * 32, nonce=2)[0], "big")
        # who announces: the owner of revocation_key(victim) by the ring's own reckoning
        key = revocation_key(victim_id)
        owner_index = next(i for i, rt in enumerate(rts) if rt.node.table.owns(key))
        glue = []
        for i, (rt, rl) in enumerate(zip(rts, lists)):
            follower = RevocationFollower(ChainRevocationPort(warren), rl) if i == owner_index else None
            presence = types.SimpleNamespace(rt=rt, nat=_NatStub(), joined=True)
            glue.append(NodeRevocations(rl, follower, presence=presence))
        fresh = glue[owner_index].step()  # reads the chain, then broadcasts
        started = time.time()
        assert [f.node_id for f in fresh if f.node_id == victim_id] == [victim_id]
        assert glue[owner_index].broadcasts == 1
        others = [g for i, g in enumerate(glue) if i != owner_index]
        deadline = time.time() + 5
        while time.time() < deadline and not all(victim_id in g.refused_at for g in others):
            time.sleep(0.02)
        took = {i: round(g.refused_at.get(victim_id, float("nan")) - started, 3) for i, g in enumerate(others)}
        # (each receiver asks the chain for the quorum and each signer's guardian role once: RPC-bound)
        print(f"\ncertificate broadcast -> refused at {len(others)} nodes over loopback: {took} s")
        assert all(victim_id in g.refused_at for g in others), took
        assert all(g.list.facts(victim_id).source == "overlay" for g in others)
        for rt in rts:
            assert rt.node.refuse(victim_id) and not rt.node.table.admits(victim_id)
            assert rt.node.store.validator.is_revoked(victim_id)
        # the certificate is in the DHT too: its key's owner holds it
        assert rts[owner_index].node.store.get(key, time.time())


class _NatStub:
    """No NAT traversal in this ring: forgetting a peer is a no-op."""

    def forget(self, peer, now):
        pass
