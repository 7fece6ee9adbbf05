"""Full-tunnel routes + kill switch on a real client namespace, watched by a capture of its uplink.

Topology (one "internet" bridge, 198.51.100.0/24 and fd00:51::/64):

    client (.2, fd00:51::2) --+-- node A (.3, fd00:51::3; endpoint 192.0.2.3 off-link; wireguard-go)
                              +-- node B (.4; wireguard-go, another key: the failover target)
    (both nodes forward and masquerade the client's tunnel traffic)
                              +-- server (.5; HTTP on 203.0.113.80, reachable only through a node)

The client runs `warren tunnel up` (its own process, SO_MARK'd UDP socket) with every route through
it, the kill switch engaged first. A PacketCapture on the client's uplink sees every frame; the only
ones allowed are WireGuard UDP between the tunnel's port and the current endpoint(s). ARP and IPv6
neighbour discovery are link-local housekeeping that the kill switch lets through (NDP) or does not
see (ARP is not IP), and the other hosts' MLD reports arrive on any IPv6 link: the leak check
ignores those (MLD inbound only: the client's own would be a leak), and says so here.
"""

import errno
import hashlib
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time

import pytest

from agents.client.killswitch import KillSwitch, KillSwitchError
from agents.client.routes import FullTunnelRoutes
from agents.netlab import Lab, can_build_namespaces
from agents.netlab.capture import PacketCapture
from agents.netlab.wireguard import spawn_python_tunnel, start_wireguard_go_in
from agents.wireguard.config import InterfaceConfig, PeerConfig, generate_private_key

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(not can_build_namespaces(), reason="needs root for network namespaces")]

CLIENT, NODE_A, NODE_B, SERVER = "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5"
CLIENT6, NODE_A6 = "fd00:51::2", "fd00:51::3"
#: Node A's WireGuard endpoint: off the bridge's subnet, reached by the client's default route, so
#: replies pass strict reverse-path filtering only with wg-quick's conntrack mark (B is on-link).
ENDPOINT_A = "192.0.2.3"
#: The web server's address: off the bridge's subnet, so only a node's forwarding reaches it.
WEB = "203.0.113.80"
WEB_PORT, PROBE_PORT, WG_PORT, CLIENT_WG_PORT = 8080, 9000, 51820, 51900
BLOB = os.urandom(2 * 1024 * 1024)
#: Seconds a leak probe waits (a leaked TCP SYN would be on the wire well within this).
PROBE_TIMEOUT_S = 0.7


def _node(lab, internet, address, key, client_public):
    ns = lab.add_host(f"node{address[-1]}")
    internet.attach(ns, address)
    ns.sysctl("net.ipv4.ip_forward", 1)
    ns.ip("route", "add", f"{WEB}/32", "via", SERVER)
    ns.run(["nft", "add table ip nat; add chain ip nat post { type nat hook postrouting priority "
            "srcnat; }; add rule ip nat post ip saddr 10.77.0.0/24 oifname \"eth0\" masquerade"])
    config = InterfaceConfig(private_key=key, listen_port=WG_PORT, addresses=["10.77.0.1/24"],
                             peers=[PeerConfig(public_key=client_public,
                                               allowed_ips=["10.77.0.2/32"])])
    start_wireguard_go_in(lab, ns, config)
    return ns


def _fetch(ns, timeout=20.0) -> bytes:
    with ns.enter():
        conn = http.client.HTTPConnection(WEB, WEB_PORT, timeout=timeout)
        try:
            conn.request("GET", "/blob")
            return conn.getresponse().read()
        finally:
            conn.close()


def _probe_tcp(ns, address, port, device=None) -> bool:
    """Whether a TCP connection from ``ns`` to (address, port) is accepted."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with ns.enter():
        sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(PROBE_TIMEOUT_S)
        if device:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        sock.connect((address, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _send_udp(ns, address, port, payload=b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",
              device=None) -> int | None:
    """Send one datagram (a DNS-query-shaped one by default); the errno if sending failed."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with ns.enter():
        sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if device:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        sock.sendto(payload, (address, port))
        return None
    except OSError as exc:
        return exc.errno
    finally:
        sock.close()


def _leaks(frames, endpoints):
    """Frames on the uplink that are neither WireGuard to/from an endpoint nor link housekeeping
    (ARP and NDP either way; MLD reports other hosts multicast to the link, inbound only)."""
    bad = []
    for f in frames:
        if f.neighbour_discovery or (f.multicast_listener and not f.outgoing):
            continue
        ours, theirs = ((f.src, f.sport), (f.dst, f.dport))[::1 if f.outgoing else -1]
        wireguard = ours == (CLIENT, CLIENT_WG_PORT) and theirs in endpoints
        if not (f.kind == "ipv4" and f.proto == "udp" and wireguard):
            bad.append(f)
    return bad


def _wg_out(frames, endpoint):
    return sum(1 for f in frames if f.outgoing and f.proto == "udp" and (f.dst, f.dport) == endpoint)


def _netstate(ns):
    def lines(argv):
        out = ns.run(argv).stdout.decode().splitlines()
        return sorted(line for line in out if " cache" not in line)
    return {"nft": ns.run(["nft", "list", "ruleset"]).stdout.decode(),
            "rule4": lines(["ip", "-4", "rule"]), "rule6": lines(["ip", "-6", "rule"]),
            "route4": lines(["ip", "-4", "route", "show", "table", "all"]),
            "route6": lines(["ip", "-6", "route", "show", "table", "all"])}


def test_killswitch_and_routes__download_leaks_failover_crash_release__only_wireguard_leaves(tmp_path):
    with Lab("h4ks") as lab:
        internet = lab.add_internet("198.51.100.0/24")
        client = lab.add_host("client")
        internet.attach(client, CLIENT, ifname="up0")
        client.ip("route", "add", "default", "via", NODE_A)
        client.ip("-6", "addr", "add", f"{CLIENT6}/64", "dev", "up0", "nodad")
        client.ip("-6", "route", "add", "default", "via", NODE_A6)
        client.sysctl("net.ipv4.conf.all.rp_filter", 1)  # strict, as on many distributions

        client_key = generate_private_key()
        client_public = InterfaceConfig(private_key=client_key).public_key
        key_a, key_b = generate_private_key(), generate_private_key()
        node_a = _node(lab, internet, NODE_A, key_a, client_public)
        node_a.ip("-6", "addr", "add", f"{NODE_A6}/64", "dev", "eth0", "nodad")
        node_a.ip("addr", "add", f"{ENDPOINT_A}/32", "dev", "lo")
        _node(lab, internet, NODE_B, key_b, client_public)
        public_a = InterfaceConfig(private_key=key_a).public_key
        public_b = InterfaceConfig(private_key=key_b).public_key

        server = lab.add_host("server")
        internet.attach(server, SERVER)
        server.ip("addr", "add", f"{WEB}/32", "dev", "lo")
        (tmp_path / "www").mkdir()
        (tmp_path / "www" / "blob").write_bytes(BLOB)
        server.spawn([sys.executable, "-m", "http.server", str(WEB_PORT), "--bind", WEB,
                      "--directory", str(tmp_path / "www")])

        def web_up():
            with server.enter():
                try:
                    socket.create_connection((WEB, WEB_PORT), timeout=0.5).close()
                    return True
                except OSError:
                    return False
        assert lab.wait_for(web_up, timeout=10)

        # Listeners on node A stand for "the internet": they show what a leak would reach.
        with node_a.enter():
            tcp4 = socket.create_server((NODE_A, PROBE_PORT))
            tcp6 = socket.create_server((NODE_A6, PROBE_PORT), family=socket.AF_INET6)
            dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            dns.bind((NODE_A, 53))
        dns.settimeout(0.3)
        for s in (tcp4, tcp6):
            lab.defer(s.close)
        lab.defer(dns.close)

        # Baseline: without the kill switch every probe gets through (so the probes can fail).
        assert _probe_tcp(client, NODE_A, PROBE_PORT)
        assert _probe_tcp(client, NODE_A6, PROBE_PORT)
        assert _send_udp(client, NODE_A, 53) is None and dns.recvfrom(512)
        # The uplink's link-local address must be past DAD, or its route appears mid-test.
        assert lab.wait_for(lambda: b"tentative" not in client.ip(
            "-6", "addr", "show", "dev", "up0").stdout, timeout=5)
        before = _netstate(client)

        # Leave "disconnected": kill switch first, with no tunnel yet, then the tunnel and routes.
        ks = KillSwitch(netns=client.name)
        ks.engage(None, [(ENDPOINT_A, WG_PORT)])
        assert _send_udp(client, NODE_A, 53) == errno.EPERM
        config = InterfaceConfig(private_key=client_key, listen_port=CLIENT_WG_PORT,
                                 addresses=["10.77.0.2/24"],
                                 peers=[PeerConfig(public_key=public_a, endpoint=(ENDPOINT_A, WG_PORT),
                                                   allowed_ips=["0.0.0.0/0", "::/0"])])
        tunnel = spawn_python_tunnel(lab, client, config, str(tmp_path))
        ks.set_tun(tunnel.ifname)
        routes = FullTunnelRoutes(tunnel.ifname, netns=client.name)
        routes.install()
        routes.install()  # idempotent
        assert KillSwitch(netns=client.name).state().tuns == (tunnel.ifname,)

        with PacketCapture(client.name, "up0") as cap:
            # (1) download over the tunnel.
            assert hashlib.sha256(_fetch(client)).digest() == hashlib.sha256(BLOB).digest()
            # > 20 frames, not packets: with UDP GSO a run of equal datagrams is one frame here.
            assert _wg_out(cap.snapshot(), (ENDPOINT_A, WG_PORT)) > 20

            # (2) DNS outside, plain TCP, IPv6, device-bound sockets, unmarked UDP to the endpoint.
            assert _send_udp(client, NODE_A, 53) == errno.EPERM          # DNS to a LAN resolver
            assert _send_udp(client, "8.8.8.8", 53, device="up0") == errno.EPERM  # bound: no routing
            assert _send_udp(client, NODE_A, WG_PORT) == errno.EPERM     # not the tunnel's socket
            assert _send_udp(client, ENDPOINT_A, WG_PORT, device="up0") == errno.EPERM  # unmarked
            assert _send_udp(client, NODE_A6, 53) == errno.EPERM
            assert _send_udp(client, "9.9.9.9", 53) is None              # into the tunnel: allowed
            assert not _probe_tcp(client, NODE_A, PROBE_PORT)
            assert not _probe_tcp(client, NODE_A6, PROBE_PORT)
            assert not _probe_tcp(client, WEB, WEB_PORT, device="up0")
            with pytest.raises(socket.timeout):
                dns.recvfrom(512)
            time.sleep(0.3)
            assert _leaks(cap.snapshot(), {(ENDPOINT_A, WG_PORT)}) == []

            # (4) failover A -> B: make-before-break sets, peer swapped over UAPI, with traffic on.
            dropped = ks.state().dropped_out
            results = []
            worker = threading.Thread(target=lambda: results.append(_fetch(client)))
            worker.start()
            for _ in range(15):  # atomic replacement under load: no WireGuard packet dropped
                ks.set_endpoints([(ENDPOINT_A, WG_PORT)])
            ks.set_endpoints([(ENDPOINT_A, WG_PORT), (NODE_B, WG_PORT)])
            worker.join(timeout=30)
            assert results == [BLOB]
            tunnel.uapi.set([f"public_key={public_a.hex()}", "remove=true",
                             f"public_key={public_b.hex()}", f"endpoint={NODE_B}:{WG_PORT}",
                             "replace_allowed_ips=true", "allowed_ip=0.0.0.0/0", "allowed_ip=::/0"])
            routes.install()  # the runtime re-made its /0 route; ours must still hold
            assert _fetch(client) == BLOB
            ks.set_endpoints([(NODE_B, WG_PORT)])
            assert _fetch(client) == BLOB
            assert ks.state().dropped_out == dropped
            assert ks.state().endpoints == ((NODE_B, WG_PORT),)
            assert _wg_out(cap.snapshot(), (NODE_B, WG_PORT)) > 20
            assert _leaks(cap.snapshot(), {(ENDPOINT_A, WG_PORT), (NODE_B, WG_PORT)}) == []

            # (3) kill -9 of the tunnel process: the table stays and nothing leaves.
            cap.clear()
            os.kill(tunnel.process.pid, signal.SIGKILL)
            tunnel.process.wait(timeout=5)
            assert lab.wait_for(lambda: client.ip("link", "show", tunnel.ifname, check=False)
                                .returncode != 0, timeout=5)
            assert KillSwitch(netns=client.name).engaged()
            # Routing alone fails closed too: the TUN's route went with it, "unreachable" remains.
            lookup = client.run(["ip", "route", "get", WEB], check=False)
            assert lookup.returncode != 0 and b"No route to host" in lookup.stderr
            assert not _probe_tcp(client, WEB, WEB_PORT)
            assert not _probe_tcp(client, WEB, WEB_PORT, device="up0")
            assert not _probe_tcp(client, NODE_A, PROBE_PORT)
            assert not _probe_tcp(client, NODE_A6, PROBE_PORT)
            assert _send_udp(client, NODE_A, 53) == errno.EPERM
            assert _send_udp(client, "8.8.8.8", 53, device="up0") == errno.EPERM
            time.sleep(0.3)
            frames = cap.snapshot()
            assert [f for f in frames if f.outgoing and not f.neighbour_discovery] == []
            assert _leaks(frames, {(NODE_B, WG_PORT)}) == []

        # (5) a later process undoes everything from the saved record.
        saved = json.loads(json.dumps(routes.to_dict()))
        later_ks, later_routes = KillSwitch(netns=client.name), FullTunnelRoutes.from_dict(saved)
        later_ks.release()
        later_routes.remove()
        later_ks.release()      # idempotent
        later_routes.remove()
        assert not later_ks.engaged()
        after = _netstate(client)
        assert {k: v for k, v in after.items() if v != before[k]} == {}
        assert _probe_tcp(client, NODE_A, PROBE_PORT)  # the host is back to normal
        with pytest.raises(KillSwitchError, match="not engaged"):
            later_ks.set_endpoints([(ENDPOINT_A, WG_PORT)])


@pytest.mark.parametrize("endpoints, allow", [
    ([("not-an-ip", 1)], []),
    ([("192.0.2.1", 0)], []),
    ([("192.0.2.1", 51820)], [("192.0.2.9", 53, "udp")]),      # DNS is never an exception
    ([("192.0.2.1", 51820)], [("192.0.2.9", 8545, "icmp")]),
    ([("192.0.2.1; flush ruleset", 51820)], []),
])
def test_engage__malformed__refused_before_nft(endpoints, allow):
    with pytest.raises(KillSwitchError):
        KillSwitch(netns="h4-no-such-namespace").engage("wg0", endpoints, allow)


def test_engage__allow_exception_and_ipv6_endpoint__state_read_back_and_tcp_reply_works():
    with Lab("h4kx") as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        link = lab.connect(a, b)
        a.ip("-6", "addr", "add", "fd00:52::1/64", "dev", link.a_ifname, "nodad")
        with b.enter():
            rpc = socket.create_server((link.b_address, 8545))
            other = socket.create_server((link.b_address, 8546))
        lab.defer(rpc.close)
        lab.defer(other.close)
        ks = KillSwitch("warren_test", netns=a.name)

        ks.engage("wg7", [("fd00:52::2", 51820), (link.b_address, 51820)],
                  allow=[(link.b_address, 8545, "tcp")])

        state = ks.state()
        assert state.tuns == ("wg7",)
        assert set(state.endpoints) == {("fd00:52::2", 51820), (link.b_address, 51820)}
        assert state.allow == ((link.b_address, 8545, "tcp"),)
        assert _probe_tcp(a, link.b_address, 8545)          # the exception, replies included
        assert not _probe_tcp(a, link.b_address, 8546)
        ks.set_allow([])
        assert not _probe_tcp(a, link.b_address, 8545)
        ks.set_tun(None)
        assert ks.state().tuns == ()
        ks.release()
        assert a.run(["nft", "list", "ruleset"]).stdout.strip() == b""


def test_routes__install_set_tun_remove__others_rules_kept_and_state_restored():
    with Lab("h4rt") as lab:
        ns = lab.add_host("host")
        for dev in ("tun1", "tun2"):
            ns.ip("tuntap", "add", "dev", dev, "mode", "tun")
            ns.ip("link", "set", dev, "up")
        ns.ip("rule", "add", "fwmark", "7", "table", "100")  # someone else's policy routing
        ns.ip("-6", "rule", "add", "not", "fwmark", "51821", "table", "51821")
        before = _netstate(ns)
        routes = FullTunnelRoutes("tun1", netns=ns.name)

        routes.install()
        for fam in ("-4", "-6"):
            table = ns.ip(fam, "route", "show", "table", "51820").stdout.decode()
            assert "default dev tun1" in table and "unreachable default" in table
        assert ns.run(["sysctl", "-n", "net.ipv4.conf.all.src_valid_mark"]).stdout.strip() == b"1"
        routes.set_tun("tun2")
        table = ns.ip("-6", "route", "show", "table", "51820").stdout.decode()
        assert "default dev tun2" in table and "tun1" not in table
        FullTunnelRoutes.from_dict(routes.to_dict()).remove()

        assert {k: v for k, v in _netstate(ns).items() if v != before[k]} == {}
        assert ns.run(["sysctl", "-n", "net.ipv4.conf.all.src_valid_mark"]).stdout.strip() == b"0"


def test_routes__rpc_bypass__only_that_tcp_port_leaves_by_the_uplink_strict_rp_filter_too():
    """The chain RPC's (address, port) leaves by the main table's default route; the same address on
    another port, like everything else, goes into the tunnel (here a TUN nobody reads: nothing
    arrives). Replies pass strict reverse-path filtering (the kernel swaps the rule's ports)."""
    with Lab("h4rb") as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        link = lab.connect(a, b)
        rpc_address = "203.0.113.45"  # off-link: only a's default route (via b) reaches it
        b.ip("addr", "add", f"{rpc_address}/32", "dev", "lo")
        a.ip("route", "add", "default", "via", link.b_address)
        a.ip("tuntap", "add", "dev", "tun1", "mode", "tun")
        a.ip("link", "set", "tun1", "up")
        a.sysctl("net.ipv4.conf.all.rp_filter", 1)
        a.sysctl(f"net.ipv4.conf.{link.a_ifname}.rp_filter", 1)
        with b.enter():
            rpc = socket.create_server((rpc_address, 8545))
            other = socket.create_server((rpc_address, 8546))
        lab.defer(rpc.close)
        lab.defer(other.close)
        before = _netstate(a)
        assert _probe_tcp(a, rpc_address, 8545) and _probe_tcp(a, rpc_address, 8546)
        routes = FullTunnelRoutes("tun1", netns=a.name, families=("4",), bypass=((rpc_address, 8545),))

        routes.install()
        routes.install()  # idempotent: the rule is not doubled
        rules = json.loads(a.ip("-j", "rule", "show").stdout)
        assert sum(1 for r in rules if r.get("dst") == rpc_address) == 1
        assert _probe_tcp(a, rpc_address, 8545)
        assert not _probe_tcp(a, rpc_address, 8546)  # into the tunnel, where nobody answers
        FullTunnelRoutes.from_dict(routes.to_dict()).remove()  # as `warren disconnect` after a crash

        assert {k: v for k, v in _netstate(a).items() if v != before[k]} == {}
        assert _probe_tcp(a, rpc_address, 8546)
