"""Wire formats: exact sizes, field order and the checks on the type word."""

import pytest

from agents.wireguard import messages as m
from agents.wireguard.errors import RemoteProtocolError


def test_sizes__are_the_papers():
    assert (m.INITIATION_SIZE, m.RESPONSE_SIZE, m.COOKIE_REPLY_SIZE, m.TRANSPORT_MIN_SIZE) == (148, 92, 64, 32)


def test_initiation__layout_is_little_endian_fields_in_paper_order():
    wire = m.pack_initiation(0x01020304, b"E" * 32, b"S" * 48, b"T" * 28)
    assert wire[:4] == b"\x01\x00\x00\x00"
    assert wire[4:8] == b"\x04\x03\x02\x01"
    assert wire[8:40] == b"E" * 32 and wire[40:88] == b"S" * 48 and wire[88:116] == b"T" * 28
    assert wire[116:148] == bytes(32)
    assert m.parse_initiation(wire) == m.Initiation(0x01020304, b"E" * 32, b"S" * 48, b"T" * 28, bytes(16), bytes(16))


def test_response__layout():
    wire = m.pack_response(5, 6, b"E" * 32, b"N" * 16)
    assert wire[:12] == b"\x02\x00\x00\x00\x05\x00\x00\x00\x06\x00\x00\x00"
    assert m.parse_response(wire) == m.Response(5, 6, b"E" * 32, b"N" * 16, bytes(16), bytes(16))


def test_cookie_reply__layout():
    wire = m.pack_cookie_reply(9, b"n" * 24, b"c" * 32)
    assert wire[:8] == b"\x03\x00\x00\x00\x09\x00\x00\x00" and len(wire) == 64
    assert m.parse_cookie_reply(wire) == m.CookieReply(9, b"n" * 24, b"c" * 32)


def test_transport_header__receiver_then_64_bit_counter():
    assert m.pack_transport_header(1, 2**40 + 1) == b"\x04\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x01\x00\x00"


@pytest.mark.parametrize("datagram,reason", [
    (b"", "truncated"),
    (b"\x01\x00", "truncated"),
    (b"\x01\x00\x00\x01" + bytes(144), "reserved_nonzero"),
    (b"\x05\x00\x00\x00" + bytes(60), "unknown_type"),
    (b"\x00\x00\x00\x00" + bytes(60), "unknown_type"),
    (b"\x01\x00\x00\x00" + bytes(143), "truncated"),
    (b"\x01\x00\x00\x00" + bytes(145), "oversized"),
    (b"\x02\x00\x00\x00" + bytes(87), "truncated"),
    (b"\x03\x00\x00\x00" + bytes(61), "oversized"),
    (b"\x04\x00\x00\x00" + bytes(27), "truncated"),
    (b"\x04\x00\x00\x00" + bytes(m.TRANSPORT_MAX_SIZE), "oversized"),
])
def test_message_type__malformed__names_the_reason(datagram, reason):
    with pytest.raises(RemoteProtocolError) as info:
        m.message_type(datagram)
    assert info.value.reason == reason


@pytest.mark.parametrize("datagram,kind", [
    (b"\x01\x00\x00\x00" + bytes(144), 1),
    (b"\x02\x00\x00\x00" + bytes(88), 2),
    (b"\x03\x00\x00\x00" + bytes(60), 3),
    (b"\x04\x00\x00\x00" + bytes(28), 4),
])
def test_message_type__well_formed__returns_type(datagram, kind):
    assert m.message_type(datagram) == kind
