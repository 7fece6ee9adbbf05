"""Capture what crosses a namespace's interfaces: UDP datagrams, or every frame (leak tests).

An ``AF_PACKET`` socket opened inside the namespace sees every packet its interfaces send or
receive; a background thread keeps what the capture wants. :class:`UdpCapture` keeps IPv4 UDP
datagrams matching a port (replay-attack tests); :class:`PacketCapture` keeps every frame of every
protocol (IPv4, IPv6, ARP, anything else) on one interface or all, each parsed into what a leak test
asks (family, protocol, addresses, ports, ICMP type); :class:`RawCapture` keeps whole frames (a
search for cleartext). No tcpdump and no pcap library: the few header
fields read here are fixed-offset reads, smaller than a dependency.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import select
import socket
import struct
import threading
import time

from agents.netlab.nsenter import enter_namespace

__all__ = ["CapturedDatagram", "CapturedFrame", "PacketCapture", "RawCapture", "UdpCapture", "describe", "outgoing_by_kind", "parse_frame"]

#: ETH_P_IP from <linux/if_ether.h>: IPv4 frames only.
_ETH_P_IP = 0x0800
#: IANA protocol number of UDP.
_IPPROTO_UDP = 17
#: PACKET_OUTGOING from <linux/if_packet.h>: the frame was sent by this host.
_PACKET_OUTGOING = 4
#: ETH_P_ALL from <linux/if_ether.h>: every protocol, outgoing frames included.
_ETH_P_ALL = 0x0003
#: EtherTypes (IEEE registry) the parse names; 802.1Q tags are skipped.
_ETHERTYPES = {0x0800: "ipv4", 0x86DD: "ipv6", 0x0806: "arp"}
_ETH_P_8021Q = 0x8100
#: ARPHRD_* from <linux/if_arp.h> of devices whose frames carry a 14-byte Ethernet header (a TUN is
#: ARPHRD_NONE and hands over bare IP packets).
_ARPHRD_WITH_ETHERNET = {1, 772}
#: IANA protocol numbers the parse names.
_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
#: IPv6 extension headers walked to reach the transport header (RFC 8200 section 4).
_IPV6_EXTENSIONS = {0, 43, 60}
_IPV6_FRAGMENT = 44
#: ICMPv6 types of neighbour discovery (RFC 4861): router/neighbour solicit/advert, redirect.
_ND_TYPES = frozenset(range(133, 138))
#: ICMPv6 types of multicast listener discovery (RFC 2710 query/report/done, RFC 3810 v2 report).
_MLD_TYPES = frozenset({130, 131, 132, 143})
#: Bytes of a UDP/TCP payload a CapturedFrame keeps (WireGuard's header is 4; leak tests want a few more).
PAYLOAD_HEAD = 16


@dataclasses.dataclass(frozen=True)
class CapturedDatagram:
    """One UDP datagram as it crossed an interface."""

    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    outgoing: bool


class _Capture:
    """An ``AF_PACKET`` socket in a namespace read by a background thread until stopped (the shared
    half of :class:`UdpCapture` and :class:`PacketCapture`, which say what to keep).

    Args:
        netns: namespace name (``Namespace.name``).
        protocol: the socket's EtherType filter (``ETH_P_*``).
        kind: ``socket.SOCK_DGRAM`` (link header removed) or ``socket.SOCK_RAW``.
        ifname: only this interface (None: every interface of the namespace).
        limit: stop keeping items after this many (bounds memory); :attr:`overflowed` says so.
    """

    def __init__(self, netns: str, protocol: int, kind: int, ifname: str | None, limit: int) -> None:
        self.netns = netns
        self.limit = limit
        self.overflowed = False
        self._items: list = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        with enter_namespace(netns):
            self._sock = socket.socket(socket.AF_PACKET, kind, socket.htons(protocol))
            if ifname:
                self._sock.bind((ifname, protocol))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._thread = threading.Thread(target=self._run, name=f"capture-{netns}", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop capturing and close the socket (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._sock.close()

    def snapshot(self) -> list:
        """A copy of what has been captured so far."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        """Forget what was captured so far (start a new phase of a test)."""
        with self._lock:
            self._items.clear()

    def _keep(self, frame: bytes, addr: tuple):
        """What to keep of one frame (None: nothing)."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.1)
            if not ready:
                continue
            try:
                frame, addr = self._sock.recvfrom(65535)
            except OSError:
                return
            item = self._keep(frame, addr)
            if item is None:
                continue
            with self._lock:
                if len(self._items) < self.limit:
                    self._items.append(item)
                else:
                    self.overflowed = True


class UdpCapture(_Capture):
    """Collect UDP datagrams to or from ``port`` in namespace ``netns`` until stopped.

    Use as a context manager; :attr:`datagrams` holds what was seen, in order.

    Args:
        netns: namespace name (``Namespace.name``).
        port: UDP port to keep (source or destination); None keeps all.
        limit: stop keeping datagrams after this many (bounds memory).
    """

    def __init__(self, netns: str, port: int | None = None, limit: int = 100_000) -> None:
        super().__init__(netns, _ETH_P_IP, socket.SOCK_DGRAM, None, limit)
        self.port = port

    @property
    def datagrams(self) -> list[CapturedDatagram]:
        """What was captured so far (the live list: read it after :meth:`stop`, or use snapshot)."""
        return self._items

    def _keep(self, frame: bytes, addr: tuple) -> CapturedDatagram | None:
        dgram = _parse_ipv4_udp(frame, outgoing=addr[2] == _PACKET_OUTGOING)
        if dgram is None or (self.port is not None and self.port not in (dgram.src[1], dgram.dst[1])):
            return None
        return dgram


def _parse_ipv4_udp(packet: bytes, outgoing: bool) -> CapturedDatagram | None:
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != _IPPROTO_UDP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    src = str(ipaddress.IPv4Address(packet[12:16]))
    dst = str(ipaddress.IPv4Address(packet[16:20]))
    sport, dport, length = struct.unpack_from("!HHH", packet, ihl)
    payload = packet[ihl + 8 : min(total, ihl + length)]
    return CapturedDatagram((src, sport), (dst, dport), bytes(payload), outgoing)


@dataclasses.dataclass(frozen=True)
class CapturedFrame:
    """One frame as it crossed an interface, parsed as far as a leak test needs.

    Attributes:
        ifname: the interface it crossed.
        outgoing: sent by this host (else received).
        kind: "ipv4", "ipv6", "arp" or "ether-0x...." for other EtherTypes.
        proto: "udp", "tcp", "icmp", "icmpv6", "ip-<n>" for other IP protocols, None for non-IP.
        src / dst: IP addresses (None for non-IP frames).
        sport / dport: transport ports for UDP/TCP (None otherwise, and for non-first fragments).
        icmp_type: ICMP/ICMPv6 type, else None.
        length: bytes of the frame as captured.
        at: time.monotonic() when the capture thread read it.
        head: the first PAYLOAD_HEAD bytes of the UDP/TCP payload (b"" otherwise), enough to tell a
            WireGuard message (type 1..4, then three zero bytes) from anything else.
    """

    ifname: str
    outgoing: bool
    kind: str
    proto: str | None
    src: str | None
    dst: str | None
    sport: int | None
    dport: int | None
    icmp_type: int | None
    length: int
    at: float
    head: bytes = b""

    @property
    def wireguard(self) -> bool:
        """A UDP payload that starts like a WireGuard message (type 1..4, three reserved zeros)."""
        return self.proto == "udp" and len(self.head) >= 4 and 1 <= self.head[0] <= 4 and self.head[1:4] == b"\0\0\0"

    @property
    def neighbour_discovery(self) -> bool:
        """ARP or ICMPv6 neighbour discovery: link-local housekeeping, not traffic."""
        return self.kind == "arp" or (self.proto == "icmpv6" and self.icmp_type in _ND_TYPES)

    @property
    def multicast_listener(self) -> bool:
        """ICMPv6 multicast listener discovery (hosts announcing groups on the link)."""
        return self.proto == "icmpv6" and self.icmp_type in _MLD_TYPES


class PacketCapture(_Capture):
    """Collect every frame on interface ``ifname`` (None: all) of namespace ``netns`` until stopped.

    Use as a context manager; :attr:`frames` holds what was seen, in order.

    Args:
        netns: namespace name (``Namespace.name``).
        ifname: only this interface (None: every interface of the namespace).
        limit: stop keeping frames after this many (bounds memory); :attr:`overflowed` says so.
    """

    def __init__(self, netns: str, ifname: str | None = None, limit: int = 200_000) -> None:
        super().__init__(netns, _ETH_P_ALL, socket.SOCK_RAW, ifname, limit)
        self.ifname = ifname

    @property
    def frames(self) -> list[CapturedFrame]:
        """What was captured so far (the live list: read it after :meth:`stop`, or use snapshot)."""
        return self._items

    def _keep(self, frame: bytes, addr: tuple) -> CapturedFrame:
        return parse_frame(frame, addr)


class RawCapture(_Capture):
    """Every whole frame on one interface (:class:`PacketCapture` keeps only :data:`PAYLOAD_HEAD` bytes
    of each payload; a search for cleartext needs them all), up to ``limit_bytes`` in all.

    Args:
        netns: namespace name (``Namespace.name``).
        ifname: the interface.
        limit_bytes: stop keeping frames past this many bytes; :attr:`overflowed` says so.
    """

    def __init__(self, netns: str, ifname: str, limit_bytes: int = 256 << 20) -> None:
        super().__init__(netns, _ETH_P_ALL, socket.SOCK_RAW, ifname, limit=limit_bytes)
        self.limit_bytes = limit_bytes
        self._size = 0

    def _keep(self, frame: bytes, addr: tuple) -> bytes | None:
        if self._size + len(frame) > self.limit_bytes:
            self.overflowed = True
            return None
        self._size += len(frame)
        return bytes(frame)

    def joined(self) -> bytes:
        """Every frame's bytes joined by a separator that no 16-byte marker spans."""
        return b"\n--frame--\n".join(self.snapshot())


def outgoing_by_kind(frames, kind_of) -> tuple[list[CapturedFrame], dict[str, int]]:
    """Sort a capture's outgoing frames for a leak test: ``kind_of(frame)`` names an allowed frame
    ("wireguard", "overlay", "rpc", ...) or returns None for a leak; ARP and neighbour discovery are
    link housekeeping, counted as "arp"/"nd" and never leaks.

    Returns:
        (the leaked frames, how many outgoing frames of each kind were seen, "leak" included).
    """
    leaks, seen = [], {}
    for f in frames:
        if not f.outgoing:
            continue
        if f.neighbour_discovery:
            kind = "arp" if f.kind == "arp" else "nd"
        else:
            kind = kind_of(f)
            if kind is None:
                kind = "leak"
                leaks.append(f)
        seen[kind] = seen.get(kind, 0) + 1
    return leaks, seen


def describe(frames: list[CapturedFrame], most: int = 20) -> list[str]:
    """One line per frame (the first ``most``), for an assertion message."""
    return [f"{f.kind}/{f.proto} {f.src}:{f.sport} -> {f.dst}:{f.dport} icmp={f.icmp_type} head={f.head[:4].hex()}"
            for f in frames[:most]]


def parse_frame(frame: bytes, addr: tuple) -> CapturedFrame:
    """Parse one ``AF_PACKET``/``SOCK_RAW`` frame; ``addr`` is its ``recvfrom`` address."""
    ifname, protocol, pkttype, hatype = addr[0], addr[1], addr[2], addr[3]
    outgoing = pkttype == _PACKET_OUTGOING
    now = time.monotonic()
    if hatype in _ARPHRD_WITH_ETHERNET and len(frame) >= 14:
        ethertype, offset = struct.unpack_from("!H", frame, 12)[0], 14
        while ethertype == _ETH_P_8021Q and len(frame) >= offset + 4:
            ethertype, offset = struct.unpack_from("!H", frame, offset + 2)[0], offset + 4
    else:
        ethertype, offset = protocol, 0
    kind = _ETHERTYPES.get(ethertype, f"ether-0x{ethertype:04x}")
    packet = frame[offset:]
    proto = src = dst = sport = dport = icmp_type = None
    head = b""
    if kind == "ipv4" and len(packet) >= 20:
        ihl = (packet[0] & 0x0F) * 4
        number = packet[9]
        src = str(ipaddress.IPv4Address(packet[12:16]))
        dst = str(ipaddress.IPv4Address(packet[16:20]))
        first_fragment = struct.unpack_from("!H", packet, 6)[0] & 0x1FFF == 0
        transport = packet[ihl:] if first_fragment else b""
    elif kind == "ipv6" and len(packet) >= 40:
        number = packet[6]
        src = str(ipaddress.IPv6Address(packet[8:24]))
        dst = str(ipaddress.IPv6Address(packet[24:40]))
        at, first_fragment = 40, True
        while number in _IPV6_EXTENSIONS | {_IPV6_FRAGMENT} and len(packet) >= at + 8:
            if number == _IPV6_FRAGMENT:
                first_fragment = struct.unpack_from("!H", packet, at + 2)[0] & 0xFFF8 == 0
                number, at = packet[at], at + 8
            else:
                number, at = packet[at], at + (packet[at + 1] + 1) * 8
        transport = packet[at:] if first_fragment else b""
    else:
        number, transport = None, b""
    if number is not None:
        proto = _PROTOCOLS.get(number, f"ip-{number}")
        if proto in ("udp", "tcp") and len(transport) >= 4:
            sport, dport = struct.unpack_from("!HH", transport, 0)
            if proto == "udp":
                head = bytes(transport[8:8 + PAYLOAD_HEAD])
            elif len(transport) >= 13:
                data_offset = (transport[12] >> 4) * 4
                head = bytes(transport[data_offset:data_offset + PAYLOAD_HEAD])
        elif proto in ("icmp", "icmpv6") and transport:
            icmp_type = transport[0]
    return CapturedFrame(ifname, outgoing, kind, proto, src, dst, sport, dport, icmp_type,
                         len(frame), now, head)
