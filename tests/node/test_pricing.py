"""``price_per_gib = "auto"``: the rule (agents.node.pricing) and its runtime (agents.node.autoprice) with a
fake clock; the same rule on anvil is in test_autoprice_chain.py."""

import math
from fractions import Fraction

import pytest

from agents.economy import sim
from agents.node.autoprice import AutoPrice
from agents.node.chain import PriceUpdateRefused
from agents.node.pricing import (
    DEFAULT_STEP,
    DEFAULT_TARGET_UTILISATION,
    MIN_OBSERVED,
    AutoPricer,
    PriceRule,
    Window,
    capacity_bytes,
    next_price,
    utilisation,
    worth_updating,
)

DAY = 86_400
FLOOR, CEILING = 10**15, 2 * 10**15
RULE = PriceRule(floor=FLOOR, ceiling=CEILING, capacity_mbps=8.0)  # 1,000,000 bytes a second
FULL_DAY = capacity_bytes(8.0, DAY)
T0 = 20_000 * DAY  # an epoch boundary, unix seconds


def test_next_price__int__steps_towards_target_rounded_away_and_clamped():
    rule = dict(floor=1, ceiling=10**30)
    assert next_price(10**18, 1.0, **rule) == math.ceil(Fraction(10**18) * Fraction(1 + 0.5 * (1 - 0.7)))
    assert next_price(10**18, 0.7, **rule) == 10**18  # on target: stays
    assert next_price(10**18, 0.0, **rule) == math.floor(Fraction(10**18) * Fraction(1 - 0.5 * 0.7))
    assert next_price(10, 1.0, **rule) == 12 and next_price(2, 0.0, **rule) == 1  # small prices still move
    assert next_price(3 * 10**24 + 7, 1.0, **rule) == math.ceil(Fraction(3 * 10**24 + 7) * Fraction(1.15))  # exact
    assert next_price(FLOOR, 0.0, floor=FLOOR, ceiling=CEILING) == FLOOR
    assert next_price(CEILING - 1, 1.0, floor=FLOOR, ceiling=CEILING) == CEILING
    assert isinstance(next_price(10**18, 0.9, **rule), int)


def test_next_price__float__the_simulator_s_rule_is_this_one():
    p = sim.Params()
    assert (p.price_step, p.target_utilisation) == (DEFAULT_STEP, DEFAULT_TARGET_UTILISATION)
    for price, used in ((0.05, 1.0), (0.05, 0.0), (0.19, 1.0), (0.011, 0.0), (0.07, 0.42)):
        moved = price * (1 + p.price_step * (used - p.target_utilisation))
        assert sim.next_price(price, used, p) == min(p.price_ceiling, max(p.price_floor, moved))
        assert sim.next_price(price, used, p) == next_price(price, used, floor=p.price_floor,
                                                             ceiling=p.price_ceiling)


def test_utilisation__bytes_over_capacity__capped_at_full():
    assert capacity_bytes(8.0, 1) == 1_000_000
    assert utilisation(250_000, 8.0, 1) == 0.25
    assert utilisation(5_000_000, 8.0, 1) == 1.0  # more than advertised counts as full
    assert utilisation(0, 8.0, 0) == 1.0


def test_worth_updating__more_than_one_percent():
    assert not worth_updating(1000, 1010) and worth_updating(1000, 1011) and worth_updating(1000, 989)


@pytest.mark.parametrize("kwargs, message", [
    (dict(floor=0, ceiling=5, capacity_mbps=1), "the price floor must be at least 1 token wei per GiB"),
    (dict(floor=6, ceiling=5, capacity_mbps=1), "the price floor (6) is above the ceiling (5)"),
    (dict(floor=1, ceiling=1 << 128, capacity_mbps=1), "the price ceiling must be below 2**128"),
    (dict(floor=1, ceiling=5, capacity_mbps=0), "capacity_mbps is the bandwidth the node sells and must be above 0"),
    (dict(floor=1, ceiling=5, capacity_mbps=1, target_utilisation=0), "target_utilisation is a share"),
    (dict(floor=1, ceiling=5, capacity_mbps=1, step=0), "step must be above 0 and below 1 / target_utilisation"),
])
def test_price_rule__bad_bounds__refused_in_words(kwargs, message):
    with pytest.raises(ValueError) as info:
        PriceRule(**kwargs)
    assert str(info.value).startswith(message)


# -- AutoPricer: when and what, with a fake clock -------------------------------------------------------

def test_pricer__first_decision_at_the_end_of_the_start_epoch__window_from_the_start():
    pricer = AutoPricer(RULE, DAY, started=T0 + 600)
    assert pricer.next_decision_at() == T0 + DAY
    assert pricer.due(T0 + 600) is None and pricer.due(T0 + DAY - 1) is None
    window = pricer.due(T0 + DAY + 2)
    assert window == Window(T0 // DAY, T0 + 600, T0 + DAY)
    proposal = pricer.propose(window, int(0.9 * capacity_bytes(8.0, window.seconds)), FLOOR)
    assert proposal.changed and proposal.new_price == math.ceil(Fraction(FLOOR) * Fraction(1 + 0.5 * (0.9 - 0.7)))
    assert proposal.reason.startswith("utilisation 90.0% (") and "target 70%): up to" in proposal.reason
    pricer.done(proposal, "updated", T0 + DAY + 2)
    assert pricer.due(T0 + DAY + 3) is None and pricer.due(T0 + 2 * DAY - 1) is None  # once per epoch
    assert pricer.next_decision_at() == T0 + 2 * DAY
    assert pricer.due(T0 + 2 * DAY) == Window(T0 // DAY + 1, T0 + DAY, T0 + 2 * DAY)


def test_pricer__started_late_in_the_epoch__too_little_seen__price_stays():
    pricer = AutoPricer(RULE, DAY, started=T0 + DAY * (1 - MIN_OBSERVED) + 1)
    window = pricer.due(T0 + DAY)
    proposal = pricer.propose(window, capacity_bytes(8.0, window.seconds), FLOOR)
    assert not proposal.changed and "too little to judge demand: the price stays" in proposal.reason
    # ... unless the listing is outside the bounds (set by hand): it moves back in at once.
    assert pricer.propose(window, 0, 3 * CEILING).new_price == CEILING


def test_pricer__full_fuller_idle__up_to_the_ceiling_then_down_to_the_floor():
    ceiling = 12 * FLOOR // 10
    pricer = AutoPricer(PriceRule(FLOOR, ceiling, 8.0), DAY, started=T0)
    price, prices = FLOOR, []
    for day, carried in enumerate((0.9 * FULL_DAY, 2 * FULL_DAY, 0, 0)):
        now = T0 + (day + 1) * DAY
        proposal = pricer.propose(pricer.due(now), int(carried), price)
        pricer.done(proposal, "updated" if proposal.changed else "unchanged", now)
        price = proposal.new_price
        prices.append(price)
    # +10 % (rounded up), +15 % clamped to the ceiling, -35 % clamped to the floor, stays at the floor
    assert prices == [1_100_000_000_000_001, ceiling, FLOOR, FLOOR]


def test_pricer__move_under_one_percent__not_worth_the_gas():
    pricer = AutoPricer(RULE, DAY, started=T0)
    proposal = pricer.propose(pricer.due(T0 + DAY), int(0.71 * FULL_DAY), 1_500_000_000_000_000)
    assert not proposal.changed and proposal.reason.endswith("the price stays (a move under 1 % is not worth an "
                                                            "update's gas)")


def test_pricer__missed_epochs__decides_only_the_latest_once():
    pricer = AutoPricer(RULE, DAY, started=T0)
    window = pricer.due(T0 + 5 * DAY + 10)
    assert window == Window(T0 // DAY + 4, T0 + 4 * DAY, T0 + 5 * DAY)
    pricer.done(pricer.propose(window, 0, CEILING), "updated", T0 + 5 * DAY + 10)
    assert pricer.due(T0 + 6 * DAY - 1) is None


def test_pricer__retry__same_window_after_retry_s_then_the_next_epoch_s():
    pricer = AutoPricer(RULE, DAY, started=T0, retry_s=30)
    window = pricer.due(T0 + DAY)
    proposal = pricer.propose(window, FULL_DAY, FLOOR)
    pricer.retry("not sent yet: no answer", T0 + DAY, proposal)
    assert pricer.due(T0 + DAY + 29) is None and pricer.next_decision_at() == T0 + DAY + 30
    assert pricer.due(T0 + DAY + 30) == window
    assert pricer.status()["last"]["outcome"] == "not sent yet: no answer"
    pricer.retry("read failed", T0 + 2 * DAY - 5)
    assert pricer.due(T0 + 2 * DAY + 25) == Window(window.epoch + 1, T0 + DAY, T0 + 2 * DAY)


def test_pricer__status__rule_epoch_and_last_decision_as_json_values():
    import json

    pricer = AutoPricer(RULE, DAY, started=T0)
    status = pricer.status()
    assert status == {"mode": "auto", "floor": FLOOR, "ceiling": CEILING, "capacity_mbps": 8.0,
                      "target_utilisation": 0.7, "step": 0.5, "epoch_s": DAY, "next_decision_at": T0 + DAY,
                      "last": None}
    proposal = pricer.propose(pricer.due(T0 + DAY), FULL_DAY, FLOOR)
    pricer.done(proposal, "updated", T0 + DAY)
    last = json.loads(json.dumps(pricer.status()))["last"]
    assert (last["epoch"], last["utilisation"], last["old_price"], last["new_price"], last["outcome"]) == \
        (T0 // DAY, 1.0, FLOOR, proposal.new_price, "updated")


# -- AutoPrice: the runtime's handling of the chain's answers (the chain itself: test_autoprice_chain.py) -------

class Store:
    def __init__(self, carried):
        self.carried = carried

    def paid_bytes_between(self, start, end):
        return self.carried


class Chain:
    """Answers as NodeChain does: the listing, then each update's outcome in turn."""

    def __init__(self, price, outcomes):
        self.price, self.outcomes, self.sent = price, list(outcomes), []

    def listed_price(self):
        return self.price

    def update_price(self, region, price):
        self.sent.append((region, price))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        self.price = price
        return "0xabc"


def test_auto_price__rpc_error__retried_in_the_same_epoch__then_applied(caplog):
    chain, applied = Chain(FLOOR, [ConnectionError("connection refused"), "ok"]), []
    auto = AutoPrice(AutoPricer(RULE, DAY, started=T0, retry_s=30), chain, Store(FULL_DAY), "DE", applied.append)
    caplog.set_level("INFO", logger="warren.node")
    first = auto.step(T0 + DAY)
    assert first.changed and applied == [] and chain.price == FLOOR
    assert "trying again in 30 s" in caplog.text
    assert auto.step(T0 + DAY + 10) is None  # waits out retry_s
    again = auto.step(T0 + DAY + 30)
    assert again.new_price == first.new_price == chain.price and applied == [again.new_price]
    assert chain.sent == [("DE", again.new_price)] * 2
    assert f"auto price: {FLOOR} -> {again.new_price} token wei/GiB after epoch {T0 // DAY}: utilisation 100.0%" \
        in caplog.text
    assert auto.step(T0 + DAY + 60) is None


def test_auto_price__once_per_epoch_refusal__logged_not_raised__next_epoch_decides_again(caplog):
    chain, applied = Chain(FLOOR, [PriceUpdateRefused("node_registry: updated this epoch"), "ok"]), []
    auto = AutoPrice(AutoPricer(RULE, DAY, started=T0), chain, Store(FULL_DAY), "DE", applied.append)
    assert auto.step(T0 + DAY).changed and chain.price == FLOOR and applied == [FLOOR]
    assert "the registry refused" in caplog.text and "node_registry: updated this epoch" in caplog.text
    assert auto.step(T0 + DAY + 3600) is None
    assert auto.step(T0 + 2 * DAY).changed and chain.price > FLOOR and applied[-1] == chain.price
    assert auto.status()["last"]["outcome"] == "updated"


def test_auto_price__unchanged__no_transaction_listing_offered():
    chain, applied = Chain(FLOOR, []), []
    auto = AutoPrice(AutoPricer(RULE, DAY, started=T0), chain, Store(0), "DE", applied.append)
    proposal = auto.step(T0 + DAY)
    assert not proposal.changed and chain.sent == [] and applied == [FLOOR]


def test_status_line__auto__price_bounds_next_decision_and_last_reason():
    from agents.node.cli import _price_line

    pricer = AutoPricer(RULE, DAY, started=T0)
    pricer.done(pricer.propose(pricer.due(T0 + DAY), FULL_DAY, FLOOR), "updated", T0 + DAY)
    line = _price_line({"price_per_gib": 1_150_000_000_000_001, "price": pricer.status()})
    assert line.startswith(f"price: auto, 1150000000000001 token wei/GiB now, within [{FLOOR}, {CEILING}], towards "
                           f"70% of 8 Mbit/s; next decision 2024-10-06 00:00 UTC; after epoch {T0 // DAY}: "
                           f"utilisation 100.0% (")
    assert line.endswith("(updated)")
    assert _price_line({"price_per_gib": 5, "price": {"mode": "fixed"}}) is None and _price_line({}) is None
