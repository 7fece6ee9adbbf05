"""The client's payment signers: one fresh key per voucher, kept with the channel it pays, mode 0600.

A voucher channel's signer is the only key that links the payments made through it (DESIGN.md,
"Identities"), so every redemption gets a new one. Whoever holds the key can spend the channel and
receives its refund, so the file is written as the notes file is (``notes.write_private_json``:
mode 0600 from creation, atomic replace) and refused when others can read it. Each entry is saved
before its address leaves this machine, so a crash cannot lose the key of a channel being opened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account

from agents.chain.bindings import VoucherChannel, VoucherChannelError
from agents.prover.errors import ProverError
from agents.prover.notes import read_private_json, write_private_json

__all__ = ["SignerStore", "StoredSigner"]


@dataclass
class StoredSigner:
    """One payment signer and what it pays.

    Attributes:
        address: checksummed address of the key.
        private_key: 0x-hex secp256k1 private key.
        nullifier_hash: the note whose redemption names this signer (None until proved).
        channel: the voucher channel once it is open (None before).
    """

    address: str
    private_key: str
    nullifier_hash: int | None = None
    channel: VoucherChannel | None = None

    def to_dict(self) -> dict:
        """The entry as stored."""
        return {"address": self.address, "private_key": self.private_key,
                "nullifier_hash": None if self.nullifier_hash is None else str(self.nullifier_hash),
                "channel": None if self.channel is None else json.loads(self.channel.to_json())}


class SignerStore:
    """Fresh payment signers in one JSON file (mode 0600)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.signers: list[StoredSigner] = []
        raw = read_private_json(self.path, "signers file")
        if raw is None:
            return
        try:
            for entry in raw["signers"]:
                signer = StoredSigner(
                    address=str(entry["address"]), private_key=str(entry["private_key"]),
                    nullifier_hash=None if entry.get("nullifier_hash") is None else int(entry["nullifier_hash"]),
                    channel=None if entry.get("channel") is None else VoucherChannel.from_json(entry["channel"]))
                if Account.from_key(signer.private_key).address != signer.address:
                    raise ValueError(f"key does not match address {signer.address}")
                self.signers.append(signer)
        except (KeyError, TypeError, ValueError, VoucherChannelError) as exc:
            raise ProverError(f"{self.path} is not a signers file: {exc}") from exc

    def new(self, nullifier_hash: int | None = None) -> StoredSigner:
        """Make, store (durably, before anyone sees the address) and return a fresh signer."""
        account = Account.create()
        signer = StoredSigner(account.address, "0x" + bytes(account.key).hex(), nullifier_hash)
        self.signers.append(signer)
        self.save()
        return signer

    def find(self, address: str) -> StoredSigner:
        """The stored signer with this address.

        Raises:
            ProverError: we hold no such key.
        """
        for s in self.signers:
            if s.address.lower() == address.lower():
                return s
        raise ProverError(f"no stored key for signer {address}")

    def set_channel(self, channel: VoucherChannel) -> StoredSigner:
        """Record the channel its signer's redemption opened, and save.

        Raises:
            ProverError: the channel's signer is not one of ours.
        """
        signer = self.find(channel.signer)
        signer.channel = channel
        self.save()
        return signer

    def save(self) -> None:
        """Write atomically with mode 0600."""
        write_private_json(self.path, {"signers": [s.to_dict() for s in self.signers]})
