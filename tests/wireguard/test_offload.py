"""agents.wireguard.offload: how datagrams are grouped for GSO sends and cut out of GRO receives."""

import struct

import pytest

from agents.wireguard.offload import (
    MAX_GSO_BYTES,
    MAX_SEGMENTS,
    SOL_UDP,
    UDP_GRO,
    gro_segment_size,
    gso_cmsg,
    runs,
    split,
)


def _sizes(datagrams):
    return [[len(d) for d in run] for run in runs(datagrams)]


def test_runs__equal_datagrams__one_run_in_order():
    datagrams = [bytes([i]) * 1452 for i in range(10)]
    (run,) = runs(datagrams)
    assert run == datagrams


def test_runs__shorter_last__kept_larger_after_starts_a_new_run():
    assert _sizes([b"a" * 100, b"b" * 100, b"c" * 60, b"d" * 100]) == [[100, 100, 60], [100]]
    assert _sizes([b"a" * 60, b"b" * 100]) == [[60], [100]]


def test_runs__short_one_in_the_middle__ends_its_run():
    assert _sizes([b"x" * 100, b"x" * 50, b"x" * 50]) == [[100, 50], [50]]


def test_runs__segment_and_byte_limits():
    many = [b"\0" * 100] * (MAX_SEGMENTS + 3)
    assert [len(r) for r in runs(many)] == [MAX_SEGMENTS, 3]
    big = [b"\0" * 1452] * 60
    sizes = [sum(map(len, r)) for r in runs(big)]
    assert all(s <= MAX_GSO_BYTES for s in sizes) and sum(sizes) == 1452 * 60


def test_runs__empty():
    assert list(runs([])) == []


def test_gso_cmsg__segment_size_native_u16():
    assert gso_cmsg(1452) == [(SOL_UDP, 103, struct.pack("=H", 1452))]


def test_gro_segment_size__from_ancillary_data():
    assert gro_segment_size([(SOL_UDP, UDP_GRO, struct.pack("=i", 1452))]) == 1452
    assert gro_segment_size([]) is None
    assert gro_segment_size([(0, 8, struct.pack("=i", 1))]) is None  # some other control message
    assert gro_segment_size([(SOL_UDP, UDP_GRO, b"\0\0")]) is None  # truncated: not trusted


@pytest.mark.parametrize("data, size, expected", [
    (b"aabbc", 2, [b"aa", b"bb", b"c"]),
    (b"aabb", 2, [b"aa", b"bb"]),
    (b"abc", None, [b"abc"]),
    (b"abc", 3, [b"abc"]),
    (b"abc", 10, [b"abc"]),
    (b"", 4, [b""]),
])
def test_split(data, size, expected):
    assert split(data, size) == expected
