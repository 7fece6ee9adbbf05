"""The pure policy of `warren connect --paths N` (agents.client.paths): which exits, which weights,
which generations, and the text the kernel is given. The kernel's side (rules, routes, the table
doing what it says) is exercised by tests/client/test_paths_netns.py and tests/e2e/test_multipath_e2e.py."""

import pytest

from agents.chain.bindings import NodeInfo
from agents.client.paths import (
    BUCKETS,
    MARK_BASE,
    MEASURABLE_BPS,
    MIN_SHARE,
    PATH_TABLE_BASE,
    SPREAD_V4,
    SPREAD_V6,
    PathPolicy,
    PathSample,
    PathState,
    RateMeter,
    choose_exits,
    intervals,
    nft_script,
    own_lookups,
    path_mark,
    path_routes,
    route_commands,
    tun_name,
    weights,
)
from agents.client.selection import Candidate


def candidate(name: str, operator: str) -> Candidate:
    return Candidate(node=NodeInfo(node_id=name.encode().ljust(32, b"\0"), operator=operator, wg_public_key=bytes(32),
                                   region="NL", price_per_gib=1, stake=1, active=True, revoked=False))


def names(plan) -> list[str]:
    return [c.node.node_id.rstrip(b"\0").decode() for c in plan]


def sample(index: int, *, session="s", alive=True, counter=0) -> PathSample:
    return PathSample(index, tun_name("wrnc0", index), session, "10.77.0.2" if session else None,
                      "fd77:7272::2" if session else None, alive, counter)


# -- choosing exits --------------------------------------------------------------------------------


def test_choose_exits__first_exits_of_different_operators__spares_of_none_of_the_others():
    a, a2, b, c, d = (candidate("a", "op1"), candidate("a2", "op1"), candidate("b", "op2"), candidate("c", "op3"),
                      candidate("d", "op4"))
    plans = choose_exits([a, a2, b, c, d], 3)
    assert [names(p) for p in plans] == [["a", "a2", "d"], ["b", "d"], ["c", "d"]]


def test_choose_exits__too_few_operators__no_plan():
    assert choose_exits([candidate("a", "op1"), candidate("a2", "op1"), candidate("b", "op2")], 3) == []


def test_choose_exits__a_node_behind_nat_is_ranked_as_any_other():
    nat, a, b = candidate("nat", "op1"), candidate("a", "op2"), candidate("b", "op3")
    plans = choose_exits([a, b, nat], 3)
    assert [names(p)[0] for p in plans] == ["a", "b", "nat"]  # not moved first: every path can reach it


def test_own_lookups__later_paths_look_up_the_first_tunnels_local_exits_themselves():
    nat, a, b, spare = candidate("nat", "op1"), candidate("a", "op2"), candidate("b", "op3"), candidate("s", "op1")
    plans = choose_exits([a, nat, b, spare], 3)
    assert [names(p) for p in plans] == [["a"], ["nat", "s"], ["b"]]
    local = {"nat", "s"}
    wanted = own_lookups(plans, lambda c: names([c])[0] in local)
    assert {i: names(cs) for i, cs in wanted.items()} == {1: ["nat", "s"]}
    # the first path uses the first tunnel's endpoints, local ones included
    assert own_lookups([[nat, a], [b]], lambda c: names([c])[0] in local) == {}
    # only the head of a plan is looked up: a failed punch costs seconds
    assert {i: names(cs) for i, cs in own_lookups(plans, lambda c: names([c])[0] in local, limit=1).items()} == {
        1: ["nat"]}


def test_path_routes__first_tunnels_endpoints_for_path_0_and_public_exits__own_for_local_ones():
    nat, a, b = candidate("nat", "op1"), candidate("a", "op2"), candidate("b", "op3")
    local = lambda c: c is nat  # noqa: E731
    shared = {a.node.node_id: ("198.51.100.2", 51820), b.node.node_id: ("198.51.100.3", 51820),
              nat.node.node_id: ("198.51.100.9", 40000)}
    own = {(2, nat.node.node_id): ("198.51.100.9", 40001)}
    routes = path_routes([[a, nat], [b, nat], [nat, b]], shared, local, own)
    assert [[(names([c])[0], e) for c, e in plan] for plan in routes] == [
        [("a", ("198.51.100.2", 51820)), ("nat", ("198.51.100.9", 40000))],  # path 0: the first tunnel's
        [("b", ("198.51.100.3", 51820))],  # path 1 found no way of its own to nat: left out
        [("nat", ("198.51.100.9", 40001)), ("b", ("198.51.100.3", 51820))],  # path 2: its own punched one
    ]


def test_path_routes__a_later_path_reaching_none_of_its_exits__empty_plan():
    nat, a = candidate("nat", "op1"), candidate("a", "op2")
    routes = path_routes([[a], [nat]], {a.node.node_id: ("198.51.100.2", 51820), nat.node.node_id: ("x", 1)},
                         lambda c: c is nat, {})
    assert routes[1] == []


def test_tun_name__first_is_the_interface__others_fit_ifnamsiz():
    assert tun_name("wrnc0", 0) == "wrnc0" and tun_name("wrnc0", 2) == "wrnc0p2"
    assert len(tun_name("a-very-long-name", 7)) <= 15


# -- weights ---------------------------------------------------------------------------------------


def test_weights__in_proportion_to_capacity_above_the_floor():
    out = weights([30.0, 10.0, 20.0], [True, True, True])
    assert sum(out) == BUCKETS and out[0] > out[2] > out[1] >= MIN_SHARE
    # the floor: 5 each, the 85 left shared 3:1:2
    assert out == [48, 19, 33]


def test_weights__dead_paths_draw_nothing__their_share_goes_to_the_others():
    assert weights([10.0, 10.0, 10.0], [True, False, True]) == [50, 0, 50]
    assert weights([10.0, 10.0], [False, False]) == [0, 0]


def test_weights__unmeasured_path_counts_as_the_mean__none_measured_equal():
    assert weights([None, None, None], [True, True, True]) == [34, 33, 33]
    assert weights([20.0, None], [True, True]) == [50, 50]


def test_weights__a_very_slow_path_keeps_its_floor():
    out = weights([1e9, 1.0], [True, True])
    assert out == [95, 5]


def test_intervals__cover_the_draw_once_skipping_empty_paths():
    assert intervals([48, 0, 52]) == [(0, 47, 0), (48, 99, 2)]


# -- measuring -------------------------------------------------------------------------------------


def test_rate_meter__steady_counter__rate_converges__peak_remembered_then_decays():
    meter, counter = RateMeter(tau_s=1.0, half_life_s=10.0), 0
    for step in range(50):  # 1 MB/s for 5 s, fake clock in 0.1 s steps
        meter.sample(0, "s", counter, step * 0.1)
        counter += 100_000
    assert meter.rate(0) == pytest.approx(1e6, rel=0.02)
    for step in range(50, 150):  # then idle for 10 s: the rate falls, the peak halves once
        meter.sample(0, "s", counter, step * 0.1)
    assert meter.rate(0) < MEASURABLE_BPS
    assert meter.capacity(0) == pytest.approx(0.5e6, rel=0.05)


def test_rate_meter__new_session__starts_from_nothing():
    meter = RateMeter()
    meter.sample(0, "s1", 0, 0.0)
    meter.sample(0, "s1", 10_000_000, 1.0)
    assert meter.capacity(0) is not None
    meter.sample(0, "s2", 5, 2.0)
    assert meter.capacity(0) is None and meter.rate(0) == 0


def test_rate_meter__keepalives_only__no_capacity():
    meter = RateMeter()
    for t in range(10):
        meter.sample(0, "s", t * 200, float(t))
    assert meter.capacity(0) is None


# -- the policy ------------------------------------------------------------------------------------


def test_policy__first_look__changed__equal_weights():
    policy = PathPolicy(3)
    decision = policy.observe([sample(0), sample(1), sample(2)], 0.0)
    assert decision.changed and decision.buckets == (34, 33, 33)
    assert not policy.observe([sample(0), sample(1), sample(2)], 0.5).changed


def test_policy__faster_path_measured__weights_follow():
    policy, counters = PathPolicy(2), [0, 0]
    decision = None
    for step in range(40):  # path 0 carries 3 MB/s, path 1 1 MB/s, for 4 s of fake clock
        decision = policy.observe([sample(0, counter=counters[0]), sample(1, counter=counters[1])], step * 0.1)
        counters[0] += 300_000
        counters[1] += 100_000
    assert policy.applied.buckets[0] > 2 * policy.applied.buckets[1]


def test_policy__path_dies__weight_moves__generation_bumped__comes_back_fresh():
    policy = PathPolicy(2)
    first = policy.observe([sample(0), sample(1)], 0.0)
    dead = policy.observe([sample(0), sample(1, alive=False)], 1.0)
    assert dead.changed and dead.buckets == (100, 0)
    assert dead.states[1].generation != first.states[1].generation and not dead.states[1].alive
    back = policy.observe([sample(0), sample(1, session="s2")], 2.0)  # failed over: another session
    assert back.buckets == (50, 50) and back.states[1].generation not in (first.states[1].generation,
                                                                         dead.states[1].generation)
    assert back.states[0].generation == first.states[0].generation  # the live path's flows were kept


def test_policy__small_drift__not_applied_again():
    policy = PathPolicy(2, step=5)
    policy.observe([sample(0), sample(1)], 0.0)
    policy.meter._peak.update({0: 1.04e6, 1: 1e6})  # 51/49: under the step
    assert not policy.observe([sample(0), sample(1)], 0.1).changed


def test_path_mark__index_and_generation_in_their_bits():
    assert path_mark(2, 7) == MARK_BASE | 0x207
    with pytest.raises(ValueError):
        path_mark(8)


# -- the kernel's text -----------------------------------------------------------------------------


def states(*alive) -> list[PathState]:
    return [PathState(i, tun_name("wrnc0", i), "10.77.0.2", "fd77:7272::2", ok, 3) for i, ok in enumerate(alive)]


def test_nft_script__draw_marks_live_paths_in_proportion():
    script = nft_script(states(True, True, False), [60, 40, 0], keep=["10.77.0.1", "fd77:7272::1"])
    assert "table inet warren_paths {}\ndelete table inet warren_paths\n" in script  # one transaction
    assert f"0-59 : {MARK_BASE | 0x003:#x}, 60-99 : {MARK_BASE | 0x103:#x}" in script
    assert f"set live {{ type mark; elements = {{ {MARK_BASE | 0x003:#x}, {MARK_BASE | 0x103:#x} }}; }}" in script
    assert f"ct state new ip saddr {SPREAD_V4} ip daddr != @keep4 ct mark set numgen random mod 100 map @draw" in script
    assert f"ip6 saddr {SPREAD_V6}" in script
    assert "elements = { 10.77.0.1 }" in script and "elements = { fd77:7272::1 }" in script
    assert 'oifname "wrnc0p2" ip saddr 192.0.0.8 snat ip to 10.77.0.2' in script
    assert f'"wrnc0p2" : {MARK_BASE | 0x200:#x}' in script  # a dead path's TUN still marks what arrives


def test_nft_script__no_live_path__nothing_drawn_everything_ours_stale():
    script = nft_script(states(False, False), [0, 0])
    assert "@draw" not in script.split("chain spread")[1].split("}")[0]
    assert "set live { type mark; }" in script
    assert "ct mark != @live meta l4proto tcp reject with tcp reset" in script


def test_nft_script__addresses_are_checked_before_splicing():
    with pytest.raises(ValueError):
        nft_script([PathState(0, "wrnc0", "10.77.0.2; flush ruleset", None, True, 1)], [100])


def test_route_commands__every_install_has_its_undo():
    install, undo = route_commands(["wrnc0", "wrnc0p1"], 51820)
    rules = [c for c in install if c[1] == "rule"]
    assert len(rules) == 8  # two per path per family
    assert all([c[0], "rule", "del", *c[3:]] in undo for c in rules)
    assert ["-4", "route", "flush", "table", str(PATH_TABLE_BASE + 1)] in undo
    assert ["-6", "route", "del", "unreachable", "default", "table", str(PATH_TABLE_BASE), "metric",
            "4294967295"] in undo  # ip -6 route flush leaves unreachable routes
    assert ["-4", "route", "replace", "default", "dev", "wrnc0", "src", SPREAD_V4, "table", "51820"] in install
    assert ["-4", "addr", "del", f"{SPREAD_V4}/32", "dev", "lo"] in undo
