"""agents.challenger.sim: the trust simulator's rules on a small network (fixed seed, ~1 s)."""

import pytest

from agents.challenger.sim import SimConfig, simulate

SMALL = dict(nodes=200, challengers=30, epochs=6, per_epoch=120, seed=3)


def test_majority_rule__lying_minority__no_honest_node_slashed_and_throttled_caught_in_one_epoch():
    # The contract's rule (reputation.slash_epoch), the simulator's default.
    assert SimConfig().rule == "majority"
    result = simulate(SimConfig(**SMALL, liars=3))
    assert result["false_slashed_nodes"] == 0
    assert result["throttled_nodes"] == 10 and result["detect_throttled_epochs"] == 1
    assert result["throttled_slashed_every_epoch"]


def test_count_rule__lying_minority_of_quorum_size__slashes_honest_nodes():
    # The rule before issue 14: any `quorum` failure reports slash, so three liars reaching one node suffice.
    liars = simulate(SimConfig(**SMALL, liars=3, rule="count"))
    honest = simulate(SimConfig(**SMALL, liars=0, rule="count"))
    assert liars["false_slashed_nodes"] > honest["false_slashed_nodes"]
    assert liars["false_slash_rate"] > 0.5


def test_simulate__unknown_rule__value_error():
    with pytest.raises(ValueError, match="unknown slashing rule"):
        simulate(SimConfig(**SMALL, rule="median"))
