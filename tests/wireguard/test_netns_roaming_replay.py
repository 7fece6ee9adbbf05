"""Roaming (a peer's address changes) and replay attacks, on a shared "internet" in namespaces."""

import socket
import time

import pytest

from agents.netlab import NatType
from agents.netlab.wireguard import (
    A_TUNNEL,
    B_TUNNEL,
    start_python_tunnel,
    start_wireguard_go_in,
    tunnel_pair,
)
from agents.wireguard import EndpointChanged, HandshakeCompleted


def tun_rx_packets(ns, ifname):
    """Packets the kernel received from the TUN device (what we wrote into it)."""
    return int(ns.run(["cat", f"/sys/class/net/{ifname}/statistics/rx_packets"]).stdout)


@pytest.fixture
def internet_lab(lab):
    """An internet bridge with hosts a (198.51.100.2), b (.3) and eve (.4)."""
    internet = lab.add_internet()
    hosts = {name: lab.add_host(name) for name in ("a", "b", "eve")}
    for host in hosts.values():
        internet.attach(host)
    return lab, internet, hosts


def test_roaming__both_sides_follow_address_changes(internet_lab):
    """b (wireguard-go) sits behind a full-cone NAT whose public address changes; then a moves.

    The NAT's address change is how b's address changes as a sees it: wireguard-go 0.0.20220316
    keeps its cached ("sticky") source address after its own host's address is replaced, and never
    sends again, so we move b's public face rather than b itself. a (Python) moves its own address.
    """
    lab, internet, hosts = internet_lab
    a = hosts["a"]
    nat = lab.add_nat("home", NatType.FULL_CONE, internet)
    b = lab.add_host("b2")
    nat.attach(b)
    python_config, go_config = tunnel_pair(a.address, None)
    tunnel = start_python_tunnel(lab, a, python_config)
    go = start_wireguard_go_in(lab, b, go_config)
    assert b.ping(A_TUNNEL)
    assert tunnel.peers()[0].endpoint == (nat.public_address, go_config.listen_port)

    # b's public address changes: its next packets come from there, and we must answer there.
    new_b = nat.namespace.set_address("wan0", "198.51.100.50/24")
    assert b.ping(A_TUNNEL)
    assert tunnel.peers()[0].endpoint == (new_b, go_config.listen_port)
    assert any(isinstance(e, EndpointChanged) and e.endpoint[0] == new_b for e in tunnel.events)
    assert a.ping(B_TUNNEL)

    # a moves: wireguard-go must follow our authenticated packets from the new address.
    new_a = a.set_address("eth0", "198.51.100.60/24")
    assert a.ping(B_TUNNEL)
    assert go.peers()[0].endpoint == (new_a, python_config.listen_port)
    assert b.ping(A_TUNNEL)


def test_replay__captured_packets_from_attacker__nothing_gets_through(internet_lab):
    lab, _, hosts = internet_lab
    a, b, eve = hosts["a"], hosts["b"], hosts["eve"]
    python_config, go_config = tunnel_pair(a.address, b.address)
    python_config.peers[0].endpoint = None  # a is the responder: b's initiation gets captured too
    port = python_config.listen_port
    tunnel = start_python_tunnel(lab, a, python_config)
    start_wireguard_go_in(lab, b, go_config)

    with a.capture_udp(port) as capture:
        assert b.ping(A_TUNNEL)
        assert a.ping(B_TUNNEL)
        time.sleep(0.2)
    inbound = [d for d in capture.snapshot() if not d.outgoing and d.dst[1] == port]
    kinds = {d.payload[0] for d in inbound}
    assert 1 in kinds and 4 in kinds, f"capture missed the initiation or data: {kinds}"

    before = tunnel.peers()[0]
    handshakes = sum(isinstance(e, HandshakeCompleted) for e in tunnel.events)
    drops = sum(tunnel.device.drop_counters.values())
    rx_packets = tun_rx_packets(a, tunnel.ifname)

    with eve.enter():
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with attacker:
        attacker.bind((eve.address, 0))
        for datagram in inbound:
            attacker.sendto(datagram.payload, (a.address, port))
        attacker.settimeout(1.0)
        with pytest.raises(TimeoutError):  # no answer, not even to the replayed initiation
            attacker.recvfrom(2048)

    after = tunnel.peers()[0]
    assert tun_rx_packets(a, tunnel.ifname) == rx_packets
    assert after.endpoint == before.endpoint == (b.address, go_config.listen_port)
    assert after.rx_bytes == before.rx_bytes
    assert after.last_handshake == before.last_handshake
    assert sum(isinstance(e, HandshakeCompleted) for e in tunnel.events) == handshakes
    assert sum(tunnel.device.drop_counters.values()) - drops == len(inbound)
    assert b.ping(A_TUNNEL), "the real peer must still get through"
