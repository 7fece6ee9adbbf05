"""Identifiers on Warren's 256-bit ring.

A node's position is ``node_id = keccak256(wg_public_key)`` (DESIGN.md, "Identities"), so nobody picks
where they sit. Ids are handled as Python ints in ``[0, 2**256)``; intervals are clockwise and wrap.
"""

from __future__ import annotations

from eth_utils import keccak

from .errors import LocalProtocolError

__all__ = [
    "ID_BITS",
    "RING",
    "node_id_from_wg_key",
    "id_to_bytes",
    "id_from_bytes",
    "distance",
    "in_open",
    "in_half_open",
    "short",
]

ID_BITS = 256  # keccak256 output size
RING = 1 << ID_BITS


def node_id_from_wg_key(wg_public_key: bytes) -> int:
    """The ring position of a node: keccak256 of its 32-byte WireGuard (X25519) public key."""
    if len(wg_public_key) != 32:
        raise LocalProtocolError("overlay: wireguard public key must be 32 bytes")
    return int.from_bytes(keccak(wg_public_key), "big")


def id_to_bytes(node_id: int) -> bytes:
    """Big-endian 32-byte form of an id (the form used on the wire and on chain as bytes32)."""
    return node_id.to_bytes(32, "big")


def id_from_bytes(raw: bytes) -> int:
    """Inverse of :func:`id_to_bytes`."""
    if len(raw) != 32:
        raise LocalProtocolError("overlay: id must be 32 bytes")
    return int.from_bytes(raw, "big")


def distance(a: int, b: int) -> int:
    """Clockwise distance from ``a`` to ``b`` on the ring."""
    return (b - a) % RING


def in_open(x: int, a: int, b: int) -> bool:
    """Whether ``x`` lies in the open clockwise interval ``(a, b)``; ``(a, a)`` is the whole ring but a."""
    if a == b:
        return x != a
    return 0 < (x - a) % RING < (b - a) % RING


def in_half_open(x: int, a: int, b: int) -> bool:
    """Whether ``x`` lies in ``(a, b]`` clockwise; ``(a, a]`` is the whole ring."""
    if a == b:
        return True
    return 0 < (x - a) % RING <= (b - a) % RING


def short(node_id: int) -> str:
    """A short hex label for logs."""
    return f"{node_id >> 224:08x}"
