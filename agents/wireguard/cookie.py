"""MAC1/MAC2 and cookie replies: WireGuard's defence against handshake floods (paper section 5.3, 5.4.4, 5.4.7).

Every handshake message carries ``mac1 = MAC(HASH(LABEL_MAC1 || S_pub_receiver), msg_alpha)``, so only
someone who knows the receiver's public key can make it spend an X25519 operation. When the receiver is
under load it also demands ``mac2 = MAC(cookie, msg_beta)`` where ``cookie = MAC(R, source address)``
and ``R`` is a secret rotated every two minutes; a sender without a valid mac2 gets a cookie reply
instead of a handshake: the cookie, encrypted with XChaCha20-Poly1305 under
``HASH(LABEL_COOKIE || S_pub_receiver)`` with the sender's mac1 as associated data.

XChaCha20-Poly1305 comes from pycryptodome (``ChaCha20_Poly1305`` given a 24-byte nonce is XChaCha20-
Poly1305, built on HChaCha20); the cryptography package has no XChaCha variant, and a hand-written
HChaCha20 would be slower and one more thing to get wrong.
"""

import hmac
import ipaddress
import os
from typing import Callable

from Crypto.Cipher import ChaCha20_Poly1305

from .errors import RemoteProtocolError
from .messages import CookieReply, pack_cookie_reply
from .noise import hash_, mac

__all__ = [
    "LABEL_MAC1",
    "LABEL_COOKIE",
    "COOKIE_SECRET_MAX_AGE",
    "COOKIE_REFRESH_TIME",
    "xaead_seal",
    "xaead_open",
    "endpoint_bytes",
    "CookieChecker",
    "CookieGenerator",
    "HANDSHAKES_PER_SECOND_PER_SOURCE",
    "HANDSHAKE_BURST_PER_SOURCE",
    "SourceRateLimiter",
]

#: Labels hashed with the receiver's public key to key mac1 and the cookie encryption (paper 5.4.4, 5.4.7).
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
#: The responder's cookie secret ``R_m`` "changes every two minutes" (paper section 5.4.7).
COOKIE_SECRET_MAX_AGE = 120.0
#: A received cookie is used for mac2 for 120 s (paper 5.4.4; wireguard-go CookieRefreshTime).
COOKIE_REFRESH_TIME = 120.0
_ZERO_MAC = bytes(16)


def xaead_seal(key: bytes, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """``XAEAD``: XChaCha20-Poly1305 (24-byte nonce); returns ciphertext || tag."""
    cipher = ChaCha20_Poly1305.new(key=key, nonce=nonce)
    cipher.update(associated)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return ciphertext + tag


def xaead_open(key: bytes, nonce: bytes, sealed: bytes, associated: bytes) -> bytes:
    """Inverse of `xaead_seal`; raises `RemoteProtocolError` (``bad_cookie_reply``) on a bad tag."""
    cipher = ChaCha20_Poly1305.new(key=key, nonce=nonce)
    cipher.update(associated)
    try:
        return cipher.decrypt_and_verify(sealed[:-16], sealed[-16:])
    except ValueError:
        raise RemoteProtocolError("bad_cookie_reply", "forged, or answers an older message") from None


def endpoint_bytes(endpoint: tuple[str, int]) -> bytes:
    """The source address a cookie is bound to: packed IP (4 or 16 bytes) then big-endian port.

    Only the responder that minted a cookie ever recomputes it, so this encoding need not match
    other implementations byte for byte.
    """
    host, port = endpoint[0], endpoint[1]
    return ipaddress.ip_address(host.split("%", 1)[0]).packed + int(port).to_bytes(2, "big")


class CookieChecker:
    """The receiving side: validates mac1/mac2 on our own key and mints cookie replies.

    Args:
        local_public: our static public key.
        rng: source of random bytes (the secret and reply nonces).
    """

    __slots__ = ("mac1_key", "cookie_key", "_rng", "_secret", "_secret_born")

    def __init__(self, local_public: bytes, rng: Callable[[int], bytes] = os.urandom) -> None:
        self.mac1_key = hash_(LABEL_MAC1 + local_public)
        self.cookie_key = hash_(LABEL_COOKIE + local_public)
        self._rng = rng
        self._secret: bytes | None = None
        self._secret_born = 0.0

    def mac1_valid(self, message: bytes) -> bool:
        """Whether ``message`` (a whole handshake message) carries a valid mac1 for our key."""
        return hmac.compare_digest(mac(self.mac1_key, message[:-32]), message[-32:-16])

    def mac2_valid(self, message: bytes, source: tuple[str, int], now: float) -> bool:
        """Whether ``message`` carries a mac2 made from a cookie we minted for ``source`` in the last 2 minutes."""
        if self._secret is None or now - self._secret_born >= COOKIE_SECRET_MAX_AGE:
            return False
        cookie = mac(self._secret, endpoint_bytes(source))
        return hmac.compare_digest(mac(cookie, message[:-16]), message[-16:])

    def create_reply(self, message: bytes, receiver_index: int, source: tuple[str, int], now: float) -> bytes:
        """Build the cookie reply to ``message`` (whose mac1 is already known valid).

        Args:
            message: the handshake message being answered.
            receiver_index: its sender index, which becomes the reply's receiver field.
            source: the address it came from.
            now: monotonic seconds (rotates the secret when it is two minutes old).
        """
        if self._secret is None or now - self._secret_born >= COOKIE_SECRET_MAX_AGE:
            self._secret = self._rng(32)
            self._secret_born = now
        cookie = mac(self._secret, endpoint_bytes(source))
        nonce = self._rng(24)
        return pack_cookie_reply(receiver_index, nonce, xaead_seal(self.cookie_key, nonce, cookie, message[-32:-16]))


class CookieGenerator:
    """The sending side, one per peer: writes mac1/mac2 and consumes the peer's cookie replies.

    Args:
        remote_public: the peer's static public key.
    """

    __slots__ = ("mac1_key", "cookie_key", "last_mac1", "cookie", "cookie_born")

    def __init__(self, remote_public: bytes) -> None:
        self.mac1_key = hash_(LABEL_MAC1 + remote_public)
        self.cookie_key = hash_(LABEL_COOKIE + remote_public)
        self.last_mac1: bytes | None = None
        self.cookie: bytes | None = None
        self.cookie_born = 0.0

    def add_macs(self, message: bytes, now: float) -> bytes:
        """Return ``message`` (built with zero MACs) with mac1 and, if we hold a fresh cookie, mac2."""
        body = message[:-32]
        mac1 = mac(self.mac1_key, body)
        self.last_mac1 = mac1
        if self.cookie is not None and now - self.cookie_born < COOKIE_REFRESH_TIME:
            return body + mac1 + mac(self.cookie, body + mac1)
        return body + mac1 + _ZERO_MAC

    def consume_reply(self, reply: CookieReply, now: float) -> None:
        """Decrypt and store the cookie from a reply to our last handshake message.

        Raises:
            RemoteProtocolError: ``unexpected_cookie`` if we sent nothing to answer, ``bad_cookie_reply``.
        """
        if self.last_mac1 is None:
            raise RemoteProtocolError("unexpected_cookie")
        self.cookie = xaead_open(self.cookie_key, reply.nonce, reply.encrypted_cookie, self.last_mac1)
        self.cookie_born = now
        self.last_mac1 = None


#: Linux ratelimiter.c / wireguard-go ratelimiter.go: under load, at most 20 handshake messages per
#: second from one source address (with a valid mac2), in bursts of at most 5.
HANDSHAKES_PER_SECOND_PER_SOURCE = 20
HANDSHAKE_BURST_PER_SOURCE = 5
#: Bound on tracked sources; stale buckets (full again) are swept when it is reached.
_MAX_SOURCES = 1 << 16


class SourceRateLimiter:
    """Token bucket per source IP for handshake messages accepted while under load.

    A valid mac2 proves the sender can receive at its address, but not that it is polite: this caps
    what one address can make the responder compute. Ports are ignored, as in the Linux driver.
    """

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        # source host -> (tokens, monotonic time of the last refill)
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, host: str, now: float) -> bool:
        """Take a token for ``host`` at ``now``; False when its bucket is empty."""
        tokens, last = self._buckets.get(host, (float(HANDSHAKE_BURST_PER_SOURCE), now))
        tokens = min(float(HANDSHAKE_BURST_PER_SOURCE), tokens + (now - last) * HANDSHAKES_PER_SECOND_PER_SOURCE)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= _MAX_SOURCES and host not in self._buckets:
            full = HANDSHAKE_BURST_PER_SOURCE / HANDSHAKES_PER_SECOND_PER_SOURCE
            self._buckets = {h: b for h, b in self._buckets.items() if now - b[1] < full}
        self._buckets[host] = (tokens, now)
        return allowed
