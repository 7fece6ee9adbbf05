"""IPv6 on a lab world, added on demand (the smallest addition that lets an exit carry IPv6).

    v6 = add_ipv6(world, nodes)
    run_in(world.client, ["python3", "-c", "..."])   # http://[v6.web]/blob.bin through the tunnel

:func:`add_ipv6` gives the internet a documentation prefix (RFC 3849's ``2001:db8::/32``, which no
exit policy refuses): the web server gets an address on it and a second lab HTTP server bound there
(same file), each public node an address on the same link; a node behind a NAT router gets what a
home line gets, a routed /64 of its own behind its router (IPv6 without NAT: the router forwards,
its nftables NAT table is IPv4 only), and the web server a route to it. Each exit masquerades its
clients' IPv6 to its own address (agents.node.exit), so the web server's view of a connection's
source says which exit carried it (:attr:`WorldV6.exit_of`).

Nothing to undo by hand: the addresses, routes and sysctl go with the namespaces, and the server is
stopped by PID at the lab's cleanup (:func:`agents.netlab.world.spawn_in`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import sys
import time
from collections.abc import Sequence

from agents.netlab import LabError, Namespace
from agents.netlab.world import FILE_NAME, READY_S, NodeHost, World, spawn_in

__all__ = ["INTERNET_V6", "WorldV6", "add_ipv6"]

#: The lab internet's IPv6 prefix (RFC 3849 documentation space).
INTERNET_V6 = ipaddress.IPv6Network("2001:db8:77::/64")
#: Home prefixes behind NAT routers: ``2001:db8:78:<n>::/64`` for the n-th NATed node.
HOME_V6 = "2001:db8:78:{}::/64"
#: The web server's host number on the internet prefix (the nodes take 0x100 on).
WEB_HOST = 0xA


@dataclasses.dataclass(frozen=True)
class WorldV6:
    """The IPv6 addresses :func:`add_ipv6` gave.

    Attributes:
        web: the web server's address (its HTTP server on port 80 serves the world's file).
        web_ifname: the web server's interface on the internet (where a capture sees every source).
        nodes: node name -> the address its exit's traffic leaves from (its masquerade source).
    """

    web: str
    web_ifname: str
    nodes: dict[str, str]

    @property
    def file_url(self) -> str:
        """``http://[web]/blob.bin``."""
        return f"http://[{self.web}]/{FILE_NAME}"

    def exit_of(self, source: str) -> str | None:
        """The node whose exit a connection with this source address (as the web server sees it)
        came through, or None."""
        source = str(ipaddress.IPv6Address(source))
        return next((name for name, address in self.nodes.items() if address == source), None)


def _ifname_of(ns: Namespace, address: str) -> str:
    """The interface holding IPv4 ``address`` in ``ns``."""
    for line in ns.run(["ip", "-o", "-4", "addr", "show"]).stdout.decode().splitlines():
        fields = line.split()
        if fields[3].split("/")[0] == address:
            return fields[1]
    raise LabError(f"no interface of {ns.short} holds {address}")


def _add(ns: Namespace, address: str, prefixlen: int, ifname: str) -> None:
    # nodad: the lab's addresses are unique by construction, and a tentative address would refuse
    # to be a source for the first second or so
    ns.ip("-6", "addr", "add", f"{address}/{prefixlen}", "dev", ifname, "nodad")


def add_ipv6(world: World, nodes: Sequence[NodeHost]) -> WorldV6:
    """IPv6 for the web server and ``nodes`` of ``world`` (see the module docstring).

    Raises:
        LabError: a command failed or the web server's IPv6 HTTP server did not start.
    """
    web, web_ifname = str(INTERNET_V6[WEB_HOST]), _ifname_of(world.web, world.web_address)
    _add(world.web, web, INTERNET_V6.prefixlen, web_ifname)
    out: dict[str, str] = {}
    homes = 0
    for number, node in enumerate(nodes):
        public = str(INTERNET_V6[0x100 + number])
        if node.nat is None:
            _add(node.ns, public, INTERNET_V6.prefixlen, _ifname_of(node.ns, node.address))
            out[node.name] = public
            continue
        router, home = node.nat.namespace, ipaddress.IPv6Network(HOME_V6.format(homes))
        homes += 1
        router.sysctl("net.ipv6.conf.all.forwarding", 1)
        _add(router, public, INTERNET_V6.prefixlen, _ifname_of(router, node.nat.public_address))
        _add(router, str(home[1]), home.prefixlen, _ifname_of(router, node.nat.lan_gateway))
        _add(node.ns, str(home[2]), home.prefixlen, _ifname_of(node.ns, node.address))
        node.ns.ip("-6", "route", "add", "default", "via", str(home[1]))
        world.web.ip("-6", "route", "add", str(home), "via", public)
        out[node.name] = str(home[2])
    proc = spawn_in(world.web, [sys.executable, "-m", "agents.netlab.http_server", "--bind", web, "--port", "80",
                                "--file", f"{FILE_NAME}={world.file_path}"])
    deadline = time.monotonic() + READY_S
    while True:
        if proc.poll() is not None:
            raise LabError(f"the IPv6 HTTP server on {web} exited {proc.returncode}")
        with world.web.enter():
            sock = socket.socket(socket.AF_INET6)
        with sock:
            sock.settimeout(1.0)
            if sock.connect_ex((web, 80)) == 0:
                break
        if time.monotonic() > deadline:
            raise LabError(f"nothing listens on [{web}]:80 after {READY_S} s")
        time.sleep(0.05)
    return WorldV6(web, web_ifname, out)
