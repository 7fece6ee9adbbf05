"""Paths benchmark (issue 10): one hop beside two hops (`warren connect --hops 2`), same world, same file.

In one lab world (agents.netlab.world, as scripts/bench_e2e.py: nodes NL = node_a, DE = node_b, FR =
node_c behind a NAT, the client behind a port-restricted NAT; `warren node run` on each, Warren on a
plain anvil) the same file is downloaded, alternating over ``--repeats`` rounds:

* ``single_path_mbps``: `warren connect --node <node_a>` (client -> node_a -> web);
* ``two_hop_mbps``: `warren connect --hops 2 --node <node_a> --relay-region DE` (client -> node_b ->
  node_a -> web: the exit's tunnel inside the relay's); ``two_hop_ratio`` = two_hop / single_path
  (the issue's goal: >= 0.8 on an unshaped path).

Medians are reported with each side's CPU-seconds per GiB (user + sys of the client and node
processes, agents.netlab.cpu: these hardly move with the machine's load, the Mbit/s do) and the load
average before and after. The multipath keys of the issue (``multipath_3_mbps``,
``multipath_speedup``, ``path_failure_recovery_s``) are not measured here: `--paths N` does not exist
yet, and they are reported as null rather than guessed. Needs root. The anvil and every process are
stopped before the last stdout line, one JSON object. ``--quick``: 8 MiB, one round (~2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e import connect, disconnect, fetch  # noqa: E402  (the same connect/download/CPU helpers)

from agents.netlab import Lab, NatType, can_build_namespaces  # noqa: E402
from agents.netlab.warren_net import deploy_chain, start_nodes  # noqa: E402
from agents.netlab.world import build_world, start_anvil  # noqa: E402

__all__ = ["main"]

#: Issue 10's goal for two hops against one, on an unshaped path.
GOAL_TWO_HOP_RATIO = 0.8
FULL_SIZE, QUICK_SIZE = 50 << 20, 8 << 20


def log(message: str) -> None:
    """Progress on stdout (never the last line)."""
    print(message, flush=True)


def run_once(world, chain, nodes, workdir: Path, *extra: str) -> dict:
    """One download through `warren connect` with ``extra`` flags; CPU of the client and the nodes."""
    proc, config, status = connect(world, chain, workdir, "--node", nodes["node_a"].status()["node_id"], *extra)
    try:
        pids = {"client": proc.pid, "exit": nodes["node_a"].proc.pid}
        if status.get("hops") == 2:
            pids["relay"] = nodes["node_b"].proc.pid
        return fetch(world, pids)
    finally:
        disconnect(world, config, proc)


def _median(values: list[float], digits: int = 1) -> float:
    return round(statistics.median(values), digits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="alternating one-hop / two-hop rounds")
    parser.add_argument("--size-mib", type=int, default=FULL_SIZE >> 20, help="file downloaded per run")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 MiB, one round")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.size_mib = 1, QUICK_SIZE >> 20
    if not can_build_namespaces():
        print("bench_paths: needs root (network namespaces, TUN devices, nftables)", file=sys.stderr)
        return 1
    started, load_before = time.monotonic(), os.getloadavg()
    samples: dict[str, list] = {"single": [], "two_hop": []}
    workdir = Path(tempfile.mkdtemp(prefix="bench-paths-"))
    ok = False
    try:
        with start_anvil() as anvil, Lab(prefix="wbpath") as lab:
            chain = deploy_chain(anvil.url, workdir)
            world = build_world(lab, chain_port=anvil.port, file_size=args.size_mib << 20,
                                client_nat=NatType.PORT_RESTRICTED)
            nodes = start_nodes(world, chain, workdir)
            log(f"world up in {time.monotonic() - started:.1f} s")
            for round_number in range(args.repeats):
                for kind, extra in (("single", ()), ("two_hop", ("--hops", "2", "--relay-region", "DE"))):
                    sample = run_once(world, chain, nodes, workdir, *extra)
                    samples[kind].append(sample)
                    cpu = " ".join(f"{k} {v:.2f}" for k, v in sample["cpu_s_per_gib"].items())
                    log(f"round {round_number + 1} {kind:<7} {sample['mbps']:7.1f} Mbit/s, CPU-s/GiB {cpu}, "
                        f"load {os.getloadavg()[0]:.2f}")
        ok = True
    finally:
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench_paths: failed; logs kept in {workdir}", file=sys.stderr)
    single = _median([s["mbps"] for s in samples["single"]])
    two_hop = _median([s["mbps"] for s in samples["two_hop"]])
    cpu = {kind: {side: _median([s["cpu_s_per_gib"][side] for s in samples[kind]], 2)
                  for side in samples[kind][0]["cpu_s_per_gib"]} for kind in samples}
    result = {
        "single_path_mbps": single,
        "two_hop_mbps": two_hop,
        "two_hop_ratio": round(two_hop / single, 3),
        "multipath_3_mbps": None,
        "multipath_speedup": None,
        "path_failure_recovery_s": None,
        "cpu_s_per_gib": {"single": cpu["single"], "two_hop": cpu["two_hop"],
                          "ratio_two_hop_to_single": round(sum(cpu["two_hop"].values())
                                                           / sum(cpu["single"].values()), 3)},
        "load_avg": {"before": [round(x, 2) for x in load_before],
                     "after": [round(x, 2) for x in os.getloadavg()]},
        "goals": {"two_hop_ratio": GOAL_TWO_HOP_RATIO},
        "goals_met": {"two_hop_ratio": two_hop / single >= GOAL_TWO_HOP_RATIO},
        "samples": {kind: [round(s["mbps"], 1) for s in samples[kind]] for kind in samples},
        "not_measured": ["multipath_3_mbps", "multipath_speedup", "path_failure_recovery_s"],
        "file_mib": args.size_mib, "repeats": args.repeats, "cpus": os.cpu_count(),
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
