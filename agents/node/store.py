"""The node's durable store: one SQLite database for everything a node must not lose.

Channels it serves (and their agreed terms), sessions, every receipt it accepted (the latest per
channel is what settles) and every settlement it attempted. SQLite (stdlib) rather than files of
JSON lines: one fsynced transaction covers a batch of receipts from many channels, and the queries
(latest receipt per channel, what is unsettled) are one statement each.

Durability: WAL journal with ``synchronous=FULL``, so a COMMIT returns only after the WAL is fsynced;
a receipt append returns only after its COMMIT (or, inside :meth:`NodeStore.batch`, the batch commits
when the block ends and only then may the node acknowledge those receipts). The file is 0600 (SQLite
gives its -wal and -shm files the database's mode).

Amounts (token wei, up to 2**96) and byte counts (up to 2**64) do not fit SQLite's signed 64-bit
integers, so they are stored as decimal TEXT and compared in Python.

Errors: :class:`agents.metering.LocalProtocolError` for a damaged or foreign database and for misuse
(a receipt for a channel never stored, terms that change a channel's identity).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from agents.chain.eip712 import Receipt
from agents.metering import AcceptedReceipt, ChannelTerms, LocalProtocolError

__all__ = [
    "SCHEMA_VERSION",
    "ChannelReceiptStore",
    "NodeStore",
    "SessionRow",
    "SettlementRow",
    "StoredChannel",
]

#: PRAGMA user_version of the schema below; a database with a higher one is refused (newer node).
SCHEMA_VERSION = 1
#: Channel kinds: a payment_channels channel, or a channel held by a voucher pool.
KINDS = ("channels", "voucher")
#: Settlement row states.
PENDING, CONFIRMED, FAILED = "pending", "confirmed", "failed"

_SCHEMA = """
CREATE TABLE channels (
    channel_id BLOB PRIMARY KEY CHECK (length(channel_id) = 32),
    kind TEXT NOT NULL CHECK (kind IN ('channels', 'voucher')),
    pool TEXT,                          -- voucher pool address, NULL for payment_channels
    signer TEXT NOT NULL,
    deposit TEXT NOT NULL,              -- token wei, decimal
    price_per_gib TEXT NOT NULL,        -- token wei per GiB, decimal
    credit_bytes TEXT NOT NULL,
    chain_id INTEGER NOT NULL,
    verifying_contract TEXT NOT NULL,
    voucher_terms TEXT,                 -- VoucherChannel JSON, NULL for payment_channels
    first_seen REAL NOT NULL            -- unix seconds
) STRICT;
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    channel_id BLOB NOT NULL REFERENCES channels (channel_id),
    client_key TEXT NOT NULL,           -- the client's WireGuard public key, hex
    v4 TEXT,
    v6 TEXT,
    started_at REAL NOT NULL,
    ended_at REAL,
    billed_bytes TEXT NOT NULL DEFAULT '0'
) STRICT;
CREATE TABLE receipts (
    id INTEGER PRIMARY KEY,             -- grows with every append: the highest per channel is the latest
    channel_id BLOB NOT NULL REFERENCES channels (channel_id),
    cumulative_bytes TEXT NOT NULL,
    cumulative_amount TEXT NOT NULL,
    signature BLOB NOT NULL,
    observed_bytes TEXT NOT NULL,
    stored_at REAL NOT NULL
) STRICT;
CREATE INDEX receipts_by_channel ON receipts (channel_id, id);
CREATE TABLE settlements (
    id INTEGER PRIMARY KEY,
    channel_id BLOB NOT NULL REFERENCES channels (channel_id),
    amount TEXT NOT NULL,               -- cumulative token wei settled by this transaction
    nbytes TEXT NOT NULL,               -- cumulative bytes of the settled receipt
    tx_hash BLOB,                       -- NULL when confirmed by reading the chain (not our send)
    gas INTEGER,
    status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'failed')),
    reason TEXT,
    started_at REAL NOT NULL,
    finished_at REAL
) STRICT;
CREATE INDEX settlements_by_channel ON settlements (channel_id, status);
"""


@dataclasses.dataclass(frozen=True)
class StoredChannel:
    """A channel as the store holds it.

    Attributes:
        terms: the agreed terms (deposit as last seen).
        kind: ``"channels"`` (payment_channels) or ``"voucher"`` (held by a voucher pool).
        pool: the voucher pool's address, or None.
        voucher_terms: the VoucherChannel record (as its JSON dict), or None.
        first_seen: unix seconds.
    """

    terms: ChannelTerms
    kind: str
    pool: str | None
    voucher_terms: dict | None
    first_seen: float

    @property
    def channel_id(self) -> bytes:
        return self.terms.channel_id


@dataclasses.dataclass(frozen=True)
class SessionRow:
    """One session (times in unix seconds; ``ended_at`` None while it runs)."""

    id: int
    channel_id: bytes
    client_key: str
    v4: str | None
    v6: str | None
    started_at: float
    ended_at: float | None
    billed_bytes: int


@dataclasses.dataclass(frozen=True)
class SettlementRow:
    """One settlement attempt (amounts cumulative, token wei)."""

    id: int
    channel_id: bytes
    amount: int
    nbytes: int
    tx_hash: bytes | None
    gas: int | None
    status: str
    reason: str | None
    started_at: float
    finished_at: float | None


class ChannelReceiptStore:
    """One channel's receipts in a :class:`NodeStore`, with the interface
    :class:`agents.metering.ReceiptLedger` takes (``load``, ``append``, ``path``)."""

    def __init__(self, store: NodeStore, channel_id: bytes) -> None:
        self._store = store
        self.channel_id = bytes(channel_id)
        self.path = f"{store.path}[channel 0x{self.channel_id.hex()}]"

    def load(self) -> list[AcceptedReceipt]:
        """Every stored receipt of the channel, oldest first.

        Raises:
            LocalProtocolError: a row is not a well-formed receipt of this channel.
        """
        return self._store._load_receipts(self.channel_id)

    def append(self, record: AcceptedReceipt) -> None:
        """Store one receipt; returns after COMMIT (or, in a batch, once queued in its transaction)."""
        if record.receipt.channel_id != self.channel_id:
            raise LocalProtocolError("receipt is for another channel than this store's")
        self._store._append_receipt(record)


class NodeStore:
    """The node's SQLite database (see the module docstring).

    Safe to share between threads: one connection behind a lock; :meth:`batch` holds the lock for
    its whole block, so another thread's append never rides in a batch and returns before its commit.

    Args:
        path: the database file (created 0600 with its folder).
        clock: unix time for ``stored_at`` (tests pass a fake).

    Raises:
        LocalProtocolError: the file is not a database, is damaged, or has a newer schema.
    """

    def __init__(self, path: str | os.PathLike, *, clock=time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            if (check := self._db.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
                raise LocalProtocolError(f"{self.path}: database damaged: {check}")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise LocalProtocolError(f"{self.path}: not a usable node database: {exc}") from None

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LocalProtocolError(f"{self.path}: schema version {version} is newer than this node's "
                                     f"{SCHEMA_VERSION}")
        if version == 0:  # one transaction: a crash leaves either no schema or all of it
            self._db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};COMMIT;")

    def close(self) -> None:
        """Close the database (every acknowledged receipt is already on disk)."""
        with self._lock:
            self._db.close()

    # -- transactions ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, or a part of the enclosing batch."""
        with self._lock:
            if self._db.in_transaction:  # inside a batch or an outer transaction: its commit covers us
                yield
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Writes inside the block share one transaction (one fsync), committed when it ends.

        Acknowledge receipts appended inside only after the block has exited without an exception;
        if it raises, nothing in it was stored (ledgers that accepted them must be rebuilt).
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._db.execute("ROLLBACK")
                raise
            self._depth = 0
            try:
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        try:
            with self._transaction():
                return self._db.execute(sql, args)
        except sqlite3.IntegrityError as exc:
            raise LocalProtocolError(f"{self.path}: refused: {exc}") from None

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- channels ----------------------------------------------------------------------------------

    def upsert_channel(self, terms: ChannelTerms, *, kind: str = "channels", pool: str | None = None,
                       voucher_terms: dict | str | None = None, at: float | None = None) -> None:
        """Record a channel, or refresh its deposit, price and credit (a top-up, new terms).

        Args:
            terms: the agreed terms.
            kind: ``"channels"`` or ``"voucher"``.
            pool: the voucher pool's address (voucher channels).
            voucher_terms: the VoucherChannel record, as JSON text or dict (voucher channels).
            at: first-seen time (default now).

        Raises:
            LocalProtocolError: unknown kind, a voucher channel without pool/terms, or terms that change
                the channel's signer, chain or contract.
        """
        if kind not in KINDS:
            raise LocalProtocolError(f"unknown channel kind {kind!r}")
        if (kind == "voucher") != (pool is not None and voucher_terms is not None):
            raise LocalProtocolError("a voucher channel needs its pool and terms; a payment channel has neither")
        if isinstance(voucher_terms, str):
            voucher_terms = json.loads(voucher_terms)
        vt = json.dumps(voucher_terms, sort_keys=True) if voucher_terms is not None else None
        with self._transaction():
            old = self._read("SELECT signer, chain_id, verifying_contract, kind FROM channels WHERE channel_id=?",
                             (terms.channel_id,))
            if old and old[0] != (terms.signer, terms.chain_id, terms.verifying_contract, kind):
                raise LocalProtocolError(f"channel 0x{terms.channel_id.hex()} is stored with other terms: {old[0]}")
            self._write(
                "INSERT INTO channels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (channel_id) DO UPDATE "
                "SET deposit=excluded.deposit, price_per_gib=excluded.price_per_gib, "
                "credit_bytes=excluded.credit_bytes",
                (terms.channel_id, kind, pool, terms.signer, str(terms.deposit), str(terms.price_per_gib),
                 str(terms.credit_bytes), terms.chain_id, terms.verifying_contract, vt,
                 self._clock() if at is None else at))

    def channel(self, channel_id: bytes) -> StoredChannel | None:
        """The stored channel, or None."""
        rows = self._read("SELECT * FROM channels WHERE channel_id=?", (bytes(channel_id),))
        return self._channel_of(rows[0]) if rows else None

    def channels(self) -> list[StoredChannel]:
        """Every stored channel, in first-seen order."""
        return [self._channel_of(row) for row in self._read("SELECT * FROM channels ORDER BY first_seen, rowid")]

    def _channel_of(self, row: tuple) -> StoredChannel:
        cid, kind, pool, signer, deposit, price, credit, chain_id, contract, vt, first_seen = row
        try:
            terms = ChannelTerms(bytes(cid), signer, int(deposit), int(price), int(credit), chain_id, contract)
            return StoredChannel(terms, kind, pool, json.loads(vt) if vt is not None else None, first_seen)
        except (ValueError, TypeError, LocalProtocolError) as exc:
            raise LocalProtocolError(f"{self.path}: corrupt channel row 0x{bytes(cid).hex()}: {exc}") from None

    # -- receipts ----------------------------------------------------------------------------------

    def receipt_store(self, channel_id: bytes) -> ChannelReceiptStore:
        """The channel's receipts, as ``ReceiptLedger(terms, store.receipt_store(channel_id))`` takes them."""
        return ChannelReceiptStore(self, channel_id)

    def _append_receipt(self, record: AcceptedReceipt) -> None:
        r = record.receipt
        self._write("INSERT INTO receipts (channel_id, cumulative_bytes, cumulative_amount, signature, "
                    "observed_bytes, stored_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (r.channel_id, str(r.cumulative_bytes), str(r.cumulative_amount), bytes(record.signature),
                     str(record.observed_bytes), self._clock()))

    def _receipt_of(self, row: tuple) -> AcceptedReceipt:
        rid, cid, nbytes, amount, signature, observed = row[:6]
        try:
            if not isinstance(cid, bytes) or len(cid) != 32 or not isinstance(signature, bytes):
                raise ValueError("channel id or signature is not bytes")
            return AcceptedReceipt(Receipt(cid, _uint(nbytes), _uint(amount)), signature, _uint(observed))
        except (ValueError, TypeError) as exc:
            raise LocalProtocolError(f"{self.path}: corrupt receipt row {rid}: {exc}") from None

    def _load_receipts(self, channel_id: bytes) -> list[AcceptedReceipt]:
        rows = self._read("SELECT id, channel_id, cumulative_bytes, cumulative_amount, signature, observed_bytes "
                          "FROM receipts WHERE channel_id=? ORDER BY id", (bytes(channel_id),))
        return [self._receipt_of(row) for row in rows]

    def latest_receipts(self) -> dict[bytes, AcceptedReceipt]:
        """The latest stored receipt of every channel that has one."""
        rows = self._read("SELECT r.id, r.channel_id, r.cumulative_bytes, r.cumulative_amount, r.signature, "
                          "r.observed_bytes FROM receipts r JOIN (SELECT MAX(id) AS id FROM receipts "
                          "GROUP BY channel_id) latest ON r.id = latest.id")
        return {bytes(row[1]): self._receipt_of(row) for row in rows}

    def receipt_history(self) -> list[tuple[AcceptedReceipt, float]]:
        """Every stored receipt with its ``stored_at`` (unix seconds), oldest first (for earnings)."""
        rows = self._read("SELECT id, channel_id, cumulative_bytes, cumulative_amount, signature, observed_bytes, "
                          "stored_at FROM receipts ORDER BY id")
        return [(self._receipt_of(row), row[6]) for row in rows]

    def paid_bytes_between(self, start: float, end: float) -> int:
        """Bytes the channels' receipts added between ``start`` and ``end`` (unix seconds of store time,
        end excluded): per channel, the latest receipt stored before ``end`` less the latest stored
        before ``start``. What the node carried and was paid for in that time (auto prices measure
        utilisation by it)."""
        def latest_before(at: float) -> dict[bytes, int]:
            rows = self._read("SELECT channel_id, cumulative_bytes FROM receipts WHERE id IN "
                              "(SELECT MAX(id) FROM receipts WHERE stored_at < ? GROUP BY channel_id)", (at,))
            return {bytes(cid): _uint(nbytes) for cid, nbytes in rows}

        before, after = latest_before(start), latest_before(end)
        return sum(max(0, nbytes - before.get(cid, 0)) for cid, nbytes in after.items())

    # -- sessions ----------------------------------------------------------------------------------

    def start_session(self, channel_id: bytes, client_key: str, v4: str | None = None, v6: str | None = None,
                      at: float | None = None) -> int:
        """Record a session's start; returns its id."""
        return self._write("INSERT INTO sessions (channel_id, client_key, v4, v6, started_at) VALUES (?, ?, ?, ?, ?)",
                           (bytes(channel_id), str(client_key), v4, v6,
                            self._clock() if at is None else at)).lastrowid

    def update_session_bytes(self, session_id: int, billed: int) -> None:
        """Set a session's billed bytes (cumulative)."""
        self._write("UPDATE sessions SET billed_bytes=? WHERE id=?", (str(int(billed)), session_id))

    def end_session(self, session_id: int, at: float | None = None) -> None:
        """Record a session's end."""
        self._write("UPDATE sessions SET ended_at=? WHERE id=?", (self._clock() if at is None else at, session_id))

    def sessions(self) -> list[SessionRow]:
        """Every session, oldest first."""
        return [SessionRow(r[0], bytes(r[1]), r[2], r[3], r[4], r[5], r[6], int(r[7]))
                for r in self._read("SELECT * FROM sessions ORDER BY id")]

    # -- settlements -------------------------------------------------------------------------------

    def settlement_started(self, channel_id: bytes, amount: int, nbytes: int, at: float) -> int:
        """Record a settlement about to be sent (status pending); returns its id. Committed on return,
        so a crash after the send leaves a pending row to reconcile against the chain."""
        return self._write("INSERT INTO settlements (channel_id, amount, nbytes, status, started_at) "
                           "VALUES (?, ?, ?, 'pending', ?)", (bytes(channel_id), str(amount), str(nbytes), at)).lastrowid

    def settlement_confirmed(self, settlement_id: int, tx_hash: bytes | None, gas: int | None, at: float) -> None:
        """Mark a settlement confirmed on chain (tx_hash None when only the chain's state showed it)."""
        self._finish(settlement_id, CONFIRMED, tx_hash, gas, None, at)

    def settlement_failed(self, settlement_id: int, reason: str, at: float) -> None:
        """Mark a settlement failed (reverted, or not on chain when reconciled)."""
        self._finish(settlement_id, FAILED, None, None, reason, at)

    def settlement_observed(self, channel_id: bytes, amount: int, nbytes: int, at: float) -> int:
        """Record a settlement the chain shows but we did not send (or lost track of): confirmed, no tx."""
        return self._write("INSERT INTO settlements (channel_id, amount, nbytes, status, started_at, finished_at) "
                           "VALUES (?, ?, ?, 'confirmed', ?, ?)",
                           (bytes(channel_id), str(amount), str(nbytes), at, at)).lastrowid

    def _finish(self, sid: int, status: str, tx_hash, gas, reason, at: float) -> None:
        cursor = self._write("UPDATE settlements SET status=?, tx_hash=?, gas=?, reason=?, finished_at=? "
                             "WHERE id=? AND status='pending'",
                             (status, bytes(tx_hash) if tx_hash is not None else None, gas, reason, at, sid))
        if cursor.rowcount != 1:
            raise LocalProtocolError(f"settlement {sid} is not pending")

    def settlements(self, channel_id: bytes | None = None, status: str | None = None) -> list[SettlementRow]:
        """Settlement rows, oldest first, optionally of one channel and/or status."""
        sql, args = "SELECT * FROM settlements WHERE 1", []
        if channel_id is not None:
            sql, args = sql + " AND channel_id=?", [*args, bytes(channel_id)]
        if status is not None:
            sql, args = sql + " AND status=?", [*args, status]
        return [self._settlement_of(row) for row in self._read(sql + " ORDER BY id", tuple(args))]

    def _settlement_of(self, row: tuple) -> SettlementRow:
        try:
            return SettlementRow(row[0], bytes(row[1]), _uint(row[2]), _uint(row[3]),
                                 bytes(row[4]) if row[4] is not None else None, row[5], row[6], row[7], row[8],
                                 row[9])
        except (ValueError, TypeError) as exc:
            raise LocalProtocolError(f"{self.path}: corrupt settlement row {row[0]}: {exc}") from None

    def settled_amount(self, channel_id: bytes) -> int:
        """The highest confirmed cumulative amount settled on the channel (0 if none), token wei."""
        rows = self._read("SELECT amount FROM settlements WHERE channel_id=? AND status='confirmed'",
                          (bytes(channel_id),))
        return max((_uint(amount) for (amount,) in rows), default=0)

    def settled_amounts(self) -> dict[bytes, int]:
        """:meth:`settled_amount` of every channel with a confirmed settlement."""
        out: dict[bytes, int] = {}
        for cid, amount in self._read("SELECT channel_id, amount FROM settlements WHERE status='confirmed'"):
            out[bytes(cid)] = max(out.get(bytes(cid), 0), _uint(amount))
        return out

    def unsettled(self) -> list[tuple[bytes, AcceptedReceipt, int]]:
        """Channels whose latest receipt pays more than their confirmed settlements:
        (channel id, latest receipt, settled amount), in channel id order."""
        settled = self.settled_amounts()
        out = []
        for cid, record in sorted(self.latest_receipts().items()):
            done = settled.get(cid, 0)
            if record.receipt.cumulative_amount > done:
                out.append((cid, record, done))
        return out


def _uint(text) -> int:
    """A stored decimal TEXT number (refuses anything else: the node must not guess about money)."""
    if not isinstance(text, str) or not text.isdigit() or not text.isascii():
        raise ValueError(f"not a stored unsigned number: {text!r}")
    return int(text)
