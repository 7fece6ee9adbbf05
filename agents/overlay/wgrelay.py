"""WireGuard over an overlay relay: one loopback port per relayed peer.

When punching fails (symmetric NAT on both sides), :class:`~agents.overlay.nat.NatAgent` gets a relay
session: overlay RELAYED frames (type 0x4e, ``session 8 | inner datagram``) that a volunteer relay
forwards within its byte and time budget (:class:`~agents.overlay.nat.RelayLimits`). This module
carries the peers' WireGuard datagrams inside those frames, without touching the WireGuard core:

* **Endpoint redirect to loopback.** For a relayed peer, :class:`RelayBridge` opens a UDP socket on
  ``127.0.0.1:P`` (in the tunnel's network namespace) and the mesh host gives the WireGuard peer the
  endpoint ``127.0.0.1:P``. Every datagram the core sends to that peer (handshakes, data, keepalives)
  lands on the bridge socket, which wraps it in a RELAYED frame to the peer through the relay
  (``send(peer, datagram)``, i.e. ``NatAgent.send``).
* **Inbound.** A RELAYED frame from the peer (``DataReceived(via="relay")``) that holds a WireGuard
  datagram is sent from the bridge socket to the tunnel's port on ``127.0.0.1``: the core sees it
  come from ``127.0.0.1:P``, the endpoint it already has, so WireGuard's roaming keeps the peer on
  the bridge. Authentication stays end to end: the relay only ever sees WireGuard ciphertext.
* **Upgrade.** When a later punch succeeds, the mesh host sets the peer's endpoint to the direct
  address (the WireGuard session is kept) and closes the bridge port; relayed frames still in flight
  are dropped rather than injected, so roaming cannot pull the peer back onto the relay.

Why not a message type of our own: RELAYED already is the "opaque datagram through relay R" envelope
with the relay's limits; the loopback port is the only piece the WireGuard runtime lacked (a peer
endpoint that means "via relay R"), and it needs no change in the runtime or the core.

Cost: 45 bytes per datagram (overlay header 37 + session 8), and an overlay datagram is at most
``wire.MAX_DATAGRAM`` (1216) bytes, so mesh tunnels use :data:`MESH_MTU` (1136) for every peer.
RELAYED frames alone may reach ``wire.MAX_RELAYED_DATAGRAM`` (1497: a WireGuard datagram of an MTU
1420 tunnel), so exit sessions relayed to a node keep MTU 1420 (fragmented over IPv4 if need be).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable, Iterator

from agents.netlab.nsenter import enter_namespace
from agents.wireguard.runtime import is_wireguard_datagram

from . import wire

__all__ = ["MESH_MTU", "RelayBridge", "RELAY_OVERHEAD", "WG_DATA_OVERHEAD", "in_netns_of"]

log = logging.getLogger(__name__)

RELAY_OVERHEAD = wire.HEADER_SIZE + 8  # RELAYED frame around a WireGuard datagram (wire.py)
WG_DATA_OVERHEAD = 32  # WireGuard transport message: type, reserved, receiver, counter (16) + tag (16)
# The largest inner packet whose relayed datagram fits an overlay datagram (wire.MAX_DATAGRAM, 1216:
# never fragmented): 1216 - 45 - 32 = 1139, rounded down to WireGuard's 16-byte padding: 1136.
MESH_MTU = (wire.MAX_DATAGRAM - RELAY_OVERHEAD - WG_DATA_OVERHEAD) // 16 * 16
SIOCGSKNS = 0x894C  # <linux/sockios.h>: an fd of the network namespace a socket belongs to
POLL_S = 0.1  # the bridge thread notices close() this often
MAX_DATAGRAM = 65535

def _netns_of(sock: socket.socket) -> int | None:
    """An fd of ``sock``'s network namespace, or None (then we assume the current one)."""
    try:
        return fcntl.ioctl(sock.fileno(), SIOCGSKNS)
    except OSError:
        return None


@contextlib.contextmanager
def in_netns_of(sock: socket.socket) -> Iterator[None]:
    """Run the body with the calling thread in ``sock``'s network namespace.

    Sockets and TUN devices made in the body belong there (a mesh host's tunnel may live in a
    namespace other than the thread that sets up its relayed peers).
    """
    ns = _netns_of(sock)
    if ns is None:
        yield
        return
    try:  # an absolute path as the "name": os.path.join drops netlab's /var/run/netns prefix
        with enter_namespace(f"/proc/self/fd/{ns}"):
            yield
    finally:
        os.close(ns)


class RelayBridge:
    """Loopback ports that stand for "peer X via its relay" (see the module docstring).

    Args:
        tunnel: the running ``agents.wireguard.runtime.Tunnel``.
        send: ``send(peer, datagram)`` puts one WireGuard datagram on the peer's relay path.
    """

    def __init__(self, tunnel, send: Callable[[int, bytes], None]) -> None:
        self.tunnel = tunnel
        self._send = send
        self._sel = selectors.DefaultSelector()
        self._socks: dict[int, socket.socket] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.stats = {"to_relay": 0, "from_relay": 0, "dropped": 0}
        self._thread = threading.Thread(target=self._run, name="mesh-relay-bridge", daemon=True)
        self._thread.start()

    def _new_socket(self) -> socket.socket:
        with in_netns_of(self.tunnel.sock):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        return sock

    def endpoint(self, peer: int) -> tuple[str, int]:
        """The loopback endpoint standing for ``peer`` via its relay (opened on first use)."""
        with self._lock:
            sock = self._socks.get(peer)
            if sock is None:
                sock = self._socks[peer] = self._new_socket()
                self._sel.register(sock, selectors.EVENT_READ, peer)
            return sock.getsockname()[:2]

    def has(self, peer: int) -> bool:
        return peer in self._socks

    def deliver(self, peer: int, datagram: bytes) -> bool:
        """Hand a WireGuard datagram that came through the relay to the tunnel; False if dropped."""
        sock = self._socks.get(peer)
        if sock is None or not is_wireguard_datagram(datagram):
            self.stats["dropped"] += 1
            return False
        try:
            sock.sendto(datagram, ("127.0.0.1", self.tunnel.listen_port))
        except OSError as exc:  # full buffer: WireGuard retransmits what matters
            log.debug("relay bridge: inject failed: %s", exc)
            self.stats["dropped"] += 1
            return False
        self.stats["from_relay"] += 1
        return True

    def drop(self, peer: int) -> None:
        """Close ``peer``'s loopback port (its path is direct now, or its relay session ended)."""
        with self._lock:
            sock = self._socks.pop(peer, None)
            if sock is not None:
                self._sel.unregister(sock)
                sock.close()

    def close(self) -> None:
        """Stop the thread and close every port."""
        self._stop.set()
        self._thread.join(timeout=2)
        with self._lock:
            for sock in self._socks.values():
                self._sel.unregister(sock)
                sock.close()
            self._socks.clear()
        self._sel.close()

    def _run(self) -> None:
        port = self.tunnel.listen_port
        while not self._stop.is_set():
            try:  # epoll: ports may be added or removed by other threads meanwhile
                ready = self._sel.select(POLL_S)
            except (OSError, ValueError):
                return
            for key, _ in ready:
                for _ in range(256):  # bounded drain per port
                    try:
                        data, source = key.fileobj.recvfrom(MAX_DATAGRAM)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno not in (errno.EBADF, errno.ECONNREFUSED):
                            log.debug("relay bridge: recv failed: %s", exc)
                        break
                    # only our own tunnel may use the port (anything else local is not WireGuard's)
                    if source[1] != port or not is_wireguard_datagram(data):
                        self.stats["dropped"] += 1
                        continue
                    self.stats["to_relay"] += 1
                    with contextlib.suppress(Exception):
                        self._send(key.data, data)
