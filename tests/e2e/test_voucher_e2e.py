"""End to end: paying anonymously, `warren connect --pay voucher` through `warren node run`, in the lab.

One lab world per module (an internet with web + DNS servers, nodes NL and DE public, a client behind
a home NAT) and one plain anvil with Warren and a voucher pool deployed. The client deposits notes
with `warren voucher deposit` (its account appears on chain there and nowhere else); `warren connect
--pay voucher` proves a note for the chosen node, and the node submits the redemption as relayer
inside the tunnel during setup. Checked from outside: the file's SHA-256, the pool's channel and
settlement, every redemption and settlement transaction searched for the depositor's address. With
two notes, the standby is paid by the second: the exit is killed and the client moves on, the standby
node submitting that redemption during setup.

Attacks (tests/e2e/rogue.py's hand-driven client): a redemption for another node is refused without
being submitted, a replayed setup is refused, a receipt signed by a key that is not the channel's
signer is refused.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from agents.chain.connect import connect, load_contracts
from agents.client.config import ClientConfig
from agents.client.config import write_config as write_client_config
from agents.metering import price_of
from agents.netlab import Lab, NatType, can_build_namespaces
from agents.netlab.warren_net import (
    CLIENT_ACCOUNT,
    PRICE_PER_GIB,
    WG_PORT,
    client_status,
    deploy_chain,
    start_node,
    wait_for,
)
from agents.netlab.world import REPO_ROOT, build_world, run_in, spawn_in, start_anvil, warren_argv, warren_env
from agents.prover.chain import mentions

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not can_build_namespaces(), reason="the lab builds network namespaces: root only")]

#: The file pulled through the exit.
FILE_SIZE = 8 << 20
#: The pool's denomination and the relayer fee the client offers, token wei.
DENOMINATION = 2 * 10**18
RELAYER_FEE = 10**16
#: The development key the deployed verifier was made from (zk/vyper_verifier.py CHECKED_IN_SEED).
DEV_SEED = "warren development key v1"


def _voucher(net, *args, timeout=120) -> str:
    """`warren voucher ...` on the host, against the lab's anvil."""
    argv = [sys.executable, "-m", "agents.cli", "voucher", *args, "--rpc", net["chain"].url,
            "--deployment", str(net["chain"].deployment)]
    result = subprocess.run(argv, cwd=REPO_ROOT, env=warren_env(), capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("voucher")
    with start_anvil() as anvil, Lab(prefix="wvch") as lab:
        chain = deploy_chain(anvil.url, workdir, voucher_denominations=(DENOMINATION,))
        world = build_world(lab, chain_port=anvil.port, file_size=FILE_SIZE, nat_node=False,
                            client_nat=NatType.PORT_RESTRICTED)
        nodes = {"node_a": start_node(world, chain, world.node_a, workdir)}
        nodes["node_b"] = start_node(world, chain, world.node_b, workdir, bootstrap=world.node_a)
        net = {"anvil": anvil, "world": world, "chain": chain, "nodes": nodes, "workdir": workdir,
               "keys": workdir / "keys", "notes": workdir / "client" / "notes.json",
               "rogue_notes": workdir / "rogue" / "notes.json"}
        subprocess.run([sys.executable, "-m", "agents.cli", "voucher", "setup", "--depth", "20", "--seed", DEV_SEED,
                        "--out", str(net["keys"])], cwd=REPO_ROOT, env=warren_env(), check=True,
                       capture_output=True, timeout=120)
        # The depositor: the client's own account, for its notes and the attacker's alike.
        for notes in (net["notes"], net["rogue_notes"], net["rogue_notes"]):
            _voucher(net, "deposit", "--amount", str(DENOMINATION), "--notes", str(notes),
                     "--account", str(CLIENT_ACCOUNT))
        with connect(chain.url) as project:
            from ape import accounts, chain as ape_chain

            contracts = load_contracts(project, chain.deployment)
            net["chain_id"] = contracts.chain_id
            net["channels_address"] = str(contracts.channels.address)
            net["pool"] = next(a for n, a in _deployment(chain)["addresses"].items() if n.startswith("voucher_pool"))
            net["depositor_nonce"] = int(accounts.test_accounts[CLIENT_ACCOUNT].nonce)
            net["after_deposits"] = int(ape_chain.blocks.head.number)
        yield net


def _deployment(chain) -> dict:
    return json.loads(chain.deployment.read_text())


def _pool(project, net):
    return project.voucher_pool.at(net["pool"])


def _prove(net, node_id: bytes, nth: int = 0):
    """A redemption of the attacker's ``nth`` unspent note for ``node_id``, with a fresh signer."""
    from eth_account import Account

    from agents.prover.chain import pool_tree
    from agents.prover.notes import NoteStore
    from agents.prover.redemption import make_redemption
    from zk.keys import load_keys

    signer = Account.create()
    with connect(net["chain"].url) as project:
        pool = _pool(project, net)
        stored = NoteStore(net["rogue_notes"]).unspent(net["pool"])[nth]
        pk, _ = load_keys(net["keys"])
        redemption = make_redemption(stored, pool_tree(pool), pk, 20, node_id, signer.address, RELAYER_FEE)
    return redemption, signer


def _rogue_channel(net, redemption, signer) -> dict:
    from agents.node.session import voucher_channel_id

    return {"channel_id": voucher_channel_id(net["chain_id"], net["pool"], redemption.nullifier_hash).hex(),
            "signer": signer.address, "signer_key": bytes(signer.key).hex(), "pool": net["pool"],
            "deposit": DENOMINATION - RELAYER_FEE}


def test_redemption_for_another_node__refused_and_not_submitted(net):
    from test_exit_attacks_e2e import Rogue  # the hand-driven hostile client (tests/e2e is on sys.path)

    node_a, node_b = net["nodes"]["node_a"], net["nodes"]["node_b"]
    redemption, signer = _prove(net, bytes.fromhex(node_b.status()["node_id"]))
    rogue = Rogue.start(net, node_a, {"main": _rogue_channel(net, redemption, signer)})
    try:
        before = node_a.status()["refusals"].get("foreign_redemption", 0)
        answer = rogue("request", redemption=json.loads(redemption.to_json()))
        assert (answer["answer"], answer.get("reason")) == ("refused", "foreign_redemption"), answer
        assert node_a.status()["refusals"]["foreign_redemption"] == before + 1
    finally:
        rogue.quit()
    with connect(net["chain"].url) as project:
        assert not _pool(project, net).nullifier_spent(redemption.nullifier_hash)  # node_a spent no gas on it


def test_voucher_setup__wrong_signer_receipt_refused__replayed_setup_refused(net):
    from test_exit_attacks_e2e import Rogue

    node_a = net["nodes"]["node_a"]
    node_id = bytes.fromhex(node_a.status()["node_id"])
    redemption, signer = _prove(net, node_id)
    rogue = Rogue.start(net, node_a, {"main": _rogue_channel(net, redemption, signer)}, ifname="wrnr1")
    try:
        accepted = rogue("request", redemption=json.loads(redemption.to_json()))
        assert accepted["answer"] == "accepted", accepted  # node_a submitted the redemption, then set up
        with connect(net["chain"].url) as project:
            pool = _pool(project, net)
            assert pool.nullifier_spent(redemption.nullifier_hash)
            assert int(pool.relayer_balance(net["chain"].addresses["node_a"])) >= RELAYER_FEE
        # A receipt in the pool's domain for this channel, signed by a key that is not its signer.
        bad = rogue("pay", wrong_key=True, extra=1 << 16)
        assert not bad["acked"] and "wrong_signer" in bad["refused"], bad
        good = rogue("pay", extra=1 << 16)
        assert good["acked"], good
        # The first request again, on a new control connection: refused as a replay, no new session.
        sessions = node_a.status()["counters"]["sessions"]
        replay = rogue("request", replay=0)
        assert (replay["answer"], replay.get("reason")) == ("refused", "replayed_request"), replay
        assert node_a.status()["counters"]["sessions"] == sessions
    finally:
        rogue.quit()


def _connect_voucher(net, data_dir, notes, *extra: str):
    """`warren connect --pay voucher` (a config with no [account]) in the client's namespace; returns
    the process, its config and its status once connected."""
    world, chain = net["world"], net["chain"]
    config_path = data_dir / "client.toml"
    # No [account] at all: a voucher client never sends a transaction.
    write_client_config(config_path, ClientConfig(
        account=None, pay="voucher", data_dir=data_dir, interface="wrnc0",
        bootstrap=((world.node_a.public_address, WG_PORT),), rpc="http://127.0.0.1:8545",
        deployment=chain.deployment, voucher_notes=notes, voucher_keys=net["keys"],
        relayer_fee=RELAYER_FEE), force=True)
    log = open(net["workdir"] / "client.log", "ab")
    proc = spawn_in(world.client, warren_argv("connect", "--config", str(config_path), *extra), stdout=log, stderr=log)

    def connected():
        if proc.poll() is not None:
            raise AssertionError((net["workdir"] / "client.log").read_text()[-4000:])
        status = client_status(world, config_path)
        return status if status.get("connected") else None

    return proc, config_path, wait_for(connected, 120, interval=0.5, what="the voucher client connected")


def _fetch(world) -> dict:
    fetch = run_in(world.client, [sys.executable, "-m", "agents.netlab.fetch", world.file_url, "--deadline-s", "120"],
                   timeout=150)
    result = json.loads(fetch.stdout or b"{}")
    assert (result.get("sha256"), result.get("bytes")) == (world.file_sha256, FILE_SIZE), fetch.stderr[-2000:]
    return result


def test_connect_pay_voucher__download__node_settles_on_pool__depositor_unlinked(net):
    world, chain, node_a = net["world"], net["chain"], net["nodes"]["node_a"]
    node_id = node_a.status()["node_id"]
    proc, config_path, status = _connect_voucher(net, net["workdir"] / "client", net["notes"], "--node", node_id)
    assert status["node_id"] == node_id and status["deposit"] == DENOMINATION - RELAYER_FEE
    _fetch(world)
    paid = wait_for(lambda: (s := client_status(world, config_path)).get("paid_bytes", 0) >= FILE_SIZE and s,
                    30, what="receipts for the download")
    channel_id = bytes.fromhex(paid["channel_id"])
    done = run_in(world.client, warren_argv("disconnect", "--config", str(config_path)), timeout=90)
    assert done.returncode == 0, done.stderr
    proc.wait(timeout=30)
    assert "stays open" in (net["workdir"] / "client.log").read_text()

    # The node settles what it holds on the pool when it stops (its threshold is out of reach).
    with connect(chain.url) as project:
        from ape import chain as ape_chain

        operator_before = int(load_contracts(project, chain.deployment).token.balanceOf(chain.addresses["node_a"]))
        before_stop = int(ape_chain.blocks.head.number) + 1
    node_a.proc.send_signal(signal.SIGTERM)
    node_a.proc.wait(timeout=60)
    from agents.node.store import NodeStore

    store = NodeStore(node_a.config.data_dir / "node.db")
    try:
        stored = store.channel(channel_id)
        latest = store.receipt_store(channel_id).load()[-1]
    finally:
        store.close()
    assert stored.kind == "voucher" and stored.pool == net["pool"]
    with connect(chain.url) as project:
        from ape import accounts, chain as ape_chain

        contracts = load_contracts(project, chain.deployment)
        pool = _pool(project, net)
        _, settled, settled_bytes, _, state = pool.channel(channel_id)
        # Settled on the pool for exactly the last receipt the client's signer signed (the pool checks
        # that signature), which pays for the download at the node's price.
        assert (int(settled), int(settled_bytes)) == (latest.receipt.cumulative_amount, latest.receipt.cumulative_bytes)
        assert int(state) == 1  # still open: the rest of the voucher pays the next session
        assert int(settled) == price_of(int(settled_bytes), PRICE_PER_GIB)
        assert FILE_SIZE <= int(settled_bytes) <= FILE_SIZE * 1.06 + (1 << 20)
        # The operator got the node's share of every settlement it made on the way out (ours, and the
        # attacker's channel of the test above), as the pool's events state it.
        shutdown = list(pool.ReceiptSettled.range(before_stop, int(ape_chain.blocks.head.number) + 1))
        assert channel_id in {bytes(e.channel_id) for e in shutdown}
        earned = int(contracts.token.balanceOf(chain.addresses["node_a"])) - operator_before
        assert earned == sum(int(e.node_amount) for e in shutdown) > 0

        # Unlinked: the depositor sent nothing after its deposits, and no redemption or channel
        # transaction of the pool (sender, call data, logs) names it.
        depositor = accounts.test_accounts[CLIENT_ACCOUNT].address
        assert int(accounts.test_accounts[CLIENT_ACCOUNT].nonce) == net["depositor_nonce"]
        head = int(ape_chain.blocks.head.number)
        txs = {e.transaction_hash for e in pool.Redeemed.range(net["after_deposits"], head + 1)}
        txs |= {e.transaction_hash for e in pool.ReceiptSettled.range(net["after_deposits"], head + 1)}
        assert len(txs) >= 3  # two redemptions (the rogue's and ours), at least our settlement
        named = [tx for tx in txs if mentions(ape_chain.provider.get_receipt(tx), depositor)]
        assert not named, named
        deposits = {e.transaction_hash for e in pool.Deposit.range(0, head + 1)}
        assert all(mentions(ape_chain.provider.get_receipt(tx), depositor) for tx in deposits)  # the check sees it



def test_connect_pay_voucher__exit_killed__fails_over_paid_by_a_second_note(net):
    """The standby is paid by its own note (proved while the first node serves); when the exit dies,
    the client moves to it and the node submits that redemption during setup."""
    world, chain, workdir = net["world"], net["chain"], net["workdir"]
    nodes = net["nodes"]
    if nodes["node_a"].proc.poll() is not None:  # stopped by the test above: back with its keys and stake
        nodes["node_a"] = start_node(world, chain, world.node_a, workdir)
    notes = workdir / "client2" / "notes.json"
    for _ in range(2):
        _voucher(net, "deposit", "--amount", str(DENOMINATION), "--notes", str(notes), "--account", str(CLIENT_ACCOUNT))
    proc, config_path, _ = _connect_voucher(net, workdir / "client2", notes)
    status = wait_for(lambda: (s := client_status(world, config_path)).get("standby") and s, 60,
                      what="a standby paid by the second note")
    names = {node.status()["node_id"]: name for name, node in nodes.items()}
    current, standby = names[status["node_id"]], names[status["standby"]]
    try:
        nodes[current].proc.send_signal(signal.SIGKILL)
        moved = wait_for(lambda: (s := client_status(world, config_path)).get("node_id") == status["standby"] and s,
                         30, interval=0.2, what="the client on the standby node")
        assert len(moved["failovers"]) == 1 and moved["deposit"] == DENOMINATION - RELAYER_FEE
        _fetch(world)
        paid = wait_for(lambda: (s := client_status(world, config_path)).get("paid_bytes", 0) >= FILE_SIZE and s,
                        30, what="receipts for the download through the standby")
        assert paid["channel_id"] != status["channel_id"]
    finally:
        _disconnect(world, config_path, proc)
    from agents.prover.notes import NoteStore

    with connect(chain.url) as project:
        from ape import chain as ape_chain

        pool = _pool(project, net)
        spent = [pool.nullifier_spent(n.note.nullifier_hash) for n in NoteStore(notes).notes]
        # Two redemptions: one per node the session used, each for that node.
        assert spent == [True, True], spent
        redeemed = {bytes(e.node_id) for e in pool.Redeemed.range(net["after_deposits"],
                                                                   int(ape_chain.blocks.head.number) + 1)}
    assert {bytes.fromhex(status["node_id"]), bytes.fromhex(status["standby"])} <= redeemed, (current, standby)


def _disconnect(world, config_path, proc) -> bool:
    done = run_in(world.client, warren_argv("disconnect", "--config", str(config_path)), timeout=90)
    proc.wait(timeout=30)
    return done.returncode == 0
