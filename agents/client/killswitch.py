"""The client's kill switch: one nftables table that lets nothing out but the tunnel.

Modelled on Mullvad's (mullvadvpn-app docs/security.md): the rules are strict from the moment the
client leaves "disconnected" until an explicit disconnect, through connecting, failover and a crash
of the client itself, because an nftables table belongs to the kernel, not to the process that made
it. While :class:`KillSwitch` is engaged the host sends:

* anything on loopback and on the tunnel interface(s) (``oifname``, matched by name so the rule is
  valid before the TUN exists and after a failover re-creates it);
* UDP to the WireGuard endpoints (``ip daddr . udp dport`` in a set), only from sockets marked with
  the tunnel's fwmark (SO_MARK, as agents.wireguard.runtime sets it) unless ``fwmark=None``;
* explicit ``allow`` exceptions (address, port, "tcp"|"udp"), e.g. a chain RPC needed before the first
  tunnel is up; DNS (port 53) is refused as an exception: DNS goes through the tunnel or nowhere;
* IPv6 neighbour discovery (hop limit 255: link-local by construction) and a DHCP client's packets
  (``ndp``/``dhcp``, as Mullvad allows them), so the uplink keeps its addresses for hours.

Input takes loopback, the tunnel, UDP from the endpoints, replies (conntrack established/related)
from the exceptions and ICMP errors about flows that were let out (path MTU discovery); forwarding
only into the tunnel (and its replies back). Everything else, IPv6 included, is counted and dropped. Every change is one ``nft -f -`` transaction, so there is no
instant with no rules or with half of them: :meth:`KillSwitch.set_endpoints`, :meth:`set_allow`
and :meth:`set_tun` flush and refill a set atomically (failover moves without a gap).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import socket
from collections.abc import Iterable

from agents.client.hostcmd import HostCommandError, run
from agents.wireguard.tun import DEFAULT_FWMARK

__all__ = ["AllowRule", "KillSwitch", "KillSwitchError", "KillSwitchState", "HostCommandError"]

#: DNS's port: never an exception, so a misconfigured allow-list cannot become a DNS leak.
DNS_PORT = 53
#: Linux IFNAMSIZ is 16 including the NUL; names are also spliced into nft scripts, hence the class.
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")
_TABLE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")

#: An allow exception: (address, port, "tcp" | "udp").
AllowRule = tuple[str, int, str]


class KillSwitchError(ValueError):
    """Our misuse: a malformed endpoint/exception/interface, or a change while not engaged."""


@dataclasses.dataclass(frozen=True)
class KillSwitchState:
    """What the kernel's table says (read back by :meth:`KillSwitch.state`).

    Attributes:
        tuns: tunnel interface names let through.
        endpoints: WireGuard endpoints (address, port).
        allow: exceptions (address, port, protocol).
        dropped_out / dropped_in / dropped_forward: packets dropped so far per direction.
    """

    tuns: tuple[str, ...]
    endpoints: tuple[tuple[str, int], ...]
    allow: tuple[AllowRule, ...]
    dropped_out: int
    dropped_in: int
    dropped_forward: int


class KillSwitch:
    """One ``inet`` nftables table that drops everything outside the tunnel.

    Args:
        table: the table's name.
        fwmark: the WireGuard socket's SO_MARK required on endpoint traffic (None: any socket).
        netns: network namespace to act in (``ip netns exec``); None: the caller's own.
        ndp: let IPv6 neighbour/router discovery through (link-local only).
        dhcp: let a DHCPv4/DHCPv6 client renew its lease.
    """

    def __init__(self, table: str = "warren_client", *, fwmark: int | None = DEFAULT_FWMARK,
                 netns: str | None = None, ndp: bool = True, dhcp: bool = True) -> None:
        if not _TABLE.match(table):
            raise KillSwitchError(f"bad nftables table name {table!r}")
        self.table = table
        self.fwmark = fwmark
        self.netns = netns
        self.ndp = ndp
        self.dhcp = dhcp

    # -- changes (each one transaction) ------------------------------------------------------------

    def engage(self, tun: str | None, endpoints: Iterable[tuple[str, int]],
               allow: Iterable[AllowRule] = ()) -> None:
        """Install (or atomically replace) the whole table.

        Args:
            tun: the tunnel interface (None: no tunnel yet, so nothing but endpoints/exceptions).
            endpoints: WireGuard endpoints ``(address, port)``.
            allow: exceptions ``(address, port, "tcp"|"udp")``.

        Raises:
            KillSwitchError: a malformed argument.
            HostCommandError: nft refused (no root, no nftables).
        """
        tuns = [_ifname(tun)] if tun else []
        eps = _endpoints(endpoints)
        exc = _exceptions(allow)
        self._nft(f"table inet {self.table} {{}}\ndelete table inet {self.table}\n"
                  + self._table_script(tuns, eps, exc))

    def set_endpoints(self, endpoints: Iterable[tuple[str, int]]) -> None:
        """Replace the WireGuard endpoints in one transaction (make-before-break is the caller's:
        pass old and new together, then the new alone).

        Raises:
            KillSwitchError: malformed, or not engaged.
        """
        eps = _endpoints(endpoints)
        self._replace({"endpoints4": [_ep(a, p) for a, p in eps if ":" not in a],
                       "endpoints6": [_ep(a, p) for a, p in eps if ":" in a]})

    def set_allow(self, allow: Iterable[AllowRule]) -> None:
        """Replace the exceptions in one transaction.

        Raises:
            KillSwitchError: malformed, or not engaged.
        """
        exc = _exceptions(allow)
        self._replace({"allow4": [_ex(e) for e in exc if ":" not in e[0]],
                       "allow6": [_ex(e) for e in exc if ":" in e[0]]})

    def set_tun(self, tun: str | None) -> None:
        """Let traffic through interface ``tun`` instead (None: none) in one transaction.

        Raises:
            KillSwitchError: malformed, or not engaged.
        """
        self.set_tuns([tun] if tun else [])

    def set_tuns(self, tuns: Iterable[str]) -> None:
        """Let traffic through all these interfaces (`--hops 2`: the exit's tunnel and the relay's,
        which carries the first one's datagrams), in one transaction.

        Raises:
            KillSwitchError: malformed, or not engaged.
        """
        self._replace({"tunnels": [json.dumps(_ifname(t)) for t in tuns]})

    def set_open_ports(self, ports: Iterable[int]) -> None:
        """Let the tunnel's own (fwmark-marked) socket on these local UDP ports talk to any address,
        in one transaction; an empty list closes it again.

        For discovery only: punching through a node's NAT sends to an address the rendezvous names
        during the exchange, which no endpoint list can know in advance. Only sockets carrying the
        fwmark (set with CAP_NET_ADMIN, i.e. by the tunnel) match, and they carry nothing but
        WireGuard and overlay messages; DNS stays refused.

        Raises:
            KillSwitchError: malformed, or not engaged.
        """
        self._replace({"open_ports": [str(_check_port(p)) for p in ports]})

    def release(self) -> None:
        """Remove the table (idempotent). Only an explicit disconnect should call this."""
        self._nft(f"table inet {self.table} {{}}\ndelete table inet {self.table}\n")

    # -- reading the kernel --------------------------------------------------------------------------

    def engaged(self) -> bool:
        """Whether the kernel holds this table with its dropping output chain."""
        return self.state() is not None

    def state(self) -> KillSwitchState | None:
        """The table as the kernel has it, or None when it is not there."""
        proc = run(["nft", "-j", "list", "table", "inet", self.table], netns=self.netns,
                   check=False)
        if proc.returncode != 0:
            return None
        items = json.loads(proc.stdout)["nftables"]
        sets: dict[str, list] = {}
        counters: dict[str, int] = {}
        policy = None
        for item in items:
            if "set" in item:
                sets[item["set"]["name"]] = item["set"].get("elem", [])
            elif "counter" in item:
                counters[item["counter"]["name"]] = item["counter"]["packets"]
            elif "chain" in item and item["chain"]["name"] == "output":
                policy = item["chain"].get("policy")
        if policy != "drop":
            return None
        endpoints = tuple((str(e["concat"][0]), _port(e["concat"][1]))
                          for name in ("endpoints4", "endpoints6") for e in sets.get(name, []))
        allow = tuple((str(e["concat"][0]), _port(e["concat"][2]), str(e["concat"][1]))
                      for name in ("allow4", "allow6") for e in sets.get(name, []))
        return KillSwitchState(tuple(sets.get("tunnels", [])), endpoints, allow,
                               counters.get("dropped_out", 0), counters.get("dropped_in", 0),
                               counters.get("dropped_forward", 0))

    # -- nft -----------------------------------------------------------------------------------------

    def _replace(self, sets: dict[str, list[str]]) -> None:
        if not self.engaged():
            raise KillSwitchError(f"kill switch table {self.table!r} is not engaged")
        lines = []
        for name, elements in sets.items():
            lines.append(f"flush set inet {self.table} {name}")
            if elements:
                lines.append(f"add element inet {self.table} {name} {{ {', '.join(elements)} }}")
        self._nft("\n".join(lines) + "\n")

    def _nft(self, script: str) -> None:
        run(["nft", "-f", "-"], netns=self.netns, input=script)

    def _table_script(self, tuns: list[str], eps: list[tuple[str, int]],
                      exc: list[AllowRule]) -> str:
        def elements(items: list[str]) -> str:
            return f" elements = {{ {', '.join(items)} }};" if items else ""

        mark = f"meta mark {self.fwmark} " if self.fwmark is not None else ""
        ndp_out = ndp_in = dhcp_out = dhcp_in = ""
        if self.ndp:  # RFC 4861 section 7.1.1/7.1.2: valid ND packets carry hop limit 255
            ndp_out = ("    icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }"
                       " ip6 hoplimit 255 accept\n")
            ndp_in = ("    icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert }"
                      " ip6 hoplimit 255 accept\n")
        if self.dhcp:  # RFC 2131 (67/68) and RFC 8415 (546/547) client<->server ports
            dhcp_out = ("    udp sport 68 udp dport 67 accept\n"
                        "    ip6 saddr fe80::/10 udp sport 546 udp dport 547 accept\n")
            dhcp_in = ("    udp sport 67 udp dport 68 accept\n"
                       "    ip6 daddr fe80::/10 udp sport 547 udp dport 546 accept\n")
        t = self.table
        return (
            f"table inet {t} {{\n"
            f"  set tunnels {{ type ifname;{elements([json.dumps(n) for n in tuns])} }}\n"
            f"  set endpoints4 {{ type ipv4_addr . inet_service;"
            f"{elements([_ep(a, p) for a, p in eps if ':' not in a])} }}\n"
            f"  set endpoints6 {{ type ipv6_addr . inet_service;"
            f"{elements([_ep(a, p) for a, p in eps if ':' in a])} }}\n"
            f"  set allow4 {{ type ipv4_addr . inet_proto . inet_service;"
            f"{elements([_ex(e) for e in exc if ':' not in e[0]])} }}\n"
            f"  set allow6 {{ type ipv6_addr . inet_proto . inet_service;"
            f"{elements([_ex(e) for e in exc if ':' in e[0]])} }}\n"
            "  set open_ports { type inet_service; }\n"
            "  counter dropped_out {}\n  counter dropped_in {}\n  counter dropped_forward {}\n"
            "  chain output {\n    type filter hook output priority filter; policy drop;\n"
            "    oifname \"lo\" accept\n    oifname @tunnels accept\n"
            f"    {mark}ip daddr . udp dport @endpoints4 accept\n"
            f"    {mark}ip6 daddr . udp dport @endpoints6 accept\n"
            f"    {mark}udp sport @open_ports udp dport != 53 accept\n"
            "    ip daddr . meta l4proto . th dport @allow4 accept\n"
            "    ip6 daddr . meta l4proto . th dport @allow6 accept\n"
            f"{ndp_out}{dhcp_out}"
            "    counter name \"dropped_out\" drop\n  }\n"
            "  chain input {\n    type filter hook input priority filter; policy drop;\n"
            "    iifname \"lo\" accept\n    iifname @tunnels accept\n"
            "    ip saddr . udp sport @endpoints4 accept\n"
            "    ip6 saddr . udp sport @endpoints6 accept\n"
            "    udp dport @open_ports udp sport != 53 accept\n"
            "    ct state related meta l4proto { icmp, ipv6-icmp } accept\n"
            "    ct state established,related ip saddr . meta l4proto . th sport @allow4 accept\n"
            "    ct state established,related ip6 saddr . meta l4proto . th sport @allow6 accept\n"
            f"{ndp_in}{dhcp_in}"
            "    counter name \"dropped_in\" drop\n  }\n"
            "  chain forward {\n    type filter hook forward priority filter; policy drop;\n"
            "    oifname @tunnels accept\n"
            "    iifname @tunnels ct state established,related accept\n"
            "    counter name \"dropped_forward\" drop\n  }\n"
            "}\n")


# -- validation (everything spliced into a script is checked first) --------------------------------

def _ifname(name: str) -> str:
    if not isinstance(name, str) or not _IFNAME.match(name):
        raise KillSwitchError(f"bad interface name {name!r}")
    return name


def _address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(str(address).strip("[]")))
    except ValueError as exc:
        raise KillSwitchError(f"not an IP address: {address!r}") from exc


def _check_port(port) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise KillSwitchError(f"bad port {port!r}")
    return port


def _endpoints(endpoints: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    return sorted({(_address(a), _check_port(p)) for a, p in endpoints})


def _exceptions(allow: Iterable[AllowRule]) -> list[AllowRule]:
    out = set()
    for item in allow:
        try:
            address, port, proto = item
        except (TypeError, ValueError) as exc:
            raise KillSwitchError(f"an exception is (address, port, 'tcp'|'udp'), not {item!r}") from exc
        if proto not in ("tcp", "udp"):
            raise KillSwitchError(f"exception protocol must be 'tcp' or 'udp', not {proto!r}")
        if _check_port(port) == DNS_PORT:
            raise KillSwitchError("DNS (port 53) is never an exception: it goes through the tunnel")
        out.add((_address(address), port, proto))
    return sorted(out)


def _ep(address: str, port: int) -> str:
    return f"{address} . {port}"


def _ex(exc: AllowRule) -> str:
    return f"{exc[0]} . {exc[2]} . {exc[1]}"


def _port(value) -> int:
    return value if isinstance(value, int) else socket.getservbyname(str(value))
