"""The range scheduler of `warren fetch --paths N` (agents.client.ranges) on a fake clock: simulated
paths of given rates pull a file through it; every byte must be kept exactly once, faster paths
must take more, a failed path's bytes must come back, and the end must not wait for the slowest
path. The HTTP side is exercised by tests/e2e/test_multipath_e2e.py."""

import pytest

from agents.client.ranges import MIN_RANGE, RETRY_S, RangeScheduler, SchedulerError

MB = 1_000_000
#: Simulation step (seconds of the fake clock).
DT = 0.01
#: The simulated fetcher declares a transfer failed after this much silence (seconds).
STALL_S = 3.0


def simulate(size: int, rates: dict[int, float], *, dies: dict[int, float] | None = None,
             limit_s: float = 120.0, **kwargs):
    """Run the scheduler with ``rates`` (bytes/s per path); a path in ``dies`` stops delivering at
    that time (its transfer is declared failed after STALL_S of silence, as the fetcher's read
    timeout does). Returns (scheduler, finish time, kept spans)."""
    dies = dies or {}
    scheduler = RangeScheduler(size, rates, **kwargs)
    spans: list[tuple[int, int]] = []
    offset = {}
    silent_since = {}
    now = 0.0
    while not scheduler.done:
        assert now < limit_s, f"not done after {limit_s} s: {scheduler.kept} of {size}"
        for path, rate in rates.items():
            dead = path in dies and now >= dies[path]
            if path not in scheduler.active:
                got = scheduler.take(path, now)
                if got is None:
                    continue
                offset[path] = got[0]
                silent_since[path] = now
            if dead:
                if now - silent_since[path] >= STALL_S:
                    scheduler.failed(path, now)
                continue
            held = scheduler.active[path]
            chunk = min(int(rate * DT), 64 << 10, held.remaining) or held.remaining
            keep, wanted = scheduler.received(path, chunk, now)
            if keep:
                spans.append((offset[path], offset[path] + keep))
                offset[path] += keep
            silent_since[path] = now
            if wanted == 0 and path in scheduler.active:
                del scheduler.active[path]  # pragma: no cover - the scheduler removes it itself
        now += DT
    return scheduler, now, spans


def assert_covered_once(spans, size):
    spans = sorted(spans)
    position = 0
    for start, end in spans:
        assert start == position, f"gap or overlap at {position}: next span starts at {start}"
        position = end
    assert position == size


def test_equal_paths__split_evenly__finish_near_the_sum_of_rates():
    size = 24 * MB
    scheduler, took, spans = simulate(size, {0: 3 * MB, 1: 3 * MB, 2: 3 * MB})
    assert_covered_once(spans, size)
    assert took < size / (9 * MB) * 1.15, took
    shares = [s["bytes"] / size for s in scheduler.stats().values()]
    assert all(0.25 < share < 0.42 for share in shares), shares


def test_faster_path__takes_more__finish_near_the_sum_of_rates():
    size = 40 * MB
    scheduler, took, spans = simulate(size, {0: 6 * MB, 1: 2 * MB})
    assert_covered_once(spans, size)
    stats = scheduler.stats()
    assert stats[0]["bytes"] > 2.4 * stats[1]["bytes"], stats
    assert stats[0]["ranges"] > stats[1]["ranges"]
    assert took < size / (8 * MB) * 1.15, took


def test_end_game__a_very_slow_path_does_not_hold_up_the_end():
    size = 24 * MB
    scheduler, took, spans = simulate(size, {0: 4 * MB, 1: 4 * MB, 2: 0.2 * MB})
    assert_covered_once(spans, size)
    assert took < size / (8.2 * MB) * 1.2, took  # without take-overs: its first range alone is ~5 s
    assert scheduler.requeued > 0


def test_path_dies_mid_download__its_range_comes_back__file_complete_once():
    size = 24 * MB
    scheduler, took, spans = simulate(size, {0: 3 * MB, 1: 3 * MB, 2: 3 * MB}, dies={2: 1.0})
    assert_covered_once(spans, size)
    stats = scheduler.stats()
    assert scheduler.requeued > 0 and stats[2]["bytes"] < 4 * MB
    when, path, _, why = scheduler.handovers[0]
    assert path == 2 and why == "silent" and 1.0 <= when < 1.0 + STALL_S  # before its read would time out
    assert took < size / (6 * MB) + STALL_S + 1.0, took


def test_failed_path__rests_then_gets_a_small_range():
    scheduler = RangeScheduler(100 * MB, [0, 1])
    start, end = scheduler.take(0, 0.0)
    scheduler.received(0, MB, 0.1)
    assert scheduler.failed(0, 0.2) == end - start - MB
    assert scheduler.handovers == [(0.2, 0, end - start - MB, "failed")]
    assert scheduler.take(0, 0.2 + RETRY_S / 2) is None
    again = scheduler.take(0, 0.2 + RETRY_S)
    assert again == (start + MB, start + MB + MIN_RANGE)  # the given-back bytes first, a small probe
    scheduler.failed(0, 10.0)
    assert scheduler.take(0, 10.0 + RETRY_S) is None  # the second failure in a row rests twice as long


def test_received__range_cut_short_by_a_take_over__extra_bytes_not_kept():
    scheduler = RangeScheduler(8 * MB, [0, 1], first_range=8 * MB)
    assert scheduler.take(0, 0.0) == (0, 8 * MB)
    scheduler.received(0, MB, 0.1)
    assert scheduler.take(1, 2.0) == (MB, 8 * MB)  # path 0 silent for over a second: all of the rest
    assert scheduler.received(0, 64 << 10, 2.1) == (0, 0)
    assert scheduler.received(1, 7 * MB, 2.2) == (7 * MB, 0) and scheduler.done


def test_misuse__raises():
    scheduler = RangeScheduler(MB, [0])
    scheduler.take(0, 0.0)
    with pytest.raises(SchedulerError):
        scheduler.take(0, 0.0)
    with pytest.raises(SchedulerError):
        RangeScheduler(MB, [0]).received(0, 10, 0.0)
    with pytest.raises(SchedulerError):
        RangeScheduler(MB, [])


def test_empty_file__done_at_once():
    scheduler = RangeScheduler(0, [0, 1])
    assert scheduler.done and scheduler.take(0, 0.0) is None
