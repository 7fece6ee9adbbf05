"""End to end: `warren connect --hops 2`: the exit's tunnel inside a tunnel to a relay node.

One lab world (as tests/e2e/test_exit_e2e.py: nodes NL = node_a, DE = node_b, FR = node_c behind a NAT,
three operators; the client behind a home NAT), one anvil. The client connects with ``--node node_a
--relay-region DE``: exit node_a, relay node_b. The tests run in file order on that one connection:

1. a download through both hops while the relay's and the exit's uplinks are captured whole: the
   file's checksum matches; at the exit every datagram of the session comes from the relay's address
   and nothing from the client's; at the relay no 16-byte piece of the file appears (the same search
   finds them on the exit's uplink, where the HTTP is clear) and no packet names the web server;
2. a relay that rewrites the datagrams it forwards and injects forged ones (an nftables rule and a
   raw socket in node_b's namespace) gets nothing out of the exit's TUN; once it stops, the same
   tunnel carries a download again;
3. disconnect: both channels close cooperatively, each node paid at least for what it carried (the
   exit the inner bytes, the relay the outer ones, which include the exit's WireGuard overhead);
4. failover of the exit hop (a fourth node, node_d, public in NL, is the standby exit): the exit is
   SIGKILLed mid-download, the exit hop moves through the same relay session, the relay hop stays;
5. failover of the relay hop: the relay is SIGKILLed, the relay hop moves to the standby relay and
   the exit hop keeps its session. In both the client's uplink carries only WireGuard to relays.
"""

import os
import socket
import struct
import threading
import time

import pytest

from agents.chain.connect import connect, load_contracts
from agents.chain.deploy import TOKEN
from agents.client.hops import RELAY_CONTROL_TABLE
from agents.netlab import Lab, NatType, can_build_namespaces
from agents.netlab.capture import PacketCapture, RawCapture
from agents.netlab.nsenter import enter_namespace
from agents.netlab.warren_net import (
    WG_PORT,
    add_public_node,
    client_config,
    client_status,
    deploy_chain,
    fetch,
    start_node,
    start_nodes,
    wait_for,
)
from agents.netlab.world import build_world, run_in, spawn_in, start_anvil, warren_argv
from agents.wallet import AccountSpec

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not can_build_namespaces(), reason="the lab builds network namespaces: root only")]

FILE_SIZE = 16 << 20
#: node_d's operator (anvil funds test accounts 0-9 with ether; 3-6 are the world's nodes and client).
NODE_D_ACCOUNT = 7
#: Pieces of the file searched for in the captures (16 bytes each, spread over the file).
MARKERS = 64
MARKER_LEN = 16



def _markers(path) -> list[bytes]:
    data = path.read_bytes()
    step = len(data) // MARKERS
    return [data[i * step + 1000: i * step + 1000 + MARKER_LEN] for i in range(MARKERS)]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hops")
    with start_anvil() as anvil, Lab(prefix="whop") as lab:
        chain = deploy_chain(anvil.url, workdir)
        world = build_world(lab, chain_port=anvil.port, file_size=FILE_SIZE, client_nat=NatType.PORT_RESTRICTED)
        nodes = start_nodes(world, chain, workdir)
        # A second public exit in NL (its own operator), so the exit hop has a standby to move to.
        with connect(chain.url) as project:  # its operator: test account 7, funded as deploy_chain does
            from ape import accounts

            contracts = load_contracts(project, chain.deployment)
            contracts.token.mint(accounts.test_accounts[NODE_D_ACCOUNT], 1_000 * TOKEN, sender=accounts.test_accounts[0])
        nodes["node_d"] = start_node(world, chain, add_public_node(world, "node_d", "NL"), workdir,
                                     bootstrap=world.node_a, operator=AccountSpec(test_account=NODE_D_ACCOUNT))
        # The client's overlay gateway is the relay: it never needs to talk to the exit directly.
        config = client_config(world, chain, workdir, world.node_b)
        state = {"anvil": anvil, "world": world, "chain": chain, "nodes": nodes, "workdir": workdir,
                 "config": config, "fetched": 0, "exit": "node_a",
                 "names": {n.status()["node_id"]: name for name, n in nodes.items()}}
        proc, state["status"] = _connect(state, "--node", nodes["node_a"].status()["node_id"], "--relay-region", "DE")
        state["proc"] = proc
        try:
            yield state
        finally:
            if proc.poll() is None:
                run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)
                proc.wait(timeout=30)


def test_two_hops__exit_sees_only_the_relay__relay_sees_no_cleartext(net):
    world, nodes, status = net["world"], net["nodes"], net["status"]
    assert status["hops"] == 2
    assert status["node_id"] == nodes["node_a"].status()["node_id"]
    assert status["relay"]["node_id"] == nodes["node_b"].status()["node_id"]
    exit_ns, relay_ns = world.node_a.ns.name, world.node_b.ns.name
    client_public = world.client_nat.public_address
    relay_address, exit_address = world.node_b.address, world.node_a.address
    exit_parsed, relay_parsed = PacketCapture(exit_ns, "eth0").__enter__(), PacketCapture(relay_ns, "eth0").__enter__()
    exit_raw, relay_raw = RawCapture(exit_ns, "eth0").__enter__(), RawCapture(relay_ns, "eth0").__enter__()
    try:
        digest, size, seconds = fetch(world) or pytest.fail("the download through two hops failed")
    finally:
        exit_raw.stop()
        relay_raw.stop()
        exit_bytes, relay_bytes = exit_raw.joined(), relay_raw.joined()
        exit_parsed.stop()
        relay_parsed.stop()
    net["fetched"] += size
    assert (digest, size) == (world.file_sha256, FILE_SIZE)
    print(f"16 MiB through two hops in {seconds} s ({FILE_SIZE * 8 / seconds / 1e6:.0f} Mbit/s)")

    # The exit: WireGuard into its port comes from the relay, and nothing at all from the client.
    # (The other nodes' overlay messages to the same port are not WireGuard: the nodes' own business.)
    into_wg = [f for f in exit_parsed.frames if not f.outgoing and f.wireguard and f.dport == WG_PORT]
    assert len(into_wg) > 50, len(into_wg)  # the request and the TCP acks (coalesced: a few hundred)
    assert {f.src for f in into_wg} == {relay_address}
    assert not [f for f in exit_parsed.frames if client_public in (f.src, f.dst)]

    # The relay: only WireGuard between the client and itself, and on the flow it forwards to the
    # exit's port (masqueraded, so from another port than the relay's own socket, whose overlay
    # messages to the exit are the relay's business).
    def forwarded(f):
        if {f.src, f.dst} == {client_public, relay_address}:
            return True
        return {f.src, f.dst} == {relay_address, exit_address} and WG_PORT not in (
            f.sport if f.src == relay_address else f.dport,)

    traffic = [f for f in relay_parsed.frames if f.kind == "ipv4" and forwarded(f)]
    assert traffic and all(f.wireguard for f in traffic), [f for f in traffic if not f.wireguard][:3]
    assert not [f for f in relay_parsed.frames if world.web_address in (f.src, f.dst)]
    to_exit = [f for f in traffic if f.dst == exit_address]
    assert to_exit and {f.dport for f in to_exit} == {WG_PORT}

    # Cleartext: none of the file at the relay; the same search finds it at the exit (clear HTTP).
    markers = _markers(world.file_path)
    assert sum(m in exit_bytes for m in markers) >= MARKERS // 2
    assert [m for m in markers if m in relay_bytes] == []
    assert b"GET /" not in relay_bytes and world.web_address.encode() not in relay_bytes


#: The relay turns tamperer: every datagram it forwards to the exit's WireGuard port gets four bytes
#: of its ciphertext overwritten (the UDP checksum cleared so the kernel still delivers it).
TAMPER = """table inet hop_tamper {{
    chain post {{
        type filter hook postrouting priority 0; policy accept;
        ip daddr {exit} udp dport {port} @th,192,32 set 0x5a5a5a5a udp checksum set 0
    }}
}}
"""


def test_relay_rewriting_or_injecting__nothing_out_of_the_exit(net):
    world, nodes, status = net["world"], net["nodes"], net["status"]
    exit_ns, relay_ns = world.node_a.ns.name, world.node_b.ns.name
    exit_tun = nodes["node_a"].config.interface
    inner_v4 = status["tunnel_v4"]
    # A genuine datagram of this session on its way to the exit, to forge copies of (its receiver index).
    sniff = PacketCapture(relay_ns, "eth0").__enter__()
    net["fetched"] += (fetch(world) or pytest.fail("the download failed"))[1]
    sniff.stop()
    genuine = [f for f in sniff.frames if f.dst == world.node_a.address and f.wireguard and f.head[0] == 4]
    assert genuine
    receiver = genuine[-1].head[4:8]

    run_in(world.node_b.ns, ["nft", "-f", "-"], input=TAMPER.format(exit=world.node_a.address, port=WG_PORT).encode(),
           check=True, timeout=10)
    at_exit = PacketCapture(exit_ns, exit_tun).__enter__()
    try:
        # Forged transport messages with the live receiver index and fresh counters, from the relay.
        with enter_namespace(relay_ns):
            forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with forger:
            for counter in range(1 << 40, (1 << 40) + 200):
                forger.sendto(struct.pack("<I4sQ", 4, receiver, counter) + os.urandom(96),
                              (world.node_a.address, WG_PORT))
        assert fetch(world, read_timeout=2, timeout=20) is None  # the exit dropped every rewritten datagram
        time.sleep(0.5)
    finally:
        run_in(world.node_b.ns, ["nft", "delete", "table", "inet", "hop_tamper"], timeout=10)
        at_exit.stop()
    from_client = [f for f in at_exit.frames if not f.outgoing and f.src == inner_v4]
    assert from_client == [], from_client[:3]
    # The relay behaves again: the same two-hop connection carries the file (no reconnect needed).
    digest, size, _ = wait_for(lambda: fetch(world, read_timeout=10, timeout=40), 60, interval=1, what="download after tampering")
    net["fetched"] += size
    assert (digest, size) == (world.file_sha256, FILE_SIZE)
    assert client_status(world, net["config"])["relay"]["node_id"] == status["relay"]["node_id"]


def test_disconnect__both_nodes_settle_for_what_they_carried(net):
    world, chain, config, proc = net["world"], net["chain"], net["config"], net["proc"]
    live = wait_for(lambda: (s := client_status(world, config)).get("paid_bytes", 0) >= net["fetched"] and s,
                    30, what="receipts to the exit for the downloads")
    result = run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    proc.wait(timeout=30)
    # Nothing of the connection is left on the client: rules (the relay's control table's too),
    # routes, the kill switch, the two TUNs.
    rules = run_in(world.client, ["ip", "-6", "rule", "show"], check=True).stdout.decode()
    assert str(RELAY_CONTROL_TABLE) not in rules and "51820" not in rules, rules
    assert "warren" not in run_in(world.client, ["nft", "list", "tables"], check=True).stdout.decode()
    links = run_in(world.client, ["ip", "-o", "link", "show"], check=True).stdout.decode()
    assert "wrnc0" not in links, links
    with connect(chain.url) as project:
        contracts = load_contracts(project, chain.deployment)
        exit_channel = contracts.channel(bytes.fromhex(live["channel_id"]))
        relay_channel = contracts.channel(bytes.fromhex(live["relay"]["channel_id"]))
    print(f"settled bytes: exit {exit_channel.settled_bytes}, relay {relay_channel.settled_bytes}, "
          f"downloaded {net['fetched']}")
    assert exit_channel.settled_bytes >= net["fetched"]
    # The relay carried the exit's datagrams: the inner bytes plus the second WireGuard's overhead.
    assert relay_channel.settled_bytes >= exit_channel.settled_bytes
    assert relay_channel.settled_bytes <= exit_channel.settled_bytes * 1.15 + (2 << 20)
    assert exit_channel.settled > 0 and relay_channel.settled > 0


def _connect(net, *extra):
    world, config, workdir = net["world"], net["config"], net["workdir"]
    log = open(workdir / "client.log", "ab")
    proc = spawn_in(world.client, warren_argv("connect", "--config", str(config), "--hops", "2", *extra),
                    stdout=log, stderr=log)

    def connected():
        if proc.poll() is not None:
            raise AssertionError((workdir / "client.log").read_text()[-4000:])
        status = client_status(world, config)
        return status if status.get("connected") else None

    return proc, wait_for(connected, 120, interval=0.5, what="two-hop client connected")


def _only_wireguard_to(frames, hosts: set) -> list:
    """Outgoing frames of the client's uplink that are not WireGuard to ``hosts`` (nor ARP/ND)."""
    return [f for f in frames if f.outgoing and not f.neighbour_discovery and not (f.wireguard and f.dst in hosts)]


def _kill_mid_download(net, victim: str, kill=None) -> tuple[list, float]:
    """SIGKILL ``victim``'s `warren node run` (or call ``kill``) while a download runs; wait for a whole
    download with the right checksum. Returns the client uplink's frames meanwhile and seconds from
    kill to that."""
    world = net["world"]
    uplink = PacketCapture(world.client.name, "eth0").__enter__()
    try:
        downloader = threading.Thread(target=lambda: fetch(world, read_timeout=3, timeout=60))
        downloader.start()
        time.sleep(0.7)  # mid-download (16 MiB at ~60 Mbit/s: about 2 s)
        killed_at = time.monotonic()
        if kill is not None:
            kill()
        else:
            net["nodes"][victim].proc.kill()
            net["nodes"][victim].proc.wait(timeout=10)
        downloader.join(timeout=70)
        after = wait_for(lambda: fetch(world, read_timeout=5, timeout=40), 90, interval=0.5,
                         what=f"a download after {victim} was killed")
        recovered_s = time.monotonic() - killed_at
    finally:
        uplink.stop()
    assert after[:2] == (world.file_sha256, FILE_SIZE)
    return uplink.frames, recovered_s


def test_exit_killed__exit_hop_fails_over_through_the_same_relay__kill_switch_holds(net):
    """``--region NL --relay-region DE``: exits node_a and node_d (NL, one the standby), relay node_b.
    The current exit is SIGKILLed mid-download: the exit hop moves to the standby exit through the
    same relay session (its relay_to named both), the relay hop stays, the client's uplink carries
    only WireGuard to the relay."""
    world, nodes, config = net["world"], net["nodes"], net["config"]
    proc, status = _connect(net, "--region", "NL", "--relay-region", "DE")
    try:
        by_id = net["names"]
        current, standby = by_id[status["node_id"]], by_id[status["standby"]]
        assert {current, standby} == {"node_a", "node_d"} and by_id[status["relay"]["node_id"]] == "node_b"
        frames, recovered_s = _kill_mid_download(net, current)
        moved = client_status(world, config)
        assert moved["connected"] and moved["node_id"] == status["standby"]
        assert moved["failovers"][0]["from"] == status["node_id"]
        assert moved["relay"]["channel_id"] == status["relay"]["channel_id"] and moved["relay"]["failovers"] == []
        leaks = _only_wireguard_to(frames, {world.node_b.address})
        assert leaks == [], leaks[:5]
        net["exit"] = standby
        # The killed exit comes back (same keys and registration): node_c's overlay rendezvous again.
        nodes[current] = start_node(world, net["chain"], nodes[current].host, net["workdir"],
                                    bootstrap=None if current == "node_a" else world.node_a,
                                    operator=nodes[current].config.operator)
        print(f"exit {current} killed: exit hop switched in {moved['failovers'][0]['switch_s']} s, next full "
              f"download done {recovered_s:.2f} s after the kill")
    finally:
        run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)
        proc.wait(timeout=30)


def test_relay_tunnel_process_killed__restarted__relay_hop_fails_over__kill_switch_holds(net):
    """The client's relay tunnel runs in a child process (agents.wireguard.child). SIGKILLed
    mid-download: its TUN goes with it (the exit's datagrams meet the kill switch), the client starts
    it again with the same key, the relay hop fails over, the exit hop keeps its session, and the
    uplink carries nothing but WireGuard to the relays throughout."""
    world, nodes, config = net["world"], net["nodes"], net["config"]
    proc, status = _connect(net, "--node", nodes[net["exit"]].status()["node_id"])
    try:
        child = status["relay"]["tunnel_process"]
        assert child["alive"] and child["restarts"] == []
        with open(f"/proc/{child['pid']}/stat") as handle:  # a child of the client, counted in its CPU
            assert int(handle.read().rsplit(")", 1)[1].split()[1]) == proc.pid
        relay_hosts = {n.host.public_address for n in nodes.values()}
        frames, recovered_s = _kill_mid_download(net, "relay tunnel", kill=lambda: os.kill(child["pid"], 9))
        moved = client_status(world, config)
        restarted = moved["relay"]["tunnel_process"]
        assert moved["connected"] and restarted["alive"] and restarted["pid"] != child["pid"]
        assert [r["exit_status"] for r in restarted["restarts"]] == [-9]
        assert moved["relay"]["failovers"] and moved["channel_id"] == status["channel_id"]
        assert moved["failovers"] == []  # the exit hop stayed
        leaks = _only_wireguard_to(frames, relay_hosts)
        assert leaks == [], leaks[:5]
        print(f"relay tunnel process killed: relay hop switched in {moved['relay']['failovers'][0]['switch_s']} s, "
              f"next full download done {recovered_s:.2f} s after the kill")
    finally:
        run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)
        proc.wait(timeout=30)
    with pytest.raises(ProcessLookupError):  # reaped with the client
        os.kill(restarted["pid"], 0)


def test_relay_killed__relay_hop_fails_over__exit_session_kept__kill_switch_holds(net):
    """Another connection to the exit left alive, the relay left to the ranking (two of the other nodes,
    one the standby):
    the current relay's `warren node run` is SIGKILLed mid-download. The relay hop moves to the
    standby relay by itself; the exit hop keeps its session (the exit sees its peer roam to the new
    relay's address); the client's uplink carries nothing but WireGuard to the two relays meanwhile."""
    world, nodes, config = net["world"], net["nodes"], net["config"]
    proc, status = _connect(net, "--node", nodes[net["exit"]].status()["node_id"])
    try:
        relay_id, standby_id = status["relay"]["node_id"], status["relay"]["standby"]
        by_id = net["names"]
        relay, standby = by_id[relay_id], by_id[standby_id]
        assert relay != standby and {relay, standby} <= set(nodes) - {net["exit"]}
        relay_hosts = {n.host.public_address for n in nodes.values()}
        frames, recovered_s = _kill_mid_download(net, relay)
        moved = client_status(world, config)
        assert moved["connected"] and moved["relay"]["node_id"] == standby_id
        assert moved["relay"]["failovers"][0]["from"] == relay_id
        assert moved["channel_id"] == status["channel_id"] and moved["failovers"] == []  # the exit hop stayed
        leaks = _only_wireguard_to(frames, relay_hosts)
        assert leaks == [], leaks[:5]
        print(f"relay {relay} killed: relay hop switched in {moved['relay']['failovers'][0]['switch_s']} s, "
              f"next full download done {recovered_s:.2f} s after the kill")
    finally:
        run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)
        proc.wait(timeout=30)

