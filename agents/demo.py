"""`warren demo`: a small Warren network doing its real job, every part a real command in its own host.

What runs (nothing here is the product: the demo only starts the real commands and watches them):

1. A local anvil chain; Warren's contracts deployed (:func:`agents.chain.deploy.deploy_all`); tokens
   minted to three node operators and a client.
2. An "internet" of network namespaces with a real HTTP server and a DNS zone, three node hosts
   (two public, one behind a home NAT) each running ``warren node run`` (registers and stakes,
   publishes its signed PeerRecord in the overlay, serves WireGuard, exits to the internet through its
   own nftables table, answers DNS in the tunnel, meters and settles), and a client host behind a home
   NAT running ``warren connect --region NL,DE`` (NL first, then DE).
3. The client downloads a file from the internet through its exit, with a resumable downloader
   (SHA-256 checked). Mid-download the demo kills the exit (SIGKILL): the client fails over to the
   standby node by itself, the download resumes; the time the user waited is measured.
4. ``warren disconnect``: the client pays its last receipt and closes the live channel cooperatively;
   the dead node's channel was put into a unilateral close by the client during failover.
5. Paying anonymously: a second user deposited a voucher at the start (``warren voucher deposit``,
   from its own account: the only transaction that account ever sends). It connects with ``warren
   connect --pay voucher`` to the exit still serving (a config with no account at all): the client proves its note for
   that node with a fresh signer, the redemption goes to the node inside the tunnel, the node submits
   it as relayer, and the session is paid by the fresh signer's receipts in the pool's EIP-712
   domain. The file comes down again through that exit (the operators' balances of the channel leg
   are read before this leg). The nodes are then stopped with SIGTERM and
   settle what they hold, the voucher channel on its pool. Checked from the chain: the pool settled
   exactly the node's last stored receipt, and no redemption or channel transaction names the
   depositor.
6. A live view (rich) shows the nodes, sessions, bytes, receipts and settlements while it runs; the
   closing summary reads every figure back from the chain. The last stdout line is
   ``summary: {json}``; the exit code is 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

__all__ = ["add_commands", "run_demo"]

#: Token wei per token.
TOKEN = 10**18
#: The file pulled through the exits, bytes (--quick: smaller).
FILE_BYTES, QUICK_FILE_BYTES = 48 << 20, 16 << 20
#: Kill the exit when this share of the file has arrived.
KILL_AT = 0.35
#: The download's pace, Mbit/s: a fast home line's. Unpaced, an idle machine pulls the quick demo's file
#: in a third of a second, between two of the view's 4 Hz looks, and the exit died after the end.
DOWNLOAD_MBIT = 64
#: The nodes' regions (node_a, node_b, node_c: the last behind a NAT), one each; the client asks for
#: NL first, then DE, so when the NL exit dies the DE node takes over (FR is never used by it).
REGIONS = ("NL", "DE", "FR")
CLIENT_REGIONS = "NL,DE"
#: Prefix of the demo's namespaces (tests check none is left behind).
NETNS_PREFIX = "wdemo"
#: The voucher leg: the pool's denomination and the relayer fee offered to the node, token wei; the
#: voucher user's account (a test account of its own, funded by the token's owner).
VOUCHER_DENOMINATION = 2 * TOKEN
RELAYER_FEE = TOKEN // 100
VOUCHER_ACCOUNT = 7
#: The key seed of the deployed development verifier (zk/vyper_verifier.py CHECKED_IN_SEED).
VOUCHER_DEPTH = 20


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``warren demo``."""
    parser = subparsers.add_parser(
        "demo", help="run a small Warren network end to end (local chain, netns hosts; root)",
        description="Start a local chain, deploy Warren, run three exit nodes and a client as real "
                    "`warren node run` / `warren connect` processes in network namespaces, download a "
                    "file through an exit, kill it, watch the client fail over, and settle on chain.")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_FILE_BYTES >> 20} MiB instead of {FILE_BYTES >> 20} MiB")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep configs, logs and databases here (default: a temporary folder)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from agents.netlab import can_build_namespaces

    if not can_build_namespaces():
        print("warren demo: needs root: it builds network namespaces, TUN devices and nftables tables "
              "for its hosts (run `sudo make demo`, or `sudo .venv/bin/warren demo`)", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        workdir = args.workdir
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="warren-demo-")))
        workdir.mkdir(parents=True, exist_ok=True)
        return run_demo(workdir, file_bytes=QUICK_FILE_BYTES if args.quick else FILE_BYTES)


def tokens(wei: int, places: int = 6) -> str:
    """Token wei as tokens for reading, e.g. ``0.042932 WRN`` (the JSON summary keeps token wei)."""
    text = format(round(Decimal(wei) / TOKEN, places), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} WRN"


def mib(nbytes: int) -> str:
    """Bytes as MiB with two decimals."""
    return f"{nbytes / (1 << 20):.2f} MiB"


class _Checks:
    """Verified facts of the run."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.results: dict[str, bool] = {}

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results[name] = bool(ok)
        mark = "[green]ok[/green]  " if ok else "[red]FAIL[/red]"
        self.console.print(f"  {mark} {escape(name)}" + (f" [dim]({escape(detail)})[/dim]" if detail else ""))
        return bool(ok)


def run_demo(workdir: Path, *, file_bytes: int = FILE_BYTES) -> int:
    """Run the demo in ``workdir``; returns the exit code (0: every check passed)."""
    from agents.netlab import Lab, NatType
    from agents.netlab.warren_net import client_config, deploy_chain, start_node, wait_for
    from agents.netlab.world import build_world, run_in, spawn_in, start_anvil, warren_argv
    from agents.unixctl import NotRunning, request

    console = Console(highlight=False, soft_wrap=True)
    checks = _Checks(console)
    summary: dict = {"file_bytes": file_bytes}
    began = time.monotonic()
    console.rule("[bold cyan]1. chain, contracts, an internet of namespaces", align="left")
    with start_anvil() as anvil, Lab(prefix=NETNS_PREFIX) as lab:
        chain = deploy_chain(anvil.url, workdir, voucher_denominations=(VOUCHER_DENOMINATION,))
        console.print(f"  anvil at {anvil.url}; Warren deployed ({chain.deployment}), with a voucher pool of "
                      f"{tokens(VOUCHER_DENOMINATION)}")
        voucher = _VoucherUser(workdir, chain)
        voucher.deposit()  # runs while the nodes start: a real user deposits long before connecting
        world = build_world(lab, chain_port=anvil.port, file_size=file_bytes, client_nat=NatType.PORT_RESTRICTED,
                            regions=REGIONS)
        console.print(f"  internet {world.internet.subnet}: web server {world.web_address} "
                      f"(http://files.example/{world.file_name}, {mib(file_bytes)}), DNS {world.dns_server}")

        console.rule("[bold cyan]2. three exit nodes: `warren node run`", align="left")
        nodes = {"node_a": start_node(world, chain, world.node_a, workdir)}
        nodes["node_b"] = start_node(world, chain, world.node_b, workdir, bootstrap=world.node_a)
        # node_c (behind a NAT) also registers with node_b: still reachable after node_a is killed
        nodes["node_c"] = start_node(world, chain, world.node_c, workdir, bootstrap=(world.node_a, world.node_b))
        for name, node in nodes.items():
            status = node.status()
            where = "behind a NAT" if node.host.nat else f"public {node.host.address}"
            console.print(f"  {name}: region {node.host.region}, {where}, node id {status['node_id'][:16]}..., "
                          f"overlay {status['overlay']['mode']}")

        console.rule(f"[bold cyan]3. the client: `warren connect --region {CLIENT_REGIONS}`", align="left")
        config = client_config(world, chain, workdir, world.node_a)
        client_log = open(workdir / "client.log", "ab")
        client = spawn_in(world.client, warren_argv("connect", "--config", str(config), "--region", CLIENT_REGIONS),
                          stdout=client_log, stderr=client_log)
        client_socket = workdir / "client" / "client.sock"

        def client_status():
            try:
                return request(client_socket, {"command": "status"}, timeout=5)
            except (NotRunning, OSError, ValueError):
                return {}

        def connected():
            if client.poll() is not None:
                raise RuntimeError("warren connect exited:\n" + (workdir / "client.log").read_text()[-3000:])
            return client_status().get("connected") and client_status()
        first = wait_for(connected, 120, interval=0.5, what="the client to connect")
        exit_name = next(n for n, p in nodes.items() if p.status() and p.status()["node_id"] == first["node_id"])
        console.print(f"  connected through {exit_name} ({first['region']}), tunnel {first['tunnel_v4']} / "
                      f"{first['tunnel_v6']}, standby {(first.get('standby') or '-')[:16]}")

        console.rule("[bold cyan]4. download through the exit; the exit dies mid-way", align="left")
        fetch = spawn_in(world.client, [sys.executable, "-m", "agents.netlab.fetch", world.file_url,
                                        "--stall-s", "1.0", "--deadline-s", "180",
                                        "--rate-mbit", str(DOWNLOAD_MBIT)],
                         stdout=open(workdir / "fetch.json", "wb"), stderr=open(workdir / "fetch.log", "wb"))
        killed_at = None
        with Live(_view(nodes, client_status()), console=console, refresh_per_second=4) as live:
            while fetch.poll() is None:
                status = client_status()
                live.update(_view(nodes, status))
                if killed_at is None and status.get("own_bytes", 0) >= KILL_AT * file_bytes:
                    nodes[exit_name].proc.send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
                    nodes[exit_name].proc.wait(timeout=10)
                time.sleep(0.25)
            live.update(_view(nodes, client_status()))
        result = json.loads((workdir / "fetch.json").read_text() or "{}")
        after = client_status()
        checks.check("the file arrived whole through the exits (SHA-256)",
                     result.get("sha256") == world.file_sha256 and result.get("bytes") == file_bytes,
                     f"{mib(result.get('bytes', 0))} in {result.get('seconds')} s")
        checks.check("the exit was killed mid-download", killed_at is not None)
        failovers = after.get("failovers", [])
        checks.check("the client failed over to another node by itself", len(failovers) == 1
                     and failovers[0]["from"] == first["node_id"] and after.get("node_id") != first["node_id"],
                     f"{failovers[0]['why']}; switch {failovers[0]['switch_s']} s" if failovers else "no failover")
        gaps = [i.get("gap_s") for i in result.get("interruptions", []) if i.get("gap_s") is not None]
        summary.update(failover_gap_s=max(gaps) if gaps else None, download_s=result.get("seconds"))
        if gaps:
            console.print(f"  the download stalled once for {max(gaps):.2f} s (node killed -> bytes through the "
                          "next node) and resumed with an HTTP range request")

        console.rule("[bold cyan]5. `warren disconnect`", align="left")
        run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)
        client.wait(timeout=30)
        checks.check("disconnect removed the kill switch and restored DNS",
                     "warren_client" not in run_in(world.client, ["nft", "list", "tables"]).stdout.decode()
                     and "warren connect" not in Path(f"/etc/netns/{world.client.name}/resolv.conf").read_text())
        channel_leg = _channel_summary(chain, workdir, nodes, first, after, checks)

        # The voucher user takes the exit the client failed over to (it is serving for certain).
        live_name = next(n for n, p in nodes.items() if p.proc.poll() is None and p.status()
                         and p.status()["node_id"] == after.get("node_id"))
        console.rule(f"[bold cyan]6. pay anonymously: `warren connect --pay voucher` to {live_name}", align="left")
        voucher_leg = voucher.connect_and_fetch(world, nodes, live_name, console, checks)

        console.rule("[bold cyan]7. nodes stopped (they settle), the chain's figures", align="left")
        for name, node in nodes.items():
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
                node.proc.wait(timeout=60)
        summary.update(channel_leg)
        summary["voucher"] = voucher.chain_summary(nodes, live_name, voucher_leg, console, checks)
    summary["seconds"] = round(time.monotonic() - began, 1)
    summary["checks"] = checks.results
    summary["ok"] = all(checks.results.values())
    _print_summary(console, summary)
    print("summary: " + json.dumps(summary, sort_keys=True), flush=True)
    return 0 if summary["ok"] else 1


def _view(nodes: dict, client: dict) -> Table:
    """The live table: every node's sessions and money, and the client's side."""
    table = Table(title="Warren network", expand=False)
    for column in ("host", "region", "state", "sessions", "billed", "paid (receipts)", "settled"):
        table.add_column(column)
    for name, node in nodes.items():
        status = node.status() if node.proc.poll() is None else None
        if status is None:
            table.add_row(name, node.host.region, "[red]down[/red]", "-", "-", "-", "-")
            continue
        sessions = status["sessions"]
        billed = sum(s["billed_bytes"] for s in sessions)
        paid = sum(s["paid_amount"] for s in sessions)
        settled = status.get("settlement", {}).get("counters", {}).get("settled", 0)
        table.add_row(name, node.host.region, "serving", str(len(sessions)), mib(billed),
                      f"{tokens(paid)} ({status['counters']['receipts_accepted']})", str(settled))
    if client:
        table.caption = (f"client: via {client.get('node_id', '-')[:12]} ({client.get('region', '-')}), "
                         f"{mib(client.get('own_bytes', 0))} counted, paid {tokens(client.get('spent', 0))}, "
                         f"balance {tokens(client.get('channel_balance', 0))}, "
                         f"failovers {len(client.get('failovers', []))}")
    return table


def _channel_summary(chain, workdir: Path, nodes: dict, first: dict, last: dict, checks: _Checks) -> dict:
    """Every money figure of the payment-channel leg, read back from the chain once its client left
    (the voucher leg that follows is paid through the pool, and is summed up on its own)."""
    from agents.chain.bindings import ChannelStatus
    from agents.chain.connect import connect, load_contracts

    channels = json.loads((workdir / "client" / "channels" / "channels.json").read_text())
    with connect(chain.url) as project:
        contracts = load_contracts(project, chain.deployment)
        fee_bps = int(contracts.channels.fee_bps())
        rows = []
        for entry in channels:
            state = contracts.channel(bytes.fromhex(entry["channel_id"]))
            rows.append({"channel_id": entry["channel_id"], "node_id": entry["node_id"], "deposit": state.deposit,
                         "settled": state.settled, "settled_bytes": state.settled_bytes,
                         "status": state.status.name.lower()})
        balances = {name: int(contracts.token.balanceOf(chain.addresses[name])) for name in nodes}
        client_balance = int(contracts.token.balanceOf(chain.addresses["client"]))
    live = next((r for r in rows if r["node_id"] == last.get("node_id")), None)
    dead = next((r for r in rows if r["node_id"] == first["node_id"]), None)
    checks.check("the live channel closed cooperatively, paid for what the client counted",
                 live is not None and live["status"] == "finalised" and live["settled_bytes"] >= last.get("paid_bytes", 1),
                 f"{live['settled_bytes']:,} bytes, {tokens(live['settled'])}" if live else "no channel")
    checks.check("the dead exit's channel is closing (unilateral close started by the client)",
                 dead is not None and dead["status"] in (ChannelStatus.CLOSING.name.lower(), "finalised"),
                 dead["status"] if dead else "no channel")
    return {"channels": rows, "fee_bps": fee_bps, "operator_balances": balances, "client_balance": client_balance}


class _VoucherUser:
    """The demo's second user, who pays anonymously: every step is a real `warren` command.

    Its account (test account :data:`VOUCHER_ACCOUNT`) sends exactly two transactions, an approval
    and the deposit, at the start; `warren connect --pay voucher` runs from a config with no account.
    """

    def __init__(self, workdir: Path, chain) -> None:
        self.dir = workdir / "voucher"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.chain = chain
        self.notes = self.dir / "notes.json"
        self.keys, self._keys_proc, self._deposit_proc = _voucher_keys(self.dir), None, None
        self.depositor = ""
        self.depositor_nonce = 0

    def _warren(self, *args: str, log: str):
        import subprocess

        from agents.netlab.world import REPO_ROOT, warren_env

        handle = open(self.dir / log, "wb")
        return subprocess.Popen([sys.executable, "-m", "agents.cli", *args], cwd=REPO_ROOT, env=warren_env(),
                                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def deposit(self) -> None:
        """Fund the user's account, then start `warren voucher deposit` (and, if the proving key is
        not cached yet, `warren voucher setup`) in the background."""
        from ape import accounts

        from agents.chain.connect import connect, load_contracts

        with connect(self.chain.url) as project:
            user = accounts.test_accounts[VOUCHER_ACCOUNT]
            load_contracts(project, self.chain.deployment).token.mint(
                user, VOUCHER_DENOMINATION, sender=accounts.test_accounts[0])
            self.depositor = str(user.address)
        if not (self.keys / "proving_key.json").exists():
            from zk.vyper_verifier import CHECKED_IN_SEED

            self._keys_proc = self._warren("voucher", "setup", "--depth", str(VOUCHER_DEPTH), "--seed", CHECKED_IN_SEED,
                                           "--out", str(self.keys), log="setup.log")
        self._deposit_proc = self._warren(
            "voucher", "deposit", "--amount", str(VOUCHER_DENOMINATION), "--notes", str(self.notes),
            "--rpc", self.chain.url, "--deployment", str(self.chain.deployment), "--account", str(VOUCHER_ACCOUNT),
            log="deposit.log")

    def connect_and_fetch(self, world, nodes: dict, name: str, console: Console, checks: _Checks) -> dict:
        """`warren connect --pay voucher --node <node name>`, the download through it, `warren disconnect`."""
        from agents.client.config import ClientConfig, write_config
        from agents.netlab.warren_net import WG_PORT, client_status, wait_for
        from agents.netlab.world import run_in, spawn_in, warren_argv

        for proc, log in ((self._keys_proc, "setup.log"), (self._deposit_proc, "deposit.log")):
            if proc is not None and proc.wait(timeout=120) != 0:
                raise RuntimeError(f"`warren voucher` failed:\n{(self.dir / log).read_text()[-3000:]}")
        console.print("  " + escape((self.dir / "deposit.log").read_text().strip().splitlines()[-1]))
        from ape import accounts

        from agents.chain.connect import connect
        with connect(self.chain.url):
            self.depositor_nonce = int(accounts.test_accounts[VOUCHER_ACCOUNT].nonce)
        node_id = nodes[name].status()["node_id"]
        bootstrap = next(n.host for n in nodes.values() if n.host.nat is None and n.proc.poll() is None)
        config_path = self.dir / "client" / "client.toml"
        write_config(config_path, ClientConfig(
            account=None, pay="voucher", data_dir=self.dir / "client", interface="wrnv0",
            bootstrap=((bootstrap.public_address, WG_PORT),), rpc="http://127.0.0.1:8545",
            deployment=self.chain.deployment, voucher_notes=self.notes, voucher_keys=self.keys,
            relayer_fee=RELAYER_FEE), force=True)
        console.print("  " + escape(f"client config {config_path.name}: pay = \"voucher\", no [account]; notes and "
                                    "a fresh signer in 0600 files"))
        log = open(self.dir / "client.log", "ab")
        client = spawn_in(world.client, warren_argv("connect", "--config", str(config_path), "--pay", "voucher",
                                                    "--node", node_id), stdout=log, stderr=log)

        def connected():
            if client.poll() is not None:
                raise RuntimeError("warren connect --pay voucher exited:\n" + (self.dir / "client.log").read_text()[-3000:])
            status = client_status(world, config_path)
            return status if status.get("connected") else None

        began = time.monotonic()
        status = wait_for(connected, 120, interval=0.5, what="the voucher client to connect")
        console.print(f"  connected through {name} in {time.monotonic() - began:.1f} s (proof, node redeems as "
                      f"relayer, setup), voucher channel {status['channel_id'][:16]}..., deposit "
                      f"{tokens(status['deposit'])}")
        fetch = run_in(world.client, [sys.executable, "-m", "agents.netlab.fetch", world.file_url, "--deadline-s", "120"],
                       timeout=150)
        result = json.loads(fetch.stdout or b"{}")
        checks.check(f"voucher: the file arrived whole through {name} (SHA-256)",
                     result.get("sha256") == world.file_sha256 and result.get("bytes") == world.file_size,
                     f"{mib(result.get('bytes', 0))} in {result.get('seconds')} s")
        paid = wait_for(lambda: (s := client_status(world, config_path)).get("paid_bytes", 0) >= world.file_size and s,
                        30, what="the voucher client's receipts")
        run_in(world.client, warren_argv("disconnect", "--config", str(config_path)), timeout=90)
        client.wait(timeout=30)
        return {"channel_id": paid["channel_id"], "paid_bytes": paid["paid_bytes"], "deposit": paid["deposit"],
                "download_s": result.get("seconds")}

    def chain_summary(self, nodes: dict, name: str, leg: dict, console: Console, checks: _Checks) -> dict:
        """The voucher channel from the pool after its node stopped and settled; the unlinkability check."""
        node = nodes[name]
        from ape import accounts
        from ape import chain as ape_chain

        from agents.chain.connect import connect
        from agents.node.store import NodeStore
        from agents.prover.chain import mentions

        channel_id = bytes.fromhex(leg["channel_id"])
        store = NodeStore(Path(node.config.data_dir) / "node.db")
        try:
            latest = store.receipt_store(channel_id).load()[-1].receipt
        finally:
            store.close()
        with connect(self.chain.url) as project:
            pool_address = next(a for n, a in json.loads(self.chain.deployment.read_text())["addresses"].items()
                                if n.startswith("voucher_pool"))
            pool = project.voucher_pool.at(pool_address)
            _, settled, settled_bytes, _, state = pool.channel(channel_id)
            settled, settled_bytes, state = int(settled), int(settled_bytes), int(state)
            head = int(ape_chain.blocks.head.number)
            redeemed = list(pool.Redeemed.range(0, head + 1, search_topics={"channel_id": channel_id}))
            txs = {"voucher_pool.redeem": [e.transaction_hash for e in redeemed]}
            txs["voucher_pool.settle"] = [e.transaction_hash for e in pool.ReceiptSettled.range(0, head + 1)
                                          if bytes(e.channel_id) == channel_id]
            receipts = {label: [ape_chain.provider.get_receipt(h) for h in hashes] for label, hashes in txs.items()}
            named = [label for label, rs in receipts.items() for r in rs if mentions(r, self.depositor)]
            deposits = [ape_chain.provider.get_receipt(e.transaction_hash) for e in pool.Deposit.range(0, head + 1)]
            nonce = int(accounts.test_accounts[VOUCHER_ACCOUNT].nonce)
            relayer = str(redeemed[0].relayer) if redeemed else ""
        checks.check(f"voucher: {name} redeemed the note as relayer (its operator sent the transaction)",
                     len(redeemed) == 1 and relayer.lower() == self.chain.addresses[name].lower(),
                     f"fee {tokens(RELAYER_FEE)} credited to {name} in the pool")
        checks.check(f"voucher: the pool settled exactly {name}'s last stored receipt (signed by the fresh signer)",
                     (settled, settled_bytes) == (latest.cumulative_amount, latest.cumulative_bytes)
                     and settled_bytes >= leg["paid_bytes"] and state == 1,
                     f"{settled_bytes:,} bytes, {tokens(settled)}; the rest stays in the open channel")
        checks.check("voucher: the depositor's address is in no redemption or channel transaction or event",
                     not named and bool(txs["voucher_pool.settle"]) and nonce == self.depositor_nonce
                     and any(mentions(r, self.depositor) for r in deposits),
                     f"searched {sum(len(v) for v in txs.values())} transactions (sender, call data, logs); only "
                     f"the deposit names {self.depositor[:10]}..." if not named else ", ".join(named))
        return {"denomination_wei": VOUCHER_DENOMINATION, "relayer_fee_wei": RELAYER_FEE, "deposit_wei": leg["deposit"],
                "node": name, "channel_id": leg["channel_id"], "settled_wei": settled, "settled_bytes": settled_bytes,
                "download_s": leg["download_s"], "depositor_in_anonymous_txs": named}


def _voucher_keys(folder: Path) -> Path:
    """The proving key of the deployed development verifier: the repository's key folder
    (keys/voucher-depth20, as `warren voucher setup` writes it) when it holds that key, so later runs
    reuse it; else a folder of this run (never someone else's keys overwritten)."""
    from zk.export import vk_to_json
    from zk.keys import default_keys_dir, load_keys
    from zk.vyper_verifier import CHECKED_IN_VK, vk_from_snarkjs

    from agents.netlab.world import REPO_ROOT

    cached = REPO_ROOT / default_keys_dir(VOUCHER_DEPTH)
    if not cached.exists():
        return cached
    with contextlib.suppress(Exception):
        _, vk = load_keys(cached)
        if vk_from_snarkjs(vk_to_json(vk)) == vk_from_snarkjs(CHECKED_IN_VK):
            return cached
    return folder / "keys"


def _print_summary(console: Console, summary: dict) -> None:
    console.rule("[bold cyan]summary", align="left")
    table = Table(show_header=True, header_style="bold")
    for column in ("channel", "node", "status", "deposit", "settled", "bytes paid"):
        table.add_column(column)
    for row in summary.get("channels", []):
        table.add_row(row["channel_id"][:16], row["node_id"][:12], row["status"], tokens(row["deposit"]),
                      tokens(row["settled"]), f"{row['settled_bytes']:,}")
    console.print(table)
    if summary.get("failover_gap_s") is not None:
        console.print(f"  failover: the download waited {summary['failover_gap_s']:.2f} s")
    if summary.get("voucher"):
        v = summary["voucher"]
        console.print(f"  voucher: {v['settled_bytes']:,} bytes paid anonymously, {tokens(v['settled_wei'])} settled on "
                      f"the pool; the depositor named in {len(v['depositor_in_anonymous_txs'])} of its transactions")
    failed = [name for name, ok in summary["checks"].items() if not ok]
    if not failed:
        console.print(f"[bold green]all {len(summary['checks'])} checks passed[/bold green] in "
                      f"{summary['seconds']:.0f} s")
    else:
        console.print(f"[bold red]{len(failed)} of {len(summary['checks'])} checks FAILED[/bold red]: "
                      + escape("; ".join(failed)))
