"""End to end: `warren connect --paths 3` and `warren fetch --paths 3` (issue 10, multipath).

One lab world, one anvil: three public exits of three operators, each uplink limited by ``tc`` to
the same :data:`RATE_MBIT` (well under what one Python client carries): node_a (NL), node_b (DE, the
rogue node of tests/e2e/rogue.py, which invoices twice what it carried) and node_d (NL, a fourth
operator); the client behind a port-restricted NAT. The client connects once with ``--paths 3`` and
the tests run in file order on that connection:

1. new connections are spread over the three paths (each carries some of 24 small downloads, every
   one correct: the per-path source NAT brings the replies back);
2. `warren fetch --paths 3` beside `warren fetch --paths 1` (the first path only, same shaping):
   three paths finish in well under one path's time (both logged), the checksums equal, and the
   client's uplink carries only WireGuard (and overlay) UDP to the three exits meanwhile;
3. an exit is SIGKILLed mid-download: its ranges are pulled again over the other paths, the file is
   complete and correct, and the dead path draws no new connections;
4. disconnect: each path's channel settles no more than its own last signed receipt (the rogue
   node's included, whose invoices the client refused to pay beyond its own count), and nothing of
   the connection is left on the client.
"""

import ast
import hashlib
import json
import re
import sys
import time

import pytest

from agents.chain.connect import connect, load_contracts
from agents.chain.deploy import TOKEN
from agents.client.paths import CONTROL_TABLE_BASE, PATH_TABLE_BASE, SPREAD_V4
from agents.netlab import Lab, NatType, can_build_namespaces
from agents.netlab.capture import PacketCapture
from agents.netlab.warren_net import (
    NodeProcess,
    add_public_node,
    client_config,
    client_status,
    deploy_chain,
    start_client,
    start_node,
    wait_for,
)
from agents.netlab.world import build_world, run_in, spawn_in, start_anvil, warren_argv
from agents.wallet import AccountSpec

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not can_build_namespaces(), reason="the lab builds network namespaces: root only")]

FILE_SIZE = 24 << 20
#: Each exit's uplink (Mbit/s): three of them are well within one Python client's reach.
RATE_MBIT = 24
#: node_d's operator (anvil funds test accounts 0-9 with ether; 3-6 are the world's nodes and client).
NODE_D_ACCOUNT = 7
ROGUE = "tests/e2e/rogue.py"
#: The nodes' credit (start_node's default): a client pays at most this far ahead of its own count,
#: whatever a node invoices (agents.client.session.ClientMeter).
NODE_CREDIT = 16 << 20
#: Spread check: this many connections, each fetching SMALL bytes of the file.
FLOWS, SMALL = 24, 256 << 10

#: In the client's namespace: FLOWS connections (not bound to any path), each a Range request for the
#: first SMALL bytes; prints the SHA-256 of each body, one per line.
SPREAD = """
import hashlib, http.client, sys
host, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(count):
    conn = http.client.HTTPConnection(host, 80, timeout=20)
    conn.request("GET", "/blob.bin", headers={"Range": f"bytes=0-{size - 1}"})
    print(hashlib.sha256(conn.getresponse().read()).hexdigest(), flush=True)
    conn.close()
"""


def _start_rogue(world, chain, host, workdir) -> NodeProcess:
    """`warren node run` with rogue.py's over-claiming agent, on the config start_node wrote (started
    honest once, so that it is registered and its config written as every node's is)."""
    honest = start_node(world, chain, host, workdir, bootstrap=world.node_a)
    world.lab.stop(honest.proc)
    handle = open(honest.log_path, "ab")
    proc = spawn_in(host.ns, [sys.executable, ROGUE, "node", "--config", str(honest.config_path)],
                    stdout=handle, stderr=handle)
    node = NodeProcess(host, honest.config_path, honest.config, proc, honest.log_path)
    wait_for(lambda: node.status() or proc.poll() is not None, 90, what=f"rogue {host.name} ready")
    assert proc.poll() is None, node.log()[-4000:]
    return node


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("paths")
    with start_anvil() as anvil, Lab(prefix="wmpa") as lab:
        chain = deploy_chain(anvil.url, workdir)
        world = build_world(lab, chain_port=anvil.port, file_size=FILE_SIZE, nat_node=False,
                            client_nat=NatType.PORT_RESTRICTED)
        with connect(chain.url) as project:
            from ape import accounts

            contracts = load_contracts(project, chain.deployment)
            contracts.token.mint(accounts.test_accounts[NODE_D_ACCOUNT], 1_000 * TOKEN, sender=accounts.test_accounts[0])
        nodes = {"node_a": start_node(world, chain, world.node_a, workdir)}
        nodes["node_b"] = _start_rogue(world, chain, world.node_b, workdir)
        nodes["node_d"] = start_node(world, chain, add_public_node(world, "node_d", "NL"), workdir,
                                     bootstrap=world.node_a, operator=AccountSpec(test_account=NODE_D_ACCOUNT))
        for node in nodes.values():
            node.host.ns.shape("eth0", rate_mbit=RATE_MBIT)
        config = client_config(world, chain, workdir, world.node_a)
        proc, status = start_client(world, config, "--paths", "3", log_path=workdir / "client.log",
                                    ready=lambda s: len(s.get("paths", [])) == 3 and all(p["alive"] for p in s["paths"]))
        try:
            yield {"world": world, "chain": chain, "nodes": nodes, "workdir": workdir, "config": config, "proc": proc,
                   "status": status, "names": {n.status()["node_id"]: name for name, n in nodes.items()}}
        finally:
            if proc.poll() is None:
                run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)
                proc.wait(timeout=30)


def _bytes_by_path(net) -> list[int]:
    return [p.get("own_bytes", 0) for p in client_status(net["world"], net["config"])["paths"]]


def test_connect_paths__three_operators__new_connections_spread_over_all_three(net):
    status, names = net["status"], net["names"]
    paths = status["paths"]
    assert sorted(names[p["node_id"]] for p in paths) == ["node_a", "node_b", "node_d"]
    assert [p["tun"] for p in paths] == ["wrnc0", "wrnc0p1", "wrnc0p2"]
    assert len({p["channel_id"] for p in paths}) == 3
    world = net["world"]
    before = _bytes_by_path(net)
    result = run_in(world.client, ["python3", "-c", SPREAD, "files.example", str(FLOWS), str(SMALL)], timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    with open(world.file_path, "rb") as handle:
        expected = hashlib.sha256(handle.read(SMALL)).hexdigest()
    assert result.stdout.decode().split() == [expected] * FLOWS
    time.sleep(0.5)
    grew = [after - b for after, b in zip(_bytes_by_path(net), before)]
    print(f"\n{FLOWS} connections of {SMALL >> 10} KiB: bytes per path {grew}")
    assert all(g >= SMALL for g in grew), grew

