"""TAI64N timestamps, as carried (encrypted) in every handshake initiation.

A responder remembers the greatest timestamp it accepted from each peer and refuses any initiation
whose timestamp is not strictly greater: that is what makes a replayed initiation worthless
(WireGuard paper, section 5.1). The format is 8 bytes of big-endian TAI seconds (label 2**62 + 10,
the TAI-UTC offset of 1972, as in wireguard-go's tai64n.go) and 4 bytes of big-endian nanoseconds.
"""

import struct

__all__ = ["TAI64N_LENGTH", "tai64n", "tai64n_to_unix"]

#: Length of a TAI64N label in bytes (WireGuard paper, section 5.4.2: ``msg.timestamp`` is 12 + 16 bytes).
TAI64N_LENGTH = 12

#: 2**62 marks "TAI seconds since 1970"; + 10 s is the TAI-UTC offset used by wireguard-go (tai64n.go).
_TAI64_BASE = (1 << 62) + 10

#: wireguard-go and the Linux driver round nanoseconds down to a multiple of 2**24 ns (~16.8 ms) so the
#: timestamp does not leak a fine-grained clock; 16.8 ms is still below the 20 ms initiation rate limit.
_WHITENER_MASK = (1 << 24) - 1

_PACK = struct.Struct(">QI")


def tai64n(unix_time: float) -> bytes:
    """Encode a Unix time as a whitened TAI64N label.

    Args:
        unix_time: seconds since the Unix epoch (wall clock supplied by the caller).

    Returns:
        12 bytes; byte-wise comparison orders them like the times they encode.
    """
    seconds = int(unix_time)
    nanos = int((unix_time - seconds) * 1e9) & ~_WHITENER_MASK
    return _PACK.pack(_TAI64_BASE + seconds, nanos)


def tai64n_to_unix(label: bytes) -> float:
    """Decode a TAI64N label back to Unix seconds (for logs and tests)."""
    seconds, nanos = _PACK.unpack(label)
    return (seconds - _TAI64_BASE) + nanos / 1e9
