"""The challenger's payload endpoint: serves ``/p/<seed>/<size>`` as that seed's payload.

    python -m agents.challenger.endpoint --listen 0.0.0.0:8080

Run on a host the challenger controls on the open internet (in the lab: the internet namespace), so
the payload crosses the node's exit like any download. The endpoint keeps nothing: the URL carries
the seed (fresh per challenge, sent only inside the tunnel, so the node sees it as it sees any
customer's URL: after it chose the exit path), and the bytes are regenerated on the fly.
"""

from __future__ import annotations

import argparse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from agents.challenger.payload import _NONCE, parse_payload_path

__all__ = ["serve"]

#: Bytes generated and written per send (256 KiB).
_CHUNK = 256 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"  # what a download server usually says; nothing marks a challenge

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        try:
            seed, size = parse_payload_path(self.path)
        except ValueError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        encryptor = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
        zeros = bytes(_CHUNK)
        left = size
        try:
            while left:
                take = min(_CHUNK, left)
                self.wfile.write(encryptor.update(zeros[:take]))
                left -= take
        except (BrokenPipeError, ConnectionResetError):
            return


def serve(host: str, port: int) -> ThreadingHTTPServer:
    """A started-to-be server (call ``serve_forever``) bound to ``host:port``."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve challenge payloads.")
    parser.add_argument("--listen", default="0.0.0.0:8080", help="HOST:PORT (default 0.0.0.0:8080)")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    server = serve(host.strip("[]") or "0.0.0.0", int(port))
    print(f"serving challenge payloads on {args.listen}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
