"""agents.node.tamper (test-only tampering node): payload byte changed, TCP checksum still valid."""

import struct

from agents.node.tamper import _checksum, tamper_packet


def tcp_packet(payload: bytes) -> bytes:
    src, dst = bytes([203, 0, 113, 7]), bytes([10, 77, 0, 2])
    tcp = struct.pack("!HHIIBBHHH", 8080, 40000, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst)
    return header + tcp


def tcp_checksum_ok(packet: bytes) -> bool:
    tcp = packet[20:]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
    return _checksum(pseudo + tcp) == 0


def test_tamper__first_payload_byte_inverted_and_checksum_valid():
    packet = tcp_packet(b"hello world")
    assert tcp_checksum_ok(packet)
    changed = tamper_packet(packet)
    assert changed[40:] == bytes([ord("h") ^ 0xFF]) + b"ello world"
    assert changed[:36] == packet[:36] and tcp_checksum_ok(changed)


def test_tamper__bare_ack_udp_and_ipv6_untouched():
    ack = tcp_packet(b"")
    assert tamper_packet(ack) == ack
    udp = bytearray(tcp_packet(b"x" * 20))
    udp[9] = 17
    assert tamper_packet(bytes(udp)) == bytes(udp)
    v6 = bytes([0x60]) + bytes(59)
    assert tamper_packet(v6) == v6
    headers = tcp_packet(b"HTTP/1.1 200 OK\r\n")
    assert tamper_packet(headers) == headers
