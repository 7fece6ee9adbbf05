"""A Tunnel in a child process (agents.wireguard.child): calls, a dead child, the parent's death.

Host a runs a :class:`ChildTunnel` (its TUN and socket in the child), host b our in-process tunnel.
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from agents.netlab.wireguard import start_python_tunnel
from agents.wireguard.child import ChildTunnel, ChildTunnelError
from agents.wireguard.config import InterfaceConfig, PeerConfig, generate_private_key

NET = "10.93.0"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is gone too (but it should be reaped)
        return handle.read().rsplit(")", 1)[1].split()[0] == "Z"


def _wait(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def pair(lab):
    a, b = lab.add_host("a"), lab.add_host("b")
    link = lab.connect(a, b)
    keys = {"a": generate_private_key(), "b": generate_private_key()}
    b_config = InterfaceConfig(private_key=keys["b"], listen_port=51820, addresses=[f"{NET}.1/24"])
    a_config = InterfaceConfig(private_key=keys["a"], addresses=[f"{NET}.2/24"])
    b_config.peers.append(PeerConfig(public_key=a_config.public_key, allowed_ips=[f"{NET}.2/32"]))
    start_python_tunnel(lab, b, b_config)
    peer = PeerConfig(public_key=b_config.public_key, allowed_ips=[f"{NET}.1/32"], endpoint=(link.b_address, 51820),
                      persistent_keepalive=1)
    with a.enter():
        child = ChildTunnel(a_config, lab.unique_ifname("wch"), manage_routes=True)
    lab.defer(child.close)
    a.lab_peer, a.link_address = b, link.a_address  # for the overlay datagram test
    return a, child, peer, a_config


def test_child_tunnel__peer_calls_and_traffic__close_reaps_the_child(pair):
    a, child, peer, config = pair
    assert child.public_key == config.public_key and child.listen_port > 0 and child.alive
    child.add_peer(peer)
    assert a.ping(f"{NET}.1", count=2)
    rx, tx = child.peer_counters(peer.public_key)
    assert rx > 0 and tx > 0
    assert [p.public_key for p in child.peers()] == [peer.public_key]
    assert child.peer_counters(b"\1" * 32) is None
    child.tun.ip("-4", "route", "replace", "10.94.0.9/32", "dev", child.tun.name)
    assert "10.94.0.9" in a.run(["ip", "-4", "route", "show", "dev", child.tun.name]).stdout.decode()
    with pytest.raises(Exception):
        child.tun.ip("route", "add", "not-an-address", "dev", child.tun.name)
    pid = child.pid
    child.close()
    assert _gone(pid) and not child.alive
    assert child.tun.name not in a.run(["ip", "link"]).stdout.decode()  # the TUN went with the child
    with pytest.raises(ChildTunnelError):
        child.add_peer(peer)


def test_child_tunnel__overlay_datagrams_both_ways__callback_may_call_the_child(pair):
    """Non-WireGuard datagrams of the child's socket reach the demux callback, which may itself call
    the child (as the overlay does: it answers from its callback)."""
    a, child, peer, _ = pair
    got = []

    def echo(data, source):
        got.append(source)
        child.send_datagram(b"pong:" + data, source)
        child.peers()  # a call from the callback is answered: the reader thread is not the caller

    child.set_demux(echo)
    with a.lab_peer.enter():  # host b: a plain UDP socket, as an overlay peer
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with other:
        other.settimeout(5)
        other.bind((peer.endpoint[0], 0))
        other.sendto(b"ping", (a.link_address, child.listen_port))
        data, _ = other.recvfrom(100)
        assert data == b"pong:ping" and got == [other.getsockname()]


def test_child_tunnel__child_killed__noticed_restarted_with_the_same_key__owner_told(pair):
    a, child, peer, config = pair
    child.add_peer(peer)
    assert a.ping(f"{NET}.1", count=1)
    restored = []
    child.on_restart = lambda: (restored.append(child.pid), child.add_peer(peer))
    first = child.pid
    os.kill(first, signal.SIGKILL)
    assert _wait(lambda: restored, timeout=20)
    assert restored[0] != first and _gone(first)  # reaped by pid, replaced
    assert child.restarts and child.restarts[0]["exit_status"] == -signal.SIGKILL
    assert child.public_key == config.public_key
    assert _wait(lambda: a.ping(f"{NET}.1", count=1), timeout=15)


def test_child_tunnel__parent_dies__child_dies_with_it(lab):
    a = lab.add_host("a")
    script = textwrap.dedent(f"""
        import os, sys
        from agents.wireguard.child import ChildTunnel
        from agents.wireguard.config import InterfaceConfig, generate_private_key
        child = ChildTunnel(InterfaceConfig(private_key=generate_private_key()), {lab.unique_ifname('wch')!r})
        print(child.pid, flush=True)
        os._exit(0)
    """)
    out = subprocess.run(["ip", "netns", "exec", a.name, sys.executable, "-c", script], capture_output=True,
                         text=True, timeout=60, cwd=os.getcwd())
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[-1])
    assert _wait(lambda: _gone(pid), timeout=10), "the child outlived its parent"


def test_child_tunnel__child_cannot_start__error_at_once(pair):
    """A second tunnel on a TUN name in use: the child ends at once and so does the constructor."""
    a, child, _, _ = pair
    started = time.monotonic()
    with a.enter(), pytest.raises(ChildTunnelError, match="exit status"):
        ChildTunnel(InterfaceConfig(private_key=generate_private_key()), child.tun.name)
    assert time.monotonic() - started < 10
