"""End to end: a node revoked on chain is refused by every other node within seconds, and a client
using it fails over at once with its kill switch holding.

The lab world of tests/e2e/test_exit_e2e.py (anvil; node_a, node_b public, node_c behind a
port-restricted NAT, all running `warren node run`; a client behind a home NAT running `warren
connect`, which picks an exit and keeps a standby). Before the revocation a prober in the exit's
namespace, holding the exit's own WireGuard key, handshakes with every other public node: they answer
(quarantine). Then revocation_registry.revoke is sent with the two guardians' signatures; from the
transaction on the prober sends a fresh handshake initiation every 0.2 s until each node stops
answering. Measured: transaction -> each node's revocation list holding the id (its status), and
transaction -> its WireGuard responder refusing the key (the prober). The client's status must show a
failover "revoked" to another node, the kill switch still engaged, and traffic flowing again; the
channel to the revoked node is closed at once with exit_revoked (finalised on chain, no challenge
period).
"""

import json
import time

import pytest

from agents.chain import eip712
from agents.chain.bindings import ChannelStatus
from agents.chain.connect import connect, load_contracts
from agents.client.killswitch import KillSwitch
from agents.client.service import KILLSWITCH_TABLE
from agents.netlab import Lab, NatType, can_build_namespaces
from agents.netlab.warren_net import WG_PORT, client_config, client_status, deploy_chain, start_node, wait_for
from agents.netlab.world import build_world, run_in, spawn_in, start_anvil, warren_argv

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not can_build_namespaces(), reason="the lab builds network namespaces: root only")]

#: The goal (issue 14): every node refuses within 5 s of the transaction.
REFUSE_GOAL_S = 5.0
#: A node counts as refusing after this many unanswered initiations in a row (one may be lost).
UNANSWERED = 2

#: Handshakes with argv[2]'s nodes (JSON [[public key hex, host, port], ...]) using the WireGuard key
#: in the file argv[1], one fresh initiation per node every 0.2 s (a new initiator each time: the
#: protocol allows one initiation per peer per 5 s), for argv[3] seconds or until every node has left
#: UNANSWERED initiations in a row unanswered (argv[4] = 1) or answered once (argv[4] = 0). Prints
#: one JSON object: host -> [wall time of each initiation, answered?] list.
PROBER = """
import json, socket, sys, time
from agents.wireguard.config import decode_key
from agents.wireguard.core import WireGuardDevice
key = decode_key(open(sys.argv[1]).read().strip())
targets, limit, until_refused, unanswered = json.loads(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", 0))
sock.settimeout(0.2)
log = {host: [] for _, host, _ in targets}
done = set()
t_end = time.monotonic() + limit
while time.monotonic() < t_end and len(done) < len(targets):
    sent = {}
    for pk, host, port in targets:
        if host in done:
            continue
        dev = WireGuardDevice(key)
        dev.add_peer(bytes.fromhex(pk), endpoint=(host, port))
        dev.initiate_handshake(bytes.fromhex(pk), time.monotonic())
        for data, endpoint in dev.drain_outbox():
            sock.sendto(data, endpoint)
        sent[host] = time.time()
    answered = set()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        try:
            data, src = sock.recvfrom(2048)
        except OSError:
            break
        if data[:1] in (b"\\x02", b"\\x03"):
            answered.add(src[0])
    for host, at in sent.items():
        log[host].append([at, host in answered])
        tail = [a for _, a in log[host][-unanswered:]]
        if (until_refused and len(tail) == unanswered and not any(tail)) or (not until_refused and tail[-1]):
            done.add(host)
print(json.dumps(log))
"""


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("revocation")
    with start_anvil() as anvil, Lab(prefix="wrv") as lab:
        chain = deploy_chain(anvil.url, workdir)
        world = build_world(lab, chain_port=anvil.port, file_size=1 << 20, client_nat=NatType.PORT_RESTRICTED)
        nodes = {"node_a": start_node(world, chain, world.node_a, workdir)}
        for name in ("node_b", "node_c"):
            nodes[name] = start_node(world, chain, getattr(world, name), workdir, bootstrap=world.node_a)
        yield {"lab": lab, "world": world, "chain": chain, "nodes": nodes, "workdir": workdir}


def _probe(node, others, *, until_refused: bool, limit: float) -> dict:
    targets = [[_public_key(o), o.host.public_address, WG_PORT] for o in others]
    result = run_in(node.host.ns, ["python3", "-c", PROBER, str(node.config.wg_key_file), json.dumps(targets),
                                   str(limit), "1" if until_refused else "0", str(UNANSWERED)], timeout=limit + 30)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    return json.loads(result.stdout)


def _public_key(node) -> str:
    from agents.wireguard.config import decode_key, public_key

    return public_key(decode_key(node.config.wg_key_file.read_text().strip())).hex()


def _channel_status(chain, channel_id: str) -> ChannelStatus:
    with connect(chain.url) as project:
        return load_contracts(project, chain.deployment).channel(bytes.fromhex(channel_id)).status


def _revoke(chain, node_id: bytes) -> float:
    """Send revocation_registry.revoke with the deployment's two guardians; returns the send time."""
    from ape import accounts

    with connect(chain.url) as project:
        contracts = load_contracts(project, chain.deployment)
        revocation = eip712.Revocation(node_id, b"\x7e" * 32, 1)
        guardians = sorted((accounts.test_accounts[i] for i in (1, 2)), key=lambda g: int(g.address, 16))
        signatures = [contracts.sign_revocation(revocation, g.private_key) for g in guardians]
        sent = time.time()
        contracts.revocations.revoke(node_id, revocation.evidence_hash, 1, signatures, sender=accounts.test_accounts[0])
        assert contracts.registry.is_revoked(node_id)
    return sent


@pytest.fixture(scope="module")
def scenario(net):
    world, nodes, workdir = net["world"], net["nodes"], net["workdir"]
    config = client_config(world, net["chain"], workdir, world.node_a)
    log = open(workdir / "client.log", "ab")
    client = spawn_in(world.client, warren_argv("connect", "--config", str(config)), stdout=log, stderr=log)

    def ready():
        if client.poll() is not None:
            raise AssertionError((workdir / "client.log").read_text()[-4000:])
        status = client_status(world, config)
        return status if status.get("connected") and status.get("standby") else None

    first = wait_for(ready, 150, interval=0.5, what="client connected with a standby")
    by_id = {n.status()["node_id"]: n for n in nodes.values()}
    revoked = by_id[first["node_id"]]
    others = [n for n in nodes.values() if n is not revoked]
    public_others = [n for n in others if n.host.nat is None]
    before = _probe(revoked, public_others, until_refused=False, limit=10)
    sent = _revoke(net["chain"], bytes.fromhex(first["node_id"]))
    after = _probe(revoked, public_others, until_refused=True, limit=20)
    lists = wait_for(lambda: all(((n.status() or {}).get("revocations") or {}).get("refusing", {}).get(first["node_id"])
                                 for n in others) and {n.host.name: n.status()["revocations"] for n in others},
                     20, what="every other node's revocation list holding the id")
    moved = wait_for(lambda: (s := client_status(world, config)).get("failovers") and s.get("node_id") != first["node_id"]
                     and s, 30, what="the client's failover away from the revoked node")
    killswitch = KillSwitch(KILLSWITCH_TABLE, netns=world.client.name).state()
    refunded = wait_for(lambda: _channel_status(net["chain"], first["channel_id"]) is ChannelStatus.FINALISED, 30,
                        what="the revoked node's channel closed by exit_revoked")
    yield {"refunded": refunded, "first": first, "revoked": revoked, "others": others, "public_others": public_others, "before": before,
           "after": after, "sent": sent, "lists": lists, "moved": moved, "killswitch": killswitch,
           "config": config, "client": client}
    run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)


def test_before_revocation__other_nodes_answer_the_key(scenario):
    for host, tries in scenario["before"].items():
        assert any(answered for _, answered in tries), (host, tries)


def test_revoked_on_chain__every_other_node_refuses_its_handshakes_within_5_s(scenario):
    s = scenario
    figures = {}
    for host, tries in s["after"].items():
        # the first initiation of the final unanswered run: from then on this node refuses the key
        run_start = len(tries) - UNANSWERED
        assert run_start >= 0 and not any(a for _, a in tries[run_start:]), (host, tries)
        figures[host] = round(tries[run_start][0] - s["sent"], 2)
    listed = {name: round(r["refusing"][s["first"]["node_id"]]["since"] - s["sent"], 2) for name, r in s["lists"].items()}
    print(f"\nrevocation tx -> handshake refused: {figures} s; -> in the node's list: {listed} s "
          f"(sources: { {n: r['refusing'][s['first']['node_id']]['source'] for n, r in s['lists'].items()} })")
    assert figures and max(figures.values()) < REFUSE_GOAL_S, figures
    assert max(listed.values()) < REFUSE_GOAL_S, listed


def test_revoked_on_chain__quarantined_handshake_of_the_key_ended(scenario):
    # the probes before the revocation put the key in quarantine at each public node: torn down since
    for name, r in scenario["lists"].items():
        entry = r["refusing"][scenario["first"]["node_id"]]
        if name in {n.host.name for n in scenario["public_others"]}:
            assert entry["ended"] >= 1, (name, entry)


def test_client_on_revoked_node__fails_over_at_once__kill_switch_holds(scenario, net):
    s = scenario
    failover = s["moved"]["failovers"][0]
    assert failover["from"] == s["first"]["node_id"] and failover["why"] == "revoked", failover
    assert s["moved"]["node_id"] != s["first"]["node_id"]
    ks = s["killswitch"]
    assert ks is not None and "wrnc0" in ks.tuns, ks
    assert s["refunded"]  # its channel finalised at once (exit_revoked), not after a challenge period
    revoked = s["revoked"].host
    assert revoked.name == "node_a" or (revoked.public_address, WG_PORT) not in ks.endpoints, ks
    world = net["world"]
    lookup = run_in(world.client, ["python3", "-c", "import urllib.request, sys; "
                                   f"print(len(urllib.request.urlopen({world.file_url!r}, timeout=20).read()))"],
                    timeout=60)
    assert lookup.stdout.decode().strip() == str(1 << 20), lookup.stderr.decode(errors="replace")[-2000:]
