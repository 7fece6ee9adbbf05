"""The userspace WireGuard tunnel: the sans-I/O core on a TUN device and one UDP socket.

Threads, not asyncio: measured here, an asyncio datagram callback costs ~28 us per packet while a
blocking receive loop costs several times less, and a VPN moves tens of thousands of packets a second.

* ``tun->udp``: reads IP packets from the TUN device, encrypts (``encapsulate``), sends datagrams
  (equal ones to one peer in one GSO send: agents.wireguard.offload). With TUN offloads one read may
  be a 64 KiB TCP train, cut into packets first (agents.wireguard.vnet.segment).
* ``udp->tun``: receives datagrams (coalesced by GRO where the kernel does it); transport ones go to
  ``decapsulate`` and their inner packets to the TUN device (with TUN offloads, the TCP segments of
  one receive merged into GRO frames, and with USO the UDP datagrams of one flow into GSO_UDP_L4
  frames, so that a tunnel nested in this one receives its datagrams with UDP GRO:
  agents.wireguard.vnet.coalesce); handshake messages (types 1-3) are
  queued for the handshake thread; any other datagram goes to the demultiplexer callback (the
  overlay's messages share the socket) or is dropped.
* ``handshakes``: ``decapsulate`` of the queued handshake messages (DH, cookie replies, the
  admission callback), so that a flood of initiations delays no established session's data.
* ``timers``: calls ``tick`` at the core's next deadline and sends what it queued.
* ``uapi``: serves ``/var/run/wireguard/<ifname>.sock`` so `wg show <ifname>`, ``warren tunnel
  show`` and :class:`~agents.wireguard.uapi.UapiClient` work against this tunnel as against
  wireguard-go.

Both data threads drain their file descriptor in non-blocking mode and only ``select`` when it is
empty: under load there are no wake-up costs, and with offloads one send per run of datagrams. The core is thread-safe
(one short internal lock; the AEAD work runs outside it), so the two data threads call it directly.
pyca/cryptography keeps the GIL during ChaCha20-Poly1305 (measured: two threads encrypting take twice
as long as one), so the threads overlap system calls with crypto, not crypto with crypto; one tunnel
uses about one core.

The socket is dual-stack ("::"), so peers may have IPv4 or IPv6 endpoints; IPv4 ones are handed to
the core as plain ``("192.0.2.1", port)``. When handshake messages arrive faster than
UNDER_LOAD_HANDSHAKES_PER_S, or UNDER_LOAD_QUEUE of them wait, the core is put "under load" and
answers initiations that lack a valid mac2 with cookie replies (WireGuard paper 5.3), as wireguard-go
does; then each source address may queue only what its token bucket allows (20 a second, bursts of
5: what the core allows a source with a valid mac2), and the queue is bounded (HANDSHAKE_QUEUE).

The clock handed to the core is monotonic, sped up by ``time_scale`` for tests (``time_scale=30``
turns REKEY_AFTER_TIME's 120 s into 4 s); the core adds its wall offset for TAI64N labels.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

from agents.wireguard.backend import PeerStats, TunnelBackend
from agents.wireguard.config import InterfaceConfig, PeerConfig, parse_endpoint
from agents.wireguard.cookie import SourceRateLimiter
from agents.wireguard.core import AdmitUnknown, WireGuardDevice
from agents.wireguard.errors import LocalProtocolError
from agents.wireguard.offload import BATCH_PACKETS, GRO_ANCILLARY, GRO_BUFFER, enable_gro, gro_segment_size, gso_cmsg
from agents.wireguard.offload import runs as offload_runs
from agents.wireguard.offload import split as offload_split
from agents.wireguard.tun import DEFAULT_FWMARK, DEFAULT_MTU, TUN_F_USO4, TUN_F_USO6, TunDevice
from agents.wireguard.vnet import GSO_UDP_L4, VNET_HDR_LEN, ZERO_HDR, coalesce, segment
from agents.wireguard.uapi import SOCKET_DIR, format_get, socket_path

__all__ = ["Tunnel", "DemuxCallback", "is_wireguard_datagram"]

log = logging.getLogger(__name__)

#: Called with (datagram, source address) for datagrams that are not WireGuard messages.
DemuxCallback = Callable[[bytes, tuple], None]

#: Socket buffers (bytes): deep enough to ride out a scheduling hiccup at ~1 Gbit/s.
SOCKET_BUFFER = 8 << 20
#: Longest real-time sleep of the timer thread, so new deadlines are noticed promptly (seconds).
TIMER_MAX_SLEEP = 0.05
#: Poll period of blocking waits, so close() is noticed (seconds).
POLL_S = 0.2
#: Largest datagram or TUN packet we read.
MAX_PACKET = 65535
#: Handshake messages per second above which the device is "under load" and answers handshakes that
#: lack a valid mac2 with cookie replies (paper 5.3). The Python core completes ~600 handshakes/s on
#: one core with both ends' work (scripts/bench_tunnel.py), so a responder alone ~1,200/s: start
#: asking for cookies well before that.
UNDER_LOAD_HANDSHAKES_PER_S = 400
#: wireguard-go UnderLoadAfterTime: stay under load this long after the rate drops (seconds).
UNDER_LOAD_AFTER_S = 1.0
#: Handshake messages waiting for the handshake thread at most (wireguard-go's QueueHandshakeSize);
#: past it they are dropped on arrival, so a flood never delays the data of established sessions.
HANDSHAKE_QUEUE = 1024
#: Queue depth from which the device is under load (wireguard-go: an eighth of the queue).
UNDER_LOAD_QUEUE = HANDSHAKE_QUEUE // 8
#: From <asm-generic/socket.h>; Python's socket module lacks it before 3.12.
SO_MARK = 36
#: Bound on the endpoint-spelling caches (spoofed sources must not grow them without limit).
ADDRESS_CACHE = 4096
#: How many of the core's events :attr:`Tunnel.events` keeps.
EVENT_HISTORY = 1000
#: WireGuard message types (paper section 5.4): initiation, response, cookie reply, data.
_WG_TYPES = (1, 2, 3, 4)
#: Whether tunnels use UDP GSO/GRO and TUN offloads (TSO/USO reads cut by agents.wireguard.vnet, TCP
#: segments coalesced into GRO writes): off with WARREN_OFFLOADS=0 in the environment, UDP ones only
#: with WARREN_OFFLOADS=udp, so tests and benchmarks can run the same path every way (the wire format
#: is the same in all).
OFFLOADS = os.environ.get("WARREN_OFFLOADS", "1") != "0"
TUN_OFFLOADS = OFFLOADS and os.environ.get("WARREN_OFFLOADS", "1") != "udp"
#: Whether UDP datagrams are merged into the TUN too (WARREN_OFFLOADS=tcp: TUN offloads, but decrypted
#: UDP written datagram by datagram, as before they were merged; for benchmarks).
UDP_TUN_WRITES = os.environ.get("WARREN_OFFLOADS", "1") != "tcp"
#: A GSO send refused for want of the feature (no checksum offload on the device, an old kernel).
_GSO_REFUSED = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)


def is_wireguard_datagram(data: bytes) -> bool:
    """Whether ``data`` starts like a WireGuard message: type 1..4 then three reserved zero bytes."""
    return len(data) >= 4 and data[0] in _WG_TYPES and data[1:4] == b"\0\0\0"


class Tunnel(TunnelBackend):
    """A running userspace WireGuard interface.

    Construct it in the network namespace it should live in (the TUN device and socket are created
    there), then :meth:`start` it; threads may run from anywhere.

    Args:
        config: private key, listen port, addresses, MTU and peers.
        ifname: TUN interface name (unique across namespaces if ``uapi`` is on: the UAPI folder is
            shared).
        time_scale: core clock speed relative to real time (1 in production).
        demux: callback for non-WireGuard datagrams on the socket (see :meth:`set_demux`).
        uapi: serve the UAPI socket.
        uapi_dir: folder of the UAPI socket.
        bind_address: local address of the UDP socket; the default "::" is dual-stack (IPv4 peers
            appear as themselves, not as ``::ffff:`` mapped addresses), falling back to IPv4 only
            where the host has no IPv6.
        admit_unknown: the core's admission callback for initiators that are not peers (see
            `WireGuardDevice`; settable later as :attr:`admit_unknown`). It runs on the handshake
            thread without the core's lock, so it must not call the tunnel or its device, and should
            be quick: handshakes queue behind it (data of established sessions does not). Here an exception it raises, or a bad prefix it returns, is logged and refuses
            the initiator instead of stopping the tunnel; an admitted peer's routes are added by the
            timer thread soon after, as :meth:`add_peer` adds them.
        manage_routes: route the peers' allowed IPs into the TUN (wg-quick's behaviour). False when
            the owner routes itself, e.g. the client agent, whose full-tunnel routes and kill switch
            must outlive the tunnel (agents.client.routes).
        offloads: use UDP GSO and GRO where the kernel offers them (agents.wireguard.offload);
            None: :data:`OFFLOADS`, on unless WARREN_OFFLOADS=0.
        tun_offloads: open the TUN with ``IFF_VNET_HDR`` and TSO/USO where the kernel grants them
            (agents.wireguard.tun, agents.wireguard.vnet); None: :data:`TUN_OFFLOADS` if
            ``offloads`` is None, else ``offloads``.
        merge_udp: merge decrypted UDP datagrams of one flow into ``GSO_UDP_L4`` TUN writes where
            the TUN took USO (see :func:`agents.wireguard.vnet.coalesce`). An exit node turns it off:
            its nftables drop counters count a merged write as one packet, so what its policy drops
            would be under-counted by the headers and WireGuard overhead of every merged datagram
            but the first, and billed (about 5 % of a UDP flood at a blocked address, measured).
    """

    def __init__(self, config: InterfaceConfig, ifname: str = "warren0", *, time_scale: float = 1.0,
                 demux: DemuxCallback | None = None, uapi: bool = True,
                 uapi_dir: str = SOCKET_DIR, bind_address: str = "::",
                 admit_unknown: AdmitUnknown | None = None, manage_routes: bool = True,
                 offloads: bool | None = None, tun_offloads: bool | None = None,
                 merge_udp: bool = True) -> None:
        self.config = config
        self.manage_routes = manage_routes
        self.ifname = ifname
        self.time_scale = time_scale
        self._demux = demux
        self._mono0 = time.monotonic()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        #: The core's recent events (HandshakeCompleted, EndpointChanged, ...), oldest first.
        self.events: collections.deque = collections.deque(maxlen=EVENT_HISTORY)
        #: How many of each event type since start (metrics: handshakes), not bounded like ``events``.
        self.event_counts: collections.Counter = collections.Counter()
        # Handshake messages for the handshake thread (see _udp_loop): (datagram, source), and the
        # per-source limit on what one address may queue while under load.
        self._handshakes: collections.deque = collections.deque()
        self._handshake_ready = threading.Event()
        self._flood_limiter = SourceRateLimiter()
        #: Handshake messages dropped on arrival: "handshake_queue_full", "handshake_rate_limited".
        self.drop_counts: collections.Counter = collections.Counter()
        self.device = WireGuardDevice(config.private_key, mtu=config.mtu or DEFAULT_MTU)
        self._admit_unknown: AdmitUnknown | None = None
        # Set by an admission (UDP thread); the timer thread then syncs the TUN's routes.
        self._routes_dirty = False
        # _sync_routes runs on the caller's, the UAPI and the timer thread.
        self._routes_lock = threading.Lock()
        self.admit_unknown = admit_unknown
        #: Pre-shared keys by peer, for UAPI ``get`` (the core does not hand them back).
        self._psk: dict[bytes, bytes | None] = {}
        for peer in config.peers:
            self._add_peer_core(peer)
        self.sock = _bound_udp_socket(bind_address, config.listen_port or 0)
        self._dual_stack = self.sock.family == socket.AF_INET6 and self.sock.getsockname()[0] == "::"
        # Endpoint spelling in the core ("192.0.2.1", port) <-> on a dual-stack socket.
        self._to_wire: dict[tuple, tuple] = {}
        self._from_wire: dict[tuple, tuple] = {}
        try:
            for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # SO_*BUFFORCE
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
                except OSError:  # not root: the ordinary option, capped by net.core.*mem_max
                    self.sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            #: SO_MARK of our UDP packets, so a full tunnel's policy routing lets them out.
            self.fwmark = DEFAULT_FWMARK
            with contextlib.suppress(PermissionError):  # needs CAP_NET_ADMIN; harmless unused
                self.sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self.fwmark)
            self.sock.setblocking(False)
            #: UDP segmentation offloads in use (agents.wireguard.offload): GSO is tried until the
            #: kernel refuses it once; GRO only if the kernel took the option.
            if tun_offloads is None:
                tun_offloads = TUN_OFFLOADS if offloads is None else offloads
            offloads = OFFLOADS if offloads is None else offloads
            self._gso = offloads
            # Largest GSO segment per endpoint, known once a run to it exceeded the path MTU.
            self._gso_max_segment: dict[tuple, int] = {}
            self._gro = offloads and enable_gro(self.sock)
            #: GSO sends ("gso_runs", "gso_segments") and coalesced receives ("gro_receives",
            #: "gro_segments") so far: counted per system call, not per packet; with TUN offloads,
            #: trains read ("tso_reads", "tso_segments") and merged TUN writes ("tun_gro_writes").
            self.offload_counts: collections.Counter = collections.Counter()
            self.tun = TunDevice(ifname, offloads=tun_offloads)
            #: Whether decrypted UDP datagrams of one flow are merged into GSO_UDP_L4 TUN writes:
            #: the TUN took USO (the kernel takes such writes from 6.2 on, as it grants USO), and no
            #: such write was refused yet. Off with WARREN_OFFLOADS=tcp.
            uso = TUN_F_USO4 | TUN_F_USO6
            self._udp_gro_writes = self.tun.offload_flags & uso == uso and UDP_TUN_WRITES and merge_udp
        except Exception:
            self.sock.close()
            raise
        try:
            os.set_blocking(self.tun.fd, False)
            #: The prefixes this tunnel routes into its TUN: the union of its peers' allowed IPs.
            self._routed = {_prefix(c) for p in config.peers for c in p.allowed_ips} if manage_routes else set()
            self.tun.configure(config.addresses, config.mtu or DEFAULT_MTU, routes=sorted(self._routed),
                               fwmark=self.fwmark)
        except Exception:
            self.tun.close()
            self.sock.close()
            raise
        self._uapi_sock: socket.socket | None = None
        self._uapi_path = socket_path(ifname, uapi_dir)
        if uapi:
            self._open_uapi(uapi_dir)

    # -- clock ------------------------------------------------------------------------------------

    def now(self) -> float:
        """The core's clock: monotonic seconds, sped up by ``time_scale``."""
        return self._mono0 + (time.monotonic() - self._mono0) * self.time_scale

    # -- TunnelBackend ----------------------------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        return self.device.public_key

    @property
    def listen_port(self) -> int:
        return self.sock.getsockname()[1]

    def _add_peer_core(self, peer: PeerConfig) -> None:
        self.device.add_peer(peer.public_key, preshared_key=peer.preshared_key,
                             allowed_ips=tuple(peer.allowed_ips), endpoint=_resolved(peer.endpoint),
                             persistent_keepalive=peer.persistent_keepalive)
        self._psk[peer.public_key] = peer.preshared_key

    def add_peer(self, peer: PeerConfig) -> None:
        """Add a peer or update one (sessions are kept); routes its allowed IPs to the TUN."""
        self._add_peer_core(peer)
        self._flush()
        self._sync_routes()
        self._wake.set()

    def remove_peer(self, public_key: bytes) -> None:
        """Forget a peer; the routes of prefixes no other peer claims go with it."""
        if public_key in self._psk:
            with contextlib.suppress(LocalProtocolError):
                self.device.remove_peer(public_key)
            del self._psk[public_key]
            self._sync_routes()

    @property
    def admit_unknown(self) -> AdmitUnknown | None:
        """The admission callback for initiators that are not peers, or None (see the constructor)."""
        return self._admit_unknown

    @admit_unknown.setter
    def admit_unknown(self, callback: AdmitUnknown | None) -> None:
        self._admit_unknown = callback
        self.device.admit_unknown = None if callback is None else self._admit

    def _admit(self, public_key: bytes, source: tuple[str, int], now: float) -> list[str] | None:
        """The core's admission callback: the owner's, guarded, plus the bookkeeping of a new peer."""
        callback = self._admit_unknown
        if callback is None:
            return None
        try:
            allowed = callback(public_key, source, now)
            if allowed is None:
                return None
            prefixes = [_prefix(c) for c in allowed]
        except Exception:  # the owner's bug must not stop the receive thread
            log.exception("%s: admit_unknown failed; initiator refused", self.ifname)
            return None
        self._psk.setdefault(public_key, None)
        self._routes_dirty = True
        self._wake.set()
        return prefixes

    def set_allowed_ips(self, public_key: bytes, cidrs: list[str]) -> None:
        """Replace one peer's allowed IPs (its sessions, endpoint and keys stay); routes follow.

        Raises:
            LocalProtocolError: unknown peer or a bad prefix (nothing changes then).
        """
        self.device.set_allowed_ips(public_key, cidrs)
        self._sync_routes()

    def peer_counters(self, public_key: bytes) -> tuple[int, int] | None:
        """(rx_bytes, tx_bytes) of one peer, or None if it is not a peer: no UAPI, no listing."""
        return self.device.peer_counters(public_key)

    def _sync_routes(self) -> None:
        """Make the TUN's routes the union of the peers' allowed IPs (as wg-quick sets them up).

        Only routes this tunnel made are removed, so an operator's own routes are left alone.
        """
        if not self.manage_routes:
            return
        with self._routes_lock:
            self._sync_routes_locked()

    def _sync_routes_locked(self) -> None:
        wanted = {_prefix(c) for stats in self.device.peers() for c in stats.allowed_ips}
        for cidr in sorted(wanted - self._routed):
            try:
                self.tun.add_route(cidr, self.fwmark)
            except LocalProtocolError as exc:
                log.warning("%s: route %s: %s", self.ifname, cidr, exc)
                continue
            self._routed.add(cidr)
        for cidr in sorted(self._routed - wanted):
            self.tun.remove_route(cidr, self.fwmark)
            self._routed.discard(cidr)

    def peers(self) -> list[PeerStats]:
        return [PeerStats(public_key=s.public_key, endpoint=s.endpoint,
                          allowed_ips=tuple(str(c) for c in s.allowed_ips),
                          last_handshake=s.last_handshake, rx_bytes=s.rx_bytes,
                          tx_bytes=s.tx_bytes, persistent_keepalive=s.keepalive)
                for s in self.device.peers()]

    # -- overlay hook ------------------------------------------------------------------------------

    def set_demux(self, callback: DemuxCallback | None) -> None:
        """Route non-WireGuard datagrams arriving on the socket to ``callback(data, source)``.

        The callback runs on the receive thread: it must be quick (queue work elsewhere).
        """
        self._demux = callback

    def send_datagram(self, data: bytes, address: tuple, ttl: int | None = None) -> None:
        """Send a non-WireGuard datagram (e.g. an overlay message) from the tunnel's socket.

        ``ttl``: this datagram's IP TTL (hop limit for IPv6), for NAT punching's low-TTL first punch.
        It travels as a control message of this one ``sendmsg``: setting the socket's IP_TTL instead
        would, for that moment, give the data threads' datagrams the low TTL too.
        """
        if ttl is None:
            self._sendto(data, address)
            return
        wire = self._wire_address(address) if self._dual_stack else address
        v6 = ":" in wire[0] and not wire[0].startswith("::ffff:")
        level, opt = (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT) if v6 else (socket.IPPROTO_IP, socket.IP_TTL)
        try:
            self.sock.sendmsg([data], [(level, opt, struct.pack("i", ttl))], 0, wire)
        except OSError as exc:  # best effort, as _sendto (a full buffer loses this one punch)
            log.debug("%s: send to %s with TTL %d: %s", self.ifname, address, ttl, exc)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> "Tunnel":
        """Start the data, handshake, timer and UAPI threads; returns self."""
        targets = [("tun->udp", self._tun_loop), ("udp->tun", self._udp_loop),
                   ("handshakes", self._handshake_loop), ("timers", self._timer_loop)]
        if self._uapi_sock is not None:
            targets.append(("uapi", self._uapi_loop))
        for name, target in targets:
            thread = threading.Thread(target=self._guard(target), name=f"{self.ifname}-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        self._wake.set()
        return self

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception:  # a dead thread must not pass silently
                if not self._stop.is_set():
                    log.exception("%s: thread failed", self.ifname)
                    self._stop.set()
        return run

    def close(self) -> None:
        """Stop the threads, delete the TUN interface, close the socket and UAPI socket."""
        if self._stop.is_set() and not self._threads:
            return
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads.clear()
        if self._uapi_sock is not None:
            self._uapi_sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._uapi_path)
            self._uapi_sock = None
        self.tun.close()
        self.sock.close()

    @property
    def running(self) -> bool:
        """Whether the threads are up and none has failed."""
        return bool(self._threads) and not self._stop.is_set()

    # -- hot paths --------------------------------------------------------------------------------

    def _wire_address(self, address: tuple) -> tuple:
        """The core's (host, port) as this socket wants it (IPv4-mapped on a dual-stack socket)."""
        wire = self._to_wire.get(address)
        if wire is None:
            host = address[0]
            wire = (f"::ffff:{host}" if "." in host and ":" not in host else host, address[1])
            if len(self._to_wire) > ADDRESS_CACHE:
                self._to_wire.clear()
            self._to_wire[address] = wire
        return wire

    def _core_address(self, source: tuple) -> tuple:
        """A dual-stack socket's source address as the core spells it: (host, port)."""
        address = self._from_wire.get(source)
        if address is None:
            host = source[0]
            address = (host[7:] if host.startswith("::ffff:") and "." in host else host, source[1])
            if len(self._from_wire) > ADDRESS_CACHE:
                self._from_wire.clear()
            self._from_wire[source] = address
        return address

    def _sendto(self, data: bytes, address: tuple) -> None:
        if self._dual_stack:
            address = self._wire_address(address)
        for _ in range(20):  # bounded: a full send buffer drains within a few milliseconds
            try:
                self.sock.sendto(data, address)
                return
            except BlockingIOError:
                select.select([], [self.sock], [], POLL_S)
            except OSError as exc:
                # UDP is best effort (unreachable network, ENOBUFS from a full queue, a firewall's
                # EPERM...): lose this datagram, as wireguard-go does, never the thread sending it.
                log.debug("%s: send to %s: %s", self.ifname, address, exc)
                return

    def _flush(self) -> list:
        out = self.device.drain_outbox()
        for datagram, endpoint in out:
            self._sendto(datagram, endpoint)
        return out

    def _tun_loop(self) -> None:
        fd, read, device, now = self.tun.fd, os.read, self.device, self.now
        sendto, stop, send_batch, counts = self._sendto, self._stop, self._send_batch, self.offload_counts
        # With TUN offloads each read is a virtio_net_hdr frame, possibly a TSO/USO train that
        # agents.wireguard.vnet cuts into packets. Without, the device hands over packets of at most
        # its MTU: reading just that much spares os.read a 64 KiB allocation and shrink per packet.
        vnet = self.tun.vnet_hdr
        size = MAX_PACKET + VNET_HDR_LEN if vnet else self.tun.mtu + 64
        while not stop.is_set():
            try:
                frame = read(fd, size)
            except BlockingIOError:
                select.select([fd], [], [], POLL_S)
                continue
            except OSError:
                if stop.is_set():
                    return
                raise
            # Take what else is queued already (never wait for more) up to BATCH_PACKETS packets, so
            # that equal datagrams to one peer leave in one GSO send (agents.wireguard.offload).
            t = now()
            batch = []
            taken = 0
            while True:
                if vnet:
                    packets = segment(frame)
                    if len(packets) > 1:
                        counts["tso_reads"] += 1
                        counts["tso_segments"] += len(packets)
                else:
                    packets = (frame,)
                for packet in packets:
                    result = device.encapsulate(packet, t)
                    if result is not None:
                        batch.append(result)
                taken += len(packets) or 1
                if taken >= BATCH_PACKETS:
                    break
                try:
                    frame = read(fd, size)
                except OSError:  # BlockingIOError: the queue is empty; a real error shows next read
                    break
            outbox = device.drain_outbox()
            send_batch(batch)
            for datagram, endpoint in outbox:
                sendto(datagram, endpoint)
            if outbox:
                self._wake.set()

    def _write_coalesced(self, packets: list[bytes]) -> None:
        """Write decrypted packets to a TUN with offloads: TCP segments of one flow merged, and UDP
        datagrams of one flow where the TUN took USO (agents.wireguard.vnet.coalesce), one frame per
        write. A merged UDP frame the kernel refuses (EINVAL) is written again datagram by
        datagram, and UDP merging stops for this tunnel."""
        fd, counts = self.tun.fd, self.offload_counts
        udp = self._udp_gro_writes
        for frame in coalesce(packets, verify=False, udp=udp):  # AEAD-authenticated: see vnet.coalesce
            gso_type = frame[1]
            try:
                os.write(fd, frame)
            except OSError as exc:  # e.g. EINVAL for a packet the kernel refuses
                if gso_type == GSO_UDP_L4 and exc.errno == errno.EINVAL:
                    log.info("%s: TUN refused a merged UDP write (%s): datagrams written one by one",
                             self.ifname, exc)
                    self._udp_gro_writes = False
                    for packet in segment(frame):
                        with contextlib.suppress(OSError):
                            os.write(fd, ZERO_HDR + packet)
                    continue
                log.debug("%s: TUN write: %s", self.ifname, exc)
                continue
            if gso_type:  # a merged train
                counts["tun_udp_gro_writes" if gso_type == GSO_UDP_L4 else "tun_gro_writes"] += 1

    def _send_batch(self, batch: list[tuple[bytes, tuple]]) -> None:
        """Send encrypted datagrams in order: runs to one endpoint in one GSO send each."""
        if not self._gso or len(batch) == 1:
            for datagram, endpoint in batch:
                self._sendto(datagram, endpoint)
            return
        i = 0
        while i < len(batch):
            endpoint, j = batch[i][1], i + 1
            while j < len(batch) and batch[j][1] == endpoint:
                j += 1
            for run in offload_runs([datagram for datagram, _ in batch[i:j]]):
                if len(run) == 1 or not self._gso or len(run[0]) > self._gso_max_segment.get(endpoint, MAX_PACKET):
                    for datagram in run:
                        self._sendto(datagram, endpoint)
                else:
                    self._send_run(run, endpoint)
            i = j

    def _send_run(self, run: list[bytes], endpoint: tuple) -> None:
        address = self._wire_address(endpoint) if self._dual_stack else endpoint
        for _ in range(20):  # bounded, as _sendto
            try:
                self.sock.sendmsg(run, gso_cmsg(len(run[0])), 0, address)
                counts = self.offload_counts
                counts["gso_runs"] += 1
                counts["gso_segments"] += len(run)
                return
            except BlockingIOError:
                select.select([], [self.sock], [], POLL_S)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    # Segments larger than the path's MTU: GSO cannot fragment them, single sends
                    # are fragmented by IP. Datagrams this large to this endpoint go one by one.
                    log.info("%s: %d-byte segments exceed the path MTU to %s: sent one by one", self.ifname,
                             len(run[0]), address)
                    limits = self._gso_max_segment
                    if len(limits) >= ADDRESS_CACHE and endpoint not in limits:
                        limits.clear()
                    limits[endpoint] = min(limits.get(endpoint, MAX_PACKET), len(run[0]) - 1)
                    for datagram in run:
                        self._sendto(datagram, endpoint)
                elif exc.errno in _GSO_REFUSED:  # this kernel or device cannot: one at a time from now
                    log.info("%s: UDP GSO refused (%s): sending datagram by datagram", self.ifname, exc)
                    self._gso = False
                    for datagram in run:
                        self._sendto(datagram, endpoint)
                else:  # lost, as a single datagram would be (see _sendto)
                    log.debug("%s: send to %s: %s", self.ifname, address, exc)
                return

    def _udp_loop(self) -> None:
        recvfrom, fd, write = self.sock.recvfrom, self.tun.fd, os.write
        device, now, stop, sendto = self.device, self.now, self._stop, self._sendto
        sock, dual_stack, core_address = self.sock, self._dual_stack, self._core_address
        window_start, handshakes, load_until = 0.0, 0, 0.0
        recvmsg, gro, offload_counts = sock.recvmsg, self._gro, self.offload_counts
        queue, ready, flood_limiter, drops = self._handshakes, self._handshake_ready, self._flood_limiter, self.drop_counts
        vnet, write_coalesced = self.tun.vnet_hdr, self._write_coalesced
        # With TUN offloads, decrypted packets of one source wait here until the socket is empty, a
        # datagram from another source comes (one peer's packets merge only with each other, so
        # holding them behind other peers' would only delay them), BATCH_PACKETS of them are in,
        # or BATCH_PACKETS receives went by since the first (a flood of handshake messages must not
        # hold a session's data); then they are written merged: so datagrams not coalesced by UDP
        # GRO (a peer without GSO, such as wireguard-go) still reach the TUN in GRO frames.
        inners: list[bytes] = []
        held, held_source = 0, None
        while not stop.is_set():
            try:
                if gro:  # possibly several datagrams of one source, coalesced (offload.split)
                    data, ancdata, _flags, source = recvmsg(GRO_BUFFER, GRO_ANCILLARY)
                    segment = gro_segment_size(ancdata)
                    if segment:
                        datagrams = offload_split(data, segment)
                        offload_counts["gro_receives"] += 1
                        offload_counts["gro_segments"] += len(datagrams)
                    else:
                        datagrams = (data,)
                else:
                    data, source = recvfrom(MAX_PACKET)
                    datagrams = (data,)
            except BlockingIOError:
                if inners:  # the socket is drained: write, then look again before sleeping
                    write_coalesced(inners)
                    inners, held = [], 0
                    continue
                select.select([sock], [], [], POLL_S)
                continue
            except OSError:
                if stop.is_set():
                    return
                raise
            if dual_stack:
                source = core_address(source)
            if inners and source != held_source:
                write_coalesced(inners)
                inners, held = [], 0
            held_source = source
            for data in datagrams:
                if not data:  # a zero-length datagram: nothing to demultiplex (and no data[0])
                    continue
                if not (data[0] in _WG_TYPES and data[1:4] == b"\0\0\0"):
                    demux = self._demux
                    if demux is not None:
                        try:
                            demux(data, source)
                        except Exception:
                            log.exception("%s: demux callback failed", self.ifname)
                    continue
                if data[0] != 4:
                    # Handshake traffic goes to the handshake thread, so that its work (DH, cookie
                    # replies) never holds up the data of established sessions. Under load (a high
                    # rate, or a backlog) the device asks for cookies and each source address may
                    # queue only its token bucket's worth; past the queue's bound, drop on arrival.
                    t = time.monotonic()
                    if t - window_start >= 1.0:
                        window_start, handshakes = t, 0
                        device.under_load = t < load_until
                    handshakes += 1
                    if handshakes > UNDER_LOAD_HANDSHAKES_PER_S or len(queue) >= UNDER_LOAD_QUEUE:
                        device.under_load, load_until = True, t + UNDER_LOAD_AFTER_S
                    if device.under_load and not flood_limiter.allow(source[0], t):
                        drops["handshake_rate_limited"] += 1
                    elif len(queue) >= HANDSHAKE_QUEUE:
                        drops["handshake_queue_full"] += 1
                    else:
                        queue.append((data, source))
                        ready.set()
                    continue
                inner = device.decapsulate(data, source, now())
                outbox = device.drain_outbox()
                if inner and vnet:
                    inners.append(inner)
                elif inner:
                    try:
                        write(fd, inner)
                    except OSError as exc:  # e.g. EINVAL for a packet the kernel refuses
                        log.debug("%s: TUN write: %s", self.ifname, exc)
                for datagram, endpoint in outbox:
                    sendto(datagram, endpoint)
                if outbox:
                    self._wake.set()
            if inners:
                held += 1
                if held >= BATCH_PACKETS or len(inners) >= BATCH_PACKETS:
                    write_coalesced(inners)
                    inners, held = [], 0

    def _handshake_loop(self) -> None:
        queue, ready, device, now = self._handshakes, self._handshake_ready, self.device, self.now
        stop, sendto = self._stop, self._sendto
        while not stop.is_set():
            try:
                data, source = queue.popleft()
            except IndexError:
                ready.wait(POLL_S)
                ready.clear()  # then look again: an append after the failed pop is not lost
                continue
            device.decapsulate(data, source, now())
            for datagram, endpoint in device.drain_outbox():
                sendto(datagram, endpoint)
            self._wake.set()  # timers may have changed (a session, a retry)

    def _timer_loop(self) -> None:
        while not self._stop.is_set():
            self.device.tick(self.now())
            self._flush()
            if self._routes_dirty:
                self._routes_dirty = False
                self._sync_routes()
            for event in self.device.drain_events():
                self.events.append(event)
                self.event_counts[type(event).__name__] += 1
                log.info("%s: %s", self.ifname, type(event).__name__)
            deadline = self.device.next_deadline()
            wait = TIMER_MAX_SLEEP / max(1.0, self.time_scale)
            if deadline is not None:
                wait = min(wait, max(0.0, (deadline - self.now()) / self.time_scale))
            self._wake.wait(wait)
            self._wake.clear()

    # -- UAPI server ------------------------------------------------------------------------------

    def _open_uapi(self, uapi_dir: str) -> None:
        os.makedirs(uapi_dir, mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self._uapi_path)
            except ConnectionRefusedError:  # a stale socket from a killed process
                os.unlink(self._uapi_path)
            else:
                probe.close()
                self._close_fds()
                raise LocalProtocolError(f"UAPI socket {self._uapi_path} is in use")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self._uapi_path)
        sock.listen(8)
        self._uapi_sock = sock

    def _close_fds(self) -> None:
        """Close the TUN device and socket without touching threads (failed construction)."""
        self.tun.close()
        self.sock.close()

    def _uapi_loop(self) -> None:
        listener = self._uapi_sock
        while not self._stop.is_set() and listener is not None:
            ready, _, _ = select.select([listener], [], [], POLL_S)
            if not ready:
                continue
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2.0)
                try:
                    self._serve_uapi(conn)
                except (OSError, ValueError) as exc:
                    log.debug("%s: UAPI client: %s", self.ifname, exc)

    def _serve_uapi(self, conn: socket.socket) -> None:
        buffer = b""
        while b"\n\n" not in buffer:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buffer += chunk
        request = buffer.split(b"\n\n", 1)[0].decode().split("\n")
        if request[0] == "get=1":
            body = format_get(self.config.private_key, self.listen_port, self.peers(),
                              self._psk.get)
            conn.sendall(body.encode() + b"errno=0\n\n")
        elif request[0] == "set=1":
            code = self._uapi_set(request[1:])
            conn.sendall(f"errno={code}\n\n".encode())
        else:
            conn.sendall(f"errno={errno.EINVAL}\n\n".encode())

    def _uapi_set(self, lines: list[str]) -> int:
        """Apply a ``set=1`` request with wireguard-go's semantics (device keys and port are fixed at start).

        A peer section changes only the fields it names: ``allowed_ip`` lines add to the peer's
        prefixes unless ``replace_allowed_ips=true`` came first, ``update_only=true`` skips a peer
        that does not exist, ``remove=true`` removes it; a device-level ``replace_peers=true``
        removes every peer before the sections apply. This is what `wg set` relies on: ``wg set
        IF peer KEY endpoint HOST:PORT`` sends just the key and the endpoint.

        Returns:
            0, or ``errno.EINVAL`` for a malformed line (nothing is applied then).
        """
        current = {stats.public_key: stats for stats in self.device.peers()}
        replace_peers = False
        peers: list[dict] = []
        for line in lines:
            key, _, value = line.partition("=")
            try:
                if key == "public_key":
                    public = bytes.fromhex(value)
                    known = None if replace_peers else current.get(public)
                    peers.append({"public_key": public, "exists": known is not None} if known is None else {
                        "public_key": public, "exists": True, "preshared_key": self._psk.get(public),
                        "allowed_ips": list(known.allowed_ips), "endpoint": known.endpoint,
                        "persistent_keepalive": known.keepalive})
                elif not peers:
                    replace_peers |= key == "replace_peers" and value == "true"
                elif key in ("remove", "update_only"):
                    peers[-1][key] = value == "true"
                elif key == "replace_allowed_ips" and value == "true":
                    peers[-1]["allowed_ips"] = []
                elif key == "preshared_key":
                    peers[-1]["preshared_key"] = bytes.fromhex(value) if int(value, 16) else None
                elif key == "endpoint":
                    peers[-1]["endpoint"] = parse_endpoint(value)
                elif key == "persistent_keepalive_interval":
                    peers[-1]["persistent_keepalive"] = int(value) or None
                elif key == "allowed_ip":
                    peers[-1].setdefault("allowed_ips", []).append(value)
            except ValueError:
                return errno.EINVAL
        if replace_peers:
            for public in current:
                self.remove_peer(public)
        for fields in peers:
            existed, update_only = fields.pop("exists"), fields.pop("update_only", False)
            if fields.pop("remove", False):
                self.remove_peer(fields["public_key"])
            elif existed or not update_only:
                try:
                    self.add_peer(PeerConfig(**fields))
                except LocalProtocolError:
                    return errno.EINVAL
        return 0


def _prefix(cidr) -> str:
    """A prefix in canonical text (``10.0.0.1/24`` -> ``10.0.0.0/24``), as routes are keyed."""
    return str(ipaddress.ip_network(str(cidr), strict=False))


def _resolved(endpoint: tuple[str, int] | None) -> tuple[str, int] | None:
    """``endpoint`` with a host name replaced by its first address, once, as `wg` does when configuring.

    Otherwise every datagram's sendto would resolve the name again (one DNS lookup per packet), and
    the core would see the peer "roam" to its own address on the first reply.

    Raises:
        LocalProtocolError: the name does not resolve.
    """
    if endpoint is None:
        return None
    host, port = endpoint[0], endpoint[1]
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return endpoint
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise LocalProtocolError(f"endpoint {host}:{port}: {exc.strerror}") from None
    return infos[0][4][0], port


def _bound_udp_socket(bind_address: str, port: int) -> socket.socket:
    """A UDP socket bound to ``(bind_address, port)``.

    "::" gives a dual-stack IPv6 socket; where IPv6 is missing or disabled, an IPv4 one on 0.0.0.0.
    """
    if ":" in bind_address:
        sock = None
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            if bind_address == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((bind_address, port))
            return sock
        except OSError:
            if sock is not None:
                sock.close()
            if bind_address != "::":
                raise
            bind_address = "0.0.0.0"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((bind_address, port))
    except OSError:
        sock.close()
        raise
    return sock
