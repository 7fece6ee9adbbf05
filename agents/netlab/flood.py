"""A handshake flood, as an attacker who knows a node's public key (it is on chain) would send it.

MAC1 needs only the responder's public key, so anyone can make initiations that pass it. The flood
is a set of such initiations from random static keys the responder does not know, built once
(:func:`initiations`) and sent over and over, as fast as one process can, from a namespace of the
lab (:data:`FLOODER`, run with ``python -c``), which counts what comes back by message type.
:func:`run_flood` is the whole scenario, used by tests/wireguard/test_netns_flood.py and
scripts/bench_tunnel.py: four hosts on one bridge, the node (our `warren tunnel up` process, or
wireguard-go as the anchor), its established peer pinging it through the tunnel, the flooder, and a
newcomer (a configured peer of the node, wireguard-go) that starts during the flood and must get in
by answering the cookie.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["FLOODER", "initiations", "run_flood"]

#: The newcomer's tunnel address (the node is 10.77.0.1, its established peer .2).
NEWCOMER_TUNNEL = "10.77.0.3"

#: argv: target host, port, seconds, file of initiations (each 148 bytes, concatenated). Prints one
#: JSON line: datagrams sent, replies received by first byte, reply sizes seen.
FLOODER = r"""
import json, socket, sys, time
host, port, seconds, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
blob = open(path, "rb").read()
messages = [blob[i:i + 148] for i in range(0, len(blob), 148)]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setblocking(False)
target, sent, replies, sizes = (host, port), 0, {}, set()

def drain():
    while True:
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            return
        replies[data[0]] = replies.get(data[0], 0) + 1
        sizes.add(len(data))

end = time.monotonic() + seconds
while time.monotonic() < end:
    for message in messages:
        try:
            sock.sendto(message, target)
            sent += 1
        except BlockingIOError:
            pass
    drain()
time.sleep(0.5)
drain()
print(json.dumps({"sent": sent, "replies": {str(k): v for k, v in replies.items()}, "sizes": sorted(sizes)}))
"""


def initiations(responder_public: bytes, endpoint: tuple[str, int], count: int = 64) -> bytes:
    """``count`` handshake initiations to ``responder_public`` with valid MAC1 and no MAC2, each from
    a fresh static key, concatenated."""
    from agents.wireguard import WireGuardDevice
    from agents.wireguard.config import generate_private_key

    out = []
    for i in range(count):
        stranger = WireGuardDevice(generate_private_key())
        stranger.add_peer(responder_public, allowed_ips=["10.255.255.255/32"], endpoint=endpoint)
        stranger.initiate_handshake(responder_public, 1000.0 + i)
        out += [datagram for datagram, _ in stranger.drain_outbox()]
    if any(len(d) != 148 or d[0] != 1 for d in out):
        raise ValueError("an initiation is not 148 bytes of type 1")
    return b"".join(out)


def run_flood(lab, workdir: Path, *, responder: str = "py", seconds: float = 12.0, pings: int = 20,
              ping_interval_s: float = 0.25) -> dict:
    """The flood scenario in ``lab`` against a ``responder`` ("py": `warren tunnel up`, "go":
    wireguard-go). Returns: initiations sent per second, replies to the flooder by type and their
    sizes, the peer's pings sent and received during the flood, and when (seconds after it started)
    the newcomer got a ping through, or None; ``responder_alive`` at the end."""
    from agents.netlab.wireguard import A_TUNNEL, spawn_python_tunnel, start_wireguard_go_in, tunnel_pair
    from agents.wireguard.config import InterfaceConfig, PeerConfig, generate_private_key

    internet = lab.add_internet()
    node, peer, flooder, newcomer = (lab.add_host(n) for n in ("node", "peer", "flood", "new"))
    node_ip, peer_ip = internet.attach(node), internet.attach(peer)
    internet.attach(flooder)
    internet.attach(newcomer)
    node_config, peer_config = tunnel_pair(None, peer_ip, keepalive=1)
    new_config = InterfaceConfig(private_key=generate_private_key(), listen_port=51900,
                                 addresses=[f"{NEWCOMER_TUNNEL}/24"])
    new_config.peers.append(PeerConfig(public_key=node_config.public_key, allowed_ips=[f"{A_TUNNEL}/32"],
                                       endpoint=(node_ip, node_config.listen_port)))
    node_config.peers.append(PeerConfig(public_key=new_config.public_key, allowed_ips=[f"{NEWCOMER_TUNNEL}/32"]))
    peer_config.peers[0].endpoint = (node_ip, node_config.listen_port)
    if responder == "py":
        alive = spawn_python_tunnel(lab, node, node_config, str(workdir)).process.poll
    else:
        alive = start_wireguard_go_in(lab, node, node_config).process.poll
    start_wireguard_go_in(lab, peer, peer_config)
    if not lab.wait_for(lambda: peer.ping(A_TUNNEL, count=1), timeout=15):
        raise RuntimeError("the established peer's session did not come up")

    blob = Path(workdir) / "initiations.bin"
    blob.write_bytes(initiations(node_config.public_key, (node_ip, node_config.listen_port)))
    flood = flooder.spawn([sys.executable, "-c", FLOODER, node_ip, str(node_config.listen_port), str(seconds),
                           str(blob)], stdout=subprocess.PIPE)
    time.sleep(1.0)  # the node is under load by now
    pinging = peer.spawn(["ping", "-n", "-c", str(pings), "-i", str(ping_interval_s), "-W", "1", A_TUNNEL],
                         stdout=subprocess.PIPE)
    start_wireguard_go_in(lab, newcomer, new_config)
    started = time.monotonic()
    joined = lab.wait_for(lambda: newcomer.ping(A_TUNNEL, count=1), timeout=max(1.0, seconds - 3), interval=0.2)
    joined_after = round(time.monotonic() - started, 2) if joined and flood.poll() is None else None
    ping_out = pinging.communicate(timeout=30)[0].decode()
    report = json.loads(flood.communicate(timeout=30)[0])
    received = re.search(r"(\d+) received", ping_out)
    return {"responder": responder, "initiations_per_s": round(report["sent"] / seconds),
            "flooder_replies": report["replies"], "flooder_reply_sizes": report["sizes"],
            "pings": pings, "pings_received": int(received.group(1)) if received else 0,
            "newcomer_joined_after_s": joined_after, "responder_alive": alive() is None}
