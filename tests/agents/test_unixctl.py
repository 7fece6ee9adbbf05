"""The local control socket: answers, errors, permissions, a dead process."""

import os
import stat

import pytest

from agents.unixctl import ControlServer, NotRunning, request


def test_request__answered_by_handler__socket_is_0600(tmp_path):
    server = ControlServer(tmp_path / "run" / "ctl.sock", lambda body: {"echo": body["x"] * 2})
    try:
        assert request(server.path, {"x": 21}) == {"echo": 42}
        assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(server.path.parent).st_mode) == 0o700
    finally:
        server.close()
    assert not server.path.exists()


def test_request__handler_raises__error_answered(tmp_path):
    def broken(body):
        raise RuntimeError("boom")

    server = ControlServer(tmp_path / "ctl.sock", broken)
    try:
        assert request(server.path, {}) == {"error": "boom"}
    finally:
        server.close()


def test_request__nobody_listening__not_running(tmp_path):
    with pytest.raises(NotRunning):
        request(tmp_path / "absent.sock", {})
