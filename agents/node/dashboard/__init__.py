"""The node's dashboard: a local page served by `warren node run` (see :mod:`.app` and :mod:`.view`)."""

from __future__ import annotations

from agents.node.dashboard.app import TOKEN_FILE, ensure_token, make_app
from agents.node.dashboard.server import DashboardServer, serve
from agents.node.dashboard.view import NodeView

__all__ = ["TOKEN_FILE", "DashboardServer", "NodeView", "ensure_token", "make_app", "serve", "start"]


def start(config, config_path=None, **parts) -> DashboardServer | None:
    """Serve the dashboard of a running node (None when ``[dashboard] enabled = false``).

    ``parts``: the node's contracts, chain, agent, store, settler, exit_table and presence
    (:class:`NodeView`'s keywords). The login token is registered as a secret: no log line shows it.
    """
    if not config.dashboard.enabled:
        return None
    from agents import logs

    token = ensure_token(config.data_dir)
    logs.add_secret(token)
    view = NodeView(config=config, config_path=config_path, **parts)
    return serve(config.dashboard, make_app(view, token))
