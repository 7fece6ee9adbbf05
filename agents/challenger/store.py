"""The challenger's durable record: every transcript, its verdict, and whether the report went out.

One SQLite file (0600, WAL, ``synchronous=FULL`` as the node's store): a transcript is stored,
keyed by its hash, *before* its report is sent, so a crash or an RPC outage between the two loses
nothing: :meth:`TranscriptStore.unreported` lists what still has to go out (backfill), and the hash
on chain always names a transcript the challenger can produce. Loading checks the hash again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from agents.challenger.verdict import Transcript, Verdict

__all__ = ["StoredReport", "TranscriptStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transcripts (
    hash TEXT PRIMARY KEY,            -- SHA-256 of the canonical transcript, hex
    node_id TEXT NOT NULL,            -- hex
    epoch INTEGER NOT NULL,
    body TEXT NOT NULL,               -- canonical JSON
    passed INTEGER NOT NULL,
    throughput_kbps INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    tampered INTEGER NOT NULL,
    reasons TEXT NOT NULL,            -- JSON list
    report_tx TEXT NOT NULL DEFAULT '',  -- '' until the report is mined; 'expired' if its epoch ended first
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transcripts_epoch ON transcripts (epoch, node_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS probes (
    node_id TEXT NOT NULL,            -- hex
    epoch INTEGER NOT NULL,
    at REAL NOT NULL,                 -- the planned time (agents.challenger.plan.probe_times)
    answered INTEGER NOT NULL,
    PRIMARY KEY (node_id, epoch, at)
);
"""


class StoredReport:
    """A stored verdict, as the report sender needs it."""

    __slots__ = ("epoch", "hash", "latency_ms", "node_id", "passed", "reasons", "report_tx", "tampered",
                 "throughput_kbps")

    def __init__(self, row: tuple) -> None:
        (self.hash, node_id, self.epoch, self.passed, self.throughput_kbps, self.latency_ms, self.tampered,
         reasons, self.report_tx) = row
        self.node_id = bytes.fromhex(node_id)
        self.passed, self.tampered = bool(self.passed), bool(self.tampered)
        self.reasons = json.loads(reasons)


class TranscriptStore:
    """Transcripts and report state in ``path`` (created 0600)."""

    def __init__(self, path: str | os.PathLike, *, clock=time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def save(self, transcript: Transcript, verdict: Verdict) -> str:
        """Store a transcript and its verdict (idempotent); returns the hash (hex)."""
        digest = transcript.digest().hex()
        if verdict.transcript_hash.hex() != digest:
            raise ValueError("the verdict is not this transcript's (hashes differ)")
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO transcripts (hash, node_id, epoch, body, passed, throughput_kbps, latency_ms, "
                "tampered, reasons, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (digest, transcript.node_id, transcript.epoch, transcript.canonical().decode(), int(verdict.passed),
                 verdict.throughput_kbps, verdict.latency_ms, int(verdict.tampered), json.dumps(list(verdict.reasons)),
                 self._clock()))
        return digest

    def transcript(self, digest: str) -> Transcript:
        """The stored transcript of ``digest`` (hex).

        Raises:
            KeyError: no such transcript.
            ValueError: the stored body no longer hashes to its key (the file was changed).
        """
        with self._lock:
            row = self._db.execute("SELECT body FROM transcripts WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            raise KeyError(f"no transcript {digest} in {self.path}")
        transcript = Transcript.from_dict(json.loads(row[0]))
        if transcript.digest().hex() != digest:
            raise ValueError(f"transcript {digest} in {self.path} was changed: it no longer hashes to its key")
        return transcript

    def _reports(self, where: str, args: tuple) -> list[StoredReport]:
        with self._lock:
            rows = self._db.execute(
                "SELECT hash, node_id, epoch, passed, throughput_kbps, latency_ms, tampered, reasons, report_tx "
                f"FROM transcripts WHERE {where} ORDER BY created", args).fetchall()
        return [StoredReport(r) for r in rows]

    def reports(self, epoch: int | None = None) -> list[StoredReport]:
        """Every stored verdict (of one epoch)."""
        return self._reports("1" if epoch is None else "epoch = ?", () if epoch is None else (epoch,))

    def unreported(self, epoch: int) -> list[StoredReport]:
        """Verdicts of ``epoch`` whose report has not been mined yet, one per node (the first)."""
        seen, out = set(), []
        for report in self._reports("epoch = ?", (epoch,)):
            if report.node_id in seen:
                continue
            seen.add(report.node_id)
            if not report.report_tx:
                out.append(report)
        return out

    def failed_on_chain(self, epoch: int) -> list[bytes]:
        """Nodes this challenger's mined reports said failed in ``epoch`` (``'already'``: a report of an
        earlier run was on chain), in report order: the ones it may ask reputation to slash."""
        out: list[bytes] = []
        for report in self._reports("epoch = ? AND passed = 0 AND report_tx NOT IN ('', 'expired')", (epoch,)):
            if report.node_id not in out:
                out.append(report.node_id)
        return out

    def expire(self, before_epoch: int) -> int:
        """Mark unreported verdicts of epochs before ``before_epoch`` as expired (the contract takes a
        report only in its own epoch); returns how many."""
        with self._lock:
            return self._db.execute("UPDATE transcripts SET report_tx = 'expired' WHERE report_tx = '' AND epoch < ?",
                                    (before_epoch,)).rowcount

    def mark_reported(self, digest: str, tx_hash: str) -> None:
        with self._lock:
            self._db.execute("UPDATE transcripts SET report_tx = ? WHERE hash = ?", (tx_hash, digest))

    def challenged(self, node_id: bytes, epoch: int) -> bool:
        """Whether a transcript of this node exists for the epoch (its challenge ran)."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM transcripts WHERE node_id = ? AND epoch = ? LIMIT 1",
                                   (node_id.hex(), epoch)).fetchone()
        return row is not None

    def add_probe(self, node_id: bytes, epoch: int, at: float, answered: bool) -> None:
        """Record one uptime probe (idempotent per planned time)."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO probes (node_id, epoch, at, answered) VALUES (?, ?, ?, ?)",
                             (node_id.hex(), epoch, at, int(answered)))

    def probed(self, node_id: bytes, epoch: int, at: float) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM probes WHERE node_id = ? AND epoch = ? AND at = ?",
                                    (node_id.hex(), epoch, at)).fetchone() is not None

    def uptime(self, node_id: bytes, epoch: int) -> float | None:
        """Answered share of the node's probes in the epoch (None: none sent yet)."""
        with self._lock:
            ok, total = self._db.execute("SELECT COALESCE(SUM(answered), 0), COUNT(*) FROM probes WHERE node_id = ? "
                                         "AND epoch = ?", (node_id.hex(), epoch)).fetchone()
        return ok / total if total else None

    def get(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                             "value = excluded.value", (key, value))
