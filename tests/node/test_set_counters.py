"""agents.node.set_counters: the netlink set-element dump, parsed and checked against `nft -j`."""

from __future__ import annotations

import errno
import json
import struct

import pytest

from agents.netlab import Lab, can_build_namespaces
from agents.node.set_counters import (
    NFTA_SET_ELEM_EXPRESSIONS,
    NetlinkError,
    SetCounters,
    parse_elements,
    request,
)

#: A real kernel reply (6.18) to request("t", "s", seq=5) for
#: `set s { type ipv4_addr; counter; }` holding 10.0.0.5 (7 packets, 999 bytes) and 10.0.0.6 (none),
#: then the dump's end.
REPLY = bytes.fromhex(
    "a00000000c0a0200050000007c69000001000002060001007400000006000200730000007c0003003c0001000c0001000800"
    "01000a0000062c0007000c000100636f756e746572001c0002000c00010000000000000000000c000200000000000000000"
    "03c0001000c000100080001000a0000052c0007000c000100636f756e746572001c0002000c00010000000000000003e70c"
    "0002000000000000000007")
DONE = bytes.fromhex("140000000300020005000000" "7c69000000000000")


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _message(kind: int, payload: bytes, seq: int = 5) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), kind, 2, seq, 0) + payload


def _counter_expr(packets: int, bytes_: int) -> bytes:
    data = _attr(1, struct.pack(">Q", bytes_)) + _attr(2, struct.pack(">Q", packets))
    return _attr(1, b"counter\0") + _attr(2, data)


def _element_message(key: bytes, exprs: bytes, seq: int = 5) -> bytes:
    element = _attr(1, _attr(1, key)) + exprs
    body = struct.pack("=BBH", 1, 0, 0) + _attr(3, _attr(1, element))
    return _message(10 << 8 | 12, body, seq)


def test_parse__kernel_reply__counters_per_address():
    assert parse_elements(REPLY, 5) == ({"10.0.0.6": (0, 0), "10.0.0.5": (7, 999)}, False)
    assert parse_elements(REPLY + DONE, 5) == ({"10.0.0.6": (0, 0), "10.0.0.5": (7, 999)}, True)


def test_parse__other_sequence__skipped():
    assert parse_elements(REPLY + DONE, 6) == ({}, False)


def test_parse__ipv6_and_several_expressions__canonical_text():
    key = bytes.fromhex("fd777272000000000000000000000012")
    exprs = _attr(NFTA_SET_ELEM_EXPRESSIONS, _attr(1, _attr(1, b"limit\0")) + _attr(1, _counter_expr(3, 300)))
    assert parse_elements(_element_message(key, exprs), 5) == ({"fd77:7272::12": (3, 300)}, False)


def test_parse__element_without_counter__left_out():
    assert parse_elements(_element_message(bytes(4), b""), 5) == ({}, False)


def test_parse__kernel_error__raised_with_its_errno():
    error = _message(2, struct.pack("=i", -errno.ENOENT) + bytes(16))
    with pytest.raises(NetlinkError) as raised:
        parse_elements(error, 5)
    assert raised.value.errno == errno.ENOENT


@pytest.mark.parametrize("cut", [3, 15, 40, 100, len(REPLY) - 1])
def test_parse__truncated__refused(cut):
    with pytest.raises(NetlinkError):
        parse_elements(REPLY[:cut], 5)


@pytest.mark.parametrize("bad", [
    _element_message(b"\x01\x02\x03", _attr(7, _counter_expr(1, 1))),  # a 3-byte key is no address
    _element_message(bytes(4), _attr(7, _attr(1, b"counter\0") + _attr(2, _attr(1, b"\0" * 3)))),
    _message(10 << 8 | 99, b"\0" * 4),  # not a set element message
    struct.pack("=IHHII", 9999, 10 << 8 | 12, 2, 5, 0),  # longer than the datagram
])
def test_parse__malformed__refused(bad):
    with pytest.raises(NetlinkError):
        parse_elements(bad, 5)


def test_request__names_table_and_set():
    raw = request("warren_exit", "drops4", seq=9)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", raw)
    assert (length, kind, flags, seq) == (len(raw), 10 << 8 | 13, 0x301, 9)
    assert b"warren_exit\0" in raw and b"drops4\0" in raw


@pytest.mark.netns
@pytest.mark.skipif(not can_build_namespaces(), reason="needs root: a namespace with its own nftables")
def test_read__agrees_with_nft_json__across_several_datagrams():
    with Lab(prefix="wsetc") as lab:
        host = lab.add_host("h")
        elements4 = ", ".join(f"10.1.{i >> 8}.{i & 255} counter packets {i} bytes {i * 100}" for i in range(3000))
        host.run(["nft", "-f", "-"], input=(
            "table inet t {\n set s4 { type ipv4_addr; size 65536; counter; }\n"
            " set s6 { type ipv6_addr; size 16; counter; }\n}\n"
            f"add element inet t s4 {{ {elements4} }}\n"
            "add element inet t s6 { fd77::1 counter packets 2 bytes 80, fd77::2 }\n").encode())
        with host.enter():
            counters = SetCounters("t")
        try:
            got4, got6 = counters.read("s4"), counters.read("s6")
            with pytest.raises(NetlinkError) as missing:
                counters.read("absent")
            assert missing.value.errno == errno.ENOENT
        finally:
            counters.close()
        listing = json.loads(host.run(["nft", "-j", "list", "table", "inet", "t"]).stdout)
        expected: dict[str, dict] = {"s4": {}, "s6": {}}
        for item in listing["nftables"]:
            if "set" in item:
                for elem in item["set"].get("elem", []):
                    inner = elem["elem"]
                    expected[item["set"]["name"]][inner["val"]] = (inner["counter"]["packets"], inner["counter"]["bytes"])
        assert len(got4) == 3000 and got4 == expected["s4"]
        assert got6 == expected["s6"] == {"fd77::1": (2, 80), "fd77::2": (0, 0)}


def test_set_counters__unknown_family__refused():
    with pytest.raises(ValueError, match="family"):
        SetCounters("t", family="bridge")

