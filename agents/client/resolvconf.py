"""Point the host's DNS at the node's resolver inside the tunnel while connected, and put it back.

:meth:`ResolvConf.point_to` first saves what ``path`` was (a regular file with its bytes and mode, a
symlink with its target, or nothing) in a 0600 backup file, written and fsynced before anything
changes; only then does it replace ``path``. The backup is the state: any later process (`warren
disconnect` after a crash) restores from it, and a second ``point_to`` keeps the first backup, so
the original is never lost to a repeat. Each write is a rename of a fsynced temporary file, so a
crash leaves the old file or the new one, never half of one.

A symlinked resolv.conf (systemd-resolved's stub, resolvconf's /run file) is replaced by a regular
file rather than written through: the link's target belongs to another program, which would
overwrite it; :meth:`ResolvConf.restore` puts the link back. Where ``path`` is a mount point (a bind
mount, as in containers) rename fails with EBUSY, and the file is rewritten in place instead.

If another program rewrote ``path`` while we were connected (the file no longer carries our
marker), :meth:`restore` leaves the newer file alone and only drops the backup.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import ipaddress
import json
import os
import stat
from collections.abc import Iterable

__all__ = ["BACKUP_NAME", "MARKER", "ResolvConf", "ResolvConfError"]

#: First line of the file we write; how restore() knows the file is still ours.
MARKER = "# Written by warren connect: DNS goes through the tunnel."
#: Name of the backup file inside ``backup_dir``.
BACKUP_NAME = "resolv.conf.warren-backup.json"
#: resolv.conf(5): the resolver reads at most 3 nameserver lines (MAXNS).
MAXNS = 3


#: resolv.conf(5) options while connected: seconds per try and tries per server.
LOOKUP_TIMEOUT_S = 1
LOOKUP_ATTEMPTS = 3


class ResolvConfError(ValueError):
    """Our misuse: no or malformed resolver addresses, or an unreadable backup."""


class ResolvConf:
    """The host's resolv.conf and its backup.

    Args:
        path: the resolv.conf to manage (tests: a temporary file or /etc/netns/NS/resolv.conf,
            never the machine's own).
        backup_dir: folder of the backup file (created 0700 if missing).
    """

    def __init__(self, path: str = "/etc/resolv.conf", backup_dir: str = "/var/lib/warren") -> None:
        self.path = path
        self.backup_dir = backup_dir
        self.backup_path = os.path.join(backup_dir, BACKUP_NAME)

    def pointed(self) -> bool:
        """Whether a backup is held (we changed ``path`` and have not restored it)."""
        return os.path.exists(self.backup_path)

    def point_to(self, addresses: Iterable[str], search: Iterable[str] = ()) -> None:
        """Make ``path`` name only ``addresses`` (the tunnel's resolvers); idempotent.

        Args:
            addresses: resolver IPs inside the tunnel (at most 3 are used, as the resolver does).
            search: search domains (none by default: the LAN's domain would tell the exit about
                the LAN).

        Raises:
            ResolvConfError: no address, or one that is not an IP address.
            OSError: the file or backup could not be written.
        """
        servers = [_address(a) for a in addresses]
        if not servers:
            raise ResolvConfError("point_to needs at least one resolver address")
        if not self.pointed():
            self._save_backup()
        lines = [MARKER, f"# The original is kept in {self.backup_path}."]
        lines += [f"nameserver {s}" for s in servers[:MAXNS]]
        domains = [d for d in search if d]
        if domains:
            lines.append("search " + " ".join(domains))
        # glibc waits 5 s per server by default: a lookup made while the client fails over to another
        # node (a second or so) would then stall for 10 s. The resolvers are one tunnel hop away.
        lines.append(f"options timeout:{LOOKUP_TIMEOUT_S} attempts:{LOOKUP_ATTEMPTS}")
        _write_file(self.path, ("\n".join(lines) + "\n").encode(), 0o644)

    def restore(self) -> bool:
        """Put back what :meth:`point_to` replaced; idempotent.

        Returns:
            True if ``path`` was restored, False if there was nothing to restore or another
            program had rewritten it meanwhile (its file is kept).

        Raises:
            ResolvConfError: the backup file is unreadable.
        """
        try:
            with open(self.backup_path, "rb") as f:
                backup = json.load(f)
        except FileNotFoundError:
            return False
        except ValueError as exc:
            raise ResolvConfError(f"unreadable backup {self.backup_path}: {exc}") from exc
        restored = False
        if self._is_ours():
            kind = backup["kind"]
            if kind == "symlink":
                _replace_with_symlink(self.path, backup["target"])
            elif kind == "file":
                _write_file(self.path, base64.b64decode(backup["content"]), backup["mode"])
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                _fsync_dir(os.path.dirname(self.path) or ".")
            restored = True
        os.unlink(self.backup_path)
        _fsync_dir(self.backup_dir)
        return restored

    # -- internals -----------------------------------------------------------------------------------

    def _is_ours(self) -> bool:
        try:
            if os.path.islink(self.path):
                return False
            with open(self.path, encoding="utf-8", errors="replace") as f:
                return f.readline().rstrip("\n") == MARKER
        except FileNotFoundError:
            return False

    def _save_backup(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            backup = {"path": self.path, "kind": "absent"}
        else:
            if stat.S_ISLNK(st.st_mode):
                backup = {"path": self.path, "kind": "symlink", "target": os.readlink(self.path)}
            else:
                with open(self.path, "rb") as f:
                    content = f.read()
                backup = {"path": self.path, "kind": "file", "mode": stat.S_IMODE(st.st_mode),
                          "content": base64.b64encode(content).decode()}
        os.makedirs(self.backup_dir, mode=0o700, exist_ok=True)
        _write_file(self.backup_path, json.dumps(backup).encode(), 0o600)


def _address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError as exc:
        raise ResolvConfError(f"not an IP address: {address!r}") from exc


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes, mode: int) -> None:
    """Atomically replace ``path`` (the link itself if it is one) with a file holding ``data``."""
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.warren-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        if exc.errno != errno.EBUSY:
            raise
        # A bind-mounted file cannot be renamed over: rewrite it in place (not atomic, but the
        # only way to change a mount point's content).
        with open(path, "r+b") as f:
            f.truncate(0)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return
    _fsync_dir(folder)


def _replace_with_symlink(path: str, target: str) -> None:
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.warren-tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.rename(tmp, path)
    _fsync_dir(folder)
