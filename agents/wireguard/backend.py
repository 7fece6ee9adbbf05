"""One interface for both WireGuard backends, so the node agent meters traffic the same way.

:class:`~agents.wireguard.runtime.Tunnel` (our Python data plane) and
:class:`~agents.wireguard.uapi.UapiBackend` (the system's WireGuard, kernel or wireguard-go, through
its UAPI socket) both implement :class:`TunnelBackend`: configure peers, list them with their
byte counters and latest handshake, close.
"""

from __future__ import annotations

import abc
import dataclasses

from agents.wireguard.config import PeerConfig

__all__ = ["PeerStats", "TunnelBackend"]


@dataclasses.dataclass(frozen=True)
class PeerStats:
    """What a backend reports about one peer (the fields `wg show` prints).

    Attributes:
        public_key: the peer's static public key (32 bytes).
        endpoint: its current UDP endpoint, following roaming, or None.
        allowed_ips: CIDRs routed to it.
        last_handshake: Unix time of the latest completed handshake, or None if never.
        rx_bytes: bytes received from it (whole UDP payloads, as WireGuard counts).
        tx_bytes: bytes sent to it.
        persistent_keepalive: seconds, or None when off.
    """

    public_key: bytes
    endpoint: tuple[str, int] | None
    allowed_ips: tuple[str, ...]
    last_handshake: float | None
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None = None


class TunnelBackend(abc.ABC):
    """A running WireGuard interface that Warren can configure and meter."""

    @property
    @abc.abstractmethod
    def public_key(self) -> bytes:
        """This interface's static public key."""

    @property
    @abc.abstractmethod
    def listen_port(self) -> int:
        """The UDP port it listens on."""

    @abc.abstractmethod
    def add_peer(self, peer: PeerConfig) -> None:
        """Add ``peer``, or update it if its public key is already configured."""

    @abc.abstractmethod
    def remove_peer(self, public_key: bytes) -> None:
        """Forget the peer with ``public_key`` (no error if absent)."""

    @abc.abstractmethod
    def peers(self) -> list[PeerStats]:
        """Every configured peer with its counters."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop serving (idempotent)."""

    def peer(self, public_key: bytes) -> PeerStats | None:
        """The stats of one peer, or None if it is not configured."""
        for stats in self.peers():
            if stats.public_key == public_key:
                return stats
        return None

    def __enter__(self) -> "TunnelBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
