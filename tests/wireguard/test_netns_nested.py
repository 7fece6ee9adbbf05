"""A tunnel inside a tunnel (`warren connect --hops 2`'s data plane) and UDP through TUN offloads.

Client -> relay -> exit in namespaces: the client's inner tunnel (to the exit) sends its WireGuard
datagrams into its outer tunnel (to the relay), which masquerades them on to the exit. On the way
back the outer tunnel writes the inner tunnel's datagrams into its TUN merged (GSO_UDP_L4 frames,
agents.wireguard.vnet.coalesce with ``udp=True``) so that the inner tunnel's socket receives them
with UDP GRO, many per ``recvmsg``. The exit is ours or wireguard-go (which neither sends GSO runs
nor merges, so the merging comes from our side alone); the bytes must arrive intact either way.
"""

import errno
import os
import socket

import pytest

from agents.netlab.wireguard import B_TUNNEL, start_python_tunnel, start_wireguard_go_in, tunnel_pair
from agents.wireguard.config import InterfaceConfig, PeerConfig, generate_private_key
from agents.wireguard.offload import gso_cmsg
from agents.wireguard.tun import TUN_F_USO4
from agents.wireguard.vnet import GSO_UDP_L4

from test_netns_interop import tcp_transfer  # this folder is on sys.path (pytest rootdir-less "prepend")

#: Inner and outer tunnel subnets of the nested lab; the exit end of the inner one.
INNER, OUTER, EXIT_INNER = "10.90.0", "10.91.0", "10.90.0.1"


def _nested(lab, exit_kind: str):
    """Hosts c, r, e; the relay (ours) forwards the client's datagrams to e, masqueraded; returns
    (client host, exit host, outer tunnel, inner tunnel)."""
    c, r, e = lab.add_host("c"), lab.add_host("r"), lab.add_host("e")
    cr, re_ = lab.connect(c, r), lab.connect(r, e)
    r.sysctl("net.ipv4.ip_forward", 1)
    r.run(["nft", "-f", "-"], input=(f"table ip nested_nat {{\n chain post {{\n type nat hook postrouting priority 100\n"
                                     f" oifname {re_.a_ifname} masquerade\n }}\n}}\n").encode())
    keys = {name: generate_private_key() for name in ("outer", "inner", "relay", "exit")}
    exit_config = InterfaceConfig(private_key=keys["exit"], listen_port=51820, addresses=[f"{EXIT_INNER}/24"])
    relay = InterfaceConfig(private_key=keys["relay"], listen_port=51820, addresses=[f"{OUTER}.1/24"])
    outer = InterfaceConfig(private_key=keys["outer"], addresses=[f"{OUTER}.2/24"])
    inner = InterfaceConfig(private_key=keys["inner"], addresses=[f"{INNER}.2/24"], mtu=1340)
    exit_config.peers.append(PeerConfig(public_key=inner.public_key, allowed_ips=[f"{INNER}.2/32"]))
    relay.peers.append(PeerConfig(public_key=outer.public_key, allowed_ips=[f"{OUTER}.2/32"]))
    outer.peers.append(PeerConfig(public_key=relay.public_key, allowed_ips=[f"{OUTER}.1/32", f"{re_.b_address}/32"],
                                  endpoint=(cr.b_address, 51820)))
    inner.peers.append(PeerConfig(public_key=exit_config.public_key, allowed_ips=[f"{EXIT_INNER}/32"],
                                  endpoint=(re_.b_address, 51820)))
    if exit_kind == "go":
        start_wireguard_go_in(lab, e, exit_config)
    else:
        start_python_tunnel(lab, e, exit_config)
    start_python_tunnel(lab, r, relay)
    outer_tunnel = start_python_tunnel(lab, c, outer)
    inner_tunnel = start_python_tunnel(lab, c, inner)
    assert lab.wait_for(lambda: c.ping(EXIT_INNER, count=1), timeout=20)
    return c, e, outer_tunnel, inner_tunnel


@pytest.mark.parametrize("exit_kind", ["py", "go"], ids=["python-exit", "wireguard-go-exit"])
def test_nested_tunnels__download_through_both__bytes_intact_inner_datagrams_merged(lab, exit_kind):
    c, e, outer, inner = _nested(lab, exit_kind)
    size = 8 << 20
    sent, received = tcp_transfer(e, c, f"{INNER}.2", size=size, seed=17)
    assert sent == received == [str(size), sent[1]]
    if outer.tun.vnet_hdr and outer._udp_gro_writes:  # a kernel with USO on TUN (6.2 and later)
        assert outer.offload_counts["tun_udp_gro_writes"] > 0
        # The inner socket took the merged writes whole: many datagrams per receive.
        assert inner.offload_counts["gro_segments"] > 4 * inner.offload_counts["gro_receives"] > 0


def _udp_trains(lab, hosts, trains: int = 1, count: int = 24, size: int = 1000):
    """A Python tunnel pair; up to ``trains`` times ``count`` datagrams sent in one GSO send from a to
    b's tunnel address (a TUN with USO reads them as one train), until the receiver made a merged
    UDP write (how the datagrams meet in its receive batches depends on scheduling); returns
    (receiver tunnel, [(datagrams sent, received)] per train)."""
    a, b, link = hosts
    a_config, b_config = tunnel_pair(link.a_address, link.b_address)
    receiver = start_python_tunnel(lab, b, b_config)
    start_python_tunnel(lab, a, a_config)
    assert lab.wait_for(lambda: a.ping(B_TUNNEL, count=1), timeout=15)
    with a.enter():
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with b.enter():
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    results = []
    with sender, listener:
        listener.bind((B_TUNNEL, 7777))
        listener.settimeout(2)
        for n in range(trains):
            # One first word for all (a WireGuard message's, as an inner tunnel's datagrams):
            # datagrams that begin differently are not merged (agents.wireguard.vnet.coalesce).
            payloads = [b"\x04\0\0\0" + bytes([n, i]) * (size // 2 - 2) for i in range(count)]
            sender.sendmsg([b"".join(payloads)], gso_cmsg(len(payloads[0])), 0, (B_TUNNEL, 7777))
            got = []
            try:
                while len(got) < count:
                    got.append(listener.recv(65535))
            except socket.timeout:
                pass
            results.append((payloads, got))
            if receiver.offload_counts["tun_udp_gro_writes"]:
                break
    return receiver, results


def test_udp_through_tunnel__merged_into_one_write__plain_socket_gets_each_datagram(lab, hosts):
    receiver, results = _udp_trains(lab, hosts, trains=5)
    assert all(got == payloads for payloads, got in results)
    if receiver._udp_gro_writes:
        assert receiver.offload_counts["tun_udp_gro_writes"] >= 1, dict(receiver.offload_counts)


def test_udp_merged_write_refused__datagrams_written_one_by_one_and_merging_off(lab, hosts, monkeypatch):
    """Where the kernel refuses a GSO_UDP_L4 write (fault injected: EINVAL, as a kernel without UDP
    GSO on TUN answers), the datagrams go one by one and the tunnel stops merging UDP."""
    real_write = os.write
    refused = []

    def write(fd, data):
        if len(data) > 10 and data[1] == GSO_UDP_L4:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    receiver, results = _udp_trains(lab, hosts, trains=3)
    assert all(got == payloads for payloads, got in results)
    if receiver.tun.offload_flags & TUN_F_USO4:  # merging was on: it was tried, refused, turned off
        assert refused == [receiver.tun.fd]
        assert receiver._udp_gro_writes is False
        assert "tun_udp_gro_writes" not in receiver.offload_counts
