"""The sliding anti-replay window: edges of an 8,128-counter window (>= 2,048 required)."""

import random

from agents.wireguard.replay import WINDOW_SIZE, ReplayWindow
from agents.wireguard.timers import REJECT_AFTER_MESSAGES

LIMIT = REJECT_AFTER_MESSAGES


def test_window__is_at_least_2048_wide():
    assert WINDOW_SIZE >= 2048


def test_check_and_set__first_use__accepts_zero_then_refuses_duplicate():
    window = ReplayWindow()
    assert window.check_and_set(0, LIMIT)
    assert not window.check_and_set(0, LIMIT)


def test_check_and_set__out_of_order_inside_window__each_accepted_once():
    window = ReplayWindow()
    order = list(range(3000))
    random.Random(1).shuffle(order)
    assert all(window.check_and_set(c, LIMIT) for c in order)
    assert not any(window.check_and_set(c, LIMIT) for c in order)


def test_check_and_set__window_edges():
    window = ReplayWindow()
    top = 10 * WINDOW_SIZE
    assert window.check_and_set(top, LIMIT)
    assert window.check_and_set(top - WINDOW_SIZE, LIMIT)  # oldest still inside
    assert not window.check_and_set(top - WINDOW_SIZE - 1, LIMIT)  # just too old
    assert window.check_and_set(top - 2048, LIMIT)  # 2,048 behind: accepted
    assert not window.check_and_set(top - 2048, LIMIT)  # and only once
    assert window.check_and_set(top - 1, LIMIT)


def test_check_and_set__far_ahead__slides_and_forgets_old_bits():
    window = ReplayWindow()
    for counter in range(100):
        assert window.check_and_set(counter, LIMIT)
    far = 2**40
    assert window.check_and_set(far, LIMIT)
    assert not window.check_and_set(99, LIMIT)  # now far too old
    # Counters right behind the new top were never seen, even those sharing ring slots with old ones.
    assert all(window.check_and_set(far - i, LIMIT) for i in range(1, 200))


def test_check_and_set__slide_by_less_than_ring__clears_reused_blocks():
    window = ReplayWindow()
    assert window.check_and_set(5, LIMIT)
    # 128 blocks of 64 later the ring slot of counter 5 is reused for 8197: it must read as unseen.
    assert window.check_and_set(5 + 128 * 64, LIMIT)
    assert window.check_and_set(5 + 128 * 64 - 1, LIMIT)


def test_check_and_set__at_limit__refused():
    window = ReplayWindow()
    assert not window.check_and_set(LIMIT, LIMIT)
    assert window.check_and_set(LIMIT - 1, LIMIT)
