"""A node's Python tunnel admits a client it has never seen, over real UDP between two namespaces."""

import threading

from agents.netlab.wireguard import A_TUNNEL, B_TUNNEL, start_python_tunnel, tunnel_pair

#: Both tunnels' clocks run 5x fast, so the client's handshake retry (REKEY_TIMEOUT, 5 s) takes 1 s.
TIME_SCALE = 5.0


def _routes(ns, ifname: str) -> set[str]:
    out = ns.run(["ip", "-4", "route", "show", "dev", ifname]).stdout.decode()
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_tunnel__unknown_client__refused_then_admitted_by_callback(lab, hosts):
    a, b, link = hosts
    node_config, client_config = tunnel_pair(link.a_address, link.b_address)
    client_key = client_config.public_key
    node_config.peers.clear()  # the node knows no one
    node = start_python_tunnel(lab, a, node_config, time_scale=TIME_SCALE)
    client = start_python_tunnel(lab, b, client_config, time_scale=TIME_SCALE)

    calls = []

    def broken(key, source, now):
        calls.append((key, source))
        raise RuntimeError("the owner's bug")

    node.admit_unknown = broken
    assert not b.ping(A_TUNNEL, count=1)
    assert calls and calls[0] == (client_key, (link.b_address, client_config.listen_port))
    assert node.running and node.peers() == [] and node.peer_counters(client_key) is None
    assert node.device.drop_counters.get("unknown_peer", 0) >= 1
    assert client.peer(node.public_key).last_handshake is None  # the client got no answer

    threads = []

    def admit(key, source, now):
        threads.append(threading.current_thread().name)
        return [f"{B_TUNNEL}/32"] if key == client_key else None

    node.admit_unknown = admit
    assert lab.wait_for(lambda: b.ping(A_TUNNEL, count=1), timeout=15)
    assert threads[0].endswith("handshakes")  # not the data thread: its sessions keep flowing
    (status,) = node.peers()
    assert status.public_key == client_key and status.allowed_ips == (f"{B_TUNNEL}/32",)
    assert status.endpoint == (link.b_address, client_config.listen_port)
    rx, tx = node.peer_counters(client_key)
    assert rx > 0 and tx > 0 and (rx, tx) == (status.rx_bytes, status.tx_bytes)
    assert lab.wait_for(lambda: f"{B_TUNNEL}" in _routes(a, node.ifname), timeout=5)  # timer thread synced

    node.set_allowed_ips(client_key, [f"{B_TUNNEL}/32", "10.88.0.0/24"])
    assert {B_TUNNEL, "10.88.0.0/24"} <= _routes(a, node.ifname)
    assert a.ping(B_TUNNEL, count=1), "set_allowed_ips lost the session"
    node.set_allowed_ips(client_key, ["10.88.0.0/24"])
    assert B_TUNNEL not in _routes(a, node.ifname)
    assert not a.ping(B_TUNNEL, count=1)  # the client's address is no longer routed to it

    node.remove_peer(client_key)
    assert node.peers() == [] and "10.88.0.0/24" not in _routes(a, node.ifname)
