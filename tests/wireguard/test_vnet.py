"""TUN offloads as pure functions (agents.wireguard.vnet): TSO/USO trains cut into packets, TCP
segments coalesced back, on synthetic packets whose checksums a plain word-by-word sum checks."""

import contextlib
import fcntl
import ipaddress
import os
import random
import select
import socket
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.netlab import Lab
from agents.wireguard import tun as tun_module
from agents.wireguard import vnet
from agents.wireguard.offload import GRO_ANCILLARY, GRO_BUFFER, enable_gro, gro_segment_size, split
from agents.wireguard.tun import TUN_F_TSO4, TUN_F_USO4, TunDevice

SRC4, DST4 = ipaddress.ip_address("10.9.0.1").packed, ipaddress.ip_address("10.9.0.2").packed
SRC6, DST6 = ipaddress.ip_address("fd00::1").packed, ipaddress.ip_address("fd00::2").packed
ACK, PSH, FIN, SYN = 0x10, 0x08, 0x01, 0x02
#: TCP timestamps option, as Linux sends it (NOP NOP TS): 12 bytes, so the header is 32.
TS_OPTION = bytes([1, 1, 8, 10]) + bytes(range(8))


def reference_sum(data: bytes) -> int:
    """RFC 1071 word by word, folding carries: the reference the module's big-integer sum must match."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo(v6: bool, proto: int, length: int) -> bytes:
    src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
    return src + dst + (struct.pack("!IxxxB", length, proto) if v6 else struct.pack("!xBH", proto, length))


def transport_ok(packet: bytes, v6: bool, proto: int) -> bool:
    iph = 40 if v6 else 20
    return reference_sum(pseudo(v6, proto, len(packet) - iph) + packet[iph:]) == 0xFFFF


def ip_header(v6: bool, proto: int, transport_len: int, ip_id: int = 7) -> bytearray:
    if v6:
        return bytearray(struct.pack("!IHBB", 6 << 28, transport_len, proto, 64) + SRC6 + DST6)
    header = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, 20 + transport_len, ip_id, 0x4000, 64, proto, 0)
                       + SRC4 + DST4)
    header[10:12] = (0xFFFF - reference_sum(bytes(header))).to_bytes(2, "big")
    return header


def tcp_packet(payload: bytes, seq: int, *, v6: bool = False, flags: int = ACK, ack: int = 1000,
               window: int = 500, ip_id: int = 7, sport: int = 40000, valid: bool = True) -> bytes:
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, 5201, seq, ack, (32 // 4) << 4, flags, window, 0, 0)
                    + TS_OPTION) + payload
    check = 0xFFFF - reference_sum(pseudo(v6, 6, len(tcp)) + bytes(tcp))
    tcp[16:18] = (check if valid else check ^ 0x5A5A).to_bytes(2, "big")
    return bytes(ip_header(v6, 6, len(tcp), ip_id) + tcp)


def tso_frame(payload: bytes, mss: int, *, v6: bool = False, seq: int = 1, flags: int = ACK | PSH,
              ecn: bool = False) -> bytes:
    """A TCP super-segment as the kernel hands it to a TUN with TSO: partial checksum, GSO header."""
    packet = bytearray(tcp_packet(payload, seq, v6=v6, flags=flags))
    iph = 40 if v6 else 20
    partial = reference_sum(pseudo(v6, 6, len(packet) - iph))
    packet[iph + 16:iph + 18] = partial.to_bytes(2, "big")
    gso = (vnet.GSO_TCPV6 if v6 else vnet.GSO_TCPV4) | (vnet.GSO_ECN if ecn else 0)
    return struct.pack("=BBHHHH", vnet.NEEDS_CSUM, gso, iph + 32, mss, iph, 16) + bytes(packet)


def payload_of(packet: bytes) -> bytes:
    iph = 40 if packet[0] >> 4 == 6 else 20
    return packet[iph + (packet[iph + 12] >> 4) * 4:]


def test_checksum__matches_word_by_word_reference():
    rng = random.Random(1)
    for size in (0, 1, 2, 3, 20, 1367, 1368, 1500, 9000):
        data = rng.randbytes(size)
        assert vnet.checksum(data) in (0xFFFF - reference_sum(data), (0xFFFF - reference_sum(data)) % 0xFFFF)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("mtu", [1280, 1420, 1500])
def test_segment__tso_train__mtu_sized_packets_with_valid_checksums(v6, mtu):
    iph = 40 if v6 else 20
    mss = mtu - iph - 32
    payload = random.Random(mtu).randbytes(mss * 40 + 123)  # 40 full segments and a short one
    packets = vnet.segment(tso_frame(payload, mss, v6=v6, seq=0xFFFFF000))  # the sequence wraps
    assert len(packets) == 41
    assert b"".join(map(payload_of, packets)) == payload
    for i, packet in enumerate(packets):
        assert len(packet) <= mtu
        assert transport_ok(packet, v6, 6)
        if v6:
            assert int.from_bytes(packet[4:6], "big") == len(packet) - 40
        else:
            assert int.from_bytes(packet[2:4], "big") == len(packet)
            assert reference_sum(packet[:20]) == 0xFFFF
            assert int.from_bytes(packet[4:6], "big") == 7 + i
        assert int.from_bytes(packet[iph + 4:iph + 8], "big") == (0xFFFFF000 + i * mss) & 0xFFFFFFFF
        assert packet[iph + 13] == (ACK | PSH if i == 40 else ACK)


def test_segment__ecn_train__cwr_only_on_the_first():
    packets = vnet.segment(tso_frame(bytes(3000), 1000, flags=ACK | 0x80, ecn=True))
    assert [p[20 + 13] for p in packets] == [ACK | 0x80, ACK, ACK]


def test_segment__needs_csum_without_gso__completes_the_checksum():
    udp = bytearray(struct.pack("!HHHH", 5000, 53, 8 + 11, 0)) + b"hello world"
    packet = bytearray(ip_header(False, 17, len(udp)) + udp)
    packet[26:28] = reference_sum(pseudo(False, 17, len(udp))).to_bytes(2, "big")
    (out,) = vnet.segment(struct.pack("=BBHHHH", vnet.NEEDS_CSUM, 0, 0, 0, 20, 6) + bytes(packet))
    assert transport_ok(out, False, 17) and out[28:] == b"hello world"


def test_segment__plain_frame__packet_unchanged():
    packet = tcp_packet(b"x" * 10, 5)
    assert vnet.segment(vnet.ZERO_HDR + packet) == [packet]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_segment__uso_train__udp_datagrams_with_lengths_and_checksums(v6):
    iph = 40 if v6 else 20
    payload = bytes(range(256)) * 10  # 2,560 bytes -> 1,000 + 1,000 + 560
    udp = bytearray(struct.pack("!HHHH", 5000, 443, 8 + len(payload), 0)) + payload
    packet = bytearray(ip_header(v6, 17, len(udp)) + udp)
    packet[iph + 6:iph + 8] = reference_sum(pseudo(v6, 17, len(udp))).to_bytes(2, "big")
    frame = struct.pack("=BBHHHH", vnet.NEEDS_CSUM, vnet.GSO_UDP_L4, iph + 8, 1000, iph, 6) + bytes(packet)
    out = vnet.segment(frame)
    assert [len(p) - iph - 8 for p in out] == [1000, 1000, 560]
    assert b"".join(p[iph + 8:] for p in out) == payload
    for p in out:
        assert int.from_bytes(p[iph + 4:iph + 6], "big") == len(p) - iph
        assert transport_ok(p, v6, 17)


def test_segment__malformed_frames__nothing():
    assert vnet.segment(b"") == [] and vnet.segment(vnet.ZERO_HDR) == []
    frame = bytearray(tso_frame(bytes(3000), 1000))
    frame[1] = 99  # unknown gso type
    assert vnet.segment(bytes(frame)) == []
    assert vnet.segment(tso_frame(bytes(3000), 1000)[:vnet.VNET_HDR_LEN + 30]) == []  # cut in the TCP header


def train(count: int, size: int = 1368, *, v6: bool = False, seq: int = 1, sport: int = 40000,
          last_psh: bool = True) -> list[bytes]:
    rng = random.Random(seq)
    return [tcp_packet(rng.randbytes(size), seq + i * size, v6=v6, ip_id=100 + i, sport=sport,
                       flags=ACK | (PSH if last_psh and i == count - 1 else 0)) for i in range(count)]


def unframe(frames: list[bytes]) -> list[bytes]:
    """What the kernel would see: each frame cut back into packets (every one checked)."""
    out = []
    for frame in frames:
        packets = vnet.segment(frame)
        for p in packets:
            assert transport_ok(p, p[0] >> 4 == 6, 6) or p[9] != 6
        out += packets
    return out


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_coalesce__in_order_train__one_gso_frame_that_cuts_back_exactly(v6):
    packets = train(40, v6=v6)
    (frame,) = vnet.coalesce(packets)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = struct.unpack_from("=BBHHHH", frame)
    iph = 40 if v6 else 20
    assert (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) == (
        vnet.NEEDS_CSUM, vnet.GSO_TCPV6 if v6 else vnet.GSO_TCPV4, iph + 32, 1368, iph, 16)
    assert len(frame) == vnet.VNET_HDR_LEN + iph + 32 + 40 * 1368
    assert unframe([frame]) == packets


def test_coalesce__64k_limit__starts_a_new_frame():
    packets = train(60)  # 60 x 1,368 > 65,535 - 52
    frames = vnet.coalesce(packets)
    assert len(frames) == 2 and unframe(frames) == packets
    assert all(len(f) - vnet.VNET_HDR_LEN <= vnet.MAX_COALESCED for f in frames)


def test_coalesce__lost_segment__two_frames_around_the_gap():
    packets = train(10)
    kept = packets[:4] + packets[5:]
    frames = vnet.coalesce(kept)
    assert len(frames) == 2 and unframe(frames) == kept


def test_coalesce__reordered_segments__order_kept_and_nothing_merged_across():
    packets = train(6)
    shuffled = [packets[0], packets[1], packets[3], packets[2], packets[4], packets[5]]
    frames = vnet.coalesce(shuffled)
    assert unframe(frames) == shuffled
    assert len(frames) == 4  # [0 1] [3] [2] [4 5]: a group only grows at its end


def test_coalesce__replayed_segment__delivered_once_per_copy_never_merged_twice():
    packets = train(5)
    doubled = packets[:3] + [packets[2]] + packets[3:]
    frames = vnet.coalesce(doubled)
    assert unframe(frames) == doubled  # the kernel's TCP drops the repeat, as without offloads
    assert len(frames) == 2


def test_coalesce__bad_checksum__written_alone_for_the_kernel_to_drop():
    packets = train(5)
    bad = tcp_packet(payload_of(packets[2]), int.from_bytes(packets[2][24:28], "big"), ip_id=102, valid=False)
    frames = vnet.coalesce(packets[:2] + [bad] + packets[3:])
    assert frames[1] == vnet.ZERO_HDR + bad
    assert len(frames) == 3


def test_coalesce__without_verify__bad_checksum_merged_as_the_kernel_trusts_decrypted_packets():
    packets = train(5)
    bad = tcp_packet(payload_of(packets[2]), int.from_bytes(packets[2][24:28], "big"), ip_id=102, valid=False)
    (frame,) = vnet.coalesce(packets[:2] + [bad] + packets[3:], verify=False)
    assert b"".join(map(payload_of, unframe([frame]))) == b"".join(map(payload_of, packets))


def test_coalesce__psh_in_the_middle__ends_the_frame():
    packets = train(6)
    packets[1] = tcp_packet(payload_of(packets[1]), 1 + 1368, ip_id=101, flags=ACK | PSH)
    frames = vnet.coalesce(packets)
    assert len(frames) == 2 and unframe(frames) == packets


def test_coalesce__interleaved_flows__one_frame_each():
    a, b = train(5, sport=1111), train(5, sport=2222, seq=90000)
    mixed = [p for pair in zip(a, b) for p in pair]
    frames = vnet.coalesce(mixed)
    assert len(frames) == 2
    assert unframe(frames[:1]) == a and unframe(frames[1:]) == b


def test_coalesce__other_flags_acks_and_protocols__pass_through_unmerged():
    syn = tcp_packet(b"", 0, flags=SYN)
    pure_ack = tcp_packet(b"", 1)
    fin = tcp_packet(b"x" * 100, 1, flags=ACK | FIN)
    udp = bytes(ip_header(False, 17, 8)) + struct.pack("!HHHH", 1, 2, 8, 0)
    other_ack = [tcp_packet(b"y" * 100, 1, ack=1), tcp_packet(b"y" * 100, 101, ack=2)]
    packets = [syn, pure_ack, fin, udp] + other_ack
    assert vnet.coalesce(packets) == [vnet.ZERO_HDR + p for p in packets]


def test_coalesce__shorter_segment__nothing_after_it():
    packets = train(2, last_psh=False) + [tcp_packet(b"s" * 100, 1 + 2 * 1368, ip_id=102)]
    packets += train(2, seq=1 + 2 * 1368 + 100)
    frames = vnet.coalesce(packets)
    assert len(frames) == 2 and unframe(frames) == packets


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["keep", "drop", "dup", "swap"]), min_size=12, max_size=12),
       st.sampled_from([1280, 1420, 1500]), st.booleans())
def test_coalesce__lossy_reordering_path__every_packet_delivered_once_in_order(ops, mtu, v6):
    """Whatever loss, repeat or swap a path made, the kernel gets exactly the packets that arrived, in
    arrival order, each with valid checksums (merging never invents, drops or reorders bytes)."""
    iph = 40 if v6 else 20
    packets = train(12, mtu - iph - 32, v6=v6)
    arrived: list[bytes] = []
    for op, packet in zip(ops, packets):
        if op == "keep":
            arrived.append(packet)
        elif op == "dup":
            arrived += [packet, packet]
        elif op == "swap" and arrived:
            arrived.insert(len(arrived) - 1, packet)
    for verify in (True, False):
        frames = vnet.coalesce(arrived, verify)
        assert unframe(frames) == arrived
    assert all(len(f) - vnet.VNET_HDR_LEN <= vnet.MAX_COALESCED for f in frames)


@pytest.mark.parametrize("mss", [1001, 1367, 536])
def test_segment__odd_or_small_mss__checksums_still_valid(mss):
    """An odd segment size shifts word alignment per segment (the vectorised sum is skipped)."""
    payload = random.Random(mss).randbytes(mss * 5 + 77)
    packets = vnet.segment(tso_frame(payload, mss))
    assert b"".join(map(payload_of, packets)) == payload
    assert all(transport_ok(p, False, 6) and reference_sum(p[:20]) == 0xFFFF for p in packets)


# -- against the kernel: a TUN opened with offloads, in a namespace of the lab -------------------------

def _read_frames(tun, until, timeout: float = 5.0, limit: int = 200) -> list[bytes]:
    """Frames read from ``tun`` until ``until(frames)`` holds (bounded in time and count)."""
    frames: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(frames) < limit and not until(frames) and time.monotonic() < deadline:
        if select.select([tun.fd], [], [], 0.2)[0]:
            frames.append(os.read(tun.fd, 65535 + vnet.VNET_HDR_LEN))
    return frames


def _syn_options_packet(seq: int, ack: int, flags: int, window: int = 65535, options: bytes = b"") -> bytes:
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5555, seq, ack, ((20 + len(options)) // 4) << 4, flags,
                                window, 0, 0) + options)
    tcp[16:18] = (0xFFFF - reference_sum(pseudo(False, 6, len(tcp)) + bytes(tcp))).to_bytes(2, "big")
    return bytes(ip_header(False, 6, len(tcp)) + tcp)


@contextlib.contextmanager
def offload_tun(lab, name: str, flag: int):
    """A TUN opened with offloads (``flag`` among those granted) at 10.9.0.2/24, in a namespace of its
    own that the caller's thread is in meanwhile; closed after."""
    with lab.add_host(name).enter():
        tun = TunDevice(name, offloads=True)
        try:
            assert tun.vnet_hdr and tun.offload_flags & flag
            tun.configure(["10.9.0.2/24"], 1420)
            yield tun
        finally:
            tun.close()


def test_tun_with_offloads__kernel_tso_train__cut_into_valid_segments(lab):
    """A real TUN with TSO: a TCP peer emulated on the TUN side (10.9.0.1) connects to a listener in
    the namespace (10.9.0.2); the kernel's first flight of data comes as one TSO train, which
    segment() cuts into MSS-sized packets with checksums the reference sum accepts."""
    with offload_tun(lab, "wvnet0", TUN_F_TSO4) as tun:
        listener = socket.create_server(("10.9.0.2", 5555))
        try:
            mss_ws = struct.pack("!BBH", 2, 4, 1380) + bytes([1, 3, 3, 7])  # MSS 1380, window scale 7
            os.write(tun.fd, vnet.ZERO_HDR + _syn_options_packet(1000, 0, SYN, options=mss_ws))

            def syn_ack(frames):
                return any(p[9] == 6 and p[33] == SYN | ACK for f in frames for p in vnet.segment(f))
            frames = _read_frames(tun, syn_ack)
            (reply,) = [p for f in frames for p in vnet.segment(f) if p[9] == 6 and p[33] == SYN | ACK]
            assert transport_ok(reply, False, 6)  # the kernel's partial checksum, completed by us
            server_isn = int.from_bytes(reply[24:28], "big")
            os.write(tun.fd, vnet.ZERO_HDR + _syn_options_packet(1001, server_isn + 1, ACK))
            listener.settimeout(5)
            conn, _ = listener.accept()
            data = random.Random(5).randbytes(10 * 1368)
            conn.setblocking(False)
            sent = conn.send(data)

            def have_all(frames):
                return sum(len(payload_of(p)) for f in frames for p in vnet.segment(f)
                           if p[9] == 6) >= sent
            frames = _read_frames(tun, have_all)
            conn.close()
        finally:
            listener.close()
    trains = [f for f in frames if f[1] & ~vnet.GSO_ECN == vnet.GSO_TCPV4]
    assert trains, "the kernel sent no TSO train"
    packets = [p for f in frames for p in vnet.segment(f) if p[9] == 6 and payload_of(p)]
    assert b"".join(map(payload_of, packets))[:sent] == data[:sent]
    assert all(transport_ok(p, False, 6) and len(p) <= 1420 for p in packets)
    assert max(len(payload_of(p)) for p in packets) <= 1380


def test_tun_offloads_refused__device_opened_again_without_vnet_header(root, monkeypatch):
    """Where the kernel refuses TUNSETOFFLOAD (fault injected: this kernel grants it), the device
    comes back plain."""
    real_ioctl = fcntl.ioctl

    def refusing(fd, request, arg=0, *rest):
        if request == tun_module._TUNSETOFFLOAD:
            raise OSError(22, "Invalid argument")
        return real_ioctl(fd, request, arg, *rest)

    monkeypatch.setattr(tun_module.fcntl, "ioctl", refusing)
    with Lab(prefix="wvref") as lab:
        host = lab.add_host("h")
        with host.enter():
            device = tun_module.TunDevice("wvref0", offloads=True)
            try:
                assert (device.vnet_hdr, device.offload_flags, device.name) == (False, 0, "wvref0")
            finally:
                device.close()


# -- UDP datagrams merged into GSO_UDP_L4 frames (udp=True: a TUN granted USO) --------------------------

#: The first word of a WireGuard data message (type 4, three reserved zeros), as the inner tunnel's
#: datagrams crossing an outer tunnel begin.
WG_DATA = bytes([4, 0, 0, 0])


def udp_packet(payload: bytes, *, v6: bool = False, sport: int = 51820, dport: int = 40000,
               valid: bool = True, no_checksum: bool = False, ttl: int = 64, tos: int = 0) -> bytes:
    udp = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)) + payload
    if not no_checksum:
        check = 0xFFFF - reference_sum(pseudo(v6, 17, len(udp)) + bytes(udp))
        udp[6:8] = ((check or 0xFFFF) if valid else check ^ 0x5A5A).to_bytes(2, "big")
    header = ip_header(v6, 17, len(udp))
    if v6:
        header[7] = ttl
        header[1] = tos
    else:
        header[1], header[8] = tos, ttl
        header[10:12] = b"\0\0"
        header[10:12] = (0xFFFF - reference_sum(bytes(header))).to_bytes(2, "big")
    return bytes(header + udp)


def datagrams(count: int, size: int = 1372, *, v6: bool = False, sport: int = 51820, seed: int = 1,
              last: int | None = None) -> list[bytes]:
    """``count`` WireGuard-looking datagrams of one flow, ``size`` payload bytes each (``last``: the
    last one's size)."""
    rng = random.Random(seed)
    sizes = [size] * count
    if last is not None:
        sizes[-1] = last
    return [udp_packet(WG_DATA + rng.randbytes(n - 4), v6=v6, sport=sport) for n in sizes]


def norm(packet: bytes) -> bytes:
    """A packet without its IPv4 id and header checksum: the kernel numbers the datagrams it cuts
    from a GSO packet from the first one's id, as the sender's GSO did."""
    if packet[0] >> 4 == 6:
        return packet
    return packet[:4] + b"\0\0" + packet[6:10] + b"\0\0" + packet[12:]


def unframe_udp(frames: list[bytes]) -> list[bytes]:
    """Each frame cut back as the kernel would (every datagram's checksums checked), normalised."""
    out = []
    for frame in frames:
        packets = vnet.segment(frame)
        for p in packets:
            v6 = p[0] >> 4 == 6
            assert p[6 if v6 else 9] != 17 or transport_ok(p, v6, 17)
            assert v6 or reference_sum(p[:20]) == 0xFFFF
        out += map(norm, packets)
    return out


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_coalesce_udp__one_flow__one_uso_frame_that_cuts_back_exactly(v6):
    packets = datagrams(30, v6=v6, last=700)
    (frame,) = vnet.coalesce(packets, udp=True)
    iph = 40 if v6 else 20
    assert struct.unpack_from("=BBHHHH", frame) == (vnet.NEEDS_CSUM, vnet.GSO_UDP_L4, iph + 8, 1372, iph, 6)
    packet = frame[vnet.VNET_HDR_LEN:]
    assert len(packet) == iph + 8 + 29 * 1372 + 700
    # IP and UDP lengths cover the whole train (the kernel trims a datagram to its UDP length), and
    # the IPv4 header checksum is right.
    assert int.from_bytes(packet[iph + 4:iph + 6], "big") == len(packet) - iph
    if v6:
        assert int.from_bytes(packet[4:6], "big") == len(packet) - 40
    else:
        assert int.from_bytes(packet[2:4], "big") == len(packet) and reference_sum(packet[:20]) == 0xFFFF
    # The transport checksum field holds the pseudo-header sum the kernel completes.
    assert int.from_bytes(packet[iph + 6:iph + 8], "big") == reference_sum(pseudo(v6, 17, len(packet) - iph))
    assert unframe_udp([frame]) == list(map(norm, packets))


def test_coalesce_udp__off_by_default__datagrams_written_alone():
    packets = datagrams(5)
    assert vnet.coalesce(packets) == [vnet.ZERO_HDR + p for p in packets]


def test_coalesce_udp__a_single_datagram__plain_frame():
    (packet,) = datagrams(1)
    assert vnet.coalesce([packet], udp=True) == [vnet.ZERO_HDR + packet]


def test_coalesce_udp__shorter_datagram__nothing_after_it_and_larger_starts_anew():
    packets = datagrams(3) + datagrams(1, 500, seed=2) + datagrams(2, seed=3) + datagrams(1, 1400, seed=4)
    frames = vnet.coalesce(packets, udp=True)
    # [3 x 1372 + 500] [2 x 1372] [1400]: nothing follows a shorter one, a larger one ends a frame
    assert [len(vnet.segment(f)) for f in frames] == [4, 2, 1]
    assert unframe_udp(frames) == list(map(norm, packets))


def test_coalesce_udp__interleaved_flows_and_tcp__each_flow_in_its_own_order():
    a, b = datagrams(6, sport=1111, seed=1), datagrams(6, sport=2222, seed=2)
    tcp = train(3)
    mixed = [a[0], b[0], tcp[0], a[1], b[1], tcp[1], a[2], b[2], tcp[2]] + a[3:] + b[3:]
    frames = vnet.coalesce(mixed, udp=True)
    assert len(frames) == 3
    out = [p for f in frames for p in vnet.segment(f)]
    assert [norm(p) for p in out if p[20:22] == (1111).to_bytes(2, "big")] == list(map(norm, a))
    assert [norm(p) for p in out if p[20:22] == (2222).to_bytes(2, "big")] == list(map(norm, b))
    assert [f[1] for f in frames] == [vnet.GSO_UDP_L4, vnet.GSO_UDP_L4, vnet.GSO_TCPV4]
    assert unframe(frames[2:]) == tcp


def test_coalesce_udp__wrong_checksum__written_alone_and_ends_the_frame():
    packets = datagrams(6)
    bad = udp_packet(packets[3][28:], valid=False)
    arrived = packets[:3] + [bad] + packets[4:]
    frames = vnet.coalesce(arrived, udp=True)
    assert frames[1] == vnet.ZERO_HDR + bad  # the kernel checks it and drops it
    assert len(frames) == 3 and [norm(p) for f in frames for p in vnet.segment(f)] == list(map(norm, arrived))


def test_coalesce_udp__without_verify__wrong_checksum_merged_as_decrypted_packets_are_trusted():
    packets = datagrams(6)
    packets[3] = udp_packet(packets[3][28:], valid=False)
    (frame,) = vnet.coalesce(packets, verify=False, udp=True)
    assert [p[28:] for p in unframe_udp([frame])] == [p[28:] for p in packets]


def test_coalesce_udp__ipv4_without_checksum__merged_and_given_one():
    packets = [udp_packet(WG_DATA + bytes([i]) * 996, no_checksum=True) for i in range(4)]
    (frame,) = vnet.coalesce(packets, udp=True)
    assert [p[28:] for p in unframe_udp([frame])] == [p[28:] for p in packets]


def test_coalesce_udp__other_first_word__never_rides_behind_wireguard_messages():
    """A firewall sees a merged packet's first datagram only (the relay's exit table passes only
    WireGuard's first words): a datagram that begins otherwise starts a frame of its own."""
    packets = datagrams(3)
    other = udp_packet(b"\x01\x02\x03\x04" + bytes(1368))
    frames = vnet.coalesce(packets + [other] + datagrams(2, seed=5), udp=True)
    assert [f[vnet.VNET_HDR_LEN + 28:vnet.VNET_HDR_LEN + 32] for f in frames] == [WG_DATA, other[28:32], WG_DATA]
    assert [len(vnet.segment(f)) for f in frames] == [3, 1, 2]


def test_coalesce_udp__other_ttl_tos_or_fragment__not_merged():
    base = datagrams(2)
    ttl = udp_packet(base[1][28:], ttl=3)
    tos = udp_packet(base[1][28:], tos=0x10)
    fragment = bytearray(base[1])
    fragment[6] |= 0x20  # more fragments
    frames = vnet.coalesce([base[0], ttl, tos, bytes(fragment)], udp=True)
    assert [f[1] for f in frames] == [0, 0, 0, 0] and len(frames) == 4


def test_coalesce_udp__truncated_or_inconsistent_lengths__written_alone():
    good = datagrams(3)
    cut = good[1][:-100]  # shorter than its IP length says
    wrong_udp_length = bytearray(good[2])
    wrong_udp_length[24:26] = (100).to_bytes(2, "big")
    tiny = good[0][:27]  # not even a UDP header
    empty = udp_packet(b"")
    packets = [good[0], cut, bytes(wrong_udp_length), tiny, empty, b""]
    assert vnet.coalesce(packets, udp=True) == [vnet.ZERO_HDR + p for p in packets]


def test_coalesce_udp__oversized_trains__cut_at_64k_and_at_the_segment_limit():
    big = datagrams(60, 1400)  # 60 x 1,400 > 65,535 - 28
    frames = vnet.coalesce(big, udp=True)
    assert len(frames) == 2 and unframe_udp(frames) == list(map(norm, big))
    assert all(len(f) - vnet.VNET_HDR_LEN <= vnet.MAX_COALESCED for f in frames)
    small = datagrams(150, 100)
    frames = vnet.coalesce(small, udp=True)
    assert [len(vnet.segment(f)) for f in frames] == [vnet.MAX_UDP_SEGMENTS, vnet.MAX_UDP_SEGMENTS, 22]
    assert unframe_udp(frames) == list(map(norm, small))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1111, 2222]), st.sampled_from([1372, 1372, 1372, 600, 1400]),
                          st.booleans()), min_size=1, max_size=40), st.booleans())
def test_coalesce_udp__any_sequence__every_datagram_once_in_flow_order(spec, v6):
    """Whatever sizes and interleaving arrive (some with wrong checksums), each flow's datagrams come
    out exactly once, in arrival order; merged ones with valid checksums; nothing past the limits."""
    rng = random.Random(len(spec))
    arrived = [udp_packet(WG_DATA + rng.randbytes(size - 4), v6=v6, sport=sport, valid=valid)
               for sport, size, valid in spec]
    iph = 40 if v6 else 20
    for verify in (True, False):
        frames = vnet.coalesce(arrived, verify, udp=True)
        out = [p for f in frames for p in vnet.segment(f)]
        for sport in (1111, 2222):
            port = sport.to_bytes(2, "big")
            assert [p[iph + 8:] for p in out if p[iph:iph + 2] == port] == \
                [p[iph + 8:] for p in arrived if p[iph:iph + 2] == port]
        for frame in frames:
            if frame[1] == vnet.GSO_UDP_L4:
                assert all(transport_ok(p, v6, 17) for p in vnet.segment(frame))
                assert len(frame) - vnet.VNET_HDR_LEN <= vnet.MAX_COALESCED
        if verify:  # a wrong checksum is never hidden inside a merged frame
            bad = {p for p in arrived if not transport_ok(p, v6, 17)}
            assert all(vnet.ZERO_HDR + p in frames for p in bad)


def test_tun_with_uso__merged_udp_write__one_receive_with_udp_gro_else_datagram_by_datagram(lab):
    """The kernel takes a GSO_UDP_L4 write on a TUN granted USO: a socket with UDP_GRO receives the
    datagrams in one recvmsg (segment size in the control message), one without it datagram by
    datagram, each intact."""
    with offload_tun(lab, "wvuso0", TUN_F_USO4) as tun:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gro, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
            gro.bind(("10.9.0.2", 40000))
            plain.bind(("10.9.0.2", 40001))
            assert enable_gro(gro)
            for sock in (gro, plain):
                sock.settimeout(5)
            sent = {port: datagrams(20, 1372, seed=port, last=300) for port in (40000, 40001)}
            for port, packets in sent.items():
                packets = [udp_packet(p[28:], dport=port) for p in packets]
                (frame,) = vnet.coalesce(packets, udp=True)
                assert frame[1] == vnet.GSO_UDP_L4
                os.write(tun.fd, frame)
            data, ancdata, _, _ = gro.recvmsg(GRO_BUFFER, GRO_ANCILLARY)
            assert gro_segment_size(ancdata) == 1372
            assert split(data, 1372) == [p[28:] for p in sent[40000]]
            assert [plain.recv(2048) for _ in range(20)] == [p[28:] for p in sent[40001]]
