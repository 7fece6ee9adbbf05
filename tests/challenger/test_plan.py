"""agents.challenger.plan: weighted, secret-seeded, jittered challenge plans (fixed seeds)."""

import collections
import os

import pytest

from agents.challenger.plan import NodeInfo, PlanPolicy, plan_epoch, probe_times, weight

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
