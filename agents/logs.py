"""The agents' log lines: one line per event, as text or JSON (`--log-format json`), never a secret.

Why by hand rather than python-json-logger: the whole formatter is a dict and ``json.dumps``; what
matters here is the two rules around it, which no formatter library enforces for us:

* One line per event: a message or a traceback with newlines is escaped (``\\n``), so a log shipper
  (journald, promtail) never splits one event into several or merges two.
* No secrets: a filter replaces every registered secret (the node's WireGuard private key, a
  passphrase the process read) by ``[redacted]`` in the message, its arguments and tracebacks,
  whatever logger printed it (ours, ape's, uvicorn's). The agents never log secrets on purpose; this
  catches an exception text that quotes one.

JSON lines carry ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``msg`` and, for
exceptions, ``exc``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading

__all__ = ["FORMATS", "JsonFormatter", "LineFormatter", "SecretFilter", "add_argument", "add_secret", "configure",
           "protect"]

FORMATS = ("text", "json")
REDACTED = "[redacted]"
#: Shorter strings are not registered: redacting them would garble ordinary words.
_MIN_SECRET = 8


class SecretFilter(logging.Filter):
    """Replaces registered secrets in every record it sees (install it on the handler)."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str | bytes) -> None:
        text = secret.decode(errors="replace") if isinstance(secret, bytes) else str(secret)
        text = text.strip()
        if len(text) >= _MIN_SECRET:
            with self._lock:
                self._secrets.add(text)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        record.msg, record.args = self.scrub(message), None
        if record.exc_info:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


_FILTER = SecretFilter()


def add_secret(secret: str | bytes) -> None:
    """Never print ``secret`` (in any log line of this process from now on)."""
    _FILTER.add(secret)


def protect(spec=None, *keys: bytes) -> None:
    """Register the secrets a node or client holds: raw keys (as hex and as WireGuard base64) and the
    passphrase that ``spec`` (an :class:`agents.wallet.AccountSpec`) points at, if any."""
    import base64

    for key in keys:
        add_secret(key.hex())
        add_secret(base64.b64encode(key).decode())
    if spec is not None:
        from agents.wallet import read_passphrase

        passphrase = read_passphrase(spec)
        if passphrase:
            add_secret(passphrase)


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class LineFormatter(logging.Formatter):
    """``<time> <logger> <LEVEL> <message>`` on one line (tracebacks escaped onto it)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return _one_line(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            event["exc"] = record.exc_text
        return json.dumps(event, default=str)  # json escapes newlines: one line


def configure(level: str = "INFO", fmt: str = "text", stream=None) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr) in ``fmt``, through the secret filter.

    Replaces the root logger's handlers (a second call reconfigures rather than doubles lines).
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LineFormatter())
    handler.addFilter(_FILTER)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a library's warnings are events too: one line, through the filter
    # uvicorn and ape bring their own handlers (ape's prints INFO on stdout): their lines go through
    # ours instead (one format, the secret filter, stderr).
    import ape.logging  # noqa: F401 - installs ape's handler first, so that it is the one removed

    for name in ("ape", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
    return handler


def add_argument(parser) -> None:
    """``--log-level`` and ``--log-format`` on a long-running command."""
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING")
    parser.add_argument("--log-format", choices=FORMATS, default="text",
                        help="text: one line per event; json: one JSON object per line")
