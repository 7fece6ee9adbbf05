"""The dashboard's HTTP face over a fake view, served by real uvicorn on loopback: login, API, controls."""

import json
import stat
import urllib.error
import urllib.request

import pytest

from agents.errors import UserError
from agents.metrics import ListenSettings
from agents.node.dashboard import ensure_token, make_app, serve


class FakeView:
    def __init__(self):
        self.prices = []

    def overview(self):
        return {"chain": {"price_per_gib": "5"}}

    def set_price(self, wei):
        if wei == 13:
            raise UserError("changing the price: the chain refused it (node_registry: updated this epoch)")
        if wei == 14:
            raise RuntimeError("RPC went away")
        self.prices.append(wei)
        return {"message": f"price changed to {wei}", "tx_hash": "0xab"}

    def set_policy(self, raw):
        return {"message": "exit policy changed", "policy": raw}

    def unbond(self):
        return {"message": "unbonding"}


@pytest.fixture
def dashboard(tmp_path):
    view = FakeView()
    token = ensure_token(tmp_path)
    server = serve(ListenSettings(True, ("127.0.0.1", 0)), make_app(view, token))
    yield f"http://127.0.0.1:{server.listen[1]}", token, view
    server.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _call(url, *, token=None, cookie=None, body=None, content_type="application/json"):
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = cookie
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_token_file__0600_and_stable(tmp_path):
    token = ensure_token(tmp_path)
    assert len(token) >= 40 and ensure_token(tmp_path) == token
    assert stat.S_IMODE((tmp_path / "dashboard.token").stat().st_mode) == 0o600


@pytest.mark.parametrize("path", ["/", "/api/overview"])
def test_request_without_token__refused_in_words(dashboard, path):
    base, _, _ = dashboard
    status, _, body = _call(base + path)
    assert status == 401 and b"token" in body
    assert _call(base + path, token="wrong-token-wrong-token")[0] == 401
    assert _call(base + path, cookie="warren_dashboard=wrong")[0] == 401


def test_login__query_token__cookie_set_and_redirected_to_bare_address(dashboard):
    base, token, _ = dashboard
    status, headers, _ = _call(f"{base}/?token={token}")
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    status, _, page = _call(base + "/", cookie=cookie.split(";")[0])
    assert status == 200 and b"Warren node" in page
    assert _call(f"{base}/?token=nope")[0] == 401


def test_overview__bearer__the_view_s_numbers(dashboard):
    base, token, _ = dashboard
    status, _, body = _call(base + "/api/overview", token=token)
    assert status == 200 and json.loads(body) == {"chain": {"price_per_gib": "5"}}


def test_price__changed__view_called_and_confirmed(dashboard):
    base, token, view = dashboard
    status, _, body = _call(base + "/api/price", token=token, body={"price_per_gib": "2_000"})
    assert status == 200 and json.loads(body)["tx_hash"] == "0xab" and view.prices == [2000]


@pytest.mark.parametrize("body, content_type, words", [
    ({"price_per_gib": "abc"}, "application/json", "whole number of token wei"),
    ({"price_per_gib": "-1"}, "application/json", "cannot be negative"),
    (b"price_per_gib=5", "application/x-www-form-urlencoded", "send the change as JSON"),
    ({"price_per_gib": 13}, "application/json", "node_registry: updated this epoch"),
])
def test_price__refused__400_with_the_reason(dashboard, body, content_type, words):
    base, token, view = dashboard
    status, _, answer = _call(base + "/api/price", token=token, body=body, content_type=content_type)
    assert status == 400 and words in json.loads(answer)["error"] and view.prices == []


def test_price__view_fails__500_in_words(dashboard):
    base, token, _ = dashboard
    status, _, answer = _call(base + "/api/price", token=token, body={"price_per_gib": 14})
    assert status == 500 and json.loads(answer)["error"] == "RuntimeError: RPC went away"


def test_unbond__needs_confirm(dashboard):
    base, token, _ = dashboard
    status, _, answer = _call(base + "/api/unbond", token=token, body={})
    assert status == 400 and "confirm" in json.loads(answer)["error"]
    assert _call(base + "/api/unbond", token=token, body={"confirm": True})[0] == 200


def test_serve__port_taken__user_error(dashboard):
    base, token, view = dashboard
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(UserError, match=r"\[dashboard\] listen"):
        serve(ListenSettings(True, ("127.0.0.1", port)), make_app(view, token))
