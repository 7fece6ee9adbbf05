"""Which byte range of a download each path pulls next (`warren fetch --paths N`), with no I/O.

:class:`RangeScheduler` hands an idle path the next span of the file, sized to about
:data:`TARGET_S` seconds at that path's measured rate (between :data:`MIN_RANGE` and
:data:`MAX_RANGE`): a path that finishes sooner asks sooner and gets more, so faster paths take more
of the file. When nothing is left to hand out, an idle path takes over the back half of the range
that would finish last (all of it when its path has gone silent): the end of a download does not
wait for the slowest path. A path that fails gives its unreceived bytes back, to be handed out
first, and rests (:data:`RETRY_S`, doubling while it keeps failing) before it is given a small
range again. The caller feeds it what arrived (:meth:`RangeScheduler.received`) and is told how
much of it to keep and how much more that range still wants; every byte of the file is kept exactly
once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

__all__ = ["MAX_RANGE", "MIN_RANGE", "RETRY_S", "Range", "RangeScheduler", "SchedulerError", "TARGET_S"]

#: A range is about this many seconds of its path's rate (long enough that a request's round trip
#: and TCP's start matter little, short enough that a failure gives back little).
TARGET_S = 2.0
#: Bounds of a range (bytes): a stolen or re-tried range is never smaller than MIN_RANGE.
MIN_RANGE = 256 << 10
MAX_RANGE = 16 << 20
#: The first range of a path whose rate is not known yet: an eighth of each path's share of the
#: file, at most this (bytes).
FIRST_RANGE = 4 << 20
#: A take-over must promise to finish at least this much sooner (seconds): a new request costs a
#: round trip or two.
GAIN_S = 0.2
#: A failed path rests this long before it is given a range again (seconds), doubling with each
#: failure in a row up to MAX_RETRY_S.
RETRY_S = 2.0
MAX_RETRY_S = 30.0
#: A range that received nothing for this long (seconds) counts as stalled: an idle path may take
#: all of it.
SILENT_S = 1.0
#: Rate smoothing: window of one rate sample and time constant of the average (seconds).
WINDOW_S = 0.25
TAU_S = 1.0


class SchedulerError(ValueError):
    """Our misuse: a path asked for a range while it holds one, or reported on one it does not hold."""


@dataclasses.dataclass
class Range:
    """Bytes ``[start, end)`` of the file, assigned to ``path``; ``pos`` is the next byte expected."""

    start: int
    end: int
    path: int
    pos: int = 0
    last_data: float = 0.0

    def __post_init__(self) -> None:
        self.pos = self.pos or self.start

    @property
    def remaining(self) -> int:
        """Bytes still wanted."""
        return max(0, self.end - self.pos)


@dataclasses.dataclass
class _Path:
    rate: float | None = None
    window_bytes: int = 0
    window_start: float | None = None
    failures: int = 0
    rest_until: float = 0.0
    bytes: int = 0
    ranges: int = 0
    failed: int = 0


class RangeScheduler:
    """Ranges of a ``size``-byte file for ``paths`` (see the module docstring).

    Args:
        size: the file's length in bytes.
        paths: the paths' ids.
        target_s / min_range / max_range: range sizing (seconds, bytes).
        first_range: the first range of a path not measured yet (bytes; None: see FIRST_RANGE).
        retry_s: a failed path's first rest (seconds).
    """

    def __init__(self, size: int, paths: Iterable[int], *, target_s: float = TARGET_S, min_range: int = MIN_RANGE,
                 max_range: int = MAX_RANGE, first_range: int | None = None, retry_s: float = RETRY_S) -> None:
        if size < 0:
            raise SchedulerError(f"a file of {size} bytes")
        self.size = size
        self.paths = {p: _Path() for p in paths}
        if not self.paths:
            raise SchedulerError("no path")
        self.target_s = target_s
        self.min_range, self.max_range, self.retry_s = min_range, max_range, retry_s
        if first_range is None:
            first_range = min(FIRST_RANGE, size // (8 * len(self.paths)))
        self.first_range = max(min_range, first_range)
        #: Spans not handed out, in file order (a failed range's rest goes back here).
        self.todo: list[tuple[int, int]] = [(0, size)] if size else []
        self.active: dict[int, Range] = {}
        self.kept = 0
        #: Bytes given back by failed or taken-over ranges (handed out again).
        self.requeued = 0
        #: Each time a path's unreceived bytes went to others because it failed or went silent:
        #: ``(when, path, bytes, "failed" | "silent")``.
        self.handovers: list[tuple[float, int, int, str]] = []

    # -- state ---------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Every byte kept."""
        return self.kept >= self.size

    def rate(self, path: int) -> float | None:
        """The path's smoothed rate (bytes/s), None until measured."""
        return self.paths[path].rate

    def stats(self) -> dict[int, dict]:
        """Per path: bytes kept, ranges taken, failures, rate (bytes/s)."""
        return {p: {"bytes": s.bytes, "ranges": s.ranges, "failures": s.failed, "rate": s.rate}
                for p, s in self.paths.items()}

    # -- the protocol ----------------------------------------------------------------------------------

    def take(self, path: int, now: float) -> tuple[int, int] | None:
        """The next range ``(start, end)`` (end exclusive) for an idle ``path``, or None: nothing for it
        now (it rests, or every byte is handed out and no range is worth taking over).

        Raises:
            SchedulerError: ``path`` still holds a range.
        """
        state = self.paths[path]
        if path in self.active:
            raise SchedulerError(f"path {path} still holds {self.active[path]}")
        if now < state.rest_until or self.done:
            return None
        size = self._size(path)
        if self.todo:
            start, end = self.todo[0]
            piece_end = min(end, start + size)
            if end - piece_end < self.min_range:  # no sliver left behind
                piece_end = end
            if piece_end == end:
                self.todo.pop(0)
            else:
                self.todo[0] = (piece_end, end)
            return self._assign(path, start, piece_end, now)
        return self._take_over(path, now)

    def received(self, path: int, nbytes: int, now: float) -> tuple[int, int]:
        """``nbytes`` arrived on ``path``'s range (in order, from its ``pos``).

        Returns:
            ``(keep, wanted)``: how many of them to keep (the range may have been cut short by a
            take-over meanwhile) and how many more bytes the range wants (0: it is complete; stop).

        Raises:
            SchedulerError: ``path`` holds no range.
        """
        current = self.active.get(path)
        if current is None:
            raise SchedulerError(f"path {path} holds no range")
        keep = max(0, min(nbytes, current.end - current.pos))
        current.pos += keep
        if keep:
            current.last_data = now
        state = self.paths[path]
        state.bytes += keep
        state.failures = 0
        self.kept += keep
        self._measure(state, nbytes, now)
        if current.remaining == 0:
            del self.active[path]
            return keep, 0
        return keep, current.remaining

    def failed(self, path: int, now: float) -> int:
        """``path``'s transfer broke: its range's unreceived bytes go back first; the path rests.

        Returns:
            The bytes given back.
        """
        state = self.paths[path]
        state.failed += 1
        state.failures += 1
        state.rate = None
        state.window_start = None
        state.rest_until = now + min(MAX_RETRY_S, self.retry_s * 2 ** (state.failures - 1))
        current = self.active.pop(path, None)
        if current is None or current.remaining == 0:
            return 0
        self._give_back(current.pos, current.end)
        self.handovers.append((now, path, current.end - current.pos, "failed"))
        return current.end - current.pos

    # -- inside -----------------------------------------------------------------------------------------

    def _size(self, path: int) -> int:
        rate = self.paths[path].rate
        if rate is None:
            return self.min_range if self.paths[path].failed else self.first_range
        return int(min(self.max_range, max(self.min_range, rate * self.target_s)))

    def _assign(self, path: int, start: int, end: int, now: float) -> tuple[int, int]:
        self.active[path] = Range(start, end, path, last_data=now)
        self.paths[path].ranges += 1
        return start, end

    def _give_back(self, start: int, end: int) -> None:
        self.requeued += end - start
        self.todo.append((start, end))
        self.todo.sort()

    def _finish_s(self, held: Range, now: float) -> float:
        """When ``held`` would finish at its path's rate (infinite when its path went silent)."""
        rate = self.paths[held.path].rate
        if now - held.last_data >= SILENT_S or not rate:
            return math.inf
        return held.remaining / rate

    def _take_over(self, path: int, now: float) -> tuple[int, int] | None:
        """End game: take the back of the range that would finish last, so that both parts end together
        at their paths' rates (all of it when what its path would keep is under MIN_RANGE, or its path
        went silent)."""
        held = [r for r in self.active.values() if r.remaining > 0]
        if not held:
            return None
        victim = max(held, key=lambda r: (self._finish_s(r, now), r.remaining))
        finish = self._finish_s(victim, now)
        theirs = self.paths[victim.path].rate
        mine = self.paths[path].rate or theirs
        if finish == math.inf:
            kept = 0
        else:
            kept = int(victim.remaining * theirs / (theirs + mine))
            if kept < self.min_range:
                kept = 0
            taken = victim.remaining - kept
            if taken < self.min_range or finish - taken / mine < GAIN_S:
                return None
        split = victim.pos + kept
        end, victim.end = victim.end, split
        self.requeued += end - split
        if finish == math.inf:
            self.handovers.append((now, victim.path, end - split, "silent"))
        return self._assign(path, split, end, now)

    @staticmethod
    def _measure(state: _Path, nbytes: int, now: float) -> None:
        if state.window_start is None:
            state.window_start, state.window_bytes = now, 0
            return
        state.window_bytes += nbytes
        elapsed = now - state.window_start
        if elapsed < WINDOW_S:
            return
        sample = state.window_bytes / elapsed
        alpha = 1 - math.exp(-elapsed / TAU_S)
        state.rate = sample if state.rate is None else state.rate + alpha * (sample - state.rate)
        state.window_start, state.window_bytes = now, 0
