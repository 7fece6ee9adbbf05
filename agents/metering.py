"""Receipt accounting between a client and a node: sign, verify, store durably, settle the latest.

The client pays by cumulative EIP-712 receipts (DESIGN.md, "Money"): it signs what its own tunnel
counters saw at the node's on-chain price; the node accepts a receipt only if it would settle on chain
(right channel, right signer, both fields grow, amount within the deposit) and if it agrees with the
node's own counter within an agreed credit, and stores it durably before acknowledging it, so a crash
never loses money it has already told the client it holds.

This module is sans-I/O except for :class:`ReceiptStore`'s file: no sockets, threads, clocks or chain
calls. Its parts:

* :class:`ChannelTerms`: what both sides agreed for one channel (ids, signer, deposit, price, credit).
* :class:`ReceiptSigner`: the client's side: counters in, signed receipts out.
* :class:`ReceiptLedger`: the node's side: ``accept(receipt, signature, observed_bytes)`` returns a
  :class:`Decision`; accepted receipts go to a :class:`ReceiptStore` first. The node agent will use
  it as its core.
* A small framing codec for receipts carried inside the tunnel (:func:`encode_frame`,
  :class:`FrameReader`) and the operator's ``CooperativeClose`` consent.

A refusal is a value (``Decision.accepted is False`` with a :class:`Refusal` reason), not an
exception: a misbehaving client is expected. Exceptions are for our own misuse
(:class:`LocalProtocolError`, e.g. signing past the deposit, a corrupt store) and for malformed bytes
from the peer (:class:`RemoteProtocolError`, e.g. an oversized frame: drop the connection).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import struct
from pathlib import Path

from eth_account import Account
from eth_utils import to_checksum_address

from agents.chain import eip712
from agents.chain.eip712 import CooperativeClose, Receipt

__all__ = [
    "GIB",
    "AcceptedReceipt",
    "ChannelTerms",
    "CooperativeClose",
    "Decision",
    "Frame",
    "FrameKind",
    "FrameReader",
    "LocalProtocolError",
    "MeteringError",
    "ReceiptLedger",
    "ReceiptSigner",
    "ReceiptStore",
    "Refusal",
    "RemoteProtocolError",
    "decode_receipt",
    "encode_frame",
    "encode_receipt",
    "price_of",
]

#: node_registry's price is "token wei per GiB" (contracts/node_registry.vy): IEC gibibyte, 2**30.
GIB = 1 << 30
#: A receipt signature is r || s || v, 65 bytes (payment_channels accepts exactly this length).
SIGNATURE_LENGTH = 65
#: uint64 bytes / uint96 amounts are what payment_channels can store (it reverts above them).
MAX_BYTES = (1 << 64) - 1
MAX_AMOUNT = (1 << 96) - 1
#: secp256k1 group order / 2: signatures with a higher s are malleable (EIP-2); the contract refuses.
_SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


class MeteringError(Exception):
    """Base class of this module's errors."""


class LocalProtocolError(MeteringError):
    """We misused the metering core (signed past the deposit, fed a corrupt store, bad terms)."""


class RemoteProtocolError(MeteringError):
    """The peer sent bytes that are not a well-formed frame: drop the connection.

    Attributes:
        reason: short snake_case key (``"frame_too_long"``, ``"unknown_kind"``, ...).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def price_of(nbytes: int, price_per_gib: int) -> int:
    """What ``nbytes`` cost at ``price_per_gib`` token wei per GiB, rounded up (in the node's favour)."""
    return -(-nbytes * price_per_gib // GIB)


# -- terms and decisions ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ChannelTerms:
    """What client and node agreed for one channel.

    Attributes:
        channel_id: payment_channels' 32-byte id.
        signer: checksummed address of the channel's payment signer.
        deposit: the channel's deposit, token wei (receipts may not exceed it).
        price_per_gib: the node's on-chain price, token wei per GiB.
        credit_bytes: how far the paid bytes may lag the node's counter (or lead it) before the node
            refuses a receipt, bytes.
        chain_id: EIP-712 domain chain id.
        verifying_contract: EIP-712 domain contract (payment_channels).
    """

    channel_id: bytes
    signer: str
    deposit: int
    price_per_gib: int
    credit_bytes: int
    chain_id: int
    verifying_contract: str

    def __post_init__(self) -> None:
        if len(self.channel_id) != 32:
            raise LocalProtocolError("channel id must be 32 bytes")
        if not 0 < self.deposit <= MAX_AMOUNT:
            raise LocalProtocolError(f"deposit {self.deposit} is not in (0, 2**96)")
        if self.price_per_gib < 0 or self.credit_bytes < 0:
            raise LocalProtocolError("price and credit must not be negative")
        object.__setattr__(self, "signer", to_checksum_address(self.signer))
        object.__setattr__(self, "verifying_contract", to_checksum_address(self.verifying_contract))

    def with_deposit(self, deposit: int) -> ChannelTerms:
        """The same terms after a top-up."""
        return dataclasses.replace(self, deposit=deposit)


class Refusal(str, enum.Enum):
    """Why the node refused a receipt (the value is what goes back on the wire)."""

    BAD_SIGNATURE_LENGTH = "bad_signature_length"  # not exactly 65 bytes (truncated or oversized)
    WRONG_CHANNEL = "wrong_channel"                # signed for another channel
    BAD_SIGNATURE = "bad_signature"                # malleable (high s), bad v, or unrecoverable
    WRONG_SIGNER = "wrong_signer"                  # recovers to someone other than the signer
    REPLAYED = "replayed"                          # the latest accepted receipt again
    STALE = "stale"                                # one field did not grow (the contract needs both)
    DECREASING = "decreasing"                      # a field went down: an old receipt
    OVER_DEPOSIT = "over_deposit"                  # amount above the deposit: could never settle
    TOO_LARGE = "too_large"                        # bytes >= 2**64 or amount >= 2**96
    UNDERPRICED = "underpriced"                    # amount below the price of the bytes claimed
    OVER_CREDIT = "over_credit"                    # node's counter ahead of the paid bytes by > credit
    BEYOND_COUNTER = "beyond_counter"              # claims more bytes than the node carried + credit


@dataclasses.dataclass(frozen=True)
class AcceptedReceipt:
    """A receipt the node accepted, as stored.

    Attributes:
        receipt: the signed fields.
        signature: the payment signer's 65-byte signature.
        observed_bytes: the node's own counter when it accepted the receipt.
    """

    receipt: Receipt
    signature: bytes
    observed_bytes: int

    def to_json(self) -> str:
        """One line of the store."""
        return json.dumps({
            "channel_id": self.receipt.channel_id.hex(),
            "cumulative_bytes": self.receipt.cumulative_bytes,
            "cumulative_amount": self.receipt.cumulative_amount,
            "signature": self.signature.hex(),
            "observed_bytes": self.observed_bytes,
        }, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> AcceptedReceipt:
        """Parse one line of the store (raises ValueError/KeyError/TypeError when malformed)."""
        raw = json.loads(line)
        receipt = Receipt(bytes.fromhex(raw["channel_id"]), int(raw["cumulative_bytes"]),
                          int(raw["cumulative_amount"]))
        return cls(receipt, bytes.fromhex(raw["signature"]), int(raw["observed_bytes"]))


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of :meth:`ReceiptLedger.accept`.

    Attributes:
        accepted: whether the receipt is now the latest (and durably stored).
        reason: why not, when refused.
        detail: human-readable figures behind the reason.
    """

    accepted: bool
    reason: Refusal | None = None
    detail: str = ""

    @classmethod
    def refuse(cls, reason: Refusal, detail: str = "") -> Decision:
        """A refusal."""
        return cls(False, reason, detail)


# -- the durable store -----------------------------------------------------------------------------

class ReceiptStore:
    """An append-only file of accepted receipts, one JSON object per line, fsynced per append.

    A crash can leave at most a torn last line (no newline): :meth:`load` drops it and truncates the
    file back to the last complete line, since that receipt was never acknowledged. Any other damage
    is an error: the node must not guess about money.

    Args:
        path: the file (created with its folder on first append, mode 0600).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def load(self) -> list[AcceptedReceipt]:
        """Every stored receipt, oldest first.

        Raises:
            LocalProtocolError: a complete line is not a stored receipt.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # torn write: never acknowledged, so drop it
            with open(self.path, "r+b") as handle:
                handle.truncate(complete)
                handle.flush()
                os.fsync(handle.fileno())
        records = []
        for number, line in enumerate(data[:complete].splitlines(), 1):
            try:
                records.append(AcceptedReceipt.from_json(line.decode()))
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise LocalProtocolError(f"{self.path}:{number}: corrupt receipt record: {exc}") from None
        return records

    def append(self, record: AcceptedReceipt) -> None:
        """Append one record and fsync it (and, for a new file, its folder) before returning."""
        new = not self.path.exists()
        if new:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            line = (record.to_json() + "\n").encode()
            written = os.write(fd, line)
            if written != len(line):
                raise LocalProtocolError(f"short write to {self.path}: {written} of {len(line)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


# -- signatures ------------------------------------------------------------------------------------

def _recover(message: Receipt, signature: bytes, terms: ChannelTerms) -> str | None:
    """The signer of ``message``, or None if the signature is not one payment_channels would take."""
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if signature[64] not in (27, 28) or not 0 < r or not 0 < s <= _SECP256K1_HALF_N:
        return None
    try:  # the fast path (libsecp256k1); tests check it against eth-account's recover
        return eip712.fast_recover(message, signature, terms.chain_id, terms.verifying_contract)
    except ValueError:
        return None


# -- the client's side -----------------------------------------------------------------------------

class ReceiptSigner:
    """Signs cumulative receipts for what the client's own counters saw.

    Args:
        terms: the channel's terms.
        private_key: the payment signer's key (its address must be ``terms.signer``).
    """

    def __init__(self, terms: ChannelTerms, private_key: bytes | str) -> None:
        if Account.from_key(private_key).address != terms.signer:
            raise LocalProtocolError("private key is not the channel's payment signer")
        self.terms = terms
        self._key = private_key
        self.latest: Receipt | None = None

    def sign(self, observed_bytes: int) -> tuple[Receipt, bytes]:
        """A receipt for ``observed_bytes`` (cumulative) at the agreed price, and its signature.

        The amount is the price of the bytes rounded up, and at least one wei above the previous
        receipt's, so both fields strictly grow as payment_channels requires.

        Raises:
            LocalProtocolError: nothing new to pay for, or the deposit does not cover the amount.
        """
        last_bytes = self.latest.cumulative_bytes if self.latest else 0
        last_amount = self.latest.cumulative_amount if self.latest else 0
        if observed_bytes <= last_bytes:
            raise LocalProtocolError(f"nothing new to pay for: {observed_bytes} <= {last_bytes} bytes")
        amount = max(price_of(observed_bytes, self.terms.price_per_gib), last_amount + 1)
        if amount > self.terms.deposit:
            raise LocalProtocolError(
                f"deposit exhausted: {amount} token wei owed, {self.terms.deposit} deposited (top up)")
        receipt = Receipt(self.terms.channel_id, observed_bytes, amount)
        signature = eip712.fast_sign(receipt, self._key, self.terms.chain_id, self.terms.verifying_contract)
        self.latest = receipt
        return receipt, signature


# -- the node's side -------------------------------------------------------------------------------

class ReceiptLedger:
    """The node's record of one channel's receipts: verify, store durably, then acknowledge.

    On construction it reloads the store and re-verifies every record (signer, channel, growth), so a
    restarted node continues from the latest receipt it acknowledged.

    Args:
        terms: the channel's terms.
        store: where accepted receipts are kept.

    Raises:
        LocalProtocolError: the store holds a record these terms would not have accepted.
    """

    def __init__(self, terms: ChannelTerms, store: ReceiptStore) -> None:
        self.terms = terms
        self.store = store
        self._latest: AcceptedReceipt | None = None
        for number, record in enumerate(store.load(), 1):
            problem = self._verify(record.receipt, record.signature)
            if problem is not None:
                raise LocalProtocolError(f"{store.path}: record {number} fails verification: "
                                         f"{problem.reason.value} {problem.detail}".rstrip())
            self._latest = record

    def latest(self) -> AcceptedReceipt | None:
        """The latest accepted receipt (what the node settles), or None."""
        return self._latest

    def paid_bytes(self) -> int:
        """Cumulative bytes of the latest accepted receipt."""
        return self._latest.receipt.cumulative_bytes if self._latest else 0

    def unpaid_bytes(self, observed_bytes: int) -> int:
        """How far the node's counter is ahead of the paid bytes (0 if not ahead)."""
        return max(0, observed_bytes - self.paid_bytes())

    def within_credit(self, observed_bytes: int) -> bool:
        """Whether the node should keep serving: unpaid bytes have not passed the credit limit."""
        return self.unpaid_bytes(observed_bytes) <= self.terms.credit_bytes

    def settleable(self, settled_amount: int) -> AcceptedReceipt | None:
        """The latest receipt if it pays more than ``settled_amount`` (what the chain has settled)."""
        latest = self._latest
        if latest is not None and latest.receipt.cumulative_amount > settled_amount:
            return latest
        return None

    def set_deposit(self, deposit: int) -> None:
        """Raise the deposit after a top-up seen on chain (it never goes down while open)."""
        if deposit < self.terms.deposit:
            raise LocalProtocolError("a channel's deposit never decreases")
        self.terms = self.terms.with_deposit(deposit)

    def accept(self, receipt: Receipt, signature: bytes, observed_bytes: int) -> Decision:
        """Check a receipt against the terms and the node's own counter; store it if good.

        Args:
            receipt: the fields the client signed.
            signature: its signature, as received.
            observed_bytes: the node's counter for this client's tunnel (rx + tx) now.

        Returns:
            An accepted decision only after the receipt is durably stored; otherwise the reason.
        """
        problem = self._verify(receipt, signature)
        if problem is not None:
            return problem
        terms = self.terms
        nbytes, amount = receipt.cumulative_bytes, receipt.cumulative_amount
        if amount < (price := price_of(nbytes, terms.price_per_gib)):
            return Decision.refuse(Refusal.UNDERPRICED, f"{amount} < {price} token wei for {nbytes} bytes")
        if observed_bytes - nbytes > terms.credit_bytes:
            return Decision.refuse(Refusal.OVER_CREDIT,
                                   f"counter {observed_bytes} - paid {nbytes} > credit {terms.credit_bytes}")
        if nbytes - observed_bytes > terms.credit_bytes:
            return Decision.refuse(Refusal.BEYOND_COUNTER,
                                   f"paid {nbytes} - counter {observed_bytes} > credit {terms.credit_bytes}")
        record = AcceptedReceipt(receipt, bytes(signature), observed_bytes)
        self.store.append(record)
        self._latest = record
        return Decision(True)

    def _verify(self, receipt: Receipt, signature: bytes) -> Decision | None:
        """The checks the contract would make at settlement, plus replay and growth; None if good."""
        terms = self.terms
        if len(signature) != SIGNATURE_LENGTH:
            return Decision.refuse(Refusal.BAD_SIGNATURE_LENGTH, f"{len(signature)} bytes")
        if receipt.channel_id != terms.channel_id:
            return Decision.refuse(Refusal.WRONG_CHANNEL, receipt.channel_id.hex())
        nbytes, amount = receipt.cumulative_bytes, receipt.cumulative_amount
        if not 0 <= nbytes <= MAX_BYTES or not 0 <= amount <= MAX_AMOUNT:
            return Decision.refuse(Refusal.TOO_LARGE, f"{nbytes} bytes, {amount} token wei")
        signer = _recover(receipt, bytes(signature), terms)
        if signer is None:
            return Decision.refuse(Refusal.BAD_SIGNATURE)
        if signer != terms.signer:
            return Decision.refuse(Refusal.WRONG_SIGNER, signer)
        if self._latest is not None:
            last = self._latest.receipt
            if (nbytes, amount) == (last.cumulative_bytes, last.cumulative_amount):
                return Decision.refuse(Refusal.REPLAYED)
            if nbytes < last.cumulative_bytes or amount < last.cumulative_amount:
                return Decision.refuse(Refusal.DECREASING, f"latest is {last.cumulative_bytes} bytes, "
                                                           f"{last.cumulative_amount} token wei")
            if nbytes == last.cumulative_bytes or amount == last.cumulative_amount:
                return Decision.refuse(Refusal.STALE, "both fields must grow")
        elif nbytes == 0 or amount == 0:
            return Decision.refuse(Refusal.STALE, "both fields must grow")
        if amount > terms.deposit:
            return Decision.refuse(Refusal.OVER_DEPOSIT, f"{amount} > {terms.deposit} token wei")
        return None


# -- framing inside the tunnel ---------------------------------------------------------------------

class FrameKind(enum.IntEnum):
    """What a frame carries (first byte)."""

    RECEIPT = 1          # client -> node: a receipt and its signature
    CLOSE_REQUEST = 2    # client -> node: the final receipt; please sign a CooperativeClose over it
    ACK = 0x81           # node -> client: the receipt is stored
    REFUSED = 0x82       # node -> client: body is the Refusal value (ASCII)
    CLOSE_SIGNATURE = 0x83  # node -> client: the operator's 65-byte CooperativeClose signature


#: kind (1 byte) + body length (2 bytes, big-endian).
_HEADER = struct.Struct(">BH")
#: A receipt body is channel_id (32) + bytes (32) + amount (32) + signature; signatures up to this
#: long are passed to the ledger (which refuses them by reason), longer frames end the connection.
MAX_SIGNATURE_ON_WIRE = 128
MAX_BODY = 96 + MAX_SIGNATURE_ON_WIRE


@dataclasses.dataclass(frozen=True)
class Frame:
    """One framed message."""

    kind: FrameKind  # or the kind enum of the stream's FrameReader (agents.control.ControlKind)
    body: bytes


def encode_frame(kind: FrameKind, body: bytes = b"") -> bytes:
    """kind || length || body.

    Raises:
        LocalProtocolError: the body is longer than a frame may be.
    """
    if len(body) > MAX_BODY:
        raise LocalProtocolError(f"frame body of {len(body)} bytes exceeds {MAX_BODY}")
    return _HEADER.pack(int(kind), len(body)) + body


def encode_receipt(receipt: Receipt, signature: bytes) -> bytes:
    """A receipt frame body: the three fields as 32-byte big-endian words, then the signature."""
    return (receipt.channel_id + receipt.cumulative_bytes.to_bytes(32, "big")
            + receipt.cumulative_amount.to_bytes(32, "big") + signature)


def decode_receipt(body: bytes) -> tuple[Receipt, bytes]:
    """Inverse of :func:`encode_receipt`; the signature is returned as is, whatever its length.

    Raises:
        RemoteProtocolError: the body is shorter than the three fields.
    """
    if len(body) < 96:
        raise RemoteProtocolError("receipt_truncated", f"{len(body)} bytes")
    return (Receipt(body[:32], int.from_bytes(body[32:64], "big"), int.from_bytes(body[64:96], "big")),
            body[96:])


class FrameReader:
    """Turns a byte stream into frames (sans-I/O: feed it whatever ``recv`` returned).

    Args:
        kinds: the enum of frame kinds this stream may carry (an unknown first byte ends it).
        max_body: the longest body accepted, bytes.
    """

    def __init__(self, kinds: type[enum.IntEnum] = FrameKind, max_body: int = MAX_BODY) -> None:
        self._buffer = bytearray()
        self._kinds = kinds
        self._max_body = max_body

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return every complete frame.

        Raises:
            RemoteProtocolError: an unknown kind or a frame longer than the maximum body.
        """
        self._buffer += data
        frames = []
        while len(self._buffer) >= _HEADER.size:
            kind, length = _HEADER.unpack_from(self._buffer)
            try:
                kind = self._kinds(kind)
            except ValueError:
                raise RemoteProtocolError("unknown_kind", str(kind)) from None
            if length > self._max_body:
                raise RemoteProtocolError("frame_too_long", f"{length} bytes")
            if len(self._buffer) < _HEADER.size + length:
                break
            frames.append(Frame(kind, bytes(self._buffer[_HEADER.size:_HEADER.size + length])))
            del self._buffer[:_HEADER.size + length]
        return frames
