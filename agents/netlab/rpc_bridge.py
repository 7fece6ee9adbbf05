"""Lets processes inside lab namespaces reach the test's chain at their own loopback address.

The lab's hosts are network namespaces; the chain (anvil, started by ape for the test session or the
demo) listens on the caller's loopback. :class:`RpcBridge` creates a listening socket *inside* a
namespace (a socket keeps the namespace it was made in) and forwards each connection it accepts to
the chain in the caller's namespace. So a `warren node run` inside host ``node-a`` uses
``http://127.0.0.1:8545`` as if a local light client were there, and no lab traffic ever targets an
address outside loopback and the lab's own namespaces.

Hand-written because it is forty lines of socket plumbing; socat would be another Debian package
and a process per namespace.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

from agents.netlab.nsenter import enter_namespace

__all__ = ["RpcBridge"]

log = logging.getLogger(__name__)

#: Connections served at once per bridge (JSON-RPC clients keep a few).
MAX_CONNECTIONS = 64
#: Idle connections are closed after this (seconds).
IDLE_S = 300.0


class RpcBridge:
    """Forward ``listen`` inside namespace ``netns`` to ``target`` in the caller's namespace.

    Args:
        netns: the namespace's name (``Namespace.name``).
        target: (host, port) of the chain, reachable from the calling thread's namespace.
        listen: (host, port) inside the namespace.
    """

    def __init__(self, netns: str, target: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 8545)) -> None:
        self.netns = netns
        self.target = target
        with enter_namespace(netns):
            self._listener = socket.create_server(listen, reuse_port=False)
        self.listen = self._listener.getsockname()[:2]
        self._listener.settimeout(0.2)
        self._closed = threading.Event()
        self._active = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=f"rpc-bridge-{netns}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The chain's URL as seen from inside the namespace."""
        return f"http://{self.listen[0]}:{self.listen[1]}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                inside, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._active.acquire(blocking=False):
                inside.close()
                continue
            try:
                outside = socket.create_connection(self.target, timeout=5)
            except OSError as exc:
                log.warning("rpc bridge %s: chain at %s: %s", self.netns, self.target, exc)
                inside.close()
                self._active.release()
                continue
            with self._lock:
                self._socks.update((inside, outside))
            pair_done = threading.Event()
            for src, dst in ((inside, outside), (outside, inside)):
                threading.Thread(target=self._pump, args=(src, dst, pair_done), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair_done: threading.Event) -> None:
        src.settimeout(IDLE_S)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            # The second direction to finish closes both and frees the slot; test-and-set under
            # the lock, or two pumps ending together could each think itself first and leak both.
            with self._lock:
                last = pair_done.is_set()
                pair_done.set()
                if last:
                    self._socks.difference_update((src, dst))
            if last:
                for sock in (src, dst):
                    with contextlib.suppress(OSError):
                        sock.close()
                self._active.release()

    def close(self) -> None:
        """Stop accepting and cut every forwarded connection."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=2)
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def __enter__(self) -> RpcBridge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
