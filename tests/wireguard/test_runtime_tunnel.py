"""The Python runtime: `warren tunnel up` as a process, its UAPI socket, `show`, the overlay demux."""

import errno
import os
import signal
import socket
import struct
import subprocess
import sys

import pytest

from agents.netlab.wireguard import (
    A_TUNNEL,
    B_TUNNEL,
    spawn_python_tunnel,
    start_python_tunnel,
    start_wireguard_go_in,
    tunnel_pair,
)
from agents.wireguard import HandshakeCompleted
from agents.wireguard.backend import TunnelBackend
from agents.wireguard.config import PeerConfig, encode_key, generate_private_key, public_key
from agents.wireguard.runtime import is_wireguard_datagram
from agents.wireguard.uapi import UapiClient, socket_path

#: <linux/in.h>: ask for each datagram's TTL as a control message (Python's socket module lacks it).
IP_RECVTTL = 12


def test_tunnel_up__python_to_python_processes__ping_show_and_sigterm(lab, hosts, tmp_path):
    a, b, link = hosts
    a_config, b_config = tunnel_pair(link.a_address, link.b_address, psk=True)
    a_proc = spawn_python_tunnel(lab, a, a_config, str(tmp_path))
    b_proc = spawn_python_tunnel(lab, b, b_config, str(tmp_path))
    assert a.ping(B_TUNNEL) and b.ping(A_TUNNEL)

    info = a_proc.uapi.get()
    assert info.public_key == a_config.public_key and info.listen_port == a_config.listen_port
    (peer,) = info.peers
    assert peer.public_key == b_config.public_key
    assert peer.last_handshake is not None and peer.rx_bytes > 0 and peer.tx_bytes > 0

    # wireguard-tools reads our UAPI socket like wireguard-go's.
    wg = subprocess.run(["wg", "show", a_proc.ifname], capture_output=True, text=True, check=True)
    assert f"peer: {encode_key(b_config.public_key)}" in wg.stdout
    assert "latest handshake:" in wg.stdout and "transfer:" in wg.stdout
    show = subprocess.run([sys.executable, "-m", "agents.cli", "tunnel", "show", b_proc.ifname],
                          capture_output=True, text=True, check=True)
    assert f"interface: {b_proc.ifname}" in show.stdout
    assert f"peer: {encode_key(a_config.public_key)}" in show.stdout
    assert "latest handshake:" in show.stdout and "received," in show.stdout

    a_proc.process.send_signal(signal.SIGTERM)
    assert a_proc.process.wait(timeout=10) == 0
    with open(a_proc.log_path) as log:  # the runtime's log went to a file, not an undrained pipe
        assert "HandshakeCompleted" in log.read()
    assert not (a.run(["ip", "link", "show", a_proc.ifname], check=False).returncode == 0)
    with pytest.raises(FileNotFoundError):
        open(socket_path(a_proc.ifname))


def test_tunnel_up__data_plane_dies__process_exits_with_error(lab, hosts, tmp_path):
    """With no status lines asked for, a dead data plane is still noticed within seconds, not an hour."""
    a, b, link = hosts
    proc = spawn_python_tunnel(lab, a, tunnel_pair(link.a_address, link.b_address)[0], str(tmp_path))
    a.ip("link", "del", proc.ifname)  # the TUN device vanishes under the running tunnel
    assert proc.process.wait(timeout=10) == 1


def test_uapi_set__adds_and_removes_peers_on_python_tunnel(lab, hosts):
    a, b, link = hosts
    a_config, b_config = tunnel_pair(link.a_address, link.b_address)
    tunnel = start_python_tunnel(lab, a, a_config)
    assert isinstance(tunnel, TunnelBackend)
    extra = PeerConfig(public_key=public_key(generate_private_key()),
                       allowed_ips=["10.77.0.9/32"], endpoint=("192.0.2.9", 51820),
                       persistent_keepalive=25)
    subprocess.run(["wg", "set", tunnel.ifname, "peer", encode_key(extra.public_key),
                    "allowed-ips", "10.77.0.9/32", "endpoint", "192.0.2.9:51820",
                    "persistent-keepalive", "25"], check=True, capture_output=True)
    got = tunnel.peer(extra.public_key)
    assert got.allowed_ips == ("10.77.0.9/32",) and got.endpoint == ("192.0.2.9", 51820)
    assert got.persistent_keepalive == 25
    assert "10.77.0.9" in _routes(a, tunnel.ifname)
    UapiClient(tunnel.ifname).set([f"public_key={extra.public_key.hex()}", "remove=true"])
    assert tunnel.peer(extra.public_key) is None
    assert [p.public_key for p in tunnel.peers()] == [b_config.public_key]
    routes = _routes(a, tunnel.ifname)
    assert "10.77.0.9" not in routes, "a removed peer's route stays"
    assert B_TUNNEL in routes, "the remaining peer lost its route"


def test_allowed_ips_replaced__old_routes_removed_shared_prefix_kept(lab, hosts):
    """Routes follow the union of the peers' allowed IPs: a prefix still claimed by a peer stays."""
    a, b, link = hosts
    tunnel = start_python_tunnel(lab, a, tunnel_pair(link.a_address, link.b_address)[0])
    first, second = (public_key(generate_private_key()) for _ in range(2))
    tunnel.add_peer(PeerConfig(public_key=first, allowed_ips=["10.77.1.0/24", "10.77.2.0/24"]))
    tunnel.add_peer(PeerConfig(public_key=second, allowed_ips=["10.77.3.0/24"]))
    assert {"10.77.1.0/24", "10.77.2.0/24", "10.77.3.0/24"} <= _routes(a, tunnel.ifname)
    subprocess.run(["wg", "set", tunnel.ifname, "peer", encode_key(first), "allowed-ips", "10.77.2.0/24"],
                   check=True, capture_output=True)
    routes = _routes(a, tunnel.ifname)
    assert "10.77.1.0/24" not in routes and {"10.77.2.0/24", "10.77.3.0/24"} <= routes
    tunnel.remove_peer(second)
    routes = _routes(a, tunnel.ifname)
    assert "10.77.3.0/24" not in routes and "10.77.2.0/24" in routes


def _routes(ns, ifname: str) -> set[str]:
    """The destinations of the IPv4 routes through ``ifname`` in namespace ``ns``."""
    out = ns.run(["ip", "-4", "route", "show", "dev", ifname]).stdout.decode()
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_add_peer__host_name_endpoint__resolved_once(lab, hosts):
    """As `wg` does, a host name is resolved when configured: the core and the send path see an address."""
    a, b, link = hosts
    tunnel = start_python_tunnel(lab, a, tunnel_pair(link.a_address, link.b_address)[0])
    key = public_key(generate_private_key())
    tunnel.add_peer(PeerConfig(public_key=key, allowed_ips=["10.77.0.9/32"], endpoint=("localhost", 51820)))
    assert tunnel.peer(key).endpoint == ("127.0.0.1", 51820)


def test_uapi_set__partial_updates__change_only_what_they_name(lab, hosts):
    """wireguard-go's set semantics: `wg set ... endpoint X` keeps the peer's keys, IPs and keepalive."""
    a, b, link = hosts
    tunnel = start_python_tunnel(lab, a, tunnel_pair(link.a_address, link.b_address)[0])
    key, psk = public_key(generate_private_key()), bytes(range(32))
    client = UapiClient(tunnel.ifname)
    client.set([f"public_key={key.hex()}", f"preshared_key={psk.hex()}", "persistent_keepalive_interval=25",
                "allowed_ip=10.77.0.9/32"])
    subprocess.run(["wg", "set", tunnel.ifname, "peer", encode_key(key), "endpoint", "192.0.2.10:51820"],
                   check=True, capture_output=True)
    got = tunnel.peer(key)
    assert got.endpoint == ("192.0.2.10", 51820) and got.allowed_ips == ("10.77.0.9/32",)
    assert got.persistent_keepalive == 25
    shown = subprocess.run(["wg", "show", tunnel.ifname, "preshared-keys"], check=True, capture_output=True)
    assert f"{encode_key(key)}\t{encode_key(psk)}" in shown.stdout.decode()

    client.set([f"public_key={key.hex()}", "allowed_ip=10.77.0.10/32"])  # appends
    assert set(tunnel.peer(key).allowed_ips) == {"10.77.0.9/32", "10.77.0.10/32"}
    client.set([f"public_key={key.hex()}", "replace_allowed_ips=true", "allowed_ip=10.77.0.11/32"])
    assert tunnel.peer(key).allowed_ips == ("10.77.0.11/32",)
    stranger = public_key(generate_private_key())
    client.set([f"public_key={stranger.hex()}", "update_only=true", "allowed_ip=10.77.0.12/32"])
    assert tunnel.peer(stranger) is None


def test_demux__non_wireguard_datagrams_reach_callback_and_replies_share_the_socket(lab, hosts):
    a, b, link = hosts
    a_config, b_config = tunnel_pair(link.a_address, link.b_address)
    tunnel = start_python_tunnel(lab, a, a_config)
    go = start_wireguard_go_in(lab, b, b_config)
    seen = []

    def overlay(data, source):
        seen.append((data, source))
        tunnel.send_datagram(b"pong:" + data, source)

    tunnel.set_demux(overlay)
    with b.enter():
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with other:
        other.settimeout(2)
        other.bind((link.b_address, 0))
        message = b"\x10overlay hello"  # type byte 16: outside WireGuard's 1..4
        other.sendto(message, (link.a_address, a_config.listen_port))
        reply, source = other.recvfrom(2048)
        sender = other.getsockname()
    assert reply == b"pong:" + message and source == (link.a_address, a_config.listen_port)
    assert seen == [(message, sender)]
    # WireGuard traffic on the same socket is unaffected.
    assert a.ping(B_TUNNEL) and go.peers()[0].last_handshake is not None
    assert len(seen) == 1


def test_send_datagram_with_ttl__only_that_datagram_has_it__data_plane_keeps_the_default(lab, hosts):
    """NAT punching's low-TTL punch: one datagram with TTL 2, the next (and WireGuard's) with the default."""
    a, b, link = hosts
    a_config, b_config = tunnel_pair(link.a_address, link.b_address)
    tunnel = start_python_tunnel(lab, a, a_config)
    start_wireguard_go_in(lab, b, b_config)
    with b.enter():
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with other:
        other.settimeout(2)
        other.bind((link.b_address, 0))
        other.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        ttls = []
        for ttl in (2, None, 7):
            tunnel.send_datagram(b"\x10punch", other.getsockname(), ttl=ttl)
            data, ancillary, _, _ = other.recvmsg(64, socket.CMSG_SPACE(4))
            assert data == b"\x10punch"
            ttls += [struct.unpack("i", c[:4])[0] for level, kind, c in ancillary
                     if (level, kind) == (socket.IPPROTO_IP, socket.IP_TTL)]
    assert ttls[0] == 2 and ttls[1] > 7 and ttls[2] == 7
    assert a.ping(B_TUNNEL)  # the tunnel's own datagrams are unaffected


def test_empty_and_short_datagrams__tunnel_keeps_running(lab, hosts):
    """A zero-length UDP datagram (anyone can send one) must not kill the receive thread."""
    a, b, link = hosts
    a_config, b_config = tunnel_pair(link.a_address, link.b_address)
    go = start_wireguard_go_in(lab, b, b_config)
    tunnel = start_python_tunnel(lab, a, a_config)
    with b.enter():
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with attacker:
        for junk in (b"", b"\x04", b"\x01\x00\x00"):
            attacker.sendto(junk, (link.a_address, a_config.listen_port))
    assert a.ping(B_TUNNEL) and go.peers()[0].last_handshake is not None
    assert tunnel.running


class _SendFailsFirst:
    """A tunnel's socket whose first sendto calls fail as the kernel's do when a queue is full."""

    def __init__(self, sock, failures, error=errno.ENOBUFS):
        self.sock, self.failures, self.error = sock, failures, error

    def sendto(self, data, address):
        if self.failures:
            self.failures -= 1
            raise OSError(self.error, os.strerror(self.error))
        return self.sock.sendto(data, address)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_send_error__datagram_dropped__tunnel_keeps_running(lab, hosts):
    """UDP is best effort: ENOBUFS (qdisc full under load) loses one datagram, not the send thread."""
    a, b, link = hosts
    a_config, b_config = tunnel_pair(link.a_address, link.b_address)
    b_config.peers[0].endpoint = None
    start_wireguard_go_in(lab, b, b_config)
    tunnel = start_python_tunnel(lab, a, a_config)
    tunnel.sock = _SendFailsFirst(tunnel.sock, failures=1)  # the first initiation is lost
    assert lab.wait_for(lambda: a.ping(B_TUNNEL, count=1), timeout=15)
    assert tunnel.running


@pytest.mark.parametrize("data, expected", [
    (b"\x01\x00\x00\x00" + bytes(144), True),
    (b"\x04\x00\x00\x00" + bytes(28), True),
    (b"\x05\x00\x00\x00", False),
    (b"\x01\x00\x00\x01", False),
    (b"\x01\x00", False),
    (b"", False),
])
def test_is_wireguard_datagram(data, expected):
    assert is_wireguard_datagram(data) is expected


def test_handshake_flood__runtime_turns_on_cookie_replies(lab, hosts):
    """Past UNDER_LOAD_HANDSHAKES_PER_S initiations a second, valid-MAC1 initiations get cookies."""
    from agents.wireguard import WireGuardDevice
    from agents.wireguard.runtime import UNDER_LOAD_HANDSHAKES_PER_S

    a, b, link = hosts
    a_config, b_config = tunnel_pair(link.a_address, link.b_address)
    tunnel = start_python_tunnel(lab, a, a_config)
    flooder = WireGuardDevice(generate_private_key())  # a stranger: MAC1 needs only our public key
    flooder.add_peer(tunnel.public_key, allowed_ips=["10.77.0.1/32"],
                     endpoint=(link.a_address, a_config.listen_port))
    initiations = []
    for i in range(UNDER_LOAD_HANDSHAKES_PER_S + 100):
        flooder.initiate_handshake(tunnel.public_key, 1000.0 + 6.0 * i)  # one per REKEY_TIMEOUT
        initiations += [d for d, _ in flooder.drain_outbox()]
    with b.enter():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.bind((link.b_address, 0))
        sock.settimeout(2)
        for datagram in initiations:
            sock.sendto(datagram, (link.a_address, a_config.listen_port))
        reply, _ = sock.recvfrom(2048)
    assert reply[0] == 3 and len(reply) == 64  # cookie reply (paper 5.4.7), never a response
    assert tunnel.device.under_load
    # The flood passes: a real peer's handshake goes through again once the rate drops.
    start_wireguard_go_in(lab, b, b_config)
    assert lab.wait_for(lambda: b.ping(A_TUNNEL, count=1), timeout=15)


def test_rekey__python_to_python__both_clocks_fast(lab, hosts):
    """Two in-process Python tunnels at 60x: sessions roll every 2 s real, on both roles."""
    a, b, link = hosts
    a_config, b_config = tunnel_pair(link.a_address, link.b_address)
    b_config.peers[0].endpoint = None
    initiator = start_python_tunnel(lab, a, a_config, time_scale=60.0)
    responder = start_python_tunnel(lab, b, b_config, time_scale=60.0)
    assert a.ping(B_TUNNEL)
    result = a.run(["ping", "-q", "-c", "250", "-i", "0.02", "-W", "1", B_TUNNEL], check=False,
                   timeout=60)
    received = int(result.stdout.decode().split(" received")[0].rsplit(",", 1)[1])
    assert received >= 245, result.stdout.decode()
    for tunnel, role in ((initiator, True), (responder, False)):
        done = [e for e in tunnel.events if isinstance(e, HandshakeCompleted)]
        assert len(done) >= 3 and all(e.initiator is role for e in done)
    assert b.ping(A_TUNNEL)
