"""A relay session at the exit table (agents.node.exit, the outer hop of `warren connect --hops 2`).

    client ns --veth (standing for the tun)-- node ns --veth (uplink)-- inet ns

The client's end holds a relay session's address (10.77.0.4, admitted with relay_to = the exit's
WireGuard endpoint 198.51.100.2:51820) and an ordinary client's (10.77.0.2). The inet side listens
on UDP 51820 and 51821 and TCP 80. What the relay session may do: send WireGuard-shaped datagrams to
that one endpoint and get the replies; nothing else (other payloads, other ports, TCP, DNS), and
nothing at all while suspended.
"""

from __future__ import annotations

import json
import socket

import pytest

from agents.netlab import Lab, can_build_namespaces
from agents.node.exit import ExitTable
from agents.node.policy import ExitPolicy

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not can_build_namespaces(), reason="network namespaces need root (CI runs as root)"),
]

NODE4, NODE6 = "10.77.0.1", "fd77:7272::1"
A4, A6 = "10.77.0.2", "fd77:7272::2"   # an ordinary exit client
R4, R6 = "10.77.0.4", "fd77:7272::4"   # the relay session
UPLINK4, EXIT = "198.51.100.1", "198.51.100.2"
WG, OTHER = 51820, 51821
#: A WireGuard transport message's start (type 4, three zero bytes, receiver index, counter).
WG_LIKE = b"\x04\x00\x00\x00" + bytes(12) + b"ciphertext" * 4
WAIT_S = 0.6


def _socket(ns, family, kind):
    with ns.enter():
        return socket.socket(family, kind)


@pytest.fixture(scope="module")
def world():
    with Lab() as lab:
        client, node, inet = (lab.add_host(n) for n in ("cli", "node", "inet"))
        tun = lab.connect(node, client, subnet="10.77.0.0/16")  # node .1 (NODE4), client .2 (A4)
        client.ip("addr", "add", f"{R4}/16", "dev", tun.b_ifname)
        client.ip("route", "add", "default", "via", NODE4)
        uplink = lab.connect(node, inet, subnet="198.51.100.0/24")  # node .1 (UPLINK4), inet .2 (EXIT)
        node.ip("route", "add", "default", "via", EXIT)
        servers = {}
        for port in (WG, OTHER):
            sock = _socket(inet, socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((EXIT, port))
            sock.settimeout(WAIT_S)
            servers[port] = sock
        tcp = _socket(inet, socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind((EXIT, 80))
        tcp.listen(8)
        table = ExitTable(tun.a_ifname, uplink.a_ifname, node_v4=NODE4, node_v6=NODE6, pool_v4="10.77.0.0/16",
                          pool_v6="fd77:7272::/64", quarantine_v6="fd77:7272:0:ffff::/64", control_port=7700,
                          dns_port=53, policy=ExitPolicy(), run=node.run)
        table.install()
        table.admit(A4, A6)
        table.admit(R4, R6, relay_to=[(EXIT, WG)])
        try:
            yield dict(client=client, node=node, table=table, servers=servers)
        finally:
            table.remove()
            for sock in (*servers.values(), tcp):
                sock.close()


def _send(world, src, port, payload):
    """Send one datagram from ``src``; what the server on ``port`` got (None) and the reply seen."""
    sock = _socket(world["client"], socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.bind((src, 0))
        sock.settimeout(WAIT_S)
        sock.sendto(payload, (EXIT, port))
        server = world["servers"][port]
        try:
            data, source = server.recvfrom(2048)
        except TimeoutError:
            return None, None
        server.sendto(b"\x02\x00\x00\x00reply", source)
        try:
            return (data, source), sock.recv(2048)
        except TimeoutError:
            return (data, source), None


def _tcp(world, src) -> bool:
    sock = _socket(world["client"], socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.bind((src, 0))
        sock.settimeout(WAIT_S)
        try:
            sock.connect((EXIT, 80))
            return True
        except OSError:
            return False


def test_relay_session__wireguard_to_the_named_endpoint__forwarded_masqueraded_and_answered(world):
    got, reply = _send(world, R4, WG, WG_LIKE)
    assert got is not None and got[0] == WG_LIKE and got[1][0] == UPLINK4  # the exit sees the node
    assert reply == b"\x02\x00\x00\x00reply"


def test_relay_session__anything_else__dropped(world):
    assert _send(world, R4, WG, b"GET / HTTP/1.0\r\n\r\n") == (None, None)   # not WireGuard
    assert _send(world, R4, WG, b"\x05\x00\x00\x00" + bytes(28)) == (None, None)  # no such message type
    assert _send(world, R4, OTHER, WG_LIKE) == (None, None)                 # another port
    assert not _tcp(world, R4)                                              # TCP to the same host
    assert not world["table"].is_admitted(R4) and not world["table"].is_admitted(R6)  # no DNS
    # ...while the ordinary client beside it uses the exit as before.
    assert _tcp(world, A4) and _send(world, A4, OTHER, b"hello")[0] is not None


def test_relay_session__suspended_then_resumed__forwarding_follows(world):
    table = world["table"]
    table.suspend(R4, R6)
    assert _send(world, R4, WG, WG_LIKE) == (None, None)
    table.resume(R4, R6)  # keeps the endpoints named at admission
    assert _send(world, R4, WG, WG_LIKE)[0] is not None
    assert not _tcp(world, R4)


def test_relay_session__forgotten__no_element_left(world):
    table, node = world["table"], world["node"]
    table.forget(R4, R6)
    sets = {s["set"]["name"]: s["set"].get("elem", []) for s in
            json.loads(node.run(["nft", "-j", "list", "table", "inet", "warren_exit"]).stdout)["nftables"]
            if "set" in s}
    assert sets["relaying4"] == [] and sets["relay4"] == []
    assert _send(world, R4, WG, WG_LIKE) == (None, None)
