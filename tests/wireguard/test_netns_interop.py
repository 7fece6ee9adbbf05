"""Interoperability with real WireGuard (wireguard-go from Debian), in network namespaces.

Python initiator <-> wireguard-go responder and wireguard-go initiator <-> Python responder, with and
without a pre-shared key: the handshake completes, ping works both ways, and 20 MiB cross the tunnel
over TCP with a matching SHA-256. The Python side runs in this process (its TUN device and socket
inside the namespace), so the test can read the core's events and counters; the TCP endpoints are
separate processes.
"""

import subprocess
import sys
import textwrap

import pytest

from agents.netlab.wireguard import (
    A_TUNNEL,
    B_TUNNEL,
    start_python_tunnel,
    start_wireguard_go_in,
    tunnel_pair,
)
from agents.wireguard import HandshakeCompleted

#: The issue's transfer size.
TRANSFER_BYTES = 20 * 1024 * 1024
TRANSFER_PORT = 5201

_RECEIVER = textwrap.dedent("""
    import hashlib, socket, sys
    srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
    srv.settimeout(30)
    print("listening", flush=True)
    conn, _ = srv.accept()
    conn.settimeout(30)
    digest, total = hashlib.sha256(), 0
    while chunk := conn.recv(1 << 16):
        digest.update(chunk)
        total += len(chunk)
    print(total, digest.hexdigest(), flush=True)
""")

_SENDER = textwrap.dedent("""
    import hashlib, random, socket, sys
    data = random.Random(int(sys.argv[3])).randbytes(int(sys.argv[4]))
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30) as conn:
        conn.sendall(data)
    print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
""")


def tcp_transfer(sender_ns, receiver_ns, receiver_ip, size=TRANSFER_BYTES, seed=7):
    """Send ``size`` random bytes over TCP through the tunnel; return (sent, received) summaries."""
    receiver = receiver_ns.spawn([sys.executable, "-c", _RECEIVER, receiver_ip, str(TRANSFER_PORT)],
                                 stdout=subprocess.PIPE)
    assert receiver.stdout.readline().strip() == b"listening"
    sent = sender_ns.run([sys.executable, "-c", _SENDER, receiver_ip, str(TRANSFER_PORT), str(seed),
                          str(size)], timeout=60).stdout.decode().split()
    received = receiver.stdout.readline().decode().split()
    receiver.wait(timeout=10)
    return sent, received


@pytest.mark.parametrize("psk", [False, True], ids=["no-psk", "psk"])
def test_python_initiator__wireguard_go_responder(lab, hosts, psk):
    a, b, link = hosts
    python_config, go_config = tunnel_pair(link.a_address, link.b_address, psk=psk)
    go_config.peers[0].endpoint = None  # the responder learns where we are from our initiation
    go = start_wireguard_go_in(lab, b, go_config)
    tunnel = start_python_tunnel(lab, a, python_config)

    assert a.ping(B_TUNNEL), "Python -> wireguard-go ping failed"
    assert b.ping(A_TUNNEL), "wireguard-go -> Python ping failed"
    completed = [e for e in tunnel.events if isinstance(e, HandshakeCompleted)]
    assert completed and completed[0].initiator is True
    assert go.peers()[0].last_handshake is not None

    sent, received = tcp_transfer(a, b, B_TUNNEL)
    assert sent == received == [str(TRANSFER_BYTES), sent[1]]
    if tunnel.tun.vnet_hdr:  # offloads on (WARREN_OFFLOADS): our TSO trains were cut for wireguard-go
        assert tunnel.offload_counts["tso_reads"] > 0
    (stats,) = tunnel.peers()
    assert stats.tx_bytes > TRANSFER_BYTES
    assert go.peers()[0].rx_bytes > TRANSFER_BYTES


@pytest.mark.parametrize("psk", [False, True], ids=["no-psk", "psk"])
def test_wireguard_go_initiator__python_responder(lab, hosts, psk):
    a, b, link = hosts
    python_config, go_config = tunnel_pair(link.a_address, link.b_address, psk=psk)
    python_config.peers[0].endpoint = None  # we only answer
    tunnel = start_python_tunnel(lab, a, python_config)
    go = start_wireguard_go_in(lab, b, go_config)

    assert b.ping(A_TUNNEL), "wireguard-go -> Python ping failed"
    assert a.ping(B_TUNNEL), "Python -> wireguard-go ping failed"
    completed = [e for e in tunnel.events if isinstance(e, HandshakeCompleted)]
    assert completed and completed[0].initiator is False
    assert tunnel.peers()[0].endpoint == (link.b_address, go_config.listen_port)

    sent, received = tcp_transfer(b, a, A_TUNNEL, seed=11)
    assert sent == received == [str(TRANSFER_BYTES), sent[1]]
    assert tunnel.peers()[0].rx_bytes > TRANSFER_BYTES
    assert go.peers()[0].tx_bytes > TRANSFER_BYTES


@pytest.mark.parametrize("offloads", [True, False], ids=["offloads", "no-offloads"])
def test_python_to_python__bulk_transfer__offloads_on_and_off(lab, hosts, offloads):
    """With offloads the sender's datagrams leave in GSO runs and arrive coalesced (GRO); the bytes are
    the same either way, and wireguard-go (tests above, offloads on our side) reads our runs too."""
    a, b, link = hosts
    a_config, b_config = tunnel_pair(link.a_address, link.b_address)
    b_config.peers[0].endpoint = None
    receiver = start_python_tunnel(lab, b, b_config, offloads=offloads)
    sender = start_python_tunnel(lab, a, a_config, offloads=offloads)
    assert a.ping(B_TUNNEL)
    sent, received = tcp_transfer(a, b, B_TUNNEL, seed=13)
    assert sent == received == [str(TRANSFER_BYTES), sent[1]]
    if offloads:
        assert sender.offload_counts["gso_runs"] > 0
        assert sender.offload_counts["gso_segments"] > 2 * sender.offload_counts["gso_runs"]
        assert receiver.offload_counts["gro_receives"] > 0
        # TUN offloads: the sender read TCP trains (cut into segments), the receiver merged them.
        assert sender.tun.vnet_hdr and receiver.tun.vnet_hdr
        assert sender.offload_counts["tso_segments"] > 2 * sender.offload_counts["tso_reads"] > 0
        assert receiver.offload_counts["tun_gro_writes"] > 0
    else:
        assert not sender.offload_counts and not receiver.offload_counts


@pytest.mark.parametrize("offloads", [True, False], ids=["offloads", "no-offloads"])
@pytest.mark.parametrize("underlay_mtu", [1280, 1420, 1500])
def test_python_to_python__underlay_mtu_edges__bytes_intact(lab, underlay_mtu, offloads):
    """Tunnel MTU 1420 over a smaller, equal or larger link: datagrams bigger than the link are
    fragmented by IP (a GSO run of them is refused once and the tunnel sends one by one)."""
    a, b = lab.add_host("a"), lab.add_host("b")
    link = lab.connect(a, b, mtu=underlay_mtu)
    a_config, b_config = tunnel_pair(link.a_address, link.b_address)
    start_python_tunnel(lab, b, b_config, offloads=offloads)
    start_python_tunnel(lab, a, a_config, offloads=offloads)
    assert lab.wait_for(lambda: a.ping(B_TUNNEL, count=1), timeout=15)
    sent, received = tcp_transfer(a, b, B_TUNNEL, size=4 << 20, seed=underlay_mtu)
    assert sent == received == [str(4 << 20), sent[1]]


def test_wrong_psk__no_handshake_no_traffic(lab, hosts):
    a, b, link = hosts
    python_config, go_config = tunnel_pair(link.a_address, link.b_address, psk=True)
    go_config.peers[0].preshared_key = bytes(32)  # disagrees with ours
    start_wireguard_go_in(lab, b, go_config)
    tunnel = start_python_tunnel(lab, a, python_config)
    assert not a.ping(B_TUNNEL, count=2)
    assert not any(isinstance(e, HandshakeCompleted) for e in tunnel.events)
    assert tunnel.peers()[0].last_handshake is None


def test_rekey_under_traffic__shortened_clock(lab, hosts):
    """With the Python clock 60x fast, REKEY_AFTER_TIME (120 s) passes every 2 s of real time."""
    a, b, link = hosts
    python_config, go_config = tunnel_pair(link.a_address, link.b_address)
    go_config.peers[0].endpoint = None
    go = start_wireguard_go_in(lab, b, go_config)
    tunnel = start_python_tunnel(lab, a, python_config, time_scale=60.0)
    assert a.ping(B_TUNNEL)
    first_go_handshake = go.peers()[0].last_handshake

    # ~6 s of pings every 20 ms while the sessions roll over (each lives 2 s real).
    result = a.run(["ping", "-q", "-c", "300", "-i", "0.02", "-W", "1", B_TUNNEL], check=False,
                   timeout=60)
    summary = result.stdout.decode()
    received = int(summary.split(" received")[0].rsplit(",", 1)[1])
    completed = [e for e in tunnel.events if isinstance(e, HandshakeCompleted)]
    assert len(completed) >= 3, f"only {len(completed)} handshakes in {summary}"
    assert all(e.initiator for e in completed)
    assert received >= 294, summary  # a rekey must not break the flow
    assert go.peers()[0].last_handshake > first_go_handshake
    sent, got = tcp_transfer(a, b, B_TUNNEL, size=4 * 1024 * 1024)
    assert sent == got


def test_ipv6_endpoints__python_and_wireguard_go(lab, hosts):
    """Outer IPv6: our dual-stack socket talks to wireguard-go over fd00:77::/64."""
    a, b, link = hosts
    a.ip("addr", "add", "fd00:77::1/64", "dev", link.a_ifname, "nodad")
    b.ip("addr", "add", "fd00:77::2/64", "dev", link.b_ifname, "nodad")
    python_config, go_config = tunnel_pair("fd00:77::1", "fd00:77::2")
    go_config.peers[0].endpoint = None
    go = start_wireguard_go_in(lab, b, go_config)
    tunnel = start_python_tunnel(lab, a, python_config)
    assert a.ping(B_TUNNEL) and b.ping(A_TUNNEL)
    assert go.peers()[0].endpoint == ("fd00:77::1", python_config.listen_port)
    assert tunnel.peers()[0].endpoint == ("fd00:77::2", go_config.listen_port)


def test_full_tunnel__allowed_ips_default_route__reaches_beyond_the_exit(lab):
    """AllowedIPs = 0.0.0.0/0 on the Python client, wireguard-go as the exit (NAT to its LAN).

    The client has no route to the server's network except through the tunnel; its own UDP packets
    must still leave by the physical link (wg-quick's fwmark policy routing), and the rules go away
    with the tunnel.
    """
    client, exit_node, server = lab.add_host("client"), lab.add_host("exit"), lab.add_host("srv")
    uplink = lab.connect(client, exit_node)
    lan = lab.connect(exit_node, server)
    exit_node.sysctl("net.ipv4.ip_forward", 1)
    exit_node.run(["nft", "add table ip exitnat"])
    exit_node.run(["nft", "add chain ip exitnat post { type nat hook postrouting priority srcnat; }"])
    exit_node.run(["nft", f"add rule ip exitnat post oifname \"{lan.a_ifname}\" masquerade"])
    python_config, go_config = tunnel_pair(uplink.a_address, uplink.b_address)
    python_config.peers[0].allowed_ips = ["0.0.0.0/0"]
    go_config.peers[0].endpoint = None
    start_wireguard_go_in(lab, exit_node, go_config)
    assert not client.ping(lan.b_address, count=1)  # no route before the tunnel
    tunnel = start_python_tunnel(lab, client, python_config)

    assert client.ping(lan.b_address)
    assert tunnel.peers()[0].rx_bytes > 0
    rules = client.run(["ip", "rule"]).stdout.decode()
    assert "not from all fwmark 0xca6c lookup 51820" in rules
    tunnel.close()
    assert "51820" not in client.run(["ip", "rule"]).stdout.decode()


def _ipv4_udp(src: str, dst: str, port: int, payload: bytes) -> bytes:
    """An IPv4 UDP packet (UDP checksum 0: none; the IP header checksum the kernel checks)."""
    import ipaddress
    import struct

    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 0, 0x4000, 64, 17, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    total = sum(struct.unpack("!10H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    return header + struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload


def test_gso_train__lost_reordered_and_replayed_segments__each_packet_once(lab, hosts):
    """A train of equal datagrams in one GSO send (coalesced again by the receiver's GRO) with one
    segment missing, two swapped and one repeated: the tunnel delivers every packet it got once."""
    import socket
    import time

    from agents.wireguard import WireGuardDevice
    from agents.wireguard.offload import gso_cmsg

    a, b, link = hosts
    a_config, b_config = tunnel_pair(link.a_address, link.b_address)
    receiver = start_python_tunnel(lab, b, b_config, offloads=True)
    sender = WireGuardDevice(a_config.private_key)
    sender.add_peer(b_config.public_key, allowed_ips=[f"{B_TUNNEL}/32"], endpoint=(link.b_address, b_config.listen_port))
    with a.enter():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with b.enter():
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock, listener:
        sock.bind((link.a_address, a_config.listen_port))
        sock.settimeout(5)
        listener.settimeout(0.5)
        now = time.monotonic()
        sender.initiate_handshake(b_config.public_key, now)
        for datagram, endpoint in sender.drain_outbox():
            sock.sendto(datagram, endpoint)
        response, source = sock.recvfrom(2048)
        sender.decapsulate(response, source, time.monotonic())
        sender.drain_outbox()  # the keepalive that confirms the session is not needed to receive
        listener.bind((B_TUNNEL, 7777))
        sealed = [sender.encapsulate(_ipv4_udp(A_TUNNEL, B_TUNNEL, 7777, b"packet %02d" % i + bytes(1000)),
                                     time.monotonic())[0] for i in range(6)]
        assert len({len(d) for d in sealed}) == 1
        train = [sealed[0], sealed[2], sealed[1], sealed[1], sealed[4]]  # 3 lost, 1 and 2 swapped, 1 again
        sock.sendmsg(train, gso_cmsg(len(sealed[0])), 0, (link.b_address, b_config.listen_port))
        sock.sendto(sealed[5], (link.b_address, b_config.listen_port))
        got = []
        try:
            while True:
                got.append(listener.recv(2048)[:9])
        except socket.timeout:
            pass
    assert sorted(got) == [b"packet %02d" % i for i in (0, 1, 2, 4, 5)], got
    assert receiver.device.drop_counters.get("replay", 0) >= 1
    assert receiver.offload_counts["gro_receives"] >= 1  # the train arrived as one coalesced buffer
