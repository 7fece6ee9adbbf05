"""The e2e lab world (tests/e2e/world.py) works from the client's side and leaves nothing behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agents.netlab import Lab, NatType, can_build_namespaces
from agents.netlab.world import (ANVIL_CHAIN_ID, BLOCKED_NAME, FILES_NAME, build_world, dns_query, run_in,
                       start_anvil, warren_argv)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not can_build_namespaces(), reason="network namespaces need root (CI runs as root)"),
]

#: Served file size here: big enough for several TCP windows, small enough to stay fast.
FILE_SIZE = 2 << 20

#: Inside a namespace: GET a URL with urllib, print {"status", "sha256", "size"} as JSON.
_GET = """
import hashlib, json, sys, urllib.request
digest, size = hashlib.sha256(), 0
with urllib.request.urlopen(sys.argv[1], timeout=20) as resp:
    for chunk in iter(lambda: resp.read(1 << 16), b""):
        digest.update(chunk); size += len(chunk)
    print(json.dumps({"status": resp.status, "sha256": digest.hexdigest(), "size": size}))
"""

#: Inside a namespace: resolve a name with the libc resolver (getaddrinfo), print the addresses.
_RESOLVE = """
import json, socket, sys
print(json.dumps(sorted({ai[4][0] for ai in socket.getaddrinfo(sys.argv[1], 80, socket.AF_INET)})))
"""

#: Inside a namespace: eth_chainId at a URL.
_CHAIN_ID = """
import json, sys, urllib.request
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
req = urllib.request.Request(sys.argv[1], data=body, headers={"Content-Type": "application/json"})
print(int(json.loads(urllib.request.urlopen(req, timeout=10).read())["result"], 16))
"""


@pytest.fixture(scope="module")
def anvil():
    with start_anvil() as chain:
        yield chain


@pytest.fixture(scope="module")
def world(anvil):
    with Lab() as lab:
        yield build_world(lab, chain_port=anvil.port, file_size=FILE_SIZE)


def _py(ns, code: str, *args: str, timeout: float = 30):
    result = run_in(ns, [sys.executable, "-c", code, *args], timeout=timeout)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def test_world__client_gets_file_by_address__sha256_equal(world):
    got = _py(world.client, _GET, f"http://{world.web_address}/{world.file_name}")
    assert got == {"status": 200, "sha256": world.file_sha256, "size": FILE_SIZE}


def test_world__client_gets_file_by_name__resolved_through_lab_dns(world):
    got = _py(world.client, _GET, world.file_url)
    assert got["sha256"] == world.file_sha256


def test_world__libc_resolver_in_each_host__lab_zone_answers(world):
    for ns in (world.client, world.node_a.ns, world.node_c.ns):
        assert _py(ns, _RESOLVE, FILES_NAME) == [world.web_address]
    assert _py(world.client, _RESOLVE, BLOCKED_NAME) == [world.blocked_address]
    assert world.blocked_address != world.web_address


def test_world__dns_query_from_client__answers_zone_records(world):
    assert dns_query(world.client, world.dns_server, FILES_NAME) == [world.web_address]
    assert dns_query(world.client, world.dns_server, BLOCKED_NAME) == [world.blocked_address]


def test_world__blocked_host__serves_same_file(world):
    got = _py(world.node_a.ns, _GET, f"http://{BLOCKED_NAME}/{world.file_name}")
    assert got["sha256"] == world.file_sha256


def test_world__chain_id_via_bridge__in_every_host(world):
    assert world.rpc_url == "http://127.0.0.1:8545"
    for ns in world.hosts:
        assert _py(ns, _CHAIN_ID, world.rpc_url) == ANVIL_CHAIN_ID


def test_world__nodes__regions_and_nat_as_documented(world):
    assert [(n.name, n.region) for n in world.nodes] == [("node_a", "NL"), ("node_b", "DE"),
                                                       ("node_c", "FR")]
    a, c = world.node_a, world.node_c
    assert a.nat is None and a.public_address == a.address
    assert c.nat is not None and c.nat.nat_type is NatType.PORT_RESTRICTED
    assert c.public_address == c.nat.public_address != c.address
    # node_c reaches the internet through its NAT; the internet cannot open a connection to it,
    # though it listens on every address (a home host without port forwarding).
    assert _py(c.ns, _GET, world.file_url)["sha256"] == world.file_sha256
    with c.ns.enter():
        listener = socket.create_server(("0.0.0.0", 0))
    with listener:
        port = listener.getsockname()[1]
        with c.ns.enter(), socket.create_connection((c.address, port), timeout=2):
            pass  # it does listen
        for target in (c.public_address, c.address):
            with a.ns.enter():
                probe = socket.socket()
            with probe:
                probe.settimeout(1.0)
                assert probe.connect_ex((target, port)) != 0, target


def test_world__every_namespace__loopback_up(world):
    for ns in world.lab.namespaces:
        flags = ns.ip("-j", "link", "show", "lo").stdout
        assert "UP" in json.loads(flags)[0]["flags"], ns.short


def test_world__warren_argv__runs_the_cli_from_repo_root(world):
    result = run_in(world.client, warren_argv("--help"), timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert b"usage" in result.stdout.lower()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (our Popen reaps it); only a running process counts.
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def test_world__lab_close__no_namespace_process_file_or_port_left(anvil):
    lab = Lab()
    try:
        world = build_world(lab, chain_port=anvil.port, file_size=1 << 16, nat_node=True,
                            client_nat=NatType.SYMMETRIC)
        assert _py(world.client, _GET, world.file_url)["sha256"] == world.file_sha256
        names = [ns.name for ns in lab.namespaces]
        pids = [proc.pid for proc in world.servers.values()]
        etc = [Path("/etc/netns") / ns.name for ns in world.hosts]
        assert all(p.joinpath("resolv.conf").is_file() for p in etc)
        assert all(_alive(pid) for pid in pids)
        bridges = list(world.bridges.values())
    finally:
        lab.close()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [name for name in names if name in listed]
    assert not [pid for pid in pids if _alive(pid)]
    assert not [p for p in etc if p.exists()]
    assert not world.workdir.exists()
    assert all(bridge._listener.fileno() == -1 for bridge in bridges)
