"""Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, exactly as the WireGuard paper (section 5.4) instantiates it.

Primitives (paper section 5.4, "Protocol & Cryptography"):

- ``HASH(x)``: BLAKE2s-256 (hashlib);
- ``MAC(k, x)``: keyed BLAKE2s with a 16-byte digest (hashlib, ``key=``);
- ``HMAC(k, x)``: HMAC-BLAKE2s-256 (RFC 2104 over hashlib's blake2s);
- ``KDFn``: the HKDF of the paper built from HMAC;
- ``DH``: X25519 (libsodium through PyNaCl: its fixed-base multiplication, which makes each
  ephemeral key, takes ~17 us here against ~34 us for OpenSSL's through cryptography, and a handshake
  makes two; the variable-base one costs the same in both);
- ``AEAD(k, n, p, a)``: ChaCha20-Poly1305 with a 96-bit nonce of 32 zero bits and the 64-bit
  little-endian counter ``n`` (cryptography).

The functions are pure: they take keys, the peer's message and fresh values (ephemeral key, sender
index, timestamp) and return message bytes and session keys; the device (`core`) owns all state. The
static-static DH is a constant per peer pair, so callers pass it precomputed (as wireguard-go does),
which saves one X25519 per handshake on each side.
"""

import hashlib
import os
from typing import Callable, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from nacl.exceptions import CryptoError

from .errors import LocalProtocolError, RemoteProtocolError
from .messages import Initiation, Response, pack_initiation, pack_response

__all__ = [
    "CONSTRUCTION",
    "IDENTIFIER",
    "KEY_SIZE",
    "INITIAL_CHAINING_KEY",
    "INITIAL_HASH",
    "hash_",
    "mac",
    "hmac_",
    "kdf1",
    "kdf2",
    "kdf3",
    "aead_nonce",
    "aead_seal",
    "aead_open",
    "StaticKey",
    "generate_private_key",
    "public_key_of",
    "load_public",
    "dh",
    "Ephemeral",
    "generate_ephemeral",
    "InitiatorState",
    "ConsumedInitiation",
    "create_initiation",
    "consume_initiation",
    "create_response",
    "consume_response",
]

#: The Noise protocol name, hashed into the first chaining key (paper section 5.4.1).
CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
#: The WireGuard prologue identifier (paper section 5.4.1).
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
#: X25519 keys, ChaCha20-Poly1305 keys, hashes and pre-shared keys are all 32 bytes.
KEY_SIZE = 32
_ZERO_KEY = bytes(KEY_SIZE)
_NONCE_PREFIX = bytes(4)


def hash_(data: bytes) -> bytes:
    """``HASH``: BLAKE2s-256."""
    return hashlib.blake2s(data).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """``MAC``: keyed BLAKE2s with a 16-byte output."""
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


# HMAC is written out (RFC 2104, with the XOR tables the standard library's hmac.py itself uses) rather
# than called through hmac.digest: for WireGuard's 32-byte keys and short inputs, hmac.digest pays
# OpenSSL's per-call HMAC context setup and is about four times slower, and a handshake needs ~40
# HMACs. tests/wireguard/test_noise.py checks this against hmac.digest.
_BLAKE2S_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_blake2s = hashlib.blake2s


def hmac_(key: bytes, data: bytes) -> bytes:
    """``HMAC``: HMAC-BLAKE2s-256 (block size 64, as the paper and the kernel use); keys <= 64 bytes."""
    padded = key + _ZERO_KEY if len(key) == KEY_SIZE else key.ljust(_BLAKE2S_BLOCK, b"\0")
    return _blake2s(padded.translate(_OPAD) + _blake2s(padded.translate(_IPAD) + data).digest()).digest()


# The KDFs below are HKDF as the paper writes it (t0 = HMAC(key, data), t_i = HMAC(t0, t_{i-1} || i)),
# written out with t0's pads made once: each saves a few function calls, ~0.5 us a KDF and ~16 KDFs a
# handshake; tests/wireguard/test_noise.py checks them against a plain HKDF over hmac.digest.

def kdf1(key: bytes, data: bytes) -> bytes:
    """``KDF1``: HKDF with one 32-byte output."""
    padded = hmac_(key, data) + _ZERO_KEY
    return _blake2s(padded.translate(_OPAD) + _blake2s(padded.translate(_IPAD) + b"\x01").digest()).digest()


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    """``KDF2``: HKDF with two 32-byte outputs."""
    padded = hmac_(key, data) + _ZERO_KEY
    inner, outer = padded.translate(_IPAD), padded.translate(_OPAD)
    t1 = _blake2s(outer + _blake2s(inner + b"\x01").digest()).digest()
    return t1, _blake2s(outer + _blake2s(inner + t1 + b"\x02").digest()).digest()


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    """``KDF3``: HKDF with three 32-byte outputs."""
    padded = hmac_(key, data) + _ZERO_KEY
    inner, outer = padded.translate(_IPAD), padded.translate(_OPAD)
    t1 = _blake2s(outer + _blake2s(inner + b"\x01").digest()).digest()
    t2 = _blake2s(outer + _blake2s(inner + t1 + b"\x02").digest()).digest()
    return t1, t2, _blake2s(outer + _blake2s(inner + t2 + b"\x03").digest()).digest()


def aead_nonce(counter: int) -> bytes:
    """The 96-bit ChaCha20-Poly1305 nonce: 32 zero bits then the little-endian 64-bit counter."""
    return _NONCE_PREFIX + counter.to_bytes(8, "little")


def aead_seal(key: bytes, counter: int, plaintext: bytes, associated: bytes | None) -> bytes:
    """``AEAD``: ChaCha20-Poly1305 encryption; returns ciphertext || 16-byte tag."""
    return ChaCha20Poly1305(key).encrypt(aead_nonce(counter), plaintext, associated)


def aead_open(key: bytes, counter: int, ciphertext: bytes, associated: bytes | None) -> bytes:
    """Inverse of `aead_seal`.

    Raises:
        RemoteProtocolError: ``decrypt_failed`` when the tag does not verify.
    """
    try:
        return ChaCha20Poly1305(key).decrypt(aead_nonce(counter), ciphertext, associated)
    except InvalidTag:
        raise RemoteProtocolError("decrypt_failed") from None


INITIAL_CHAINING_KEY = hash_(CONSTRUCTION)
INITIAL_HASH = hash_(INITIAL_CHAINING_KEY + IDENTIFIER)


def load_public(public_key: bytes) -> bytes:
    """A 32-byte X25519 public key as `dh` takes it (raises `LocalProtocolError` on a wrong length)."""
    if len(public_key) != KEY_SIZE:
        raise LocalProtocolError(f"public key must be {KEY_SIZE} bytes, got {len(public_key)}")
    return bytes(public_key)


def dh(private: bytes, public: bytes) -> bytes:
    """``DH``: X25519 of a 32-byte private key (clamped here, as RFC 7748 says) and public key.

    Raises:
        RemoteProtocolError: ``bad_key`` for a low-order point (the shared secret would be all
            zeros, which libsodium refuses, as the kernel's WireGuard does).
    """
    try:
        return crypto_scalarmult(private, public)
    except CryptoError:
        raise RemoteProtocolError("bad_key") from None


class Ephemeral(NamedTuple):
    """A fresh X25519 key pair for one handshake."""

    private: bytes
    public: bytes


def generate_ephemeral(rng: Callable[[int], bytes] = os.urandom) -> Ephemeral:
    """A fresh ephemeral key pair from ``rng``'s 32 bytes (clamped by the multiplication)."""
    private = rng(KEY_SIZE)
    return Ephemeral(private, crypto_scalarmult_base(private))


class StaticKey:
    """A device's static X25519 identity with the values derived from it once.

    Attributes:
        private: the 32-byte private key.
        public: the 32-byte public key.
        responder_hash: ``HASH(INITIAL_HASH || public)``, the responder's first handshake hash.
    """

    __slots__ = ("private", "public", "responder_hash")

    def __init__(self, private_key: bytes) -> None:
        if len(private_key) != KEY_SIZE:
            raise LocalProtocolError(f"private key must be {KEY_SIZE} bytes, got {len(private_key)}")
        self.private = bytes(private_key)
        self.public = crypto_scalarmult_base(self.private)
        self.responder_hash = hash_(INITIAL_HASH + self.public)


def generate_private_key(rng: Callable[[int], bytes] = os.urandom) -> bytes:
    """A fresh 32-byte X25519 private key (clamped, as ``wg genkey`` prints it)."""
    key = bytearray(rng(KEY_SIZE))
    key[0] &= 248
    key[31] = (key[31] & 127) | 64
    return bytes(key)


def public_key_of(private_key: bytes) -> bytes:
    """The 32-byte X25519 public key of a private key (``wg pubkey``)."""
    return StaticKey(private_key).public


class InitiatorState(NamedTuple):
    """What an initiator keeps between sending an initiation and consuming the response."""

    sender_index: int
    ephemeral: Ephemeral
    chaining_key: bytes
    hash: bytes


class ConsumedInitiation(NamedTuple):
    """A responder's view of a valid initiation, before it answers."""

    sender_index: int
    remote_static: bytes
    timestamp: bytes
    remote_ephemeral: bytes
    chaining_key: bytes
    hash: bytes


def create_initiation(local: StaticKey, remote_static: bytes, remote_hash: bytes,
                      static_static: bytes, sender_index: int, timestamp: bytes,
                      ephemeral: Ephemeral) -> tuple[bytes, InitiatorState]:
    """Build a handshake initiation (paper section 5.4.2) with zeroed MACs.

    Args:
        local: our static identity.
        remote_static: the responder's static public key.
        remote_hash: ``HASH(INITIAL_HASH || remote public key)``, precomputed per peer.
        static_static: ``DH(S_priv_i, S_pub_r)``, precomputed per peer.
        sender_index: our fresh 32-bit index for this handshake.
        timestamp: the 12-byte TAI64N label.
        ephemeral: a fresh key pair (`generate_ephemeral`).

    Returns:
        (message bytes without mac1/mac2, state to consume the response with).
    """
    e_pub = ephemeral.public
    c = kdf1(INITIAL_CHAINING_KEY, e_pub)
    h = hash_(remote_hash + e_pub)
    c, k = kdf2(c, dh(ephemeral.private, remote_static))
    enc_static = aead_seal(k, 0, local.public, h)
    h = hash_(h + enc_static)
    c, k = kdf2(c, static_static)
    enc_timestamp = aead_seal(k, 0, timestamp, h)
    h = hash_(h + enc_timestamp)
    message = pack_initiation(sender_index, e_pub, enc_static, enc_timestamp)
    return message, InitiatorState(sender_index, ephemeral, c, h)


def consume_initiation(local: StaticKey, message: Initiation,
                       static_static: Callable[[bytes], bytes | None]) -> ConsumedInitiation:
    """Authenticate an initiation addressed to us.

    Args:
        local: our static identity.
        message: the parsed initiation (mac1 already checked).
        static_static: maps the initiator's decrypted static public key to the precomputed
            ``DH(S_priv_r, S_pub_i)`` for a known peer, or None for a stranger.

    Raises:
        RemoteProtocolError: ``bad_key``, ``decrypt_failed`` or ``unknown_peer``.
    """
    c = kdf1(INITIAL_CHAINING_KEY, message.ephemeral)
    h = hash_(local.responder_hash + message.ephemeral)
    c, k = kdf2(c, dh(local.private, message.ephemeral))
    remote_static = aead_open(k, 0, message.encrypted_static, h)
    h = hash_(h + message.encrypted_static)
    ss = static_static(remote_static)
    if ss is None:
        raise RemoteProtocolError("unknown_peer")
    c, k = kdf2(c, ss)
    timestamp = aead_open(k, 0, message.encrypted_timestamp, h)
    h = hash_(h + message.encrypted_timestamp)
    return ConsumedInitiation(message.sender, remote_static, timestamp, message.ephemeral, c, h)


def create_response(consumed: ConsumedInitiation, remote_static: bytes,
                    preshared_key: bytes | None, sender_index: int,
                    ephemeral: Ephemeral) -> tuple[bytes, bytes, bytes]:
    """Build the handshake response (paper section 5.4.3) with zeroed MACs, and derive the keys.

    Returns:
        (message bytes without mac1/mac2, responder's sending key, responder's receiving key).
    """
    e_pub = ephemeral.public
    c = kdf1(consumed.chaining_key, e_pub)
    h = hash_(consumed.hash + e_pub)
    c = kdf1(c, dh(ephemeral.private, consumed.remote_ephemeral))
    c = kdf1(c, dh(ephemeral.private, remote_static))
    c, tau, k = kdf3(c, preshared_key or _ZERO_KEY)
    h = hash_(h + tau)
    enc_nothing = aead_seal(k, 0, b"", h)
    message = pack_response(sender_index, consumed.sender_index, e_pub, enc_nothing)
    initiator_send, initiator_receive = kdf2(c, b"")
    return message, initiator_receive, initiator_send


def consume_response(state: InitiatorState, local: StaticKey, message: Response,
                     preshared_key: bytes | None) -> tuple[bytes, bytes]:
    """Authenticate the response to our initiation and derive the transport keys.

    Returns:
        (initiator's sending key, initiator's receiving key).

    Raises:
        RemoteProtocolError: ``bad_key`` or ``decrypt_failed``.
    """
    c = kdf1(state.chaining_key, message.ephemeral)
    h = hash_(state.hash + message.ephemeral)
    c = kdf1(c, dh(state.ephemeral.private, message.ephemeral))
    c = kdf1(c, dh(local.private, message.ephemeral))
    c, tau, k = kdf3(c, preshared_key or _ZERO_KEY)
    h = hash_(h + tau)
    aead_open(k, 0, message.encrypted_nothing, h)
    return kdf2(c, b"")
