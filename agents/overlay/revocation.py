"""The revocation list every Warren host keeps: which node ids are revoked, since when, and why.

A revocation is decided on chain (revocation_registry.revoke with a quorum of guardian signatures,
event ``NodeRevoked``); it reaches hosts two ways, whichever comes first:

* the chain: a host following revocation_registry's events (:mod:`agents.chain.revocations`) adds
  the node id at once;
* the overlay: the same facts travel as a *revocation certificate*, a RevocationRecord
  (:mod:`agents.overlay.records`: node id, evidence hash, nonce, the guardian signatures of the
  transaction), by ring broadcast and in the DHT under ``revocation_key(node_id)``. A receiver acts on
  a certificate only after checking its guardian quorum against the chain's guardian set
  (:class:`agents.chain.revocations.ChainRevocationAuthority`), the very check revoke() made, so a
  forged certificate is dropped and never forwarded.

The list is small (a revoked node is one row) and survives restarts (:class:`SqliteRevocations`),
because a revoked key must stay refused after the node restarts, before any chain read. It is pure
apart from that optional store: no clocks (callers pass ``now``), no sockets. Listeners hear of each
node id once, when it is first added; the node uses that to tear down sessions and drop routes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .errors import LocalProtocolError
from .ids import node_id_from_wg_key
from .records import REVOCATION, Record, decode_record, make_revocation_record

__all__ = [
    "CERTIFICATE_TTL_S",
    "RevocationFacts",
    "RevocationList",
    "SqliteRevocations",
    "certificate",
    "facts_from_record",
]

#: Lifetime of a revocation certificate in the DHT (seconds): records.MAX_TTL, one day. A revocation
#: is permanent on chain; the certificate only has to outlive the broadcast and reach hosts that
#: were offline for a while (they also read the chain when they come back).
CERTIFICATE_TTL_S = 24 * 3600


@dataclass(frozen=True)
class RevocationFacts:
    """What is known of one revocation.

    Attributes:
        node_id: the revoked node id (ring position, keccak256 of its WireGuard key).
        evidence_hash: hash of the evidence bundle (as in the transaction).
        nonce: the proposal nonce (as in the transaction).
        signatures: the guardian signatures of the transaction (65 bytes each); empty when only the
            event was seen (then no certificate can be made).
        source: ``"chain"`` (from the event) or ``"overlay"`` (a checked certificate).
        tx_hash: the revocation transaction (chain source), else empty.
        block: its block number (chain source), else 0.
        heard_at: when this host first learned of it (seconds of the caller's clock).
    """

    node_id: int
    evidence_hash: bytes
    nonce: int
    signatures: tuple = ()
    source: str = "chain"
    tx_hash: bytes = b""
    block: int = 0
    heard_at: float = 0.0


def certificate(facts: RevocationFacts, now: float, ttl_s: int = CERTIFICATE_TTL_S) -> bytes:
    """The RevocationRecord for ``facts``, valid until ``now + ttl_s`` (unix seconds).

    Raises:
        LocalProtocolError: the facts carry no guardian signatures (only the event was seen).
    """
    if not facts.signatures:
        raise LocalProtocolError("revocation: no guardian signatures known, so no certificate can be made")
    if facts.nonce >= 1 << 64:
        raise LocalProtocolError("revocation: the nonce does not fit a certificate (8 bytes)")
    return make_revocation_record(facts.node_id, facts.evidence_hash, facts.nonce, facts.signatures,
                                  expires=int(now) + ttl_s)


def facts_from_record(record: Record | bytes, now: float) -> RevocationFacts:
    """The facts of a (validated) RevocationRecord heard in the overlay."""
    rec = decode_record(record) if isinstance(record, (bytes, bytearray)) else record
    if rec.kind != REVOCATION:
        raise LocalProtocolError("revocation: not a revocation record")
    return RevocationFacts(rec.node_id, rec.evidence_hash, rec.nonce, tuple(rec.guardian_sigs), "overlay",
                           heard_at=now)


class RevocationList:
    """Revoked node ids, with their facts; thread-safe.

    Args:
        store: where entries persist (None: memory only, as in the simulator and the client).

    Attributes:
        ids: the revoked node ids, as a set the overlay's RecordValidator shares (``validator.revoked``).
        listeners: ``fn(facts)`` called once per newly revoked node id, outside the list's lock.
    """

    def __init__(self, store: "SqliteRevocations | None" = None) -> None:
        self._lock = threading.Lock()
        self._store = store
        self._facts: dict[int, RevocationFacts] = {}
        self.ids: set[int] = set()
        self.listeners: list[Callable[[RevocationFacts], None]] = []
        if store is not None:
            for facts in store.load():
                self._facts[facts.node_id] = facts
                self.ids.add(facts.node_id)

    def __contains__(self, node_id: int) -> bool:
        return node_id in self.ids or node_id in self._facts

    def __len__(self) -> int:
        return len(self._facts)

    def is_revoked(self, node_id: int | bytes) -> bool:
        """Whether ``node_id`` (an int, or 32 bytes as on chain) is revoked."""
        if isinstance(node_id, (bytes, bytearray)):
            node_id = int.from_bytes(node_id, "big")
        return node_id in self

    def is_revoked_key(self, wg_public_key: bytes) -> bool:
        """Whether the node whose WireGuard public key this is has been revoked."""
        return len(wg_public_key) == 32 and node_id_from_wg_key(bytes(wg_public_key)) in self

    def facts(self, node_id: int) -> RevocationFacts | None:
        """What is known of a revocation (None if this list has not heard of it)."""
        return self._facts.get(node_id)

    def all(self) -> list[RevocationFacts]:
        """Every entry, oldest first."""
        with self._lock:
            return sorted(self._facts.values(), key=lambda f: f.heard_at)

    def add(self, facts: RevocationFacts) -> bool:
        """Record a revocation; returns True when the node id was not known as revoked before.

        A second report of a known revocation only fills in what was missing (the chain's event
        gives the transaction; an overlay certificate may have come first with the signatures).
        """
        with self._lock:
            old = self._facts.get(facts.node_id)
            fresh = old is None  # (the id may be in ``ids`` already: the overlay's store adds it first)
            if old is not None:
                merged = replace(old, signatures=old.signatures or facts.signatures,
                                 tx_hash=old.tx_hash or facts.tx_hash, block=old.block or facts.block)
                if merged == old:
                    return False
                facts = merged
            self._facts[facts.node_id] = facts
            self.ids.add(facts.node_id)
            if self._store is not None:
                self._store.save(facts)
        if fresh:
            for fn in list(self.listeners):
                fn(facts)
        return fresh

    def last_block(self) -> int | None:
        """The next chain block to read events from (persisted), or None before the first read."""
        return None if self._store is None else self._store.last_block()

    def set_last_block(self, block: int) -> None:
        """Remember that events before ``block`` were read."""
        if self._store is not None:
            self._store.set_last_block(block)


class SqliteRevocations:
    """The revocation list's file: ``revocations.db`` in the host's data folder (0600).

    SQLite (stdlib) as the node's store: one small table, and each new revocation is one fsynced
    transaction, so a revocation heard just before a crash is still refused after the restart.

    Raises:
        LocalProtocolError: the file is not a revocation list.
    """

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS revoked (node_id BLOB PRIMARY KEY CHECK (length(node_id) = 32), "
        "evidence_hash BLOB NOT NULL, nonce TEXT NOT NULL, signatures BLOB NOT NULL, source TEXT NOT NULL, "
        "tx_hash BLOB NOT NULL, block INTEGER NOT NULL, heard_at REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    )

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            for statement in self._SCHEMA:
                self._db.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise LocalProtocolError(f"{self.path} is not a revocation list ({exc}): move it away and restart; "
                                     "the node reads the revocations from the chain again") from None

    def load(self) -> list[RevocationFacts]:
        """Every stored entry."""
        with self._lock:
            rows = self._db.execute("SELECT node_id, evidence_hash, nonce, signatures, source, tx_hash, block, "
                                    "heard_at FROM revoked ORDER BY heard_at").fetchall()
        out = []
        for nid, ev, nonce, sigs, source, tx, block, at in rows:
            sigs = bytes(sigs)
            out.append(RevocationFacts(int.from_bytes(nid, "big"), bytes(ev), int(nonce),
                                       tuple(sigs[i:i + 65] for i in range(0, len(sigs), 65)), source,
                                       bytes(tx), int(block), float(at)))
        return out

    def save(self, facts: RevocationFacts) -> None:
        """Insert or complete one entry (one transaction)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO revoked VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (facts.node_id.to_bytes(32, "big"), facts.evidence_hash, str(facts.nonce), b"".join(facts.signatures),
                 facts.source, facts.tx_hash, facts.block, facts.heard_at))

    def last_block(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'next_block'").fetchone()
        return None if row is None else int(row[0])

    def set_last_block(self, block: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('next_block', ?)", (str(int(block)),))

    def close(self) -> None:
        with self._lock:
            self._db.close()
