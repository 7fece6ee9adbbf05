"""uvicorn serving the dashboard from a thread of `warren node run` (loopback by default)."""

from __future__ import annotations

import logging
import socket
import threading

from agents.errors import UserError
from agents.metrics import ListenSettings, is_loopback

__all__ = ["DashboardServer", "serve"]

log = logging.getLogger("warren.node.dashboard")


class DashboardServer:
    """One uvicorn server on an already bound socket (so a bind error is ours to word), in a thread."""

    def __init__(self, app, listen: tuple[str, int]) -> None:
        import uvicorn

        host, port = listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
            self._sock.listen(128)  # now: connections queue until uvicorn accepts, and the port is taken
        except OSError as exc:
            self._sock.close()
            raise UserError(f"cannot serve the dashboard on {host}:{port} ({exc.strerror or exc}): choose another "
                            f"[dashboard] listen address or set [dashboard] enabled = false") from None
        self.listen = (host, self._sock.getsockname()[1])
        # log_config=None: uvicorn's lines go through agents.logs (one format, secrets filtered: the
        # login address carries the token in its query).
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="dashboard", daemon=True)
        self._thread.start()
        if not is_loopback(host):
            log.warning("the dashboard is served on %s, not on loopback: only the token keeps others out", host)
        log.info("dashboard on http://%s:%d/ (log in with the token in dashboard.token)", *self.listen)

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


def serve(settings: ListenSettings, app) -> DashboardServer | None:
    """Start the dashboard (None when ``settings.enabled`` is false)."""
    if not settings.enabled:
        return None
    return DashboardServer(app, settings.listen)
