"""Tunnel benchmark: iperf3 TCP throughput through WireGuard tunnels in network namespaces.

In one run and over the same path (two namespaces joined by a veth pair, tunnel MTU 1420), measures:

* ``wireguard_go_mbps``: wireguard-go <-> wireguard-go (the anchor);
* ``python_mbps``: Warren's Python tunnel <-> Python tunnel (each a `warren tunnel up` process);
* ``mixed_mbps``: Python (sending side) <-> wireguard-go; ``mixed_reverse_mbps``: the other way;
* ``cpu_s_per_gib``: user + sys CPU seconds of both tunnel processes per GiB received, per mode, and
  ``cpu_ratio_python_to_wg_go`` (ours over theirs): on an idle machine throughput alone flatters
  nobody, on a loaded one it flatters the side with fewer threads (docs/BENCHMARKS.md);
* ``multi_client``: an exit's hot path, one `warren tunnel up` responder serving 1, 8 and 32
  wireguard-go clients (each its own host on one bridge) downloading from it at once (iperf3
  reverse, one server per client on the responder's host): aggregate Mbit/s and the responder's
  CPU-s per GiB (the clients share the same two cores, so this is what the machine does in all);
* ``handshakes_per_s``: complete handshakes per second on one core of the Python core
  (``agents.wireguard.perf.handshakes_per_second``);
* ``flood``: agents.netlab.flood.run_flood against our tunnel and against wireguard-go: valid-MAC1
  initiations from a third host as fast as one process sends them while the established peer pings;
  ``flood_peer_delivery`` (share of its pings answered) for each, and what the flooder got back.

The throughput modes are interleaved over ``--repeats`` rounds and the medians reported, since the
machine is shared and noisy; ``ratio_python_to_wg_go`` is the ratio of the medians; the load average
is read at the start and the end. ``WARREN_OFFLOADS=0`` measures our tunnel without any offloads,
``WARREN_OFFLOADS=udp`` with UDP GSO/GRO but no TUN offloads (TSO trains, GRO writes); the JSON's
``offloads`` says which.
Needs root. The last stdout line is one JSON object. ``--quick`` is a smoke run (one 2-second round,
a 4-second flood).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from agents.netlab import Lab, can_build_namespaces
from agents.netlab.cpu import tree_cpu_s
from agents.netlab.flood import run_flood
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


#: One GiB, the unit of the CPU figures.
GIB = 1 << 30


def _busy_s(pids: list[int]) -> float:
    return sum(cpu["user"] + cpu["sys"] for cpu in map(tree_cpu_s, pids))


def measure(sender: str, receiver: str, seconds: float) -> tuple[float, float]:
    """iperf3 TCP from namespace a (``sender`` tunnel) to b (``receiver`` tunnel): Mbit/s, and CPU
    seconds of the two tunnel processes per GiB received."""
    with Lab(prefix="wbench") as lab, tempfile.TemporaryDirectory() as workdir:
        a, b = lab.add_host("a"), lab.add_host("b")
        link = lab.connect(a, b)
        configs = tunnel_pair(link.a_address, link.b_address)
        pids = []
        for ns, kind, config in ((a, sender, configs[0]), (b, receiver, configs[1])):
            if kind == "py":
                pids.append(spawn_python_tunnel(lab, ns, config, workdir).process.pid)
            else:
                pids.append(start_wireguard_go_in(lab, ns, config).process.pid)
        b.spawn(["iperf3", "-s", "-1", "-B", B_TUNNEL])
        lab.wait_for(lambda: b.run(["ss", "-Hltn", "sport = :5201"]).stdout.strip())
        if not lab.wait_for(lambda: a.ping(B_TUNNEL, count=1), timeout=15):
            raise RuntimeError(f"{sender}->{receiver}: tunnel did not come up")
        busy = _busy_s(pids)
        result = a.run(["iperf3", "-c", B_TUNNEL, "-t", str(seconds), "-J"],
                       timeout=seconds + 30)
        busy = _busy_s(pids) - busy
        received = json.loads(result.stdout)["end"]["sum_received"]
        return received["bits_per_second"] / 1e6, busy / (received["bytes"] / GIB)


def multi_client(clients: int, seconds: float) -> dict:
    """``clients`` wireguard-go clients downloading at once through one Python responder."""
    from agents.wireguard.config import InterfaceConfig, PeerConfig, generate_private_key

    with Lab(prefix="wmulti") as lab, tempfile.TemporaryDirectory() as workdir:
        internet = lab.add_internet()
        node = lab.add_host("node")
        node_ip = internet.attach(node)
        responder = InterfaceConfig(private_key=generate_private_key(), listen_port=51820,
                                    addresses=["10.78.0.1/16"])
        hosts = []
        for i in range(clients):
            host = lab.add_host(f"c{i}")
            internet.attach(host)
            address = f"10.78.{1 + i // 250}.{1 + i % 250}"
            config = InterfaceConfig(private_key=generate_private_key(), addresses=[f"{address}/16"])
            config.peers.append(PeerConfig(public_key=responder.public_key, allowed_ips=["10.78.0.1/32"],
                                           endpoint=(node_ip, 51820)))
            responder.peers.append(PeerConfig(public_key=config.public_key, allowed_ips=[f"{address}/32"]))
            hosts.append((host, config))
        pid = spawn_python_tunnel(lab, node, responder, workdir).process.pid
        for i, (host, config) in enumerate(hosts):
            start_wireguard_go_in(lab, host, config)
            node.spawn(["iperf3", "-s", "-1", "-B", "10.78.0.1", "-p", str(5300 + i)])
        for host, _ in hosts:
            if not lab.wait_for(lambda: host.ping("10.78.0.1", count=1), timeout=20):
                raise RuntimeError(f"multi_client: client {host.short} did not come up")
        busy = _busy_s([pid])
        runs = [host.spawn(["iperf3", "-c", "10.78.0.1", "-p", str(5300 + i), "-R", "-t", str(seconds), "-J"],
                           stdout=subprocess.PIPE) for i, (host, _) in enumerate(hosts)]
        reports = [json.loads(run.communicate(timeout=seconds + 60)[0]) for run in runs]
        busy = _busy_s([pid]) - busy
    received = [r["end"]["sum_received"] for r in reports]
    total_bytes = sum(r["bytes"] for r in received)
    return {"clients": clients, "mbps": round(sum(r["bits_per_second"] for r in received) / 1e6, 1),
            "min_client_mbps": round(min(r["bits_per_second"] for r in received) / 1e6, 1),
            "responder_cpu_s_per_gib": round(busy / (total_bytes / GIB), 2)}


def flood(responder: str, seconds: float) -> dict:
    """agents.netlab.flood.run_flood against ``responder`` ("py" or "go") in a lab of its own."""
    with Lab(prefix="wflood") as lab, tempfile.TemporaryDirectory() as workdir:
        result = run_flood(lab, workdir, responder=responder, seconds=seconds,
                           pings=max(4, int((seconds - 2) / 0.25)))
    result["flood_peer_delivery"] = round(result["pings_received"] / result["pings"], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="iperf3 duration per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--handshake-seconds", type=float, default=3.0)
    parser.add_argument("--flood-seconds", type=float, default=12.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: one 2 s round")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats, args.handshake_seconds, args.flood_seconds = 2.0, 1, 1.0, 4.0
    if not can_build_namespaces():
        print("bench_tunnel: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 1

    samples: dict[str, list[float]] = {name: [] for name in MODES}
    cpu: dict[str, list[float]] = {name: [] for name in MODES}
    started, load_start = time.monotonic(), os.getloadavg()
    for round_number in range(args.repeats):
        for name, (sender, receiver) in MODES.items():
            mbps, cpu_per_gib = measure(sender, receiver, args.seconds)
            samples[name].append(mbps)
            cpu[name].append(cpu_per_gib)
            print(f"round {round_number + 1} {name:<20} {sender}->{receiver} {mbps:8.1f} Mbit/s, "
                  f"{cpu_per_gib:5.2f} CPU-s/GiB, load {os.getloadavg()[0]:.2f}", flush=True)
    handshakes = handshakes_per_second(args.handshake_seconds)
    print(f"handshakes per second (one core, both ends): {handshakes:.0f}", flush=True)
    multi = {}
    for clients in (1, 8, 32):
        multi[str(clients)] = multi_client(clients, args.seconds)
        print(f"multi_client {clients}: {multi[str(clients)]}, load {os.getloadavg()[0]:.2f}", flush=True)
    floods = {}
    for responder in ("py", "go"):
        floods[responder] = flood(responder, args.flood_seconds)
        print(f"flood against {responder}: {floods[responder]}", flush=True)
    load_end = os.getloadavg()

    result = {name: round(statistics.median(values), 1) for name, values in samples.items()}
    result["ratio_python_to_wg_go"] = round(result["python_mbps"] / result["wireguard_go_mbps"], 3)
    result["cpu_s_per_gib"] = {name: round(statistics.median(values), 2) for name, values in cpu.items()}
    result["cpu_ratio_python_to_wg_go"] = round(result["cpu_s_per_gib"]["python_mbps"]
                                                / result["cpu_s_per_gib"]["wireguard_go_mbps"], 3)
    result["handshakes_per_s"] = round(handshakes, 1)
    result["multi_client"] = multi
    result["flood_peer_delivery"] = floods["py"]["flood_peer_delivery"]
    result["flood_peer_delivery_wg_go"] = floods["go"]["flood_peer_delivery"]
    result["flood"] = floods
    result["offloads"] = {"0": "none", "udp": "udp"}.get(os.environ.get("WARREN_OFFLOADS", "1"), "udp+tun")
    result["load_average_start"] = [round(x, 2) for x in load_start]
    result["load_average_end"] = [round(x, 2) for x in load_end]
    result["samples"] = {name: [round(v, 1) for v in values] for name, values in samples.items()}
    result["cpu_samples"] = {name: [round(v, 2) for v in values] for name, values in cpu.items()}
    result["seconds_per_run"] = args.seconds
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
