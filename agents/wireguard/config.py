"""wg-quick configuration files: ``[Interface]`` and ``[Peer]`` sections, loaded and written.

The format is wg-quick(8)'s: INI-like sections, ``Key = value`` lines, case-insensitive keys, ``#``
comments, keys as base64 of 32 bytes, list values separated by commas and accumulated over repeated
lines. Keys Warren does not act on (DNS, Table, PostUp, ...) are kept verbatim and written back.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agents.wireguard.errors import LocalProtocolError

__all__ = [
    "ConfigError",
    "InterfaceConfig",
    "PeerConfig",
    "decode_key",
    "dump",
    "dumps",
    "encode_key",
    "format_endpoint",
    "generate_private_key",
    "load",
    "loads",
    "parse_endpoint",
    "public_key",
]

#: Curve25519 keys and the pre-shared key are 32 bytes (WireGuard paper, section 5.4).
KEY_LENGTH = 32


class ConfigError(LocalProtocolError):
    """A configuration file or value is malformed."""


@dataclasses.dataclass
class PeerConfig:
    """One ``[Peer]`` section."""

    public_key: bytes
    preshared_key: bytes | None = None
    allowed_ips: list[str] = dataclasses.field(default_factory=list)
    endpoint: tuple[str, int] | None = None
    persistent_keepalive: int | None = None
    extra: list[tuple[str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class InterfaceConfig:
    """An ``[Interface]`` section and its peers: one whole configuration file."""

    private_key: bytes
    listen_port: int | None = None
    addresses: list[str] = dataclasses.field(default_factory=list)
    mtu: int | None = None
    peers: list[PeerConfig] = dataclasses.field(default_factory=list)
    extra: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def public_key(self) -> bytes:
        """The public key of :attr:`private_key`."""
        return public_key(self.private_key)


# -- keys ------------------------------------------------------------------------------------------

def generate_private_key() -> bytes:
    """A fresh X25519 private key (32 bytes), as `wg genkey` makes."""
    return os.urandom(KEY_LENGTH)


def public_key(private_key: bytes) -> bytes:
    """The X25519 public key of ``private_key``, as `wg pubkey` computes it."""
    if len(private_key) != KEY_LENGTH:
        raise ConfigError("private key must be 32 bytes")
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)


def encode_key(key: bytes) -> str:
    """Base64, the form keys take in configuration files and on the `wg` command line."""
    return base64.b64encode(key).decode()


def decode_key(text: str) -> bytes:
    """Parse a base64 key. Raises ConfigError unless it is exactly 32 bytes."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"key is not base64: {text!r}") from exc
    if len(key) != KEY_LENGTH:
        raise ConfigError(f"key must be 32 bytes, got {len(key)}")
    return key


# -- endpoints -------------------------------------------------------------------------------------

def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to ``(host, port)``."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"bad endpoint {text!r}")
    return host, int(port)


def format_endpoint(endpoint: tuple[str, int]) -> str:
    """``(host, port)`` to the configuration-file form (brackets around IPv6 literals)."""
    host, port = endpoint[0], endpoint[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _cidrs(value: str, *, strict: bool) -> list[str]:
    out = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            if strict:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            else:
                ipaddress.ip_interface(item)
                out.append(item)
        except ValueError as exc:
            raise ConfigError(f"bad address {item!r}") from exc
    return out


def _int(value: str, key: str, low: int, high: int) -> int:
    if not value.strip().isdigit() or not low <= int(value) <= high:
        raise ConfigError(f"bad {key} {value!r}")
    return int(value)


# -- files -----------------------------------------------------------------------------------------

def loads(text: str) -> InterfaceConfig:
    """Parse the text of a wg-quick configuration file.

    Raises:
        ConfigError: unknown section, a line that is not ``Key = value``, a bad key or value, or no
            ``PrivateKey`` in ``[Interface]``.
    """
    interface: dict[str, object] = {"extra": []}
    peers: list[dict[str, object]] = []
    section: dict[str, object] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            name = line.strip("[]").strip().lower()
            if name == "interface":
                section = interface
            elif name == "peer":
                section = {"extra": [], "allowed_ips": []}
                peers.append(section)
            else:
                raise ConfigError(f"line {number}: unknown section {line!r}")
            continue
        key, sep, value = line.partition("=")
        if not sep or section is None:
            raise ConfigError(f"line {number}: expected 'Key = value' inside a section")
        _set(section, key.strip(), value.strip(), section is interface)
    if "private_key" not in interface:
        raise ConfigError("[Interface] has no PrivateKey")
    out = InterfaceConfig(**interface)  # type: ignore[arg-type]
    for peer in peers:
        if "public_key" not in peer:
            raise ConfigError("[Peer] has no PublicKey")
        out.peers.append(PeerConfig(**peer))  # type: ignore[arg-type]
    return out


def _set(section: dict[str, object], key: str, value: str, is_interface: bool) -> None:
    lower = key.lower()
    if is_interface and lower == "privatekey":
        section["private_key"] = decode_key(value)
    elif is_interface and lower == "listenport":
        section["listen_port"] = _int(value, key, 0, 65535)
    elif is_interface and lower == "address":
        section.setdefault("addresses", []).extend(_cidrs(value, strict=False))  # type: ignore
    elif is_interface and lower == "mtu":
        section["mtu"] = _int(value, key, 576, 65535)
    elif not is_interface and lower == "publickey":
        section["public_key"] = decode_key(value)
    elif not is_interface and lower == "presharedkey":
        section["preshared_key"] = decode_key(value)
    elif not is_interface and lower == "allowedips":
        section["allowed_ips"].extend(_cidrs(value, strict=True))  # type: ignore[union-attr]
    elif not is_interface and lower == "endpoint":
        section["endpoint"] = parse_endpoint(value)
    elif not is_interface and lower == "persistentkeepalive":
        section["persistent_keepalive"] = (None if value.lower() == "off"
                                           else _int(value, key, 0, 65535) or None)
    else:
        section["extra"].append((key, value))  # type: ignore[union-attr]


def load(path: str | os.PathLike) -> InterfaceConfig:
    """Read and parse a configuration file (see :func:`loads`)."""
    return loads(Path(path).read_text())


def dumps(config: InterfaceConfig) -> str:
    """Write ``config`` in wg-quick syntax; :func:`loads` reads it back to an equal object."""
    lines = ["[Interface]", f"PrivateKey = {encode_key(config.private_key)}"]
    if config.listen_port is not None:
        lines.append(f"ListenPort = {config.listen_port}")
    if config.addresses:
        lines.append(f"Address = {', '.join(config.addresses)}")
    if config.mtu is not None:
        lines.append(f"MTU = {config.mtu}")
    lines += [f"{key} = {value}" for key, value in config.extra]
    for peer in config.peers:
        lines += ["", "[Peer]", f"PublicKey = {encode_key(peer.public_key)}"]
        if peer.preshared_key is not None:
            lines.append(f"PresharedKey = {encode_key(peer.preshared_key)}")
        if peer.allowed_ips:
            lines.append(f"AllowedIPs = {', '.join(peer.allowed_ips)}")
        if peer.endpoint is not None:
            lines.append(f"Endpoint = {format_endpoint(peer.endpoint)}")
        if peer.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
        lines += [f"{key} = {value}" for key, value in peer.extra]
    return "\n".join(lines) + "\n"


def dump(config: InterfaceConfig, path: str | os.PathLike) -> None:
    """Write ``config`` to ``path`` with mode 0600 (it holds a private key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(dumps(config))
