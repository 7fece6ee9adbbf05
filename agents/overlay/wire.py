"""Overlay messages on the shared UDP socket.

Every Warren host has one UDP socket (DESIGN.md, "The wire"). A datagram whose first byte is 1..4 is
WireGuard; overlay datagrams use type bytes ``0x40..0x4f`` (:data:`OVERLAY_TYPES`), chosen far from
WireGuard's 1..4 so a demultiplexer needs to look at one byte only. Anything else is dropped.

Layout (big-endian). Every message starts with the same 37-byte header::

    type u8 | sender_id 32 bytes | txid u32

``sender_id`` lets the receiver learn the sender as a routing contact (its endpoint is the datagram's
source address, which behind a NAT is exactly the reflexive address others must use). ``txid`` pairs a
reply with its request. A *contact* is ``node_id 32 | family u8 (4|6) | ip 4|16 | port u16``.

==== ================= ===========================================================================
type name              body after the header
==== ================= ===========================================================================
0x40 PING              (none)
0x41 PONG              observed endpoint of the pinger (family|ip|port): reflexive address discovery
0x42 FIND              key 32 | n u8 | n excluded ids (found dead) | flags u8 (1: bound follows,
                       2: asked as a likely owner, 4: answer with contacts before the key) |
                       [bound 32: live node whose successors span key]
0x43 FOUND             kind u8 | n u8 | n contacts. kind 1: the sender owns the key (contacts: itself,
                       then its successors); 2: the key lies within the sender's successor list
                       (contacts: likely owners); 3: the key lies before the sender's predecessor
                       (contact: that predecessor); 4: as 1, but tentative: the sender's
                       predecessors are dead and it went by the asker's bound; 0: closer
                       preceding contacts
0x44 GET_NEIGHBOURS    [join u8]: stabilisation asks a successor for its predecessor and successors;
                       join=1 (a joining node) also notifies, so the reply confirms the join
0x45 NEIGHBOURS        has_pred u8 | [pred contact] | n u8 | n successor contacts
0x46 NOTIFY            has u8 | [contact]: "I believe I am your predecessor; here is mine"
0x47 STORE             replica u8 | signed record
0x48 STORE_ACK         ok u8 | reason (ascii)
0x49 FETCH             key 32
0x4a VALUE             n u8 | n times (len u16 | signed record)
0x4b BROADCAST         bid 16 | limit 32 | depth u8 | payload
0x4c BROADCAST_ACK     bid 16
0x4d NAT               sub-type u8 | body (see :mod:`agents.overlay.nat`)
0x4e RELAYED           session 8 | inner datagram (relay data path, see :mod:`agents.overlay.nat`)
0x4f AUTH              sub-type u8 | body: the sender-id handshake (see :mod:`agents.overlay.auth`)
==== ================= ===========================================================================

With sender authentication (:mod:`agents.overlay.auth`), every datagram but AUTH ends with a 16-byte
tag (:data:`AUTH_TAG`) after the body above.

Datagrams are at most :data:`MAX_DATAGRAM` bytes.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "OVERLAY_TYPES",
    "MAX_DATAGRAM",
    "MAX_RELAYED_DATAGRAM",
    "MAX_WG_RELAYED",
    "MAX_CONTACTS",
    "Address",
    "Contact",
    "Msg",
    "PING",
    "PONG",
    "FIND",
    "FOUND",
    "GET_NEIGHBOURS",
    "NEIGHBOURS",
    "NOTIFY",
    "STORE",
    "STORE_ACK",
    "FETCH",
    "VALUE",
    "BROADCAST",
    "BROADCAST_ACK",
    "NAT",
    "RELAYED",
    "AUTH",
    "AUTH_TAG",
    "is_overlay",
    "encode",
    "decode",
    "max_size",
    "encode_address",
    "decode_address",
]

PING, PONG, FIND, FOUND = 0x40, 0x41, 0x42, 0x43
GET_NEIGHBOURS, NEIGHBOURS, NOTIFY = 0x44, 0x45, 0x46
STORE, STORE_ACK, FETCH, VALUE = 0x47, 0x48, 0x49, 0x4A
BROADCAST, BROADCAST_ACK, NAT, RELAYED = 0x4B, 0x4C, 0x4D, 0x4E
AUTH = 0x4F  # handled by agents.overlay.auth before decoding, never by encode/decode
OVERLAY_TYPES = range(0x40, 0x50)

# 16 bytes: the sender tag appended to every authenticated datagram (BLAKE2s-128, agents.overlay.auth).
AUTH_TAG = 16
# 1232 bytes is the largest UDP payload that fits a 1280-byte IPv6 minimum MTU (RFC 8200) after the
# 40-byte IPv6 and 8-byte UDP headers; a message is at most that less the sender tag, so overlay
# datagrams are never fragmented.
MAX_DATAGRAM = 1232 - AUTH_TAG
# RELAYED frames alone may be larger: one carries a whole WireGuard datagram of a tunnel with MTU
# 1420 (the exit's, kept for IPv6's 1280 minimum): 1420 + 32 (WireGuard header and tag) = 1452 bytes,
# plus the 37-byte header and the 8-byte session = 1497. Over IPv4 such a datagram may be fragmented
# on a 1500-byte link; every other overlay message stays within MAX_DATAGRAM.
MAX_WG_RELAYED = 1452
MAX_CONTACTS = 16  # per FOUND/NEIGHBOURS: a successor list (ring.SUCCESSORS) fits in one datagram

Address = tuple  # (host: str, port: int)

_HEADER = struct.Struct(">B32sI")
HEADER_SIZE = _HEADER.size
#: A RELAYED frame around the largest relayed WireGuard datagram (see MAX_WG_RELAYED).
MAX_RELAYED_DATAGRAM = HEADER_SIZE + 8 + MAX_WG_RELAYED


@dataclass(slots=True)
class Contact:
    """A known node: its ring id and the UDP endpoint it is reached at."""

    node_id: int
    addr: Address

    def __hash__(self) -> int:
        return hash(self.node_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Contact) and other.node_id == self.node_id


@dataclass(slots=True)
class Msg:
    """A decoded overlay message. Only the fields of its type are meaningful.

    Attributes:
        type: one of the type constants above.
        sender: ring id of the sender (as it claims).
        txid: request/reply pairing number.
        key: FIND/FETCH key.
        ids: FIND excluded ids.
        contacts: FOUND/NEIGHBOURS contacts.
        flag: FOUND owner flag, STORE replica flag, STORE_ACK ok flag, NEIGHBOURS has-pred,
            FIND flags.
        addr: PONG observed endpoint.
        data: STORE record, STORE_ACK reason, BROADCAST payload, NAT/RELAYED body.
        records: VALUE records.
        bid: BROADCAST id.
        limit: BROADCAST range end; FIND bound (with flag bit 1).
        depth: BROADCAST depth (rounds from the origin).
        sub: NAT sub-type; RELAYED session.
    """

    type: int
    sender: int
    txid: int = 0
    key: int = 0
    ids: tuple = ()
    contacts: tuple = ()
    flag: int = 0
    addr: Address | None = None
    data: bytes = b""
    records: tuple = ()
    bid: bytes = b""
    limit: int = 0
    depth: int = 0
    sub: int = 0


def is_overlay(datagram: bytes) -> bool:
    """Whether a datagram on the shared socket belongs to the overlay (first byte 0x40..0x4f)."""
    return len(datagram) >= 1 and datagram[0] in OVERLAY_TYPES


def encode_address(addr: Address) -> bytes:
    """family u8 | ip | port u16 for an (ip, port) tuple."""
    host, port = addr[0], addr[1]
    try:
        return b"\x04" + socket.inet_aton(host) + port.to_bytes(2, "big")
    except OSError:
        try:
            return b"\x06" + socket.inet_pton(socket.AF_INET6, host) + port.to_bytes(2, "big")
        except OSError as exc:
            raise LocalProtocolError(f"overlay: not an ip address: {host!r}") from exc


def decode_address(buf: bytes, pos: int) -> tuple[Address, int]:
    """Decode an address at ``pos``; returns it and the position after it."""
    try:
        fam = buf[pos]
        if fam == 4:
            host = socket.inet_ntoa(buf[pos + 1 : pos + 5])
            end = pos + 7
        elif fam == 6:
            host = socket.inet_ntop(socket.AF_INET6, buf[pos + 1 : pos + 17])
            end = pos + 19
        else:
            raise RemoteProtocolError("overlay: bad address family")
        if end > len(buf):
            raise RemoteProtocolError("overlay: truncated address")
        return (host, int.from_bytes(buf[end - 2 : end], "big")), end
    except (IndexError, OSError, ValueError) as exc:
        raise RemoteProtocolError("overlay: truncated address") from exc


def _enc_contact(c: Contact) -> bytes:
    return c.node_id.to_bytes(32, "big") + encode_address(c.addr)


def _dec_contact(buf: bytes, pos: int) -> tuple[Contact, int]:
    if pos + 32 > len(buf):
        raise RemoteProtocolError("overlay: truncated contact")
    nid = int.from_bytes(buf[pos : pos + 32], "big")
    addr, pos = decode_address(buf, pos + 32)
    return Contact(nid, addr), pos


def _enc_contacts(cs) -> bytes:
    cs = tuple(cs)[:MAX_CONTACTS]
    return bytes([len(cs)]) + b"".join(_enc_contact(c) for c in cs)


def _dec_contacts(buf: bytes, pos: int) -> tuple[tuple, int]:
    if pos >= len(buf):
        raise RemoteProtocolError("overlay: truncated contact list")
    n = buf[pos]
    if n > MAX_CONTACTS:
        raise RemoteProtocolError("overlay: too many contacts")
    pos += 1
    out = []
    for _ in range(n):
        c, pos = _dec_contact(buf, pos)
        out.append(c)
    return tuple(out), pos


def _need(buf: bytes, end: int, what: str) -> None:
    if len(buf) < end:
        raise RemoteProtocolError(f"overlay: truncated {what}")


def encode(m: Msg) -> bytes:
    """Serialise a message; raises LocalProtocolError if it would exceed MAX_DATAGRAM."""
    t = m.type
    head = _HEADER.pack(t, m.sender.to_bytes(32, "big"), m.txid)
    if t == PING:
        body = b""
    elif t == GET_NEIGHBOURS:
        body = b"\x01" if m.flag else b""
    elif t == NOTIFY:
        body = (b"\x01" + _enc_contact(m.contacts[0])) if m.contacts else b"\x00"
    elif t == PONG:
        body = encode_address(m.addr)
    elif t == FIND:
        ids = m.ids[:8]
        body = m.key.to_bytes(32, "big") + bytes([len(ids)]) + b"".join(i.to_bytes(32, "big") for i in ids)
        body += bytes([m.flag & 7]) + (m.limit.to_bytes(32, "big") if m.flag & 1 else b"")
    elif t == FOUND:
        body = bytes([m.flag]) + _enc_contacts(m.contacts)
    elif t == NEIGHBOURS:
        pred = m.contacts[0] if m.flag else None
        body = bytes([1 if pred else 0]) + (_enc_contact(pred) if pred else b"") + _enc_contacts(m.contacts[1:])
    elif t == STORE:
        body = bytes([m.flag]) + m.data
    elif t == STORE_ACK:
        body = bytes([m.flag]) + m.data
    elif t == FETCH:
        body = m.key.to_bytes(32, "big")
    elif t == VALUE:
        body = bytes([len(m.records)]) + b"".join(len(r).to_bytes(2, "big") + r for r in m.records)
    elif t == BROADCAST:
        body = m.bid + m.limit.to_bytes(32, "big") + bytes([m.depth]) + m.data
    elif t == BROADCAST_ACK:
        body = m.bid
    elif t == NAT:
        body = bytes([m.sub]) + m.data
    elif t == RELAYED:
        body = m.sub.to_bytes(8, "big") + m.data
    else:
        raise LocalProtocolError(f"overlay: unknown message type {t:#x}")
    out = head + body
    if len(out) > max_size(t):
        raise LocalProtocolError(f"overlay: message of {len(out)} bytes exceeds {max_size(t)}")
    return out


def max_size(message_type: int) -> int:
    """The largest datagram of this type: MAX_DATAGRAM, or MAX_RELAYED_DATAGRAM for RELAYED."""
    return MAX_RELAYED_DATAGRAM if message_type == RELAYED else MAX_DATAGRAM


def decode(buf: bytes) -> Msg:
    """Parse a datagram; raises RemoteProtocolError on anything malformed."""
    if len(buf) < HEADER_SIZE or len(buf) > max_size(buf[0]):
        raise RemoteProtocolError("overlay: bad datagram length")
    t, sender, txid = _HEADER.unpack_from(buf)
    m = Msg(t, int.from_bytes(sender, "big"), txid)
    p = HEADER_SIZE
    try:
        if t == PING:
            pass
        elif t == GET_NEIGHBOURS:
            m.flag = 1 if len(buf) > p and buf[p] else 0
        elif t == NOTIFY:
            if buf[p]:
                c, _ = _dec_contact(buf, p + 1)
                m.contacts = (c,)
        elif t == PONG:
            m.addr, _ = decode_address(buf, p)
        elif t == FIND:
            _need(buf, p + 33, "find")
            m.key = int.from_bytes(buf[p : p + 32], "big")
            n = buf[p + 32]
            if n > 8 or len(buf) < p + 33 + 32 * n:
                raise RemoteProtocolError("overlay: bad find exclusions")
            q = p + 33
            m.ids = tuple(int.from_bytes(buf[q + 32 * i : q + 32 * i + 32], "big") for i in range(n))
            q += 32 * n
            m.flag = buf[q] & 7
            if m.flag & 1:
                if len(buf) < q + 33:
                    raise RemoteProtocolError("overlay: truncated find bound")
                m.limit = int.from_bytes(buf[q + 1 : q + 33], "big")
        elif t == FOUND:
            m.flag = buf[p]
            m.contacts, _ = _dec_contacts(buf, p + 1)
        elif t == NEIGHBOURS:
            m.flag = buf[p]
            p += 1
            pred = None
            if m.flag:
                pred, p = _dec_contact(buf, p)
            succs, _ = _dec_contacts(buf, p)
            m.contacts = ((pred,) if pred else ()) + succs
        elif t in (STORE, STORE_ACK):
            m.flag = buf[p]
            m.data = bytes(buf[p + 1 :])
        elif t == FETCH:
            _need(buf, p + 32, "fetch")
            m.key = int.from_bytes(buf[p : p + 32], "big")
        elif t == VALUE:
            n = buf[p]
            p += 1
            recs = []
            for _ in range(n):
                ln = int.from_bytes(buf[p : p + 2], "big")
                if p + 2 + ln > len(buf):
                    raise RemoteProtocolError("overlay: truncated value")
                recs.append(bytes(buf[p + 2 : p + 2 + ln]))
                p += 2 + ln
            m.records = tuple(recs)
        elif t == BROADCAST:
            _need(buf, p + 49, "broadcast")
            m.bid = bytes(buf[p : p + 16])
            m.limit = int.from_bytes(buf[p + 16 : p + 48], "big")
            m.depth = buf[p + 48]
            m.data = bytes(buf[p + 49 :])
        elif t == BROADCAST_ACK:
            _need(buf, p + 16, "broadcast ack")
            m.bid = bytes(buf[p : p + 16])
        elif t == NAT:
            m.sub = buf[p]
            m.data = bytes(buf[p + 1 :])
        elif t == RELAYED:
            _need(buf, p + 8, "relayed frame")
            m.sub = int.from_bytes(buf[p : p + 8], "big")
            m.data = bytes(buf[p + 8 :])
        else:
            raise RemoteProtocolError(f"overlay: unknown message type {t:#x}")
    except IndexError as exc:
        raise RemoteProtocolError("overlay: truncated message") from exc
    return m
