"""Warren's WireGuard protocol core: sans-I/O, wire-compatible with WireGuard.

`WireGuardDevice` is the entry point; the submodules hold the wire formats (`messages`), the Noise
handshake (`noise`), MAC1/MAC2 and cookies (`cookie`), the replay window (`replay`), the timers
(`timers`), cryptokey routing (`allowed_ips`) and TAI64N (`tai64n`).
"""

from .allowed_ips import AllowedIPs
from .core import (
    DEFAULT_MTU,
    EndpointChanged,
    Event,
    HandshakeCompleted,
    HandshakeFailed,
    PeerStatus,
    SessionExpired,
    WireGuardDevice,
)
from .errors import LocalProtocolError, RemoteProtocolError, WireGuardError
from .noise import generate_private_key, public_key_of

__all__ = [
    "AllowedIPs",
    "DEFAULT_MTU",
    "EndpointChanged",
    "Event",
    "HandshakeCompleted",
    "HandshakeFailed",
    "LocalProtocolError",
    "PeerStatus",
    "RemoteProtocolError",
    "SessionExpired",
    "WireGuardDevice",
    "WireGuardError",
    "generate_private_key",
    "public_key_of",
]
