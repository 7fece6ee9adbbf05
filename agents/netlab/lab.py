"""Hosts, links, an "internet" bridge and NAT routers made of Linux network namespaces.

Every namespace is named ``<prefix>-<run id>-<name>`` so parallel runs never collide; every process
is started through :meth:`Namespace.spawn` so the lab knows its PID; :meth:`Lab.close` (also run on
``with`` exit and at interpreter exit) kills those PIDs, deletes those namespaces (which deletes their
interfaces) and removes UAPI sockets registered with :meth:`Lab.track_file`.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import enum
import ipaddress
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence

from agents.netlab.capture import UdpCapture
from agents.netlab.errors import LabError
from agents.netlab.nsenter import enter_namespace

__all__ = ["Internet", "Lab", "Link", "NatRouter", "NatType", "Namespace"]

#: Linux IFNAMSIZ is 16 including the NUL, so interface names have at most 15 characters.
IFNAMSIZ = 15
#: Seconds a spawned process gets between SIGTERM and SIGKILL at cleanup.
TERM_GRACE_S = 3.0
#: Default timeout of :meth:`Namespace.run`, so a hung command cannot hang a test run.
RUN_TIMEOUT_S = 60.0


class NatType(enum.Enum):
    """How a :class:`NatRouter` maps and filters (RFC 4787 terms).

    * ``FULL_CONE``: endpoint-independent mapping and filtering. nftables ``masquerade`` keeps the
      inside source port when it is free (endpoint-independent mapping); a ``dnat`` rule sends every
      unsolicited inbound UDP/TCP port to the LAN's first host, so any outside host may use a mapping
      once made. Supports one LAN host (the classic "DMZ host" cone).
    * ``PORT_RESTRICTED``: plain ``masquerade``: endpoint-independent mapping; conntrack only lets in
      replies from the exact remote address and port (address-and-port-dependent filtering).
    * ``SYMMETRIC``: ``masquerade random``: every new flow (5-tuple) gets a random outside port, so
      each destination sees a different mapping (endpoint-dependent mapping) and filtering is
      address-and-port dependent. Hole punching between two of these fails; relays are needed.

    ``tests/wireguard/test_netns_lab.py`` checks each behaviour on the wire.
    """

    FULL_CONE = "full-cone"
    PORT_RESTRICTED = "port-restricted"
    SYMMETRIC = "symmetric"


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = RUN_TIMEOUT_S,
         input: bytes | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)!r} exited {proc.returncode}: "
                       f"{proc.stderr.decode(errors='replace').strip()}")
    return proc


def _plug(host: "Namespace", ifname: str, cidr: str, bridge_ns: "Namespace", bridge: str,
          port: str) -> None:
    """A veth from ``host`` (``ifname``, address ``cidr``) to port ``port`` of ``bridge``."""
    _run(["ip", "link", "add", "name", ifname, "netns", host.name, "type", "veth",
          "peer", "name", port, "netns", bridge_ns.name])
    bridge_ns.ip("link", "set", port, "master", bridge, "up")
    host.ip("addr", "add", cidr, "dev", ifname)
    host.ip("link", "set", ifname, "up")


class Namespace:
    """One host: a network namespace with loopback up. Made by :meth:`Lab.add_host`.

    Attributes:
        lab: the owning lab.
        short: the name the test gave (``"alice"``).
        name: the unique namespace name (``ip netns exec <name> ...``).
        address: the host's first IPv4 address (no prefix), set when it is attached somewhere.
        gateway: its default gateway, if it has one.
    """

    def __init__(self, lab: "Lab", short: str, name: str) -> None:
        self.lab = lab
        self.short = short
        self.name = name
        self.address: str | None = None
        self.gateway: str | None = None
        self._ifcount = 0

    def __repr__(self) -> str:
        return f"Namespace({self.short!r}, name={self.name!r}, address={self.address!r})"

    def next_ifname(self, stem: str = "eth") -> str:
        """A fresh interface name inside this namespace (``eth0``, ``eth1``, ...)."""
        name = f"{stem}{self._ifcount}"
        self._ifcount += 1
        return name

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = RUN_TIMEOUT_S,
            input: bytes | None = None) -> subprocess.CompletedProcess:
        """Run a command to completion inside the namespace; capture its output.

        Raises:
            LabError: ``check`` and the command failed.
            subprocess.TimeoutExpired: it ran longer than ``timeout`` seconds.
        """
        return _run(["ip", "netns", "exec", self.name, *argv], check=check, timeout=timeout,
                    input=input)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``ip -n <ns> args...``."""
        return _run(["ip", "-n", self.name, *args], check=check)

    def spawn(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
              stdout: int | None = subprocess.DEVNULL, stderr: int | None = subprocess.PIPE,
              stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen:
        """Start a long-running process inside the namespace; the lab kills it at cleanup.

        ``ip netns exec`` execs the command in place, so the returned PID is the command's own.
        """
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], env=env, stdout=stdout,
                                stderr=stderr, stdin=stdin)
        self.lab._procs.append(proc)
        return proc

    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        """Run the body with the calling thread inside this namespace (sockets made there stay)."""
        with enter_namespace(self.name):
            yield

    def ping(self, address: str, count: int = 3, interval: float = 0.2) -> bool:
        """Whether ``count`` pings to ``address`` all come back (bounded: 2 s wait per reply)."""
        result = self.run(["ping", "-c", str(count), "-i", str(interval), "-W", "2", address],
                          check=False, timeout=30 + count * interval)
        return result.returncode == 0

    def sysctl(self, key: str, value: str | int) -> None:
        """Set a per-namespace sysctl such as ``net.ipv4.ip_forward``."""
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def set_address(self, ifname: str, cidr: str) -> str:
        """Replace every IPv4 address on ``ifname`` with ``cidr``; keep the default route.

        Used for roaming tests (a host changes its address). Returns the new bare address.
        """
        self.ip("-4", "addr", "flush", "dev", ifname)
        self.ip("addr", "add", cidr, "dev", ifname)
        address = cidr.split("/")[0]
        self.address = address
        if self.gateway:
            self.ip("route", "replace", "default", "via", self.gateway)
        return address

    def shape(self, ifname: str, *, rate_mbit: float | None = None, delay_ms: float = 0,
              jitter_ms: float = 0, loss_percent: float = 0) -> None:
        """Shape egress of ``ifname``: a rate alone uses ``tc tbf``; delay/jitter/loss need netem.

        Raises:
            LabError: the kernel lacks the qdisc (this machine's kernel has tbf but no sch_netem).
        """
        if delay_ms or jitter_ms or loss_percent:
            argv = ["tc", "qdisc", "replace", "dev", ifname, "root", "netem"]
            if delay_ms or jitter_ms:
                argv += ["delay", f"{delay_ms}ms", f"{jitter_ms}ms"]
            if loss_percent:
                argv += ["loss", f"{loss_percent}%"]
            if rate_mbit:
                argv += ["rate", f"{rate_mbit}mbit"]
        elif rate_mbit:
            # Burst of 32 kbit and 50 ms of queue: enough for a TCP flow to reach the rate.
            argv = ["tc", "qdisc", "replace", "dev", ifname, "root", "tbf", "rate",
                    f"{rate_mbit}mbit", "burst", "32kbit", "latency", "50ms"]
        else:
            argv = ["tc", "qdisc", "del", "dev", ifname, "root"]
        self.run(argv)

    def capture_udp(self, port: int | None = None) -> UdpCapture:
        """Capture UDP datagrams to/from ``port`` on this host's interfaces (see :class:`UdpCapture`)."""
        return UdpCapture(self.name, port)


@dataclasses.dataclass
class Link:
    """A veth pair between two hosts (point to point, one /24)."""

    a: Namespace
    b: Namespace
    a_ifname: str
    b_ifname: str
    a_address: str
    b_address: str


#: Router hops the lab's internet stands for between any two attached hosts. A bridge forwards without
#: touching the TTL, so the core drops a UDP datagram that would not survive that many routers:
#: without it the "low-TTL" first punch of NAT traversal (agents.overlay.nat.LOW_TTL), which on the
#: real internet expires between the two NATs, reached the peer's NAT router one bridge away and left
#: there the conntrack entry that makes its masquerade pick another port (no punched path ever).
INTERNET_HOPS = 2
#: The internet namespace's nftables table (bridge family: it sees frames crossing br0).
INTERNET_CORE = f"""
table bridge internet_core {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        meta l4proto udp ip ttl <= {INTERNET_HOPS} drop
        meta l4proto udp ip6 hoplimit <= {INTERNET_HOPS} drop
    }}
}}
"""


class Internet:
    """A shared LAN standing for the public internet: a Linux bridge in its own namespace.

    Every host or NAT router attached gets the next address of ``subnet`` (starting at .2) and can
    reach every other attached address directly.
    """

    def __init__(self, lab: "Lab", namespace: Namespace, subnet: ipaddress.IPv4Network) -> None:
        self.lab = lab
        self.namespace = namespace
        self.subnet = subnet
        self._hosts = subnet.hosts()
        next(self._hosts)  # .1 is left free (a conventional gateway address)
        self._ports = 0

    def next_address(self) -> str:
        """The next unused address of the subnet, as ``a.b.c.d/len``."""
        return f"{next(self._hosts)}/{self.subnet.prefixlen}"

    def attach(self, host: Namespace, address: str | None = None, ifname: str | None = None) -> str:
        """Connect ``host`` to the bridge; give it ``address`` (or the next free one).

        Returns:
            The host's bare address on this network.
        """
        cidr = address or self.next_address()
        if "/" not in cidr:
            cidr = f"{cidr}/{self.subnet.prefixlen}"
        _plug(host, ifname or host.next_ifname(), cidr, self.namespace, "br0", f"p{self._ports}")
        self._ports += 1
        bare = cidr.split("/")[0]
        if host.address is None:
            host.address = bare
        return bare


class NatRouter:
    """A NAT router: ``wan0`` on an :class:`Internet`, ``lan0`` on its own bridge for LAN hosts.

    Attributes:
        namespace: the router's namespace.
        nat_type: its :class:`NatType`.
        public_address: its address on the internet (what the outside sees).
        lan: the LAN subnet; the router is ``.1``.
    """

    def __init__(self, lab: "Lab", namespace: Namespace, nat_type: NatType, public_address: str,
                 lan: ipaddress.IPv4Network) -> None:
        self.lab = lab
        self.namespace = namespace
        self.nat_type = nat_type
        self.public_address = public_address
        self.lan = lan
        self.lan_gateway = str(next(lan.hosts()))
        self._hosts = lan.hosts()
        next(self._hosts)
        self._ports = 0
        self.lan_hosts: list[Namespace] = []

    def attach(self, host: Namespace) -> str:
        """Put ``host`` on the LAN with the next address and a default route via the router.

        Raises:
            LabError: a full-cone router already has its one LAN host.
        """
        if self.nat_type is NatType.FULL_CONE and self.lan_hosts:
            raise LabError("a full-cone NatRouter serves one LAN host (its DMZ host)")
        cidr = f"{next(self._hosts)}/{self.lan.prefixlen}"
        _plug(host, host.next_ifname(), cidr, self.namespace, "lan0", f"p{self._ports}")
        self._ports += 1
        host.ip("route", "add", "default", "via", self.lan_gateway)
        host.gateway = self.lan_gateway
        bare = cidr.split("/")[0]
        if host.address is None:
            host.address = bare
        self.lan_hosts.append(host)
        if self.nat_type is NatType.FULL_CONE:
            # Endpoint-independent filtering: unsolicited inbound to any unprivileged port goes to
            # the DMZ host; masquerade preserves ports, so that is where the mapping points.
            self._nft(f"add rule ip warren prerouting iifname \"wan0\" udp dport 1024-65535 "
                      f"dnat to {bare}")
            self._nft(f"add rule ip warren prerouting iifname \"wan0\" tcp dport 1024-65535 "
                      f"dnat to {bare}")
        return bare

    def _nft(self, command: str) -> None:
        self.namespace.run(["nft", command])

    def _install(self) -> None:
        ns = self.namespace
        ns.sysctl("net.ipv4.ip_forward", 1)
        self._nft("add table ip warren")
        self._nft("add chain ip warren prerouting { type nat hook prerouting priority dstnat; }")
        self._nft("add chain ip warren postrouting { type nat hook postrouting priority srcnat; }")
        masq = "masquerade random" if self.nat_type is NatType.SYMMETRIC else "masquerade"
        self._nft(f"add rule ip warren postrouting oifname \"wan0\" {masq}")

    def conntrack_flush(self) -> None:
        """Forget every NAT mapping (as a router reboot would)."""
        self.namespace.run(["conntrack", "-F"], check=False)


class Lab:
    """Builds and tears down a namespace topology; use as a context manager.

    Args:
        prefix: start of every namespace name (``ip netns list`` shows ``<prefix>-<run id>-...``).
    """

    def __init__(self, prefix: str = "warren") -> None:
        self.run_id = secrets.token_hex(3)
        self.prefix = f"{prefix}-{self.run_id}"
        self.namespaces: list[Namespace] = []
        self._procs: list[subprocess.Popen] = []
        self._files: list[str] = []
        self._deferred: list = []
        self._links = 0
        self._ifnames = 0
        self._closed = False
        atexit.register(self.close)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building ---------------------------------------------------------------------------------

    def unique_ifname(self, stem: str) -> str:
        """An interface name unique to this run and fit for IFNAMSIZ, e.g. for wireguard-go.

        wireguard-go's UAPI folder /var/run/wireguard is shared by all namespaces, so its interface
        names must differ between concurrent runs.
        """
        self._ifnames += 1
        return f"{stem[:IFNAMSIZ - 8]}{self.run_id}{self._ifnames % 100:02d}"

    def add_host(self, name: str) -> Namespace:
        """A new namespace with loopback up."""
        full = f"{self.prefix}-{name}"
        _run(["ip", "netns", "add", full])
        ns = Namespace(self, name, full)
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def connect(self, a: Namespace, b: Namespace, *, subnet: str | None = None,
                mtu: int | None = None) -> Link:
        """Join two hosts with a veth pair on a fresh /24 (``10.200.<n>.0/24`` unless given).

        ``a`` gets ``.1`` and ``b`` gets ``.2``.
        """
        self._links += 1
        net = ipaddress.IPv4Network(subnet or f"10.200.{self._links % 250}.0/24")
        hosts = net.hosts()
        a_addr, b_addr = str(next(hosts)), str(next(hosts))
        a_if, b_if = a.next_ifname(), b.next_ifname()
        _run(["ip", "link", "add", "name", a_if, "netns", a.name, "type", "veth",
              "peer", "name", b_if, "netns", b.name])
        for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            ns.ip("addr", "add", f"{addr}/{net.prefixlen}", "dev", ifname)
            if mtu:
                ns.ip("link", "set", ifname, "mtu", str(mtu))
            ns.ip("link", "set", ifname, "up")
            if ns.address is None:
                ns.address = addr
        return Link(a, b, a_if, b_if, a_addr, b_addr)

    def add_internet(self, subnet: str = "198.51.100.0/24", name: str = "inet") -> Internet:
        """A bridge namespace standing for the public internet (RFC 5737 TEST-NET-2 by default)."""
        ns = self.add_host(name)
        ns.ip("link", "add", "br0", "type", "bridge")
        ns.ip("link", "set", "br0", "up")
        ns.run(["nft", "-f", "-"], input=INTERNET_CORE.encode())
        return Internet(self, ns, ipaddress.IPv4Network(subnet))

    def add_nat(self, name: str, nat_type: NatType, internet: Internet,
                lan: str | None = None) -> NatRouter:
        """A NAT router namespace with its WAN on ``internet`` and an empty LAN.

        Args:
            name: short name of the router.
            nat_type: mapping/filtering behaviour (see :class:`NatType`).
            internet: where its ``wan0`` goes.
            lan: LAN subnet (default ``192.168.<n>.0/24``, n counting routers).
        """
        ns = self.add_host(name)
        public = internet.attach(ns, ifname="wan0")
        ns.ip("link", "add", "lan0", "type", "bridge")
        self._links += 1
        net = ipaddress.IPv4Network(lan or f"192.168.{self._links % 250}.0/24")
        gateway = next(net.hosts())
        ns.ip("addr", "add", f"{gateway}/{net.prefixlen}", "dev", "lan0")
        ns.ip("link", "set", "lan0", "up")
        router = NatRouter(self, ns, nat_type, public, net)
        router._install()
        return router

    def track_file(self, path: str) -> None:
        """Remove ``path`` at cleanup if it still exists (e.g. a killed wireguard-go's UAPI socket)."""
        self._files.append(path)

    def defer(self, callback) -> None:
        """Call ``callback()`` at cleanup, before processes are killed (last deferred runs first)."""
        self._deferred.append(callback)

    def spawn(self, ns: Namespace, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Same as ``ns.spawn(argv, **kwargs)``."""
        return ns.spawn(argv, **kwargs)

    # -- teardown ---------------------------------------------------------------------------------

    def stop(self, proc: subprocess.Popen, grace: float = TERM_GRACE_S) -> int | None:
        """SIGTERM ``proc`` by PID, SIGKILL it after ``grace`` seconds; return its exit code."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream:
                with contextlib.suppress(OSError):
                    stream.close()
        return proc.returncode

    def close(self) -> None:
        """Kill every spawned process, delete every namespace, remove tracked files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for callback in reversed(self._deferred):
            with contextlib.suppress(Exception):
                callback()
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for ns in reversed(self.namespaces):
            _run(["ip", "netns", "del", ns.name], check=False)
        for path in self._files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    def wait_for(self, predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
        """Poll ``predicate()`` until it is truthy or ``timeout`` seconds pass (bounded loop)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return bool(predicate())
