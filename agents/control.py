"""The in-tunnel control channel between a client and an exit node: session setup, receipts, close.

DESIGN.md, "Sessions (exit mode)": after the WireGuard handshake the client is in quarantine and can
reach only the node's control address (``CONTROL_PORT``/tcp on the node's tunnel addresses). It opens
one TCP connection there and speaks these frames; nothing that names a channel ever crosses the wire
outside WireGuard.

Frame: kind (1 byte) || body length (2 bytes, big-endian) || body. Setup messages have JSON bodies
(readable, extensible, small); the per-megabyte messages are fixed binary words (receipts reuse
:func:`agents.metering.encode_receipt`).

Client -> node:
  * ``SESSION_REQUEST`` (JSON :class:`SessionRequest` + the payment signer's EIP-712 signature):
    names the channel and binds it to this tunnel's WireGuard key, the node and a fresh timestamp.
  * ``RECEIPT``: a cumulative receipt (metering's body).
  * ``CLOSE_REQUEST``: the final receipt; asks the operator's CooperativeClose signature.
Node -> client:
  * ``SESSION_ACCEPT`` (JSON :class:`SessionTerms`): tunnel addresses, DNS, price, credit, cadence.
  * ``SESSION_REFUSED`` (JSON: reason, detail) then the node closes the connection.
  * ``ACK``: cumulative bytes/amount of the receipt now stored (2 x 32 bytes).
  * ``REFUSED``: a receipt refusal's reason (ASCII :class:`agents.metering.Refusal` value).
  * ``INVOICE``: the node's billed and unbilled byte counts for this session (2 x 8 bytes: what it
    charges, and what it carried but does not charge because its exit dropped it), sent several
    times a second; it doubles as the client's heartbeat.
  * ``CLOSE_SIGNATURE``: the operator's 65-byte CooperativeClose signature.

This module is sans-I/O: codecs only.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import struct

from eth_utils import to_checksum_address

from agents.chain import eip712
from agents.metering import Frame, FrameReader, RemoteProtocolError

__all__ = [
    "CONTROL_PORT",
    "ControlFrame",
    "ControlKind",
    "ControlReader",
    "SessionRequest",
    "SessionTerms",
    "decode_ack",
    "decode_invoice",
    "encode",
    "encode_ack",
    "encode_invoice",
    "encode_json",
    "decode_json",
    "MAX_RELAY_TARGETS",
    "parse_relay_to",
    "sign_request",
    "request_signer",
]

#: TCP port of the node's control service on its tunnel addresses.
CONTROL_PORT = 7700
#: Largest frame body: a setup message is a few hundred bytes; anything near this is hostile.
MAX_BODY = 4096
#: Exit endpoints one relay session may name (`warren connect --hops 2`: the exit and its standbys).
MAX_RELAY_TARGETS = 8
_HEADER = struct.Struct(">BH")  # the metering codec's header: kind, body length


class ControlKind(enum.IntEnum):
    """What a control frame carries (first byte)."""

    SESSION_REQUEST = 0x10
    RECEIPT = 0x01
    CLOSE_REQUEST = 0x02
    PING = 0x03  # body: a nonce of at most PING_MAX bytes; the node answers PONG with the same body
    SESSION_ACCEPT = 0x90
    SESSION_REFUSED = 0x91
    ACK = 0x81
    REFUSED = 0x82
    CLOSE_SIGNATURE = 0x83
    INVOICE = 0x84
    PONG = 0x85


#: Largest PING body the node echoes (the client sends an 8-byte counter).
PING_MAX = 16


#: One control frame (kind, body): the metering codec's frame, with a :class:`ControlKind`.
ControlFrame = Frame


def encode(kind: ControlKind, body: bytes = b"") -> bytes:
    """kind || length || body (raises ValueError for a body over :data:`MAX_BODY`)."""
    if len(body) > MAX_BODY:
        raise ValueError(f"control frame body of {len(body)} bytes exceeds {MAX_BODY}")
    return _HEADER.pack(int(kind), len(body)) + body


def encode_json(kind: ControlKind, value: dict) -> bytes:
    """A frame with a compact JSON body."""
    return encode(kind, json.dumps(value, separators=(",", ":"), sort_keys=True).encode())


def decode_json(frame: ControlFrame) -> dict:
    """The JSON object of a frame's body.

    Raises:
        RemoteProtocolError: not a JSON object.
    """
    try:
        value = json.loads(frame.body)
    except (ValueError, UnicodeDecodeError):
        raise RemoteProtocolError("bad_json", frame.kind.name) from None
    if not isinstance(value, dict):
        raise RemoteProtocolError("bad_json", f"{frame.kind.name} is not an object")
    return value


class ControlReader(FrameReader):
    """Turns the control connection's byte stream into frames (the metering codec, with the control
    channel's kinds and its larger bound)."""

    def __init__(self) -> None:
        super().__init__(ControlKind, MAX_BODY)


def encode_ack(cumulative_bytes: int, cumulative_amount: int) -> bytes:
    """An ACK frame for the receipt now stored."""
    return encode(ControlKind.ACK, cumulative_bytes.to_bytes(32, "big") + cumulative_amount.to_bytes(32, "big"))


def decode_ack(body: bytes) -> tuple[int, int]:
    """(cumulative_bytes, cumulative_amount) of an ACK body."""
    if len(body) != 64:
        raise RemoteProtocolError("bad_ack", f"{len(body)} bytes")
    return int.from_bytes(body[:32], "big"), int.from_bytes(body[32:], "big")


def encode_invoice(billed_bytes: int, unbilled_bytes: int) -> bytes:
    """An INVOICE frame: the session's billed bytes, and the bytes carried but not billed."""
    return encode(ControlKind.INVOICE, billed_bytes.to_bytes(8, "big") + unbilled_bytes.to_bytes(8, "big"))


def decode_invoice(body: bytes) -> tuple[int, int]:
    """(billed, unbilled) bytes of an INVOICE body."""
    if len(body) != 16:
        raise RemoteProtocolError("bad_invoice", f"{len(body)} bytes")
    return int.from_bytes(body[:8], "big"), int.from_bytes(body[8:], "big")


# -- session setup ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SessionRequest:
    """The client's first message: which channel pays for this tunnel (EIP-712 signed).

    Signed by the channel's payment signer for the domain of the contract that holds the channel
    (payment_channels, or the voucher pool), so it proves the tunnel's owner controls the channel.
    It binds the tunnel's WireGuard key (a request captured from one tunnel is useless in another),
    the node (useless at another node) and a timestamp plus nonce (stale or replayed requests are
    refused).

    Attributes:
        channel_id: the channel's 32-byte id.
        node_id: the node's id (keccak256 of its WireGuard key).
        wg_key: the client's 32-byte WireGuard public key for this tunnel.
        timestamp: unix seconds when the client made the request.
        nonce: 32 random bytes.
    """

    channel_id: bytes
    node_id: bytes
    wg_key: bytes
    timestamp: int
    nonce: bytes

    PRIMARY_TYPE = "SessionRequest"
    FIELDS = (
        {"name": "channel_id", "type": "bytes32"},
        {"name": "node_id", "type": "bytes32"},
        {"name": "wg_key", "type": "bytes32"},
        {"name": "timestamp", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    )

    def to_wire(self, signature: bytes, *, client: str | None = None, signer: str | None = None,
                pool: str | None = None, voucher_deposit: int | None = None) -> dict:
        """The JSON body of a SESSION_REQUEST.

        ``client`` and ``signer`` let the node recompute a payment_channels id; ``pool`` (with
        ``signer`` and ``voucher_deposit``) names a voucher-pool channel's terms instead.
        """
        body = {"channel_id": self.channel_id.hex(), "node_id": self.node_id.hex(),
                "wg_key": base64.b64encode(self.wg_key).decode(), "timestamp": self.timestamp,
                "nonce": self.nonce.hex(), "signature": signature.hex()}
        if client is not None:
            body["client"] = to_checksum_address(client)
        if signer is not None:
            body["signer"] = to_checksum_address(signer)
        if pool is not None:
            body["pool"] = to_checksum_address(pool)
            body["deposit"] = int(voucher_deposit or 0)
        return body

    @classmethod
    def from_wire(cls, body: dict) -> tuple[SessionRequest, bytes, dict]:
        """Parse a SESSION_REQUEST body: (request, signature, the channel's naming fields).

        Raises:
            RemoteProtocolError: missing or malformed fields.
        """
        try:
            request = cls(bytes.fromhex(body["channel_id"]), bytes.fromhex(body["node_id"]),
                          base64.b64decode(body["wg_key"], validate=True), int(body["timestamp"]),
                          bytes.fromhex(body["nonce"]))
            signature = bytes.fromhex(body["signature"])
            names = {}
            for key in ("client", "signer", "pool"):
                if key in body:
                    names[key] = to_checksum_address(str(body[key]))
            if "deposit" in body:
                names["deposit"] = int(body["deposit"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteProtocolError("bad_request", str(exc)) from None
        if (len(request.channel_id), len(request.node_id), len(request.wg_key), len(request.nonce)) != (32,) * 4:
            raise RemoteProtocolError("bad_request", "ids, key and nonce are 32 bytes each")
        if not 0 <= request.timestamp < 1 << 63:
            raise RemoteProtocolError("bad_request", "timestamp out of range")
        return request, signature, names


def parse_relay_to(body: dict) -> tuple[tuple[str, int], ...] | None:
    """The ``relay_to`` field of a SESSION_REQUEST: the IPv4 WireGuard endpoints a relay session's
    datagrams may go to (None: an ordinary exit session).

    The field travels inside the WireGuard tunnel (authenticated by it), so it needs no signature of
    its own: only the tunnel's owner can have sent it.

    Raises:
        RemoteProtocolError: not a list of 1-8 ``[IPv4 address, port]`` pairs.
    """
    import ipaddress

    if "relay_to" not in body:
        return None
    raw = body["relay_to"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_RELAY_TARGETS:
        raise RemoteProtocolError("bad_request", f"relay_to: expected 1-{MAX_RELAY_TARGETS} endpoints")
    out = []
    for item in raw:
        try:
            address, port = item
            address = str(ipaddress.IPv4Address(address))
        except (TypeError, ValueError):
            raise RemoteProtocolError("bad_request", f"relay_to: {item!r} is not [IPv4 address, port]") from None
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise RemoteProtocolError("bad_request", f"relay_to: bad port in {item!r}")
        out.append((address, port))
    return tuple(dict.fromkeys(out))


def sign_request(request: SessionRequest, private_key: bytes | str, chain_id: int, verifying_contract: str) -> bytes:
    """The payment signer's signature on a session request."""
    return eip712.sign(request, private_key, chain_id, verifying_contract)


def request_signer(request: SessionRequest, signature: bytes, chain_id: int, verifying_contract: str) -> str | None:
    """Who signed a session request (None for a malformed signature)."""
    if len(signature) != 65:
        return None
    try:
        return eip712.recover(request, signature, chain_id, verifying_contract)
    except Exception:  # eth-account raises several types for unrecoverable signatures
        return None


@dataclasses.dataclass(frozen=True)
class SessionTerms:
    """What the node grants in SESSION_ACCEPT.

    Attributes:
        address_v4: the client's tunnel IPv4 address (no prefix).
        address_v6: the client's tunnel IPv6 address.
        dns: the node's in-tunnel resolver addresses.
        price_per_gib: token wei per GiB (the node's on-chain price).
        credit_bytes: unpaid bytes the node carries before it cuts the client off.
        receipt_bytes: the client sends a receipt at least every this many bytes...
        receipt_interval_s: ...or this many seconds, whichever first.
        paid_bytes: bytes of the latest receipt the node holds for this channel (resuming).
        paid_amount: token wei of that receipt.
    """

    address_v4: str
    address_v6: str
    dns: tuple[str, ...]
    price_per_gib: int
    credit_bytes: int
    receipt_bytes: int
    receipt_interval_s: float
    paid_bytes: int = 0
    paid_amount: int = 0

    def to_wire(self) -> dict:
        """The JSON body of SESSION_ACCEPT."""
        value = dataclasses.asdict(self)
        value["dns"] = list(self.dns)
        return value

    @classmethod
    def from_wire(cls, body: dict) -> SessionTerms:
        """Parse SESSION_ACCEPT (raises RemoteProtocolError when malformed)."""
        try:
            terms = cls(str(body["address_v4"]), str(body["address_v6"]), tuple(str(a) for a in body["dns"]),
                        int(body["price_per_gib"]), int(body["credit_bytes"]), int(body["receipt_bytes"]),
                        float(body["receipt_interval_s"]), int(body.get("paid_bytes", 0)),
                        int(body.get("paid_amount", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteProtocolError("bad_accept", str(exc)) from None
        if terms.receipt_bytes <= 0 or terms.receipt_interval_s <= 0 or terms.credit_bytes < 0:
            raise RemoteProtocolError("bad_accept", "cadence and credit must be positive")
        return terms
