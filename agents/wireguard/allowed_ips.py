"""Cryptokey routing: allowed IPs with longest-prefix match, IPv4 and IPv6 (paper section 2).

Outbound, the destination address picks the peer whose allowed IPs hold the longest matching prefix;
inbound, a decrypted packet is accepted only if that same lookup on its *source* address names the
peer it came from. An allowed IP belongs to one peer at a time: giving it to another peer moves it,
as ``wg set`` does.

The table is one hash map per prefix length, searched from the longest length present down: a lookup
costs one dict probe per distinct prefix length in use (usually one to three), with no per-bit walk in
Python. Updates build a new snapshot and swap it in with one assignment, so lookups from other
threads need no lock.
"""

import ipaddress
from typing import Any, Iterable

from .errors import LocalProtocolError

__all__ = ["AllowedIPs", "parse_prefix"]


def parse_prefix(cidr: str) -> tuple[int, int, int]:
    """Parse ``"10.0.0.0/8"`` (or a bare address, meaning a host route) into (version, network int, length).

    Host bits are cleared, as ``wg`` does.

    Raises:
        LocalProtocolError: not an IPv4/IPv6 prefix.
    """
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError as exc:
        raise LocalProtocolError(f"bad allowed IP {cidr!r}: {exc}") from None
    return network.version, int(network.network_address), network.prefixlen


def _format(version: int, network: int, length: int) -> str:
    address = ipaddress.IPv4Address(network) if version == 4 else ipaddress.IPv6Address(network)
    return f"{address}/{length}"


class AllowedIPs:
    """A longest-prefix-match table from IP prefixes to values (peers)."""

    __slots__ = ("_entries", "_v4", "_v6")

    def __init__(self) -> None:
        # (version, network, length) -> value: the source of truth the lookup snapshots are built from.
        self._entries: dict[tuple[int, int, int], Any] = {}
        # Snapshots: tuples of (shift, {network >> shift: value}), longest prefix first.
        self._v4: tuple[tuple[int, dict[int, Any]], ...] = ()
        self._v6: tuple[tuple[int, dict[int, Any]], ...] = ()

    def insert(self, cidr: str, value: Any) -> None:
        """Route ``cidr`` to ``value`` (moving it from any other value)."""
        self._entries[parse_prefix(cidr)] = value
        self._rebuild()

    def insert_many(self, cidrs: Iterable[str], value: Any) -> None:
        """Route every prefix in ``cidrs`` to ``value`` with a single rebuild."""
        for cidr in cidrs:
            self._entries[parse_prefix(cidr)] = value
        self._rebuild()

    def remove(self, cidr: str) -> None:
        """Forget one prefix (no error if absent)."""
        self._entries.pop(parse_prefix(cidr), None)
        self._rebuild()

    def remove_value(self, value: Any) -> None:
        """Forget every prefix routed to ``value``."""
        self._entries = {key: v for key, v in self._entries.items() if v is not value}
        self._rebuild()

    def prefixes(self, value: Any) -> list[str]:
        """The prefixes routed to ``value``, as strings, IPv4 first."""
        keys = sorted(key for key, v in self._entries.items() if v is value)
        return [_format(*key) for key in keys]

    def prefixes_by_value(self) -> dict[int, list[str]]:
        """Every value's prefixes in one pass, keyed by ``id(value)`` (values need not be hashable)."""
        grouped: dict[int, list[str]] = {}
        for key in sorted(self._entries):
            grouped.setdefault(id(self._entries[key]), []).append(_format(*key))
        return grouped

    def lookup(self, address: str | bytes) -> Any:
        """The value of the longest prefix holding ``address`` (text, or 4/16 packed bytes), or None."""
        if isinstance(address, str):
            address = ipaddress.ip_address(address).packed
        if len(address) == 4:
            return self.lookup_v4(int.from_bytes(address, "big"))
        if len(address) == 16:
            return self.lookup_v6(int.from_bytes(address, "big"))
        raise LocalProtocolError(f"address must be 4 or 16 bytes, got {len(address)}")

    def lookup_v4(self, address: int) -> Any:
        """Longest-prefix match of an IPv4 address given as an int."""
        for shift, table in self._v4:
            value = table.get(address >> shift)
            if value is not None:
                return value
        return None

    def lookup_v6(self, address: int) -> Any:
        """Longest-prefix match of an IPv6 address given as an int."""
        for shift, table in self._v6:
            value = table.get(address >> shift)
            if value is not None:
                return value
        return None

    def _rebuild(self) -> None:
        by_length: dict[tuple[int, int], dict[int, Any]] = {}
        for (version, network, length), value in self._entries.items():
            bits = 32 if version == 4 else 128
            by_length.setdefault((version, length), {})[network >> (bits - length)] = value
        v4 = sorted(((32 - length, table) for (version, length), table in by_length.items() if version == 4),
                    key=lambda item: item[0])
        v6 = sorted(((128 - length, table) for (version, length), table in by_length.items() if version == 6),
                    key=lambda item: item[0])
        self._v4, self._v6 = tuple(v4), tuple(v6)
