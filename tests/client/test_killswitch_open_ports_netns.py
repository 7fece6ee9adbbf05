"""The kill switch's discovery window: the marked tunnel socket may reach any UDP address, others not."""

import socket
import subprocess
import sys

import pytest

from agents.client.killswitch import KillSwitch
from agents.netlab import Lab, can_build_namespaces

pytestmark = [pytest.mark.netns, pytest.mark.skipif(not can_build_namespaces(), reason="needs root (netns)")]

SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if sys.argv[1] == "marked":
    s.setsockopt(socket.SOL_SOCKET, 36, 51820)  # SO_MARK, as the tunnel sets it
s.bind(("0.0.0.0", int(sys.argv[2])))
try:
    s.sendto(b"hello", (sys.argv[3], 9999)); print("sent")
except OSError as exc:
    print("blocked", exc.errno)
"""


def _send(host, how, port, target):
    return host.run([sys.executable, "-c", SEND, how, str(port), target]).stdout.decode().strip()


def test_open_ports__marked_socket_only__and_closed_again():
    with Lab(prefix="wks") as lab:
        internet = lab.add_internet("198.51.100.0/24")
        client, far = lab.add_host("client"), lab.add_host("far")
        internet.attach(client)
        far_address = internet.attach(far)
        ks = KillSwitch(netns=client.name)
        ks.engage(None, [])
        assert _send(client, "marked", 40000, far_address).startswith("blocked")
        ks.set_open_ports([40000])
        assert _send(client, "marked", 40000, far_address) == "sent"
        assert _send(client, "plain", 40000, far_address).startswith("blocked")   # not our socket
        assert _send(client, "marked", 40001, far_address).startswith("blocked")  # not our port
        ks.set_open_ports([])
        assert _send(client, "marked", 40000, far_address).startswith("blocked")
        ks.release()
        assert not ks.engaged()
