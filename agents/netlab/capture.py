"""Capture UDP datagrams seen on a namespace's interfaces (for replay-attack tests).

An ``AF_PACKET`` socket opened inside the namespace sees every IPv4 packet its interfaces send or
receive; a background thread keeps the UDP ones matching a port. No tcpdump, no pcap parsing.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import select
import socket
import struct
import threading

from agents.netlab.nsenter import enter_namespace

__all__ = ["CapturedDatagram", "UdpCapture"]

#: ETH_P_IP from <linux/if_ether.h>: IPv4 frames only.
_ETH_P_IP = 0x0800
#: IANA protocol number of UDP.
_IPPROTO_UDP = 17
#: PACKET_OUTGOING from <linux/if_packet.h>: the frame was sent by this host.
_PACKET_OUTGOING = 4


@dataclasses.dataclass(frozen=True)
class CapturedDatagram:
    """One UDP datagram as it crossed an interface."""

    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    outgoing: bool


class UdpCapture:
    """Collect UDP datagrams to or from ``port`` in namespace ``netns`` until stopped.

    Use as a context manager; :attr:`datagrams` holds what was seen, in order.

    Args:
        netns: namespace name (``Namespace.name``).
        port: UDP port to keep (source or destination); None keeps all.
        limit: stop keeping datagrams after this many (bounds memory).
    """

    def __init__(self, netns: str, port: int | None = None, limit: int = 100_000) -> None:
        self.netns = netns
        self.port = port
        self.limit = limit
        self.datagrams: list[CapturedDatagram] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        with enter_namespace(netns):
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_IP))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._thread = threading.Thread(target=self._run, name=f"capture-{netns}", daemon=True)

    def __enter__(self) -> "UdpCapture":
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

    def snapshot(self) -> list[CapturedDatagram]:
        """A copy of what has been captured so far."""
        with self._lock:
            return list(self.datagrams)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.1)
            if not ready:
                continue
            try:
                frame, addr = self._sock.recvfrom(65535)
            except OSError:
                return
            dgram = _parse_ipv4_udp(frame, outgoing=addr[2] == _PACKET_OUTGOING)
            if dgram is None:
                continue
            if self.port is not None and self.port not in (dgram.src[1], dgram.dst[1]):
                continue
            with self._lock:
                if len(self.datagrams) < self.limit:
                    self.datagrams.append(dgram)


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
