"""agents.netlab.fetch against a real HTTP server on loopback: whole, checksummed, paced when asked."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time

import pytest

from agents.netlab.fetch import fetch, main

BODY = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the stdlib's name)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


@pytest.fixture
def url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/file"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_fetch__unpaced__whole_file_and_its_sha256(url):
    result = fetch(url, deadline_s=10)
    assert result["bytes"] == len(BODY)
    assert result["sha256"] == hashlib.sha256(BODY).hexdigest()
    assert result["interruptions"] == []


def test_fetch__paced__takes_at_least_size_over_rate(url):
    rate = 4 << 20  # bytes per second: 1 MiB takes >= 0.25 s
    began = time.monotonic()
    result = fetch(url, deadline_s=10, rate_bytes_per_s=rate)
    assert time.monotonic() - began >= len(BODY) / rate
    assert result["sha256"] == hashlib.sha256(BODY).hexdigest()


@pytest.mark.parametrize("rate", ["0", "-5"])
def test_main__rate_not_positive__refused_in_words(rate, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["http://127.0.0.1:9/x", "--rate-mbit", rate])
    assert exit_.value.code == 2
    assert "--rate-mbit must be positive" in capsys.readouterr().err
