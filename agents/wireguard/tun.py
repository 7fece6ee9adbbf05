"""A Linux TUN device opened through /dev/net/tun.

The kernel hands us whole IP packets (``IFF_TUN | IFF_NO_PI``: no Ethernet header, no packet-info
prefix) with one ``read`` each and takes one packet per ``write``. Addresses, MTU, routes and link
state are set with iproute2 (`ip`), always in the network namespace the device was opened in (we
keep a handle on it and run `ip` through `nsenter`), whichever thread asks later.

With ``offloads=True`` the device is opened with ``IFF_VNET_HDR`` and asked (``TUNSETOFFLOAD``) for
checksum offload, TSO for IPv4 and IPv6, and USO where the kernel has it (6.2 and later): every read
and write then carries a 10-byte ``virtio_net_hdr`` and a read may return a 64 KiB TCP train
(agents.wireguard.vnet cuts and merges them). Where the kernel refuses the offloads the device is
opened again the plain way (:attr:`TunDevice.vnet_hdr` says which).

A route to ``0.0.0.0/0`` or ``::/0`` (a full tunnel) is installed the way wg-quick(8) does it, so the
tunnel's own UDP packets do not loop into it: the default route goes into routing table ``fwmark``,
``ip rule not fwmark <fwmark> table <fwmark>`` sends everything else there, ``suppress_prefixlength 0``
keeps the main table's specific routes, and the runtime marks its UDP socket with ``fwmark``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import subprocess
from collections.abc import Iterable

from agents.wireguard.errors import LocalProtocolError

__all__ = ["TunDevice", "DEFAULT_MTU", "OFFLOAD_CHOICES"]

#: The MTU wg-quick gives a WireGuard interface: 1500 minus 80 bytes of worst-case IPv6 + UDP +
#: WireGuard overhead (40 + 8 + 32).
DEFAULT_MTU = 1420
#: wg-quick's default table and fwmark for full-tunnel routing (wg-quick(8), DEFAULT_TABLE=51820).
DEFAULT_FWMARK = 51820
#: From <linux/if_tun.h>: _IOW('T', 202, int).
_TUNSETIFF = 0x400454CA
#: From <linux/if_tun.h>: point-to-point IP device, no 4-byte packet-info prefix.
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
#: From <linux/if_tun.h>: frames carry a struct virtio_net_hdr; _IOW('T', 208, unsigned int).
_IFF_VNET_HDR = 0x4000
_TUNSETOFFLOAD = 0x400454D0
#: From <linux/if_tun.h>: TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6.
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6 = 0x01, 0x02, 0x04, 0x20, 0x40
#: What we ask for, most first: the kernel answers EINVAL to flags it does not know (USO before 6.2).
OFFLOAD_CHOICES = (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
                   TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
#: From <linux/if.h>: IFNAMSIZ includes the terminating NUL.
_IFNAMSIZ = 16
#: struct ifreq is 40 bytes on 64-bit Linux (16-byte name + 24-byte union).
_IFREQ = struct.Struct("16sH22x")


class TunDevice:
    """An open TUN interface.

    Args:
        name: interface name (at most 15 bytes); must be unused in this namespace.
        offloads: open with ``IFF_VNET_HDR`` and ask for TSO/USO (see the module docstring).

    Attributes:
        vnet_hdr: whether reads and writes carry a ``virtio_net_hdr`` (offloads granted).
        offload_flags: the ``TUN_F_*`` flags the kernel took (0 without offloads).

    Raises:
        LocalProtocolError: the name is too long, or the kernel refused (no root, name taken).
    """

    def __init__(self, name: str, offloads: bool = False) -> None:
        raw = name.encode()
        if not raw or len(raw) >= _IFNAMSIZ:
            raise LocalProtocolError(f"bad interface name {name!r}")
        self._netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._rules: list[list[str]] = []
        self.vnet_hdr, self.offload_flags = False, 0
        try:
            if offloads:
                self.fd, self.name = self._open(raw, _IFF_VNET_HDR)
                for flags in OFFLOAD_CHOICES:
                    try:
                        fcntl.ioctl(self.fd, _TUNSETOFFLOAD, flags)
                    except OSError:
                        continue
                    self.vnet_hdr, self.offload_flags = True, flags
                    break
                else:  # refused: the device goes with its fd, and comes back without headers
                    os.close(self.fd)
            if not self.vnet_hdr:
                self.fd, self.name = self._open(raw, 0)
        except LocalProtocolError:
            os.close(self._netns)
            raise
        self.mtu = DEFAULT_MTU

    @staticmethod
    def _open(raw: bytes, extra: int) -> tuple[int, str]:
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise LocalProtocolError(f"/dev/net/tun: {exc.strerror}") from exc
        try:
            got = fcntl.ioctl(fd, _TUNSETIFF, _IFREQ.pack(raw, _IFF_TUN | _IFF_NO_PI | extra))
        except OSError as exc:
            os.close(fd)
            raise LocalProtocolError(f"TUNSETIFF {raw.decode()!r}: {exc.strerror}") from exc
        return fd, _IFREQ.unpack(got)[0].rstrip(b"\0").decode()

    def configure(self, addresses: Iterable[str] = (), mtu: int = DEFAULT_MTU,
                  routes: Iterable[str] = (), fwmark: int = DEFAULT_FWMARK) -> None:
        """Give the device addresses (CIDR), an MTU and routes, and bring it up.

        Args:
            addresses: interface addresses such as ``10.0.0.1/24``.
            mtu: link MTU.
            routes: prefixes to route into the tunnel (a peer's allowed IPs).
            fwmark: table and mark for ``/0`` routes (see the module docstring); the caller must
                set ``SO_MARK`` to it on its UDP socket.
        """
        self.mtu = mtu
        self.ip("link", "set", "dev", self.name, "mtu", str(mtu))
        for cidr in addresses:
            self.ip("addr", "add", cidr, "dev", self.name)
        self.ip("link", "set", "dev", self.name, "up")
        for cidr in routes:
            self.add_route(cidr, fwmark)

    def add_route(self, cidr: str, fwmark: int = DEFAULT_FWMARK) -> None:
        """Route ``cidr`` into the device; a ``/0`` becomes wg-quick's policy routing."""
        family = "-6" if ":" in cidr else "-4"
        if not cidr.endswith("/0"):
            self.ip(family, "route", "replace", cidr, "dev", self.name)
            return
        self.ip(family, "route", "replace", cidr, "dev", self.name, "table", str(fwmark))
        rules = [[family, "rule", "add", "not", "fwmark", str(fwmark), "table", str(fwmark)],
                 [family, "rule", "add", "table", "main", "suppress_prefixlength", "0"]]
        for rule in rules:
            if rule not in self._rules:
                self.ip(*rule)
                self._rules.append(rule)
        if family == "-4":  # wg-quick: let rp_filter see the mark of our own replies
            self._run(["sysctl", "-q", "-w", "net.ipv4.conf.all.src_valid_mark=1"])

    def remove_route(self, cidr: str, fwmark: int = DEFAULT_FWMARK) -> None:
        """Remove a route :meth:`add_route` made (a ``/0`` from table ``fwmark``; its rules stay
        until :meth:`close`). A route that is already gone is not an error."""
        family = "-6" if ":" in cidr else "-4"
        table = ("table", str(fwmark)) if cidr.endswith("/0") else ()
        with contextlib.suppress(LocalProtocolError):
            self.ip(family, "route", "del", cidr, "dev", self.name, *table)

    def ip(self, *args: str) -> None:
        """Run ``ip args...`` in the device's network namespace.

        Raises:
            LocalProtocolError: `ip` failed.
        """
        self._run(["ip", *args])

    def _run(self, argv: list[str]) -> None:
        # nsenter's setns() needs CAP_SYS_ADMIN, which the node run as a systemd service lacks (it
        # has CAP_NET_ADMIN only: "reassociate to namespace 'ns/net' failed"); enter the device's
        # namespace only when this thread is somewhere else.
        here, there = os.stat("/proc/thread-self/ns/net"), os.fstat(self._netns)
        if (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino):
            argv = ["nsenter", f"--net=/proc/self/fd/{self._netns}", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, pass_fds=(self._netns,))
        if proc.returncode != 0:
            raise LocalProtocolError(f"{' '.join(argv)}: {proc.stderr.strip()}")

    def read(self, size: int = 65535) -> bytes:
        """Block until the kernel routes one packet into the device; return it."""
        return os.read(self.fd, size)

    def write(self, packet: bytes | memoryview) -> int:
        """Hand one IP packet to the kernel as if it arrived on this interface."""
        return os.write(self.fd, packet)

    def fileno(self) -> int:
        """The file descriptor (for select/poll)."""
        return self.fd

    def close(self) -> None:
        """Remove our policy-routing rules; close the device, so the kernel deletes it (idempotent)."""
        for rule in reversed(self._rules):
            try:
                self.ip(*[("del" if word == "add" else word) for word in rule])
            except LocalProtocolError:
                pass  # already gone (e.g. the namespace is being deleted)
        self._rules.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._netns >= 0:
            os.close(self._netns)
            self._netns = -1

    def __enter__(self) -> "TunDevice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
