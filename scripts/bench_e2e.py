"""End-to-end benchmark (issue 9): a download through `warren node run` beside a plain tunnel.

In one lab world (agents.netlab.world: an internet with the web + DNS server, nodes NL/DE public, FR
behind a NAT, the client behind a port-restricted NAT) with Warren deployed on a plain anvil and
`warren node run` on every node host (agents.netlab.warren_net, as tests/e2e/test_exit_e2e.py does),
over the same path (client -> its NAT -> node_a -> web server) and the same file, measures:

* ``plain_tunnel_mbps``: two `warren tunnel up` processes (client and node_a; node_a forwards and
  masquerades to the web server with a plain nftables rule): the anchor;
* ``through_exit_mbps``: `warren connect --node <node_a>` through `warren node run` (metering, receipts,
  exit policy and NAT on); ``metering_overhead_pct`` = (plain - through) / plain * 100;
* ``cpu_s_per_gib``: user + sys CPU seconds (from /proc/<pid>/stat, the process, its descendants and
  the children they reaped, such as the node's `nft` calls) of the node and client processes, and of
  the plain tunnel's two, per GiB downloaded; ``cpu_split_s_per_gib`` splits each into user, sys and
  reaped children;
* ``failover_s``: SIGKILL the exit while the client loops small HTTP requests; seconds from the kill
  to the first response byte of a request started after it (through the standby node); median over
  ``--repeats`` kills (the killed node is restarted in between), ``failover_s_max`` the worst;
* ``receipts_per_s``: agents.node.ledger_bench.receipts_per_second (receipts verified and durably
  stored per CPU second of one core), one commit (fsync) per receipt as the node stores them;
  ``receipts_per_wall_s`` the same per wall second (the disk's fsync sets it);
  ``receipts_per_s_grouped_64`` with 64 receipts per commit, for comparison.

Plain and through-exit runs alternate over ``--repeats`` rounds (they cannot run at once: the client's
kill switch and full-tunnel routes would take the plain tunnel's traffic) and medians are reported,
with the load average before and after. Needs root. Every process and the anvil are stopped before
the last stdout line, which is one JSON object. ``--quick``: 8 MiB, one round (CI smoke, ~1 minute).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agents.netlab import Lab, NatType, can_build_namespaces
from agents.netlab.cpu import CPU_PARTS, tree_cpu_s
from agents.netlab.warren_net import client_config, client_status, deploy_chain, start_node, wait_for
from agents.netlab.wireguard import spawn_python_tunnel, tunnel_pair
from agents.netlab.world import build_world, run_in, spawn_in, start_anvil, warren_argv
from agents.node.config import NodeConfig
from agents.node.ledger_bench import GOAL_PER_SECOND, receipts_per_second

__all__ = ["main"]

#: Issue 9's goals.
GOAL_OVERHEAD_PCT, GOAL_FAILOVER_S = 2.0, 2.0
#: The file downloaded per sample (full / quick smoke run). CPU time is read in clock ticks (10 ms):
#: over 50 MiB, as before, one tick was 0.2 CPU-s/GiB, as large as the differences measured; over
#: 200 MiB it is 0.05.
FULL_SIZE, QUICK_SIZE = 200 << 20, 8 << 20
#: Plain tunnel's ports: off the node's own WireGuard port (51820), which `warren node run` holds.
PLAIN_CLIENT_PORT, PLAIN_NODE_PORT = 51830, 51831
#: The plain tunnel's subnet (the client is .1, node_a .2): off the node's session pool (10.77.0.0/16).
PLAIN_SUBNET = "10.99.0.0/24"
#: nftables table on node_a masquerading the plain tunnel's traffic to the uplink (as the exit does).
PLAIN_NAT = """
table ip warren_bench {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" ip saddr 10.99.0.0/24 masquerade
    }
}
"""
#: One GiB, the unit of the CPU figures.
GIB = 1 << 30
#: The failover probe's per-request timeout (seconds): the lab's RTT is ~1 ms, so this bounds how late
#: the first success after the switch can be seen (a SYN lost in the gap is retried after it).
PROBE_TIMEOUT_S = 0.2
#: How long to wait for traffic to flow again after the kill (seconds).
FAILOVER_WAIT_S = 30.0

FETCH = """
import hashlib, sys, time, urllib.request
h, got, t0 = hashlib.sha256(), 0, time.monotonic()
with urllib.request.urlopen(sys.argv[1], timeout=30) as r:
    while chunk := r.read(1 << 16):
        h.update(chunk); got += len(chunk)
print(h.hexdigest(), got, time.monotonic() - t0)
"""

#: Small requests back to back; prints "start first_byte" monotonic times (a system-wide clock) of each
#: answered request, so that a request already on its way at the kill is not taken for one after it.
PROBE = """
import socket, sys, time
host, timeout, until = sys.argv[1], float(sys.argv[2]), time.monotonic() + float(sys.argv[3])
request = b"GET /blob.bin HTTP/1.1\\r\\nHost: files.example\\r\\nRange: bytes=0-0\\r\\nConnection: close\\r\\n\\r\\n"
while time.monotonic() < until:
    start = time.monotonic()
    try:
        with socket.create_connection((host, 80), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(request)
            if s.recv(1):
                print(f"{start:.6f} {time.monotonic():.6f}", flush=True)
    except OSError:
        pass
    time.sleep(0.01)
"""


def log(message: str) -> None:
    """Progress on stdout (never the last line)."""
    print(message, flush=True)


# -- CPU of process trees --------------------------------------------------------------------------


def fetch(world, pids: dict[str, int]) -> dict:
    """Download the lab file in the client's namespace; Mbit/s and CPU-s per GiB of each of ``pids``
    (``cpu_s_per_gib`` the total, ``cpu_split`` by :data:`CPU_PARTS`)."""
    before = {name: tree_cpu_s(pid) for name, pid in pids.items()}
    result = run_in(world.client, ["python3", "-c", FETCH, world.file_url], timeout=300)
    after = {name: tree_cpu_s(pid) for name, pid in pids.items()}
    if result.returncode != 0:
        raise RuntimeError(f"download failed: {result.stderr.decode(errors='replace')[-2000:]}")
    digest, size, seconds = result.stdout.decode().split()
    if (digest, int(size)) != (world.file_sha256, world.file_size):
        raise RuntimeError(f"download corrupt: {size} bytes, sha256 {digest}")
    gib = int(size) / GIB
    split = {name: {part: (after[name][part] - before[name][part]) / gib for part in CPU_PARTS} for name in pids}
    return {"mbps": int(size) * 8 / float(seconds) / 1e6,
            "cpu_s_per_gib": {name: sum(parts.values()) for name, parts in split.items()},
            "cpu_split": split}


# -- the two ways through node_a ---------------------------------------------------------------------


def plain_run(lab: Lab, world, workdir: Path) -> dict:
    """One download through two `warren tunnel up` processes (client <-> node_a), then stop them."""
    node = world.node_a
    client_cfg, node_cfg = tunnel_pair(None, node.address, subnet=PLAIN_SUBNET, a_port=PLAIN_CLIENT_PORT,
                                       b_port=PLAIN_NODE_PORT)
    # The client routes the web server (HTTP and DNS) into the tunnel: the same path the exit takes.
    client_cfg.peers[0].allowed_ips.append(f"{world.web_address}/32")
    node.ns.sysctl("net.ipv4.ip_forward", 1)  # already on (the exit's); the plain path must not rely on it
    node.ns.run(["nft", "-f", "-"], input=PLAIN_NAT.encode())
    procs = []
    try:
        procs.append(spawn_python_tunnel(lab, node.ns, node_cfg, str(workdir)))
        procs.append(spawn_python_tunnel(lab, world.client, client_cfg, str(workdir)))
        if not lab.wait_for(lambda: world.client.ping(node_cfg.addresses[0].split("/")[0], count=1), timeout=15):
            raise RuntimeError("plain tunnel did not come up")
        return fetch(world, {"node": procs[0].process.pid, "client": procs[1].process.pid})
    finally:
        for proc in procs:
            lab.stop(proc.process)
        node.ns.run(["nft", "delete", "table", "ip", "warren_bench"], check=False)


def connect(world, chain, workdir: Path, *extra: str):
    """Start `warren connect` in the client's namespace and wait until connected."""
    config = client_config(world, chain, workdir, world.node_a)
    handle = open(workdir / "client.log", "ab")
    proc = spawn_in(world.client, warren_argv("connect", "--config", str(config), *extra), stdout=handle,
                    stderr=handle)
    handle.close()

    def connected():
        if proc.poll() is not None:
            raise RuntimeError("warren connect exited:\n" + (workdir / "client.log").read_text()[-3000:])
        status = client_status(world, config)
        return status if status.get("connected") else None

    return proc, config, wait_for(connected, 120, interval=0.5, what="client connected")


def disconnect(world, config: Path, proc) -> None:
    """`warren disconnect` (closes the channel cooperatively, removes kill switch and routes)."""
    run_in(world.client, warren_argv("disconnect", "--config", str(config)), timeout=90, check=True)
    proc.wait(timeout=30)


def exit_run(world, chain, nodes, workdir: Path) -> dict:
    """One download through `warren connect --node <node_a>` and `warren node run` on node_a."""
    proc, config, _ = connect(world, chain, workdir, "--node", nodes["node_a"].status()["node_id"])
    try:
        return fetch(world, {"node": nodes["node_a"].proc.pid, "client": proc.pid})
    finally:
        disconnect(world, config, proc)


def _probe_lines(path: Path) -> list[tuple[float, float]]:
    """The probe's complete lines so far: (request start, first byte) monotonic times."""
    lines = path.read_text().split("\n")[:-1]  # the last piece may be a line being written
    return [(float(a), float(b)) for a, b in (line.split() for line in lines)]


def failover_run(world, chain, nodes, workdir: Path) -> dict:
    """Kill the exit (SIGKILL) under a loop of small requests; seconds to the first byte after it."""
    proc, config, status = connect(world, chain, workdir)
    names = {(n.status() or {}).get("node_id"): name for name, n in nodes.items()}
    current, standby = names[status["node_id"]], names.get(status.get("standby"))
    log_start = (workdir / "client.log").stat().st_size
    out_path = workdir / "probe.out"
    with open(out_path, "wb") as out:
        probe = spawn_in(world.client, ["python3", "-c", PROBE, world.web_address, str(PROBE_TIMEOUT_S),
                                        str(FAILOVER_WAIT_S + 10)], stdout=out)
    try:
        wait_for(lambda: len(_probe_lines(out_path)) >= 5, 20, what="probe answered before the kill")
        killed_at = time.monotonic()
        os.kill(nodes[current].proc.pid, signal.SIGKILL)
        # A request that started after the kill cannot have gone through the dead node.
        after = wait_for(lambda: [end for start, end in _probe_lines(out_path) if start > killed_at],
                         FAILOVER_WAIT_S, interval=0.05, what="first byte after the kill")
        status = wait_for(lambda: (s := client_status(world, config)).get("failovers") and s, 10,
                          what="client reports the failover")
        with open(workdir / "client.log", "rb") as handle:
            handle.seek(log_start)
            for line in handle.read().decode(errors="replace").splitlines():
                if any(word in line for word in ("fail", "standby", "connected through", "unusable")):
                    log(f"client: {line[:300]}")
        return {"failover_s": after[0] - killed_at, "killed": current, "standby": standby,
                "to": names.get(status.get("node_id")),
                "client_switch_s": [f.get("switch_s") for f in status.get("failovers", [])]}
    finally:
        world.lab.stop(probe)
        disconnect(world, config, proc)


# -- main --------------------------------------------------------------------------------------------


def _median(values: list[float], digits: int = 1) -> float:
    return round(statistics.median(values), digits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="alternating plain / through-exit rounds")
    parser.add_argument("--size-mib", type=int, default=FULL_SIZE >> 20, help="file downloaded per run")
    parser.add_argument("--receipts", type=int, default=20_000, help="receipts for the ledger figure")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 MiB, one round")
    parser.add_argument("--receipt-kib", type=int, default=None,
                        help="the nodes' receipt_bytes in KiB (default: the node config's default)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.size_mib, args.receipts = 1, QUICK_SIZE >> 20, 2_000
    if not can_build_namespaces():
        print("bench_e2e: needs root (network namespaces, TUN devices, nftables)", file=sys.stderr)
        return 1

    started = time.monotonic()
    load_before = os.getloadavg()
    samples: dict[str, list] = {"plain": [], "exit": []}
    workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    ok = False
    try:
        with start_anvil() as anvil, Lab(prefix="wbe2e") as lab:
            chain = deploy_chain(anvil.url, workdir)
            world = build_world(lab, chain_port=anvil.port, file_size=args.size_mib << 20,
                                client_nat=NatType.PORT_RESTRICTED)
            extra = {"receipt_bytes": args.receipt_kib << 10} if args.receipt_kib else None
            nodes = {"node_a": start_node(world, chain, world.node_a, workdir, extra=extra)}
            for name in ("node_b", "node_c"):
                nodes[name] = start_node(world, chain, getattr(world, name), workdir, bootstrap=world.node_a,
                                         extra=extra)
            log(f"world up in {time.monotonic() - started:.1f} s")
            for round_number in range(args.repeats):
                for kind, run in (("plain", lambda: plain_run(lab, world, workdir)),
                                  ("exit", lambda: exit_run(world, chain, nodes, workdir))):
                    sample = run()
                    samples[kind].append(sample)
                    cpu = " ".join(f"{k} {v:.2f}" for k, v in sample["cpu_s_per_gib"].items())
                    log(f"round {round_number + 1} {kind:<5} {sample['mbps']:7.1f} Mbit/s, CPU-s/GiB {cpu}, "
                        f"load {os.getloadavg()[0]:.2f}")
            failovers = []
            for run_number in range(args.repeats):
                failovers.append(failover_run(world, chain, nodes, workdir))
                log(f"failover {run_number + 1}: {failovers[-1]}")
                killed = failovers[-1]["killed"]
                if run_number + 1 < args.repeats:  # the same node comes back (its keys and registration)
                    host = getattr(world, killed)
                    nodes[killed] = start_node(world, chain, host, workdir, extra=extra,
                                               bootstrap=None if host is world.node_a else world.node_a)
        ok = True
    finally:
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench_e2e: failed; logs kept in {workdir}", file=sys.stderr)
    # As the node stores them: one transaction (one fsync) per receipt, each acknowledged only once
    # it is on disk. Group commits (64 a transaction) are shown beside it: what batching would give.
    receipts = receipts_per_second(count=args.receipts, batch=1)
    grouped = receipts_per_second(count=args.receipts, batch=64)
    log(f"receipts: one per commit {receipts}; 64 per commit {grouped}")

    plain = _median([s["mbps"] for s in samples["plain"]])
    through = _median([s["mbps"] for s in samples["exit"]])
    cpu = {f"{kind}_{side}": _median([s["cpu_s_per_gib"][side] for s in samples[kind]], 2)
           for kind in ("plain", "exit") for side in ("node", "client")}
    result = {
        "plain_tunnel_mbps": plain,
        "through_exit_mbps": through,
        "metering_overhead_pct": round((plain - through) / plain * 100, 1),
        "failover_s": round(statistics.median(f["failover_s"] for f in failovers), 3),
        "failover_s_max": round(max(f["failover_s"] for f in failovers), 3),
        "receipt_bytes": args.receipt_kib << 10 if args.receipt_kib else NodeConfig.receipt_bytes,
        "receipts_per_s": round(receipts["per_second_cpu"], 1),
        "receipts_per_wall_s": round(receipts["per_second_wall"], 1),
        "receipts_per_s_grouped_64": round(grouped["per_second_cpu"], 1),
        "cpu_s_per_gib": {
            "exit_node": cpu["exit_node"], "exit_client": cpu["exit_client"],
            "plain_node": cpu["plain_node"], "plain_client": cpu["plain_client"],
            "ratio_exit_to_plain": round((cpu["exit_node"] + cpu["exit_client"])
                                         / (cpu["plain_node"] + cpu["plain_client"]), 3),
        },
        "cpu_split_s_per_gib": {f"{kind}_{side}": {part: _median([s["cpu_split"][side][part]
                                                                  for s in samples[kind]], 2)
                                                    for part in CPU_PARTS}
                                for kind in ("plain", "exit") for side in ("node", "client")},
        "load_avg": {"before": [round(x, 2) for x in load_before],
                     "after": [round(x, 2) for x in os.getloadavg()]},
        "goals": {"metering_overhead_pct": GOAL_OVERHEAD_PCT, "failover_s": GOAL_FAILOVER_S,
                  "receipts_per_s": GOAL_PER_SECOND},
        "samples": {"plain_mbps": [round(s["mbps"], 1) for s in samples["plain"]],
                    "through_exit_mbps": [round(s["mbps"], 1) for s in samples["exit"]]},
        "failovers": [{"failover_s": round(f["failover_s"], 3), "killed": f["killed"], "standby": f["standby"],
                       "to": f["to"], "client_switch_s": f["client_switch_s"]} for f in failovers],
        "probe_timeout_s": PROBE_TIMEOUT_S,
        "file_mib": args.size_mib, "repeats": args.repeats, "cpus": os.cpu_count(),
        "wall_s": round(time.monotonic() - started, 1),
    }
    result["goals_met"] = {"metering_overhead_pct": result["metering_overhead_pct"] < GOAL_OVERHEAD_PCT,
                           "failover_s": result["failover_s"] < GOAL_FAILOVER_S,
                           "receipts_per_s": result["receipts_per_s"] >= GOAL_PER_SECOND}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
