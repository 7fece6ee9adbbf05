"""A real HTTP/1.1 file server for the lab's "internet" namespace (GET, HEAD, single byte ranges).

    python -m agents.netlab.http_server --bind 198.51.100.10 --port 80 --file big.bin=/tmp/big.bin

The standard library's ThreadingHTTPServer does the HTTP; what it lacks is ``Range`` (needed for
resumed and multi-path downloads), added here for one ``bytes=a-b`` range per request.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["make_random_file", "serve"]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: Chunk size of file generation and of sending (bytes).
CHUNK = 1 << 20


def make_random_file(path: str | os.PathLike, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their SHA-256 (hex)."""
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(CHUNK, left))
            digest.update(chunk)
            handle.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, Path] = {}
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def _target(self) -> Path | None:
        path = self.files.get(self.path.lstrip("/").split("?")[0])
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
        return path

    def _headers(self, path: Path) -> tuple[int, int, int] | None:
        size = path.stat().st_size
        start, end = 0, size - 1
        header = self.headers.get("Range")
        status = HTTPStatus.OK
        if header and (not header.strip().startswith("bytes=") or "," in header):
            # RFC 9110 14.2: a Range of another unit MUST be ignored, and a server MAY ignore one
            # it does not serve (several ranges would need multipart/byteranges): send it all.
            header = None
        if header:
            match = _RANGE.match(header.strip())
            if not match or (not match.group(1) and not match.group(2)):
                self.send_error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                return None
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:  # suffix range: the last N bytes
                start = max(0, size - int(match.group(2)))
            if start > end or start >= size:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status is HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        return start, end, size

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        path = self._target()
        if path is not None:
            self._headers(path)

    def do_GET(self):  # noqa: N802
        path = self._target()
        if path is None:
            return
        span = self._headers(path)
        if span is None:
            return
        start, end, _ = span
        with open(path, "rb") as handle:
            handle.seek(start)
            left = end - start + 1
            try:
                while left:
                    chunk = handle.read(min(CHUNK, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return


def serve(bind: str, port: int, files: dict[str, Path]) -> ThreadingHTTPServer:
    """A server for ``files`` (URL name -> path); call ``serve_forever()`` on it."""
    handler = type("Handler", (_Handler,), {"files": dict(files)})
    family_server = type("Server", (ThreadingHTTPServer,), {"address_family": 10 if ":" in bind else 2,
                                                             "daemon_threads": True})
    return family_server((bind, port), handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--file", action="append", default=[], metavar="NAME=PATH")
    args = parser.parse_args(argv)
    files = {}
    for item in args.file:
        name, _, path = item.partition("=")
        files[name] = Path(path)
    serve(args.bind, args.port, files).serve_forever()


if __name__ == "__main__":
    main()
