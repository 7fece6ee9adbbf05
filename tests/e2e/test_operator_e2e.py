"""Operator experience end to end (issue 12): metrics, the dashboard in Chromium, logs without secrets.

One lab world (web server, one public node, a client behind a NAT), one plain anvil with Warren. The
node runs `warren node run --log-format json` with a keystore operator (so a passphrase exists to
leak); the client runs `warren connect` and downloads through it, slowly, so traffic flows while the
metrics are scraped and the page is read. Every figure is checked against the node's own: `warren
node status --json`, `warren node earnings --json`, its SQLite store, and the chain.
"""

import json
import signal
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.chain.connect import connect, load_contracts
from agents.netlab import Lab, NatType, can_build_namespaces
from agents.netlab.warren_net import NODE_ACCOUNTS, client_config, client_status, deploy_chain, start_node, wait_for
from agents.netlab.world import build_world, run_in, spawn_in, start_anvil, warren_argv
from agents.node.store import CONFIRMED, NodeStore
from agents.wallet import AccountSpec, create_keystore

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not can_build_namespaces(), reason="the lab builds network namespaces: root only")]

FILE_SIZE = 16 << 20
PASSPHRASE = "operator passphrase: correct horse battery staple"
#: A reader that takes ~1.2 MiB/s, so a download lasts long enough to be watched (~13 s).
SLOW_FETCH = """
import hashlib, sys, time, urllib.request
h, got = hashlib.sha256(), 0
with urllib.request.urlopen(sys.argv[1], timeout=60) as r:
    while chunk := r.read(1 << 16):
        h.update(chunk); got += len(chunk); time.sleep(0.05)
print(h.hexdigest(), got)
"""
GET = """
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        print(r.status); sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); sys.stdout.write(e.read().decode())
"""


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    from ape import accounts

    workdir = tmp_path_factory.mktemp("operator")
    with start_anvil() as anvil, Lab(prefix="wop") as lab:
        chain = deploy_chain(anvil.url, workdir)
        world = build_world(lab, chain_port=anvil.port, file_size=FILE_SIZE, nat_node=False,
                            client_nat=NatType.PORT_RESTRICTED)
        secrets_dir = workdir / "operator"
        secrets_dir.mkdir(mode=0o700)
        (secrets_dir / "passphrase").write_text(PASSPHRASE + "\n")
        (secrets_dir / "passphrase").chmod(0o600)
        operator_key = bytes.fromhex(str(accounts.test_accounts[NODE_ACCOUNTS["node_a"]].private_key).removeprefix("0x"))
        create_keystore(secrets_dir / "keystore.json", PASSPHRASE, operator_key, kdf="pbkdf2", iterations=2)
        spec = AccountSpec(keystore=secrets_dir / "keystore.json", passphrase_file=secrets_dir / "passphrase")
        node = start_node(world, chain, world.node_a, workdir, operator=spec, args=("--log-format", "json"))
        config = client_config(world, chain, workdir, world.node_a)
        client_log = workdir / "client.log"
        proc = spawn_in(world.client, warren_argv("connect", "--config", str(config), "--log-format", "json"),
                        stdout=open(client_log, "ab"), stderr=open(client_log, "ab"))

        def connected():
            if proc.poll() is not None:
                raise AssertionError(client_log.read_text()[-4000:])
            status = client_status(world, config)
            return status if status.get("connected") else None

        status = wait_for(connected, 120, interval=0.5, what="client connected")
        yield {"anvil": anvil, "world": world, "chain": chain, "node": node, "client_config": config,
               "client_proc": proc, "client_log": client_log, "channel_id": status["channel_id"],
               "operator_key": operator_key, "workdir": workdir}


def _download(net):
    world = net["world"]
    return spawn_in(world.client, [sys.executable, "-c", SLOW_FETCH, world.file_url], stdout=open(
        net["workdir"] / "fetch.out", "ab"))


def _scrape(ns, port):
    result = run_in(ns, [sys.executable, "-c", GET, f"http://127.0.0.1:{port}/metrics"], timeout=30)
    code, _, text = result.stdout.decode().partition("\n")
    assert code == "200", result.stdout.decode() + result.stderr.decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _node_status(net):
    result = run_in(net["world"].node_a.ns, warren_argv("node", "status", "--config", str(net["node"].config_path),
                                                        "--json"), timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def test_metrics__scraped_while_downloading__equal_the_node_s_own_figures(net):
    world, node = net["world"], net["node"]
    channel = net["channel_id"]
    fetch = _download(net)
    try:
        flowing = wait_for(lambda: (m := _scrape(world.node_a.ns, 9470)) and any(
            k[0] == "warren_node_session_bytes_out" and dict(k[1])["channel"] == channel and v > 4 << 20
            for k, v in m.items()) and m, 60, what="bytes flowing in the metrics")
        assert fetch.poll() is None, "the download ended before the scrape: nothing was flowing"
    finally:
        fetch.wait(timeout=120)
    assert flowing[("warren_node_sessions", ())] == 1
    assert flowing[("warren_node_handshakes_total", ())] >= 1
    digest, size = (net["workdir"] / "fetch.out").read_text().split()[-2:]
    assert (digest, int(size)) == (world.file_sha256, FILE_SIZE)
    paid = wait_for(lambda: (s := node.status()) and s["sessions"] and s["sessions"][0]["paid_bytes"] >= FILE_SIZE
                    and s, 30, what="receipts for the download")
    # Bracket a scrape between two reads of the node's status: every counter lies between them.
    before = _node_status(net)["live"]
    scraped = _scrape(world.node_a.ns, 9470)
    after = _node_status(net)["live"]
    (session_before,), (session_after,) = before["sessions"], after["sessions"]
    client = session_after["client"]
    labels = (("channel", channel), ("client", client))
    for metric, key in (("warren_node_session_bytes_in", "rx_bytes"), ("warren_node_session_bytes_out", "tx_bytes"),
                        ("warren_node_session_paid_bytes", "paid_bytes"), ("warren_node_session_paid_wei", "paid_amount")):
        # Prometheus values are 64-bit floats: wei amounts past 2**53 compare as floats
        assert float(session_before[key]) <= scraped[(metric, labels)] <= float(session_after[key]), metric
    assert before["counters"]["receipts_accepted"] <= scraped[("warren_node_receipts_accepted_total", ())] \
        <= after["counters"]["receipts_accepted"]
    assert scraped[("warren_node_session_paid_bytes", labels)] >= FILE_SIZE > 0 and paid
    # Unsettled: the store's latest receipts less what it settled (the threshold is out of reach here).
    store = NodeStore(node.config.data_dir / "node.db")
    try:
        unsettled = sum(r.receipt.cumulative_amount - s for _, r, s in store.unsettled())
    finally:
        store.close()
    assert float(before["settlement"]["unsettled_amount"]) <= scraped[("warren_node_unsettled_wei", ())] \
        <= float(after["settlement"]["unsettled_amount"])
    assert float(unsettled) >= scraped[("warren_node_unsettled_wei", ())] > 0
    # The client's endpoint against `warren status`.
    c_before = client_status(world, net["client_config"])
    c_scraped = _scrape(world.client, 9471)
    c_after = client_status(world, net["client_config"])
    node_label = (("node", c_after["node_id"]),)
    assert c_scraped[("warren_client_connected", ())] == 1
    assert float(c_before["spent"]) <= c_scraped[("warren_client_spent_wei", node_label)] <= float(c_after["spent"])
    assert c_before["paid_bytes"] <= c_scraped[("warren_client_paid_bytes", node_label)] <= c_after["paid_bytes"]
    assert c_scraped[("warren_client_failovers_total", ())] == 0
    for metric, key in (("warren_client_session_bytes_in", "rx_bytes"), ("warren_client_session_bytes_out", "tx_bytes")):
        assert c_before[key] <= c_scraped[(metric, node_label)] <= c_after[key], metric
    assert c_scraped[("warren_client_session_bytes_in", node_label)] > FILE_SIZE  # the download came in


def test_dashboard__chromium_while_downloading__live_numbers_and_a_price_change_on_chain(net, tmp_path):
    world, node, chain = net["world"], net["node"], net["chain"]
    refused = run_in(world.node_a.ns, [sys.executable, "-c", GET, "http://127.0.0.1:9480/api/overview"], timeout=30)
    assert refused.stdout.decode().startswith("401") and "token" in refused.stdout.decode()
    token_file = node.config.data_dir / "dashboard.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    node_id = bytes.fromhex(node.status()["node_id"])
    with connect(chain.url) as project:
        old_price = load_contracts(project, chain.deployment).node(node_id).price_per_gib
    new_price = old_price * 3 // 2
    fetch = _download(net)
    try:
        result = run_in(world.node_a.ns, [sys.executable, "tests/dashboard_browser.py", "http://127.0.0.1:9480",
                                          token_file.read_text().strip(), str(tmp_path), str(new_price)], timeout=240)
        assert result.returncode == 0, result.stderr.decode()[-4000:]
    finally:
        fetch.wait(timeout=120)
    shown = json.loads(result.stdout.decode().strip().splitlines()[-1])
    page = shown["page"]
    status = _node_status(net)
    earnings = json.loads(run_in(world.node_a.ns, warren_argv("node", "earnings", "--config",
                                                              str(node.config_path), "--json"), timeout=60).stdout)
    facts = status["chain"]
    assert page["node_id"] == facts["node_id"] and page["registered"] == "yes, active"
    assert page["stake"] == str(facts["stake"]) and page["score_bps"] == str(facts["score_bps"])
    assert page["revoked"] == "no" and page["price_per_gib"] == str(old_price)
    (row,) = [s for s in page["sessions"] if s["channel_id"] == net["channel_id"]]
    # A rate above zero between two polls: the download was flowing while the page was read.
    assert row["tx_bytes"] > 0 and row["rate"].endswith("Mbit/s") and float(row["rate"].split()[0]) > 1
    # The page's totals are `warren node earnings`'s (the page was read first: receipts only grow since).
    assert int(page["totals"]["earned"]) <= earnings["earned"]
    assert int(page["totals"]["earned"]) == int(page["totals"]["settled"]) + int(page["totals"]["unsettled"])
    assert int(page["totals"]["net"]) == int(page["totals"]["earned"]) - int(page["totals"]["fee"])
    assert int(page["totals"]["settled"]) == earnings["settled"]
    # `warren node status` shows the same totals (read between the page and `earnings`).
    totals = status["earnings"]
    assert int(page["totals"]["earned"]) <= totals["earned"] <= earnings["earned"]
    assert totals["earned"] == totals["settled"] + totals["unsettled"] and totals["settled"] == earnings["settled"]
    assert totals["net"] == totals["earned"] - totals["fee"] and totals["channels"] == len(earnings["channels"])
    assert page["chart_bars"] == 3 * len(earnings["days"])
    # The price control: refused in words, then confirmed and on chain.
    assert shown["bad_price"].startswith("error: a price is a whole number of token wei per GiB")
    assert shown["price_message"].startswith(f"ok: price changed to {new_price} token wei per GiB (transaction 0x")
    with connect(chain.url) as project:
        assert load_contracts(project, chain.deployment).node(node_id).price_per_gib == new_price
    assert _node_status(net)["chain"]["price_per_gib"] == new_price == node.status()["price_per_gib"]
    assert f"price_per_gib = {new_price}" in node.config_path.read_text()  # a restart keeps it
    assert shown["after"]["price_per_gib"] == str(new_price)
    print("screenshots:", shown["screenshot"], shown["screenshot_after"])


def test_logs__real_run__json_lines_and_no_secret_anywhere(net):
    node = net["node"]
    time.sleep(1)
    node_log = node.log()
    client_log = net["client_log"].read_text(errors="replace")
    wg_key = (node.config.data_dir / "wg.key").read_text().strip()
    token = (node.config.data_dir / "dashboard.token").read_text().strip()
    operator_key = net["operator_key"]
    for secret in (PASSPHRASE, wg_key, token, operator_key.hex(), "0x" + operator_key.hex()):
        assert secret not in node_log and secret not in client_log, "a secret reached a log"
    lines = node_log.splitlines()
    assert len(lines) > 10
    events = [json.loads(line) for line in lines]  # every line is one whole JSON object (ape's and warnings too)
    assert {"ts", "level", "logger", "msg"} <= set(events[0])
    assert any("dashboard: price now" in e["msg"] for e in events)
    assert any(e["logger"].startswith("warren.node") for e in events)
    assert any(e["logger"] == "ape" for e in events)  # "Confirmed 0x..." lines, in the same format


def test_dashboard__after_the_node_settled__settlements_and_totals_agree_with_the_chain(net, tmp_path):
    """Numbers that add up with a real settlement (Mysterium's most repeated complaint): the node is
    stopped mid-session (it settles what it holds on shutdown) and started again; the page lists the
    settlement with its transaction, and its totals are the chain's and `warren node status`'s."""
    from agents.node.config import load_config

    world, chain, node = net["world"], net["chain"], net["node"]
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=90) == 0
    listed = load_config(node.config_path).price_per_gib  # as the dashboard test left it
    node = start_node(world, chain, world.node_a, net["workdir"], operator=node.config.operator,
                      args=("--log-format", "json"), extra={"price_per_gib": listed})
    net["node"] = node
    store = NodeStore(node.config.data_dir / "node.db")
    try:
        rows = [r for r in store.settlements(status=CONFIRMED) if r.tx_hash]
    finally:
        store.close()
    assert rows, "the node settled nothing on shutdown"
    token = (node.config.data_dir / "dashboard.token").read_text().strip()
    result = run_in(world.node_a.ns, [sys.executable, "tests/dashboard_browser.py", "http://127.0.0.1:9480", token,
                                      str(tmp_path)], timeout=240)
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    page = json.loads(result.stdout.decode().strip().splitlines()[-1])["page"]
    status = _node_status(net)["earnings"]
    with connect(chain.url) as project:
        contracts = load_contracts(project, chain.deployment)
        on_chain = {r.channel_id: contracts.channel(r.channel_id).settled for r in rows}
        mined = {r.tx_hash.hex(): project.provider.get_receipt("0x" + r.tx_hash.hex()).status for r in rows}
    print(f"settlements {[(r.channel_id.hex()[:12], r.amount, '0x' + r.tx_hash.hex()[:12]) for r in rows]}; "
          f"page totals {page['totals']}")
    assert all(status_ == 1 for status_ in mined.values()), mined  # every listed transaction is mined, succeeded
    assert page["settlement_rows"] >= len(rows)
    assert max(r.amount for r in rows if r.channel_id == rows[-1].channel_id) == on_chain[rows[-1].channel_id]
    assert int(page["totals"]["settled"]) == status["settled"] >= sum(on_chain.values()) > 0
    assert int(page["totals"]["earned"]) == int(page["totals"]["settled"]) + int(page["totals"]["unsettled"])
    assert int(page["totals"]["earned"]) <= status["earned"]
