"""The dashboard's HTTP face (Starlette): a login token, one page, a JSON API, three controls.

Login: the token is a random 256-bit string in ``<data_dir>/dashboard.token`` (0600, made on first
start; only someone who can read the node's data folder can log in). Open
``http://127.0.0.1:9480/?token=<token>`` once: the server sets an HttpOnly, SameSite=Strict cookie
and redirects to the bare address, so the token leaves the address bar and the history. API calls
carry the cookie, or ``Authorization: Bearer <token>`` (scripts). Anything else gets 401 in words.
The controls take JSON bodies only: a cross-site form cannot send one without a CORS preflight,
which this app never answers, and the cookie is not sent cross-site anyway.

The app knows nothing about the node: it calls a *view* (``overview()``, ``set_price(wei)``,
``set_policy(dict)``, ``unbond()``; :class:`agents.node.dashboard.view.NodeView` in a running
node, a fake in tests). A view raises :class:`agents.errors.UserError` for what the operator can
fix (the message is shown as it is) and anything else for what went wrong; both reach the page in
words, with status 400 or 500.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from agents.errors import UserError

__all__ = ["COOKIE", "TOKEN_FILE", "ensure_token", "make_app"]

log = logging.getLogger("warren.node.dashboard")

TOKEN_FILE = "dashboard.token"
COOKIE = "warren_dashboard"
STATIC = Path(__file__).with_name("static")


def ensure_token(data_dir: str | os.PathLike) -> str:
    """The login token in ``data_dir`` (made, 0600, if missing)."""
    path = Path(data_dir) / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if token:
            os.chmod(path, 0o600)
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.replace(tmp, path)
    return token


def make_app(view, token: str) -> Starlette:
    """The ASGI app over ``view``, logging in with ``token``."""

    def authorized(request: Request) -> bool:
        given = request.cookies.get(COOKIE) or ""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())

    def refused() -> JSONResponse:
        return JSONResponse({"error": "not logged in: open the address with ?token= and the token from the "
                                      "node's data folder (dashboard.token)"}, status_code=401)

    async def index(request: Request) -> Response:
        query = request.query_params.get("token")
        if query is not None:
            if not hmac.compare_digest(query.encode(), token.encode()):
                return refused()
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
            return response
        if not authorized(request):
            return Response("Not logged in. Open this page with ?token=<the token in the node's data folder, "
                            "dashboard.token>.\n", status_code=401, media_type="text/plain")
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return refused()
            try:
                return JSONResponse(await handler(request))
            except UserError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            except Exception as exc:  # noqa: BLE001 - the page shows it in words; the log has the trace
                log.exception("dashboard: %s failed", request.url.path)
                return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)
        return endpoint

    async def body(request: Request) -> dict:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise UserError("send the change as JSON (Content-Type: application/json)")
        try:
            data = await request.json()
        except ValueError:
            raise UserError("the request body is not JSON") from None
        if not isinstance(data, dict):
            raise UserError("the request body must be a JSON object")
        return data

    async def overview(request: Request) -> dict:
        return view.overview()

    async def price(request: Request) -> dict:
        data = await body(request)
        try:
            wei = int(str(data.get("price_per_gib", "")).replace("_", ""))
        except ValueError:
            raise UserError(f"a price is a whole number of token wei per GiB, not {data.get('price_per_gib')!r}") from None
        if wei < 0:
            raise UserError("a price cannot be negative")
        return view.set_price(wei)

    async def policy(request: Request) -> dict:
        data = await body(request)
        if not isinstance(data.get("policy"), dict):
            raise UserError('send {"policy": {...}}: the exit policy as the config file\'s [exit] table')
        return view.set_policy(data["policy"])

    async def unbond(request: Request) -> dict:
        data = await body(request)
        if data.get("confirm") is not True:
            raise UserError('unbonding stops new channels: send {"confirm": true} to go ahead')
        return view.unbond()

    routes = [
        Route("/", index),
        Route("/api/overview", guarded(overview)),
        Route("/api/price", guarded(price), methods=["POST"]),
        Route("/api/policy", guarded(policy), methods=["POST"]),
        Route("/api/unbond", guarded(unbond), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")  # the page's script and style: no secrets
    return app
