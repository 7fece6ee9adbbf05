"""A live network, rehearsed (issue 12): exactly the path a testnet user takes, against a second chain.

The "testnet" is a separate anvil with its own chain id (31338) and a block every 2 s, reached the way
any remote RPC is: ape-config.yaml's ``ethereum:testnet`` entry (ape's node provider, not the local
foundry one), imported ape accounts (``ape accounts import``, a passphrase), ``ape run deploy
--network ethereum:testnet:node --account deployer``, then `warren node init/run` and `warren connect`
against the deployment file it wrote. Checked on the way: the development verifier and an empty
``--voucher-vk`` are refused before any transaction; a deployment file of another chain is refused by
chain id; the RPC restarting under a running node and client (anvil with ``--state``): while it is down,
commands say so in words; after it, traffic and the cooperative close go on and the node is paid.
"""

import contextlib
import json
import os
import sys

import pytest

from agents.chain.connect import connect, load_contracts
from agents.netlab import Lab, NatType, can_build_namespaces
from agents.netlab.warren_net import WG_PORT, client_status, wait_for
from agents.netlab.world import build_world, run_in, spawn_in, start_anvil, warren_argv, warren_env
from agents.wallet import AccountSpec, create_keystore

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not can_build_namespaces(), reason="the lab builds network namespaces: root only")]

#: ape-config.yaml's ethereum:testnet entry: chain id and the RPC port its URI names.
NETWORK, CHAIN_ID, PORT = "ethereum:testnet:node", 31338, 8546
TOKEN = 10**18
MNEMONIC = "test test test test test test test test test test test junk"  # anvil's funded accounts
DEPLOYER, GUARDIANS, OPERATOR, CLIENT = 0, (1, 2), 3, 6
FETCH = """
import hashlib, sys, urllib.request
h = hashlib.sha256(); n = 0
with urllib.request.urlopen(sys.argv[1], timeout=60) as r:
    while chunk := r.read(1 << 16):
        h.update(chunk); n += len(chunk)
print(h.hexdigest(), n)
"""


def _key(index: int) -> bytes:
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return bytes(Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}").key)


def _address(index: int) -> str:
    from eth_account import Account

    return Account.from_key(_key(index)).address


def _anvil(state):
    return start_anvil(PORT, "--chain-id", str(CHAIN_ID), "--block-time", "2", "--state", str(state))


def _run(argv, env, stdin="", timeout=300):
    import subprocess

    from agents.netlab.world import REPO_ROOT

    return subprocess.run(argv, cwd=REPO_ROOT, env=env, input=stdin.encode(), capture_output=True, timeout=timeout)


def _ape(*args):
    return [os.path.join(os.path.dirname(sys.executable), "ape"), *args]


@pytest.fixture(scope="module")
def testnet(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("testnet")
    secrets = workdir / "secrets"
    secrets.mkdir(mode=0o700)
    env = warren_env(APE_DATA_FOLDER=str(workdir / "ape"), APE_ACCOUNTS_deployer_PASSPHRASE="deployer passphrase")
    for alias, index, passphrase in (("deployer", DEPLOYER, "deployer passphrase"),
                                     ("operator", OPERATOR, "operator passphrase")):
        done = _run(_ape("accounts", "import", alias), env, f"0x{_key(index).hex()}\n{passphrase}\n{passphrase}\n", 120)
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    (secrets / "operator-passphrase").write_text("operator passphrase\n")
    (secrets / "operator-passphrase").chmod(0o600)
    (secrets / "client-passphrase").write_text("client passphrase\n")
    (secrets / "client-passphrase").chmod(0o600)
    create_keystore(secrets / "client.json", "client passphrase", _key(CLIENT), kdf="pbkdf2", iterations=2)
    stack = contextlib.ExitStack()
    with stack:
        holder = {"anvil": stack.enter_context(_anvil(workdir / "chain-state.json"))}
        assert holder["anvil"].chain_id() == CHAIN_ID
        lab = stack.enter_context(Lab(prefix="wtn"))
        world = build_world(lab, chain_port=PORT, file_size=8 << 20, nat_node=False,
                            client_nat=NatType.PORT_RESTRICTED)
        yield {"workdir": workdir, "env": env, "world": world, "secrets": secrets, "anvil": holder, "stack": stack}
        holder["anvil"].stop()


def _deploy(testnet, *extra):
    guardians = [a for i in GUARDIANS for a in ("--guardian", _address(i))]
    return _run(_ape("run", "deploy", "--network", NETWORK, "--account", "deployer", *guardians, *extra),
                testnet["env"], "y\n" * 100, timeout=400)


def test_deploy__dev_verifier_or_empty_vk_on_a_live_network__refused_before_any_transaction(testnet):
    from agents.netlab.world import _rpc

    url = f"http://127.0.0.1:{PORT}"
    nonce = _rpc(url, "eth_getTransactionCount", [_address(DEPLOYER), "latest"])
    refused = _deploy(testnet)
    out = refused.stdout.decode() + refused.stderr.decode()
    assert refused.returncode != 0 and "the development key, whose setup is public" in out
    assert "--i-know-the-dev-key-is-public" in out
    empty = _deploy(testnet, "--voucher-vk", "")
    assert empty.returncode != 0 and "--voucher-vk is empty" in empty.stdout.decode() + empty.stderr.decode()
    assert _rpc(url, "eth_getTransactionCount", [_address(DEPLOYER), "latest"]) == nonce  # nothing was sent


def test_testnet_rehearsal__deploy_init_run_connect__survives_an_rpc_restart(testnet):
    world, env, workdir, secrets = testnet["world"], testnet["env"], testnet["workdir"], testnet["secrets"]
    deployment = workdir / "deployment.json"
    deployed = _deploy(testnet, "--voucher-denomination", "0", "--out", str(deployment))
    assert deployed.returncode == 0, deployed.stdout.decode()[-3000:] + deployed.stderr.decode()[-3000:]
    assert f"(chain id {CHAIN_ID})" in deployed.stdout.decode()
    assert json.loads(deployment.read_text())["chain_id"] == CHAIN_ID
    with connect(f"http://127.0.0.1:{PORT}", NETWORK) as project:
        from ape import accounts

        contracts = load_contracts(project, deployment, NETWORK)
        owner = accounts.test_accounts[DEPLOYER]
        for who in (OPERATOR, CLIENT):
            contracts.token.mint(_address(who), 1_000 * TOKEN, sender=owner)

    node_dir, config = workdir / "node_a", workdir / "node_a" / "node.toml"
    init = run_in(world.node_a.ns, warren_argv(
        "node", "init", "--config", str(config), "--region", "NL", "--price-per-gib", str(TOKEN),
        "--ape-alias", "operator", "--passphrase-file", str(secrets / "operator-passphrase"),
        "--rpc", "http://127.0.0.1:8545", "--network", NETWORK, "--deployment", str(deployment),
        "--data-dir", str(node_dir), "--listen-port", str(WG_PORT),
        "--public-endpoint", f"{world.node_a.address}:{WG_PORT}", "--interface", "wrna0", "--uplink", "eth0"),
        timeout=120, env=env)
    assert init.returncode == 0, init.stdout.decode() + init.stderr.decode()
    assert _address(OPERATOR) in init.stdout.decode()
    node_log = node_dir / "node.log"
    node = spawn_in(world.node_a.ns, warren_argv("node", "run", "--config", str(config)), env=env,
                    stdout=open(node_log, "ab"), stderr=open(node_log, "ab"))

    def node_status():
        result = run_in(world.node_a.ns, warren_argv("node", "status", "--config", str(config), "--json"),
                        timeout=60, env=env)
        return result

    def node_live():
        if node.poll() is not None:
            raise AssertionError(node_log.read_text()[-4000:])
        result = node_status()
        return result.returncode == 0 and json.loads(result.stdout)["live"]

    wait_for(node_live, 120, interval=1, what="the node registered and serving on the testnet")
    facts = json.loads(node_status().stdout)["chain"]
    assert facts["registered"] and facts["operator"] == _address(OPERATOR)

    # A deployment file of another chain is refused by chain id, in words.
    foreign = workdir / "foreign.json"
    foreign.write_text(json.dumps({**json.loads(deployment.read_text()), "chain_id": 31337}))
    from agents.node.config import load_config, write_config

    write_config(workdir / "foreign.toml", load_config(config).replace(deployment=foreign))
    mismatch = run_in(world.node_a.ns, warren_argv("node", "status", "--config", str(workdir / "foreign.toml")),
                      timeout=60, env=env)
    assert mismatch.returncode != 0
    assert f"is for chain 31337, but the chain at the RPC is chain {CHAIN_ID}" in mismatch.stderr.decode()

    from agents.client.config import ClientConfig
    from agents.client.config import write_config as write_client_config

    client_dir = workdir / "client"
    client_config = client_dir / "client.toml"
    write_client_config(client_config, ClientConfig(
        account=AccountSpec(keystore=secrets / "client.json", passphrase_file=secrets / "client-passphrase"),
        data_dir=client_dir, interface="wrnc0", budget=5 * TOKEN, bootstrap=((world.node_a.public_address, WG_PORT),),
        rpc="http://127.0.0.1:8545", network=NETWORK, deployment=deployment))
    client_log = workdir / "client.log"
    client = spawn_in(world.client, warren_argv("connect", "--config", str(client_config)), env=env,
                      stdout=open(client_log, "ab"), stderr=open(client_log, "ab"))

    def connected():
        if client.poll() is not None:
            raise AssertionError(client_log.read_text()[-4000:])
        status = client_status(world, client_config)
        return status if status.get("connected") else None

    status = wait_for(connected, 180, interval=1, what="the client connected through the testnet")

    def fetch():
        result = run_in(world.client, [sys.executable, "-c", FETCH, world.file_url], timeout=120)
        assert result.returncode == 0, result.stderr.decode()
        return tuple(result.stdout.decode().split())

    assert fetch() == (world.file_sha256, str(8 << 20))

    # The RPC restarts (same chain, state kept): commands say so in words meanwhile; the tunnel carries on.
    testnet["anvil"]["anvil"].stop()
    down = node_status()
    assert down.returncode != 0 and "no chain answers at http://127.0.0.1:8545: is it running?" in down.stderr.decode()
    assert "Traceback" not in down.stderr.decode()
    assert fetch() == (world.file_sha256, str(8 << 20))  # the data plane needs no chain
    testnet["anvil"]["anvil"] = testnet["stack"].enter_context(_anvil(workdir / "chain-state.json"))
    wait_for(lambda: node_status().returncode == 0, 60, interval=1, what="commands working after the restart")
    assert json.loads(node_status().stdout)["chain"]["registered"]
    assert client.poll() is None and node.poll() is None, "a process died with the RPC"
    paid = wait_for(lambda: (s := client_status(world, client_config)).get("paid_bytes", 0) >= 16 << 20 and s, 60,
                    what="receipts for both downloads")

    # Cooperative close after the restart: the chain pays the node's operator what the receipts say.
    with connect(f"http://127.0.0.1:{PORT}", NETWORK) as project:
        contracts = load_contracts(project, deployment, NETWORK)
        before = int(contracts.token.balanceOf(_address(OPERATOR)))
    done = run_in(world.client, warren_argv("disconnect", "--config", str(client_config)), timeout=120, env=env)
    assert done.returncode == 0, done.stderr.decode()
    client.wait(timeout=60)
    with connect(f"http://127.0.0.1:{PORT}", NETWORK) as project:
        contracts = load_contracts(project, deployment, NETWORK)
        channel = contracts.channel(bytes.fromhex(status["channel_id"]))
        fee = int(contracts.channels.fee_of(channel.settled))
        after = int(contracts.token.balanceOf(_address(OPERATOR)))
    assert channel.settled >= paid["spent"] > 0
    assert after - before == channel.settled - fee
