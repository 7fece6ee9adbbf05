"""TEST ONLY: a node that rewrites payload bytes it forwards to its clients (``WARREN_TEST_TAMPER=1``).

The lab needs a dishonest node to show that challengers catch tampering and guardians revoke it
(tests/challenger/test_challenger_netns.py). With the variable set to ``1`` in `warren node run`'s
environment, every IPv4 TCP segment the node sends into a tunnel has the first byte of its payload
inverted (the segment that starts an HTTP response's headers excepted: the content is what a
man in the middle changes), with the TCP checksum recomputed, so the client's kernel accepts the changed bytes as a
real man-in-the-middle's would be. Never set it on a real node: it corrupts every customer's
downloads, and the challengers will get the node revoked and its whole stake taken.
"""

from __future__ import annotations

import os
import struct

__all__ = ["ENV", "install", "tamper_packet"]

#: The environment variable that turns tampering on (value "1").
ENV = "WARREN_TEST_TAMPER"


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's-complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tamper_packet(packet: bytes) -> bytes:
    """``packet`` with its TCP payload's first byte inverted (IPv4 TCP with payload), else unchanged."""
    if len(packet) < 40 or packet[0] >> 4 != 4 or packet[9] != 6:
        return packet
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack("!H", packet[2:4])[0]
    if total > len(packet) or ihl < 20:
        return packet
    data_offset = (packet[ihl + 12] >> 4) * 4
    start = ihl + data_offset
    if start >= total or packet[start:start + 5] == b"HTTP/":
        return packet  # no payload (a bare ACK), or a response's headers: the content is what is changed
    out = bytearray(packet[:total])
    out[start] ^= 0xFF
    segment = bytes(out[ihl:total])
    segment = segment[:16] + b"\0\0" + segment[18:]
    pseudo = bytes(out[12:20]) + struct.pack("!BBH", 0, 6, len(segment))
    out[ihl + 16:ihl + 18] = struct.pack("!H", _checksum(pseudo + segment))
    return bytes(out)


def install(tunnel):
    """Wrap the tunnel's encapsulation with :func:`tamper_packet` when :data:`ENV` is ``1``; returns it."""
    if os.environ.get(ENV) != "1":
        return tunnel
    original = tunnel.device.encapsulate

    def encapsulate(packet, now):
        return original(tamper_packet(packet), now)

    tunnel.device.encapsulate = encapsulate
    return tunnel
