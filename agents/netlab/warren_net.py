"""A running Warren network in the lab world: chain deployed, `warren node run` on every node host.

Used by the end-to-end tests, the demo and the benchmarks: :func:`deploy_chain` deploys the contracts on a plain anvil (through a
nested ape connection, so the test session's own chain is untouched) and funds the roles;
:func:`start_node` writes a node's config and starts `warren node run` in its namespace;
:func:`client_config` writes the client's. Everything runs as the real commands, as processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
from pathlib import Path

from agents.chain.connect import connect
from agents.chain.deploy import TOKEN, DeployParameters, deploy_all
from agents.client.config import ClientConfig
from agents.client.config import write_config as write_client_config
from agents.node.config import NodeConfig, write_config
from agents.unixctl import NotRunning, request
from agents.wallet import AccountSpec
from agents.wireguard.config import encode_key, generate_private_key

from agents.netlab.world import NodeHost, World, run_in, spawn_in, warren_argv

__all__ = ["FETCH_SCRIPT", "Chain", "NodeProcess", "add_public_node", "client_config", "deploy_chain", "fetch",
           "start_client", "start_node", "start_nodes", "wait_for", "warren_fetch"]

#: The node's price: 1 token per GiB, so a few MiB cost a visible amount.
PRICE_PER_GIB = TOKEN
#: Stake each node registers with (deploy_all's minimum is 100 tokens).
STAKE = 100 * TOKEN
#: Test account indices: 0 deploys and owns; nodes and the client have their own.
OWNER, NODE_ACCOUNTS, CLIENT_ACCOUNT = 0, {"node_a": 3, "node_b": 4, "node_c": 5}, 6
#: WireGuard's port on every node.
WG_PORT = 51820


@dataclasses.dataclass
class Chain:
    """The deployed chain: the file agents read and the addresses of the roles."""

    url: str
    deployment: Path
    addresses: dict[str, str]


def deploy_chain(anvil_url: str, workdir: Path, voucher_denominations: tuple[int, ...] = ()) -> Chain:
    """Deploy Warren on the anvil at ``anvil_url`` and mint tokens to the nodes and the client.

    ``voucher_denominations``: one voucher pool per amount (token wei), with the checked-in depth-20
    development verifier (none by default: they add a few seconds of deployment).
    """
    from ape import accounts, chain

    with connect(anvil_url) as project:
        owner = accounts.test_accounts[OWNER]
        deployment = deploy_all(project, owner, chain, DeployParameters(
            guardians=[accounts.test_accounts[i].address for i in (1, 2)],
            voucher_denominations=list(voucher_denominations)),
                                log=lambda _: None)
        path = workdir / "deployment.json"
        deployment.save(path)
        token = project.warren_token.at(deployment.address("warren_token"))
        for index in (*NODE_ACCOUNTS.values(), CLIENT_ACCOUNT):
            token.mint(accounts.test_accounts[index], 1_000 * TOKEN, sender=owner)
        addresses = {name: str(accounts.test_accounts[i].address) for name, i in NODE_ACCOUNTS.items()}
        addresses["client"] = str(accounts.test_accounts[CLIENT_ACCOUNT].address)
        return Chain(anvil_url, path, addresses)


@dataclasses.dataclass
class NodeProcess:
    """A `warren node run` process and its files."""

    host: NodeHost
    config_path: Path
    config: NodeConfig
    proc: object
    log_path: Path

    @property
    def socket(self) -> Path:
        return Path(self.config.data_dir) / "node.sock"

    def status(self) -> dict | None:
        try:
            return request(self.socket, {"command": "status"}, timeout=5)
        except (NotRunning, OSError, ValueError):
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; raise AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_node(world: World, chain: Chain, host: NodeHost, workdir: Path, *, exit_policy: dict | None = None,
               bootstrap: NodeHost | tuple[NodeHost, ...] | None = None, credit_bytes: int = 16 << 20,
               extra: dict | None = None, operator: AccountSpec | None = None,
               args: tuple[str, ...] = ()) -> NodeProcess:
    """Write ``host``'s config and start `warren node run` there (returns once it is ready).

    ``bootstrap``: the public node(s) to join through (None: ``host`` starts the ring); a node behind
    a NAT keeps the second as its backup rendezvous. ``operator``: instead of the host's test
    account (e.g. a keystore of it). ``args``: more `warren node run` flags (``--log-format json``).
    """
    data_dir = workdir / host.name
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "wg.key"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(encode_key(generate_private_key()) + "\n")
    public = host.nat is None
    boots = bootstrap if isinstance(bootstrap, tuple) else (bootstrap or host,)
    # ``extra`` may replace these defaults too (price_per_gib="auto" with a [price] rule, a threshold).
    defaults = {"price_per_gib": PRICE_PER_GIB, "settlement_threshold": 10**30}
    config = NodeConfig(
        operator=operator or AccountSpec(test_account=NODE_ACCOUNTS[host.name]), region=host.region,
        stake=STAKE, data_dir=data_dir, interface=f"wrn{host.name[-1]}0", listen_port=WG_PORT,
        public_endpoint=(host.address, WG_PORT) if public else None,
        bootstrap=tuple((b.public_address, WG_PORT) for b in boots), rpc="http://127.0.0.1:8545",
        deployment=chain.deployment,
        exit=exit_policy or {}, credit_bytes=credit_bytes, uplink="eth0", **(defaults | (extra or {})))
    config_path = data_dir / "node.toml"
    write_config(config_path, config, force=True)
    log_path = data_dir / "node.log"
    handle = open(log_path, "ab")
    proc = spawn_in(host.ns, warren_argv("node", "run", "--config", str(config_path), *args), stdout=handle, stderr=handle)
    node = NodeProcess(host, config_path, config, proc, log_path)
    try:
        wait_for(lambda: node.status() or (proc.poll() is not None and _died(node)), 90, what=f"{host.name} ready")
    except AssertionError:
        raise AssertionError(f"{host.name} did not become ready:\n{node.log()[-4000:]}") from None
    return node


def _died(node: NodeProcess):
    raise AssertionError(f"{node.host.name} exited {node.proc.returncode}:\n{node.log()[-4000:]}")


def client_config(world: World, chain: Chain, workdir: Path, bootstrap: NodeHost, *, budget: int = 5 * TOKEN,
                  rpc: str = "http://127.0.0.1:8545", **extra) -> Path:
    """Write the client's config; returns its path (``rpc``: the host's loopback bridge by default,
    ``world.remote_rpc_url`` for the chain as a remote provider on the lab's internet)."""
    data_dir = workdir / "client"
    data_dir.mkdir(parents=True, exist_ok=True)
    config = ClientConfig(account=AccountSpec(test_account=CLIENT_ACCOUNT), data_dir=data_dir, interface="wrnc0",
                          budget=budget, bootstrap=((bootstrap.public_address, WG_PORT),),
                          rpc=rpc, deployment=chain.deployment, **extra)
    path = data_dir / "client.toml"
    write_client_config(path, config, force=True)
    return path


def start_client(world: World, config_path: Path, *args: str, log_path: Path, ready=lambda status: status.get("connected"),
                 timeout: float = 120.0):
    """`warren connect --config CONFIG ARGS...` in the client's namespace, its output appended to
    ``log_path``; returns ``(process, status)`` once a status satisfies ``ready`` (the lab stops the
    process at cleanup).

    Raises:
        AssertionError: the client exited (with its log's tail) or was not ready within ``timeout``.
    """
    handle = open(log_path, "ab")
    proc = spawn_in(world.client, warren_argv("connect", "--config", str(config_path), *args), stdout=handle,
                    stderr=handle)
    handle.close()

    def connected():
        if proc.poll() is not None:
            raise AssertionError(log_path.read_text(errors="replace")[-4000:])
        status = client_status(world, config_path)
        return status if ready(status) else None

    return proc, wait_for(connected, timeout, interval=0.5, what="client connected")


def client_status(world: World, config_path: Path) -> dict:
    """`warren status` in the client's namespace, parsed."""
    result = run_in(world.client, warren_argv("status", "--config", str(config_path)), timeout=60)
    with contextlib.suppress(ValueError):
        return json.loads(result.stdout)
    return {"error": result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")}


def start_nodes(world: World, chain: Chain, workdir: Path) -> dict[str, NodeProcess]:
    """`warren node run` on every node host of ``world``: node_a starts the ring, the others join it."""
    nodes = {"node_a": start_node(world, chain, world.node_a, workdir)}
    for host in world.nodes[1:]:
        nodes[host.name] = start_node(world, chain, host, workdir, bootstrap=world.node_a)
    return nodes


#: Downloads argv[1] (read timeout argv[2] seconds) to nowhere; prints "sha256 size seconds".
FETCH_SCRIPT = """
import hashlib, sys, time, urllib.request
url, timeout = sys.argv[1], float(sys.argv[2])
h, got, t0 = hashlib.sha256(), 0, time.monotonic()
with urllib.request.urlopen(url, timeout=timeout) as r:
    while True:
        chunk = r.read(1 << 16)
        if not chunk:
            break
        h.update(chunk); got += len(chunk)
print(h.hexdigest(), got, round(time.monotonic() - t0, 3))
"""


def fetch(world: World, *, read_timeout: float = 30.0, timeout: float = 120.0) -> tuple[str, int, float] | None:
    """The lab file downloaded in the client's namespace: (sha256 hex, bytes, seconds), or None when
    the download failed (the caller asserts)."""
    result = run_in(world.client, ["python3", "-c", FETCH_SCRIPT, world.file_url, str(read_timeout)],
                    timeout=timeout)
    if result.returncode != 0:
        return None
    digest, size, seconds = result.stdout.decode().split()
    return digest, int(size), float(seconds)


def warren_fetch(world: World, config_path: Path, paths: int, output: Path, *, kill=None, kill_at: float = 0.2,
                 timeout: float = 300.0) -> tuple[dict, float | None]:
    """`warren fetch` of the lab file over ``paths`` paths in the client's namespace (checked against the
    file's SHA-256 by the command itself); returns its summary and, with ``kill`` (a process, e.g. an
    exit's `warren node run`), the Unix time it was SIGKILLed, once the download was ``kill_at`` done
    by the command's progress lines (None without ``kill``).

    Raises:
        AssertionError: the command failed or did not finish within ``timeout`` seconds.
    """
    out, err = output.with_suffix(".out"), output.with_suffix(".err")
    argv = warren_argv("fetch", world.file_url, "--config", str(config_path), "--paths", str(paths), "-o",
                       str(output), "--sha256", world.file_sha256, "--deadline-s", str(timeout))
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = spawn_in(world.client, argv, stdout=stdout, stderr=stderr)
    killed_at = None
    if kill is not None:
        def far_enough():
            done = re.findall(rb" (\d+)% ", err.read_bytes())
            return proc.poll() is not None or (done and int(done[-1]) >= kill_at * 100)

        wait_for(far_enough, timeout, interval=0.05, what=f"the download {kill_at:.0%} done")
        if proc.poll() is None:
            kill.kill()
            killed_at = time.time()
            kill.wait(timeout=10)
    try:
        proc.wait(timeout=timeout + 10)
    except Exception:
        proc.kill()
        raise
    if proc.returncode != 0:
        raise AssertionError(f"warren fetch exited {proc.returncode}: {err.read_text(errors='replace')[-3000:]}")
    return json.loads(out.read_text().strip().splitlines()[-1]), killed_at


def add_public_node(world: World, name: str = "node_d", region: str = "NL") -> NodeHost:
    """One more public node host on ``world``'s internet, with the chain bridge and resolver file every
    world host has (its operator is the caller's to fund: :func:`deploy_chain` funds node_a-c)."""
    from agents.netlab import RpcBridge
    from agents.netlab.world import RPC_LISTEN, _resolv_conf

    ns = world.lab.add_host(name.replace("_", "-"))
    address = world.internet.attach(ns)
    bridge = RpcBridge(ns.name, ("127.0.0.1", world.chain_port), RPC_LISTEN)
    world.lab.defer(bridge.close)
    world.bridges[ns.short] = bridge
    _resolv_conf(world.lab, ns, world.dns_server)
    return NodeHost(name, ns, region, address, address)
