"""End to end: failover to the warm standby and the kill switch, with the real `warren` commands.

One lab world per module (as tests/e2e/test_exit_e2e.py): an internet with web + DNS, nodes NL and DE
public, FR behind a port-restricted NAT, all three running `warren node run`; the client behind a home
NAT runs `warren connect` without ``--node`` (it picks the best and keeps a standby). While a
downloader pulls the file (resuming with HTTP Range after a stall), the exit's `warren node run` is
SIGKILLed; traffic must come back through another node by itself. A capture on the client's uplink
(its LAN veth) meanwhile shows what leaves the host: WireGuard to node endpoints and overlay UDP from
the tunnel's port, nothing else, also while the test tries DNS, TCP and IPv6 past the tunnel; then
the client itself is killed (-9): nothing leaves until `warren disconnect` removes every rule.

The module's tests run in file order on one scenario (:func:`scenario`): failover, the kill switch
during the download and the failover, the old channel's unilateral close, `warren switch` (cooperative
close of the node left), the client's crash.
"""

import json
import signal
import subprocess
import threading
import time

import pytest

from agents.chain.bindings import ChannelStatus
from agents.chain.connect import connect, load_contracts
from agents.client.killswitch import KillSwitch
from agents.client.resolvconf import MARKER as RESOLV_MARKER
from agents.client.service import KILLSWITCH_TABLE
from agents.netlab import Lab, NatType, can_build_namespaces
from agents.netlab.capture import PacketCapture, describe, outgoing_by_kind
from agents.netlab.warren_net import WG_PORT, client_config, client_status, deploy_chain, start_node, wait_for
from agents.netlab.world import build_world, run_in, spawn_in, start_anvil, warren_argv, warren_env
from agents.wireguard.tun import DEFAULT_FWMARK

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not can_build_namespaces(), reason="the lab builds network namespaces: root only")]

#: The file pulled through the exits (big enough to be mid-transfer when the exit dies).
FILE_SIZE = 32 << 20
#: The downloader reads at most this many bytes per second, so the transfer lasts a few seconds and
#: the kill lands in the middle of it (unthrottled it takes ~1 s at ~290 Mbit/s).
READ_RATE = 8 << 20
#: Kill the exit once the downloader holds this many bytes.
KILL_AT = 8 << 20
#: The client's uplink in its namespace (its LAN veth towards the home router: the first interface).
UPLINK = "eth0"
#: A read (or connect) that stalls this long counts as a stall: the downloader reconnects with a Range
#: request. Short, so the downloader's own reaction adds little to the measured failover; a false stall
#: costs only a reconnect.
STALL_S = 0.5
#: Loose bound on node killed -> first byte through the next node (the benchmark holds the real figure).
FAILOVER_BOUND_S = 10.0

#: Downloads URL to nowhere, throttled, resuming with ``Range: bytes=N-`` after a stall or a reset.
#: Prints one JSON line per (re)start's first byte ({"first": wall time, "offset": N}), progress lines
#: ({"got": N}) and at the end {"sha256", "size", "restarts"}.
DOWNLOADER = """
import hashlib, json, socket, sys, time, urllib.request
url, size, rate, stall, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
h, got, restarts, t0 = hashlib.sha256(), 0, 0, time.monotonic()
# Resolve once (through the tunnel's DNS), then fetch by address with the Host header: the measured
# failover is the tunnel's, not the stub resolver's retry schedule (DNS after failover is checked apart).
host = urllib.request.urlparse(url).hostname
by_ip = url.replace(host, socket.gethostbyname(host), 1)
def say(**kw):
    print(json.dumps(kw), flush=True)
while got < size and time.monotonic() - t0 < limit:
    try:
        req = urllib.request.Request(by_ip, headers={"Host": host, **({"Range": f"bytes={got}-"} if got else {})})
        with urllib.request.urlopen(req, timeout=stall) as r:
            if got and r.status != 206:
                raise SystemExit(f"server ignored Range: {r.status}")
            first = True
            while True:
                chunk = r.read(1 << 16)
                if not chunk:
                    break
                if first:
                    say(first=time.time(), offset=got); first = False
                h.update(chunk); got += len(chunk)
                say(got=got)
                time.sleep(len(chunk) / rate)
    except (OSError, ValueError) as exc:
        restarts += 1
        say(stall=time.time(), at=got, error=type(exc).__name__)
        time.sleep(0.05)
say(sha256=h.hexdigest(), size=got, restarts=restarts)
"""

#: Asks one DNS server (argv[1], IPv4 or IPv6) for argv[2]'s A records; prints them.
ASK_DNS = """
import sys
from dnslib import DNSRecord
reply = DNSRecord.parse(DNSRecord.question(sys.argv[2]).send(sys.argv[1], 53, ipv6=":" in sys.argv[1], timeout=3))
print(" ".join(str(rr.rdata) for rr in reply.rr))
"""

#: Tries to get DNS, TCP and IPv6 past the tunnel: each first the ordinary way (routing sends it into
#: the tunnel, where it is fine), then bound to the uplink (SO_BINDTODEVICE), which only the kill switch
#: stops. Prints {attempt: "sent" | "connected" | errno name}.
PROBES = """
import errno, json, socket, sys
dns, web, uplink = sys.argv[1], sys.argv[2], sys.argv[3]
QUERY = bytes.fromhex("1234010000010000000000000566696c6573076578616d706c650000010001")  # files.example A
out = {}
def attempt(name, family, kind, target, bound, payload=None):
    try:
        with socket.socket(family, kind) as s:
            s.settimeout(0.7)
            if bound:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, uplink.encode())
            if kind == socket.SOCK_DGRAM:
                s.sendto(payload, target); out[name] = "sent"
            else:
                s.connect(target); out[name] = "connected"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc)) if exc.errno else type(exc).__name__
for bound in (False, True):
    tag = "bound" if bound else "routed"
    attempt(f"dns_{tag}", socket.AF_INET, socket.SOCK_DGRAM, (dns, 53), bound, QUERY)
    attempt(f"tcp_{tag}", socket.AF_INET, socket.SOCK_STREAM, (web, 80), bound)
    attempt(f"udp6_{tag}", socket.AF_INET6, socket.SOCK_DGRAM, ("2001:db8::53", 53), bound, QUERY)
    attempt(f"tcp6_{tag}", socket.AF_INET6, socket.SOCK_STREAM, ("2001:db8::80", 80), bound)
idx = socket.if_nametoindex(uplink)
attempt("udp6_linklocal", socket.AF_INET6, socket.SOCK_DGRAM, ("ff02::1", 53, 0, idx), False, QUERY)
print(json.dumps(out))
"""


def _probe(world) -> dict:
    result = run_in(world.client, ["python3", "-c", PROBES, world.dns_server, world.web_address, UPLINK], timeout=30)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return json.loads(result.stdout)


def _baseline(world) -> dict:
    """What the client host looks like before any warren: ip rules (both families), nft tables."""
    rules = {fam: run_in(world.client, ["ip", f"-{fam}", "rule", "show"], check=True).stdout.decode()
             for fam in ("4", "6")}
    tables = run_in(world.client, ["nft", "list", "tables"], check=True).stdout.decode()
    with open(f"/etc/netns/{world.client.name}/resolv.conf") as handle:
        resolv = handle.read()
    # Every nameserver the client wrote answers through the new node (IPv4 and IPv6 alike).
    servers = [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver ")]
    for server in servers:
        answer = run_in(world.client, ["python3", "-c", ASK_DNS, server, "files.example"], timeout=30)
        assert answer.stdout.decode().split() == [world.web_address], (server, answer.stderr.decode()[-500:])
    return {"rules": rules, "tables": tables, "resolv": resolv}


def _outgoing_leaks(frames, endpoints: set, nat_addresses: set, tunnel_ports: set) -> tuple[list, dict]:
    """Outgoing frames that are neither WireGuard to a node endpoint nor overlay UDP from the tunnel's
    port to a node/bootstrap address, nor ARP/ND; and a count of what was seen, by class."""
    def kind_of(f):
        if f.kind == "ipv4" and f.proto == "udp" and f.sport in tunnel_ports and (
                (f.dst, f.dport) in endpoints or f.dst in nat_addresses):
            return "wireguard" if f.wireguard else "overlay"
        return None
    return outgoing_by_kind(frames, kind_of)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("failover")
    with start_anvil() as anvil, Lab(prefix="wfo") as lab:
        chain = deploy_chain(anvil.url, workdir)
        # Behind a home NAT, as in test_exit_e2e: a public client would reach the servers on-link.
        world = build_world(lab, chain_port=anvil.port, file_size=FILE_SIZE, client_nat=NatType.PORT_RESTRICTED)
        nodes = {"node_a": start_node(world, chain, world.node_a, workdir)}
        for name in ("node_b", "node_c"):
            nodes[name] = start_node(world, chain, getattr(world, name), workdir, bootstrap=world.node_a)
        yield {"lab": lab, "world": world, "chain": chain, "nodes": nodes, "workdir": workdir}


@pytest.fixture(scope="module")
def scenario(net):
    """Connect (no --node), download, SIGKILL the exit mid-download; capture the uplink throughout."""
    world, nodes, workdir = net["world"], net["nodes"], net["workdir"]
    baseline = _baseline(world)
    config = client_config(world, net["chain"], workdir, world.node_a)
    log_path = workdir / "client.log"
    client = spawn_in(world.client, warren_argv("connect", "--config", str(config)),
                      stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)

    def ready():
        if client.poll() is not None:
            raise AssertionError(log_path.read_text()[-4000:])
        status = client_status(world, config)
        return status if status.get("connected") and status.get("standby") else None

    first = wait_for(ready, 150, interval=0.5, what="client connected with a standby")
    by_id = {n.status()["node_id"]: n for n in nodes.values()}
    exit_node = by_id[first["node_id"]]
    endpoints = {(n.host.public_address, WG_PORT) for n in nodes.values()}
    nat_addresses = {n.host.public_address for n in nodes.values() if n.host.nat is not None}

    capture = PacketCapture(world.client.name, UPLINK).__enter__()
    net["lab"].defer(capture.stop)
    phases = {}
    downloader = subprocess.Popen(
        ["ip", "netns", "exec", world.client.name, "python3", "-c", DOWNLOADER, world.file_url, str(FILE_SIZE),
         str(READ_RATE), str(STALL_S), "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=warren_env())
    net["lab"].defer(lambda: downloader.poll() is None and downloader.kill())
    lines, got = [], [0]

    def read():
        for raw in downloader.stdout:
            event = json.loads(raw)
            if "got" in event:
                got[0] = event["got"]
            else:
                lines.append(event)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: got[0] >= KILL_AT or downloader.poll() is not None, 60, interval=0.05, what="download under way")
    assert downloader.poll() is None, "the download ended before the kill: raise FILE_SIZE or lower READ_RATE"
    probes = {"download": _probe(world)}
    phases["download"] = capture.snapshot()
    capture.clear()
    killed_at = time.time()
    exit_node.proc.send_signal(signal.SIGKILL)
    exit_node.proc.wait(timeout=10)
    probes["failover"] = _probe(world)  # while the client is still noticing / moving
    downloader.wait(timeout=150)
    reader.join(timeout=10)
    phases["failover"] = capture.snapshot()
    capture.clear()
    after = wait_for(lambda: (s := client_status(world, config)).get("failovers") and s, 30,
                     what="a failover in the client's status")
    killswitch = KillSwitch(KILLSWITCH_TABLE, netns=world.client.name).state()
    tunnel_routes = {fam: run_in(world.client, ["ip", f"-{fam}", "route", "show", "table", str(DEFAULT_FWMARK)],
                                 check=True).stdout.decode() for fam in ("4", "6")}
    yield {"killswitch": killswitch, "tunnel_routes": tunnel_routes, "config": config, "client": client, "capture": capture, "phases": phases, "probes": probes,
           "first": first, "after": after, "exit_node": exit_node, "by_id": by_id, "killed_at": killed_at,
           "events": lines, "downloader_rc": downloader.returncode,
           "downloader_err": downloader.stderr.read().decode(errors="replace"), "endpoints": endpoints,
           "nat_addresses": nat_addresses, "baseline": baseline, "log_path": log_path}


def test_exit_killed_mid_download__traffic_resumes_through_standby__file_intact(scenario, net):
    s = scenario
    assert s["downloader_rc"] == 0, s["downloader_err"][-2000:]
    final = s["events"][-1]
    assert final["size"] == FILE_SIZE, s["events"][-12:]
    assert final["sha256"] == net["world"].file_sha256, "the resumed download is not the file"
    assert final["restarts"] >= 1, "the download never stalled: the kill did not hit the exit in use"
    old, new = s["first"]["node_id"], s["after"]["node_id"]
    assert new != old and new in s["by_id"], (old, new)
    failover = s["after"]["failovers"][0]
    assert (failover["from"], failover["to"]) == (old, new)
    # Node killed -> first byte of the restarted download after the kill (through the next node).
    resumed = [e for e in s["events"] if "first" in e and e["first"] > s["killed_at"]]
    assert resumed, s["events"]
    took = resumed[0]["first"] - s["killed_at"]
    print(f"\nfailover: node {old[:12]} killed -> first byte through {new[:12]} in {took:.2f} s "
          f"(client's switch {failover['switch_s']} s, why: {failover['why']}); "
          f"standby before: {s['first']['standby'][:12]}, after: {(s['after'].get('standby') or '-')[:12]}")
    print("downloader after the kill:", [{k: round(v - s["killed_at"], 2) if k in ("first", "stall") else v
                                          for k, v in e.items()} for e in s["events"] if e.get("first", e.get("stall", 0))
                                         and e.get("first", e.get("stall", 0)) > s["killed_at"] - 1])
    assert took < FAILOVER_BOUND_S
    # The full-tunnel default routes are still on the TUN (both families), and the kill switch lets
    # through the new exit and the bootstrap, and the dead exit only if it is the bootstrap.
    for fam, routes in s["tunnel_routes"].items():
        assert "default dev wrnc0" in routes, (fam, routes)
    ks = s["killswitch"]
    assert ks is not None and "wrnc0" in ks.tuns, ks
    host, port = s["after"]["endpoint"].rsplit(":", 1)
    assert (host, int(port)) in ks.endpoints, ks
    bootstrap = (net["world"].node_a.public_address, WG_PORT)
    dead = s["exit_node"].host
    assert dead.name == "node_a" or (dead.public_address, WG_PORT) not in ks.endpoints, ks
    assert bootstrap in ks.endpoints and len(ks.endpoints) <= 3, ks
    # DNS after the failover: the stub resolver still points into the tunnel and the new node answers.
    world = net["world"]
    lookup = run_in(world.client, ["python3", "-c", "import socket; print(socket.gethostbyname('files.example'))"],
                    timeout=30)
    assert lookup.stdout.decode().strip() == world.web_address, lookup.stderr.decode(errors="replace")
    with open(f"/etc/netns/{world.client.name}/resolv.conf") as handle:
        resolv = handle.read()
    # Every nameserver the client wrote answers through the new node (IPv4 and IPv6 alike).
    servers = [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver ")]
    for server in servers:
        answer = run_in(world.client, ["python3", "-c", ASK_DNS, server, "files.example"], timeout=30)
        assert answer.stdout.decode().split() == [world.web_address], (server, answer.stderr.decode()[-500:])
    assert resolv.startswith(RESOLV_MARKER) and "nameserver" in resolv and world.dns_server not in resolv, resolv


@pytest.mark.parametrize("phase", ["download", "failover"])
def test_uplink_during_phase__only_wireguard_and_overlay_leave(scenario, phase):
    s = scenario
    frames = s["phases"][phase]
    tunnel_ports = {f.sport for f in frames if f.outgoing and f.wireguard}
    leaks, seen = _outgoing_leaks(frames, s["endpoints"], s["nat_addresses"], tunnel_ports)
    print(f"\n{phase}: outgoing on the uplink {seen}; tunnel port(s) {sorted(tunnel_ports)}; probes {s['probes'][phase]}")
    assert seen.get("wireguard", 0) > 100, seen
    assert len(tunnel_ports) == 1, tunnel_ports  # one socket: WireGuard and the overlay share it
    assert not leaks, describe(leaks)
    # Past the tunnel (bound to the uplink) the kill switch refuses at once: nothing was sent.
    probes = s["probes"][phase]
    for name in ("dns_bound", "tcp_bound", "udp6_bound", "tcp6_bound", "udp6_linklocal"):
        assert probes[name] not in ("sent", "connected"), (name, probes)


def test_failover__old_channel__unilateral_close_started_on_chain(scenario, net):
    s = scenario
    old = s["after"]["history"][0]
    assert old["node_id"] == s["first"]["node_id"]
    with connect(net["chain"].url) as project:
        contracts = load_contracts(project, net["chain"].deployment)

        def closing():
            return contracts.channel(bytes.fromhex(old["channel_id"])).status is ChannelStatus.CLOSING

        wait_for(closing, 30, interval=0.5, what="the dead node's channel CLOSING on chain")
        assert contracts.channel(bytes.fromhex(s["after"]["channel_id"])).status is ChannelStatus.OPEN


def test_switch__live_node_left__its_channel_closed_cooperatively(scenario, net):
    """`warren switch` moves to the standby while the current node is alive: as on a latency failover
    (the node answers, too slowly), the client pays it up and gets its close signature before moving,
    so that channel closes cooperatively to the byte (a dead node's gets a unilateral close, above)."""
    s, world = scenario, net["world"]
    config = s["config"]
    here = wait_for(lambda: (st := client_status(world, config)).get("standby") and st, 60, interval=0.5,
                    what="a standby after the first failover")
    moved = json.loads(run_in(world.client, warren_argv("switch", "--config", str(config)), check=True,
                              timeout=90).stdout.decode().strip().splitlines()[-1])
    assert moved["switched"] and moved["from"] == here["node_id"] and moved["node_id"] == here["standby"], moved
    failover = moved["failovers"][-1]
    assert (failover["from"], failover["why"]) == (here["node_id"], "switched by the user"), failover
    left = wait_for(lambda: next((h for h in client_status(world, config).get("history", [])
                                  if h["channel_id"] == here["channel_id"] and h.get("closed")), None), 60,
                    interval=0.5, what="the left node's channel closed")
    print(f"\nswitch {here['node_id'][:12]} -> {moved['node_id'][:12]} in {failover['switch_s']} s; "
          f"channel closed {left['closed']} at {left['paid_bytes']} bytes")
    assert left["closed"] == "cooperative", left
    with connect(net["chain"].url) as project:
        channel = load_contracts(project, net["chain"].deployment).channel(bytes.fromhex(left["channel_id"]))
    assert channel.status is ChannelStatus.FINALISED, channel
    assert channel.settled_bytes == left["paid_bytes"] > 0, (channel, left)
    # The connection carries traffic through the new node.
    lookup = run_in(world.client, ["python3", "-c", "import socket; print(socket.gethostbyname('files.example'))"],
                    timeout=30)
    assert lookup.stdout.decode().strip() == world.web_address, lookup.stderr.decode(errors="replace")


def test_client_killed__nothing_leaves__disconnect_restores_network(scenario, net):
    s, world = scenario, net["world"]
    capture = s["capture"]
    capture.clear()
    s["client"].send_signal(signal.SIGKILL)
    s["client"].wait(timeout=10)
    probes = _probe(world)
    time.sleep(2.0)  # anything still queued (keepalives, retransmits) would show by now
    frames = capture.snapshot()
    out = [f for f in frames if f.outgoing]
    print(f"\nafter kill -9: {len(out)} outgoing frames ({describe(out)}); probes {probes}")
    assert not [f for f in out if not f.neighbour_discovery], describe(out)
    for name in ("dns_routed", "tcp_routed", "dns_bound", "tcp_bound", "udp6_bound", "tcp6_bound"):
        assert probes[name] not in ("sent", "connected"), (name, probes)
    status = client_status(world, s["config"])
    assert status.get("connected") is False and "disconnect" in status.get("note", ""), status

    result = run_in(world.client, warren_argv("disconnect", "--config", str(s["config"])), timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    ruleset = run_in(world.client, ["nft", "list", "ruleset"], check=True).stdout.decode()
    assert "warren_client" not in ruleset and "warren_routes" not in ruleset, ruleset
    after = _baseline(world)
    assert after == s["baseline"], (after, s["baseline"])
    fetch = run_in(world.client, ["python3", "-c", "import sys, urllib.request; "
                   "print(len(urllib.request.urlopen(sys.argv[1], timeout=10).read(1 << 20)))",
                   world.file_url], timeout=30)
    assert fetch.returncode == 0 and int(fetch.stdout) == 1 << 20, fetch.stderr.decode(errors="replace")
