"""A Linux TUN device opened through /dev/net/tun.

The kernel hands us whole IP packets (``IFF_TUN | IFF_NO_PI``: no Ethernet header, no packet-info
prefix) with one ``read`` each and takes one packet per ``write``. Addresses, MTU and link state are
set with iproute2 (`ip`), run in the calling thread's network namespace, so a TUN opened inside a
namespace is configured there.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
from collections.abc import Iterable

from agents.wireguard.errors import LocalProtocolError

__all__ = ["TunDevice", "DEFAULT_MTU"]

#: The MTU wg-quick gives a WireGuard interface: 1500 minus 80 bytes of worst-case IPv6 + UDP +
#: WireGuard overhead (40 + 8 + 32).
DEFAULT_MTU = 1420
#: From <linux/if_tun.h>: _IOW('T', 202, int).
_TUNSETIFF = 0x400454CA
#: From <linux/if_tun.h>: point-to-point IP device, no 4-byte packet-info prefix.
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
#: From <linux/if.h>: IFNAMSIZ includes the terminating NUL.
_IFNAMSIZ = 16
#: struct ifreq is 40 bytes on 64-bit Linux (16-byte name + 24-byte union).
_IFREQ = struct.Struct("16sH22x")


class TunDevice:
    """An open TUN interface.

    Args:
        name: interface name (at most 15 bytes); must be unused in this namespace.

    Raises:
        LocalProtocolError: the name is too long, or the kernel refused (no root, name taken).
    """

    def __init__(self, name: str) -> None:
        raw = name.encode()
        if not raw or len(raw) >= _IFNAMSIZ:
            raise LocalProtocolError(f"bad interface name {name!r}")
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            got = fcntl.ioctl(self.fd, _TUNSETIFF, _IFREQ.pack(raw, _IFF_TUN | _IFF_NO_PI))
        except OSError as exc:
            os.close(self.fd)
            raise LocalProtocolError(f"TUNSETIFF {name!r}: {exc.strerror}") from exc
        self.name = _IFREQ.unpack(got)[0].rstrip(b"\0").decode()
        self.mtu = DEFAULT_MTU

    def configure(self, addresses: Iterable[str] = (), mtu: int = DEFAULT_MTU,
                  routes: Iterable[str] = ()) -> None:
        """Give the device addresses (CIDR), an MTU and routes, and bring it up.

        Runs `ip` in the calling thread's network namespace.
        """
        self.mtu = mtu
        self._ip("link", "set", "dev", self.name, "mtu", str(mtu))
        for cidr in addresses:
            self._ip("addr", "add", cidr, "dev", self.name)
        self._ip("link", "set", "dev", self.name, "up")
        for cidr in routes:
            self._ip("route", "replace", cidr, "dev", self.name)

    @staticmethod
    def _ip(*args: str) -> None:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise LocalProtocolError(f"ip {' '.join(args)}: {proc.stderr.strip()}")

    def read(self, size: int = 65535) -> bytes:
        """Block until the kernel routes one packet into the device; return it."""
        return os.read(self.fd, size)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Like :meth:`read` into a caller's buffer (no allocation); returns the packet length."""
        return os.readv(self.fd, [buffer])

    def write(self, packet: bytes | memoryview) -> int:
        """Hand one IP packet to the kernel as if it arrived on this interface."""
        return os.write(self.fd, packet)

    def fileno(self) -> int:
        """The file descriptor (for select/poll)."""
        return self.fd

    def close(self) -> None:
        """Close the device; the kernel deletes the interface (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "TunDevice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
