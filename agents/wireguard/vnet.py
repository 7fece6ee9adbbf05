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
With ``udp=True`` (a TUN granted USO: the kernel takes ``GSO_UDP_L4`` writes from 6.2 on) it merges
the UDP datagrams of one flow the same way (same addresses, ports, IP fields and first payload word;
equal sizes but for a shorter last one; at most :data:`MAX_UDP_SEGMENTS`): a socket with ``UDP_GRO``
then receives them in one ``recvmsg``, and the kernel cuts them again anywhere else (a socket without
it, a forward). That is what two hops need: the inner tunnel's datagrams cross the outer tunnel's TUN.
The kernel does not verify a merged packet's checksum (it is marked partial): ``verify=True`` merges
only segments whose checksum verifies, as wireguard-go's tun/offload_linux.go does; the tunnel passes
False, trusting the AEAD as the kernel's WireGuard does (see :func:`coalesce`). Anything not merged is
written alone, with an all-zero header, and the kernel checks it as usual.

A ones'-complement sum is computed as ``int.from_bytes(data) % 0xFFFF`` (2**16 = 1 mod 0xFFFF, so
the big-endian number is congruent to the sum of its 16-bit words): ~2.4 us for 1,368 bytes, done in
C by the interpreter's big integers, where a loop over words in Python would take ~30 us; the
segments of a train are summed by numpy in one call, and each segment's header sum is the train's
plus what changed, so cutting costs ~1.9 us a segment.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = ["VNET_HDR_LEN", "ZERO_HDR", "GSO_NONE", "GSO_TCPV4", "GSO_TCPV6", "GSO_UDP_L4", "NEEDS_CSUM",
           "checksum", "segment", "coalesce", "MAX_COALESCED", "MAX_UDP_SEGMENTS"]

#: ``sizeof(struct virtio_net_hdr)``: flags u8, gso_type u8, hdr_len u16, gso_size u16, csum_start
#: u16, csum_offset u16 (the TUN default; TUNSETVNETHDRSZ can make it larger, we never do).
VNET_HDR_LEN = 10
_HDR = struct.Struct("=BBHHHH")
_U16, _U32 = struct.Struct("!H"), struct.Struct("!I")
#: A header that says "an ordinary packet, checksums complete".
ZERO_HDR = bytes(VNET_HDR_LEN)
#: <linux/virtio_net.h>: flags and gso types.
NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80
#: Largest IP packet (the IPv4 total length and IPv6 payload length are 16 bits).
MAX_COALESCED = 65_535
#: Datagrams merged into one GSO_UDP_L4 write at most: the kernel refuses a write of more than
#: UDP_MAX_SEGMENTS (<linux/udp.h>: 64 before 6.12, 128 since; virtio_net_hdr_to_skb) with EINVAL.
MAX_UDP_SEGMENTS = 64
_TCP, _UDP = 6, 17
_FIN, _PSH, _ACK, _CWR = 0x01, 0x08, 0x10, 0x80


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


def _payload_sums(payload, size: int) -> list[int]:
    """The ones'-complement sums (mod 0xFFFF) of ``payload`` cut every ``size`` bytes.

    numpy sums the full segments' 16-bit words in one vectorised call (~0.3 us a 1,368-byte segment
    against ~2.4 us for the big-integer sum of each): a 64 KiB train has ~47 of them.
    """
    full = len(payload) // size
    sums: list[int] = []
    if full and not size & 1:
        words = np.frombuffer(payload, dtype=">u2", count=full * size // 2).reshape(full, size // 2)
        sums = (words.sum(axis=1, dtype=np.uint64) % 0xFFFF).tolist()
    else:
        full = 0
    view = memoryview(payload)
    sums += [_sum(view[start:start + size]) for start in range(full * size, len(payload), size)]
    return sums


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
    tcp = gso_type != GSO_UDP_L4
    if len(packet) < iph + (20 if tcp else 8) or iph < (40 if v6 else 20):
        return []
    hdr = iph + ((packet[iph + 12] >> 4) * 4 if tcp else 8)
    if len(packet) <= hdr:
        return []
    # Every segment's headers are the train's with a few fields changed: sum the rest once, with
    # those fields zeroed, and add each segment's values to it.
    header = bytearray(packet[:hdr])
    ip_id = _U16.unpack_from(header, 4)[0]
    seq = _U32.unpack_from(header, iph + 4)[0] if tcp else 0
    tcp_flags = header[iph + 13] if tcp else 0
    if v6:
        header[4:6] = b"\0\0"
    else:
        header[2:6] = bytes(4)  # total length, id
        header[10:12] = bytes(2)  # header checksum
        ip_sum = _sum(header[:iph])
    if tcp:
        header[iph + 4:iph + 8] = bytes(4)  # sequence number
        header[iph + 13] = 0  # flags
        header[iph + 16:iph + 18] = bytes(2)  # checksum
        csum_at = iph + 16
    else:
        header[iph + 4:iph + 8] = bytes(4)  # length, checksum
        csum_at = iph + 6
    transport_sum = _sum(header[iph:]) + _sum(packet[8:40] if v6 else packet[12:20]) + (_TCP if tcp else _UDP)
    payload = memoryview(packet)[hdr:]
    sums = _payload_sums(payload, gso_size)
    last = len(sums) - 1
    out = []
    for i, payload_sum in enumerate(sums):
        offset = i * gso_size
        chunk = payload[offset:offset + gso_size]
        seg = bytearray(header)
        seg += chunk
        size = len(seg)
        length = size - iph
        total = transport_sum + payload_sum + length
        if v6:
            _U16.pack_into(seg, 4, size - 40)
        else:
            this_id = (ip_id + i) & 0xFFFF
            _U16.pack_into(seg, 2, size)
            _U16.pack_into(seg, 4, this_id)
            _U16.pack_into(seg, 10, 0xFFFF - (ip_sum + size + this_id) % 0xFFFF)
        if tcp:
            this_seq = (seq + offset) & 0xFFFFFFFF
            f = tcp_flags
            if i != last:
                f &= ~(_FIN | _PSH)
            if i:
                f &= ~_CWR
            _U32.pack_into(seg, iph + 4, this_seq)
            seg[iph + 13] = f
            total += (this_seq >> 16) + (this_seq & 0xFFFF) + f
            value = 0xFFFF - total % 0xFFFF if total % 0xFFFF else 0
        else:
            _U16.pack_into(seg, iph + 4, length)
            total += length
            value = 0xFFFF - total % 0xFFFF if total % 0xFFFF else 0xFFFF  # never 0: "no checksum"
        _U16.pack_into(seg, csum_at, value)
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


class _UdpGroup:
    """Consecutive datagrams of one UDP flow being merged."""

    __slots__ = ("first", "iph", "parts", "size", "gso_size", "closed", "v6", "word")

    def __init__(self, packet: bytes, iph: int, payload: int, v6: bool):
        self.first = packet
        self.iph, self.v6 = iph, v6
        self.parts: list = []
        self.size = len(packet)
        self.gso_size = payload
        self.closed = False
        self.word = packet[iph + 8:iph + 12]


def _udp_candidate(packet: bytes):
    """(v6, iph, payload length, flow key) of a UDP datagram that may be merged, else None."""
    n = len(packet)
    version = packet[0] >> 4 if n else 0
    if version == 4:
        if n < 29 or packet[0] != 0x45 or packet[9] != _UDP or int.from_bytes(packet[2:4], "big") != n:
            return None
        if packet[6] & 0x3F or packet[7]:  # MF or a fragment offset
            return None
        iph, addresses = 20, packet[12:20]
    elif version == 6:
        if n < 49 or packet[6] != _UDP or int.from_bytes(packet[4:6], "big") != n - 40:
            return None
        iph, addresses = 40, packet[8:40]
    else:
        return None
    if int.from_bytes(packet[iph + 4:iph + 6], "big") != n - iph:  # the UDP length must agree
        return None
    return version == 6, iph, n - iph - 8, addresses + packet[iph:iph + 4]


def _udp_checksum_ok(packet, v6: bool, iph: int) -> bool:
    """Whether a UDP datagram's checksum verifies (0 on IPv4: "none", RFC 768, so nothing to check)."""
    if not v6 and packet[iph + 6] == 0 and packet[iph + 7] == 0:
        return True
    return checksum(memoryview(packet)[iph:], _pseudo(packet, v6, _UDP, len(packet) - iph)) == 0


def _same_ip_fields(a: bytes, b: bytes, v6: bool) -> bool:
    """Whether two packets' IP fields that GRO keeps from the first agree (TOS/traffic class, flow
    label, DF, TTL/hop limit)."""
    if v6:
        return a[0:4] == b[0:4] and a[7] == b[7]
    return a[1] == b[1] and a[6] & 0xE0 == b[6] & 0xE0 and a[8] == b[8]


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


def coalesce(packets: list[bytes], verify: bool = True, udp: bool = False) -> list[bytes]:
    """Frames (``virtio_net_hdr`` + packet) for TUN writes: adjacent segments of a TCP flow merged,
    and with ``udp`` adjacent datagrams of a UDP flow.

    Order is kept within each flow: a segment that cannot join its flow's group (a gap, a repeat,
    other flags, a different ACK; for UDP a larger datagram, one after a shorter one, other IP
    fields) ends the group, and later segments of the flow start a new one.

    A UDP datagram joins its flow's group only if its first four payload bytes are the group's
    first datagram's: a firewall rule on a merged packet sees only its first datagram's payload
    (the relay's exit table lets through only WireGuard messages by their first word, type and
    reserved zeros: agents.node.exit), so a datagram whose first word differs must not ride
    through behind another's.

    Args:
        packets: decrypted inner IP packets in the order they arrived.
        verify: merge only segments whose TCP or UDP checksum verifies (wireguard-go's rule; a
            datagram with a bad one is written alone for the kernel to drop). False trusts them as
            the kernel's WireGuard does (drivers/net/wireguard/receive.c marks every decrypted
            packet CHECKSUM_UNNECESSARY): Poly1305 has authenticated each byte since the peer's TUN
            handed it over, which no path error can get past, and a peer able to forge bad data
            could as well give it a good checksum. It saves ~2.4 us a segment.
        udp: merge UDP datagrams too (``GSO_UDP_L4`` frames; only for a TUN granted USO).

    Returns:
        One frame per group or unmerged packet, in the order of their first packets.
    """
    out: list = []
    groups: dict[bytes, _Group] = {}
    udp_groups: dict[bytes, _UdpGroup] = {}
    for packet in packets:
        found = _tcp_candidate(packet)
        if found is None:
            if udp and _merge_udp(packet, udp_groups, out, verify):
                continue
            out.append(packet)
            continue
        v6, iph, thl, payload, key = found
        flags = packet[iph + 13]
        group = groups.get(key)
        if payload == 0 or flags & ~_PSH != _ACK or verify and checksum(memoryview(packet)[iph:], _pseudo(
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
    return [ZERO_HDR + item if isinstance(item, bytes) else _merged(item) if isinstance(item, _Group)
            else _merged_udp(item) for item in out]


def _merge_udp(packet: bytes, groups: dict, out: list, verify: bool) -> bool:
    """Put a UDP datagram into its flow's group or start one (appended to ``out``); False if it is
    not a UDP datagram that may be merged (the caller writes it alone)."""
    found = _udp_candidate(packet)
    if found is None:
        return False
    v6, iph, payload, key = found
    group = groups.get(key)
    if payload == 0 or verify and not _udp_checksum_ok(packet, v6, iph):
        if group is not None:  # nothing of this flow may merge past this datagram
            del groups[key]
        return False
    if (group is not None and not group.closed and payload <= group.gso_size
            and len(group.parts) < MAX_UDP_SEGMENTS - 1 and group.size + payload <= MAX_COALESCED
            and packet[iph + 8:iph + 12] == group.word and _same_ip_fields(group.first, packet, v6)):
        group.parts.append(memoryview(packet)[iph + 8:])
        group.size += payload
        group.closed = payload < group.gso_size
        return True
    group = _UdpGroup(packet, iph, payload, v6)
    groups[key] = group
    out.append(group)
    return True


def _joined(first: bytes, parts: list, iph: int, v6: bool) -> bytearray:
    """The first packet with the other payloads appended, its IP length (and IPv4 header checksum)
    made to cover them."""
    packet = bytearray(first)
    for part in parts:
        packet += part
    size = len(packet)
    if v6:
        packet[4:6] = (size - 40).to_bytes(2, "big")
    else:
        packet[2:4] = size.to_bytes(2, "big")
        _ipv4_header_checksum(packet, iph)
    return packet


def _merged_udp(group: _UdpGroup) -> bytes:
    """The frame of one UDP group: the first datagram's headers, all payloads, a GSO_UDP_L4 header
    (partial checksum: the kernel computes each datagram's when it cuts them, or takes a merged
    one delivered to a UDP_GRO socket as valid)."""
    if not group.parts:
        return ZERO_HDR + group.first
    iph, v6 = group.iph, group.v6
    packet = _joined(group.first, group.parts, iph, v6)
    size = len(packet)
    packet[iph + 4:iph + 6] = (size - iph).to_bytes(2, "big")
    partial = _pseudo(packet, v6, _UDP, size - iph) % 0xFFFF
    packet[iph + 6:iph + 8] = (partial or 0xFFFF).to_bytes(2, "big")
    header = _HDR.pack(NEEDS_CSUM, GSO_UDP_L4, iph + 8, group.gso_size, iph, 6)
    return header + packet


def _merged(group: _Group) -> bytes:
    """The frame of one group: the first packet's headers, all payloads, a GSO header."""
    if not group.parts:
        return ZERO_HDR + group.first
    iph, thl, v6 = group.iph, group.thl, group.v6
    packet = _joined(group.first, group.parts, iph, v6)
    size = len(packet)
    if group.psh:
        packet[iph + 13] |= _PSH
    # Partial checksum: the pseudo-header sum, which the kernel completes (or never needs: a
    # CHECKSUM_PARTIAL packet delivered locally is taken as valid).
    partial = _pseudo(packet, v6, _TCP, size - iph) % 0xFFFF
    packet[iph + 16:iph + 18] = (partial or 0xFFFF).to_bytes(2, "big")
    header = _HDR.pack(NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, iph + thl, group.gso_size, iph, 16)
    return header + packet
