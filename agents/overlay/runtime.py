"""The overlay on real UDP sockets.

:class:`OverlayRuntime` wraps one :class:`~agents.overlay.core.OverlayNode` with a clock, a send
function and a lock; its :meth:`OverlayRuntime.on_datagram` is the demultiplexer entry point, so the
same runtime serves either a socket of its own or the WireGuard tunnel's socket (DESIGN.md: one UDP
socket per host; ``agents.wireguard.runtime.Tunnel.set_demux`` hands us every non-WireGuard
datagram, :func:`attach_to_tunnel`).

:class:`UdpReactor` is one thread that serves many runtimes: their sockets (``selectors``) and their
timers. One thread for fifty nodes keeps a loopback test of a large ring cheap on a small machine;
one node per host uses the same reactor with one socket.

The clock is wall time (``time.time``): records carry unix expiry times. A wall-clock jump only makes
timers fire early or late once.
"""

from __future__ import annotations

import collections
import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable

from . import wire
from .core import OverlayNode
from .errors import LocalProtocolError

__all__ = ["OverlayRuntime", "UdpReactor", "attach_to_tunnel"]

log = logging.getLogger(__name__)

EVENT_HISTORY = 10_000  # events kept per runtime for waiters (bounded memory)
MAX_SLEEP = 0.05  # seconds: the reactor wakes at least this often to notice new work and close()


class OverlayRuntime:
    """One overlay node on a real transport.

    Args:
        node: the protocol core.
        send: ``send(data, address)`` puts one datagram on the wire.
        clock: seconds (wall time, records carry unix expiries).
    """

    def __init__(self, node: OverlayNode, send: Callable[[bytes, tuple], None], clock=time.time) -> None:
        self.node = node
        self._send = send
        self.clock = clock
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.events: collections.deque = collections.deque(maxlen=EVENT_HISTORY)
        self.listeners: list[Callable] = []  # fn(event), called with the lock held
        self.sock: socket.socket | None = None
        self.address: tuple | None = None
        # send(data, address, ttl) for datagrams that need an IP TTL; None: such datagrams are dropped
        self.send_ttl: Callable[[bytes, tuple, int], None] | None = None

    def on_datagram(self, data: bytes, source: tuple) -> None:
        """Demultiplexer entry: feed an overlay datagram (others are ignored)."""
        if not wire.is_overlay(data):
            return
        with self.lock:
            self.node.receive_datagram(data, (source[0], source[1]), self.clock())
            self._flush()

    def tick(self) -> None:
        """Run the core's due timers."""
        with self.lock:
            self.node.tick(self.clock())
            self._flush()

    def next_deadline(self) -> float:
        with self.lock:
            return self.node.next_deadline()

    def call(self, fn: Callable):
        """Run ``fn(node, now)`` under the lock (e.g. a lookup) and send what it queued."""
        with self.lock:
            out = fn(self.node, self.clock())
            self._flush()
            return out

    def _flush(self) -> None:
        self._send_outbox()
        evs = self.node.drain_events()
        if evs:
            self.events.extend(evs)
            for ev in evs:
                for fn in self.listeners:
                    fn(ev)
            self.changed.notify_all()
            if self.node.outbox:  # a listener queued messages (an echo reply): send them now
                self._send_outbox()

    def _send_outbox(self) -> None:
        for item in self.node.drain_outbox():
            try:
                if len(item) > 2:
                    if self.send_ttl is not None:
                        self.send_ttl(item[1], item[0], item[2])
                else:
                    self._send(item[1], item[0])
            except OSError as exc:  # unreachable peer, full buffer: the protocol's timeouts cope
                log.debug("overlay send to %s failed: %s", item[0], exc)

    def wait_for(self, predicate: Callable, timeout: float):
        """Wait until some kept event satisfies ``predicate``; returns it, or None on timeout."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for ev in self.events:
                    if predicate(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(min(left, 0.1))


class UdpReactor:
    """One thread serving the sockets and timers of many overlay runtimes."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._runtimes: list[OverlayRuntime] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_udp(self, node: OverlayNode, bind: tuple = ("127.0.0.1", 0)) -> OverlayRuntime:
        """Give ``node`` a UDP socket of its own bound at ``bind``; returns its runtime."""
        family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(bind)
        rt = OverlayRuntime(node, lambda data, addr: sock.sendto(data, addr))
        rt.send_ttl = lambda data, addr, ttl: _sendto_ttl(sock, family, data, addr, ttl)
        rt.sock = sock
        rt.address = sock.getsockname()[:2]
        with self._lock:
            self._sel.register(sock, selectors.EVENT_READ, rt)
            self._runtimes.append(rt)
        return rt

    def add_runtime(self, rt: OverlayRuntime) -> OverlayRuntime:
        """Serve only the timers of a runtime whose datagrams arrive elsewhere (a tunnel's socket)."""
        with self._lock:
            self._runtimes.append(rt)
        return rt

    def start(self) -> "UdpReactor":
        self._thread = threading.Thread(target=self._run, name="overlay-reactor", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and close every socket this reactor opened."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for rt in self._runtimes:
                if rt.sock is not None:
                    self._sel.unregister(rt.sock)
                    rt.sock.close()
            self._runtimes.clear()
        self._sel.close()

    def __enter__(self) -> "UdpReactor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                rts = list(self._runtimes)
            now = time.time()
            soonest = min((rt.next_deadline() for rt in rts), default=now + MAX_SLEEP)
            timeout = max(0.0, min(soonest - now, MAX_SLEEP))
            try:
                ready = self._sel.select(timeout)
            except (OSError, ValueError):  # closed under us
                return
            # Nodes of this reactor answer each other within this loop: keep reading until every
            # socket is empty, so that a reply already sent is never mistaken for a timeout below.
            for _ in range(64):  # bounded, so timers still run under a flood
                if not ready:
                    break
                for key, _ in ready:
                    self._drain(key.data)
                try:
                    ready = self._sel.select(0)
                except (OSError, ValueError):
                    return
            now = time.time()
            for rt in rts:
                if rt.next_deadline() <= now:
                    rt.tick()


    @staticmethod
    def _drain(rt: OverlayRuntime) -> None:
        for _ in range(256):
            try:
                data, source = rt.sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    log.debug("overlay recv failed: %s", exc)
                return
            rt.on_datagram(data, source)


def _sendto_ttl(sock: socket.socket, family: int, data: bytes, addr: tuple, ttl: int) -> None:
    level, opt = ((socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) if family == socket.AF_INET6
                  else (socket.IPPROTO_IP, socket.IP_TTL))
    default = sock.getsockopt(level, opt)
    sock.setsockopt(level, opt, ttl)
    try:
        sock.sendto(data, addr)
    finally:
        sock.setsockopt(level, opt, default)


def attach_to_tunnel(node: OverlayNode, tunnel, reactor: UdpReactor) -> OverlayRuntime:
    """Run ``node`` on a WireGuard tunnel's UDP socket (one socket per host).

    The tunnel (``agents.wireguard.runtime.Tunnel``) hands every non-WireGuard datagram to the
    runtime through its demultiplexer hook; the runtime sends with ``tunnel.send_datagram``; the
    reactor runs the node's timers. Low-TTL punches (nat.LOW_TTL) go out with a per-datagram TTL
    (``tunnel.send_datagram(..., ttl=)``); without them two port-restricted NATs only met when the
    punches happened to cross in time (nat.PUNCH_SYNC_S), which in the lab they rarely did.
    """
    if not hasattr(tunnel, "set_demux") or not hasattr(tunnel, "send_datagram"):
        raise LocalProtocolError("overlay: tunnel lacks set_demux/send_datagram")
    rt = OverlayRuntime(node, lambda data, addr: tunnel.send_datagram(data, addr))
    rt.send_ttl = lambda data, addr, ttl: tunnel.send_datagram(data, addr, ttl=ttl)
    tunnel.set_demux(rt.on_datagram)
    reactor.add_runtime(rt)
    return rt
