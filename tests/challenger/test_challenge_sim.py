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


# -- the score mirror (reputation.vy's median over challengers, folded per epoch) ---------------------

def test_epoch_median__fixed_reports():
    from agents.challenger.sim import epoch_median

    # One lying failure among three: the verdict and the figures stay the honest ones.
    assert epoch_median([(True, 50_000, 20), (False, 1, 5_000), (True, 52_000, 22)]) == (True, 50_000, 22)
    # Half failed: the lower median is a failure (as slash_epoch judges a majority).
    assert epoch_median([(True, 50_000, 20), (False, 10, 900)]) == (False, 10, 20)
    # Only the first 32 reports' figures count; the verdict counts them all.
    many = [(True, 1_000 + i, 100 + i) for i in range(32)] + [(False, 1, 9_000)] * 3
    assert epoch_median(many) == (True, 1_015, 115)


def test_median_score__fixed_epochs__and_the_rule_it_replaced():
    from agents.challenger.sim import median_score, report_average_score

    honest = [(True, 50_000, 20), (True, 50_000, 20)]
    lied = honest + [(False, 1, 5_000)]
    # Two honest challengers and one liar every epoch after the first: the median moves nothing...
    assert median_score([honest + [(True, 50_000, 20)], lied, [], lied]) == (10_000, 50_000, 20, 9)
    # ...while the moving average over single reports lost an eighth at each lie: 8,750, then 7,911.
    verdicts = [True] * 3 + [True, True, False] * 2
    assert report_average_score(verdicts) == 7_911
    assert median_score([]) == (0, 0, 0, 0)
