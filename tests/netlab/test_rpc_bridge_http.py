"""RpcBridge against a real anvil from inside a lab namespace; the lab HTTP server's GET/HEAD/Range.

The bridge tests run JSON-RPC from a separate process inside the namespace (``ip netns exec``), so
they exercise exactly what a `warren node run` there would see at ``http://127.0.0.1:8545``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.netlab import Lab, RpcBridge, can_build_namespaces, make_random_file
from agents.netlab.rpc_bridge import MAX_CONNECTIONS
from agents.netlab.world import ANVIL_CHAIN_ID, run_in, spawn_in, start_anvil

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not can_build_namespaces(), reason="network namespaces need root (CI runs as root)"),
]

#: Bytes of the served file: more than one send chunk (1 MiB), so ranges cross chunk borders.
FILE_SIZE = (1 << 20) + 12_345
#: JSON-RPC requests made at once from inside the namespace.
CONCURRENT = 16
#: Requests in all (one connection each): more than the bridge's slots, so leaked slots would show.
TOTAL = MAX_CONNECTIONS + 16

#: A process inside the namespace: N eth_chainId calls, W at once, prints the answers.
_CONCURRENT_CLIENT = """
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
url, n, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def call(i):
    body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())
with ThreadPoolExecutor(w) as pool:
    print(json.dumps(list(pool.map(call, range(n)))))
"""


@pytest.fixture(scope="module")
def anvil():
    with start_anvil() as chain:
        yield chain


@pytest.fixture
def lab():
    with Lab() as lab:
        yield lab


def _connects(ns, address: str, port: int) -> bool:
    with ns.enter():
        sock = socket.socket()
    with sock:
        sock.settimeout(1.0)
        return sock.connect_ex((address, port)) == 0


def test_bridge__concurrent_chain_id_from_namespace__all_answered_by_anvil(lab, anvil):
    host = lab.add_host("chain-user")
    with RpcBridge(host.name, ("127.0.0.1", anvil.port)) as bridge:
        assert bridge.url == "http://127.0.0.1:8545"
        result = run_in(host, [sys.executable, "-c", _CONCURRENT_CLIENT, bridge.url, str(TOTAL),
                               str(CONCURRENT)], timeout=60, check=True)
    answers = json.loads(result.stdout)
    assert sorted(a["id"] for a in answers) == list(range(TOTAL))
    assert {int(a["result"], 16) for a in answers} == {ANVIL_CHAIN_ID}


def test_bridge__namespace_has_no_route_out__chain_reached_only_through_bridge(lab, anvil):
    host = lab.add_host("isolated")
    assert not _connects(host, "127.0.0.1", anvil.port)  # the namespace's own loopback has no anvil
    with RpcBridge(host.name, ("127.0.0.1", anvil.port), ("127.0.0.1", anvil.port)):
        assert _connects(host, "127.0.0.1", anvil.port)


def test_bridge__close__port_freed_and_rebindable(lab, anvil):
    host = lab.add_host("rebind")
    bridge = RpcBridge(host.name, ("127.0.0.1", anvil.port))
    # A connection in flight when the bridge closes is cut, not left hanging.
    with host.enter():
        held = socket.create_connection(("127.0.0.1", 8545), timeout=2)
    time.sleep(0.3)  # the accept loop polls every 0.2 s
    bridge.close()
    with held:
        held.settimeout(2)
        assert held.recv(1) == b""
    assert not _connects(host, "127.0.0.1", 8545)
    with RpcBridge(host.name, ("127.0.0.1", anvil.port)) as again:
        result = run_in(host, [sys.executable, "-c", _CONCURRENT_CLIENT, again.url, "1", "1"], timeout=30,
                        check=True)
        assert int(json.loads(result.stdout)[0]["result"], 16) == ANVIL_CHAIN_ID


def test_bridge__chain_down__connection_closed_bridge_survives(lab):
    host = lab.add_host("nochain")
    with socket.socket() as probe:  # a port with nothing behind it
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with RpcBridge(host.name, ("127.0.0.1", dead_port)) as bridge:
        for _ in range(2):
            with host.enter():
                sock = socket.create_connection(("127.0.0.1", 8545), timeout=2)
            with sock:
                sock.settimeout(3)
                assert sock.recv(1) == b""
        assert bridge._thread.is_alive()


# -- http_server ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """The server in its own namespace; yields (namespace, address, port, file bytes)."""
    path = Path(tmp_path_factory.mktemp("http")) / "f.bin"
    digest = make_random_file(path, FILE_SIZE)
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest
    with Lab() as lab:
        internet = lab.add_internet()
        server, user = lab.add_host("web"), lab.add_host("user")
        address = internet.attach(server)
        internet.attach(user)
        proc = spawn_in(server, [sys.executable, "-m", "agents.netlab.http_server", "--bind", address,
                                 "--port", "80", "--file", f"f.bin={path}"],
                        stderr=subprocess.PIPE)
        assert lab.wait_for(lambda: _connects(user, address, 80) or proc.poll() is not None, 10)
        assert proc.poll() is None, proc.stderr.read().decode()
        yield user, address, data


def _request(web, method: str, path: str = "/f.bin", headers: dict | None = None):
    user, address, _ = web
    with user.enter():
        conn = http.client.HTTPConnection(address, 80, timeout=10)
        conn.connect()
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_http__get_whole_file__sha256_equal(web):
    status, headers, body = _request(web, "GET")
    assert status == 200
    assert headers["Accept-Ranges"] == "bytes"
    assert int(headers["Content-Length"]) == FILE_SIZE
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(web[2]).hexdigest()


def test_http__byte_range__206_with_content_range(web):
    start, end = (1 << 20) - 10, (1 << 20) + 9  # crosses the server's 1 MiB send chunk
    status, headers, body = _request(web, "GET", headers={"Range": f"bytes={start}-{end}"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {start}-{end}/{FILE_SIZE}"
    assert body == web[2][start:end + 1]


def test_http__open_ended_and_past_end_ranges__clipped_to_file(web):
    status, headers, body = _request(web, "GET", headers={"Range": f"bytes={FILE_SIZE - 5}-"})
    assert (status, body) == (206, web[2][-5:])
    status, headers, body = _request(web, "GET", headers={"Range": f"bytes=10-{FILE_SIZE * 2}"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes 10-{FILE_SIZE - 1}/{FILE_SIZE}"
    assert body == web[2][10:]


def test_http__suffix_range__last_bytes(web):
    status, headers, body = _request(web, "GET", headers={"Range": "bytes=-100"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {FILE_SIZE - 100}-{FILE_SIZE - 1}/{FILE_SIZE}"
    assert body == web[2][-100:]


@pytest.mark.parametrize("spec", [f"bytes={FILE_SIZE}-", f"bytes={FILE_SIZE + 10}-{FILE_SIZE + 20}",
                                  "bytes=20-10", "bytes=-0"])
def test_http__unsatisfiable_range__416_with_size(web, spec):
    status, headers, body = _request(web, "GET", headers={"Range": spec})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{FILE_SIZE}"
    assert body == b""


@pytest.mark.parametrize("spec", ["items=0-9", "bytes=0-1,5-6"])
def test_http__other_unit_or_several_ranges__ignored_whole_file(web, spec):
    status, headers, body = _request(web, "GET", headers={"Range": spec})
    assert status == 200
    assert "Content-Range" not in headers
    assert body == web[2]


def test_http__malformed_byte_range__416(web):
    status, _, _ = _request(web, "GET", headers={"Range": "bytes=x-y"})
    assert status == 416


def test_http__head__headers_without_body(web):
    status, headers, body = _request(web, "HEAD")
    assert status == 200
    assert int(headers["Content-Length"]) == FILE_SIZE
    assert body == b""
    status, headers, _ = _request(web, "HEAD", headers={"Range": "bytes=0-9"})
    assert (status, headers["Content-Range"]) == (206, f"bytes 0-9/{FILE_SIZE}")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_http__unknown_name__404(web, method):
    status, _, _ = _request(web, method, "/nothing-here")
    assert status == 404


def test_http__keep_alive__two_requests_on_one_connection(web):
    user, address, data = web
    with user.enter():
        conn = http.client.HTTPConnection(address, 80, timeout=10)
        conn.connect()
    with contextlib.closing(conn):
        for spec, want in (("bytes=0-3", data[:4]), ("bytes=-4", data[-4:])):
            conn.request("GET", "/f.bin", headers={"Range": spec})
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (206, want)
