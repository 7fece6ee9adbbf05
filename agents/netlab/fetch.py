"""A resumable HTTP download, as a patient user's download manager does it.

    python -m agents.netlab.fetch URL [--stall-s 1.0] [--deadline-s 120] [--rate-mbit R]

It reads the body in chunks; when a read stalls or the connection breaks (an exit died under it) it
reconnects and continues with ``Range: bytes=<have>-``. It prints one JSON object: the SHA-256 of
everything received, the byte count, the seconds taken, and every interruption (when the last byte
before it arrived, when the first byte after it came, from which offset) so a caller can measure how
long a failover really cost a user. With ``--rate-mbit`` it reads no faster than that, as a user on a
home line would (a demo's download then lasts long enough for something to happen in the middle of it).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import socket
import sys
import time
import urllib.parse

__all__ = ["fetch", "main"]

#: Bytes per read.
CHUNK = 1 << 16


def fetch(url: str, *, stall_s: float = 1.0, deadline_s: float = 120.0, retry_s: float = 0.1,
          rate_bytes_per_s: float | None = None) -> dict:
    """Download ``url`` completely, resuming after stalls; see the module docstring.

    ``rate_bytes_per_s`` (None: as fast as the path allows) paces the reads: after each chunk the
    reader sleeps the time that chunk takes at that rate.

    Raises:
        TimeoutError: not complete within ``deadline_s``.
    """
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    path = parts.path or "/"
    digest, have, total = hashlib.sha256(), 0, None
    start = time.monotonic()
    deadline = start + deadline_s
    interruptions: list[dict] = []
    last_byte = start
    while total is None or have < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{have} of {total} bytes after {deadline_s} s")
        connection = http.client.HTTPConnection(host, port, timeout=stall_s)
        try:
            headers = {"Range": f"bytes={have}-"} if have else {}
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            if response.status not in (200, 206):
                raise OSError(f"HTTP {response.status}")
            if response.status == 200 and have:
                raise OSError("the server ignored the Range request")
            if total is None:
                length = int(response.getheader("Content-Length"))
                total = have + length
            resumed = bool(interruptions) and interruptions[-1].get("resumed_at") is None
            while have < total:
                chunk = response.read(min(CHUNK, total - have))
                if not chunk:
                    raise OSError("connection closed early")
                now = time.monotonic()
                if resumed:
                    interruptions[-1]["resumed_at"] = round(now - start, 3)
                    interruptions[-1]["gap_s"] = round(now - interruptions[-1]["last_byte_at_abs"], 3)
                    resumed = False
                digest.update(chunk)
                have += len(chunk)
                last_byte = now
                if rate_bytes_per_s:
                    time.sleep(len(chunk) / rate_bytes_per_s)
        except (OSError, socket.timeout, http.client.HTTPException) as exc:
            if not interruptions or interruptions[-1].get("resumed_at") is not None:
                interruptions.append({"at_byte": have, "last_byte_at": round(last_byte - start, 3),
                                      "last_byte_at_abs": last_byte, "resumed_at": None,
                                      "error": type(exc).__name__})
            time.sleep(retry_s)
        finally:
            connection.close()
    for item in interruptions:
        item.pop("last_byte_at_abs", None)
    return {"sha256": digest.hexdigest(), "bytes": have, "seconds": round(time.monotonic() - start, 3),
            "interruptions": interruptions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--stall-s", type=float, default=1.0, help="a read waiting this long counts as a stall")
    parser.add_argument("--deadline-s", type=float, default=120.0, help="give up after this long")
    parser.add_argument("--rate-mbit", type=float, default=None, help="read no faster than this (Mbit/s)")
    args = parser.parse_args(argv)
    if args.rate_mbit is not None and args.rate_mbit <= 0:
        parser.error("--rate-mbit must be positive")
    rate = args.rate_mbit * 1e6 / 8 if args.rate_mbit else None
    try:
        print(json.dumps(fetch(args.url, stall_s=args.stall_s, deadline_s=args.deadline_s, rate_bytes_per_s=rate)),
              flush=True)
    except TimeoutError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
