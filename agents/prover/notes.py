"""The client's notes: the secrets that can redeem its deposits, in a 0600 JSON file.

Whoever reads this file can spend the deposits, so it is created with mode 0600 (``os.open`` with the
mode, not chmod afterwards, so there is no window where it is readable) and refused when its mode lets
anyone else read it (as ssh refuses a readable private key). Writes are atomic (temporary file in the
same folder, fsync, rename).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from agents.prover.errors import ProverError
from zk.voucher import Note

__all__ = ["StoredNote", "NoteStore", "NOTES_MODE", "read_private_json", "write_private_json"]

#: Owner read/write only.
NOTES_MODE = 0o600


@dataclass
class StoredNote:
    """One note and what we know about it.

    Attributes:
        nullifier / secret: the note's secrets (decimal field elements).
        pool: the voucher pool's address.
        denomination: the amount deposited, in token wei.
        leaf_index: position in the pool's tree once deposited (None before).
        spent: True once redeemed (by us, or seen spent on chain).
        redeemed_to: node id (0x-hex) of the redemption, if any.
        channel_id: 0x-hex id of the pool channel the redemption opened, once known.
    """

    nullifier: int
    secret: int
    pool: str
    denomination: int
    leaf_index: int | None = None
    spent: bool = False
    redeemed_to: str | None = None
    channel_id: str | None = None

    @property
    def note(self) -> Note:
        """The zk note."""
        return Note(self.nullifier, self.secret)

    @property
    def commitment(self) -> int:
        """The deposited leaf."""
        return self.note.commitment


def read_private_json(path: Path, what: str) -> dict | None:
    """The JSON object in a secrets file, or None if there is no file.

    Raises:
        ProverError: the file is readable by group or others, or is not JSON.
    """
    if not path.exists():
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ProverError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ProverError(f"{path} is not a {what}: {exc}") from exc


def write_private_json(path: Path, obj: dict) -> None:
    """Write ``obj`` atomically (temporary file, fsync, rename) with mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, NOTES_MODE)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(obj, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, NOTES_MODE)  # in case the file existed with another mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class NoteStore:
    """Notes kept in one JSON file (mode 0600)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.notes: list[StoredNote] = []
        raw = read_private_json(self.path, "notes file")
        if raw is not None:
            try:
                self.notes = [StoredNote(**n) for n in raw["notes"]]
            except (KeyError, TypeError) as exc:
                raise ProverError(f"{self.path} is not a notes file: {exc}") from exc

    def add(self, pool: str, denomination: int) -> StoredNote:
        """Create, store (durably, before any deposit is sent) and return a fresh note."""
        n = Note.random()
        stored = StoredNote(n.nullifier, n.secret, pool, denomination)
        self.notes.append(stored)
        self.save()
        return stored

    def find(self, commitment: int) -> StoredNote:
        """The note with this commitment.

        Raises:
            ProverError: if we hold no such note.
        """
        for n in self.notes:
            if n.commitment == commitment:
                return n
        raise ProverError(f"no note with commitment {commitment}")

    def unspent(self, pool: str | None = None) -> list[StoredNote]:
        """Deposited, unspent notes (of one pool, if given)."""
        return [n for n in self.notes if not n.spent and n.leaf_index is not None
                and (pool is None or n.pool.lower() == pool.lower())]

    def save(self) -> None:
        """Write atomically with mode 0600."""
        write_private_json(self.path, {"notes": [asdict(n) for n in self.notes]})
