"""A handshake flood against a running `warren tunnel up`: its established peer keeps flowing.

Four hosts on one bridge: the node (our tunnel, as its own process), its established peer
(wireguard-go), a flooder sending valid-MAC1 initiations from strangers as fast as one process can
(agents.netlab.flood), and a newcomer (wireguard-go, a configured peer of the node) that starts
during the flood and must get in by answering the cookie.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from agents.netlab.flood import FLOODER, initiations
from agents.netlab.wireguard import A_TUNNEL, spawn_python_tunnel, start_wireguard_go_in, tunnel_pair
from agents.wireguard.config import InterfaceConfig, PeerConfig, generate_private_key

#: How long the flood lasts (seconds), and the peer's pings inside it.
FLOOD_S = 12.0
PINGS, PING_INTERVAL_S = 20, 0.25
NEWCOMER_TUNNEL = "10.77.0.3"


def test_handshake_flood__peer_keeps_its_pings__flooder_gets_only_cookies__newcomer_gets_in(root, tmp_path):
    from agents.netlab import Lab

    with Lab() as lab:
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
        tunnel = spawn_python_tunnel(lab, node, node_config, str(tmp_path))
        start_wireguard_go_in(lab, peer, peer_config)
        assert lab.wait_for(lambda: peer.ping(A_TUNNEL, count=1), timeout=15), "the peer's session"

        blob = tmp_path / "initiations.bin"
        blob.write_bytes(initiations(node_config.public_key, (node_ip, node_config.listen_port)))
        flood = flooder.spawn([sys.executable, "-c", FLOODER, node_ip, str(node_config.listen_port), str(FLOOD_S),
                               str(blob)], stdout=subprocess.PIPE)
        time.sleep(1.0)  # the node is under load by now
        pinging = peer.spawn(["ping", "-n", "-c", str(PINGS), "-i", str(PING_INTERVAL_S), "-W", "1", A_TUNNEL],
                             stdout=subprocess.PIPE)
        start_wireguard_go_in(lab, newcomer, new_config)
        started = time.monotonic()
        joined = lab.wait_for(lambda: newcomer.ping(A_TUNNEL, count=1), timeout=FLOOD_S - 3, interval=0.2)
        joined_after = time.monotonic() - started
        still_flooding = flood.poll() is None
        ping_out = pinging.communicate(timeout=30)[0].decode()
        report = json.loads(flood.communicate(timeout=30)[0])

        received = int(re.search(r"(\d+) received", ping_out).group(1))
        print(f"flood: {report['sent'] / FLOOD_S:,.0f} initiations/s, replies {report['replies']}; "
              f"peer {received}/{PINGS} pings; newcomer in after {joined_after:.1f} s")
        assert report["sent"] > 50_000  # a real flood (the node is under load), not a trickle
        assert received >= 0.95 * PINGS, ping_out
        # Nothing but cookie replies (type 3, 64 bytes) ever goes back to the flooder.
        assert set(report["replies"]) <= {"3"} and set(report["sizes"]) <= {64}, report
        assert joined and still_flooding, f"the newcomer got in: {joined}, during the flood: {still_flooding}"
        assert tunnel.process.poll() is None
