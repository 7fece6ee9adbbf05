"""Reading and writing Warren's TOML config files, with errors that name file, key, expectation and finding.

The node's and the client's configs (agents/node/config.py, agents/client/config.py) are read
through :class:`Table`, a checked view on one TOML table: each getter names the key and what it
expects, so a bad file fails at load with ``node.toml: [settlement] threshold: expected "auto" or a
whole number of token wei, found -3`` rather than deep inside the agent. :meth:`Table.finish`
refuses keys nobody read (with a "did you mean" for typos), so a misspelt key never silently falls
back to a default.

Token amounts are whole token wei; TOML's integers stop at 2**63 (about 9.2 tokens), so amounts are
also accepted, and written when that large, as strings of digits.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tempfile
import tomllib
from pathlib import Path

import tomli_w

from agents.errors import UserError

__all__ = ["ConfigError", "Table", "parse_endpoint", "read_toml", "wei_to_toml", "write_toml"]

#: Configs hold paths to secrets: only the owner reads them.
FILE_MODE = 0o600
#: TOML integers are signed 64-bit (toml.io, "Integer"); larger amounts are written as strings.
_TOML_INT_MAX = 2**63 - 1


class ConfigError(UserError):
    """A config file is missing, malformed or holds a value we cannot use (the message says which)."""


def read_toml(path: str | os.PathLike) -> dict:
    """Parse a TOML file; malformed TOML gives a ConfigError with tomllib's line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def write_toml(path: str | os.PathLike, data: dict, force: bool = False) -> None:
    """Write ``data`` as TOML atomically (temporary file in the same folder, fsync, rename), mode 0600.

    Raises:
        ConfigError: the file exists and ``force`` is false.
    """
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"config file {path} already exists: pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            tomli_w.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def wei_to_toml(amount: int) -> int | str:
    """A token amount as TOML can hold it: an integer, or a string of digits past 2**63."""
    return amount if amount <= _TOML_INT_MAX else str(amount)


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to ``(host, port)``; raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(text)
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(text)
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif ":" in host:
        raise ValueError(text)  # a bare IPv6 address needs brackets
    return host, int(port)


_MISSING = object()


class Table:
    """A checked view on one TOML table (see the module docstring).

    Args:
        path: the file (named in every error).
        raw: the parsed table.
        section: its name (``"settlement"``), or None for the top level.
    """

    def __init__(self, path: Path, raw: dict, section: str | None = None) -> None:
        self.path = Path(path)
        self.raw = raw
        self.section = section
        self._used: set[str] = set()

    def where(self, key: str) -> str:
        """How errors name ``key``: ``[settlement] threshold`` or ``price_per_gib``."""
        return f"[{self.section}] {key}" if self.section else key

    def fail(self, key: str, expected: str, found: object = _MISSING) -> ConfigError:
        """The error for ``key``: what was expected and what was found (or that it is missing)."""
        if found is _MISSING:
            return ConfigError(f"{self.path}: missing key {self.where(key)} ({expected})")
        return ConfigError(f"{self.path}: {self.where(key)}: expected {expected}, found {found!r}")

    def _get(self, key: str, default, expected: str):
        self._used.add(key)
        if key in self.raw:
            return self.raw[key]
        if default is _MISSING:
            raise self.fail(key, expected)
        return default

    def has(self, key: str) -> bool:
        """Whether the file sets ``key``."""
        return key in self.raw

    def string(self, key: str, default=_MISSING, expected: str = "a string"):
        """A non-empty string (or the default)."""
        value = self._get(key, default, expected)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str) or not value:
            raise self.fail(key, expected, value)
        return value

    def wei(self, key: str, default=_MISSING, expected: str = "a whole number of token wei >= 0"):
        """A non-negative integer, also given as a string of digits (TOML ints stop at 2**63)."""
        value = self._get(key, default, expected)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, str) and value.strip().replace("_", "").isdigit():
            return int(value.strip().replace("_", ""))
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(key, expected, value)
        return value

    def integer(self, key: str, default=_MISSING, low: int = 0, high: int | None = None):
        """An integer in ``[low, high]``."""
        expected = f"a whole number >= {low}" + (f" and <= {high}" if high is not None else "")
        value = self._get(key, default, expected)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            raise self.fail(key, expected, value)
        return value

    def number(self, key: str, default=_MISSING, positive: bool = True):
        """A float or integer (> 0 when ``positive``, else >= 0), returned as float."""
        expected = "a number > 0" if positive else "a number >= 0"
        value = self._get(key, default, expected)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (positive and value == 0) \
                or value != value or value == float("inf"):
            raise self.fail(key, expected, value)
        return float(value)

    def boolean(self, key: str, default=_MISSING):
        """true or false."""
        value = self._get(key, default, "true or false")
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def path_(self, key: str, default=_MISSING, base: Path | None = None):
        """A path; relative paths are taken from ``base`` (the config file's folder)."""
        value = self._get(key, default, "a path")
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str) or not value:
            raise self.fail(key, "a path", value)
        path = Path(value).expanduser()
        return path if path.is_absolute() or base is None else base / path

    def endpoint(self, key: str, default=_MISSING):
        """``"host:port"`` (``"[v6]:port"``) as ``(host, port)``."""
        expected = 'an endpoint "host:port" (IPv6 as "[addr]:port")'
        value = self._get(key, default, expected)
        if value is default and default is not _MISSING:
            return value
        try:
            return parse_endpoint(value) if isinstance(value, str) else _raise()
        except ValueError:
            raise self.fail(key, expected, value) from None

    def endpoints(self, key: str, default=()):
        """A list of ``"host:port"`` as a tuple of ``(host, port)``."""
        expected = 'a list of endpoints "host:port"'
        value = self._get(key, default, expected)
        if value is default:
            return tuple(value)
        if not isinstance(value, list):
            raise self.fail(key, expected, value)
        out = []
        for item in value:
            try:
                out.append(parse_endpoint(item) if isinstance(item, str) else _raise())
            except ValueError:
                raise self.fail(key, expected, item) from None
        return tuple(out)

    def network(self, key: str, default=_MISSING, version: int | None = None, strict: bool = True):
        """A CIDR (IPv4 or IPv6, or only ``version``), normalised to its string form."""
        kind = {4: "an IPv4 CIDR", 6: "an IPv6 CIDR", None: "a CIDR"}[version]
        expected = f"{kind} such as " + ("10.77.0.0/16" if version != 6 else "fd77:7272::/64")
        value = self._get(key, default, expected)
        if value is default and default is not _MISSING:
            return value
        try:
            net = ipaddress.ip_network(value, strict=strict) if isinstance(value, str) else _raise()
        except ValueError:
            raise self.fail(key, expected, value) from None
        if version is not None and net.version != version:
            raise self.fail(key, expected, value)
        return str(net)

    def networks(self, key: str, default=()):
        """A list of CIDRs (either family), as a tuple of strings."""
        expected = "a list of CIDRs"
        value = self._get(key, default, expected)
        if value is default:
            return tuple(value)
        if not isinstance(value, list):
            raise self.fail(key, expected, value)
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)) if isinstance(item, str) else _raise())
            except ValueError:
                raise self.fail(key, expected, item) from None
        return tuple(out)

    def table(self, key: str) -> Table:
        """A sub-table (empty if absent) as a Table of its own (call its :meth:`finish` too)."""
        value = self._get(key, {}, "a table")
        if not isinstance(value, dict):
            raise self.fail(key, f"a table [{key}]", value)
        return Table(self.path, value, key if self.section is None else f"{self.section}.{key}")

    def raw_table(self, key: str) -> dict:
        """A sub-table as a plain dict (another module validates it)."""
        value = self._get(key, {}, "a table")
        if not isinstance(value, dict):
            raise self.fail(key, f"a table [{key}]", value)
        return value

    def finish(self) -> None:
        """Refuse keys nobody asked for (typos would otherwise fall back to defaults silently)."""
        unknown = [k for k in self.raw if k not in self._used]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, sorted(self._used), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known keys: {', '.join(sorted(self._used))})"
            raise ConfigError(f"{self.path}: unknown key {self.where(key)}{hint}")


def _raise():
    raise ValueError
