"""Ring ids and the overlay wire format."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.overlay import wire
from agents.overlay.errors import LocalProtocolError, RemoteProtocolError
from agents.overlay.ids import RING, in_half_open, in_open, node_id_from_wg_key
from agents.overlay.wire import Contact, Msg

ids = st.integers(min_value=0, max_value=RING - 1)


def test_node_id__is_keccak_of_wg_key():
    # keccak256 of 32 zero bytes (a well-known constant)
    assert node_id_from_wg_key(bytes(32)) == int(
        "290decd9548b62a8d60345a988386fc84ba6bc95484008f6362f93160ef3e563", 16
    )


def test_node_id__wrong_key_length__raises():
    with pytest.raises(LocalProtocolError):
        node_id_from_wg_key(b"short")


@given(ids, ids, ids)
def test_intervals__half_open_is_open_plus_end(x, a, b):
    if a != b:
        assert in_half_open(x, a, b) == (in_open(x, a, b) or x == b)


@given(ids, ids)
def test_intervals__wrap_around(a, d):
    b = (a + d) % RING
    if d > 1:
        assert in_open((a + 1) % RING, a, b)
    assert not in_open(a, a, b)


def _roundtrip(m: Msg) -> Msg:
    raw = wire.encode(m)
    assert wire.is_overlay(raw)
    return wire.decode(raw)


@pytest.mark.parametrize("addr", [("127.0.0.1", 4000), ("fd00::1", 51820)])
def test_pong__carries_observed_endpoint(addr):
    out = _roundtrip(Msg(wire.PONG, 5, 77, addr=addr))
    assert (out.type, out.sender, out.txid, out.addr) == (wire.PONG, 5, 77, addr)


def test_find__exclusions_and_bound_roundtrip():
    out = _roundtrip(Msg(wire.FIND, 1, 2, key=RING - 1, ids=(3, 4), flag=3, limit=9))
    assert (out.key, out.ids, out.flag, out.limit) == (RING - 1, (3, 4), 3, 9)


def test_neighbours__predecessor_and_successors_roundtrip():
    cs = tuple(Contact(i, ("10.0.0.%d" % i, 4000 + i)) for i in range(1, 17))
    out = _roundtrip(Msg(wire.NEIGHBOURS, 1, 2, flag=1, contacts=cs))
    assert [(c.node_id, c.addr) for c in out.contacts] == [(c.node_id, c.addr) for c in cs]


def test_value__records_roundtrip():
    out = _roundtrip(Msg(wire.VALUE, 1, 2, records=(b"a" * 10, b"b" * 300)))
    assert out.records == (b"a" * 10, b"b" * 300)


def test_broadcast__roundtrip():
    out = _roundtrip(Msg(wire.BROADCAST, 1, 2, bid=b"i" * 16, limit=12345, depth=7, data=b"payload"))
    assert (out.bid, out.limit, out.depth, out.data) == (b"i" * 16, 12345, 7, b"payload")


def test_encode__oversized__raises_local_error():
    with pytest.raises(LocalProtocolError):
        wire.encode(Msg(wire.STORE, 1, data=b"x" * wire.MAX_DATAGRAM))


@pytest.mark.parametrize("first", [1, 2, 3, 4, 0, 0x3F, 0x50, 0xFF])
def test_is_overlay__wireguard_and_unknown_types__are_not_overlay(first):
    assert not wire.is_overlay(bytes([first]) + bytes(40))


@given(st.binary(max_size=wire.MAX_DATAGRAM + 10))
def test_decode__garbage__raises_only_remote_error(data):
    try:
        wire.decode(data)
    except RemoteProtocolError:
        pass


@given(st.binary(min_size=1, max_size=200))
def test_decode__truncated_real_message__raises_only_remote_error(tail):
    raw = wire.encode(Msg(wire.NEIGHBOURS, 1, 2, flag=1, contacts=(Contact(1, ("10.0.0.1", 1)),) * 3))
    cut = raw[: max(wire.HEADER_SIZE, len(raw) - len(tail))]
    try:
        wire.decode(cut)
    except RemoteProtocolError:
        pass
