"""The netns lab itself: NAT flavours behave as documented, and cleanup leaves nothing behind."""

import json
import socket
import subprocess

import pytest

from agents.netlab import Lab, NatType

#: Any port; every namespace has its own port space.
OBSERVER_PORT = 40000
INSIDE_PORT = 45000


def _udp(ns, port=0, address="0.0.0.0"):
    with ns.enter():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def topology(lab):
    """An internet with two observers, and one NAT'd host per flavour under test."""
    internet = lab.add_internet()
    observers = [lab.add_host(f"obs{i}") for i in range(3)]
    for host in observers:
        internet.attach(host)
    return lab, internet, observers


def _mappings(lab, internet, observers, nat_type):
    nat = lab.add_nat("nat", nat_type, internet)
    inside = lab.add_host("inside")
    nat.attach(inside)
    sinks = [_udp(obs, OBSERVER_PORT) for obs in observers[:2]]
    client = _udp(inside, INSIDE_PORT)
    seen = []
    try:
        for obs, sink in zip(observers, sinks):
            client.sendto(b"hello", (obs.address, OBSERVER_PORT))
            _, source = sink.recvfrom(100)
            seen.append(source)
        # The third observer never heard from the inside host: can it reach the first mapping?
        stranger = _udp(observers[2])
        stranger.sendto(b"unsolicited", (nat.public_address, seen[0][1]))
        client.settimeout(0.5)
        try:
            got = client.recvfrom(100)[0]
        except TimeoutError:
            got = None
        stranger.close()
        return nat, seen, got
    finally:
        client.close()
        for sink in sinks:
            sink.close()


def test_nat__full_cone__same_mapping_and_unsolicited_inbound_passes(topology):
    nat, seen, got = _mappings(*topology, NatType.FULL_CONE)
    assert seen[0] == seen[1] == (nat.public_address, INSIDE_PORT)
    assert got == b"unsolicited"


def test_nat__port_restricted__same_mapping_but_strangers_filtered(topology):
    nat, seen, got = _mappings(*topology, NatType.PORT_RESTRICTED)
    assert seen[0] == seen[1] == (nat.public_address, INSIDE_PORT)
    assert got is None


def test_nat__symmetric__mapping_per_destination(topology):
    nat, seen, got = _mappings(*topology, NatType.SYMMETRIC)
    assert seen[0][0] == seen[1][0] == nat.public_address
    assert seen[0][1] != seen[1][1]
    assert got is None


def test_lab__close__removes_namespaces_and_processes(root):
    lab = Lab()
    host = lab.add_host("a")
    proc = host.spawn(["sleep", "30"])
    names = [ns.name for ns in lab.namespaces]
    lab.close()
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listing for name in names)
    assert proc.returncode is not None


def test_shape__rate_limit_caps_tcp_throughput(root):
    with Lab() as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        link = lab.connect(a, b)
        a.shape(link.a_ifname, rate_mbit=20)
        b.spawn(["iperf3", "-s", "-1", "-B", link.b_address])  # the lab kills it by PID
        assert lab.wait_for(lambda: b.run(["ss", "-Hltn", "sport = :5201"]).stdout.strip())
        run = a.run(["iperf3", "-c", link.b_address, "-t", "2", "-J"], check=False, timeout=30)
        mbps = json.loads(run.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
        assert 5 < mbps <= 22, mbps
