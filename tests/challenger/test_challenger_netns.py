"""Challengers in the lab (netns + anvil): as customers, through `warren node run`, reporting on chain.

Three nodes: node_a honest, node_b throttled with tc to a tenth of the capacity it advertises,
node_c (behind a home NAT) tampering (agents.node.tamper, the test-only hook: it inverts a byte of
every TCP segment it forwards). The challengers' payload endpoint runs on the internet's web host. Three staked challengers,
each with its own `warren connect` client config (fresh WireGuard key per challenge, the client's
session setup and receipts), run `warren challenger once --all` in the client's namespace one after
the other. The first pays by voucher (`pay = "voucher"`: each node redeems a note in the tunnel, so
the payer on chain is the pool), the other two by payment channel from the client account. Each node advertises its own capacity in
its PeerRecord (``capacity_mbps``) and every challenge is judged against that node's figure; both
ends' byte counts of each session (the challenger's tunnel counter, the node's invoice) are in the
transcripts and agree. Checked on chain: node_a's three reports
pass and its score is full; node_b's three fail; once the chain has moved into the next epoch, the
first challenger's next `once` slashes node_b by slash_bps (reputation.slash_epoch: all of its
reports failed) and the bounty is split among the three; every report carries the hash of a
transcript the challenger stored.
node_c's transcripts show the changed bytes: each challenger wrote a revocation proposal; two
guardians review and sign it with `warren guardian sign`, `warren guardian submit` revokes node_c
and its remaining stake goes to the treasury, with the transcript hash as the evidence hash; node_a
and node_b then refuse node_c's key (`warren node status`: revocations.refusing).
"""

from __future__ import annotations

import json
import os

import pytest

from agents.chain.connect import connect, load_contracts
from agents.chain.deploy import DeployParameters
from agents.challenger.store import TranscriptStore
from agents.client.config import ClientConfig
from agents.client.config import write_config as write_client_config
from agents.netlab import Lab, can_build_namespaces
from agents.netlab.warren_net import CLIENT_ACCOUNT, WG_PORT, deploy_chain, start_node, wait_for
from agents.netlab.world import REPO_ROOT, build_world, run_in, spawn_in, start_anvil, warren_argv, warren_env
from agents.node.tamper import ENV as TAMPER_ENV
from agents.tomlconfig import write_toml
from agents.wallet import AccountSpec

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not can_build_namespaces(), reason="the lab builds network namespaces: root only")]

#: ape test accounts of the three challengers (0 owner, 1-2 guardians, 3-5 nodes, 6 client).
CHALLENGERS = (7, 8, 9)
TOKEN = 10**18
#: The deployed minimum challenger stake (each challenger registers with exactly that).
CHALLENGER_STAKE = DeployParameters().min_challenger_stake
#: What each node advertises in its PeerRecord (kbit/s; its config's capacity_mbps): the challengers
#: judge each against its own. node_b is shaped to a tenth of its figure.
ADVERTISED_KBPS = {"node_a": 16_000, "node_b": 20_000, "node_c": 12_000}
ENDPOINT_PORT = 8080
PAYLOAD = 1 << 20
#: The development key the deployed verifier was made from (zk/vyper_verifier.py CHECKED_IN_SEED).
DEV_SEED = "warren development key v1"
#: The voucher pool's denomination and the relayer fee the voucher-paying challenger offers, token wei.
DENOMINATION = 2 * TOKEN
RELAYER_FEE = 10**16


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("challenger")
    with start_anvil() as anvil, Lab(prefix="wchl") as lab:
        chain = deploy_chain(anvil.url, workdir, voucher_denominations=(DENOMINATION,))
        world = build_world(lab, chain_port=anvil.port, file_size=1 << 16, nat_node=True)
        endpoint = spawn_in(world.web, [*warren_argv("challenger", "endpoint", "--listen",
                                                     f"{world.web_address}:{ENDPOINT_PORT}")])
        capacity = {name: {"capacity_mbps": kbps / 1000} for name, kbps in ADVERTISED_KBPS.items()}
        nodes = {"node_a": start_node(world, chain, world.node_a, workdir, extra=capacity["node_a"])}
        nodes["node_b"] = start_node(world, chain, world.node_b, workdir, bootstrap=world.node_a,
                                     extra=capacity["node_b"])
        os.environ[TAMPER_ENV] = "1"  # read by node_c's process only (its environment is copied at spawn)
        try:
            nodes["node_c"] = start_node(world, chain, world.node_c, workdir, bootstrap=(world.node_a, world.node_b),
                                         extra=capacity["node_c"])
        finally:
            del os.environ[TAMPER_ENV]
        world.node_b.ns.shape("eth0", rate_mbit=ADVERTISED_KBPS["node_b"] / 1000 / 10)
        addresses = []
        with connect(chain.url) as project:
            from ape import accounts

            contracts = load_contracts(project, chain.deployment)
            owner = accounts.test_accounts[0]
            for index in CHALLENGERS:
                account = accounts.test_accounts[index]
                contracts.token.mint(account, CHALLENGER_STAKE, sender=owner)
                contracts.token.approve(contracts.registry, CHALLENGER_STAKE, sender=account)
                contracts.registry.register_challenger(CHALLENGER_STAKE, sender=account)
                addresses.append(str(account.address))
            stakes = {n: int(contracts.registry.node_stake(bytes.fromhex(p.status()["node_id"])))
                      for n, p in nodes.items()}
        # The pool's development proving key, made here: a fresh clone has none (keys/ is not in git).
        keys = workdir / "keys"
        _host_warren("voucher", "setup", "--depth", "20", "--seed", DEV_SEED, "--out", str(keys))
        configs = []
        for k, index in enumerate(CHALLENGERS):
            folder = workdir / f"challenger{k}"
            folder.mkdir()
            paying = ({"account": None, "pay": "voucher", "voucher_notes": folder / "notes.json",
                       "voucher_keys": keys, "relayer_fee": RELAYER_FEE} if k == 0 else {"account": AccountSpec(test_account=CLIENT_ACCOUNT)})
            client = ClientConfig(data_dir=folder / "client", interface=f"wrnq{k}", budget=TOKEN,
                                  bootstrap=((world.node_a.public_address, WG_PORT),), rpc="http://127.0.0.1:8545",
                                  deployment=chain.deployment, **paying)
            if k == 0:  # one note per node, deposited from the client account (the only time it shows)
                for _ in nodes:
                    _host_warren("voucher", "deposit", "--amount", str(DENOMINATION), "--notes",
                                 str(folder / "notes.json"), "--account", str(CLIENT_ACCOUNT), "--rpc", chain.url,
                                 "--deployment", str(chain.deployment))
            write_client_config(folder / "client.toml", client, force=True)
            path = folder / "challenger.toml"
            write_toml(path, {"client": "client.toml", "data_dir": str(folder / "data"), "interface": f"wrnk{k}",
                              "endpoint": f"http://{world.web_address}:{ENDPOINT_PORT}", "payload_bytes": PAYLOAD,
                              "challenge": {"per_epoch": 8},  # no expected_kbps: every node advertises
                              "account": {"test_account": index}})
            configs.append(path)
        yield {"anvil": anvil, "world": world, "chain": chain, "nodes": nodes, "configs": configs,
               "challengers": addresses, "stakes": stakes, "endpoint": endpoint, "workdir": workdir}


def _host_warren(*args, timeout=120) -> str:
    """`warren ...` on the host (the chain's RPC is the host's anvil); its last stdout line."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "agents.cli", *args], cwd=REPO_ROOT, env=warren_env(),
                            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def _once(net, config, *flags) -> dict:
    """`warren challenger once` in the client's namespace; its JSON line (challenges, slashes)."""
    result = run_in(net["world"].client, warren_argv("challenger", "once", "--config", str(config), *flags),
                    timeout=240)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()[-4000:]
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def test_three_challengers__honest_passes__throttled_slashed_with_bounty_split(net):
    ids = {n: p.status()["node_id"] for n, p in net["nodes"].items()}
    runs = [_once(net, config, "--all")["challenges"] for config in net["configs"]]
    for ran in runs:
        by_node = {r["node_id"]: r for r in ran}
        assert set(by_node) == set(ids.values()), ran
        honest, throttled, tampering = by_node[ids["node_a"]], by_node[ids["node_b"]], by_node[ids["node_c"]]
        assert not tampering["passed"] and tampering["tampered"], json.dumps(tampering)
        assert honest["passed"] and not honest["tampered"], json.dumps(honest)
        assert honest["throughput_kbps"] >= ADVERTISED_KBPS["node_a"] // 2, json.dumps(honest)
        assert not throttled["passed"] and not throttled["tampered"], json.dumps(throttled)
        assert throttled["reasons"][0].startswith("slow: "), json.dumps(throttled)
        assert throttled["throughput_kbps"] < ADVERTISED_KBPS["node_b"] // 2
        # Each node judged against its own advertised capacity, read from its PeerRecord.
        assert {name: by_node[ids[name]]["advertised_kbps"] for name in ids} == ADVERTISED_KBPS
        # Both ends counted every session and the payload arrived whole. On node_a and node_c the
        # node's count (its invoice) is within 1 % of the challenger's tunnel counter. node_b's tc
        # shaper drops packets after the node counted them (and TCP sends them again), so its count
        # runs ahead of what arrived (5-10 % in the first runs): more, never less.
        for name in ids:
            r = by_node[ids[name]]
            print(f"{name}: payload {r['payload_bytes']} B, challenger counted {r['tunnel_bytes']} B, "
                  f"node counted {r['node_bytes']} B")
            assert r["payload_bytes"] == PAYLOAD, json.dumps(r)
            assert r["tunnel_bytes"] >= PAYLOAD and r["node_bytes"] >= PAYLOAD, json.dumps(r)
        for name in ("node_a", "node_c"):
            r = by_node[ids[name]]
            assert abs(r["node_bytes"] - r["tunnel_bytes"]) <= r["tunnel_bytes"] // 100, json.dumps(r)
            assert not any(reason.startswith("count: ") for reason in r["reasons"]), json.dumps(r)
        assert throttled["node_bytes"] >= throttled["tunnel_bytes"], throttled
    # reputation slashes an epoch once it is over (slash_epoch, open during the next epoch): nothing yet.
    epoch = runs[0][0]["epoch"]
    with connect(net["chain"].url) as project:
        from ape import chain

        rep = load_contracts(project, net["chain"].deployment).reputation
        assert tuple(rep.epoch_tally(bytes.fromhex(ids["node_b"]), epoch)) == (3, 3, False)
        assert tuple(rep.epoch_tally(bytes.fromhex(ids["node_a"]), epoch)) == (3, 0, False)
        chain.pending_timestamp = (epoch + 1) * int(rep.epoch_length()) + 5
        chain.mine()
    # The first challenger's next run, early in the next epoch: no challenge due yet, the slashes.
    after = _once(net, net["configs"][0])
    decided = {s["node_id"]: s for s in after["slashes"]}
    assert after["challenges"] == [] and decided[ids["node_b"]]["tx"].startswith("0x"), after
    assert ids["node_a"] not in decided  # it passed: nothing to ask
    with connect(net["chain"].url) as project:
        contracts = load_contracts(project, net["chain"].deployment)
        rep, registry = contracts.reputation, contracts.registry
        node_a, node_b = bytes.fromhex(ids["node_a"]), bytes.fromhex(ids["node_b"])
        assert (int(rep.score(node_a)), int(rep.report_count(node_a))) == (10_000, 3)
        assert (int(rep.score(node_b)), int(rep.report_count(node_b))) == (0, 3)
        head = project.provider.get_block("latest").number + 1
        [slashed] = [e for e in rep.QuorumSlashed.range(0, head) if bytes(e.node_id) == node_b]
        taken = net["stakes"]["node_b"] * int(rep.slash_bps()) // 10_000
        assert (bytes(slashed.node_id), int(slashed.amount)) == (node_b, taken)
        assert int(registry.node_stake(node_b)) == net["stakes"]["node_b"] - taken
        assert int(registry.node_stake(node_a)) == net["stakes"]["node_a"]
        bounties = [log for log in rep.BountyPaid.range(0, head) if bytes(log.node_id) == node_b]
        assert sorted(str(b.challenger) for b in bounties) == sorted(net["challengers"])
        assert sum(int(b.amount) for b in bounties) == taken
        committed = {(str(e.challenger), bytes(e.node_id).hex()): bytes(e.transcript_hash).hex()
                     for e in rep.ReportTranscript.range(0, head)}
        # The voucher-paying challenger's sessions were paid from the pool: one redemption per node.
        pool = project.voucher_pool.at(next(a for n, a in json.loads(net["chain"].deployment.read_text())
                                            ["addresses"].items() if n.startswith("voucher_pool")))
        redeemed = sorted(bytes(e.node_id).hex() for e in pool.Redeemed.range(0, head))
        assert redeemed == sorted(ids.values())
    assert len(committed) == 9
    for k, (config, ran) in enumerate(zip(net["configs"], runs)):
        store = TranscriptStore(config.parent / "data" / "transcripts.sqlite")
        # Uptime probes ran before the challenges (four per node in the epoch): every node answered.
        assert [store.uptime(bytes.fromhex(i), ran[0]["epoch"]) for i in ids.values()] == [1.0, 1.0, 1.0]
        for r in ran:
            assert committed[(net["challengers"][k], r["node_id"])] == r["transcript_hash"]
            assert store.transcript(r["transcript_hash"]).digest().hex() == r["transcript_hash"]
        store.close()


def test_tampering_node__proposed__guardians_sign__revoked_and_stake_taken(net):
    node_c = net["nodes"]["node_c"].status()["node_id"]
    proposals = [config.parent / "data" / "proposals" / f"{node_c}.json" for config in net["configs"]]
    if not all(p.exists() for p in proposals):  # the first test ran the challenges; alone, run them here
        for config in net["configs"]:
            _once(net, config, "--all")
    assert all(p.exists() for p in proposals)
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "agents.cli", "guardian", "review", str(proposals[0])],
                           cwd=REPO_ROOT, env=warren_env(), capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["ok"] is True
    signed = []
    for guardian in (1, 2):  # deploy_chain's guardians: test accounts 1 and 2, quorum 2
        out = net["workdir"] / f"signed-{guardian}.json"
        _host_warren("guardian", "sign", str(proposals[0]), "--test-account", str(guardian), "--out", str(out))
        signed.append(str(out))
    with connect(net["chain"].url) as project:
        contracts = load_contracts(project, net["chain"].deployment)
        node_id = bytes.fromhex(node_c)
        stake_before = int(contracts.registry.node_stake(node_id))
        treasury = str(contracts.revocations.treasury())
        treasury_before = int(contracts.token.balanceOf(treasury))
    result = json.loads(_host_warren("guardian", "submit", *signed, "--test-account", "0", "--rpc", net["chain"].url,
                                "--deployment", str(net["chain"].deployment)))
    assert result["revoked"] == "0x" + node_c and len(result["signers"]) == 2 and result["refused"] == []
    with connect(net["chain"].url) as project:
        contracts = load_contracts(project, net["chain"].deployment)
        head = project.provider.get_block("latest").number + 1
        [event] = list(contracts.revocations.NodeRevoked.range(0, head))
        assert bytes(event.node_id) == node_id and int(event.slashed) == stake_before > 0
        assert bool(contracts.registry.is_revoked(node_id)) and int(contracts.registry.node_stake(node_id)) == 0
        assert int(contracts.token.balanceOf(treasury)) == treasury_before + stake_before
        evidence = bytes(event.evidence_hash).hex()
    # The data plane follows (issue 14's other half, agents/node/revocations.py): both other nodes refuse it.
    for name in ("node_a", "node_b"):
        wait_for(lambda: node_c in ((net["nodes"][name].status() or {}).get("revocations", {}).get("refusing", {})),
                 30, what=f"{name} refusing the revoked node_c")
    store = TranscriptStore(net["configs"][0].parent / "data" / "transcripts.sqlite")
    transcript = store.transcript(evidence)  # the evidence is the first challenger's stored transcript
    store.close()
    assert transcript.node_id == node_c and transcript.diffs
