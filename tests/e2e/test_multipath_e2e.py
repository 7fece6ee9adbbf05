"""End to end: `warren connect --paths 3` and `warren fetch --paths 3` (issue 10, multipath).

One lab world, one anvil: three exits of three operators, each uplink limited by ``tc`` to the same
:data:`RATE_MBIT` (well under what one Python client carries): node_a (NL), node_b (DE, the rogue
node of tests/e2e/rogue.py, which invoices twice what it carried) and node_c (FR) behind its
port-restricted NAT, priced higher so that it ranks last and is never the first path's exit (whose
tunnel socket the client's first discovery runs on); the client behind a port-restricted NAT. The
world has IPv6 too (agents.netlab.ipv6: the web server, the public nodes, node_c's home prefix).
The client connects once with ``--paths 3`` and the tests run in file order on that connection:

1. node_c's path reached it from its own socket (its own discovery punched through node_c's NAT);
   new connections are spread over the three paths (each carries some of 24 small downloads, every
   one correct: the per-path source NAT brings the replies back);
2. new IPv6 connections are spread too: the web server sees them arrive from more than one exit's
   address (and from nothing but the exits);
3. `warren fetch --paths 3` beside `warren fetch --paths 1` (the first path only, same shaping):
   three paths finish in well under one path's time (both logged), the checksums equal, every path
   carries a share, and the client's uplink carries only WireGuard (and overlay) UDP to the exits;
4. disconnect: each path's channel, node_c's included, settles exactly its own last signed receipt
   cooperatively (the rogue node's too, whose invoices the client refused to pay beyond its own
   count), and nothing of the connection is left on the client;
5. `warren connect --paths 3` again: node_c SIGKILLed mid-download has its ranges pulled again over
   the other paths, the file is complete and correct, and the dead path draws no new connections;
   then the client is SIGKILLed: the kill switch and the paths' routing stay until
   `warren disconnect` removes them from the state file.
"""

import ast
import collections
import hashlib
import json
import re
import sys
import time

import pytest

from agents.chain.connect import connect, load_contracts
from agents.client.paths import PATH_TABLE_BASE, SPREAD_V4
from agents.netlab import Lab, NatType, can_build_namespaces
from agents.netlab.capture import PacketCapture, describe, outgoing_by_kind
from agents.netlab.ipv6 import add_ipv6
from agents.netlab.warren_net import (
    PRICE_PER_GIB,
    NodeProcess,
    client_config,
    client_status,
    deploy_chain,
    start_client,
    start_node,
    wait_for,
    warren_fetch,
)
from agents.netlab.world import build_world, run_in, spawn_in, start_anvil, warren_argv

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not can_build_namespaces(), reason="the lab builds network namespaces: root only")]

FILE_SIZE = 24 << 20
#: Each exit's uplink (Mbit/s): three of them are well within one Python client's reach.
RATE_MBIT = 24
#: node_c's price (token wei per GiB): twice the others', so the client ranks it last and node_c is
#: a later path's exit, reached from that path's own socket.
NODE_C_PRICE = 2 * PRICE_PER_GIB
ROGUE = "tests/e2e/rogue.py"
#: The nodes' credit (start_node's default): a client pays at most this far ahead of its own count,
#: whatever a node invoices (agents.client.session.ClientMeter).
NODE_CREDIT = 16 << 20
#: The rogue node's credit: small, so that its double invoices pass what the client will pay (its own
#: count plus this) within the few MiB it carries before the disconnect test.
ROGUE_CREDIT = 4 << 20
#: Spread check: this many connections, each fetching SMALL bytes of the file.
FLOWS, SMALL = 24, 256 << 10
#: IPv6 spread check: this many connections of SMALL_V6 bytes.
FLOWS_V6, SMALL_V6 = 24, 64 << 10

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
    honest = start_node(world, chain, host, workdir, bootstrap=world.node_a, credit_bytes=ROGUE_CREDIT)
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
        world = build_world(lab, chain_port=anvil.port, file_size=FILE_SIZE, client_nat=NatType.PORT_RESTRICTED)
        nodes = {"node_a": start_node(world, chain, world.node_a, workdir)}
        nodes["node_b"] = _start_rogue(world, chain, world.node_b, workdir)
        nodes["node_c"] = start_node(world, chain, world.node_c, workdir, bootstrap=world.node_a,
                                     extra={"price_per_gib": NODE_C_PRICE})
        for node in nodes.values():
            node.host.ns.shape("eth0", rate_mbit=RATE_MBIT)
        v6 = add_ipv6(world, [node.host for node in nodes.values()])
        config = client_config(world, chain, workdir, world.node_a)
        proc, status = start_client(world, config, "--paths", "3", log_path=workdir / "client.log",
                                    ready=lambda s: len(s.get("paths", [])) == 3 and all(p["alive"] for p in s["paths"]))
        try:
            yield {"world": world, "chain": chain, "nodes": nodes, "workdir": workdir, "config": config, "proc": proc,
                   "status": status, "v6": v6, "names": {n.status()["node_id"]: name for name, n in nodes.items()}}
        finally:
            if proc.poll() is None:
                run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)
                proc.wait(timeout=30)


def _killswitch_set(world, name: str) -> list:
    """The elements of one set of the client's kill switch table, as `nft -j` gives them."""
    listed = json.loads(run_in(world.client, ["nft", "-j", "list", "set", "inet", "warren_client", name],
                               check=True).stdout)
    return next(item["set"] for item in listed["nftables"] if "set" in item).get("elem", [])


def _bytes_by_path(net) -> list[int]:
    return [p.get("own_bytes", 0) for p in client_status(net["world"], net["config"])["paths"]]


def test_connect_paths__three_operators__new_connections_spread_over_all_three(net):
    status, names = net["status"], net["names"]
    paths = status["paths"]
    assert sorted(names[p["node_id"]] for p in paths) == ["node_a", "node_b", "node_c"]
    # node_c (behind its NAT) is a later path's exit, reached by that path's own discovery
    nat_path = next(p for p in paths if names[p["node_id"]] == "node_c")
    assert nat_path["index"] > 0
    log = (net["workdir"] / "client.log").read_text(errors="replace")
    assert re.search(rf"path {nat_path['index']}: node {nat_path['node_id'][:12]} reached (direct|relay) ", log), \
        log[-3000:]
    # the kill switch is strict again once the paths looked: no port open to any address, and WireGuard
    # (and the overlay) let out only to the three exits' public addresses (node_c's: its NAT router's)
    world = net["world"]
    assert _killswitch_set(world, "open_ports") == []
    assert {e["concat"][0] for e in _killswitch_set(world, "endpoints4")} == {
        n.host.public_address for n in net["nodes"].values()}
    assert [p["tun"] for p in paths] == ["wrnc0", "wrnc0p1", "wrnc0p2"]
    assert len({p["channel_id"] for p in paths}) == 3
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


def test_connect_paths__ipv6__new_connections_leave_through_more_than_one_exit(net):
    """New IPv6 connections are spread as IPv4 ones are: the web server sees them come from the
    exits' own IPv6 addresses (each masquerades its clients), from more than one of them."""
    world, v6 = net["world"], net["v6"]
    with PacketCapture(world.web.name, v6.web_ifname) as capture:
        result = run_in(world.client, ["python3", "-c", SPREAD, v6.web, str(FLOWS_V6), str(SMALL_V6)], timeout=120)
        frames = capture.snapshot()
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    with open(world.file_path, "rb") as handle:
        expected = hashlib.sha256(handle.read(SMALL_V6)).hexdigest()
    assert result.stdout.decode().split() == [expected] * FLOWS_V6
    # each connection's request, by who sent it (a retransmitted request would count twice)
    requests = [f.src for f in frames if f.kind == "ipv6" and f.proto == "tcp" and f.dst == v6.web
                and f.dport == 80 and f.head.startswith(b"GET ")]
    by_exit = dict(collections.Counter(v6.exit_of(source) or source for source in requests))
    print(f"\n{FLOWS_V6} IPv6 connections, requests as the web server saw them: {by_exit}")
    assert len(requests) >= FLOWS_V6, by_exit
    assert set(by_exit) <= set(v6.nodes), by_exit  # nothing but the exits' own addresses
    assert len(by_exit) >= 2, by_exit


def _uplink_leaks(frames, exits: set) -> tuple[list, dict]:
    """Outgoing frames of the client's uplink that are not UDP to an exit (WireGuard, or the overlay's
    own messages on the same socket), nor ARP/ND; and a count of what was seen, by class."""
    return outgoing_by_kind(frames, lambda f: ("wireguard" if f.wireguard else "overlay")
                            if f.proto == "udp" and f.dst in exits else None)


def test_fetch__three_paths_beside_one__well_under_one_paths_time__uplink_only_wireguard(net):
    world = net["world"]
    exits = {n.host.public_address for n in net["nodes"].values()}
    with PacketCapture(world.client.name, "eth0") as capture:
        one, _ = warren_fetch(world, net["config"], 1, net["workdir"] / "one.bin")
        three, _ = warren_fetch(world, net["config"], 3, net["workdir"] / "three.bin")
        frames = capture.snapshot()
    print(f"\n{FILE_SIZE >> 20} MiB, exits shaped to {RATE_MBIT} Mbit/s each: one path {one['seconds']} s "
          f"({one['mbps']} Mbit/s), three paths {three['seconds']} s ({three['mbps']} Mbit/s), "
          f"ratio {three['seconds'] / one['seconds']:.2f}; bytes per path {[p['bytes'] for p in three['paths']]}")
    assert one["sha256"] == three["sha256"] == world.file_sha256 and one["sha256_ok"] and three["sha256_ok"]
    assert three["seconds"] < 0.6 * one["seconds"]
    assert all(p["bytes"] > FILE_SIZE // 6 for p in three["paths"]), three["paths"]
    leaks, seen = _uplink_leaks(frames, exits)
    print(f"client uplink during both downloads: {seen}")
    assert not leaks, describe(leaks)
    assert seen.get("wireguard", 0) > 100, seen


def test_disconnect__each_path_settles_exactly_its_own_receipts__nothing_left(net):
    world, chain, config, proc = net["world"], net["chain"], net["config"], net["proc"]
    last = client_status(world, config)["paths"]
    rogue = next(p for p in last if net["names"][p["node_id"]] == "node_b")
    log_start = (net["workdir"] / "client.log").stat().st_size
    result = run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    proc.wait(timeout=30)
    assert rogue["overclaim_bytes"] > 0 and rogue["invoiced_bytes"] > rogue["own_bytes"]  # it billed double
    log = (net["workdir"] / "client.log").read_text(errors="replace")[log_start:]
    final = ast.literal_eval(log.split("disconnected: ", 1)[1].splitlines()[0])["paths"]
    with connect(chain.url) as project:
        contracts = load_contracts(project, chain.deployment)
        settled = [contracts.channel(bytes.fromhex(p["channel_id"])) for p in last]
    lines = []
    for index, (path, closing, channel) in enumerate(zip(last, final, settled)):
        lines.append(f"path {index} ({net['names'][path['node_id']]}): own {closing['own_bytes']}, invoiced "
                     f"{closing['invoiced_bytes']}, signed {closing['paid_bytes']}, settled {channel.settled_bytes} "
                     f"({closing.get('closed')})")
        assert closing["own_bytes"] > 0  # every path carried bytes of its own
        credit = ROGUE_CREDIT if path is rogue else NODE_CREDIT
        assert closing["paid_bytes"] <= closing["own_bytes"] + credit  # what it counted, plus the credit
        # its own last receipt, cooperatively: node_c's (behind its NAT, a later path) too
        assert closing["closed"] == "cooperative" and channel.settled_bytes == closing["paid_bytes"]
    print("\n" + "\n".join(lines))
    rogue_final = final[rogue["index"]]
    assert rogue_final["paid_bytes"] < rogue_final["invoiced_bytes"]
    _assert_nothing_left(world)


def test_exit_killed_mid_download_then_client_killed__file_correct__kill_switch_holds_until_disconnect(net):
    """`warren connect --paths 3` again. node_c (behind its NAT, a later path) SIGKILLed mid-download:
    its ranges are pulled again over the other paths, the file is complete and correct, and its path
    draws no new connections. Then the client is SIGKILLed: its kill switch and routing stay (fail
    closed), and `warren disconnect` removes, from the state file, everything the paths added."""
    world, config, names = net["world"], net["config"], net["names"]
    proc, status = start_client(world, config, "--paths", "3", log_path=net["workdir"] / "client.log",
                                ready=lambda s: len(s.get("paths", [])) == 3 and all(p["alive"] for p in s["paths"]))
    victim = "node_c"
    victim_path = next(p for p in status["paths"] if names[p["node_id"]] == victim)
    assert victim_path["index"] > 0
    summary, killed_at = warren_fetch(world, config, 3, net["workdir"] / "killed.bin", kill=net["nodes"][victim].proc,
                                      timeout=90)
    assert killed_at is not None, "the download ended before the kill"
    handed = [h for h in summary["handovers"] if h["device"] == victim_path["tun"]]
    assert handed and summary["sha256"] == world.file_sha256 and summary["sha256_ok"]
    print(f"\n{victim} (path {victim_path['index']}, {victim_path['tun']}) SIGKILLed "
          f"{killed_at - summary['started_at']:.1f} s into the download: its range handed to the others "
          f"{handed[0]['at'] - killed_at:.1f} s after ({handed[0]['why']}), "
          f"done {summary['started_at'] + summary['seconds'] - killed_at:.1f} s after, "
          f"{summary['requeued_bytes'] / 2**20:.1f} MiB handed over; per path {summary['paths']}")
    # The dead path draws no new connection: its weight went to the others.
    after = wait_for(lambda: (s := client_status(world, config))["paths"][victim_path["index"]]["weight"] == 0
                     and s, 15, what="the dead path's weight moved")
    assert not after["paths"][victim_path["index"]]["alive"]
    assert sum(p["weight"] for p in after["paths"]) == 100
    proc.kill()
    proc.wait(timeout=10)
    assert "warren_client" in run_in(world.client, ["nft", "list", "tables"], check=True).stdout.decode()
    assert f"lookup {PATH_TABLE_BASE + 1}" in run_in(world.client, ["ip", "rule", "show"], check=True).stdout.decode()
    result = run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)
    assert result.returncode == 0 and '"undone": true' in result.stdout.decode(), result.stdout + result.stderr
    _assert_nothing_left(world)


def _assert_nothing_left(world) -> None:
    """No nftables table, rule, route table, spread address or TUN of the client's is left."""
    tables = run_in(world.client, ["nft", "list", "tables"], check=True).stdout.decode()
    assert "warren" not in tables, tables
    for family in ("-4", "-6"):
        rules = run_in(world.client, ["ip", family, "rule", "show"], check=True).stdout.decode()
        assert not re.search(r"\b518[2-4]\d\b", rules), rules  # wg-quick's, the paths' and their control tables
        routes = run_in(world.client, ["ip", family, "route", "show", "table", "all"], check=True).stdout.decode()
        assert not re.search(r"table 518[2-4]\d\b", routes), routes
    assert SPREAD_V4 not in run_in(world.client, ["ip", "addr", "show", "lo"], check=True).stdout.decode()
    links = run_in(world.client, ["ip", "-o", "link", "show"], check=True).stdout.decode()
    assert "wrnc0" not in links, links
