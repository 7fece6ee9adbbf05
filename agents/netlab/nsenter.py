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

__all__ = ["enter_namespace", "is_root", "NETNS_DIR"]

#: Where `ip netns add NAME` bind-mounts a namespace (iproute2's NETNS_RUN_DIR).
NETNS_DIR = "/var/run/netns"
#: CLONE_NEWNET from <linux/sched.h>: setns(2) checks the fd is a network namespace.
_CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def is_root() -> bool:
    """Whether this process may build namespaces (tests skip the lab unless this holds)."""
    return os.geteuid() == 0


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
