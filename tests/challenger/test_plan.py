"""agents.challenger.plan: weighted, secret-seeded, jittered challenge plans (fixed seeds)."""

import collections
import os

import pytest

from agents.challenger.plan import NodeInfo, PlanPolicy, assigned_nodes, plan_epoch, probe_times, weight

EPOCH = 3600.0
SECRET = bytes(range(32))


def nodes(count=40, busy=(), new=(), epoch=100):
    out = []
    for i in range(count):
        node_id = i.to_bytes(32, "big")
        out.append(NodeInfo(node_id, registered_epoch=epoch - (1 if i in new else 50), traffic=1000 if i in busy else 0))
    return out


def test_plan__same_secret_and_epoch__same_plan_in_any_input_order():
    listed = nodes()
    first = plan_epoch(listed, 100, EPOCH, SECRET)
    again = plan_epoch(list(reversed(listed)), 100, EPOCH, SECRET)
    assert first == again
    assert len(first) == PlanPolicy().per_epoch
    assert len({c.node_id for c in first}) == len(first)  # without replacement


def test_plan__other_secret_or_epoch__other_plan():
    listed = nodes()
    base = plan_epoch(listed, 100, EPOCH, SECRET)
    assert plan_epoch(listed, 100, EPOCH, os.urandom(32)) != base
    assert plan_epoch(listed, 101, EPOCH, SECRET) != base


def test_plan__times_inside_the_epoch_away_from_its_edges_and_spread():
    policy = PlanPolicy(per_epoch=40, margin_s=60)
    plan = plan_epoch(nodes(), 100, EPOCH, SECRET, policy)
    start, end = 100 * EPOCH, 101 * EPOCH
    assert all(start + 60 <= c.at <= end - 60 for c in plan)
    assert [c.at for c in plan] == sorted(c.at for c in plan)
    # Uniform jitter: the 40 times cover the epoch, not one corner of it.
    assert plan[0].at - start < EPOCH / 4 and end - plan[-1].at < EPOCH / 4


def test_plan__busy_and_new_nodes_are_chosen_more_often_yet_idle_ones_still_are():
    busy, new = set(range(0, 4)), set(range(4, 8))
    picks = collections.Counter()
    for epoch in range(100, 400):
        for c in plan_epoch(nodes(busy=busy, new=new, epoch=epoch), epoch, EPOCH, SECRET):
            picks[int.from_bytes(c.node_id, "big")] += 1
    per = lambda group: sum(picks[i] for i in group) / len(group)  # noqa: E731
    idle = set(range(8, 40))
    assert per(busy) > 2 * per(idle)
    assert per(new) > 2 * per(idle)
    assert all(picks[i] > 0 for i in idle)


def test_weight__new_node_only_while_new_and_traffic_by_share():
    policy = PlanPolicy(new_epochs=3, new_weight=3.0, traffic_weight=3.0)
    assert weight(NodeInfo(b"a", registered_epoch=10), 12, 0, policy) == 4.0
    assert weight(NodeInfo(b"a", registered_epoch=10), 13, 0, policy) == 1.0
    assert weight(NodeInfo(b"a", registered_epoch=0, traffic=50), 13, 100, policy) == 2.5


def test_plan__no_nodes_or_no_room__empty_or_error():
    assert plan_epoch([], 1, EPOCH, SECRET) == []
    with pytest.raises(ValueError, match="no room"):
        plan_epoch(nodes(), 1, 100.0, SECRET, PlanPolicy(margin_s=60))


def test_probe_times__each_node_once_per_slice_at_unpredictable_times():
    listed = nodes(count=3)
    policy = PlanPolicy(probes_per_epoch=4, margin_s=0)
    probes = probe_times(listed, 7, EPOCH, SECRET, policy)
    assert len(probes) == 12
    for node in listed:
        times = sorted(p.at - 7 * EPOCH for p in probes if p.node_id == node.node_id)
        assert [int(t // (EPOCH / 4)) for t in times] == [0, 1, 2, 3]
    assert probes != probe_times(listed, 7, EPOCH, os.urandom(32), policy)


# -- co-located nodes are challenged together ------------------------------------------------------

@pytest.mark.parametrize("endpoint, key", [
    ("198.51.100.7", "198.51.100.0/24"), ("198.51.100.250", "198.51.100.0/24"), ("198.51.101.7", "198.51.101.0/24"),
    ("2001:db8:1:2::9", "2001:db8:1:2::/64"), ("[2001:db8:1:2:aa::1]", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::9", "2001:db8:1:3::/64"), ("::ffff:198.51.100.9", "198.51.100.0/24"),
    ("", None), ("not an address", None), ("198.51.100.7:51820", None),
])
def test_colocation_key__ipv4_slash24_ipv6_slash64(endpoint, key):
    from agents.challenger.plan import colocation_key

    assert colocation_key(endpoint) == key


def test_colocated_groups__a_drawn_node_brings_its_block_at_its_time_each_node_once():
    from agents.challenger.plan import PlannedChallenge, colocated_groups

    def node(i, endpoint):
        return NodeInfo(i.to_bytes(32, "big"), endpoint=endpoint)

    listed = [node(1, "203.0.113.10"), node(2, "203.0.113.11"), node(3, "203.0.113.200"),  # one /24: a split uplink
              node(4, "198.51.100.1"), node(5, "2001:db8::1"), node(6, "2001:db8::2"), node(7, "")]
    plan = [PlannedChallenge(50.0, node(6, "").node_id, 9), PlannedChallenge(10.0, node(2, "").node_id, 9),
            PlannedChallenge(30.0, node(3, "").node_id, 9), PlannedChallenge(40.0, node(7, "").node_id, 9),
            PlannedChallenge(20.0, node(4, "").node_id, 9)]
    groups = colocated_groups(plan, listed)
    as_ids = [[(c.at, int.from_bytes(c.node_id, "big"), c.epoch) for c in group] for group in groups]
    assert as_ids == [
        [(10.0, 1, 9), (10.0, 2, 9), (10.0, 3, 9)],  # node 2 drawn first: its whole /24 at its time; 3 not again
        [(20.0, 4, 9)],                               # alone in its block
        [(40.0, 7, 9)],                               # no endpoint: alone
        [(50.0, 5, 9), (50.0, 6, 9)],                 # one IPv6 /64
    ]
    assert colocated_groups([], listed) == []


def test_colocated_groups__over_a_real_plan__every_drawn_node_once_and_blocks_whole():
    from agents.challenger.plan import colocated_groups, colocation_key

    listed = [NodeInfo(n.node_id, n.registered_epoch, n.traffic, endpoint=f"192.0.2.{i % 8}" if i < 12 else
                       f"10.{i}.0.1") for i, n in enumerate(nodes())]
    plan = plan_epoch(listed, 100, EPOCH, SECRET, PlanPolicy(per_epoch=10))
    groups = colocated_groups(plan, listed)
    covered = [c.node_id for group in groups for c in group]
    assert len(covered) == len(set(covered)) and {c.node_id for c in plan} <= set(covered)
    by_id = {n.node_id: n for n in listed}
    for group in groups:
        assert len({c.at for c in group}) == 1
        keys = {colocation_key(by_id[c.node_id].endpoint) for c in group}
        assert len(keys) == 1
        block = [n for n in listed if colocation_key(n.endpoint) in keys]
        assert len(group) == len(block)  # the whole block, never a part
    assert [g[0].at for g in groups] == sorted(g[0].at for g in groups)


# -- the challenger assignment ------------------------------------------------------------------------

def test_assigned_nodes__only_the_drawn_and_none_before_the_seed():
    from agents.challenger.assignment import Assignment, is_drawn

    challenger = "0x" + "ab" * 20
    nodes = [NodeInfo(bytes([i]) * 32) for i in range(40)]
    seed = bytes(range(32))
    draw = Assignment(epoch=5, seed=seed, active=10, per_node=3)
    mine = assigned_nodes(nodes, draw, challenger)
    assert mine == [n for n in nodes if is_drawn(seed, challenger, n.node_id, 10, 3)]
    assert 0 < len(mine) < len(nodes)  # about 3/10 of 40 (fixed inputs: 13 here)
    assert assigned_nodes(nodes, Assignment(epoch=5, seed=b"", active=10, per_node=3), challenger) == []
    # At most reports_per_node challengers reported last epoch: everyone is drawn, no seed needed.
    assert assigned_nodes(nodes, Assignment(epoch=5, seed=b"", active=3, per_node=3), challenger) == nodes


def test_is_drawn__fixed_case():
    from agents.challenger.assignment import is_drawn

    # keccak256(abi_encode(bytes32(0), address(0), bytes32(0))) = keccak256(96 zero bytes) = 0x290decd9...,
    # which is 9 mod 10 and 6 mod 11 (worked out with eth_utils): drawn iff that is below per_node.
    zero = "0x" + "00" * 20
    assert not is_drawn(bytes(32), zero, bytes(32), 10, 9)
    assert not is_drawn(bytes(32), zero, bytes(32), 11, 6)
    assert is_drawn(bytes(32), zero, bytes(32), 11, 7)


def test_runtime_helpers__endpoint_and_slot_interface():
    from types import SimpleNamespace

    from agents.challenger.runtime import endpoint_of, slot_interface

    assert endpoint_of(SimpleNamespace(endpoints=[("198.51.100.7", 51820), ("2001:db8::1", 51820)])) == "198.51.100.7"
    assert endpoint_of(SimpleNamespace(endpoints=[])) == ""
    assert endpoint_of(None) == ""
    assert slot_interface("warrench0", 0) == "warrench0"
    assert slot_interface("warrench0", 3) == "warrench0c3"
    assert len(slot_interface("averyverylongifname", 12)) <= 15
