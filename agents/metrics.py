"""Prometheus endpoints of the node and the client: settings, the HTTP server, the collector glue.

Every figure is read from the agent's own status at scrape time (a custom collector, not counters
incremented beside the code that counts), so a scrape and `warren node status` / `warren status`
can never disagree: they are two views of one set of numbers. prometheus_client does the text format
and the HTTP server; its default registry (process and GC metrics of whoever imports it) is not used,
so an endpoint shows Warren's figures only.

Prometheus values are 64-bit floats: an amount in token wei past 2**53 (0.009 token) is rounded to
about one part in 10**16. Good for graphs and alerts; the exact figures are `warren node earnings`'s.

Config (node and client alike)::

    [metrics]
    enabled = true                  # false: no endpoint
    listen = "127.0.0.1:9470"       # loopback by default: the figures name channels and clients
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Callable, Iterable

from agents.errors import UserError
from agents.tomlconfig import Table

__all__ = ["DEFAULT_CLIENT_PORT", "DEFAULT_NODE_PORT", "ListenSettings", "MetricsServer", "is_loopback",
           "read_listen", "serve"]

log = logging.getLogger("warren.metrics")

#: Default ports (any free loopback port works: change ``[metrics] listen`` when one is taken).
DEFAULT_NODE_PORT = 9470
DEFAULT_CLIENT_PORT = 9471


@dataclasses.dataclass(frozen=True)
class ListenSettings:
    """Where a local HTTP endpoint (metrics, dashboard) listens, or that there is none."""

    enabled: bool = True
    listen: tuple[str, int] = ("127.0.0.1", DEFAULT_NODE_PORT)

    def to_dict(self) -> dict:
        host, port = self.listen
        return {"enabled": self.enabled, "listen": f"[{host}]:{port}" if ":" in host else f"{host}:{port}"}


def read_listen(top: Table, section: str, default_port: int) -> ListenSettings:
    """``[<section>]`` (enabled, listen) of a node or client config file (checked; unknown keys refused)."""
    table = top.table(section)
    enabled = table.boolean("enabled", True)
    listen = table.endpoint("listen", ("127.0.0.1", default_port))
    table.finish()
    return ListenSettings(enabled, tuple(listen))


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class MetricsServer:
    """prometheus_client's HTTP server over one collector; :meth:`close` stops it."""

    def __init__(self, listen: tuple[str, int], collect: Callable[[], Iterable]) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        class _Collector:
            def collect(self):  # noqa: D401 - prometheus_client's collector protocol
                try:
                    yield from collect()
                except Exception:  # noqa: BLE001 - a scrape must not kill the agent; it shows in the log
                    log.exception("metrics: collecting failed")

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector())
        host, port = listen
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.listen = (host, self._server.server_address[1])
        if not is_loopback(host):
            log.warning("metrics are served on %s, not on loopback: anyone who reaches it sees the node's "
                        "channels and clients", host)
        log.info("metrics on http://%s:%d/metrics", *self.listen)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(settings: ListenSettings, collect: Callable[[], Iterable]) -> MetricsServer | None:
    """Start the endpoint (None when ``settings.enabled`` is false).

    Raises:
        UserError: the address cannot be bound (in use, not local).
    """
    if not settings.enabled:
        return None
    try:
        return MetricsServer(settings.listen, collect)
    except OSError as exc:
        host, port = settings.listen
        raise UserError(f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): choose another "
                        f"[metrics] listen address or set [metrics] enabled = false") from None
