"""The two error families of the WireGuard core.

`LocalProtocolError` means *our* caller misused the core (a key of the wrong length, an unknown peer,
a malformed allowed-IP). `RemoteProtocolError` means bytes from the network were wrong; the device
never lets it escape `decapsulate`: it counts the `reason` in `drop_counters` and drops the datagram
silently, as the WireGuard paper requires (an unauthenticated sender gets no answer).
"""

__all__ = ["WireGuardError", "LocalProtocolError", "RemoteProtocolError"]


class WireGuardError(Exception):
    """Base class of every error raised by `agents.wireguard`."""


class LocalProtocolError(WireGuardError):
    """The local caller used the core wrongly (bad argument, unknown peer, bad configuration)."""


class RemoteProtocolError(WireGuardError):
    """A remote peer sent something invalid.

    Attributes:
        reason: short snake_case key under which the drop is counted (``"bad_mac1"``, ``"replay"``...).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
