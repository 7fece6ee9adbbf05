"""The exit policy: which destinations a node forwards its clients' traffic to (pure, no I/O).

A packet from an admitted client is forwarded iff

1. its destination is not denied: the fixed default denials (:data:`DEFAULT_DENY_V4`,
   :data:`DEFAULT_DENY_V6`: private, loopback, link-local, CGNAT, multicast, reserved, v4-mapped, as
   Tor's and Mysterium's exits refuse them) plus the operator's ``deny_cidrs``; the defaults can never
   be lifted, so an exit never reaches its own LAN;
2. its destination port is allowed (``allow_ports``; None = any; TCP and UDP destination ports);
3. there is no allow list at all (``allow_cidrs`` and ``allow_domains`` both None), or the destination
   is in ``allow_cidrs``, or it came from the node's own DNS answer for an allowed domain
   (``"example.com"`` also allows ``www.example.com``).

:class:`ExitPolicy` is the node config's ``[exit]`` table (:meth:`ExitPolicy.from_dict` /
:meth:`ExitPolicy.to_dict`); :mod:`agents.node.exit` turns it into nftables sets and
:mod:`agents.node.dns` asks :func:`domain_allowed` about every query.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = [
    "DEFAULT_DENY_V4",
    "DEFAULT_DENY_V6",
    "ExitPolicy",
    "PolicyError",
    "address_denied",
    "domain_allowed",
    "normalize_name",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IPv4 ranges an exit never forwards to (IANA special-purpose registry, RFC 6890). The documentation
#: nets (192.0.2/24, 198.51.100/24, 203.0.113/24) and the benchmark net 198.18/15 are not here: they
#: are not routed on the internet anyway, and the netns lab uses them as its "internet".
DEFAULT_DENY_V4: tuple[str, ...] = (
    "0.0.0.0/8",        # "this network" (RFC 791)
    "10.0.0.0/8",       # private (RFC 1918)
    "100.64.0.0/10",    # carrier-grade NAT (RFC 6598): the ISP's side of a home router
    "127.0.0.0/8",      # loopback
    "169.254.0.0/16",   # link-local (RFC 3927), also cloud metadata services
    "172.16.0.0/12",    # private (RFC 1918)
    "192.0.0.0/24",     # IETF protocol assignments (RFC 6890)
    "192.168.0.0/16",   # private (RFC 1918)
    "224.0.0.0/4",      # multicast
    "240.0.0.0/4",      # reserved (RFC 1112), includes the limited broadcast 255.255.255.255
)
#: IPv6 ranges an exit never forwards to.
DEFAULT_DENY_V6: tuple[str, ...] = (
    "::/128",           # unspecified
    "::1/128",          # loopback
    "::ffff:0:0/96",    # IPv4-mapped: would smuggle IPv4 destinations past the IPv4 denials
    "100::/64",         # discard-only (RFC 6666)
    "fc00::/7",         # unique local (RFC 4193): the IPv6 LAN
    "fec0::/10",        # deprecated site-local (RFC 3879)
    "fe80::/10",        # link-local
    "ff00::/8",         # multicast
)

_DEFAULT_DENY = tuple(ipaddress.ip_network(c) for c in DEFAULT_DENY_V4 + DEFAULT_DENY_V6)
#: Keys of the ``[exit]`` table.
_KEYS = ("allow_cidrs", "allow_ports", "allow_domains", "deny_cidrs")
#: One DNS label (RFC 1035 letters/digits/hyphen; underscore too, as in service names).
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
#: RFC 1035: a name is at most 253 characters in text form.
MAX_NAME = 253
_PORT_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class PolicyError(ValueError):
    """An ``[exit]`` value we cannot use; the message names the key and what is wrong."""


def normalize_name(name: str) -> str:
    """Lower case, no trailing dot: the form policies and DNS questions are compared in."""
    return name.strip().rstrip(".").lower()


def _name(key: str, index: int, value: Any) -> str:
    if not isinstance(value, str):
        raise PolicyError(f"{key}[{index}]: expected a domain name (text), found {value!r}")
    name = normalize_name(value)
    labels = name.split(".")
    if (not name or len(name) > MAX_NAME or len(labels) < 2
            or not all(_LABEL.match(label) for label in labels)):
        raise PolicyError(f"{key}[{index}]: {value!r} is not a domain name like \"example.com\" "
                          "(subdomains are allowed with it; no wildcards)")
    return name


def _network(key: str, index: int, value: Any) -> IPNetwork:
    if not isinstance(value, str):
        raise PolicyError(f"{key}[{index}]: expected a CIDR such as \"203.0.113.0/24\", found {value!r}")
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError:
        try:
            loose = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise PolicyError(f"{key}[{index}]: {value!r} is not an IPv4 or IPv6 CIDR") from None
        raise PolicyError(f"{key}[{index}]: {value!r} has host bits set (did you mean {loose}?)") from None


def _port(key: str, index: int, value: Any) -> int | str:
    bad = PolicyError(f"{key}[{index}]: expected a port 1-65535 or a range \"low-high\", found {value!r}")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int):
        low = high = value
    elif isinstance(value, str):
        match = _PORT_RANGE.match(value)
        if match:
            low, high = int(match.group(1)), int(match.group(2))
        elif value.strip().isdigit():
            low = high = int(value.strip())
        else:
            raise bad
    else:
        raise bad
    if not 1 <= low <= high <= 65535:
        raise bad
    return low if low == high else f"{low}-{high}"


def _entries(key: str, value: Any) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise PolicyError(f"{key}: expected a list, found {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class ExitPolicy:
    """An exit's allow and deny lists (see the module docstring for the forwarding rule).

    Entries are checked and normalized on construction (CIDRs canonical, ports ``int`` or
    ``"low-high"``, names lower case without the trailing dot).

    Attributes:
        allow_cidrs: destinations allowed by address; None = no address allow list.
        allow_ports: destination ports allowed (TCP and UDP); None = any port.
        allow_domains: names (and their subdomains) whose DNS answers are allowed; None = none.
        deny_cidrs: extra denials on top of the fixed defaults.

    Raises:
        PolicyError: an entry is malformed, or an allowed CIDR lies wholly inside a denied range.
    """

    allow_cidrs: tuple[str, ...] | None = None
    allow_ports: tuple[int | str, ...] | None = None
    allow_domains: tuple[str, ...] | None = None
    deny_cidrs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        deny = _entries("deny_cidrs", self.deny_cidrs) or ()
        denied = tuple(_network("deny_cidrs", i, v) for i, v in enumerate(deny))
        cidrs = _entries("allow_cidrs", self.allow_cidrs)
        if cidrs is not None:
            nets = tuple(_network("allow_cidrs", i, v) for i, v in enumerate(cidrs))
            for i, net in enumerate(nets):
                for bad in _DEFAULT_DENY + denied:
                    if net.version == bad.version and net.subnet_of(bad):
                        raise PolicyError(f"allow_cidrs[{i}]: {net} lies inside {bad}, which is always "
                                          "refused (an exit never forwards to private or reserved ranges)"
                                          if bad in _DEFAULT_DENY else
                                          f"allow_cidrs[{i}]: {net} lies inside deny_cidrs entry {bad}")
            cidrs = tuple(str(n) for n in nets)
        ports = _entries("allow_ports", self.allow_ports)
        if ports is not None:
            ports = tuple(_port("allow_ports", i, v) for i, v in enumerate(ports))
        domains = _entries("allow_domains", self.allow_domains)
        if domains is not None:
            domains = tuple(dict.fromkeys(_name("allow_domains", i, v) for i, v in enumerate(domains)))
        object.__setattr__(self, "allow_cidrs", cidrs)
        object.__setattr__(self, "allow_ports", ports)
        object.__setattr__(self, "allow_domains", domains)
        object.__setattr__(self, "deny_cidrs", tuple(str(n) for n in denied))

    # -- TOML -------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict) -> "ExitPolicy":
        """The policy of a config's ``[exit]`` table (missing keys: no restriction of that kind).

        Raises:
            PolicyError: an unknown key, or a bad value (the message names the key).
        """
        if not isinstance(d, dict):
            raise PolicyError(f"[exit] must be a table, found {d!r}")
        unknown = sorted(set(d) - set(_KEYS))
        if unknown:
            raise PolicyError(f"unknown key {unknown[0]!r} (expected one of: {', '.join(_KEYS)})")
        return cls(allow_cidrs=d.get("allow_cidrs"), allow_ports=d.get("allow_ports"),
                   allow_domains=d.get("allow_domains"), deny_cidrs=d.get("deny_cidrs") or ())

    def to_dict(self) -> dict:
        """The ``[exit]`` table (keys that are None are left out: TOML has no null)."""
        out: dict[str, list] = {}
        for key in _KEYS:
            value = getattr(self, key)
            if value is not None and not (key == "deny_cidrs" and not value):
                out[key] = list(value)
        return out

    # -- views used by the exit table ---------------------------------------------------------------

    @property
    def restricted(self) -> bool:
        """Whether an allow list (addresses or domains) limits destinations."""
        return self.allow_cidrs is not None or self.allow_domains is not None

    def port_ranges(self) -> tuple[tuple[int, int], ...] | None:
        """``allow_ports`` as inclusive ``(low, high)`` pairs; None = any port."""
        if self.allow_ports is None:
            return None
        out = []
        for port in self.allow_ports:
            if isinstance(port, int):
                out.append((port, port))
            else:
                low, high = port.split("-")
                out.append((int(low), int(high)))
        return tuple(out)

    def allowed_networks(self, version: int) -> tuple[str, ...]:
        """``allow_cidrs`` of one IP version (empty when there is no address allow list)."""
        return tuple(c for c in self.allow_cidrs or () if ipaddress.ip_network(c).version == version)

    def denied_networks(self, version: int) -> tuple[str, ...]:
        """Default plus extra denials of one IP version."""
        base = DEFAULT_DENY_V4 if version == 4 else DEFAULT_DENY_V6
        extra = tuple(c for c in self.deny_cidrs if ipaddress.ip_network(c).version == version)
        return base + extra


def domain_allowed(policy: ExitPolicy, name: str) -> bool:
    """Whether the node resolves ``name`` for its clients.

    With no domain allow list every name resolves (destinations are then limited by the address
    lists alone); otherwise ``name`` must be an allowed domain or a subdomain of one.
    """
    if policy.allow_domains is None:
        return True
    name = normalize_name(name)
    return any(name == d or name.endswith("." + d) for d in policy.allow_domains)


def address_denied(policy: ExitPolicy, address: str) -> bool:
    """Whether ``address`` is refused whatever the allow lists say (v4-mapped IPv6 checked as IPv4)."""
    addr = ipaddress.ip_address(address)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return True
    return any(addr in ipaddress.ip_network(c) for c in policy.denied_networks(addr.version))
