"""The chain RPC as the one exception to the kill switch (as Mullvad's app exempts its API).

`warren connect` needs the chain before any tunnel exists (which nodes are registered, their
prices, a channel to open) and while connected (revocations, a standby's channel, closing). The
kill switch and the full-tunnel routes go up first, so a remote RPC would be unreachable: dropped
by the kill switch and routed into a tunnel that does not exist yet. Mullvad solves the same problem
for its API with an "allowed endpoint"; so does Warren:

* the RPC's host is resolved once, before the kill switch engages (DNS outside the tunnel is
  dropped from then on), and this process keeps using those addresses (:func:`pinned`), so nothing
  asks DNS for it again;
* the kill switch lets TCP to exactly those (address, port) pairs out (:class:`RpcEndpoint`);
* one policy-routing rule per pair sends it by the main table (agents.client.routes
  ``bypass``), ahead of the wg-quick rule that would send it into the tunnel.

What an observer of the uplink learns from it: that this host talks to that RPC (as Mullvad's API
traffic shows a Mullvad user); never a destination of the user's own traffic. An RPC on loopback
(a local light client or node, the lab's bridge) needs no exception at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import socket
import threading
import urllib.parse
from collections.abc import Iterator

from agents.errors import UserError

__all__ = ["RpcEndpoint", "pinned", "rpc_endpoints"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclasses.dataclass(frozen=True)
class RpcEndpoint:
    """The RPC as resolved before the kill switch: its host name and the (address, port) pairs."""

    host: str
    addresses: tuple[str, ...]
    port: int

    @property
    def pairs(self) -> list[tuple[str, int]]:
        """(address, port) for the kill switch's TCP exceptions and the bypass routes."""
        return [(a, self.port) for a in self.addresses]


def rpc_endpoints(url: str, resolve=socket.getaddrinfo) -> RpcEndpoint | None:
    """Resolve the RPC URL's host; None when it is on loopback (nothing to exempt).

    Raises:
        UserError: not an http(s) URL, or its host does not resolve (in plain words; a kill switch
            left engaged by a crashed connection blocks DNS too, so that is named).
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.hostname:
        raise UserError(f"the chain RPC {url!r} is not an http:// or https:// URL")
    try:
        port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    except ValueError:
        raise UserError(f"the chain RPC {url!r} has a bad port") from None
    host = parsed.hostname
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UserError(f"cannot resolve the chain RPC's host {host!r} ({exc}): check the name, or run "
                        "`warren disconnect` if an earlier connection's kill switch is still up") from None
    addresses = tuple(sorted({str(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos}))
    if not addresses:
        raise UserError(f"the chain RPC's host {host!r} has no address")
    if all(ipaddress.ip_address(a).is_loopback for a in addresses):
        return None
    return RpcEndpoint(host, tuple(a for a in addresses if not ipaddress.ip_address(a).is_loopback), port)


_lock = threading.Lock()
_pins: dict[str, tuple[str, ...]] = {}


@contextlib.contextmanager
def pinned(endpoint: RpcEndpoint | None) -> Iterator[None]:
    """Answer ``endpoint.host`` from its resolved addresses in this process while the block runs.

    web3's HTTP session resolves the host for every new connection; once the kill switch is up,
    DNS outside the tunnel is dropped, and asking the node's resolver inside the tunnel would both
    name the RPC to the exit and reach addresses the kill switch does not let out. The standard
    library has no per-host resolver hook (curl's ``--resolve``), hence this narrow wrapper around
    ``socket.getaddrinfo``: every other name resolves as before.
    """
    if endpoint is None:
        yield
        return
    with _lock:
        if not _pins:
            _install()
        _pins[endpoint.host.lower()] = endpoint.addresses
    try:
        yield
    finally:
        with _lock:
            _pins.pop(endpoint.host.lower(), None)


_original_getaddrinfo = socket.getaddrinfo


def _install() -> None:
    if socket.getaddrinfo is not _pinned_getaddrinfo:
        socket.getaddrinfo = _pinned_getaddrinfo


def _pinned_getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - socket's names
    name = host.decode() if isinstance(host, bytes) else host
    addresses = _pins.get(name.lower()) if isinstance(name, str) else None
    if not addresses:
        return _original_getaddrinfo(host, port, family, type, proto, flags)
    out, last = [], None
    for address in addresses:
        try:
            out.extend(_original_getaddrinfo(address, port, family, type, proto, flags | socket.AI_NUMERICHOST))
        except socket.gaierror as exc:  # an IPv6 address asked for with family=AF_INET, say
            last = exc
    if not out and last is not None:
        raise last
    return out
