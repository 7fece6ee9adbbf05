"""End to end: a node SIGKILLed mid-session, the chain stopped mid-session, and NAT traversal.

One lab world per module (as test_exit_e2e: an internet with web + DNS, nodes NL and DE public, FR
behind a port-restricted NAT, a client behind a home NAT), one plain anvil started with ``--state``
so that a restarted anvil keeps the chain. Nodes run with a huge settlement threshold, so only the
restart (Settler.recover) and shutdown (Settler.shutdown) paths settle. Checked from outside: the
node's SQLite store (the latest acknowledged receipt per channel: the node stores before it
acknowledges) against payment_channels' ``channel(id)``, and the store's settlement rows.

A second world (its own anvil and lab) puts the client behind a symmetric NAT: it reaches node_c
(port-restricted) only through node_a's relay.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time

import pytest

from agents.chain.connect import connect, load_contracts
from agents.netlab import Lab, NatType, can_build_namespaces
from agents.netlab.warren_net import client_config, client_status, deploy_chain, start_node, wait_for
from agents.netlab.world import build_world, run_in, spawn_in, start_anvil, warren_argv

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not can_build_namespaces(), reason="the lab builds network namespaces: root only")]

#: The served file: big enough for a slow download to span many receipts (one per MiB).
FILE_SIZE = 32 << 20
#: The relayed world's file: a relay grants 64 MiB per session (RelayLimits.max_bytes).
RELAY_FILE_SIZE = 8 << 20
#: Pace of the slow download (bytes/s): receipts flow for several seconds before we kill something.
SLOW_RATE = 3 << 20
#: Receipts (1 MiB each) the node must have acknowledged before the crash.
ACKED_BEFORE = 4 << 20

FETCH = """
import hashlib, sys, time, urllib.request
url, rate = sys.argv[1], int(sys.argv[2])
h, got, t0 = hashlib.sha256(), 0, time.monotonic()
with urllib.request.urlopen(url, timeout=60) as r:
    while True:
        chunk = r.read(1 << 16)
        if not chunk:
            break
        h.update(chunk); got += len(chunk)
        if rate:
            time.sleep(max(0.0, got / rate - (time.monotonic() - t0)))
print(h.hexdigest(), got, round(time.monotonic() - t0, 3), flush=True)
"""


class _Chain:
    """anvil with ``--state FILE`` on a fixed port: stop() dumps the state, start() loads it."""

    def __init__(self, stack: contextlib.ExitStack, state) -> None:
        self.stack, self.state, self.anvil = stack, state, None

    def start(self):
        port = self.anvil.port if self.anvil else None
        self.anvil = self.stack.enter_context(start_anvil(port, "--state", str(self.state)))
        return self.anvil

    def stop(self) -> None:
        self.anvil.stop()  # SIGTERM: anvil dumps its state to the file on exit


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("resilience")
    with contextlib.ExitStack() as stack:
        chain_proc = _Chain(stack, workdir / "anvil-state.json")
        anvil = chain_proc.start()
        lab = stack.enter_context(Lab(prefix="wres"))
        chain = deploy_chain(anvil.url, workdir)
        world = build_world(lab, chain_port=anvil.port, file_size=FILE_SIZE, client_nat=NatType.PORT_RESTRICTED)
        nodes = {"node_a": start_node(world, chain, world.node_a, workdir)}
        for name in ("node_b", "node_c"):
            nodes[name] = start_node(world, chain, getattr(world, name), workdir, bootstrap=world.node_a)
        yield {"anvil": chain_proc, "lab": lab, "world": world, "chain": chain, "nodes": nodes, "workdir": workdir}


# -- helpers ----------------------------------------------------------------------------------------

def _connect(world, chain, workdir, node_id: str, bootstrap):
    config = client_config(world, chain, workdir, bootstrap)
    log_path = workdir / "client" / "client.log"
    proc = spawn_in(world.client, warren_argv("connect", "--config", str(config), "--node", node_id),
                    stdout=open(log_path, "ab"), stderr=open(log_path, "ab"))

    def connected():
        if proc.poll() is not None:
            raise AssertionError(log_path.read_text()[-4000:])
        status = client_status(world, config)
        return status if status.get("connected") else None

    status = wait_for(connected, 120, interval=0.5, what="client connected")
    assert status["node_id"] == node_id
    return proc, config, status


def _disconnect(world, config, proc) -> None:
    result = run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    proc.wait(timeout=30)


def _fetch(world, rate: int = 0, timeout: float = 180):
    result = run_in(world.client, ["python3", "-c", FETCH, world.file_url, str(rate)], timeout=timeout)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    digest, size, seconds = result.stdout.decode().split()
    return digest, int(size), float(seconds)


def _session(node, channel_id: str) -> dict | None:
    status = node.status() or {}
    return next((s for s in status.get("sessions", []) if s["channel_id"] == channel_id), None)


def _store(node):
    """The node's latest stored receipt per channel and its settlement rows (read with the node stopped)."""
    db = sqlite3.connect(f"file:{node.config.data_dir}/node.db?mode=ro", uri=True)
    try:
        latest = {bytes(cid): (int(nbytes), int(amount)) for cid, nbytes, amount in db.execute(
            "SELECT channel_id, cumulative_bytes, cumulative_amount FROM receipts WHERE id IN "
            "(SELECT max(id) FROM receipts GROUP BY channel_id)")}
        rows = [(bytes(cid), int(amount), status, tx) for cid, amount, status, tx in db.execute(
            "SELECT channel_id, amount, status, tx_hash FROM settlements ORDER BY id")]
    finally:
        db.close()
    return latest, rows


def _on_chain(chain, channel_id: bytes):
    with connect(chain.url) as project:
        return load_contracts(project, chain.deployment).channel(channel_id)


def _assert_settled_once(chain, node, channel_id: bytes) -> tuple[int, int]:
    latest, rows = _store(node)
    assert channel_id in latest, "the node stored no receipt of the channel"
    nbytes, amount = latest[channel_id]
    state = _on_chain(chain, channel_id)
    # Every acknowledged receipt is settled: the chain holds exactly the latest stored one.
    assert (state.settled, state.settled_bytes) == (amount, nbytes)
    confirmed = [a for cid, a, status, _ in rows if cid == channel_id and status == "confirmed"]
    # Nothing twice: one confirmed settlement per amount, the last of them the latest receipt.
    assert len(confirmed) == len(set(confirmed)) and confirmed[-1] == amount
    assert not [r for r in rows if r[0] == channel_id and r[2] == "pending"]
    return nbytes, amount


def _restart(net, name: str):
    world, chain, workdir = net["world"], net["chain"], net["workdir"]
    node = start_node(world, chain, getattr(world, name), workdir,
                      bootstrap=None if name == "node_a" else world.node_a)
    net["nodes"][name] = node
    return node


# -- crash and restart ----------------------------------------------------------------------------

def test_node_sigkilled_mid_download__restarted__acknowledged_receipts_settled_once(net):
    world, chain, workdir, node = net["world"], net["chain"], net["workdir"], net["nodes"]["node_a"]
    proc, config, status = _connect(world, chain, workdir, node.status()["node_id"], world.node_a)
    channel_hex = status["channel_id"]
    fetch = spawn_in(world.client, ["python3", "-c", FETCH, world.file_url, str(SLOW_RATE)])
    wait_for(lambda: (s := _session(node, channel_hex)) and s["paid_bytes"] >= ACKED_BEFORE and s,
             60, interval=0.2, what="several receipts acknowledged")
    assert fetch.poll() is None, "the download ended before the crash"
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait(timeout=10)
    fetch.kill()
    fetch.wait(timeout=10)
    latest, rows = _store(node)
    channel_id = bytes.fromhex(channel_hex)
    assert latest[channel_id][0] >= ACKED_BEFORE
    assert _on_chain(chain, channel_id).settled == 0  # the threshold is huge: nothing settled yet
    assert not [r for r in rows if r[0] == channel_id]

    restarted = _restart(net, "node_a")  # ready only after Settler.recover ran
    assert restarted.status()["settlement"]["settled"] == 1
    restarted.proc.send_signal(signal.SIGTERM)  # shutdown: nothing left to settle
    assert restarted.proc.wait(timeout=60) == 0
    nbytes, amount = _assert_settled_once(chain, restarted, channel_id)
    print(f"settled after a SIGKILL: {nbytes} bytes, {amount} token wei, once")
    _disconnect(world, config, proc)  # the node is gone: the client starts a unilateral close
    _restart(net, "node_a")
    # The close event changes nothing: still exactly one settlement of the latest amount.
    net["nodes"]["node_a"].proc.send_signal(signal.SIGTERM)
    assert net["nodes"]["node_a"].proc.wait(timeout=60) == 0
    assert _assert_settled_once(chain, net["nodes"]["node_a"], channel_id) == (nbytes, amount)
    _restart(net, "node_a")  # the relay and rendezvous of the NAT tests


def test_chain_down_mid_session__node_stopped_meanwhile__settles_once_chain_is_back(net):
    world, chain, workdir, node = net["world"], net["chain"], net["workdir"], net["nodes"]["node_b"]
    proc, config, status = _connect(world, chain, workdir, node.status()["node_id"], world.node_a)
    channel_hex = status["channel_id"]
    fetch = spawn_in(world.client, ["python3", "-c", FETCH, world.file_url, str(SLOW_RATE)])
    first = wait_for(lambda: (s := _session(node, channel_hex)) and s["paid_bytes"] >= ACKED_BEFORE and s,
                     60, interval=0.2, what="several receipts acknowledged")
    net["anvil"].stop()
    # Receipts keep flowing while the chain is down: the node checks and stores them itself.
    later = wait_for(lambda: (s := _session(node, channel_hex)) and s["paid_bytes"] >= first["paid_bytes"] + (2 << 20)
                     and s, 30, interval=0.2, what="receipts while the chain is down")
    fetch.kill()
    fetch.wait(timeout=10)
    node.proc.send_signal(signal.SIGTERM)  # shutdown settles, retrying while the chain is down
    wait_for(lambda: "chain unavailable" in node.log(), 30, what="a settlement try failing on the dead chain")
    time.sleep(2)
    assert node.proc.poll() is None, "the node gave up before the chain came back"
    net["anvil"].start()
    assert node.proc.wait(timeout=60) == 0
    nbytes, amount = _assert_settled_once(chain, node, bytes.fromhex(channel_hex))
    assert nbytes >= later["paid_bytes"]
    print(f"settled after the chain came back: {nbytes} bytes, {amount} token wei, once")
    _disconnect(world, config, proc)
    _restart(net, "node_b")


# -- NAT traversal ------------------------------------------------------------------------------

def test_client_behind_nat__node_behind_port_restricted_nat__punched_download_checksum_equal(net):
    world, chain, workdir, node = net["world"], net["chain"], net["workdir"], net["nodes"]["node_c"]
    proc, config, status = _connect(world, chain, workdir, node.status()["node_id"], world.node_a)
    # The punched path is node_c's NAT mapping: its router's public address, not a relay's loopback.
    assert status["endpoint"].startswith(world.node_c.public_address + ":"), status["endpoint"]
    digest, size, seconds = _fetch(world)
    assert (digest, size) == (world.file_sha256, FILE_SIZE)
    print(f"{FILE_SIZE >> 20} MiB through a punched path to node_c in {seconds} s "
          f"({FILE_SIZE * 8 / seconds / 1e6:.0f} Mbit/s)")
    _disconnect(world, config, proc)


def test_client_behind_symmetric_nat__node_behind_nat__relayed_download_checksum_equal(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("relay")
    with start_anvil() as anvil, Lab(prefix="wrel") as lab:
        chain = deploy_chain(anvil.url, workdir)
        world = build_world(lab, chain_port=anvil.port, file_size=RELAY_FILE_SIZE, client_nat=NatType.SYMMETRIC)
        start_node(world, chain, world.node_a, workdir)
        node_c = start_node(world, chain, world.node_c, workdir, bootstrap=world.node_a)
        proc, config, status = _connect(world, chain, workdir, node_c.status()["node_id"], world.node_a)
        # Punching fails from a symmetric NAT: WireGuard's endpoint is the relay bridge's loopback port.
        assert status["endpoint"].startswith("127.0.0.1:"), status["endpoint"]
        digest, size, seconds = _fetch(world)
        assert (digest, size) == (world.file_sha256, RELAY_FILE_SIZE)
        print(f"{RELAY_FILE_SIZE >> 20} MiB relayed through node_a to node_c in {seconds} s "
              f"({RELAY_FILE_SIZE * 8 / seconds / 1e6:.0f} Mbit/s)")
        _disconnect(world, config, proc)
