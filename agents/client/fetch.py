"""`warren fetch URL --paths N -o FILE`: one HTTP download pulled over N paths at once.

It runs beside `warren connect --paths N` and asks it (its control socket: `warren status`) which
paths are up: each path's TUN. One worker per path keeps one HTTP/1.1 connection, bound to that TUN
(``SO_BINDTODEVICE``: Linux lets an unprivileged socket bind to a device since 5.7), and asks for
byte ranges (``Range: bytes=a-b``) that :class:`agents.client.ranges.RangeScheduler` hands out:
faster paths take more, a range of a failed path (a read silent for ``stall_s``, a reset, an HTTP
error) is handed to the others first and the path tries again after a rest (its agent may have
failed over meanwhile). While the client's agent judges a path's node dead (its status says
``alive: false``, asked every :data:`ALIVE_POLL_S`), that path's transfer is cut at once rather than
after ``stall_s``. Bytes are written in place (``pwrite``) into FILE, sized first; the SHA-256
of the whole file is printed at the end and compared with ``--sha256`` if given. Progress goes to
stderr once a second; the summary is one JSON object on stdout.

The server must answer a range request with ``206 Partial Content`` and a ``Content-Range`` naming
the file's length (RFC 9110 14.2, 14.4); one that answers ``200`` (it may: ranges are optional) is
refused in words rather than read whole.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable

from agents.client.ranges import RangeScheduler
from agents.errors import UserError

__all__ = ["CHUNK", "STALL_S", "fetch", "path_devices"]

#: Bytes per read.
CHUNK = 1 << 16
#: A connect or read waiting this long counts as a failed transfer (seconds): a little over the
#: agents' own liveness limit, so a dead exit's ranges are handed on about when its path is judged dead.
STALL_S = 3.0
#: Progress lines this often (seconds).
PROGRESS_S = 1.0
#: The running client is asked which paths are alive this often (seconds).
ALIVE_POLL_S = 0.5
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def path_devices(status: dict, paths: int) -> list[str | None]:
    """The TUNs of the first ``paths`` live paths of a running client (from its status).

    A client connected with one path has no ``paths`` in its status: ``--paths 1`` then binds to no
    device (the full tunnel's routes carry it).

    Raises:
        UserError: no client is connected, or it has fewer live paths than asked.
    """
    if not status.get("connected"):
        raise UserError("no connected client: start `warren connect --paths N` first")
    listed = status.get("paths")
    if listed is None:
        if paths == 1:
            return [None]
        raise UserError(f"--paths {paths}: the client is connected with one path (`warren connect --paths {paths}`)")
    live = [p["tun"] for p in listed if p.get("alive")]
    if len(live) < paths:
        raise UserError(f"--paths {paths}: the client has {len(live)} live path(s) of {len(listed)}")
    return live[:paths]


class _BoundConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to a fixed address, bound to one device (None: routed as usual)."""

    def __init__(self, address: tuple, host: str, device: str | None, timeout: float, tls: bool) -> None:
        super().__init__(host, address[1], timeout=timeout)
        self._address, self._device, self._tls = address, device, tls

    def connect(self) -> None:
        family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if self._device:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self._device.encode())
            sock.settimeout(self.timeout)
            sock.connect(self._address)
            if self._tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _Download:
    """The shared state of one `warren fetch`: target, output file, scheduler, counters."""

    def __init__(self, url: str, devices: list[str | None], *, stall_s: float,
                 log: Callable[[str], None]) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"{url}: only http:// and https:// URLs")
        self.host, self.tls = parts.hostname, parts.scheme == "https"
        port = parts.port or (443 if self.tls else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.host_header = parts.netloc.rpartition("@")[2]
        try:  # resolved once, through the tunnel's DNS: every path asks the same server
            infos = socket.getaddrinfo(self.host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UserError(f"{self.host}: {exc}") from None
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        self.address = infos[0][4][:2]
        self.devices, self.stall_s, self.log = devices, stall_s, log
        self.lock = threading.Lock()
        self.scheduler: RangeScheduler | None = None
        #: Each worker's open connection (path index -> connection), for :meth:`abort`.
        self.open: dict[int, _BoundConnection] = {}

    def abort(self, index: int) -> None:
        """Cut path ``index``'s transfer now: its worker's read fails and its range is handed on."""
        with self.lock:
            conn = self.open.get(index)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def connection(self, device: str | None) -> _BoundConnection:
        return _BoundConnection(self.address, self.host, device, self.stall_s, self.tls)

    def get(self, conn: _BoundConnection, first: int, last: int | None) -> http.client.HTTPResponse:
        span = f"bytes={first}-{'' if last is None else last}"
        conn.request("GET", self.target, headers={"Host": self.host_header, "Range": span,
                                                  "Accept-Encoding": "identity"})
        return conn.getresponse()

    def probe(self) -> int:
        """The file's size, asked with a one-byte range over the first path that answers.

        Raises:
            UserError: no path got an answer, or the server does not serve ranges.
        """
        errors = []
        for device in self.devices:
            conn = self.connection(device)
            try:
                response = self.get(conn, 0, 0)
                response.read()
                if response.status == 206:
                    match = _CONTENT_RANGE.match(response.getheader("Content-Range", ""))
                    if match and match.group(3) != "*":
                        return int(match.group(3))
                if response.status == 200:
                    raise UserError(f"{self.host} does not serve byte ranges (HTTP 200 to a Range request): "
                                    "the file cannot be split over paths")
                errors.append(f"{device or 'default route'}: HTTP {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{device or 'default route'}: {exc}")
            finally:
                conn.close()
        raise UserError("the server could not be asked for the file's size: " + "; ".join(errors))


def _worker(download: _Download, index: int, fd: int) -> None:
    """Path ``index``: take a range, pull it, write it; on failure give it back and rest."""
    device, scheduler, lock = download.devices[index], download.scheduler, download.lock
    name = device or "default route"
    conn: _BoundConnection | None = None
    while True:
        with lock:
            if scheduler.done:
                break
            span = scheduler.take(index, time.monotonic())
        if span is None:
            time.sleep(0.05)
            continue
        start, end = span
        try:
            if conn is None:
                conn = download.connection(device)
                with lock:
                    download.open[index] = conn
            response = download.get(conn, start, end - 1)
            if response.status != 206 or not (response.getheader("Content-Range", "").startswith(f"bytes {start}-")):
                raise http.client.HTTPException(f"HTTP {response.status} {response.getheader('Content-Range')}")
            offset, wanted = start, end - start
            while wanted > 0:
                chunk = response.read(min(CHUNK, wanted))
                if not chunk:
                    raise ConnectionError("the server closed the connection early")
                with lock:
                    keep, wanted = scheduler.received(index, len(chunk), time.monotonic())
                if keep:
                    os.pwrite(fd, chunk[:keep], offset)
                    offset += keep
            if offset < end or response.length:  # cut short by a take-over: the rest is unread
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as exc:
            if conn is not None:
                conn.close()
                conn = None
            with lock:
                back = scheduler.failed(index, time.monotonic())
            download.log(f"path {name}: {type(exc).__name__} {exc}".rstrip() + (
                f"; {back / 2**20:.1f} MiB handed to the other paths" if back else ""))
    if conn is not None:
        conn.close()


def _watch(download: _Download, alive: Callable[[], dict], stop: threading.Event) -> None:
    """Cut the transfer of every path the client says is not alive (see the module docstring)."""
    while not stop.wait(ALIVE_POLL_S):
        try:
            flags = alive()
        except Exception:  # noqa: BLE001 - the client is busy or gone: its paths' reads time out instead
            continue
        for index, device in enumerate(download.devices):
            if flags.get(device) is False:
                download.abort(index)


def _progress_line(download: _Download, started: float) -> str:
    scheduler = download.scheduler
    elapsed = max(time.monotonic() - started, 1e-6)
    stats = scheduler.stats()
    rates = ", ".join(f"{download.devices[i] or 'default'} {(s['rate'] or 0) * 8 / 1e6:.1f}" for i, s in stats.items())
    return (f"warren fetch: {scheduler.kept / 2**20:.1f}/{scheduler.size / 2**20:.1f} MiB "
            f"{100 * scheduler.kept / max(scheduler.size, 1):.0f}% {scheduler.kept * 8 / elapsed / 1e6:.1f} Mbit/s "
            f"[{rates} Mbit/s]")


def fetch(url: str, output: str | os.PathLike, devices: list[str | None], *, expected_sha256: str | None = None,
          stall_s: float = STALL_S, deadline_s: float | None = None, alive: Callable[[], dict] | None = None,
          log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> dict:
    """Download ``url`` into ``output`` over ``devices`` (one path each; None: the usual routes).

    ``alive``: asked every :data:`ALIVE_POLL_S`, ``{device: whether its path is alive}`` (the
    running client's view); a path said to be dead has its transfer cut at once.

    Returns:
        The summary: bytes, seconds, Mbit/s, SHA-256, whether it matched ``expected_sha256``, and per
        path its bytes, ranges and failures; ``requeued_bytes`` were handed from one path to others,
        ``handovers`` says when (Unix time) a failed or silent path's bytes went to the others.

    Raises:
        UserError: the URL, the server or the paths cannot serve the download, or ``deadline_s``
            passed first.
    """
    download = _Download(url, devices, stall_s=stall_s, log=log)
    started, started_at = time.monotonic(), time.time()
    size = download.probe()
    download.scheduler = RangeScheduler(size, range(len(devices)))
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    stop_watching = threading.Event()
    try:
        os.ftruncate(fd, size)
        workers = [threading.Thread(target=_worker, args=(download, i, fd), name=f"fetch-{i}", daemon=True)
                   for i in range(len(devices))]
        for worker in workers:
            worker.start()
        if alive is not None:
            threading.Thread(target=_watch, args=(download, alive, stop_watching), name="fetch-alive",
                             daemon=True).start()
        next_line = started + PROGRESS_S
        while any(w.is_alive() for w in workers):
            for worker in workers:
                worker.join(timeout=0.05)
            now = time.monotonic()
            if now >= next_line:
                next_line = now + PROGRESS_S
                with download.lock:
                    log(_progress_line(download, started))
            if deadline_s is not None and now - started > deadline_s:
                raise UserError(f"warren fetch: {download.scheduler.kept} of {size} bytes after {deadline_s} s")
    finally:
        stop_watching.set()
        os.close(fd)
    seconds = time.monotonic() - started
    digest = hashlib.sha256()
    with open(output, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    sha256 = digest.hexdigest()
    stats = download.scheduler.stats()
    summary = {"url": url, "file": str(output), "bytes": size, "seconds": round(seconds, 3),
               "mbps": round(size * 8 / seconds / 1e6, 2), "sha256": sha256,
               "sha256_ok": None if expected_sha256 is None else sha256 == expected_sha256.lower(),
               "requeued_bytes": download.scheduler.requeued, "started_at": round(started_at, 3),
               "handovers": [{"at": round(started_at + when - started, 3), "device": devices[path], "bytes": size_,
                              "why": why} for when, path, size_, why in download.scheduler.handovers],
               "paths": [{"device": devices[i], "bytes": s["bytes"], "ranges": s["ranges"], "failures": s["failures"]}
                         for i, s in stats.items()]}
    log(_progress_line(download, started))
    return summary
