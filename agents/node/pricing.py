"""``price_per_gib = "auto"``: the node's price follows how full it is, one step per epoch (pure).

The rule (docs/ECONOMICS.md, "Prices"; the simulator's :func:`agents.economy.sim.next_price` is this
function): once per epoch the price moves by ``step x (utilisation - target)`` of itself, so a node
fuller than the target raises its price and an emptier one lowers it, and is clamped to the
operator's ``[floor, ceiling]``. Utilisation is what the node carried in the epoch that just ended
(the bytes its channels' receipts added: the bytes it was paid for) over what its advertised capacity
could carry in that time.

Why per epoch: node_registry lets a listing change at most once per epoch (``update_epoch_length``,
the rewards epoch), and rewards measure demand per epoch too, so a price that moves faster could not
be published and one that moves slower would lag the demand rewards pay for.

This module holds no clock, no chain and no store: :class:`AutoPricer` is told the time and the
bytes, and says what the price should become; :mod:`agents.node.autoprice` sends it.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

__all__ = [
    "DEFAULT_STEP",
    "DEFAULT_TARGET_UTILISATION",
    "AutoPricer",
    "PriceRule",
    "Proposal",
    "Window",
    "capacity_bytes",
    "next_price",
    "utilisation",
    "worth_updating",
]

#: Share of its capacity a node aims to sell: enough headroom that a burst of new clients is still
#: served well, high enough that the capacity earns (the simulator's default, docs/ECONOMICS.md).
DEFAULT_TARGET_UTILISATION = 0.7
#: How far one epoch moves the price per unit of utilisation off target: with the 0.7 target an epoch
#: moves it by at most +15 % (full) and -35 % (idle), so a price finds demand within days without
#: swinging past it (the simulator's default).
DEFAULT_STEP = 0.5
#: A move of this share of the price or less is not worth an update's gas (~35,000): the price stays
#: (the simulator's rule too).
MIN_CHANGE = 0.01
#: An epoch the node saw less of than this share (it started late in it) says too little about demand:
#: the price stays until the next one.
MIN_OBSERVED = 0.5
#: Bits per Mbit/s, and bits per byte: capacity in Mbit/s -> bytes per second.
BYTES_PER_MBPS_SECOND = 1_000_000 // 8
#: node_registry takes prices below 2**240, but the overlay's PeerRecord holds a price in 16 bytes.
MAX_PRICE = (1 << 128) - 1


def next_price(price, utilisation: float, *, floor, ceiling, step: float = DEFAULT_STEP,
               target: float = DEFAULT_TARGET_UTILISATION):
    """One epoch's step: ``price x (1 + step x (utilisation - target))`` within ``[floor, ceiling]``.

    Args:
        price: the current price, token wei (int) or any unit as a float (the simulator's dollars).
        utilisation: carried over capacity in the epoch that ended (0 .. 1).
        floor / ceiling: the bounds, in the unit of ``price``.
        step / target: see :data:`DEFAULT_STEP` and :data:`DEFAULT_TARGET_UTILISATION`.

    Returns:
        The next price, of the type of ``price``. Whole token wei are computed exactly and rounded
        away from the current price (up when rising, down when falling), so a step that should move a
        small price moves it by at least one wei.
    """
    factor = 1 + step * (utilisation - target)
    if isinstance(price, int):
        exact = Fraction(price) * Fraction(factor)
        moved = math.ceil(exact) if factor > 1 else math.floor(exact)
    else:
        moved = price * factor
    return min(ceiling, max(floor, moved))


def worth_updating(old, new) -> bool:
    """Whether moving from ``old`` to ``new`` is worth an update (more than :data:`MIN_CHANGE` of ``old``)."""
    return abs(new - old) > MIN_CHANGE * old


def capacity_bytes(capacity_mbps: float, seconds: float) -> int:
    """Bytes ``capacity_mbps`` carries in ``seconds``."""
    return int(capacity_mbps * BYTES_PER_MBPS_SECOND * seconds)


def utilisation(carried_bytes: int, capacity_mbps: float, seconds: float) -> float:
    """``carried_bytes`` over what ``capacity_mbps`` carries in ``seconds``, at most 1.

    More bytes than the capacity means the operator advertises less than the node can carry; it counts
    as full, so one epoch never moves the price by more than a full node's step.
    """
    room = capacity_bytes(capacity_mbps, seconds)
    return 1.0 if room <= 0 else min(1.0, carried_bytes / room)


@dataclasses.dataclass(frozen=True)
class PriceRule:
    """An operator's ``[price]`` table: the bounds and how the price moves between them.

    Attributes:
        floor: lowest price, token wei per GiB (at least 1: a price of 0 cannot grow by a factor).
        ceiling: highest price, token wei per GiB.
        capacity_mbps: the bandwidth the node sells (not its line's peak), Mbit/s; utilisation is
            measured against it, both directions counted as receipts count them.
        target_utilisation: see :data:`DEFAULT_TARGET_UTILISATION`.
        step: see :data:`DEFAULT_STEP`.

    Raises:
        ValueError: a bound or parameter the rule cannot work with, said in words.
    """

    floor: int
    ceiling: int
    capacity_mbps: float
    target_utilisation: float = DEFAULT_TARGET_UTILISATION
    step: float = DEFAULT_STEP

    def __post_init__(self) -> None:
        if self.floor < 1:
            raise ValueError(f"the price floor must be at least 1 token wei per GiB (a price of 0 cannot grow "
                             f"by a factor), not {self.floor}")
        if self.floor > self.ceiling:
            raise ValueError(f"the price floor ({self.floor}) is above the ceiling ({self.ceiling})")
        if self.ceiling > MAX_PRICE:
            raise ValueError(f"the price ceiling must be below 2**128 token wei per GiB (the overlay record holds "
                             f"16 bytes), not {self.ceiling}")
        if not self.capacity_mbps > 0 or math.isinf(self.capacity_mbps):
            raise ValueError(f"capacity_mbps is the bandwidth the node sells and must be above 0, not "
                             f"{self.capacity_mbps}")
        if not 0 < self.target_utilisation <= 1:
            raise ValueError(f"target_utilisation is a share of the capacity, above 0 and at most 1, not "
                             f"{self.target_utilisation}")
        if not 0 < self.step < 1 / self.target_utilisation:
            raise ValueError(f"step must be above 0 and below 1 / target_utilisation "
                             f"({1 / self.target_utilisation:g}), or an idle epoch would take the price to zero "
                             f"or below; found {self.step}")

    def clamp(self, price: int) -> int:
        """``price`` within ``[floor, ceiling]``."""
        return min(self.ceiling, max(self.floor, int(price)))

    def next(self, price: int, used: float) -> int:
        """:func:`next_price` with this rule's bounds and parameters."""
        return next_price(price, used, floor=self.floor, ceiling=self.ceiling, step=self.step,
                          target=self.target_utilisation)

    def to_dict(self) -> dict:
        """The ``[price]`` table (amounts as :func:`agents.tomlconfig.wei_to_toml` writes them)."""
        from agents.tomlconfig import wei_to_toml

        return {"floor": wei_to_toml(self.floor), "ceiling": wei_to_toml(self.ceiling),
                "capacity_mbps": float(self.capacity_mbps), "target_utilisation": float(self.target_utilisation),
                "step": float(self.step)}


@dataclasses.dataclass(frozen=True)
class Window:
    """The stretch of a finished epoch that a price decision measures.

    Attributes:
        epoch: the finished epoch (unix time // epoch length).
        start: unix seconds: the epoch's start, or the node's start when that was later.
        end: unix seconds: the epoch's end.
    """

    epoch: int
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclasses.dataclass(frozen=True)
class Proposal:
    """What the rule makes of one window.

    Attributes:
        window: what was measured.
        carried_bytes: bytes the receipts added in it.
        capacity_bytes: what the capacity carries in it.
        utilisation: their ratio (at most 1).
        old_price / new_price: token wei per GiB; equal when the price stays.
        reason: why, in words (for the log and `warren node status`).
    """

    window: Window
    carried_bytes: int
    capacity_bytes: int
    utilisation: float
    old_price: int
    new_price: int
    reason: str

    @property
    def changed(self) -> bool:
        return self.new_price != self.old_price


class AutoPricer:
    """When to decide a price, and what it should be (sans-I/O: the caller passes the time and bytes).

    Use: each tick, :meth:`due` says whether an epoch has ended undecided; if so the caller reads the
    bytes carried in its :class:`Window` and the listed price, asks :meth:`propose`, sends a changed
    price, and reports with :meth:`done` (sent, unchanged, or refused for this epoch: decide again
    next epoch) or :meth:`retry` (the chain did not answer: the same window again shortly, while the
    epoch after it lasts).

    Args:
        rule: the operator's bounds and parameters.
        epoch_s: the epoch length, seconds (node_registry's update epoch).
        started: unix seconds the node started: the first window starts there.
        retry_s: wait after a failed send before the next try, seconds.
    """

    def __init__(self, rule: PriceRule, epoch_s: int, started: float, *, retry_s: float = 30.0) -> None:
        if epoch_s <= 0:
            raise ValueError(f"an epoch lasts more than 0 seconds, not {epoch_s}")
        self.rule = rule
        self.epoch_s = int(epoch_s)
        self.started = float(started)
        self.retry_s = retry_s
        self._decided = self.epoch_of(started) - 1  # the epoch before the start: nothing seen of it
        self._retry_at: float | None = None
        #: The last decision and what came of it (``{"proposal": Proposal, "outcome": str, "at": float}``).
        self.last: dict | None = None

    def epoch_of(self, now: float) -> int:
        """The epoch ``now`` falls in (as the contracts count: unix time // epoch length)."""
        return int(now // self.epoch_s)

    def next_decision_at(self) -> float:
        """Unix seconds of the next decision (the end of the epoch after the last decided one)."""
        if self._retry_at is not None:
            return self._retry_at
        return (self._decided + 2) * self.epoch_s

    def due(self, now: float) -> Window | None:
        """The window to decide now, or None.

        The epoch decided is always the one just finished: a node that missed several (stopped,
        stalled) decides only the latest, once.
        """
        current = self.epoch_of(now)
        finished = current - 1
        if finished <= self._decided:
            return None
        if self._retry_at is not None and now < self._retry_at:
            return None
        start = max(finished * self.epoch_s, self.started)
        end = current * self.epoch_s
        if start >= end:  # started after it ended: nothing seen of it
            self._decided = finished
            return None
        return Window(finished, float(start), float(end))

    def propose(self, window: Window, carried_bytes: int, price: int) -> Proposal:
        """The price after ``window``, from the bytes carried in it and the price listed now (pure)."""
        room = capacity_bytes(self.rule.capacity_mbps, window.seconds)
        used = utilisation(carried_bytes, self.rule.capacity_mbps, window.seconds)
        target = self.rule.target_utilisation
        figures = f"utilisation {used:.1%} ({carried_bytes} of {room} bytes; target {target:.0%})"
        clamped = self.rule.clamp(price)
        if window.seconds < MIN_OBSERVED * self.epoch_s:
            if clamped != price:
                return Proposal(window, carried_bytes, room, used, price, clamped,
                                f"back within [floor, ceiling]; the node saw {window.seconds:.0f} s of epoch "
                                f"{window.epoch}, too little to judge demand")
            return Proposal(window, carried_bytes, room, used, price, price,
                            f"the node saw {window.seconds:.0f} s of epoch {window.epoch}, too little to judge "
                            f"demand: the price stays")
        new = self.rule.next(price, used)
        inside = clamped == price  # a listing outside the bounds (set by hand) always moves back in
        if new == price or (inside and not worth_updating(price, new)):
            return Proposal(window, carried_bytes, room, used, price, price,
                            f"{figures}: the price stays" + ("" if new == price else
                                                               " (a move under 1 % is not worth an update's gas)"))
        direction = "up" if new > price else "down"
        bound = " (the ceiling)" if new == self.rule.ceiling else " (the floor)" if new == self.rule.floor else ""
        return Proposal(window, carried_bytes, room, used, price, new, f"{figures}: {direction} to {new}{bound}")

    def done(self, proposal: Proposal, outcome: str, now: float) -> None:
        """The window's decision is over (``outcome``: "updated", "unchanged", "refused: ...")."""
        self._decided = max(self._decided, proposal.window.epoch)
        self._retry_at = None
        self.last = {"proposal": proposal, "outcome": outcome, "at": now}

    def retry(self, outcome: str, now: float, proposal: Proposal | None = None) -> None:
        """Reading or sending failed for a passing reason (no answer from the chain): the same window
        again in ``retry_s`` (or the next epoch's, once that one has ended)."""
        self._retry_at = now + self.retry_s
        if proposal is not None:
            self.last = {"proposal": proposal, "outcome": outcome, "at": now}

    def status(self) -> dict:
        """The rule, the epoch, and the last decision, as plain JSON values."""
        rule = self.rule
        out = {"mode": "auto", "floor": rule.floor, "ceiling": rule.ceiling, "capacity_mbps": rule.capacity_mbps,
               "target_utilisation": rule.target_utilisation, "step": rule.step, "epoch_s": self.epoch_s,
               "next_decision_at": self.next_decision_at(), "last": None}
        if self.last is not None:
            p: Proposal = self.last["proposal"]
            out["last"] = {"epoch": p.window.epoch, "utilisation": round(p.utilisation, 4),
                           "carried_bytes": p.carried_bytes, "capacity_bytes": p.capacity_bytes,
                           "old_price": p.old_price, "new_price": p.new_price, "reason": p.reason,
                           "outcome": self.last["outcome"], "at": self.last["at"]}
        return out
