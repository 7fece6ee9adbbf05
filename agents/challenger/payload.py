"""The challenge payload: bytes nobody can predict or cache, which anyone can regenerate from the seed.

A challenge pulls ``size`` bytes from the challenger's own HTTP endpoint through the node. The
bytes are the ChaCha20 keystream of a fresh 32-byte seed (RFC 8439's cipher, from `cryptography`:
~1 GB/s, so a payload costs nothing to make or check). The node cannot tell a challenge payload
from any other download (it is indistinguishable from random data, like compressed or encrypted
content), cannot precompute it, and cannot serve it from a cache; a guardian given the seed in the
transcript regenerates the exact bytes the node should have delivered.

The payload is hashed in chunks, so a transcript can say *where* a node changed bytes, and a guardian
can check each claim without the whole download.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["CHUNK_SIZE", "chunk_hashes", "payload", "payload_path", "parse_payload_path"]

#: Bytes per hashed chunk of a payload (64 KiB: a 4 MiB payload has 64 chunk hashes in its transcript).
CHUNK_SIZE = 64 * 1024
#: ChaCha20's 16-byte nonce (counter + nonce in `cryptography`'s layout); fixed, as each seed is used once.
_NONCE = bytes(16)
#: Largest payload an endpoint serves (256 MiB): bounds what one request can make the endpoint do.
MAX_SIZE = 256 * 1024 * 1024


def payload(seed: bytes, size: int, offset: int = 0) -> bytes:
    """Bytes ``offset .. offset + size`` of the payload of ``seed`` (32 bytes)."""
    if len(seed) != 32:
        raise ValueError(f"a payload seed is 32 bytes, not {len(seed)}")
    if size < 0 or offset < 0:
        raise ValueError("payload size and offset must not be negative")
    encryptor = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    if offset:
        encryptor.update(bytes(offset))
    return encryptor.update(bytes(size))


def chunk_hashes(data: bytes, chunk_size: int = CHUNK_SIZE) -> list[str]:
    """SHA-256 (hex) of each ``chunk_size`` piece of ``data`` (the last one may be short)."""
    return [hashlib.sha256(data[i:i + chunk_size]).hexdigest() for i in range(0, len(data), chunk_size)]


def payload_path(seed: bytes, size: int) -> str:
    """The endpoint's URL path of a payload: ``/p/<seed hex>/<size>``."""
    return f"/p/{seed.hex()}/{size}"


def parse_payload_path(path: str) -> tuple[bytes, int]:
    """``(seed, size)`` from a payload path.

    Raises:
        ValueError: not a payload path, or a size above :data:`MAX_SIZE`.
    """
    parts = path.split("?", 1)[0].strip("/").split("/")
    if len(parts) != 3 or parts[0] != "p":
        raise ValueError(f"not a payload path: {path!r}")
    seed, size = bytes.fromhex(parts[1]), int(parts[2])
    if len(seed) != 32 or not 0 <= size <= MAX_SIZE:
        raise ValueError(f"payload seed must be 32 bytes and size at most {MAX_SIZE}")
    return seed, size
