"""Move the calling thread into a network namespace and back.

Linux keeps the network namespace per thread, and a socket or TUN device stays in the namespace it was
created in whatever thread later uses it. So a test can open a runtime's sockets "inside" a namespace
for a moment and then drive them from ordinary threads. Python 3.11 has no ``os.setns`` (it arrived in
3.12), hence the ctypes call to libc's ``setns(2)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator

from agents.netlab.errors import LabError

__all__ = ["can_build_namespaces", "enter_namespace", "NETNS_DIR"]

#: Where `ip netns add NAME` bind-mounts a namespace (iproute2's NETNS_RUN_DIR).
NETNS_DIR = "/var/run/netns"
#: CLONE_NEWNET from <linux/sched.h>: setns(2) checks the fd is a network namespace.
_CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


#: Capability bits (<linux/capability.h>) that `ip netns add`, TUN devices and nftables need.
_CAP_NET_ADMIN, _CAP_SYS_ADMIN = 12, 21


def can_build_namespaces() -> bool:
    """Whether this process may build the lab: namespaces, TUN devices, nftables tables.

    Reads the effective capability set rather than the uid: root with its capabilities dropped (a
    container, ``setpriv --bounding-set=-all``) is refused by the kernel all the same.
    """
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return os.geteuid() == 0
    effective = int(line.split()[1], 16)
    return all(effective >> bit & 1 for bit in (_CAP_NET_ADMIN, _CAP_SYS_ADMIN))


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError(f"setns failed: {os.strerror(err)}")


@contextlib.contextmanager
def enter_namespace(name: str) -> Iterator[None]:
    """Run the body with the calling thread in network namespace ``name`` (as made by `ip netns`).

    Sockets, TUN devices and child processes created in the body belong to that namespace.

    Args:
        name: the namespace's name under /var/run/netns.

    Raises:
        LabError: the namespace does not exist or setns(2) failed.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise LabError(f"no network namespace {name!r}") from exc
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
