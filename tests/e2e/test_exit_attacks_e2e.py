"""End to end, from an attacker's and an unlucky user's side: exit policy, unpaid traffic, over-claims,
bad session requests, against real `warren node run` processes in the lab.

One lab world per module (as test_exit_e2e): node_a (NL) allows only files.example port 80 and gives
a small credit; node_b (DE) runs a hostile node that invoices twice what it carried
(tests/e2e/rogue.py); node_c (FR) sits behind a NAT with a LAN and has no policy. The hostile client
(rogue.py) owns a WireGuard tunnel and speaks the control protocol by hand.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.chain.connect import connect, load_contracts
from agents.control import MAX_BODY, ControlKind
from agents.netlab import Lab, NatType, can_build_namespaces
from agents.netlab.warren_net import (
    NODE_ACCOUNTS,
    PRICE_PER_GIB,
    STAKE,
    WG_PORT,
    NodeProcess,
    client_config,
    client_status,
    deploy_chain,
    start_node,
    wait_for,
)
from agents.netlab.world import build_world, run_in, spawn_in, start_anvil, warren_argv
from agents.node.config import NodeConfig, write_config
from agents.wallet import AccountSpec
from agents.wireguard.config import decode_key, encode_key, generate_private_key, public_key

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not can_build_namespaces(), reason="the lab builds network namespaces: root only")]

#: The served file: big enough to pass node_a's credit several times over, small enough to be quick.
FILE_SIZE = 8 << 20
#: node_a's and node_b's credit: small, so a client that stops paying is cut off early.
CREDIT = 2 << 20
#: The hostile client's account (deploy_chain funds 0..6; it gets tokens here).
ROGUE_ACCOUNT = 7
#: Deposit of each channel the hostile client opens (token wei: 1 token = 1 GiB).
ROGUE_DEPOSIT = 10**18
#: node_a's exit policy: files.example on port 80, nothing else.
POLICY = {"allow_domains": ["files.example"], "allow_ports": [80]}
#: Quarantine lasts long enough for test 4's whole series of bad requests over one tunnel.
SETUP_TIMEOUT_S = 90
#: The web server's egress rate while a client does not pay (so the cut-off's overshoot is small).
RATE_MBIT = 40
ROGUE = str(Path(__file__).with_name("rogue.py"))
#: rogue.py's switch for a node that quotes twice its price (a file in its data folder).
OVERQUOTE_FILE = "overquote"

TCP_PROBE = """
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); print("open", len(s.recv(100)))
except (TimeoutError, socket.timeout): print("timeout")
except OSError as e: print("error", e.errno)
"""
UDP_FLOOD = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload, total = b"x" * 1200, int(sys.argv[3])
for _ in range(total // 1200):
    try: s.sendto(payload, (sys.argv[1], int(sys.argv[2])))
    except OSError: pass
print(total)
"""
#: One question, asked up to three times 2 s apart as a stub resolver would (glibc: attempts:2,
#: timeout:5). With one datagram and a 3 s wait, the REFUSED probe after the download went unanswered
#: twice on 2026-12-07 (fresh-clone CI and one of three local runs). Cause not found: the node's
#: resolver drops queries from a client it counts as cut off, but its log showed no cut-off then.
DNS_PROBE = """
import socket, sys
from dnslib import DNSRecord, RCODE
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
for attempt in range(3):
    s.sendto(DNSRecord.question(sys.argv[2], "A").pack(), (sys.argv[1], 53))
    try:
        r = DNSRecord.parse(s.recvfrom(4096)[0]); break
    except TimeoutError:
        if attempt == 2: raise
print(RCODE.get(r.header.rcode), [str(x.rdata) for x in r.rr])
"""
#: The node's in-tunnel resolver (first host of the default v4 pool).
NODE_DNS = "10.77.0.1"


class Rogue:
    """The hostile client process: one JSON command per line."""

    @classmethod
    def start(cls, net, node: NodeProcess, channels: dict, ifname: str = "wrnr0") -> Rogue:
        self = cls.__new__(cls)
        node_key = (Path(node.config.data_dir) / "wg.key").read_text().strip()
        setup = {"node_key": encode_key(public_key(decode_key(node_key))), "node_id": node.status()["node_id"],
                 "endpoint": [node.host.public_address, WG_PORT], "ifname": ifname,
                 "chain_id": net["chain_id"], "channels_address": net["channels_address"], "channels": channels}
        self.log = open(net["workdir"] / "rogue.log", "ab")
        world = net["world"]
        from agents.netlab.world import REPO_ROOT, warren_env
        self.proc = subprocess.Popen(["ip", "netns", "exec", world.client.name, sys.executable, ROGUE, "client"],
                                     cwd=REPO_ROOT, env=warren_env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log)
        world.lab.defer(lambda: world.lab.stop(self.proc))
        self.proc.stdin.write((json.dumps(setup) + "\n").encode())
        self.proc.stdin.flush()
        ready = self._read()
        assert ready.get("ready"), ready
        self.key = ready["key"]
        return self

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"rogue client died (exit {self.proc.poll()})"
        return json.loads(line)

    def __call__(self, op: str, **cmd) -> dict:
        self.proc.stdin.write((json.dumps({"op": op, **cmd}) + "\n").encode())
        self.proc.stdin.flush()
        return self._read()

    def quit(self) -> None:
        if self.proc.poll() is None:
            try:
                self("quit")
            except (AssertionError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _start_rogue_node(world, chain, host, workdir: Path) -> NodeProcess:
    """`warren node run`, but with rogue.py's over-claiming NodeAgent (config as start_node writes it)."""
    data_dir = workdir / host.name
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "wg.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(encode_key(generate_private_key()) + "\n")
    config = NodeConfig(
        region=host.region, price_per_gib=PRICE_PER_GIB, operator=AccountSpec(test_account=NODE_ACCOUNTS[host.name]),
        stake=STAKE, data_dir=data_dir, interface=f"wrn{host.name[-1]}0", listen_port=WG_PORT,
        public_endpoint=(host.address, WG_PORT), bootstrap=((world.node_a.public_address, WG_PORT),),
        rpc="http://127.0.0.1:8545", deployment=chain.deployment, exit={}, credit_bytes=CREDIT,
        settlement_threshold=10**30, uplink="eth0")
    config_path = data_dir / "node.toml"
    write_config(config_path, config, force=True)
    log_path = data_dir / "node.log"
    handle = open(log_path, "ab")
    proc = spawn_in(host.ns, [sys.executable, ROGUE, "node", "--config", str(config_path)], stdout=handle, stderr=handle)
    node = NodeProcess(host, config_path, config, proc, log_path)
    try:
        wait_for(lambda: node.status() or proc.poll() is not None, 90, what=f"rogue {host.name} ready")
    except AssertionError:
        raise AssertionError(f"rogue {host.name} did not start:\n{node.log()[-4000:]}") from None
    assert proc.poll() is None, node.log()[-4000:]
    return node


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("attacks")
    with start_anvil() as anvil, Lab(prefix="watk") as lab:
        chain = deploy_chain(anvil.url, workdir)
        world = build_world(lab, chain_port=anvil.port, file_size=FILE_SIZE, client_nat=NatType.PORT_RESTRICTED)
        nodes = {"node_a": start_node(world, chain, world.node_a, workdir, exit_policy=POLICY, credit_bytes=CREDIT,
                                      extra={"setup_timeout_s": SETUP_TIMEOUT_S})}
        nodes["node_b"] = _start_rogue_node(world, chain, world.node_b, workdir)
        nodes["node_c"] = start_node(world, chain, world.node_c, workdir, bootstrap=world.node_a)
        with connect(chain.url) as project:
            contracts = load_contracts(project, chain.deployment)
            chain_id, channels_address = contracts.chain_id, str(contracts.channels.address)
        yield {"anvil": anvil, "lab": lab, "world": world, "chain": chain, "nodes": nodes, "workdir": workdir,
               "chain_id": chain_id, "channels_address": channels_address}


def _open_rogue_channel(net, node_id_hex: str) -> dict:
    """A channel from the rogue account to a node, with a fresh payment signer (opened by the test)."""
    from ape import accounts
    from eth_account import Account

    signer = Account.create()
    with connect(net["chain"].url) as project:
        contracts = load_contracts(project, net["chain"].deployment)
        owner, rogue = accounts.test_accounts[0], accounts.test_accounts[ROGUE_ACCOUNT]
        if int(contracts.token.balanceOf(rogue)) < ROGUE_DEPOSIT:
            contracts.token.mint(rogue, 100 * ROGUE_DEPOSIT, sender=owner)
        contracts.token.approve(contracts.channels.address, ROGUE_DEPOSIT, sender=rogue)
        node_id = bytes.fromhex(node_id_hex)
        contracts.channels.open_channel(node_id, rogue, signer.address, ROGUE_DEPOSIT, sender=rogue)
        channel_id = contracts.channel_id_of(node_id, rogue.address, signer.address)
    return {"channel_id": channel_id.hex(), "client": str(rogue.address), "signer": signer.address,
            "signer_key": bytes(signer.key).hex(), "deposit": ROGUE_DEPOSIT}


def _channel(net, channel_id_hex: str):
    with connect(net["chain"].url) as project:
        return load_contracts(project, net["chain"].deployment).channel(bytes.fromhex(channel_id_hex))


def _connect(net, node: NodeProcess):
    world, chain = net["world"], net["chain"]
    config = client_config(world, chain, net["workdir"], world.node_a)
    log_path = net["workdir"] / "client.log"
    proc = spawn_in(world.client, warren_argv("connect", "--config", str(config), "--node", node.status()["node_id"]),
                    stdout=open(log_path, "ab"), stderr=open(log_path, "ab"))

    def connected():
        if proc.poll() is not None:
            raise AssertionError(log_path.read_text()[-4000:])
        status = client_status(world, config)
        return status if status.get("connected") else None

    return proc, config, wait_for(connected, 120, interval=0.5, what="client connected")


def _disconnect(net, config, proc) -> None:
    result = run_in(net["world"].client, warren_argv("disconnect", "--config", str(config)), timeout=90)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    proc.wait(timeout=30)


def _wait_paid(net, config, at_least: int, timeout: float = 30) -> dict:
    """The client's status once its session paid for ``at_least`` bytes; on timeout, what it and the
    node last said (and the client's log) in the failure."""
    last: list[dict] = [{}]

    def paid():
        last[0] = client_status(net["world"], config)
        return last[0].get("session_paid_bytes", 0) >= at_least and last[0]

    try:
        return wait_for(paid, timeout, interval=0.5, what=f"{at_least} B paid")
    except AssertionError as exc:
        log_path = net["workdir"] / "client.log"
        tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
        nodes = {name: node.status() for name, node in net["nodes"].items()}
        raise AssertionError(f"{exc}\nclient: {json.dumps(last[0])}\nnodes: {json.dumps(nodes)}\n"
                             f"client log:\n{tail}") from None


def _probe(world, address: str, port: int, timeout: float = 3.0) -> str:
    result = run_in(world.client, ["python3", "-c", TCP_PROBE, address, str(port), str(timeout)], timeout=30)
    return result.stdout.decode().strip() or result.stderr.decode()[-500:]


def _session(node: NodeProcess, channel_id: str) -> dict:
    return next(s for s in node.status()["sessions"] if s["channel_id"] == channel_id)


# -- 1. exit policy ------------------------------------------------------------------------------

def test_policy_node__blocked_name_address_port_and_flood__refused_dropped_and_not_billed(net):
    world, node = net["world"], net["nodes"]["node_a"]
    # A server on a port the policy does not allow, on the allowed host (so only policy can stop it).
    spawn_in(world.web, [sys.executable, "-m", "http.server", "--bind", world.web_address, "8080"])
    wait_for(lambda: "open" in run_in(world.web, ["python3", "-c", TCP_PROBE, world.web_address, "8080", "1"]
                                      ).stdout.decode(), 15, what="port 8080 server")
    proc, config, status = _connect(net, node)
    try:
        got = run_in(world.client, ["python3", "-c", DNS_PROBE, NODE_DNS, "files.example"], timeout=30)
        assert got.stdout.decode().startswith("NOERROR") and world.web_address in got.stdout.decode(), got
        fetch = run_in(world.client, ["python3", "-m", "agents.netlab.fetch", world.file_url, "--deadline-s", "60"],
                       timeout=90)
        assert fetch.returncode == 0, fetch.stderr.decode()[-2000:]
        result = json.loads(fetch.stdout)
        assert result["sha256"] == world.file_sha256
        refused = run_in(world.client, ["python3", "-c", DNS_PROBE, NODE_DNS, "blocked.example"], timeout=30)
        assert refused.stdout.decode().startswith("REFUSED"), refused
        assert _probe(world, world.blocked_address, 80) == "timeout"
        assert _probe(world, world.web_address, 8080) == "timeout"
        # A few MiB of UDP at the blocked server: dropped by the exit, and never billed.
        channel_id = status["channel_id"]
        _wait_paid(net, config, FILE_SIZE)
        time.sleep(1.0)
        session0, client0 = _session(node, channel_id), client_status(world, config)
        flood = 4 << 20
        run_in(world.client, ["python3", "-c", UDP_FLOOD, world.blocked_address, "9999", str(flood)], timeout=60,
               check=True)
        time.sleep(3.0)  # receipts run every 1 MiB or 5 s; invoices every 0.25 s
        session1, client1 = _session(node, channel_id), client_status(world, config)
        billed = session1["billed_bytes"] - session0["billed_bytes"]
        paid = client1["paid_bytes"] - client0["paid_bytes"]
        sent = client1["own_bytes"] - client0["own_bytes"]  # the client's tunnel counters
        carried = (session1["rx_bytes"] + session1["tx_bytes"]) - (session0["rx_bytes"] + session0["tx_bytes"])
        unpaid0 = max(0, client0["own_bytes"] - client0["session_paid_bytes"])
        print(f"flood {flood} B: client tunnel counted +{sent} B, node tunnel +{carried} B (lost in between "
              f"{sent - carried} B), node billed +{billed} B, client paid +{paid} B ({unpaid0} B unpaid before)")
        assert billed < 32 << 10
        # The client pays ahead of the bill (its own counter less what the node last reported
        # unbilled), but never more than the credit ahead: the burst is reported dropped only in the
        # node's next invoice, and what was paid meanwhile stays paid. What it had counted but not yet
        # paid when the flood began (keepalives since the last receipt) may be paid during it.
        assert paid <= sent + unpaid0, (paid, sent, unpaid0)
        assert client1["session_paid_bytes"] - session1["billed_bytes"] <= CREDIT
    finally:
        _disconnect(net, config, proc)


def test_nat_node__lan_router_own_address__unreachable_through_exit(net):
    world, node = net["world"], net["nodes"]["node_c"]
    router, lan_gateway = world.node_c.nat.namespace, world.node_c.nat.lan_gateway
    spawn_in(router, [sys.executable, "-m", "http.server", "--bind", lan_gateway, "8081"])
    spawn_in(world.node_c.ns, [sys.executable, "-m", "http.server", "--bind", "0.0.0.0", "8082"])
    # Both servers answer on node_c's own LAN (so only the exit can be what stops the client).
    for address, port in ((lan_gateway, 8081), (world.node_c.address, 8082), ("127.0.0.1", 8082)):
        wait_for(lambda: "open" in run_in(world.node_c.ns, ["python3", "-c", TCP_PROBE, address, str(port), "1"]
                                          ).stdout.decode(), 15, what=f"{address}:{port} on node_c's LAN")
    proc, config, _ = _connect(net, node)
    try:
        assert _probe(world, world.web_address, 80).startswith("open")  # the exit works...
        assert _probe(world, lan_gateway, 8081) == "timeout"            # ...but not into its LAN,
        assert _probe(world, world.node_c.address, 8082) == "timeout"   # nor to its own uplink address
    finally:
        _disconnect(net, config, proc)


# -- 2. a client that stops paying -----------------------------------------------------------------

def test_client_never_signs__cut_off_near_credit__served_again_after_paying(net):
    world, node = net["world"], net["nodes"]["node_a"]
    channel = _open_rogue_channel(net, node.status()["node_id"])
    rogue = Rogue.start(net, node, {"main": channel})
    # The node checks credit every meter period (0.25 s): at 40 Mbit/s that lets ~1.2 MB more through.
    world.web.shape("eth0", rate_mbit=RATE_MBIT)
    try:
        accepted = rogue("request", routes=[world.web_address])
        assert accepted["answer"] == "accepted", accepted
        assert accepted["terms"]["credit_bytes"] == CREDIT
        resolved = rogue("resolve", name="files.example")
        assert resolved["rcode"] == "NOERROR" and world.web_address in resolved["addresses"], resolved
        first = rogue("download", host=world.web_address, name="files.example", path=world.file_name, stall_s=3)
        print(f"unpaid download stalled after {first['bytes']} B (credit {CREDIT} B)")
        assert first["stalled"] and CREDIT // 2 < first["bytes"] < CREDIT + (2 << 20), first
        session = wait_for(lambda: (s := _session(node, channel["channel_id"]))["suspended"] and s, 10,
                           what="session suspended")
        assert session["paid_bytes"] == 0
        assert "cut off" in node.log()
        paid = rogue("pay")
        assert paid["acked"], paid
        wait_for(lambda: not _session(node, channel["channel_id"])["suspended"], 10, what="session resumed")
        again = rogue("download", host=world.web_address, name="files.example", path=world.file_name, stall_s=3)
        print(f"after paying: {again['bytes']} B more")
        assert again["bytes"] > CREDIT // 2, again
    finally:
        world.web.shape("eth0")
        rogue.quit()


# -- 3. a node that claims more than it carried ---------------------------------------------------

def test_overclaiming_node__settled_equals_clients_last_receipt__overclaim_reported(net):
    world, node = net["world"], net["nodes"]["node_b"]
    log_path = net["workdir"] / "client.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    proc, config, status = _connect(net, node)
    try:
        fetch = run_in(world.client, ["python3", "-m", "agents.netlab.fetch", world.file_url, "--deadline-s", "60"],
                       timeout=90)
        assert fetch.returncode == 0, fetch.stderr.decode()[-2000:]
        assert json.loads(fetch.stdout)["sha256"] == world.file_sha256
        live = wait_for(lambda: (s := client_status(world, config)).get("overclaim_bytes", 0) > 0 and s, 20,
                        what="overclaim reported")
        billed = _session(node, status["channel_id"])["billed_bytes"]
    finally:
        _disconnect(net, config, proc)
    log = log_path.read_text(errors="replace")[log_start:]
    assert "bills" in log and "more than we counted" in log
    closed = re.findall(r"closed cooperatively at (\d+) bytes, (\d+) token wei", log)
    assert closed, log[-3000:]
    last_bytes, last_amount = map(int, closed[-1])
    channel = _channel(net, status["channel_id"])
    print(f"node carried {billed} B, claimed {2 * billed} B; client signed {last_bytes} B; settled "
          f"{channel.settled_bytes} B; overclaim seen {live['overclaim_bytes']} B")
    assert (channel.settled_bytes, channel.settled) == (last_bytes, last_amount)
    # The node got at most the agreed credit beyond what it carried, never its claim.
    assert channel.settled_bytes <= billed + CREDIT + (1 << 20) < 2 * billed


def test_overquoting_node__client_refuses_the_session__signs_nothing(net):
    """A node that quotes more than its channel was opened at (its listing) is refused at setup."""
    world, node = net["world"], net["nodes"]["node_b"]
    node_id = node.status()["node_id"]
    config = client_config(world, net["chain"], net["workdir"], world.node_a)
    flag = Path(node.config.data_dir) / OVERQUOTE_FILE
    flag.touch()
    try:
        result = run_in(world.client, warren_argv("connect", "--config", str(config), "--node", node_id), timeout=120)
    finally:
        flag.unlink()
        run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)  # its kill switch
    out = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode != 0, out[-3000:]
    listed = PRICE_PER_GIB
    assert f"the node asks {2 * listed} token wei per GiB, more than the {listed} its channel was opened at" in out, \
        out[-3000:]
    assert not [s for s in node.status()["sessions"] if s["paid_bytes"]]  # nothing signed to it


# -- 4. bad session requests -----------------------------------------------------------------------

def test_bad_session_requests__each_refused_with_its_reason__nothing_changes(net):
    world, node = net["world"], net["nodes"]["node_a"]
    node_id = node.status()["node_id"]
    good = _open_rogue_channel(net, node_id)
    closed = _open_rogue_channel(net, node_id)
    other = _open_rogue_channel(net, net["nodes"]["node_b"].status()["node_id"])
    # Close `closed` cooperatively first, through a real session on another tunnel.
    closer = Rogue.start(net, node, {"main": closed}, ifname="wrnr1")
    try:
        assert closer("request")["answer"] == "accepted"
        final = closer("pay", close=True, extra=1 << 10)
        assert final["close_signature"], final
    finally:
        closer.quit()
    from ape import accounts
    with connect(net["chain"].url) as project:
        contracts = load_contracts(project, net["chain"].deployment)
        contracts.channels.cooperative_close(bytes.fromhex(closed["channel_id"]), final["cumulative_bytes"],
                                             final["cumulative_amount"], bytes.fromhex(final["signature"]),
                                             bytes.fromhex(final["close_signature"]),
                                             sender=accounts.test_accounts[ROGUE_ACCOUNT])
    assert _channel(net, closed["channel_id"]).status.name != "OPEN"

    rogue = Rogue.start(net, node, {"main": good, "closed": closed, "other": other})
    try:
        before = node.status()
        cases = [
            ({"forge": True}, "bad_signature"),
            ({"time_offset": -3600}, "stale_request"),
            ({"channel": "closed"}, "channel_not_open"),
            ({"channel": "other"}, "wrong_channel"),            # its id is not this node's
            ({"channel": "other", "node_id": net["nodes"]["node_b"].status()["node_id"]}, "wrong_node"),
            ({"wg_key": base64.b64encode(os.urandom(32)).decode()}, "wrong_tunnel"),
            ({"raw_hex": (bytes([ControlKind.SESSION_REQUEST, 0, 9]) + b"{not json").hex()}, "bad_json"),
        ]
        for cmd, reason in cases:
            answer = rogue("request", **cmd)
            assert (answer["answer"], answer.get("reason")) == ("refused", reason), (cmd, answer)
        # A frame longer than any control message: the node drops the connection without a word.
        oversized = bytes([ControlKind.SESSION_REQUEST]) + (MAX_BODY + 1).to_bytes(2, "big") + b"x" * 100
        assert rogue("request", raw_hex=oversized.hex())["answer"] == "closed"
        after = node.status()
        assert after["sessions"] == before["sessions"] or len(after["sessions"]) == len(before["sessions"])
        assert after["counters"]["sessions"] == before["counters"]["sessions"]
        for reason in ("bad_signature", "stale_request", "channel_not_open", "wrong_channel", "wrong_node",
                       "wrong_tunnel"):
            assert after["refusals"].get(reason, 0) == before["refusals"].get(reason, 0) + 1, reason
        # The same tunnel then sets up a real session; replaying its request is refused as a replay.
        assert rogue("request")["answer"] == "accepted"
        sessions = node.status()["counters"]["sessions"]
        replay = rogue("request", replay=len([c for c, _ in cases if "raw_hex" not in c]))
        assert (replay["answer"], replay.get("reason")) == ("refused", "replayed_request"), replay
        assert node.status()["counters"]["sessions"] == sessions
    finally:
        rogue.quit()
