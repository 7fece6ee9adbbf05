"""Bounded record store with per-source rate limits.

Holds the records this node owns or replicates. Memory is bounded (:attr:`RecordStore.max_records`,
:attr:`RecordStore.max_bytes`); each source (UDP endpoint) gets a token bucket so that one peer cannot
fill the store or burn our CPU on signature checks; the table of buckets is itself bounded (least
recently used sources are forgotten). Replays are refused: a record whose sequence number is older
than the one held for the same (kind, key, node) is ``replayed``; the same sequence with different
bytes (equivocation) is refused the same way.
"""

from __future__ import annotations

from collections import OrderedDict

from .errors import RecordRejected
from .records import REVOCATION, Record, RecordValidator

__all__ = ["RecordStore", "TokenBucket"]


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``burst`` saved."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def take(self, now: float) -> bool:
        """Spend one token if available."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class RecordStore:
    """Records by DHT key, validated on entry.

    Args:
        validator: checks signatures, ids, TTL, revocation.
        max_records: most records held (10,000 x 1 KiB = 10 MiB worst case).
        max_bytes: most record bytes held.
        rate: stores accepted per second per source (republication every 10 minutes needs far less).
        burst: stores a source may send at once (a node joining pushes a few records).
        max_sources: rate-limit buckets kept.
    """

    def __init__(self, validator: RecordValidator, max_records: int = 10_000, max_bytes: int = 4 << 20,
                 rate: float = 5.0, burst: float = 20.0, max_sources: int = 4096) -> None:
        self.validator = validator
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.rate, self.burst, self.max_sources = rate, burst, max_sources
        self._by_key: dict[int, dict[tuple, Record]] = {}
        self._count = 0
        self._bytes = 0
        self._buckets: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        """Bytes of records held."""
        return self._bytes

    def _allow(self, source, now: float) -> bool:
        b = self._buckets.get(source)
        if b is None:
            b = self._buckets[source] = TokenBucket(self.rate, self.burst, now)
            while len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
        return b.take(now)

    def put(self, raw: bytes, source, now: float) -> Record:
        """Validate and keep a record from ``source``; returns it or raises RecordRejected."""
        if not self._allow(source, now):
            raise RecordRejected("rate-limited")
        rec = self.validator.validate(raw, now)
        slot = (rec.kind, rec.node_id)
        held = self._by_key.get(rec.key, {}).get(slot)
        if held is not None:
            if rec.seq < held.seq or (rec.seq == held.seq and rec.raw != held.raw):
                raise RecordRejected("replayed", f"seq {rec.seq} <= held {held.seq}")
            if rec.raw == held.raw:
                return held
            self._drop(rec.key, slot)
        if self._count >= self.max_records or self._bytes + len(raw) > self.max_bytes:
            self.expire(now)
            if self._count >= self.max_records or self._bytes + len(raw) > self.max_bytes:
                raise RecordRejected("store-full")
        self._by_key.setdefault(rec.key, {})[slot] = rec
        self._count += 1
        self._bytes += len(raw)
        if rec.kind == REVOCATION:
            self.apply_revocation(rec)
        return rec

    def apply_revocation(self, rec: Record) -> None:
        """Mark a node revoked (after a valid certificate) and drop every record about it."""
        self.validator.revoked.add(rec.node_id)
        for key in list(self._by_key):
            for slot in [s for s in self._by_key.get(key, {}) if s[1] == rec.node_id and s[0] != REVOCATION]:
                self._drop(key, slot)

    def _drop(self, key: int, slot: tuple) -> None:
        bucket = self._by_key.get(key)
        if not bucket or slot not in bucket:
            return
        rec = bucket.pop(slot)
        self._count -= 1
        self._bytes -= len(rec.raw)
        if not bucket:
            del self._by_key[key]

    def get(self, key: int, now: float) -> list[bytes]:
        """Raw records under ``key`` that have not expired."""
        return [r.raw for r in self._by_key.get(key, {}).values() if r.expires > now]

    def items(self):
        """``(key, [raw, ...])`` for every key held."""
        return [(k, [r.raw for r in v.values()]) for k, v in self._by_key.items()]

    def expire(self, now: float) -> int:
        """Drop expired records; returns how many."""
        dead = [(k, s) for k, v in self._by_key.items() for s, r in v.items() if r.expires <= now]
        for k, s in dead:
            self._drop(k, s)
        return len(dead)
