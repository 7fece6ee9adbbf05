"""On-demand resolution: the first packet to an unknown virtual IP sets up the tunnel to it.

As IPOP does, a mesh host need not know its peers in advance: a packet to a virtual IP with no
WireGuard peer yet makes the host look the IP up in the DHT (IPRecord -> member certificate), set up
a path (punch, or relay, :mod:`.nat`), add the WireGuard peer, and then send the packet.

How packets to unknown virtual IPs reach us, without a hook in the WireGuard runtime: routing.
The tunnel's TUN device holds our virtual IP as a /32 and a /32 route per peer (``Tunnel.add_peer``
adds one for each allowed IP); a second TUN device, the **resolver device**, holds the route of the
whole mesh prefix. Longest-prefix match sends packets for known peers to WireGuard and packets for
everyone else to :class:`OnDemand`, which reads them, queues them (:class:`PendingPackets`, the
sans-I/O part: bounded queues, one look-up per address at a time, negative caching) and starts
``MeshHost.connect``. Once the peer is added (so its /32 route now points into the tunnel), the
queued packets are sent again through a raw IP socket: the kernel routes them into the tunnel, where
the WireGuard core queues them until its handshake completes (``WireGuardDevice.encapsulate``).

IPv4 only (a raw ``IPPROTO_RAW`` socket re-sends the packets as they were); needs root, as the
tunnel itself does.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field

from .wgrelay import MESH_MTU, in_netns_of

__all__ = [
    "MAX_QUEUED_PER_ADDRESS",
    "MAX_ADDRESSES",
    "NEGATIVE_S",
    "PendingPackets",
    "OnDemand",
    "destination",
]

log = logging.getLogger(__name__)

# As the WireGuard core's own per-peer staging queue (MAX_STAGED_PACKETS, after wireguard-go's
# QueueStagedSize of 128 scaled down: a look-up is a few round trips, not a flood).
MAX_QUEUED_PER_ADDRESS = 16
MAX_ADDRESSES = 64  # virtual IPs being resolved at once (bounded memory under a scan)
# After a failed look-up, packets to that address are dropped for this long, so that a host pinging
# a missing member does not send a DHT look-up per packet (IPOP's ARP-like cache does the same).
NEGATIVE_S = 10.0
POLL_S = 0.1  # the reader notices close() this often


@dataclass
class PendingPackets:
    """Which virtual IPs are being resolved, and the packets waiting for each (sans-I/O).

    Attributes:
        queues: address -> packets waiting for its tunnel.
        failed_until: address -> time before which packets to it are dropped.
        stats: counters (queued, dropped, resolved, failed, lookups).
    """

    queues: dict = field(default_factory=dict)
    failed_until: dict = field(default_factory=dict)
    stats: dict = field(default_factory=lambda: {"lookups": 0, "queued": 0, "dropped": 0, "resolved": 0,
                                                 "failed": 0})

    def packet(self, address: str, packet: bytes, now: float) -> bool:
        """Queue a packet for ``address``; True if a look-up must start now (none is running)."""
        if self.failed_until.get(address, 0.0) > now:
            self.stats["dropped"] += 1
            return False
        self.failed_until.pop(address, None)
        queue = self.queues.get(address)
        start = queue is None
        if start:
            if len(self.queues) >= MAX_ADDRESSES:
                self.stats["dropped"] += 1
                return False
            queue = self.queues[address] = []
            self.stats["lookups"] += 1
        if len(queue) < MAX_QUEUED_PER_ADDRESS:
            queue.append(packet)
            self.stats["queued"] += 1
        else:
            self.stats["dropped"] += 1
        return start

    def resolved(self, address: str) -> list[bytes]:
        """The look-up succeeded: the packets to send now."""
        self.stats["resolved"] += 1
        return self.queues.pop(address, [])

    def failed(self, address: str, now: float) -> None:
        """The look-up failed: drop the queue, and packets to ``address`` for NEGATIVE_S."""
        self.stats["failed"] += 1
        self.stats["dropped"] += len(self.queues.pop(address, []))
        if len(self.failed_until) >= 4 * MAX_ADDRESSES:  # bounded: forget expired entries
            self.failed_until = {a: t for a, t in self.failed_until.items() if t > now}
        self.failed_until[address] = now + NEGATIVE_S


def destination(packet: bytes) -> str | None:
    """The IPv4 destination of an IP packet, or None (IPv6, truncated)."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        return str(ipaddress.IPv4Address(packet[16:20]))
    return None


class OnDemand:
    """The resolver device and its reader for one mesh host (see the module docstring).

    Args:
        host: the :class:`~agents.overlay.mesh.MeshHost` (its tunnel's TUN must hold our virtual IP as
            a /32, so that the mesh prefix route below is the resolver device's).
        prefix: the mesh network, e.g. ``"10.77.0.0/24"`` (host bits are ignored).
        ifname: name of the resolver TUN device.
        clock: seconds, for the negative cache.
        connect_timeout: how long one ``MeshHost.connect`` may take.
    """

    def __init__(self, host, prefix: str, ifname: str = "warren-resolve", *, clock=None,
                 connect_timeout: float = 20.0) -> None:
        from agents.wireguard.tun import TunDevice

        self.host = host
        self.network = ipaddress.ip_network(prefix, strict=False)
        self.clock = clock or time.monotonic
        self.connect_timeout = connect_timeout
        self.pending = PendingPackets()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        with in_netns_of(host.tunnel.sock):
            self.tun = TunDevice(ifname)
            self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            self.tun.configure((), MESH_MTU, routes=[str(self.network)])
            os.set_blocking(self.tun.fd, False)
        except Exception:
            self.tun.close()
            self.raw.close()
            raise
        self._thread = threading.Thread(target=self._run, name=f"{ifname}-reader", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the reader, delete the resolver device, close the raw socket."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.tun.close()
        self.raw.close()

    def _run(self) -> None:
        fd = self.tun.fd
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], POLL_S)
            for _ in range(256 if ready else 0):  # bounded drain
                try:
                    packet = os.read(fd, 65535)
                except BlockingIOError:
                    break
                except OSError:
                    return
                self._packet(packet)

    def _packet(self, packet: bytes) -> None:
        dst = destination(packet)
        if dst is None or ipaddress.ip_address(dst) not in self.network or dst == self.host.vip:
            return
        with self._lock:
            start = self.pending.packet(dst, packet, self.clock())
        if start:
            threading.Thread(target=self._resolve, args=(dst,), daemon=True).start()

    def _resolve(self, dst: str) -> None:
        try:
            kind = self.host.connect(dst, timeout=self.connect_timeout)
        except Exception:  # a look-up that blows up must not leave the queue behind forever
            log.exception("mesh: on-demand connect to %s failed", dst)
            kind = None
        with self._lock:
            if kind is None:
                self.pending.failed(dst, self.clock())
                log.info("mesh: %s does not resolve (packets dropped for %.0f s)", dst, NEGATIVE_S)
                return
            packets = self.pending.resolved(dst)
        log.info("mesh: %s resolved on demand (%s), sending %d queued packets", dst, kind, len(packets))
        for packet in packets:  # the peer's /32 route now leads into the tunnel
            try:
                self.raw.sendto(packet, (dst, 0))
            except OSError as exc:
                log.debug("mesh: re-sending a queued packet to %s: %s", dst, exc)
