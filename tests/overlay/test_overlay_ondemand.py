"""On-demand resolution's sans-I/O part: queues, one look-up per address, negative cache (fake clock)."""

from __future__ import annotations

import ipaddress

from agents.overlay.ondemand import (
    MAX_ADDRESSES,
    MAX_QUEUED_PER_ADDRESS,
    NEGATIVE_S,
    PendingPackets,
    destination,
)


def _ipv4(dst: str, payload: bytes = b"x") -> bytes:
    header = bytes([0x45, 0, 0, 20 + len(payload), 0, 0, 0, 0, 64, 1, 0, 0]) + bytes(4)
    return header + ipaddress.IPv4Address(dst).packed + payload


def test_destination__ipv4_packet__its_destination_address():
    assert destination(_ipv4("10.77.0.2")) == "10.77.0.2"
    assert destination(b"\x60" + bytes(39)) is None  # IPv6: not handled
    assert destination(b"\x45\x00") is None


def test_pending__first_packet_starts_one_lookup__later_ones_queue_behind_it():
    pending = PendingPackets()
    assert pending.packet("10.77.0.2", _ipv4("10.77.0.2", b"1"), 0.0) is True
    assert pending.packet("10.77.0.2", _ipv4("10.77.0.2", b"2"), 0.1) is False
    assert pending.packet("10.77.0.3", _ipv4("10.77.0.3"), 0.1) is True
    assert pending.stats["lookups"] == 2
    assert pending.resolved("10.77.0.2") == [_ipv4("10.77.0.2", b"1"), _ipv4("10.77.0.2", b"2")]
    assert "10.77.0.2" not in pending.queues and "10.77.0.3" in pending.queues


def test_pending__queue_full__further_packets_dropped():
    pending = PendingPackets()
    for i in range(MAX_QUEUED_PER_ADDRESS + 5):
        pending.packet("10.77.0.2", _ipv4("10.77.0.2", bytes([i])), 0.0)
    assert len(pending.queues["10.77.0.2"]) == MAX_QUEUED_PER_ADDRESS
    assert pending.stats["dropped"] == 5
    assert pending.resolved("10.77.0.2")[0] == _ipv4("10.77.0.2", b"\x00")  # oldest first


def test_pending__too_many_addresses__new_ones_refused():
    pending = PendingPackets()
    for i in range(MAX_ADDRESSES):
        assert pending.packet(f"10.1.{i}.1", b"p", 0.0)
    assert pending.packet("10.2.0.1", b"p", 0.0) is False
    assert "10.2.0.1" not in pending.queues


def test_pending__failed_lookup__address_dropped_until_negative_cache_expires():
    pending = PendingPackets()
    pending.packet("10.77.0.9", b"a", 0.0)
    pending.packet("10.77.0.9", b"b", 0.5)
    pending.failed("10.77.0.9", 1.0)
    assert pending.stats["dropped"] == 2 and "10.77.0.9" not in pending.queues
    assert pending.packet("10.77.0.9", b"c", 1.0 + NEGATIVE_S - 0.01) is False  # no look-up storm
    assert pending.stats["lookups"] == 1
    assert pending.packet("10.77.0.9", b"d", 1.0 + NEGATIVE_S) is True  # tried again afterwards
    assert pending.queues["10.77.0.9"] == [b"d"] and pending.stats["lookups"] == 2
