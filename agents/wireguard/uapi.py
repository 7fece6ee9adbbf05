"""The cross-platform userspace API (UAPI) of WireGuard: a line protocol on a Unix socket.

wireguard-go (and our own :class:`~agents.wireguard.runtime.Tunnel`) listen on
``/var/run/wireguard/<ifname>.sock``. A request is ``get=1`` or ``set=1`` followed by ``key=value``
lines and an empty line; the reply is ``key=value`` lines ending with ``errno=N`` and an empty line.
Keys are hex-encoded (https://www.wireguard.com/xplatform/). This module holds the client
(:class:`UapiClient`), the system backend built on it (:class:`UapiBackend`), the serialisation both
sides share, and a launcher for wireguard-go in the foreground so the caller owns its PID.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence

from agents.wireguard.backend import PeerStats, TunnelBackend
from agents.wireguard.config import InterfaceConfig, PeerConfig, format_endpoint, parse_endpoint
from agents.wireguard.config import public_key as derive_public_key
from agents.wireguard.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DeviceInfo",
    "SOCKET_DIR",
    "UapiBackend",
    "UapiClient",
    "format_get",
    "parse_get",
    "peer_set_lines",
    "socket_path",
    "start_wireguard_go",
]

#: wireguard-go's UAPI folder (ipc/uapi_linux.go); shared by every network namespace.
SOCKET_DIR = "/var/run/wireguard"
#: wireguard-go refuses to run where it believes the kernel has WireGuard unless this is set
#: (main.go, ENV_WG_PROCESS_FOREGROUND's neighbour); this kernel has no WireGuard module.
WG_GO_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
#: How long to wait for a freshly started wireguard-go to open its socket (seconds).
START_TIMEOUT_S = 10.0


def socket_path(ifname: str, socket_dir: str = SOCKET_DIR) -> str:
    """``/var/run/wireguard/<ifname>.sock``."""
    return os.path.join(socket_dir, f"{ifname}.sock")


@dataclasses.dataclass
class DeviceInfo:
    """A parsed ``get=1`` reply."""

    private_key: bytes | None
    listen_port: int
    peers: list[PeerStats]

    @property
    def public_key(self) -> bytes | None:
        """Derived from the private key, as `wg show` does."""
        return derive_public_key(self.private_key) if self.private_key else None


# -- serialisation ---------------------------------------------------------------------------------

def format_get(private_key: bytes, listen_port: int, peers: Iterable[PeerStats],
               preshared: Callable[[bytes], bytes | None] = lambda pk: None) -> str:
    """The body of a ``get=1`` reply (without the final ``errno=0``)."""
    lines = [f"private_key={private_key.hex()}", f"listen_port={listen_port}"]
    for peer in peers:
        lines.append(f"public_key={peer.public_key.hex()}")
        psk = preshared(peer.public_key)
        lines.append(f"preshared_key={(psk or bytes(32)).hex()}")
        lines.append("protocol_version=1")
        if peer.endpoint:
            lines.append(f"endpoint={format_endpoint(peer.endpoint)}")
        seconds = peer.last_handshake or 0.0
        lines.append(f"last_handshake_time_sec={int(seconds)}")
        lines.append(f"last_handshake_time_nsec={int((seconds - int(seconds)) * 1e9)}")
        lines.append(f"tx_bytes={peer.tx_bytes}")
        lines.append(f"rx_bytes={peer.rx_bytes}")
        lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive or 0}")
        lines += [f"allowed_ip={cidr}" for cidr in peer.allowed_ips]
    return "".join(line + "\n" for line in lines)


def parse_get(text: str) -> DeviceInfo:
    """Parse a ``get=1`` reply.

    Raises:
        RemoteProtocolError: the reply carries a non-zero errno or a malformed line.
    """
    private_key, port = None, 0
    peers: list[dict] = []
    for line in text.splitlines():
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise RemoteProtocolError("uapi_malformed", line)
        if key == "errno":
            if value != "0":
                raise RemoteProtocolError("uapi_errno", value)
        elif key == "private_key":
            private_key = bytes.fromhex(value)
        elif key == "listen_port":
            port = int(value)
        elif key == "public_key":
            peers.append({"public_key": bytes.fromhex(value), "allowed_ips": [], "rx": 0,
                          "tx": 0, "sec": 0, "nsec": 0, "endpoint": None, "keepalive": 0})
        elif peers:
            peer = peers[-1]
            if key == "endpoint":
                peer["endpoint"] = parse_endpoint(value)
            elif key == "allowed_ip":
                peer["allowed_ips"].append(value)
            elif key in ("rx_bytes", "tx_bytes"):
                peer[key[:2]] = int(value)
            elif key == "last_handshake_time_sec":
                peer["sec"] = int(value)
            elif key == "last_handshake_time_nsec":
                peer["nsec"] = int(value)
            elif key == "persistent_keepalive_interval":
                peer["keepalive"] = int(value)
    return DeviceInfo(private_key, port, [
        PeerStats(
            public_key=p["public_key"], endpoint=p["endpoint"], allowed_ips=tuple(p["allowed_ips"]),
            last_handshake=(p["sec"] + p["nsec"] / 1e9) if p["sec"] else None,
            rx_bytes=p["rx"], tx_bytes=p["tx"], persistent_keepalive=p["keepalive"] or None)
        for p in peers])


def peer_set_lines(peer: PeerConfig, *, replace_allowed_ips: bool = True) -> list[str]:
    """The ``set=1`` lines that add or update ``peer``."""
    lines = [f"public_key={peer.public_key.hex()}"]
    if peer.preshared_key is not None:
        lines.append(f"preshared_key={peer.preshared_key.hex()}")
    if peer.endpoint is not None:
        lines.append(f"endpoint={format_endpoint(peer.endpoint)}")
    lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive or 0}")
    if replace_allowed_ips:
        lines.append("replace_allowed_ips=true")
    lines += [f"allowed_ip={ipaddress.ip_network(c, strict=False)}" for c in peer.allowed_ips]
    return lines


# -- client ----------------------------------------------------------------------------------------

class UapiClient:
    """Talks to one interface's UAPI socket (one connection per request, as `wg` does).

    Args:
        ifname: interface name; the socket is ``<socket_dir>/<ifname>.sock``.
        socket_dir: folder of UAPI sockets.
        timeout: seconds per request.
    """

    def __init__(self, ifname: str, socket_dir: str = SOCKET_DIR, timeout: float = 5.0) -> None:
        self.ifname = ifname
        self.path = socket_path(ifname, socket_dir)
        self.timeout = timeout

    def _request(self, body: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except OSError as exc:
                raise LocalProtocolError(f"no UAPI socket at {self.path}: {exc}") from exc
            sock.sendall(body.encode())
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"".join(chunks[-2:]).endswith(b"\n\n") and b"errno=" in b"".join(chunks):
                    break
        return b"".join(chunks).decode()

    def get(self) -> DeviceInfo:
        """The device's keys, port and peers with counters."""
        return parse_get(self._request("get=1\n\n"))

    def set(self, lines: Sequence[str]) -> None:
        """Send a ``set=1`` request made of ``lines``.

        Raises:
            RemoteProtocolError: the interface answered with a non-zero errno.
        """
        reply = self._request("set=1\n" + "".join(line + "\n" for line in lines) + "\n")
        if "errno=0" not in reply:
            raise RemoteProtocolError("uapi_errno", reply.strip())


class UapiBackend(TunnelBackend):
    """The system WireGuard (kernel module or wireguard-go) driven through its UAPI socket.

    Args:
        ifname: the interface's name.
        process: the wireguard-go process, if we started it (then :meth:`close` stops it by PID).
        socket_dir: folder of UAPI sockets.
    """

    def __init__(self, ifname: str, process: subprocess.Popen | None = None,
                 socket_dir: str = SOCKET_DIR) -> None:
        self.ifname = ifname
        self.client = UapiClient(ifname, socket_dir)
        self.process = process

    def configure(self, config: InterfaceConfig, *, replace_peers: bool = True) -> None:
        """Apply an ``[Interface]`` (private key, port) and its peers."""
        lines = [f"private_key={config.private_key.hex()}"]
        if config.listen_port is not None:
            lines.append(f"listen_port={config.listen_port}")
        if replace_peers:
            lines.append("replace_peers=true")
        for peer in config.peers:
            lines += peer_set_lines(peer)
        self.client.set(lines)

    @property
    def public_key(self) -> bytes:
        key = self.client.get().public_key
        if key is None:
            raise LocalProtocolError(f"{self.ifname} has no private key yet")
        return key

    @property
    def listen_port(self) -> int:
        return self.client.get().listen_port

    def add_peer(self, peer: PeerConfig) -> None:
        self.client.set(peer_set_lines(peer))

    def remove_peer(self, public_key: bytes) -> None:
        self.client.set([f"public_key={public_key.hex()}", "remove=true"])

    def peers(self) -> list[PeerStats]:
        return self.client.get().peers

    def close(self) -> None:
        """Stop wireguard-go if we started it (SIGTERM by PID, then SIGKILL)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)


def start_wireguard_go(ifname: str, config: InterfaceConfig | None = None, *,
                       popen: Callable[..., subprocess.Popen] = subprocess.Popen,
                       socket_dir: str = SOCKET_DIR) -> UapiBackend:
    """Run ``wireguard-go -f <ifname>`` (foreground, so the PID is ours) and configure it.

    Args:
        ifname: a name unique across namespaces (the UAPI folder is shared).
        config: applied through UAPI once the socket appears (addresses are the caller's business:
            they belong to the namespace, e.g. ``ip -n NS addr add ... dev <ifname>``).
        popen: how to start the process, e.g. ``Namespace.spawn`` to run it inside a namespace; it is
            called as ``popen(argv, env=..., stdout=..., stderr=...)``.

    Raises:
        LocalProtocolError: the process exited or no socket appeared within START_TIMEOUT_S.
    """
    env = dict(os.environ, **WG_GO_ENV)
    proc = popen(["wireguard-go", "-f", ifname], env=env, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
    backend = UapiBackend(ifname, proc, socket_dir)
    path = socket_path(ifname, socket_dir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            backend.close()
            raise LocalProtocolError(f"wireguard-go {ifname} did not start (exit {proc.returncode})")
        time.sleep(0.02)
    if config is not None:
        backend.configure(config)
    return backend
