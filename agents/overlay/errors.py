"""The overlay's two error families.

``LocalProtocolError``: we misused the overlay (a bad argument, an operation in the wrong state); a bug
on our side. ``RemoteProtocolError``: a peer sent something malformed, forged, expired or abusive; the
datagram or record is dropped and the node carries on. ``RecordRejected`` names why a record was
refused, so tests and logs can tell forgery from replay from expiry.
"""

from __future__ import annotations

__all__ = ["OverlayError", "LocalProtocolError", "RemoteProtocolError", "RecordRejected"]


class OverlayError(Exception):
    """Base class of every overlay error."""


class LocalProtocolError(OverlayError):
    """We called the overlay wrongly (a bug in the caller)."""


class RemoteProtocolError(OverlayError):
    """A remote peer sent a malformed or invalid message."""


class RecordRejected(RemoteProtocolError):
    """A signed record was refused.

    Attributes:
        reason: a short lowercase reason, one of ``unsigned``, ``mis-signed``, ``expired``,
            ``oversized``, ``revoked``, ``id-mismatch``, ``replayed``, ``unknown-node``, ``malformed``,
            ``rate-limited``, ``store-full``, ``unverifiable`` (the chain could not be asked).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"record rejected: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason
