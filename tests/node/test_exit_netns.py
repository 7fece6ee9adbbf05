"""The exit in a real network stack: ExitTable + NodeResolver in a node namespace.

    client ns --veth "wrn0" (the tun's name)-- node ns --veth "up0" (uplink)-- inet ns
                                                   \\--veth "lan0"-- lan ns (the node's LAN)

The client's end carries several tunnel addresses: an admitted client (10.77.0.2 / fd77:7272::2), a
second client that gets suspended (10.77.0.3 / fd77:7272::3) and a quarantined control address. The
inet namespace runs the lab HTTP server (python -m http.server) on four public addresses and the lab
zone server; it also holds a private address (10.99.0.1) that the node routes to through its uplink.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from dnslib import RCODE, DNSRecord

from agents.netlab import Lab, can_build_namespaces
from agents.node.dns import NodeResolver
from agents.node.exit import ExitTable
from agents.node.policy import ExitPolicy
from agents.node.set_counters import SetCounters

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not can_build_namespaces(), reason="network namespaces need root (CI runs as root)"),
]

NODE4, NODE6 = "10.77.0.1", "fd77:7272::1"
A4, A6 = "10.77.0.2", "fd77:7272::2"          # the admitted client
S4, S6 = "10.77.0.3", "fd77:7272::3"          # the client that gets suspended
Q6 = "fd77:7272:0:ffff::99"                    # a quarantined client's control address
UPLINK4, UPLINK6 = "198.51.100.1", "2001:db8:1::1"
WEB, WEB6 = "198.51.100.2", "2001:db8:1::2"   # allowed.example (A and AAAA); also the zone server
BLOCKED = "198.51.100.3"                       # blocked.example: a name off the allow list
CIDR_OK = "198.51.100.4"                       # allowed by CIDR
STRANGER = "198.51.100.5"                      # allowed by nothing
PRIVATE_UP = "10.99.0.1"                       # private, routed out of the uplink
LAN_HOST = "192.168.50.2"                      # the node's LAN
CONTROL_PORT, OTHER_PORT, BLOCKED_PORT = 7700, 8080, 8081
POLICY = ExitPolicy(allow_cidrs=(f"{CIDR_OK}/32",), allow_ports=(80,), allow_domains=("allowed.example",))
BLOB_BYTES = 16 * 1024 * 1024
#: How long a connection attempt that the exit drops is given (seconds): the positive checks on
#: the same path connect in milliseconds.
REFUSED_S = 0.8


def _veth(a, a_if, b, b_if):
    subprocess.run(["ip", "link", "add", "name", a_if, "netns", a.name, "type", "veth", "peer", "name", b_if,
                    "netns", b.name], check=True, capture_output=True)
    a.ip("link", "set", a_if, "up")
    b.ip("link", "set", b_if, "up")


def _addr(ns, ifname, *cidrs):
    for cidr in cidrs:
        ns.ip("addr", "add", cidr, "dev", ifname, *(["nodad"] if ":" in cidr else []))


def _mac(ns, ifname):
    return json.loads(ns.ip("-j", "link", "show", ifname).stdout)[0]["address"]


def _listen(ns, address, port):
    with ns.enter():
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(64)
    return sock


def connects(ns, src, dst, port, timeout=REFUSED_S) -> bool:
    """Whether a TCP connection from ``src`` in ``ns`` to ``dst:port`` is established."""
    with ns.enter():
        try:
            socket.create_connection((dst, port), timeout=timeout, source_address=(src, 0)).close()
            return True
        except OSError:
            return False


def ask(ns, src, server, name, qtype="A", timeout=1.0):
    """A DNS question from ``src``; the parsed reply, or None when nothing comes back."""
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    with ns.enter():
        sock = socket.socket(family, socket.SOCK_DGRAM)
    with sock:
        sock.bind((src, 0))
        sock.settimeout(timeout)
        sock.sendto(DNSRecord.question(name, qtype).pack(), (server, 53))
        try:
            return DNSRecord.parse(sock.recvfrom(4096)[0])
        except socket.timeout:
            return None


def http_get(ns, src, dst, path="/blob.bin", *, pause=None, rcvbuf=None):
    """GET over HTTP/1.0 from ``src``; returns (status line, body). ``pause(read)`` runs per chunk."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with ns.enter():
        sock = socket.socket(family, socket.SOCK_STREAM)
    with sock:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(5)
        sock.bind((src, 0))
        sock.connect((dst, 80))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: allowed.example\r\n\r\n".encode())
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
            if pause:
                pause(len(data))
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


def _wait(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not ready after {timeout} s")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with Lab() as lab:
        client, node, inet, lan = (lab.add_host(n) for n in ("cli", "node", "inet", "lan"))
        _veth(node, "wrn0", client, "eth0")
        _addr(node, "wrn0", f"{NODE4}/16", f"{NODE6}/64")
        node.ip("-6", "route", "add", "fd77:7272:0:ffff::/64", "dev", "wrn0")
        _addr(client, "eth0", f"{A4}/16", f"{S4}/16", f"{A6}/64", f"{S6}/64", f"{Q6}/64")
        # A WireGuard TUN has no link layer; this veth stands in for it, so its IPv6 neighbours are
        # made permanent (the exit rightly drops neighbour discovery arriving from the tun).
        node_mac, client_mac = _mac(node, "wrn0"), _mac(client, "eth0")
        for address in (A6, S6, Q6):
            node.ip("-6", "neigh", "add", address, "lladdr", client_mac, "dev", "wrn0", "nud", "permanent")
        client.ip("-6", "neigh", "add", NODE6, "lladdr", node_mac, "dev", "eth0", "nud", "permanent")
        client.ip("route", "add", "default", "via", NODE4)
        client.ip("-6", "route", "add", "default", "via", NODE6)
        _veth(node, "up0", inet, "eth0")
        _addr(node, "up0", f"{UPLINK4}/24", f"{UPLINK6}/64")
        _addr(inet, "eth0", f"{WEB}/24", f"{BLOCKED}/24", f"{CIDR_OK}/24", f"{STRANGER}/24", f"{WEB6}/64",
              f"{PRIVATE_UP}/24")
        node.ip("route", "add", "default", "via", WEB)
        node.ip("-6", "route", "add", "default", "via", WEB6)
        node.ip("route", "add", "10.99.0.0/24", "via", WEB)
        # Lets the test send unsolicited packets from the internet towards a client.
        inet.ip("route", "add", "10.77.0.0/16", "via", UPLINK4)
        _veth(node, "lan0", lan, "eth0")
        _addr(node, "lan0", "192.168.50.1/24")
        _addr(lan, "eth0", f"{LAN_HOST}/24")
        lan.ip("route", "add", "default", "via", "192.168.50.1")

        www = tmp_path_factory.mktemp("www")
        blob = os.urandom(BLOB_BYTES)
        (www / "blob.bin").write_bytes(blob)
        (www / "small.txt").write_text("hello from the internet\n")
        inet.spawn([sys.executable, "-m", "http.server", "80", "--bind", "::", "--directory", str(www)])
        inet.spawn([sys.executable, "-m", "agents.netlab.dns", "--bind", WEB, "--port", "53", "--ttl", "60",
                    "--record", f"allowed.example={WEB}", "--record", f"allowed.example={WEB6}",
                    "--record", f"blocked.example={BLOCKED}"])
        listeners = [_listen(lan, "0.0.0.0", 80), _listen(inet, "0.0.0.0", BLOCKED_PORT),
                     _listen(node, NODE4, CONTROL_PORT), _listen(node, NODE6, CONTROL_PORT),
                     _listen(node, "::", OTHER_PORT)]
        _wait(lambda: connects(inet, WEB, WEB, 80), "http server")
        _wait(lambda: ask(inet, WEB, WEB, "allowed.example", timeout=0.3) is not None, "zone server")

        before = node.run(["nft", "list", "ruleset"]).stdout
        with node.enter():  # the counters' netlink socket belongs to the node's namespace
            counters = SetCounters("warren_exit")
        table = ExitTable("wrn0", None, node_v4=NODE4, node_v6=NODE6, pool_v4="10.77.0.0/16",
                          pool_v6="fd77:7272::/64", quarantine_v6="fd77:7272:0:ffff::/64",
                          control_port=CONTROL_PORT, dns_port=53, policy=POLICY, run=node.run,
                          counters=counters)
        table.install()
        resolver = NodeResolver([NODE4, NODE6], 53, upstream=(WEB, 53), policy_getter=lambda: table.policy,
                                is_admitted=table.is_admitted, on_resolved=table.allow_resolved)
        with node.enter():
            resolver.start()
        table.admit(A4, A6)
        table.admit(S4, S6)
        try:
            yield dict(lab=lab, client=client, node=node, inet=inet, table=table, resolver=resolver,
                       blob_sha=hashlib.sha256(blob).hexdigest(), before=before)
        finally:
            resolver.close()
            table.remove()
            counters.close()
            for sock in listeners:
                sock.close()


def test_install__uplink_found_forwarding_on(world):
    assert world["table"].uplink == "up0"
    node = world["node"]
    assert node.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == b"1"
    assert node.run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip() == b"1"


def test_allowed_domain__reachable_only_after_resolving_through_the_node(world):
    client, table = world["client"], world["table"]
    assert not connects(client, A4, WEB, 80)                  # the address alone is not allowed
    reply = ask(client, A4, NODE4, "allowed.example")
    assert [str(rr.rdata) for rr in reply.rr] == [WEB]
    status, body = http_get(client, A4, WEB, "/small.txt")
    assert status.endswith("200 OK") and body == b"hello from the internet\n"
    reply6 = ask(client, A6, NODE6, "allowed.example", "AAAA")
    assert [str(rr.rdata) for rr in reply6.rr] == [WEB6]
    status6, body6 = http_get(client, A6, WEB6, "/small.txt")
    assert status6.endswith("200 OK") and body6 == b"hello from the internet\n"
    assert connects(client, A4, CIDR_OK, 80)                  # allowed by CIDR, no DNS needed
    assert table.dropped()[A4][0] >= 1                        # the first, refused attempt


def test_refusals__not_allowed_name_address_port_private_and_node__dropped_and_counted(world):
    client, table = world["client"], world["table"]
    reply = ask(client, A4, NODE4, "blocked.example")
    assert reply.header.rcode == RCODE.REFUSED and not reply.rr
    assert world["resolver"].core.refused[A4] >= 1
    before = table.dropped()[A4]
    refused = [
        (A4, BLOCKED, 80),                # the refused name's address
        (A4, STRANGER, 80),               # an address nothing allows
        (A4, CIDR_OK, BLOCKED_PORT),      # an allowed address on a port off the list
        (A4, LAN_HOST, 80),               # the node's LAN
        (A4, PRIVATE_UP, 80),             # a private address out of the uplink
        (A4, UPLINK4, OTHER_PORT),        # the node's own uplink address
        (A4, NODE4, OTHER_PORT),          # the node's own services on its tunnel address
        (A6, UPLINK6, OTHER_PORT),
    ]
    with concurrent.futures.ThreadPoolExecutor(len(refused)) as pool:
        results = list(pool.map(lambda case: connects(client, *case), refused))
    assert results == [False] * len(refused)
    after = table.dropped()
    assert after[A4][0] - before[0] >= 7 and after[A4][1] - before[1] >= 7 * 40
    assert after[A6][0] >= 1
    assert connects(client, A4, CIDR_OK, 80)                  # the same path still works


def test_unsolicited_from_internet__dropped_and_counted_for_the_client(world):
    inet, table = world["inet"], world["table"]
    before = table.dropped()[A4]
    with inet.enter():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        for _ in range(5):
            sock.sendto(b"x" * 1000, (A4, 9999))
    time.sleep(0.2)
    after = table.dropped()[A4]
    assert after[0] - before[0] == 5 and after[1] - before[1] == 5 * 1028


def test_suspended_and_quarantined__forward_nothing_but_reach_the_control_port(world):
    client, table = world["client"], world["table"]
    assert connects(client, S4, CIDR_OK, 80)
    table.suspend(S4, S6)
    assert not table.is_admitted(S4) and not table.is_admitted(S6)
    assert not connects(client, S4, CIDR_OK, 80)
    assert ask(client, S4, NODE4, "allowed.example", timeout=0.5) is None   # no DNS either
    assert connects(client, S4, NODE4, CONTROL_PORT) and connects(client, S6, NODE6, CONTROL_PORT)
    assert not connects(client, Q6, WEB6, 80)
    assert connects(client, Q6, NODE6, CONTROL_PORT)
    dropped = table.dropped()
    assert dropped[S4][0] >= 1 and dropped[Q6][0] >= 1
    table.resume(S4, S6)
    assert connects(client, S4, CIDR_OK, 80)
    assert table.dropped()[S4] == dropped[S4]                 # counters kept across suspension
    table.forget(S4, S6)
    assert S4 not in table.dropped() and not connects(client, S4, CIDR_OK, 80)


def test_set_policy__during_download__download_completes(world):
    client, table = world["client"], world["table"]
    assert ask(client, A4, NODE4, "allowed.example").rr
    dropped_before = table.dropped()[A4]
    swapped = []

    def pause(read):
        if read > 1024 * 1024 and not swapped:
            # A new domain list: the resolved set is flushed, the running flow must go on.
            table.set_policy(ExitPolicy(allow_cidrs=(f"{CIDR_OK}/32",), allow_ports=(80, 443),
                                        allow_domains=("other.example",)))
            swapped.append(read)

    status, body = http_get(client, A4, WEB, pause=pause, rcvbuf=64 * 1024)
    assert swapped and swapped[0] < BLOB_BYTES // 2
    assert status.endswith("200 OK") and hashlib.sha256(body).hexdigest() == world["blob_sha"]
    assert table.dropped()[A4] == dropped_before              # nothing of it was dropped
    assert table.is_admitted(A4)
    assert not connects(client, A4, WEB, 80)                  # new flows: the old name is gone
    assert ask(client, A4, NODE4, "allowed.example").header.rcode == RCODE.REFUSED
    table.set_policy(POLICY)


def test_allow_resolved__ttl_clamped_denied_skipped(world):
    node, table = world["node"], world["table"]
    table.allow_resolved([("203.0.113.9", 5), ("2001:db8:9::9", 10**7), ("10.0.0.1", 300),
                          ("::ffff:203.0.113.10", 300)])

    def timeouts(name):
        out = json.loads(node.run(["nft", "-j", "list", "set", "inet", "warren_exit", name]).stdout)
        elems = next(item["set"] for item in out["nftables"] if "set" in item).get("elem", [])
        return {e["elem"]["val"]: e["elem"]["timeout"] for e in elems if isinstance(e, dict)}

    v4, v6 = timeouts("resolved4"), timeouts("resolved6")
    assert v4["203.0.113.9"] == 60 and "10.0.0.1" not in v4
    assert v6["2001:db8:9::9"] == 86_400 and "::ffff:203.0.113.10" not in v6
    table.allow_resolved([("203.0.113.9", 3600)])             # a longer TTL extends the entry
    assert timeouts("resolved4")["203.0.113.9"] == 3600


def test_remove__ruleset_and_sysctls_as_before(world):
    node, table = world["node"], world["table"]
    table.remove()
    assert node.run(["nft", "list", "ruleset"]).stdout == world["before"]
    assert node.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == b"0"
    assert node.run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip() == b"0"
    assert not connects(world["client"], A4, CIDR_OK, 80)     # no forwarding without the exit
    table.remove()                                            # idempotent
