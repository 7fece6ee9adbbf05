"""Mesh mode: two hosts behind different NATs ping each other by virtual IP and move a file.

Real parts only: nftables NAT routers in network namespaces, the WireGuard runtime's TUN devices and
sockets (the overlay shares each tunnel's socket), a public overlay node that stores the group's
records and introduces the hosts. No port is forwarded; the group owner's certificates admit the
members, and a revoked member is refused.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
import time

import pytest
from eth_account import Account

from agents.chain.eip712 import Revocation, sign
from agents.netlab import NatType, can_build_namespaces
from agents.netlab.wireguard import start_python_tunnel
from agents.overlay.core import OverlayConfig, OverlayNode, PutDone
from agents.overlay.ids import node_id_from_wg_key
from agents.overlay.mesh import ZERO_ADDRESS, GroupDirectory, MeshHost, group_authority, guard_mesh
from agents.overlay.nat import PUNCH_TIMEOUT_S, RETRY_DIRECT_S, NatAgent, RelayLimits
from agents.overlay.ondemand import OnDemand
from agents.overlay.records import RecordValidator, make_ip_record, make_member_certificate, make_revocation_record
from agents.overlay.runtime import attach_to_tunnel
from agents.overlay.store import RecordStore
from agents.overlay.wgrelay import MESH_MTU
from agents.wireguard.config import InterfaceConfig, generate_private_key, public_key

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not can_build_namespaces(), reason="network namespaces need root (CI runs as root)"),
]

NETWORK = "lab"
PORT = 51820
VIPS = {"a": "10.77.0.1", "b": "10.77.0.2", "c": "10.77.0.3"}
FILE_BYTES = 256 * 1024


def _store(owner):
    directory = GroupDirectory(owner.address, NETWORK)
    return directory, RecordStore(RecordValidator(directory, group_authority(owner.address)))


def _member(owner, name):
    wg_priv = generate_private_key()
    key = Account.create()
    now = int(time.time())
    cert = make_member_certificate(owner.key, public_key(wg_priv), NETWORK, key.address, VIPS[name],
                                   seq=1, expires=now + 3600)
    return wg_priv, key, cert


def _mesh_host(lab, reactor, ns, owner, gw_addr, name, prefix=24):
    wg_priv, key, cert = _member(owner, name)
    tunnel = start_python_tunnel(lab, ns, InterfaceConfig(private_key=wg_priv, listen_port=PORT, mtu=MESH_MTU,
                                                         addresses=[f"{VIPS[name]}/{prefix}"]))
    directory, store = _store(owner)
    node = OverlayNode(node_id_from_wg_key(public_key(wg_priv)), OverlayConfig(stabilize_interval=3600),
                       store=store, rng=random.Random(name))
    guard_mesh(node, directory, wg_priv)  # senders authenticated, as `warren mesh up` runs it
    nat = NatAgent(node)
    rt = attach_to_tunnel(node, tunnel, reactor)
    rt.call(lambda n, now: n.use_gateway(gw_addr, now))
    rt.call(lambda n, now: nat.register(gw_addr, now))
    assert lab.wait_for(lambda: node.gateway is not None and nat.reflexive is not None, 10.0)
    host = MeshHost(tunnel, rt, nat, directory, key.key, cert)
    lab.defer(host.close)
    assert host.publish() == []
    return host


def _gateway(lab, reactor, gw, gw_ip, owner, limits=None):
    gw_directory, gw_store = _store(owner)
    gw_key = generate_private_key()
    gw_node = OverlayNode(node_id_from_wg_key(public_key(gw_key)), OverlayConfig(stabilize_interval=3600),
                          store=gw_store, rng=random.Random(1))
    guard_mesh(gw_node, gw_directory, gw_key)
    gw_nat = NatAgent(gw_node, relay_volunteer=True, limits=limits or RelayLimits())
    with gw.enter():
        gw_rt = reactor.add_udp(gw_node, bind=("0.0.0.0", PORT))
    gw_rt.call(lambda n, now: n.start_alone())
    return gw_nat, (gw_ip, PORT)


def _two_hosts(lab, internet, reactor, flavour_a, flavour_b, prefix=24, limits=None):
    """A relay-volunteering gateway on the west segment, host a behind a NAT on the west, b on the east."""
    owner = Account.create()
    public_host, nat_host = internet
    gw, gw_ip = public_host("gw")
    (ns_a, router_a), (ns_b, router_b) = nat_host("a", flavour_a, "west"), nat_host("b", flavour_b, "east")
    hosts = {"a": ns_a, "b": ns_b, "a_router": router_a, "b_router": router_b}
    gw_nat, gw_addr = _gateway(lab, reactor, gw, gw_ip, owner, limits)
    a = _mesh_host(lab, reactor, hosts["a"], owner, gw_addr, "a", prefix)
    b = _mesh_host(lab, reactor, hosts["b"], owner, gw_addr, "b", prefix)
    return owner, gw_nat, hosts, a, b


def _serve_once(ns, address, port, sink: dict):
    with ns.enter():
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((address, port))
    srv.listen(1)
    srv.settimeout(20)

    def run():
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(20)
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                sink["data"] = data

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_mesh__hosts_behind_nats__ping_by_virtual_ip_and_move_a_file(lab, internet, reactor):
    owner, gw_nat, hosts, a, b = _two_hosts(lab, internet, reactor, NatType.PORT_RESTRICTED, NatType.FULL_CONE)

    # a reaches b's virtual IP: DHT resolution, punched direct path, WireGuard peer on that endpoint
    cert_b = a.resolve(VIPS["b"])
    assert cert_b is not None and cert_b.node_id == b.rt.node.id and cert_b.wg_key == b.cert.wg_key
    assert a.connect(VIPS["b"]) == "direct"
    assert lab.wait_for(lambda: a.rt.node.id in b.peers, 15.0)  # b admitted a after checking its cert
    assert gw_nat.stats["relayed_bytes"] == 0
    assert hosts["a"].ping(VIPS["b"]) and hosts["b"].ping(VIPS["a"])

    # move a file over the tunnel, by virtual IP
    payload = os.urandom(FILE_BYTES)
    sink: dict = {}
    server = _serve_once(hosts["b"], VIPS["b"], 9000, sink)
    with hosts["a"].enter():
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with client:
        client.settimeout(20)
        client.connect((VIPS["b"], 9000))
        client.sendall(payload)
    server.join(timeout=30)
    assert hashlib.sha256(sink.get("data", b"")).digest() == hashlib.sha256(payload).digest()

    # a third member, then revoked by the owner: its records are refused and it no longer resolves
    c_wg, c_key, c_cert = _member(owner, "c")
    now = int(time.time())
    c_ip = make_ip_record(c_key.key, public_key(c_wg), NETWORK, VIPS["c"], seq=1, expires=now + 3600)
    for raw in (c_cert, c_ip):
        assert a._op(lambda n, t, raw=raw: n.put(raw, t), PutDone, 10.0).ok
    c_id = node_id_from_wg_key(public_key(c_wg))
    assert a.resolve(VIPS["c"]).node_id == c_id
    vote = sign(Revocation(c_id.to_bytes(32, "big"), b"\x00" * 32, 1), owner.key, 0, ZERO_ADDRESS)
    revocation = make_revocation_record(c_id, b"\x00" * 32, 1, [vote], expires=now + 3600)
    assert a._op(lambda n, t: n.put(revocation, t), PutDone, 10.0).ok
    assert a.resolve(VIPS["c"]) is None
    again = make_ip_record(c_key.key, public_key(c_wg), NETWORK, VIPS["c"], seq=2, expires=now + 3600)
    refused = a._op(lambda n, t: n.put(again, t), PutDone, 10.0)  # the gateway holding records refuses
    assert not refused.ok and refused.reason == "revoked"


def test_mesh__both_behind_symmetric_nats__ping_by_virtual_ip_through_the_relay(lab, internet, reactor):
    _, gw_nat, hosts, a, b = _two_hosts(lab, internet, reactor, NatType.SYMMETRIC, NatType.SYMMETRIC)

    # punching cannot work between two symmetric NATs: the WireGuard peers are set up via the relay
    assert a.connect(VIPS["b"]) == "relay"
    assert lab.wait_for(lambda: b.peers.get(a.rt.node.id) == "relay", 15.0)
    assert a.nat.path(b.rt.node.id) == "relay" and b.nat.path(a.rt.node.id) == "relay"
    endpoint_of_b = {p.public_key: p.endpoint for p in a.tunnel.peers()}[b.cert.wg_key]
    assert endpoint_of_b == a.bridge.endpoint(b.rt.node.id)  # "b via the relay": a loopback port

    assert hosts["a"].ping(VIPS["b"]) and hosts["b"].ping(VIPS["a"])
    relayed = gw_nat.stats["relayed_bytes"]
    # handshake (148 + 92 bytes) and 2 x 3 pings each way, each echo at least 84 + 32 bytes
    assert relayed >= 148 + 92 + 12 * (84 + 32)
    assert a.bridge.stats["to_relay"] > 0 and a.bridge.stats["from_relay"] > 0
    assert b.bridge.stats["to_relay"] > 0 and b.bridge.stats["from_relay"] > 0
    assert a.peers[b.rt.node.id] == "relay" and b.peers[a.rt.node.id] == "relay"
    assert len(gw_nat.sessions) == 1


def test_mesh__ping_to_an_unknown_virtual_ip__resolved_on_demand_and_answered(lab, internet, reactor):
    # tunnels hold their virtual IP as a /32: the mesh prefix is routed to the resolver device
    _, gw_nat, hosts, a, b = _two_hosts(lab, internet, reactor, NatType.PORT_RESTRICTED, NatType.FULL_CONE,
                                        prefix=32)
    resolver = OnDemand(a, f"{VIPS['a']}/24", lab.unique_ifname("wrs"))
    lab.defer(resolver.close)
    assert a.peers == {} and b.peers == {}

    # nobody named b: the ping's packets to 10.77.0.2 trigger the DHT look-up and the punch, wait in
    # the queue meanwhile, and are then sent through the new tunnel
    assert hosts["a"].ping(VIPS["b"], count=5, interval=0.3)
    assert a.peers == {b.rt.node.id: "direct"}
    assert lab.wait_for(lambda: b.peers.get(a.rt.node.id) == "direct", 10.0)
    stats = resolver.pending.stats
    assert stats["lookups"] == 1 and stats["resolved"] == 1 and stats["queued"] >= 1
    assert gw_nat.stats["relayed_bytes"] == 0

    # a member that does not exist: one look-up, then packets dropped (negative cache), no peer added
    assert not hosts["a"].ping("10.77.0.99", count=2, interval=0.2)
    assert lab.wait_for(lambda: resolver.pending.stats["failed"] == 1, 25.0)
    assert resolver.pending.stats["lookups"] == 2 and len(a.peers) == 1


def test_mesh__punch_blocked_then_allowed__relayed_tunnel_upgrades_to_direct(lab, internet, reactor):
    # both NATs would allow a direct path, but a's router first drops everything between a and b's
    # public address (not the gateway): the tunnel starts relayed, and the periodic retry upgrades it
    _, gw_nat, hosts, a, b = _two_hosts(lab, internet, reactor, NatType.PORT_RESTRICTED, NatType.FULL_CONE)
    router_a = hosts["a_router"]
    b_public = b.nat.reflexive[0]
    for command in ("add table ip block", "add chain ip block hold { type filter hook forward priority 0; }",
                    f"add rule ip block hold ip daddr {b_public} drop",
                    f"add rule ip block hold ip saddr {b_public} drop"):
        router_a.namespace.run(["nft", command])
    assert a.connect(VIPS["b"]) == "relay"
    assert lab.wait_for(lambda: b.peers.get(a.rt.node.id) == "relay", 15.0)
    assert hosts["a"].ping(VIPS["b"])
    assert gw_nat.stats["relayed_bytes"] > 0

    router_a.namespace.run(["nft", "delete table ip block"])
    assert lab.wait_for(lambda: a.peers.get(b.rt.node.id) == "direct" and b.peers.get(a.rt.node.id) == "direct",
                        RETRY_DIRECT_S + PUNCH_TIMEOUT_S + 5.0)
    endpoint_of_b = {p.public_key: p.endpoint for p in a.tunnel.peers()}[b.cert.wg_key]
    assert endpoint_of_b[0] == b_public and not a.bridge.has(b.rt.node.id)
    assert lab.wait_for(lambda: hosts["b"].ping(VIPS["a"], count=1), 10.0)  # b's core may still roam back
    relayed = gw_nat.stats["relayed_bytes"]
    assert hosts["a"].ping(VIPS["b"]) and hosts["b"].ping(VIPS["a"])
    assert gw_nat.stats["relayed_bytes"] == relayed  # the pings went direct


def test_mesh__relay_session_expires__peer_forgotten_and_resolved_again_on_demand(lab, internet, reactor):
    limits = RelayLimits(max_seconds=6.0)
    _, gw_nat, hosts, a, b = _two_hosts(lab, internet, reactor, NatType.SYMMETRIC, NatType.SYMMETRIC, prefix=32,
                                        limits=limits)
    resolver = OnDemand(a, f"{VIPS['a']}/24", lab.unique_ifname("wrs"))
    lab.defer(resolver.close)
    assert hosts["a"].ping(VIPS["b"], count=12, interval=0.5)  # on demand, through the relay (~3 s set-up)
    assert a.peers == {b.rt.node.id: "relay"}
    first = set(gw_nat.sessions)

    # the relay's time budget ends the session: both ends forget the peer (and its route)
    assert lab.wait_for(lambda: b.rt.node.id not in a.peers, limits.max_seconds + 5.0)
    assert b.cert.wg_key not in {p.public_key for p in a.tunnel.peers()}
    assert lab.wait_for(lambda: hosts["a"].ping(VIPS["b"], count=12, interval=0.5), 30.0)
    assert a.peers == {b.rt.node.id: "relay"} and set(gw_nat.sessions) - first
