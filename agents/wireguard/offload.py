"""UDP segmentation offloads for the tunnel's socket: many datagrams per system call.

Sending (GSO, ``UDP_SEGMENT``): the TUN thread reads what the kernel has queued (up to
:data:`BATCH_PACKETS` packets, never waiting for more), encrypts each, and hands a run of equally
sized datagrams to the same endpoint to the kernel in one ``sendmsg``. The kernel keeps the run as one
buffer through routing, netfilter and virtual links and cuts it into datagrams as late as it can (in
the NIC, or just before a device that cannot), so the per-packet cost of the stack is paid once per
run. On the wire nothing changes: each segment is an ordinary datagram, so any WireGuard peer
(wireguard-go included) reads them.

Receiving (GRO, ``UDP_GRO``): a socket that asks for it may be handed several datagrams of one
source coalesced into one buffer, with the segment size in a control message; :func:`split` cuts it
back. Without the control message a buffer is one datagram, as before.

Both fall back: :func:`enable_gro` reports whether the kernel took the option, and a ``sendmsg`` with
``UDP_SEGMENT`` that the kernel or the outgoing device refuses (EIO without checksum offload, EINVAL
on an old kernel) turns GSO off for the socket and sends the run one datagram at a time.

Linux only (UDP_SEGMENT since 4.18, UDP_GRO since 5.0); the constants are from <linux/udp.h>, which
Python's socket module does not export.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator

__all__ = ["BATCH_PACKETS", "GRO_BUFFER", "MAX_SEGMENTS", "enable_gro", "gro_segment_size", "gso_cmsg",
           "runs", "split"]

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
#: Segments in one GSO send at most (the kernel allows 64 on older kernels, 128 on newer ones).
MAX_SEGMENTS = 64
#: Bytes in one GSO send at most: the payload of one IP datagram (65,535 less the IPv6 and UDP
#: headers, with room to spare for IPv4).
MAX_GSO_BYTES = 65_535 - 48 - 8
#: Packets the TUN thread takes per batch; what is queued beyond waits for the next round.
BATCH_PACKETS = 64
#: Receive buffer for a coalesced read: the largest datagram the kernel can hand over.
GRO_BUFFER = 65_535
_CMSG_SPACE = socket.CMSG_SPACE(4)


def runs(datagrams: list[bytes]) -> Iterator[list[bytes]]:
    """Split datagrams to one endpoint, in order, into runs one GSO send can carry: every segment
    but the last of a run the same size, the last no larger, at most :data:`MAX_SEGMENTS` segments
    and :data:`MAX_GSO_BYTES` bytes."""
    run: list[bytes] = []
    size = total = 0
    for datagram in datagrams:
        n = len(datagram)
        if run and (n > size or len(run) >= MAX_SEGMENTS or total + n > MAX_GSO_BYTES
                    or len(run[-1]) < size):
            yield run
            run = []
        if not run:
            size, total = n, 0
        run.append(datagram)
        total += n
    if run:
        yield run


def gso_cmsg(segment_size: int) -> list[tuple[int, int, bytes]]:
    """The ancillary data of a ``sendmsg`` whose buffers the kernel cuts every ``segment_size``."""
    return [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", segment_size))]


def enable_gro(sock: socket.socket) -> bool:
    """Ask for coalesced receives; False where the kernel does not offer them."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def gro_segment_size(ancdata: Iterable[tuple[int, int, bytes]]) -> int | None:
    """The segment size of a coalesced receive, from ``recvmsg``'s ancillary data (None: one
    datagram)."""
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
            return struct.unpack_from("=i", data)[0] or None
    return None


def split(data: bytes, segment_size: int | None) -> list[bytes]:
    """The datagrams of one (possibly coalesced) receive, in order."""
    if not segment_size or segment_size >= len(data):
        return [data]
    view = memoryview(data)
    return [bytes(view[i:i + segment_size]) for i in range(0, len(data), segment_size)]


#: ``recvmsg``'s ancillary buffer for the GRO control message.
GRO_ANCILLARY = _CMSG_SPACE
