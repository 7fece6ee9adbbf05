"""Tunnel benchmark: iperf3 TCP throughput through WireGuard tunnels in network namespaces.

In one run and over the same path (two namespaces joined by a veth pair, tunnel MTU 1420), measures:

* ``wireguard_go_mbps``: wireguard-go <-> wireguard-go (the anchor);
* ``python_mbps``: Warren's Python tunnel <-> Python tunnel (each a `warren tunnel up` process);
* ``mixed_mbps``: Python (sending side) <-> wireguard-go; ``mixed_reverse_mbps``: the other way;
* ``handshakes_per_s``: complete handshakes per second on one core of the Python core
  (``agents.wireguard.perf.handshakes_per_second``).

The modes are interleaved over ``--repeats`` rounds and the medians reported, since the machine is
shared and noisy; ``ratio_python_to_wg_go`` is the ratio of the medians. Needs root. The last stdout
line is one JSON object. ``--quick`` is a smoke run (one 2-second round).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

from agents.netlab import Lab, can_build_namespaces
from agents.netlab.wireguard import (
    B_TUNNEL,
    spawn_python_tunnel,
    start_wireguard_go_in,
    tunnel_pair,
)
from agents.wireguard.perf import handshakes_per_second

#: (sender side, receiver side) per reported figure; "py" = Python tunnel, "go" = wireguard-go.
MODES = {
    "wireguard_go_mbps": ("go", "go"),
    "python_mbps": ("py", "py"),
    "mixed_mbps": ("py", "go"),
    "mixed_reverse_mbps": ("go", "py"),
}


def measure(sender: str, receiver: str, seconds: float) -> float:
    """iperf3 TCP from namespace a (``sender`` tunnel) to b (``receiver`` tunnel), in Mbit/s."""
    with Lab(prefix="wbench") as lab, tempfile.TemporaryDirectory() as workdir:
        a, b = lab.add_host("a"), lab.add_host("b")
        link = lab.connect(a, b)
        configs = tunnel_pair(link.a_address, link.b_address)
        for ns, kind, config in ((a, sender, configs[0]), (b, receiver, configs[1])):
            if kind == "py":
                spawn_python_tunnel(lab, ns, config, workdir)
            else:
                start_wireguard_go_in(lab, ns, config)
        b.spawn(["iperf3", "-s", "-1", "-B", B_TUNNEL])
        lab.wait_for(lambda: b.run(["ss", "-Hltn", "sport = :5201"]).stdout.strip())
        if not lab.wait_for(lambda: a.ping(B_TUNNEL, count=1), timeout=15):
            raise RuntimeError(f"{sender}->{receiver}: tunnel did not come up")
        result = a.run(["iperf3", "-c", B_TUNNEL, "-t", str(seconds), "-J"],
                       timeout=seconds + 30)
        report = json.loads(result.stdout)
        return report["end"]["sum_received"]["bits_per_second"] / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="iperf3 duration per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--handshake-seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: one 2 s round")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats, args.handshake_seconds = 2.0, 1, 1.0
    if not can_build_namespaces():
        print("bench_tunnel: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 1

    samples: dict[str, list[float]] = {name: [] for name in MODES}
    started = time.monotonic()
    for round_number in range(args.repeats):
        for name, (sender, receiver) in MODES.items():
            mbps = measure(sender, receiver, args.seconds)
            samples[name].append(mbps)
            print(f"round {round_number + 1} {name:<20} {sender}->{receiver} {mbps:8.1f} Mbit/s",
                  flush=True)
    handshakes = handshakes_per_second(args.handshake_seconds)
    print(f"handshakes per second (one core, both ends): {handshakes:.0f}", flush=True)

    result = {name: round(statistics.median(values), 1) for name, values in samples.items()}
    result["ratio_python_to_wg_go"] = round(result["python_mbps"] / result["wireguard_go_mbps"], 3)
    result["handshakes_per_s"] = round(handshakes, 1)
    result["samples"] = {name: [round(v, 1) for v in values] for name, values in samples.items()}
    result["seconds_per_run"] = args.seconds
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
