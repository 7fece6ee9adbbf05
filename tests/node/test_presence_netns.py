"""Exit mode in the overlay: nodes publish signed PeerRecords, clients find them and a path through NATs.

Real parts only, in network namespaces on one "internet" bridge: a public node ``A`` (ring of one,
its own bootstrap, rendezvous and volunteer relay); node ``B`` behind a port-restricted NAT; client
``C`` public; client ``D`` behind a symmetric NAT. Every host runs Warren's WireGuard runtime (TUN +
one UDP socket, which also carries the overlay). The node's WireGuard peer list holds the clients'
keys directly (admission of unknown initiators is the session layer's part).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time

import pytest
from eth_account import Account

from agents.client.discovery import ClientDiscovery
from agents.netlab import Lab, NatType, can_build_namespaces
from agents.netlab.wireguard import start_python_tunnel
from agents.node.presence import NodePresence
from agents.overlay import wire
from agents.overlay.core import OverlayConfig
from agents.overlay.errors import LocalProtocolError
from agents.overlay.ids import id_to_bytes, node_id_from_wg_key
from agents.overlay.records import InMemoryDirectory, make_peer_record
from agents.overlay.wire import Msg
from agents.overlay.wgrelay import MESH_MTU
from agents.wireguard.config import InterfaceConfig, PeerConfig, generate_private_key, public_key

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not can_build_namespaces(), reason="network namespaces need root (CI runs as root)"),
]

PORT = 51820
TUN = {"A": "10.98.0.1", "B": "10.98.0.2", "C": "10.98.0.3", "D": "10.98.0.4"}
PRICE = 2 * 10**18  # token wei per GiB
PAYLOAD = 128 * 1024
B_TTL_S = 6  # short, so the test sees B republish (every TTL / 2) before its record would lapse


@pytest.fixture
def lab():
    with Lab(prefix="wpr") as lab:
        yield lab


def _tunnel(lab, ns, name, wg_priv, peers=()):
    config = InterfaceConfig(private_key=wg_priv, listen_port=PORT, mtu=MESH_MTU,
                             addresses=[f"{TUN[name]}/32"], peers=list(peers))
    return start_python_tunnel(lab, ns, config)


def _serve_once(ns, address, port, sink: dict):
    with ns.enter():
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((address, port))
    srv.listen(1)
    srv.settimeout(15)

    def run():
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(15)
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                sink["data"] = data

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _tcp_exchange(lab, server_ns, client_ns, port) -> bool:
    payload = os.urandom(PAYLOAD)
    sink: dict = {}
    server = _serve_once(server_ns, TUN["B"], port, sink)
    with client_ns.enter():
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with conn:
        conn.settimeout(15)
        conn.connect((TUN["B"], port))
        conn.sendall(payload)
    server.join(timeout=20)
    return hashlib.sha256(sink.get("data", b"")).digest() == hashlib.sha256(payload).digest()


def test_presence__nodes_behind_nats__clients_resolve_punch_or_relay_and_tunnel(lab):
    inet = lab.add_internet("198.51.100.0/24")
    ns_a, ns_c = lab.add_host("a"), lab.add_host("c")
    ip_a, ip_c = inet.attach(ns_a), inet.attach(ns_c)
    nat_b = lab.add_nat("natb", NatType.PORT_RESTRICTED, inet)
    nat_d = lab.add_nat("natd", NatType.SYMMETRIC, inet)
    ns_b, ns_d = lab.add_host("b"), lab.add_host("d")
    nat_b.attach(ns_b)
    nat_d.attach(ns_d)

    keys = {name: generate_private_key() for name in "ABCD"}
    pubs = {name: public_key(k) for name, k in keys.items()}
    op_a, op_b, mallory = Account.create(), Account.create(), Account.create()
    ids = {name: node_id_from_wg_key(pubs[name]) for name in "AB"}

    def directory():  # each host asks the chain (node_registry) on its own: here, its own copy
        return InMemoryDirectory({ids["A"]: op_a.address, ids["B"]: op_b.address})

    # the node knows its clients' keys up front (no endpoints: it learns them when they handshake)
    client_peers = [PeerConfig(public_key=pubs[c], allowed_ips=[f"{TUN[c]}/32"]) for c in "CD"]
    tun_a = _tunnel(lab, ns_a, "A", keys["A"])
    tun_b = _tunnel(lab, ns_b, "B", keys["B"], client_peers)
    tun_c, tun_d = _tunnel(lab, ns_c, "C", keys["C"]), _tunnel(lab, ns_d, "D", keys["D"])
    boot = [(ip_a, PORT)]

    a = NodePresence(tun_a, operator_key=op_a.key, region="EU", price_per_gib=PRICE, directory=directory(),
                     bootstrap=boot, public_endpoint=(ip_a, PORT), relay=True, ttl_s=600)
    lab.defer(a.close)
    a.start()
    b = NodePresence(tun_b, operator_key=op_b.key, region="US", price_per_gib=PRICE, directory=directory(),
                     bootstrap=boot, ttl_s=B_TTL_S)
    lab.defer(b.close)
    b.start()
    status_a, status_b = a.status(), b.status()
    assert status_a["ring_joined"] and status_a["endpoints"] == [(ip_a, PORT)] and status_a["relay"]
    assert not status_b["ring_joined"] and status_b["rendezvous"] == (ip_a, PORT)
    assert status_b["reflexive"][0] == nat_b.public_address and status_b["last_publish"] == "ok"
    assert status_b["endpoints"] == [(ip_a, PORT)]  # behind a NAT: where to ask, not its own address

    # a node whose operator the directory does not list refuses to publish (our misuse)
    stranger = NodePresence(tun_c, operator_key=mallory.key, region="EU", price_per_gib=PRICE,
                            directory=directory(), bootstrap=boot)
    try:
        with pytest.raises(LocalProtocolError, match="unknown-node"):
            stranger.start()
    finally:
        stranger.close()

    c = ClientDiscovery(tun_c, directory=directory(), bootstrap=boot)
    lab.defer(c.close)
    d = ClientDiscovery(tun_d, directory=directory(), bootstrap=boot)
    lab.defer(d.close)

    # C resolves B's signed record through the overlay
    rec = c.resolve(id_to_bytes(ids["B"]))
    assert rec is not None and rec.wg_key == pubs["B"] and rec.region == "US" and rec.price == PRICE
    assert rec.expires > time.time() and rec.endpoints == ((ip_a, PORT),)

    # A's record names its own endpoint: the path is that endpoint, and a ping says how far it is
    assert c.path_to(id_to_bytes(ids["A"])) == (ip_a, PORT)
    rtt_a = c.rtt(id_to_bytes(ids["A"]))
    assert rtt_a is not None and 0 < rtt_a < 1.0

    # C -> B: punched through B's port-restricted NAT, WireGuard handshakes, ping and TCP flow
    path = c.path_to(id_to_bytes(ids["B"]))
    assert path is not None and path[0] == nat_b.public_address
    assert c.nat.path(ids["B"]) == "direct"
    rtt_b = c.rtt(id_to_bytes(ids["B"]))
    assert rtt_b is not None and 0 < rtt_b < 1.0
    tun_c.add_peer(PeerConfig(public_key=pubs["B"], allowed_ips=[f"{TUN['B']}/32"], endpoint=path,
                              persistent_keepalive=25))
    assert ns_c.ping(TUN["B"])
    assert _tcp_exchange(lab, ns_b, ns_c, 9001)
    assert a.nat.stats["relayed_bytes"] == 0

    # D (symmetric NAT) -> B: punching cannot work; WireGuard goes through A's relay
    path = d.path_to(id_to_bytes(ids["B"]))
    assert path is not None and path[0] == "127.0.0.1"  # the relay bridge's loopback port
    assert d.nat.path(ids["B"]) == "relay"
    tun_d.add_peer(PeerConfig(public_key=pubs["B"], allowed_ips=[f"{TUN['B']}/32"], endpoint=path,
                              persistent_keepalive=25))
    assert ns_d.ping(TUN["B"])
    assert _tcp_exchange(lab, ns_b, ns_d, 9002)
    assert a.nat.stats["relayed_bytes"] > PAYLOAD and a.status()["relay_sessions"] == 1
    assert b.status()["relayed_clients"] == 1
    rtt_relay = d.rtt(id_to_bytes(ids["B"]))
    assert rtt_relay is not None and 0 < rtt_relay < 1.0

    # B republishes before its TTL runs out: a newer record with a later expiry replaces the first
    assert lab.wait_for(lambda: b.status()["record_seq"] > status_b["record_seq"], B_TTL_S)
    fresh = c.resolve(id_to_bytes(ids["B"]))
    assert fresh.seq > rec.seq and fresh.expires > rec.expires

    # a forged PeerRecord for B (signed by a non-operator, newer seq, pointing elsewhere) is refused
    # by the holder, and B's genuine record still resolves
    now = int(time.time())
    forged = make_peer_record(mallory.key, pubs["B"], [(ip_c, PORT)], seq=now + 1000, expires=now + 600,
                              region="US", price=1)
    acks: list = []

    def store_forged(node, t):  # a raw STORE: our own put() would refuse to publish it before sending
        node._request(node.gateway, Msg(wire.STORE, node.id, flag=0, data=forged), wire.STORE_ACK,
                      lambda m, sender, n: acks.append(m.data), lambda target, n: acks.append(None), t)

    d.rt.call(store_forged)
    assert lab.wait_for(lambda: acks, 5.0) and acks == [b"mis-signed"]
    assert c.resolve(id_to_bytes(ids["B"])).endpoints == ((ip_a, PORT),)

    # ... and a holder that accepts it (its directory believes mallory) is not believed by the client
    fooled = directory()
    fooled.register(ids["B"], mallory.address)
    a.rt.node.store.validator.directory = fooled
    a.rt.call(lambda node, t: node.store.put(forged, ("127.0.0.1", 1), t))
    assert c.resolve(id_to_bytes(ids["B"])) is None


def test_presence__first_node_restarted__rejoins_through_its_saved_peers_not_alone(lab, tmp_path):
    """The ring's first node (its own bootstrap) restarted after the others dropped it rejoins them
    through its known-peers file before it serves. It used to start a ring of one, healed only if the
    others happened to re-bootstrap through it: CI once saw a client, asking it for another node right
    after its restart, find nobody."""
    inet = lab.add_internet("198.51.100.0/24")
    hosts = {name: lab.add_host(name.lower()) for name in "AEFC"}
    ips = {name: inet.attach(ns) for name, ns in hosts.items()}
    keys = {name: generate_private_key() for name in "AEF"}
    ops = {name: Account.create() for name in "AEF"}
    ids = {name: node_id_from_wg_key(public_key(k)) for name, k in keys.items()}
    # fast ring upkeep, so that dropping a dead node takes about a second
    fast = OverlayConfig(stabilize_interval=1.0, rpc_timeout=0.4)
    peers_file = tmp_path / "overlay-peers.json"
    boot = [(ips["A"], PORT)]

    def directory():
        return InMemoryDirectory({ids[n]: ops[n].address for n in "AEF"})

    def node(name, bootstrap, peers=None):
        tun = start_python_tunnel(lab, hosts[name], InterfaceConfig(private_key=keys[name], listen_port=PORT,
                                                                  mtu=MESH_MTU))
        presence = NodePresence(tun, operator_key=ops[name].key, region="EU", price_per_gib=PRICE,
                                directory=directory(), bootstrap=bootstrap, public_endpoint=(ips[name], PORT),
                                config=fast, peers_file=peers)
        lab.defer(presence.close)
        return tun, presence.start()

    def ring_ids(presence):
        with presence.rt.lock:
            return {c.node_id for c in presence.rt.node.table.contacts()}

    def stop(tun, presence):
        presence.close()
        tun.close()

    tun_a, a = node("A", boot, peers_file)
    others = [node(name, boot)[1] for name in "EF"]
    assert lab.wait_for(lambda: ring_ids(a) >= {ids["E"], ids["F"]}, 10)
    stop(tun_a, a)  # a clean stop writes the known peers
    saved = {tuple(p) for p in json.loads(peers_file.read_text())}
    assert saved >= {(ips["E"], PORT), (ips["F"], PORT)}
    assert lab.wait_for(lambda: all(ids["A"] not in ring_ids(o) for o in others), 15), "A was never dropped"

    # A rejoins through E or F before start() returns, and every record resolves through A again.
    tun_a, a = node("A", boot, peers_file)
    assert ring_ids(a) & {ids["E"], ids["F"]}, "A started a ring of its own"
    client = ClientDiscovery(start_python_tunnel(lab, hosts["C"], InterfaceConfig(
        private_key=generate_private_key(), listen_port=PORT, mtu=MESH_MTU)), directory=directory(), bootstrap=boot)
    lab.defer(client.close)
    for name in "EF":
        assert lab.wait_for(lambda name=name: client.resolve(id_to_bytes(ids[name]), timeout=5) is not None, 20)
    assert lab.wait_for(lambda: all(ids["A"] in ring_ids(o) for o in others), 15)


def test_presence__record_holder_restarted__node_behind_nat_publishes_again(lab):
    """B (behind a NAT) is not in the ring: its record lives on A alone. A restarts with an empty
    store; B notices its record is gone and publishes it again, and clients find B within seconds."""
    inet = lab.add_internet("198.51.100.0/24")
    ns_a, ns_c = lab.add_host("a"), lab.add_host("c")
    ip_a = inet.attach(ns_a)
    inet.attach(ns_c)
    nat_b = lab.add_nat("natb", NatType.PORT_RESTRICTED, inet)
    ns_b = lab.add_host("b")
    nat_b.attach(ns_b)
    keys = {name: generate_private_key() for name in "ABC"}
    ops = {name: Account.create() for name in "AB"}
    ids = {name: node_id_from_wg_key(public_key(keys[name])) for name in "AB"}
    boot = [(ip_a, PORT)]

    def directory():
        return InMemoryDirectory({ids[n]: ops[n].address for n in "AB"})

    def tunnel(ns, name):
        return start_python_tunnel(lab, ns, InterfaceConfig(private_key=keys[name], listen_port=PORT, mtu=MESH_MTU))

    def node_a():
        tun = tunnel(ns_a, "A")
        presence = NodePresence(tun, operator_key=ops["A"].key, region="EU", price_per_gib=PRICE,
                                directory=directory(), bootstrap=boot, public_endpoint=(ip_a, PORT))
        lab.defer(presence.close)
        return tun, presence.start()

    tun_a, a = node_a()
    b = NodePresence(tunnel(ns_b, "B"), operator_key=ops["B"].key, region="US", price_per_gib=PRICE,
                     directory=directory(), bootstrap=boot, ttl_s=600, record_check_s=1.0)
    lab.defer(b.close)
    b.start()
    client = ClientDiscovery(tunnel(ns_c, "C"), directory=directory(), bootstrap=boot)
    lab.defer(client.close)
    first = client.resolve(id_to_bytes(ids["B"]))
    assert first is not None

    a.close()
    tun_a.close()
    tun_a, a = node_a()  # same key and address, empty record store
    with a.rt.lock:
        assert ids["B"] not in {key for key, _ in a.rt.node.store.items()}
    # the next republication by schedule would be 300 s away (ttl_s / 2)
    assert lab.wait_for(lambda: (r := client.resolve(id_to_bytes(ids["B"]), timeout=3)) is not None
                        and r.seq > first.seq, 15)


def test_presence__first_rendezvous_dies__client_reaches_node_behind_nat_through_the_backup(lab):
    """B behind a port-restricted NAT lists two rendezvous (A1 and A2, both public ring members); A1
    stops; a client that knows only A2 still resolves B and punches a direct path through A2."""
    inet = lab.add_internet("198.51.100.0/24")
    hosts = {name: lab.add_host(name.lower()) for name in ("A1", "A2", "C")}
    ips = {name: inet.attach(ns) for name, ns in hosts.items()}
    nat_b = lab.add_nat("natb", NatType.PORT_RESTRICTED, inet)
    hosts["B"] = lab.add_host("b")
    nat_b.attach(hosts["B"])
    keys = {name: generate_private_key() for name in ("A1", "A2", "B", "C")}
    ops = {name: Account.create() for name in ("A1", "A2", "B")}
    ids = {name: node_id_from_wg_key(public_key(keys[name])) for name in ops}

    def directory():
        return InMemoryDirectory({ids[n]: ops[n].address for n in ops})

    def presence(name, bootstrap, public=True):
        tun = start_python_tunnel(lab, hosts[name], InterfaceConfig(private_key=keys[name], listen_port=PORT,
                                                                  mtu=MESH_MTU))
        node = NodePresence(tun, operator_key=ops[name].key, region="EU", price_per_gib=PRICE,
                            directory=directory(), bootstrap=bootstrap,
                            public_endpoint=(ips[name], PORT) if public else None, relay=public)
        lab.defer(node.close)
        return tun, node.start()

    a1 = (ips["A1"], PORT)
    a2 = (ips["A2"], PORT)
    tun_a1, node_a1 = presence("A1", [a1])
    presence("A2", [a1])
    _, b = presence("B", [a1, a2], public=False)
    assert b.status()["rendezvous"] == a1 and b.status()["backup_rendezvous"] == [a2]
    assert b.status()["endpoints"] == [a1, a2]

    node_a1.close()  # the first rendezvous dies
    tun_a1.close()
    client = ClientDiscovery(start_python_tunnel(lab, hosts["C"], InterfaceConfig(
        private_key=keys["C"], listen_port=PORT, mtu=MESH_MTU)), directory=directory(), bootstrap=[a2])
    lab.defer(client.close)
    record = client.resolve(id_to_bytes(ids["B"]))
    assert record is not None and record.endpoints == (a1, a2)  # A2 holds a replica
    path = client.path_to(id_to_bytes(ids["B"]))
    assert path is not None and path[0] == nat_b.public_address, path
    assert client.nat.path(ids["B"]) == "direct"
