"""A local control socket: one JSON request per connection, one JSON answer, mode 0600.

`warren node status` asks the running `warren node run`, and `warren status` / `warren disconnect`
ask the running `warren connect`, through a unix socket in the data folder. Only its owner (root, for
a VPN) can connect: the socket file is made 0600 inside a 0700 folder before anyone can reach it.

Hand-written because it is a few lines over the standard library; an HTTP framework would add a
port, a dependency and an attack surface for two commands.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["ControlServer", "NotRunning", "request"]

log = logging.getLogger(__name__)

#: Largest request or answer (bytes).
MAX_MESSAGE = 1 << 20


class NotRunning(Exception):
    """Nothing answers at the socket (the process is not running)."""


class ControlServer:
    """Serve ``handler(request: dict) -> dict`` on a unix socket at ``path``.

    Args:
        path: the socket file (its folder is created 0700; a stale socket file is replaced).
        handler: called on the serving thread for each request.
    """

    def __init__(self, path: str | os.PathLike, handler: Callable[[dict], dict]) -> None:
        self.path = Path(path)
        self.handler = handler
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._sock.listen(8)
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="unixctl", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    data = _read_all(conn)
                    answer = self.handler(json.loads(data or b"{}"))
                except Exception as exc:  # answer with the error rather than hang the caller
                    log.exception("control request failed")
                    answer = {"error": str(exc)}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(answer).encode())

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        self._thread.join(timeout=2)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _read_all(conn: socket.socket) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_MESSAGE:
            raise ValueError("control message too large")
        chunks.append(chunk)


def request(path: str | os.PathLike, body: dict, timeout: float = 30.0) -> dict:
    """Send one request and return the answer.

    Raises:
        NotRunning: no process listens at ``path``.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise NotRunning(f"nothing is running at {path}") from exc
    with sock:
        sock.sendall(json.dumps(body).encode())
        sock.shutdown(socket.SHUT_WR)
        return json.loads(_read_all(sock) or b"{}")
