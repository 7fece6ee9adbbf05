"""`warren challenger run` starts the silverback app, whose startup backfills reports a previous run left.

A real anvil with Warren deployed, a registered node and a staked challenger. A transcript of the
current epoch is stored as a crashed run would leave it (saved, report not sent); `warren challenger
run` (silverback run agents.challenger.app:bot) starts and its startup task sends that report with
the transcript's hash: ReportPosted and ReportTranscript on chain. Then the process is stopped by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from agents.chain.connect import connect, load_contracts
from agents.chain.deploy import DeployParameters
from agents.challenger.payload import payload
from agents.challenger.store import TranscriptStore
from agents.challenger.verdict import judge, record
from agents.client.config import ClientConfig
from agents.client.config import write_config as write_client_config
from agents.netlab.warren_net import CLIENT_ACCOUNT, deploy_chain, wait_for
from agents.netlab.world import REPO_ROOT, start_anvil, warren_argv, warren_env
from agents.tomlconfig import write_toml
from agents.wallet import AccountSpec

pytestmark = pytest.mark.slow

CHALLENGER, OPERATOR, TOKEN = 7, 3, 10**18
#: The deployed minimum challenger stake (each challenger registers with exactly that).
CHALLENGER_STAKE = DeployParameters().min_challenger_stake


def test_run__silverback_app_starts_and_backfills_an_unsent_report(tmp_path):
    with start_anvil() as anvil:
        chain = deploy_chain(anvil.url, tmp_path)
        with connect(anvil.url) as project:
            from ape import accounts

            contracts = load_contracts(project, chain.deployment)
            challenger, operator = accounts.test_accounts[CHALLENGER], accounts.test_accounts[OPERATOR]
            contracts.token.mint(challenger, CHALLENGER_STAKE, sender=accounts.test_accounts[0])
            contracts.token.approve(contracts.registry, CHALLENGER_STAKE, sender=challenger)
            contracts.registry.register_challenger(CHALLENGER_STAKE, sender=challenger)
            key = os.urandom(32)
            contracts.token.approve(contracts.registry, 100 * TOKEN, sender=operator)
            contracts.registry.register_node(key, "DE", TOKEN, 100 * TOKEN, sender=operator)
            node_id = bytes(contracts.registry.node_id_at(contracts.registry.node_count()))
            epoch = int(contracts.reputation.current_epoch())
        client = ClientConfig(account=AccountSpec(test_account=CLIENT_ACCOUNT), data_dir=tmp_path / "client",
                              rpc=anvil.url, deployment=chain.deployment)
        write_client_config(tmp_path / "client.toml", client, force=True)
        write_toml(tmp_path / "challenger.toml", {"client": "client.toml", "data_dir": str(tmp_path / "data"),
                                                  "endpoint": "http://192.0.2.1:8080",
                                                  "account": {"test_account": CHALLENGER}})
        seed = bytes(range(32))
        transcript = record(node_id=node_id, epoch=epoch, challenger=str(challenger.address), started_at=time.time(),
                            seed=seed, size=100_000, url="http://192.0.2.1:8080/p", advertised_kbps=0,
                            received=payload(seed, 100_000), elapsed_s=0.05, latency_ms=(12.0,))
        store = TranscriptStore(tmp_path / "data" / "transcripts.sqlite")
        digest = store.save(transcript, judge(transcript))
        store.close()

        log = open(tmp_path / "run.log", "wb")
        proc = subprocess.Popen(warren_argv("challenger", "run", "--config", str(tmp_path / "challenger.toml")),
                                cwd=REPO_ROOT, env=warren_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: b"Startup complete" in (tmp_path / "run.log").read_bytes() or proc.poll() is not None,
                     120, what="the silverback app's startup")
            text = (tmp_path / "run.log").read_text(errors="replace")
            assert proc.poll() is None, text[-3000:]
            assert "backfilled: 1" in text, text[-3000:]
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        with connect(anvil.url) as project:
            contracts = load_contracts(project, chain.deployment)
            rep = contracts.reputation
            head = project.provider.get_block("latest").number + 1
            [posted] = list(rep.ReportPosted.range(0, head))
            [committed] = list(rep.ReportTranscript.range(0, head))
        assert (bytes(posted.node_id), posted.passed, int(posted.epoch)) == (node_id, True, epoch)
        assert bytes(committed.transcript_hash).hex() == digest
        reopened = TranscriptStore(tmp_path / "data" / "transcripts.sqlite")
        assert reopened.unreported(epoch) == [] and reopened.reports(epoch)[0].report_tx.startswith("0x")
        reopened.close()


def test_once__chain_down_then_restarted__the_stored_report_goes_out_after(tmp_path):
    """RPC down: `warren challenger once` fails in plain words and keeps the transcript unreported; the
    chain restarted (anvil --state: the same chain, as after a node restart) takes the report."""
    from agents.netlab.world import free_port

    port, state = free_port(), tmp_path / "anvil-state.json"
    with start_anvil(port, "--state", str(state)) as anvil:
        chain = deploy_chain(anvil.url, tmp_path)
        with connect(anvil.url) as project:
            from ape import accounts

            contracts = load_contracts(project, chain.deployment)
            challenger, operator = accounts.test_accounts[CHALLENGER], accounts.test_accounts[OPERATOR]
            contracts.token.mint(challenger, CHALLENGER_STAKE, sender=accounts.test_accounts[0])
            contracts.token.approve(contracts.registry, CHALLENGER_STAKE, sender=challenger)
            contracts.registry.register_challenger(CHALLENGER_STAKE, sender=challenger)
            contracts.token.approve(contracts.registry, 100 * TOKEN, sender=operator)
            contracts.registry.register_node(os.urandom(32), "DE", TOKEN, 100 * TOKEN, sender=operator)
            node_id = bytes(contracts.registry.node_id_at(contracts.registry.node_count()))
            # Unbonding: still reportable, but no longer a candidate, so `once` runs no challenge here.
            contracts.registry.request_unbonding(node_id, sender=operator)
            epoch = int(contracts.reputation.current_epoch())
    client = ClientConfig(account=AccountSpec(test_account=CLIENT_ACCOUNT), data_dir=tmp_path / "client",
                          rpc=f"http://127.0.0.1:{port}", deployment=chain.deployment)
    write_client_config(tmp_path / "client.toml", client, force=True)
    config = tmp_path / "challenger.toml"
    write_toml(config, {"client": "client.toml", "data_dir": str(tmp_path / "data"), "endpoint": "http://192.0.2.1:8080",
                        "account": {"test_account": CHALLENGER}})
    seed = bytes(range(32))
    transcript = record(node_id=node_id, epoch=epoch, challenger=str(challenger.address), started_at=time.time(),
                        seed=seed, size=100_000, url="http://192.0.2.1:8080/p", advertised_kbps=0,
                        received=payload(seed, 100_000)[:50_000], elapsed_s=0.05, latency_ms=(12.0,))
    store = TranscriptStore(tmp_path / "data" / "transcripts.sqlite")
    digest = store.save(transcript, judge(transcript))
    store.close()
    once = warren_argv("challenger", "once", "--config", str(config))

    down = subprocess.run(once, cwd=REPO_ROOT, env=warren_env(), capture_output=True, text=True, timeout=120)
    assert down.returncode == 1 and "no chain answers" in down.stderr, down.stdout + down.stderr
    store = TranscriptStore(tmp_path / "data" / "transcripts.sqlite")
    assert [r.hash for r in store.unreported(epoch)] == [digest]
    store.close()

    with start_anvil(port, "--state", str(state)) as anvil:
        up = subprocess.run(once, cwd=REPO_ROOT, env=warren_env(), capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        with connect(anvil.url) as project:
            contracts = load_contracts(project, chain.deployment)
            head = project.provider.get_block("latest").number + 1
            [posted] = list(contracts.reputation.ReportPosted.range(0, head))
            [committed] = list(contracts.reputation.ReportTranscript.range(0, head))
    assert (bytes(posted.node_id), posted.passed) == (node_id, False)  # truncated: half the payload
    assert bytes(committed.transcript_hash).hex() == digest


def test_node_infos__registration_epoch_and_channel_traffic_from_the_chain(tmp_path):
    """What the planner weighs, read from real events: a node with channels opened to it carries
    traffic, and every node's registration epoch is its NodeRegistered block's."""
    from agents.challenger.runtime import Challenger

    with start_anvil() as anvil:
        chain = deploy_chain(anvil.url, tmp_path)
        with connect(anvil.url) as project:
            from ape import accounts

            contracts = load_contracts(project, chain.deployment)
            operator, client = accounts.test_accounts[OPERATOR], accounts.test_accounts[CLIENT_ACCOUNT]
            ids = []
            for _ in range(2):
                contracts.token.approve(contracts.registry, 100 * TOKEN, sender=operator)
                contracts.registry.register_node(os.urandom(32), "DE", TOKEN, 100 * TOKEN, sender=operator)
                ids.append(bytes(contracts.registry.node_id_at(contracts.registry.node_count())))
            contracts.token.approve(contracts.channels, 2 * TOKEN, sender=client)
            for signer in (os.urandom(20), os.urandom(20)):
                contracts.channels.open_channel(ids[0], client, "0x" + signer.hex(), TOKEN, sender=client)
            client_config = ClientConfig(account=AccountSpec(test_account=CLIENT_ACCOUNT), data_dir=tmp_path / "c",
                                         rpc=anvil.url, deployment=chain.deployment)
            write_client_config(tmp_path / "client.toml", client_config, force=True)
            write_toml(tmp_path / "ch.toml", {"client": "client.toml", "data_dir": str(tmp_path / "data"),
                                              "endpoint": "http://192.0.2.1:8080", "account": {"test_account": 7}})
            from agents.challenger.config import load_config

            config = load_config(tmp_path / "ch.toml")
            challenger = Challenger(config, contracts, None, accounts.test_accounts[7],
                                    TranscriptStore(config.store_path))
            infos = {n.node_id: n for n in challenger.node_infos({i: None for i in ids})}
            epoch = int(contracts.reputation.current_epoch())
    assert (infos[ids[0]].traffic, infos[ids[1]].traffic) == (2, 0)
    assert infos[ids[0]].registered_epoch == infos[ids[1]].registered_epoch == epoch


def test_slash_previous__failure_majority__slashed_in_the_next_epoch_once_with_the_bounty_split(tmp_path):
    """reputation slashes only once an epoch is over: in the next epoch the challenger slashes the node
    all three challengers reported failed (10 %, the bounty split three ways), is refused for the node
    only it reported failed (below the quorum), remembers both, and sends nothing twice."""
    from agents.challenger.config import load_config
    from agents.challenger.runtime import Challenger

    with start_anvil() as anvil:
        chain = deploy_chain(anvil.url, tmp_path)
        with connect(anvil.url) as project:
            from ape import accounts
            from ape import chain as ape_chain

            contracts = load_contracts(project, chain.deployment)
            rep, registry, token = contracts.reputation, contracts.registry, contracts.token
            panel = [accounts.test_accounts[i] for i in (CHALLENGER, 8, 9)]
            for account in panel:
                token.mint(account, CHALLENGER_STAKE, sender=accounts.test_accounts[0])
                token.approve(registry, CHALLENGER_STAKE, sender=account)
                registry.register_challenger(CHALLENGER_STAKE, sender=account)
            operator, ids = accounts.test_accounts[OPERATOR], []
            for _ in range(2):
                token.approve(registry, 100 * TOKEN, sender=operator)
                registry.register_node(os.urandom(32), "DE", TOKEN, 100 * TOKEN, sender=operator)
                ids.append(bytes(registry.node_id_at(registry.node_count())))
            failing, lucky = ids
            epoch = int(rep.current_epoch())
            for account in panel:
                rep.report(failing, epoch, 10, 900, False, sender=account)
            rep.report(lucky, epoch, 10, 900, False, sender=panel[0])
            for account in panel[1:]:
                rep.report(lucky, epoch, 50_000, 20, True, sender=account)

            write_client_config(tmp_path / "client.toml", ClientConfig(
                account=AccountSpec(test_account=CLIENT_ACCOUNT), data_dir=tmp_path / "c", rpc=anvil.url,
                deployment=chain.deployment), force=True)
            write_toml(tmp_path / "ch.toml", {"client": "client.toml", "data_dir": str(tmp_path / "data"),
                                              "endpoint": "http://192.0.2.1:8080",
                                              "account": {"test_account": CHALLENGER}})
            config = load_config(tmp_path / "ch.toml")
            store = TranscriptStore(config.store_path)
            for node_id in ids:  # the challenger's own failed verdicts, reported (as report_pending leaves them)
                seed = os.urandom(32)
                transcript = record(node_id=node_id, epoch=epoch, challenger=str(panel[0].address),
                                    started_at=time.time(), seed=seed, size=100_000, url="http://192.0.2.1:8080/p",
                                    advertised_kbps=0, received=payload(seed, 100_000)[:50_000], elapsed_s=0.05,
                                    latency_ms=(12.0,))
                store.mark_reported(store.save(transcript, judge(transcript)), "0x01")
            challenger = Challenger(config, contracts, None, panel[0], store)
            assert challenger.slash_previous() == []  # the epoch is not over: nothing to decide yet

            ape_chain.pending_timestamp = (epoch + 1) * challenger.epoch_length + 5
            ape_chain.mine()
            stake = int(registry.node_stake(failing))
            before = [int(token.balanceOf(account)) for account in panel]
            decided = challenger.slash_previous()
            taken = stake * int(rep.slash_bps()) // 10_000
            gained = [int(token.balanceOf(account)) - b for account, b in zip(panel, before)]
            stakes = [int(registry.node_stake(node_id)) for node_id in ids]
            tally = tuple(rep.epoch_tally(failing, epoch))
            again = challenger.slash_previous()
            store.close()
    assert [(d["node_id"], d["epoch"]) for d in decided] == [(failing.hex(), epoch), (lucky.hex(), epoch)]
    assert decided[0]["tx"].startswith("0x")
    assert decided[1]["refused"] == "reputation: failure quorum not reached"
    assert stakes == [stake - taken, 100 * TOKEN]
    assert sum(gained) == taken and gained[0] == gained[1] == taken // 3  # the challenger paid the gas in ETH
    assert tally == (3, 3, True)
    assert again == []
