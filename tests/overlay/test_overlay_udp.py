"""The overlay on real UDP sockets: a 60-node ring on loopback converges and answers lookups."""

from __future__ import annotations

import bisect
import random
import time

from agents.overlay.core import Joined, LookupDone, OverlayConfig, OverlayNode

N_NODES = 60
# Loopback round trips are ~0.1 ms, so timers can be short; a bounded wait is the test's deadline.
CONFIG = OverlayConfig(stabilize_interval=0.5, rpc_timeout=0.3)
JOIN_DEADLINE_S = 60.0
CONVERGE_DEADLINE_S = 90.0


def _owner(ids: list, key: int) -> int:
    return ids[bisect.bisect_left(ids, key) % len(ids)]


def test_loopback_ring__sixty_udp_nodes__lookups_converge(reactor):
    rng = random.Random(4)
    rts = []
    for i in range(N_NODES):
        rt = reactor.add_udp(OverlayNode(rng.getrandbits(256), CONFIG, rng=random.Random(i)))
        if rts:
            rt.call(lambda node, now, boot=rng.choice(rts).address: node.bootstrap(boot, now))
        else:
            rt.call(lambda node, now: node.start_alone())
        rts.append(rt)
    joined = [rt.wait_for(lambda e: isinstance(e, Joined), JOIN_DEADLINE_S) for rt in rts[1:]]
    assert all(joined), f"{sum(j is None for j in joined)} nodes did not join"
    ids = sorted(rt.node.id for rt in rts)
    by_id = {rt.node.id: rt for rt in rts}

    # Converged when every node's successor and predecessor are right and a round of lookups from
    # every node finds the true owners; poll until then, within a deadline.
    deadline = time.monotonic() + CONVERGE_DEADLINE_S
    rounds = 0
    while True:
        rounds += 1
        ring_ok = all(
            rt.node.table.successors and rt.node.table.successors[0].node_id == ids[(ids.index(rt.node.id) + 1) % N_NODES]
            and rt.node.table.predecessor is not None
            and rt.node.table.predecessor.node_id == ids[ids.index(rt.node.id) - 1]
            for rt in rts
        )
        keys = {}
        for rt in rts:
            key = rng.getrandbits(256)
            keys[(rt.node.id, rt.call(lambda node, now, key=key: node.lookup(key, now)))] = key
        answers = {}
        for (nid, lid), key in keys.items():
            ev = by_id[nid].wait_for(lambda e, lid=lid: isinstance(e, LookupDone) and e.lookup_id == lid, 5.0)
            answers[(nid, lid)] = ev
        lookups_ok = all(ev is not None and ev.owner is not None and ev.owner.node_id == _owner(ids, keys[k])
                         for k, ev in answers.items())
        if ring_ok and lookups_ok:
            break
        assert time.monotonic() < deadline, f"not converged after {rounds} rounds"
        time.sleep(CONFIG.stabilize_interval)
    hops = [ev.hops for ev in answers.values()]
    assert sum(hops) / len(hops) <= 6  # log2(60) ~ 5.9
    # every node really used its own socket: datagrams were exchanged everywhere
    assert all(rt.node.stats["received"] > 0 and rt.node.stats["sent"] > 0 for rt in rts)
