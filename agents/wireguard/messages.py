"""WireGuard wire formats: exact byte layouts of the four message types.

Layouts follow the WireGuard paper, section 5.4 (all integers little-endian; the first byte is the
type and the next three reserved bytes must be zero)::

    initiation   (148 B)  type=1 | reserved[3] | sender u32 | ephemeral[32] | static[32+16]
                          | timestamp[12+16] | mac1[16] | mac2[16]
    response     ( 92 B)  type=2 | reserved[3] | sender u32 | receiver u32 | ephemeral[32]
                          | empty[0+16] | mac1[16] | mac2[16]
    cookie reply ( 64 B)  type=3 | reserved[3] | receiver u32 | nonce[24] | cookie[16+16]
    transport    (>=32 B) type=4 | reserved[3] | receiver u32 | counter u64 | packet[n+16]

The parsers check type, reserved bytes and length and raise `RemoteProtocolError` with the reason the
device counts. The transport hot path in `core` unpacks the 16-byte header inline with `TRANSPORT_HEADER`.
"""

import struct
from typing import NamedTuple

from .errors import RemoteProtocolError

__all__ = [
    "MESSAGE_INITIATION",
    "MESSAGE_RESPONSE",
    "MESSAGE_COOKIE_REPLY",
    "MESSAGE_TRANSPORT",
    "INITIATION_SIZE",
    "RESPONSE_SIZE",
    "COOKIE_REPLY_SIZE",
    "TRANSPORT_HEADER_SIZE",
    "TRANSPORT_MIN_SIZE",
    "TRANSPORT_MAX_SIZE",
    "MAC_SIZE",
    "TRANSPORT_HEADER",
    "Initiation",
    "Response",
    "CookieReply",
    "message_type",
    "parse_initiation",
    "parse_response",
    "parse_cookie_reply",
    "pack_initiation",
    "pack_response",
    "pack_cookie_reply",
    "pack_transport_header",
]

#: Message types, paper section 5.4 (the first little-endian u32 of every message).
MESSAGE_INITIATION = 1
MESSAGE_RESPONSE = 2
MESSAGE_COOKIE_REPLY = 3
MESSAGE_TRANSPORT = 4

#: Exact sizes, paper section 5.4.2 - 5.4.7.
INITIATION_SIZE = 148
RESPONSE_SIZE = 92
COOKIE_REPLY_SIZE = 64
#: type(1) + reserved(3) + receiver(4) + counter(8).
TRANSPORT_HEADER_SIZE = 16
#: Header plus the 16-byte Poly1305 tag of an empty (keepalive) payload.
TRANSPORT_MIN_SIZE = TRANSPORT_HEADER_SIZE + 16
#: The largest UDP payload (65,535 - 8 UDP - 20 IPv4 header bytes); anything bigger cannot be genuine.
TRANSPORT_MAX_SIZE = 65507
#: mac1 and mac2 are 16-byte keyed BLAKE2s digests (paper section 5.4.4).
MAC_SIZE = 16

_INITIATION = struct.Struct("<I I 32s 48s 28s 16s 16s")
_RESPONSE = struct.Struct("<I I I 32s 16s 16s 16s")
_COOKIE_REPLY = struct.Struct("<I I 24s 32s")
#: The 16-byte transport header: type/reserved word, receiver index, counter.
TRANSPORT_HEADER = struct.Struct("<I I Q")

assert _INITIATION.size == INITIATION_SIZE
assert _RESPONSE.size == RESPONSE_SIZE
assert _COOKIE_REPLY.size == COOKIE_REPLY_SIZE


class Initiation(NamedTuple):
    """A parsed handshake initiation (type 1)."""

    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes
    mac2: bytes


class Response(NamedTuple):
    """A parsed handshake response (type 2)."""

    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes
    mac2: bytes


class CookieReply(NamedTuple):
    """A parsed cookie reply (type 3)."""

    receiver: int
    nonce: bytes
    encrypted_cookie: bytes


_EXPECTED_SIZE = {
    MESSAGE_INITIATION: INITIATION_SIZE,
    MESSAGE_RESPONSE: RESPONSE_SIZE,
    MESSAGE_COOKIE_REPLY: COOKIE_REPLY_SIZE,
}


def message_type(datagram: bytes) -> int:
    """Validate the 4-byte type word and the length of a datagram.

    Args:
        datagram: a UDP payload.

    Returns:
        The message type, 1..4.

    Raises:
        RemoteProtocolError: ``truncated``, ``reserved_nonzero``, ``unknown_type``, ``bad_length`` or
            ``oversized``.
    """
    size = len(datagram)
    if size < 4:
        raise RemoteProtocolError("truncated", f"{size} bytes")
    kind = datagram[0]
    if datagram[1] or datagram[2] or datagram[3]:
        raise RemoteProtocolError("reserved_nonzero")
    if kind == MESSAGE_TRANSPORT:
        if size < TRANSPORT_MIN_SIZE:
            raise RemoteProtocolError("truncated", f"transport of {size} bytes")
        if size > TRANSPORT_MAX_SIZE:
            raise RemoteProtocolError("oversized", f"transport of {size} bytes")
        return kind
    expected = _EXPECTED_SIZE.get(kind)
    if expected is None:
        raise RemoteProtocolError("unknown_type", f"type {kind}")
    if size != expected:
        raise RemoteProtocolError("truncated" if size < expected else "oversized", f"type {kind}: {size} bytes")
    return kind


def parse_initiation(datagram: bytes) -> Initiation:
    """Split a 148-byte initiation into its fields (type and length already checked)."""
    _, *fields = _INITIATION.unpack(datagram)
    return Initiation(*fields)


def parse_response(datagram: bytes) -> Response:
    """Split a 92-byte response into its fields (type and length already checked)."""
    _, *fields = _RESPONSE.unpack(datagram)
    return Response(*fields)


def parse_cookie_reply(datagram: bytes) -> CookieReply:
    """Split a 64-byte cookie reply into its fields (type and length already checked)."""
    _, *fields = _COOKIE_REPLY.unpack(datagram)
    return CookieReply(*fields)


def pack_initiation(sender: int, ephemeral: bytes, encrypted_static: bytes, encrypted_timestamp: bytes) -> bytes:
    """Build an initiation with zeroed mac1/mac2 (the cookie module fills them in)."""
    return _INITIATION.pack(MESSAGE_INITIATION, sender, ephemeral, encrypted_static, encrypted_timestamp,
                            bytes(16), bytes(16))


def pack_response(sender: int, receiver: int, ephemeral: bytes, encrypted_nothing: bytes) -> bytes:
    """Build a response with zeroed mac1/mac2 (the cookie module fills them in)."""
    return _RESPONSE.pack(MESSAGE_RESPONSE, sender, receiver, ephemeral, encrypted_nothing, bytes(16), bytes(16))


def pack_cookie_reply(receiver: int, nonce: bytes, encrypted_cookie: bytes) -> bytes:
    """Build a cookie reply."""
    return _COOKIE_REPLY.pack(MESSAGE_COOKIE_REPLY, receiver, nonce, encrypted_cookie)


def pack_transport_header(receiver: int, counter: int) -> bytes:
    """Build the 16-byte header of a transport data message."""
    return TRANSPORT_HEADER.pack(MESSAGE_TRANSPORT, receiver, counter)
