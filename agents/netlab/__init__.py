"""A network-namespace lab for tests that cross a real Linux network stack.

A :class:`Lab` builds hosts (network namespaces) with unique per-run names, joins them with veth pairs
or through a shared "internet" bridge, puts hosts behind NAT routers of three flavours (full cone,
port-restricted cone, symmetric; see :class:`NatType`), optionally shapes links with ``tc netem``,
spawns processes inside hosts while tracking their PIDs, and on exit removes every process,
namespace, interface and UAPI socket it made. Everything needs root.

Example::

    with Lab() as lab:
        internet = lab.add_internet("198.51.100.0/24")
        server = lab.add_host("server")
        internet.attach(server)                          # 198.51.100.2
        nat = lab.add_nat("home", NatType.SYMMETRIC, internet)
        alice = lab.add_host("alice")
        nat.attach(alice)                                # 192.168.x.2, default route via the NAT
        assert alice.ping(server.address)

WireGuard peers for such a topology (matched configurations, wireguard-go, Warren's Python tunnel
in-process or as a `warren tunnel up` process) come from :mod:`agents.netlab.wireguard`. UDP seen on
a host's interfaces can be captured with :meth:`Namespace.capture_udp`; a thread can create sockets
inside a host with ``with host.enter(): ...``.
"""

from agents.netlab.capture import CapturedDatagram, UdpCapture
from agents.netlab.errors import LabError
from agents.netlab.http_server import make_random_file
from agents.netlab.lab import Internet, Lab, Link, NatRouter, NatType, Namespace
from agents.netlab.nsenter import can_build_namespaces, enter_namespace
from agents.netlab.rpc_bridge import RpcBridge

__all__ = [
    "CapturedDatagram",
    "Internet",
    "Lab",
    "LabError",
    "Link",
    "Namespace",
    "NatRouter",
    "NatType",
    "RpcBridge",
    "UdpCapture",
    "enter_namespace",
    "can_build_namespaces",
    "make_random_file",
]
