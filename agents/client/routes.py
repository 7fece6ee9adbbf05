"""Full-tunnel routing the way wg-quick(8) does it, for IPv4 and IPv6, undoable by a later process.

wg-quick's ``add_default`` (wireguard-tools, src/wg-quick/linux.bash) sends everything into the tunnel
without a loop for the tunnel's own UDP packets:

* ``default dev <tun> table T``: the tunnel's default route lives in its own table;
* ``ip rule add not fwmark M table T``: every packet *not* marked M looks there; the WireGuard UDP
  socket sets ``SO_MARK`` M (agents.wireguard.runtime does, with DEFAULT_FWMARK), so it uses the
  main table and leaves by the uplink;
* ``ip rule add table main suppress_prefixlength 0``: the main table still answers for its specific
  routes (the LAN), but its default route is ignored;
* ``net.ipv4.conf.all.src_valid_mark=1`` and an nftables table copying the WireGuard socket's mark
  into conntrack and back onto its replies (wg-quick's ``premangle``/``postmangle`` chains): strict
  reverse-path filtering (``rp_filter=1``) then checks a reply from an off-link endpoint against
  the main table, as the request went, instead of against the tunnel, and lets it in.

Beyond wg-quick, ``bypass`` (address, port) pairs get one rule each, ``to A ipproto tcp dport P
lookup main``, at a priority ahead of the two above: TCP to the chain RPC leaves by the uplink, the
kill switch's one exception (agents.client.rpc_access). Table T also gets an ``unreachable default`` at the worst metric: when the TUN
device vanishes (the tunnel process died) its route goes with it, and unmarked traffic then finds
"unreachable" instead of falling through to the main table's default route. Routing fails closed
even before the kill switch (agents.client.killswitch) drops anything.

:meth:`FullTunnelRoutes.to_dict` / :meth:`FullTunnelRoutes.from_dict` carry what was installed to a
later process (`warren disconnect` after the client crashed), whose :meth:`FullTunnelRoutes.remove`
undoes it. The runtime installs the same rules itself when a peer's allowed IPs hold a ``/0``; as
wg-quick's ``down`` does, :meth:`remove` deletes every copy of the two rules of its (mark, table).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from agents.client.hostcmd import HostCommandError, run
from agents.wireguard.tun import DEFAULT_FWMARK

__all__ = ["BYPASS_PRIORITY", "FullTunnelRoutes", "HostCommandError", "UNREACHABLE_METRIC"]

#: Priority of the bypass rules: ahead of wg-quick's two (added without a priority, they take the
#: numbers just below the main table's 32766) and of anything a distribution usually adds.
BYPASS_PRIORITY = 5210
#: The largest route metric (u32): the fail-closed route loses to any route the tunnel adds.
UNREACHABLE_METRIC = 4294967295
#: How many copies of a rule :meth:`FullTunnelRoutes.remove` deletes at most (bounds a loop that a
#: racing process re-adding the rule could otherwise keep alive).
MAX_RULE_COPIES = 64
_SRC_VALID_MARK = "net.ipv4.conf.all.src_valid_mark"


def _conntrack_table(name: str, fwmark: int) -> str:
    """wg-quick's mark-restoring chains (linux.bash ``add_default``), for IPv4 and IPv6 at once."""
    return (f"table inet {name} {{\n"
            "  chain premangle { type filter hook prerouting priority mangle; policy accept;\n"
            "    meta l4proto udp meta mark set ct mark\n  }\n"
            "  chain postmangle { type filter hook postrouting priority mangle; policy accept;\n"
            f"    meta l4proto udp meta mark {fwmark} ct mark set meta mark\n  }}\n"
            "}\n")


class FullTunnelRoutes:
    """Route all IPv4 and IPv6 traffic into ``tun`` with wg-quick's fwmark policy routing.

    Args:
        tun: the tunnel interface (it need not exist for :meth:`remove`).
        fwmark: the mark of the tunnel's UDP socket (SO_MARK), whose packets bypass the tunnel.
        table: routing table of the tunnel's default routes.
        netns: network namespace to act in (``ip netns exec``); None: the caller's own.
        families: "4", "6" or both.
        bypass: (address, port) pairs whose TCP traffic is routed by the main table, outside the
            tunnel (the chain RPC: agents.client.rpc_access).
    """

    def __init__(self, tun: str, fwmark: int = DEFAULT_FWMARK, table: int = DEFAULT_FWMARK, *,
                 netns: str | None = None, families: tuple[str, ...] = ("4", "6"),
                 bypass: tuple[tuple[str, int], ...] = ()) -> None:
        if not set(families) <= {"4", "6"} or not families:
            raise ValueError(f"families must be '4' and/or '6', not {families!r}")
        self.tun = tun
        self.fwmark = int(fwmark)
        self.table = int(table)
        self.netns = netns
        self.families = tuple(families)
        self.bypass = tuple((str(ipaddress.ip_address(a)), int(p)) for a, p in bypass)
        #: Whether install() ran and remove() has not yet.
        self.installed = False
        #: src_valid_mark before install() changed it (None: install() left it alone).
        self.src_valid_mark_before: str | None = None
        #: The nftables table (family inet) of the conntrack-mark chains.
        self.nft_table = f"warren_routes_{self.table}"

    # -- persistence --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record of what is installed, for :meth:`from_dict` in another process."""
        return {"tun": self.tun, "fwmark": self.fwmark, "table": self.table, "netns": self.netns,
                "families": list(self.families), "installed": self.installed,
                "bypass": [list(pair) for pair in self.bypass],
                "src_valid_mark_before": self.src_valid_mark_before}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FullTunnelRoutes":
        """The object :meth:`to_dict` described (so its :meth:`remove` undoes that install)."""
        routes = cls(data["tun"], data["fwmark"], data["table"], netns=data.get("netns"),
                     families=tuple(data.get("families", ("4", "6"))),
                     bypass=tuple(tuple(pair) for pair in data.get("bypass", ())))
        routes.installed = bool(data.get("installed", True))
        routes.src_valid_mark_before = data.get("src_valid_mark_before")
        return routes

    # -- install / remove ----------------------------------------------------------------------------

    def install(self) -> None:
        """Add the routes, rules and sysctl (idempotent: what is already there is not doubled).

        Raises:
            HostCommandError: `ip`, `nft` or `sysctl` refused (no root, no such device, IPv6
                disabled).
        """
        for fam in self.families:
            self._ip(fam, "route", "replace", "default", "dev", self.tun, "table", str(self.table))
            self._ip(fam, "route", "replace", "unreachable", "default", "table", str(self.table),
                     "metric", str(UNREACHABLE_METRIC))
            if not self._rule_count(fam, self._is_mark_rule):
                self._ip(fam, "rule", "add", *self._mark_rule())
            if not self._rule_count(fam, _is_suppress_rule):
                self._ip(fam, "rule", "add", *_SUPPRESS_RULE)
            for pair, rule in self._bypass_rules(fam):
                if not self._rule_count(fam, lambda r, pair=pair: _is_bypass_rule(r, *pair)):
                    self._ip(fam, "rule", "add", *rule)
        self._nft(f"table inet {self.nft_table} {{}}\ndelete table inet {self.nft_table}\n"
                  + _conntrack_table(self.nft_table, self.fwmark))
        if "4" in self.families:
            current = self._sysctl_get(_SRC_VALID_MARK)
            if current != "1":
                if self.src_valid_mark_before is None:
                    self.src_valid_mark_before = current
                self._sysctl_set(_SRC_VALID_MARK, "1")
        self.installed = True

    def set_tun(self, tun: str) -> None:
        """Move the default routes to another interface in one step each (``ip route replace``).

        Raises:
            HostCommandError: `ip` refused (no such device).
        """
        old, self.tun = self.tun, tun
        if not self.installed or old == tun:
            return
        for fam in self.families:
            self._ip(fam, "route", "replace", "default", "dev", tun, "table", str(self.table))
            if self._has_route(fam, old):
                self._ip(fam, "route", "del", "default", "dev", old, "table", str(self.table))

    def remove(self) -> None:
        """Remove what :meth:`install` added; idempotent, and fine when the interface is gone.

        Raises:
            HostCommandError: `ip` refused a deletion of something that is there.
        """
        for fam in self.families:
            if self._has_route(fam, self.tun):
                self._ip(fam, "route", "del", "default", "dev", self.tun, "table", str(self.table))
            if self._has_unreachable(fam):
                self._ip(fam, "route", "del", "unreachable", "default", "table", str(self.table),
                         "metric", str(UNREACHABLE_METRIC))
            for _ in range(MAX_RULE_COPIES):
                if not self._rule_count(fam, self._is_mark_rule):
                    break
                self._ip(fam, "rule", "del", *self._mark_rule())
            for _ in range(MAX_RULE_COPIES):
                if not self._rule_count(fam, _is_suppress_rule):
                    break
                self._ip(fam, "rule", "del", *_SUPPRESS_RULE)
            for pair, rule in self._bypass_rules(fam):
                for _ in range(MAX_RULE_COPIES):
                    if not self._rule_count(fam, lambda r, pair=pair: _is_bypass_rule(r, *pair)):
                        break
                    self._ip(fam, "rule", "del", *rule)
        self._nft(f"table inet {self.nft_table} {{}}\ndelete table inet {self.nft_table}\n")
        if self.src_valid_mark_before is not None:
            self._sysctl_set(_SRC_VALID_MARK, self.src_valid_mark_before)
            self.src_valid_mark_before = None
        self.installed = False

    # -- reading the kernel ----------------------------------------------------------------------------

    def _mark_rule(self) -> list[str]:
        return ["not", "fwmark", str(self.fwmark), "table", str(self.table)]

    def _bypass_rules(self, fam: str) -> list[tuple[tuple[str, int], list[str]]]:
        """((address, port), `ip rule` arguments) of this family's bypass pairs."""
        return [((address, port), ["to", address, "ipproto", "tcp", "dport", str(port), "lookup", "main",
                                   "priority", str(BYPASS_PRIORITY)])
                for address, port in self.bypass if (":" in address) == (fam == "6")]

    def _is_mark_rule(self, rule: dict) -> bool:
        return ("not" in rule and _mark(rule.get("fwmark")) == self.fwmark
                and rule.get("table") == str(self.table) and "fwmask" not in rule)

    def _rule_count(self, fam: str, match) -> int:
        rules = json.loads(self._ip(fam, "-j", "rule", "show").stdout or "[]")
        return sum(1 for rule in rules if match(rule))

    def _routes(self, fam: str) -> list[dict]:
        out = self._ip(fam, "-j", "route", "show", "table", str(self.table), check=False)
        if out.returncode != 0:  # an empty table does not exist yet on some kernels
            return []
        return json.loads(out.stdout or "[]")

    def _has_route(self, fam: str, dev: str) -> bool:
        return any(r.get("dst") == "default" and r.get("dev") == dev and "type" not in r
                   for r in self._routes(fam))

    def _has_unreachable(self, fam: str) -> bool:
        return any(r.get("dst") == "default" and r.get("type") == "unreachable"
                   and r.get("metric") == UNREACHABLE_METRIC for r in self._routes(fam))

    def _ip(self, fam: str, *args: str, check: bool = True):
        return run(["ip", f"-{fam}", *args], netns=self.netns, check=check)

    def _nft(self, script: str) -> None:
        run(["nft", "-f", "-"], netns=self.netns, input=script)

    def _sysctl_get(self, key: str) -> str:
        return run(["sysctl", "-n", key], netns=self.netns).stdout.strip()

    def _sysctl_set(self, key: str, value: str) -> None:
        run(["sysctl", "-q", "-w", f"{key}={value}"], netns=self.netns)


#: wg-quick's second rule: the main table decides, except by its default route.
_SUPPRESS_RULE = ("table", "main", "suppress_prefixlength", "0")


def _is_bypass_rule(rule: dict, address: str, port: int) -> bool:
    """Whether ``ip -j rule show``'s ``rule`` is the bypass rule of (address, port)."""
    return (rule.get("dst") == address and rule.get("ipproto") == "tcp" and rule.get("dport") == port
            and rule.get("table") == "main" and rule.get("priority") == BYPASS_PRIORITY)


def _is_suppress_rule(rule: dict) -> bool:
    selectors = set(rule) - {"priority", "src", "table", "suppress_prefixlen", "flags"}
    return (rule.get("table") == "main" and rule.get("suppress_prefixlen") == 0
            and rule.get("src", "all") == "all" and not selectors)


def _mark(value: str | None) -> int | None:
    if value is None:
        return None
    return int(value, 0)
