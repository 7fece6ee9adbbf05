"""TUN segmentation offloads (pure functions): cut a TSO/USO train into packets, coalesce TCP back.

A TUN device opened with ``IFF_VNET_HDR`` and given ``TUNSETOFFLOAD`` flags (agents.wireguard.tun)
prefixes every packet with a 10-byte ``struct virtio_net_hdr`` (<linux/virtio_net.h>, host byte
order), and the kernel may then hand us, in one read, a TCP "super-segment" of up to 64 KiB whose
header says how to cut it (``gso_type``, ``gso_size``) and whose transport checksum it left partial
(``VIRTIO_NET_HDR_F_NEEDS_CSUM``: the field holds the pseudo-header sum, ``csum_start`` /
``csum_offset`` say where). :func:`segment` makes the MTU-sized packets a peer expects of it, each
with its own IP length, IPv4 id and header checksum, TCP sequence number and flags, and a complete
transport checksum; the peer's WireGuard (wireguard-go, the kernel's) sees ordinary packets.

The other way, :func:`coalesce` merges the decrypted TCP segments of one flow that follow each other
(same addresses, ports, ACK, window, options, IP fields; only ACK or a final PSH; sequence numbers
adjacent; equal sizes but for a shorter last one) into one packet with a ``virtio_net_hdr`` that lets
the kernel treat it as one received super-segment (GRO), so one TUN write carries what took up to 44.
Segments are merged only if their checksum verifies (the kernel would not verify the merged packet:
it is marked partial), as wireguard-go's tun/offload_linux.go does; anything else is written alone,
with an all-zero header, and the kernel checks it as usual.

The ones'-complement sum is computed as ``int.from_bytes(data) % 0xFFFF`` (2**16 = 1 mod 0xFFFF, so
the big-endian number is congruent to the sum of its 16-bit words): ~2.4 us for 1,368 bytes, done in
C by the interpreter's big integers, where a loop over words in Python would take ~30 us.
"""

from __future__ import annotations

import struct

__all__ = ["VNET_HDR_LEN", "ZERO_HDR", "GSO_NONE", "GSO_TCPV4", "GSO_TCPV6", "GSO_UDP_L4", "NEEDS_CSUM",
           "VnetHeader", "checksum", "segment", "coalesce", "MAX_COALESCED"]

#: ``sizeof(struct virtio_net_hdr)``: flags u8, gso_type u8, hdr_len u16, gso_size u16, csum_start
#: u16, csum_offset u16 (the TUN default; TUNSETVNETHDRSZ can make it larger, we never do).
VNET_HDR_LEN = 10
_HDR = struct.Struct("=BBHHHH")
#: A header that says "an ordinary packet, checksums complete".
ZERO_HDR = bytes(VNET_HDR_LEN)
#: <linux/virtio_net.h>: flags and gso types.
NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3  # UFO, never offered: we do not set TUN_F_UFO
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80
#: Largest IP packet (the IPv4 total length and IPv6 payload length are 16 bits).
MAX_COALESCED = 65_535
_TCP, _UDP = 6, 17
_FIN, _PSH, _ACK, _CWR = 0x01, 0x08, 0x10, 0x80


class VnetHeader(tuple):
    """A parsed ``virtio_net_hdr``: (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)."""

    __slots__ = ()

    @classmethod
    def parse(cls, frame: bytes) -> "VnetHeader":
        return cls(_HDR.unpack_from(frame))

    def pack(self) -> bytes:
        return _HDR.pack(*self)


def _sum(data) -> int:
    """Ones'-complement sum of ``data`` as 16-bit big-endian words, modulo 0xFFFF (0 stands for both
    zeros; the caller folds)."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:  # the last byte is the high half of a word padded with zero
        value <<= 8
    return value % 0xFFFF


def checksum(data, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071) of ``data``, starting from the partial sum ``initial``."""
    total = (_sum(data) + initial) % 0xFFFF
    return 0xFFFF - total if total else 0  # a sum of 0 mod 0xFFFF is 0xFFFF (data never all zero)


def _pseudo(packet, v6: bool, proto: int, length: int) -> int:
    """Partial sum of the pseudo-header (addresses, protocol, transport length)."""
    addresses = packet[8:40] if v6 else packet[12:20]
    return _sum(addresses) + proto + length


def _ipv4_header_checksum(header: bytearray, ihl: int) -> None:
    header[10:12] = b"\0\0"
    header[10:12] = checksum(memoryview(header)[:ihl]).to_bytes(2, "big")


def segment(frame: bytes) -> list[bytes]:
    """The IP packets of one TUN read made with a ``virtio_net_hdr`` in front.

    Args:
        frame: header + packet, as read from a TUN device opened with ``IFF_VNET_HDR``.

    Returns:
        The packets to send, in order (one, unless the header asks for segmentation); empty if the
        frame is malformed (shorter than its header says, or an unknown gso type).
    """
    if len(frame) <= VNET_HDR_LEN:
        return []
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = _HDR.unpack_from(frame)
    packet = frame[VNET_HDR_LEN:]
    gso_type &= ~GSO_ECN
    if gso_type == GSO_NONE:
        if flags & NEEDS_CSUM:
            at = csum_start + csum_offset
            if at + 2 > len(packet):
                return []
            # The field holds the pseudo-header sum; summing over it folds it in.
            value = checksum(memoryview(packet)[csum_start:])
            if value == 0 and csum_offset == 6:  # UDP: 0 means "no checksum"; send 0xFFFF
                value = 0xFFFF
            out = bytearray(packet)
            out[at:at + 2] = value.to_bytes(2, "big")
            return [bytes(out)]
        return [packet]
    if gso_type not in (GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4) or not gso_size:
        return []
    v6 = packet[0] >> 4 == 6
    iph = csum_start  # the transport header's offset (after any IPv6 extension headers)
    if gso_type == GSO_UDP_L4:
        proto, thl = _UDP, 8
    else:
        proto = _TCP
        if len(packet) < iph + 20:
            return []
        thl = (packet[iph + 12] >> 4) * 4
    hdr = iph + thl
    if len(packet) <= hdr or iph < (40 if v6 else 20):
        return []
    header = bytearray(packet[:hdr])
    csum_at = iph + (16 if proto == _TCP else 6)
    ip_id = int.from_bytes(packet[4:6], "big")
    seq = int.from_bytes(packet[iph + 4:iph + 8], "big") if proto == _TCP else 0
    tcp_flags = packet[iph + 13] if proto == _TCP else 0
    view = memoryview(packet)
    total = len(packet)
    out = []
    for i, start in enumerate(range(hdr, total, gso_size)):
        chunk = view[start:start + gso_size]
        last = start + gso_size >= total
        seg = bytearray(header)
        seg += chunk
        size = len(seg)
        if v6:
            seg[4:6] = (size - 40).to_bytes(2, "big")
        else:
            seg[2:4] = size.to_bytes(2, "big")
            seg[4:6] = ((ip_id + i) & 0xFFFF).to_bytes(2, "big")
            _ipv4_header_checksum(seg, iph)
        if proto == _TCP:
            seg[iph + 4:iph + 8] = ((seq + start - hdr) & 0xFFFFFFFF).to_bytes(4, "big")
            f = tcp_flags
            if not last:
                f &= ~(_FIN | _PSH)
            if i:
                f &= ~_CWR
            seg[iph + 13] = f
        else:
            seg[iph + 4:iph + 6] = (size - iph).to_bytes(2, "big")
        seg[csum_at:csum_at + 2] = b"\0\0"
        value = checksum(memoryview(seg)[iph:], _pseudo(seg, v6, proto, size - iph))
        if proto == _UDP and value == 0:
            value = 0xFFFF
        seg[csum_at:csum_at + 2] = value.to_bytes(2, "big")
        out.append(bytes(seg))
    return out


class _Group:
    """Consecutive segments of one TCP flow being merged."""

    __slots__ = ("first", "iph", "thl", "parts", "size", "gso_size", "next_seq", "psh", "closed", "v6")

    def __init__(self, packet: bytes, iph: int, thl: int, seq: int, payload: int, psh: bool, v6: bool):
        self.first = packet
        self.iph, self.thl, self.v6 = iph, thl, v6
        self.parts: list = []
        self.size = len(packet)
        self.gso_size = payload
        self.next_seq = (seq + payload) & 0xFFFFFFFF
        self.psh = psh
        self.closed = False


def _tcp_candidate(packet: bytes):
    """(v6, iph, thl, payload length, flow key) of a TCP segment GRO may merge, else None."""
    n = len(packet)
    if n < 40:
        return None
    version = packet[0] >> 4
    if version == 4:
        if packet[0] != 0x45 or packet[9] != _TCP or int.from_bytes(packet[2:4], "big") != n:
            return None
        if packet[6] & 0x3F or packet[7]:  # MF or a fragment offset
            return None
        iph, v6 = 20, False
        addresses = packet[12:20]
    elif version == 6:
        if n < 60 or packet[6] != _TCP or int.from_bytes(packet[4:6], "big") != n - 40:
            return None
        iph, v6 = 40, True
        addresses = packet[8:40]
    else:
        return None
    thl = (packet[iph + 12] >> 4) * 4
    if thl < 20 or n < iph + thl:
        return None
    key = addresses + packet[iph:iph + 4] + packet[iph + 8:iph + 12]  # addresses, ports, ACK
    return v6, iph, thl, n - iph - thl, key


def _same_headers(a: bytes, b: bytes, v6: bool, iph: int, thl: int) -> bool:
    """Whether b may follow a in one super-segment: the fields GRO keeps from the first must agree."""
    if v6:
        if a[0:4] != b[0:4] or a[7] != b[7]:  # version, traffic class, flow label; hop limit
            return False
    elif a[1] != b[1] or a[6] & 0xE0 != b[6] & 0xE0 or a[8] != b[8]:  # TOS; DF; TTL
        return False
    # Data offset + flags (PSH aside) + window, then the options, as Linux's tcp_gro_receive compares.
    if a[iph + 12] != b[iph + 12] or a[iph + 14:iph + 16] != b[iph + 14:iph + 16]:
        return False
    return a[iph + 20:iph + thl] == b[iph + 20:iph + thl]


def coalesce(packets: list[bytes]) -> list[bytes]:
    """Frames (``virtio_net_hdr`` + packet) for TUN writes: adjacent segments of a TCP flow merged.

    Order is kept within each flow: a segment that cannot join its flow's group (a gap, a repeat,
    other flags, a different ACK) ends the group, and later segments of the flow start a new one.

    Args:
        packets: decrypted inner IP packets in the order they arrived.

    Returns:
        One frame per group or unmerged packet, in the order of their first packets.
    """
    out: list = []
    groups: dict[bytes, _Group] = {}
    for packet in packets:
        found = _tcp_candidate(packet)
        if found is None:
            out.append(packet)
            continue
        v6, iph, thl, payload, key = found
        flags = packet[iph + 13]
        group = groups.get(key)
        if payload == 0 or flags & ~_PSH != _ACK or checksum(memoryview(packet)[iph:], _pseudo(
                packet, v6, _TCP, len(packet) - iph)) != 0:
            if group is not None:  # nothing of this flow may merge past this packet
                del groups[key]
            out.append(packet)
            continue
        seq = int.from_bytes(packet[iph + 4:iph + 8], "big")
        psh = bool(flags & _PSH)
        if (group is not None and not group.psh and not group.closed and seq == group.next_seq
                and payload <= group.gso_size and group.size + payload <= MAX_COALESCED
                and group.thl == thl and _same_headers(group.first, packet, v6, iph, thl)):
            group.parts.append(memoryview(packet)[iph + thl:])
            group.size += payload
            group.next_seq = (seq + payload) & 0xFFFFFFFF
            group.psh = psh
            group.closed = payload < group.gso_size
            continue
        group = _Group(packet, iph, thl, seq, payload, psh, v6)
        groups[key] = group
        out.append(group)
    return [ZERO_HDR + item if isinstance(item, bytes) else _merged(item) for item in out]


def _merged(group: _Group) -> bytes:
    """The frame of one group: the first packet's headers, all payloads, a GSO header."""
    if not group.parts:
        return ZERO_HDR + group.first
    iph, thl, v6 = group.iph, group.thl, group.v6
    packet = bytearray(group.first)
    for part in group.parts:
        packet += part
    size = len(packet)
    if v6:
        packet[4:6] = (size - 40).to_bytes(2, "big")
    else:
        packet[2:4] = size.to_bytes(2, "big")
        _ipv4_header_checksum(packet, iph)
    if group.psh:
        packet[iph + 13] |= _PSH
    # Partial checksum: the pseudo-header sum, which the kernel completes (or never needs: a
    # CHECKSUM_PARTIAL packet delivered locally is taken as valid).
    partial = _pseudo(packet, v6, _TCP, size - iph) % 0xFFFF
    packet[iph + 16:iph + 18] = (partial or 0xFFFF).to_bytes(2, "big")
    header = _HDR.pack(NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, iph + thl, group.gso_size, iph, 16)
    return header + packet
