"""WireGuard peers in the lab: matched configurations, wireguard-go and Python tunnels in namespaces.

These helpers are what the interoperability tests and ``scripts/bench_tunnel.py`` share: make two
configurations that point at each other, then start either side as wireguard-go (the reference) or
as Warren's Python tunnel, in-process (:func:`start_python_tunnel`: the test can read the core's
counters) or as its own process (:func:`spawn_python_tunnel`: its own interpreter and GIL, as
``warren tunnel up`` runs in production).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import subprocess
import sys
import time

from agents.netlab.errors import LabError
from agents.netlab.lab import Lab, Namespace
from agents.wireguard.config import InterfaceConfig, PeerConfig, dump, generate_private_key
from agents.wireguard.uapi import UapiBackend, UapiClient, socket_path, start_wireguard_go

__all__ = ["A_TUNNEL", "B_TUNNEL", "PythonProcess", "start_python_tunnel", "spawn_python_tunnel", "start_wireguard_go_in",
           "tunnel_pair"]

#: WireGuard's conventional port (wg-quick examples; IANA has none).
WG_PORT = 51820
#: Tunnel addresses :func:`tunnel_pair` gives A and B with its default subnet.
A_TUNNEL, B_TUNNEL = "10.77.0.1", "10.77.0.2"
#: Seconds to wait for a spawned `warren tunnel up` to open its UAPI socket.
SPAWN_TIMEOUT_S = 20.0


def tunnel_pair(a_host: str | None, b_host: str | None, *, psk: bool = False,
                subnet: str = "10.77.0.0/24", a_port: int = WG_PORT, b_port: int = WG_PORT + 1,
                keepalive: int | None = None) -> tuple[InterfaceConfig, InterfaceConfig]:
    """Two configurations that are each other's peer.

    Args:
        a_host: where B reaches A (None: B waits to hear from A, A must initiate).
        b_host: where A reaches B.
        psk: give both the same random pre-shared key.
        subnet: tunnel addresses: A is .1, B is .2, each allowing the other's /32.
        a_port / b_port: listen ports.
        keepalive: persistent keepalive of both, seconds.

    Returns:
        (config of A, config of B).
    """
    net = ipaddress.IPv4Network(subnet)
    hosts = net.hosts()
    a_ip, b_ip = str(next(hosts)), str(next(hosts))
    a_key, b_key = generate_private_key(), generate_private_key()
    shared = os.urandom(32) if psk else None
    a = InterfaceConfig(private_key=a_key, listen_port=a_port, addresses=[f"{a_ip}/{net.prefixlen}"])
    b = InterfaceConfig(private_key=b_key, listen_port=b_port, addresses=[f"{b_ip}/{net.prefixlen}"])
    a.peers.append(PeerConfig(public_key=b.public_key, preshared_key=shared,
                              allowed_ips=[f"{b_ip}/32"],
                              endpoint=(b_host, b_port) if b_host else None,
                              persistent_keepalive=keepalive))
    b.peers.append(PeerConfig(public_key=a.public_key, preshared_key=shared,
                              allowed_ips=[f"{a_ip}/32"],
                              endpoint=(a_host, a_port) if a_host else None,
                              persistent_keepalive=keepalive))
    return a, b


def _configure_link(ns: Namespace, ifname: str, config: InterfaceConfig) -> None:
    for cidr in config.addresses:
        ns.ip("addr", "add", cidr, "dev", ifname)
    ns.ip("link", "set", ifname, "mtu", str(config.mtu or 1420), "up")


def start_wireguard_go_in(lab: Lab, ns: Namespace, config: InterfaceConfig) -> UapiBackend:
    """Run wireguard-go in ``ns`` under a unique interface name, configured and up."""
    name = lab.unique_ifname("wgo")
    lab.track_file(socket_path(name))
    backend = start_wireguard_go(name, config, popen=ns.spawn)
    lab.defer(backend.close)
    _configure_link(ns, name, config)
    return backend


def start_python_tunnel(lab: Lab, ns: Namespace, config: InterfaceConfig, *,
                        time_scale: float = 1.0, offloads: bool | None = None):
    """Warren's tunnel in this process, its TUN device and socket inside ``ns``; started.

    Returns:
        The running :class:`~agents.wireguard.runtime.Tunnel` (the lab closes it at cleanup).
    """
    from agents.wireguard.runtime import Tunnel

    name = lab.unique_ifname("wpy")
    lab.track_file(socket_path(name))
    with ns.enter():
        tunnel = Tunnel(config, name, time_scale=time_scale, offloads=offloads)
    lab.defer(tunnel.close)
    return tunnel.start()


@dataclasses.dataclass
class PythonProcess:
    """A `warren tunnel up` process in a namespace.

    Attributes:
        process: the process (the lab stops it by PID at cleanup).
        ifname: its TUN interface (and UAPI socket) name.
        uapi: a client of its UAPI socket.
        log_path: the file its stderr (the runtime's log) goes to.
    """

    process: subprocess.Popen
    ifname: str
    uapi: UapiClient
    log_path: str


def spawn_python_tunnel(lab: Lab, ns: Namespace, config: InterfaceConfig, workdir: str, *,
                        time_scale: float = 1.0) -> PythonProcess:
    """Run ``python -m agents.cli tunnel up`` in ``ns`` (its own interpreter) and wait until it serves.

    Its configuration and its log (stderr) are files in ``workdir``: a pipe nobody drains would fill
    after 64 KiB of log lines and then block the tunnel's threads on their next log call.

    Raises:
        LabError: it exited or did not open its UAPI socket within SPAWN_TIMEOUT_S.
    """
    name = lab.unique_ifname("wpy")
    path = os.path.join(workdir, f"{name}.conf")
    log_path = os.path.join(workdir, f"{name}.log")
    dump(config, path)
    lab.track_file(socket_path(name))
    with open(log_path, "wb") as log:
        proc = ns.spawn([sys.executable, "-m", "agents.cli", "tunnel", "up", "--config", path,
                         "--ifname", name, "--status-interval", "0", "--time-scale", str(time_scale)],
                        stderr=log)
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not os.path.exists(socket_path(name)):
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(log_path, "rb") as log:
                err = log.read().decode(errors="replace")
            raise LabError(f"warren tunnel up in {ns.short} did not start: {err[-2000:]}")
        time.sleep(0.05)
    return PythonProcess(proc, name, UapiClient(name), log_path)
