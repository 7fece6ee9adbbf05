"""`warren demo`: a small Warren network doing its real job, every part a real command in its own host.

What runs (nothing here is the product: the demo only starts the real commands and watches them):

1. A local anvil chain; Warren's contracts deployed (:func:`agents.chain.deploy.deploy_all`); tokens
   minted to three node operators and a client.
2. An "internet" of network namespaces with a real HTTP server and a DNS zone, three node hosts
   (two public, one behind a home NAT) each running ``warren node run`` (registers and stakes,
   publishes its signed PeerRecord in the overlay, serves WireGuard, exits to the internet through its
   own nftables table, answers DNS in the tunnel, meters and settles), and a client host behind a home
   NAT running ``warren connect --region NL``.
3. The client downloads a file from the internet through its exit, with a resumable downloader
   (SHA-256 checked). Mid-download the demo kills the exit (SIGKILL): the client fails over to the
   standby node by itself, the download resumes; the time the user waited is measured.
4. ``warren disconnect``: the client pays its last receipt and closes the live channel cooperatively;
   the dead node's channel was put into a unilateral close by the client during failover. The nodes
   are stopped with SIGTERM and settle what they hold.
5. A live view (rich) shows the nodes, sessions, bytes, receipts and settlements while it runs; the
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
#: The client's region: two nodes serve it, so one can take over from the other.
REGIONS = ("NL", "NL", "DE")
#: Prefix of the demo's namespaces (tests check none is left behind).
NETNS_PREFIX = "wdemo"


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
    from agents.netlab import is_root

    if not is_root():
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
        chain = deploy_chain(anvil.url, workdir)
        console.print(f"  anvil at {anvil.url}; Warren deployed ({chain.deployment})")
        world = build_world(lab, chain_port=anvil.port, file_size=file_bytes, client_nat=NatType.PORT_RESTRICTED,
                            regions=REGIONS)
        console.print(f"  internet {world.internet.subnet}: web server {world.web_address} "
                      f"(http://files.example/{world.file_name}, {mib(file_bytes)}), DNS {world.dns_server}")

        console.rule("[bold cyan]2. three exit nodes: `warren node run`", align="left")
        nodes = {"node_a": start_node(world, chain, world.node_a, workdir)}
        for name in ("node_b", "node_c"):
            nodes[name] = start_node(world, chain, getattr(world, name), workdir, bootstrap=world.node_a)
        for name, node in nodes.items():
            status = node.status()
            where = "behind a NAT" if node.host.nat else f"public {node.host.address}"
            console.print(f"  {name}: region {node.host.region}, {where}, node id {status['node_id'][:16]}..., "
                          f"overlay {status['overlay']['mode']}")

        console.rule("[bold cyan]3. the client: `warren connect --region NL`", align="left")
        config = client_config(world, chain, workdir, world.node_a)
        client_log = open(workdir / "client.log", "ab")
        client = spawn_in(world.client, warren_argv("connect", "--config", str(config), "--region", "NL"),
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
                                        "--stall-s", "1.0", "--deadline-s", "180"],
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

        console.rule("[bold cyan]5. `warren disconnect`, nodes stopped (they settle), the chain's figures",
                     align="left")
        run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90)
        client.wait(timeout=30)
        checks.check("disconnect removed the kill switch and restored DNS",
                     "warren_client" not in run_in(world.client, ["nft", "list", "tables"]).stdout.decode()
                     and "warren connect" not in Path(f"/etc/netns/{world.client.name}/resolv.conf").read_text())
        for name, node in nodes.items():
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
                node.proc.wait(timeout=60)
        summary.update(_chain_summary(chain, workdir, nodes, first, after, checks))
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


def _chain_summary(chain, workdir: Path, nodes: dict, first: dict, last: dict, checks: _Checks) -> dict:
    """Every money figure, read back from the chain."""
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
    failed = [name for name, ok in summary["checks"].items() if not ok]
    if not failed:
        console.print(f"[bold green]all {len(summary['checks'])} checks passed[/bold green] in "
                      f"{summary['seconds']:.0f} s")
    else:
        console.print(f"[bold red]{len(failed)} of {len(summary['checks'])} checks FAILED[/bold red]: "
                      + escape("; ".join(failed)))
