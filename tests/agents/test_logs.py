"""Log lines: one per event (text or JSON), secrets replaced wherever they appear."""

import io
import json
import logging

import pytest

from agents import logs


@pytest.fixture
def capture():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    logs.configure("DEBUG", "json", stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def test_json__exception_with_newlines__one_object_per_line(capture):
    log = logging.getLogger("warren.test")
    log.info("first %s", "line\nstill first")
    try:
        raise RuntimeError("boom\nagain")
    except RuntimeError:
        log.exception("second")
    lines = capture.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "first line\nstill first" and first["level"] == "INFO" and first["logger"] == "warren.test"
    assert second["msg"] == "second" and "RuntimeError: boom" in second["exc"]
    assert first["ts"].endswith("+00:00")


def test_text__traceback__escaped_onto_one_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.LineFormatter())
    log = logging.getLogger("warren.test.text")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise ValueError("x")
        except ValueError:
            log.exception("failed\nbadly")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert out.count("\n") == 1 and "failed\\nbadly" in out and "ValueError: x" in out


def test_secret__in_message_args_and_exception__redacted(capture):
    secret = "correct horse battery staple"
    key = bytes(range(32))
    logs.add_secret(secret)
    logs.protect(None, key)
    log = logging.getLogger("warren.test")
    log.warning("passphrase was %s", secret)
    log.info("key %s / %s", key.hex(), __import__("base64").b64encode(key).decode())
    try:
        raise OSError(f"cannot open {secret}")
    except OSError:
        log.exception("oops")
    out = capture.getvalue()
    assert secret not in out and key.hex() not in out and "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" not in out
    assert out.count(logs.REDACTED) == 4


def test_configure__unknown_format__value_error():
    with pytest.raises(ValueError, match="text, json"):
        logs.configure("INFO", "xml")
