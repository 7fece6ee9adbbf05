"""systemd as PID 1 of its own PID, mount and cgroup namespaces: run a real unit in a test, then remove it all.

This machine (and CI's) has Debian's systemd installed but not running: PID 1 is the container's
own init. systemd 252 runs happily as PID 1 of a fresh PID namespace when it has a cgroup2
hierarchy it may write (``unshare --pid --fork --mount --mount-proc --cgroup``; ``container=``
set, so it skips what a container cannot do). :class:`SystemdBoot` starts one like that:

* in a lab network namespace (``nsenter --net``): the unit's network is the test's, not the host's;
* in a cgroup of its own under the host's cgroup2 hierarchy (``/sys/fs/cgroup/unified`` on this
  hybrid layout, ``/sys/fs/cgroup`` on a pure cgroup2 one), entered before ``--cgroup`` so that
  systemd sees it as its root; removed, leaves first, at the end;
* with only the units given: ``/etc/systemd/system`` is a bind mount of the test's folder and
  ``/lib/systemd/system`` an empty tmpfs, so none of Debian's units (getty, journald, udev) start;
  empty stubs stand in for the targets units depend on by default (sysinit, basic, network-online,
  multi-user, shutdown);
* with extra users: ``/etc/passwd`` and ``/etc/group`` are bind mounts of copies with the lines
  added, so the service's own user exists inside and the host's files are never touched;
* with a private ``/run`` (systemd's control socket lives there);
* with ``/dev/net/tun`` mode 0666, as udev makes it on a Debian host (its rule in
  50-udev-default.rules): this container's is 0600, which no service user may open, whatever its
  capabilities (CAP_NET_ADMIN does not override file permissions).
* with the paths the service must reach reachable wherever they live (``reach``): each folder on
  their way that others cannot enter (``/root``'s 0700, the 0700 folder ``mktemp -d`` makes under
  /tmp for a fresh clone) is covered by a 0755 stand-in holding bind mounts of only the entries on
  the way, so the real paths still resolve (shebangs, a venv's symlinks) and nothing else shows. All
  of it is in systemd's private mount namespace (``unshare`` makes its mounts private): the host's
  folders, modes and mounts stay as they are, and the mounts go with the namespace.

Controlled with ``systemctl`` run through ``nsenter`` into its mount and PID namespaces; stopped
with SIGRTMIN+14 (systemd(1): immediate power-off, which in a container is an exit), then by
SIGKILL to its PID if it does not exit in time; the namespaces go with their last process.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["STUB_TARGETS", "SystemdBoot", "cgroup2_root", "stand_ins"]

SYSTEMD = "/lib/systemd/systemd"
#: Targets that units name by default (DefaultDependencies=yes) or that ours names (After=, WantedBy=).
STUB_TARGETS = ("sysinit", "basic", "shutdown", "network-online", "multi-user", "default", "warren-lab")
#: The target systemd starts: an empty one, so nothing runs until the test starts a unit.
BOOT_TARGET = "warren-lab.target"
BOOT_S = 20.0
EXIT_S = 10.0

_INNER = r"""
set -e
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount --bind "$1/units" /etc/systemd/system
mount -t tmpfs -o mode=0755 tmpfs /lib/systemd/system
mount --bind "$1/passwd" /etc/passwd
mount --bind "$1/group" /etc/group
mknod -m 0666 "$1/tun" c 10 200 && mount --bind "$1/tun" /dev/net/tun
. "$1/reach.sh"
export container=warren-lab
exec /lib/systemd/systemd --system --unit=warren-lab.target --log-target=console --log-level=notice
"""


def stand_ins(paths) -> list[tuple[Path, list[str]]]:
    """The folders on the way to ``paths`` that others cannot enter, each with the entries on the way.

    Each path is walked as written and as resolved (a venv's ``python`` is a symlink to the
    interpreter it was made from). A folder is named by its real path (a mount follows symlinks),
    deepest first: the order in which stand-ins are mounted, so that a shallower one's bind of an
    entry (``--rbind``) carries the deeper stand-in along.
    """
    needed: dict[Path, set[str]] = {}
    for path in paths:
        written = Path(os.path.abspath(path))
        for walk in dict.fromkeys((written, written.resolve())):
            for folder, entry in zip(reversed(walk.parents), walk.parts[1:]):
                if folder == Path("/"):
                    continue
                try:
                    mode = folder.stat().st_mode
                except OSError:
                    break
                if not mode & 0o001:
                    needed.setdefault(folder.resolve(), set()).add(entry)
    return [(folder, sorted(needed[folder])) for folder in sorted(needed, key=lambda f: (-len(f.parts), str(f)))]


def cgroup2_root() -> Path:
    """Where the host's cgroup2 hierarchy is mounted (hybrid: ``.../unified``; unified: the root)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    raise RuntimeError("no cgroup2 hierarchy is mounted: systemd cannot run here")


class SystemdBoot:
    """A systemd system manager for one test (see the module docstring). Use as a context manager.

    Args:
        netns: name of the network namespace (under /run/netns) it runs in.
        units: unit files to install, relative path -> text (``NAME.service.d/FILE.conf`` for a drop-in).
        users: (name, uid) pairs to add, each with a group of the same name and id.
        reach: paths (a program, its interpreter) the service user must reach: inside, every folder on
            their way that others cannot enter is covered by a 0755 stand-in showing only the entries
            on the way (see :func:`stand_ins`). This machine's Python is pyenv's, in /root/.pyenv
            behind /root's 0700, and a fresh clone may sit in a 0700 folder: an operator installs
            both elsewhere; a test reaches them this way.
    """

    def __init__(self, netns: str, units: dict[str, str], users: tuple[tuple[str, int], ...] = (),
                 reach: tuple[Path | str, ...] = ()) -> None:
        self.netns = netns
        self.workdir = Path(tempfile.mkdtemp(prefix="warren-systemd-"))
        self.cgroup = cgroup2_root() / f"warren-lab-{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # systemd's PID as the host sees it
        self.log_path = self.workdir / "boot.log"  # what the launch printed (systemd then logs nowhere)
        self.stand_ins = stand_ins(reach)
        self._write_reach()
        unit_dir = self.workdir / "units"
        unit_dir.mkdir()
        for target in STUB_TARGETS:
            (unit_dir / f"{target}.target").write_text(f"[Unit]\nDescription={target} (a stub of the test's systemd)\n")
        for name, text in units.items():
            (unit_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (unit_dir / name).write_text(text)
        for table, line in (("passwd", "{0}:x:{1}:{1}::/nonexistent:/usr/sbin/nologin"), ("group", "{0}:x:{1}:")):
            text = Path(f"/etc/{table}").read_text()
            names = {n for n, _ in users}
            kept = [row for row in text.splitlines() if row.split(":", 1)[0] not in names]
            path = self.workdir / table
            path.write_text("\n".join([*kept, *(line.format(n, uid) for n, uid in users)]) + "\n")
            path.chmod(0o644)

    def _write_reach(self) -> None:
        """``reach.sh``, sourced inside before systemd starts: a stand-in folder per closed folder.

        Its mount points are made here (host side, in the test's own 0700 folder); the mounts happen
        only inside. A symlink on the way is copied as a symlink (a bind would follow it).
        """
        lines = []
        for number, (folder, entries) in enumerate(self.stand_ins):
            stand_in = self.workdir / "reach" / str(number)
            stand_in.mkdir(parents=True)
            stand_in.chmod(0o755)
            for entry in entries:
                real, shown = folder / entry, stand_in / entry
                if real.is_symlink():
                    os.symlink(os.readlink(real), shown)
                    continue
                if real.is_dir():
                    shown.mkdir()
                else:
                    shown.touch()
                lines.append(f"mount --rbind {shlex.quote(str(real))} {shlex.quote(str(shown))}")
            lines.append(f"mount --rbind {shlex.quote(str(stand_in))} {shlex.quote(str(folder))}")
        (self.workdir / "reach.sh").write_text("".join(f"{line}\n" for line in lines))

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "SystemdBoot":
        self.cgroup.mkdir()
        log = open(self.log_path, "ab")
        # The shell moves itself into the new cgroup, then becomes unshare: everything after is inside.
        argv = ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && exec nsenter --net="/run/netns/$2" '
                'unshare --pid --fork --mount --mount-proc --cgroup --uts sh -c "$3" inner "$4"',
                "outer", str(self.cgroup), self.netns, _INNER, str(self.workdir)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + BOOT_S
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd exited {self.proc.returncode}: {self.log()[-2000:]}")
            if self.pid is None:
                self.pid = self._systemd_pid()
            if self.pid is not None:
                state = self.systemctl("is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"systemd did not boot in {BOOT_S} s (state {state!r}): {self.log()[-2000:]}")

    def _systemd_pid(self) -> int | None:
        """The PID of unshare's child (systemd), read from /proc (unshare --fork waits for it)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            pids = children.read_text().split()
        except FileNotFoundError:
            return None
        if not pids:
            return None
        pid = int(pids[0])
        try:
            return pid if Path(f"/proc/{pid}/exe").resolve() == Path(SYSTEMD).resolve() else None
        except FileNotFoundError:
            return None

    def close(self) -> None:
        """Stop systemd (and with it every process it started), remove its cgroup and files."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                if self.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGRTMIN + 14)
                try:
                    self.proc.wait(timeout=EXIT_S)
                except subprocess.TimeoutExpired:
                    if self.pid is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(self.pid, signal.SIGKILL)  # PID 1 of its namespace: takes all of it along
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=EXIT_S)
        finally:
            self._remove_cgroup()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _remove_cgroup(self) -> None:
        if not self.cgroup.exists():
            return
        deadline = time.monotonic() + EXIT_S
        while True:
            try:
                for folder in sorted((p for p in self.cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    folder.rmdir()
                self.cgroup.rmdir()
                return
            except OSError:  # a process still leaving (EBUSY)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __enter__(self) -> "SystemdBoot":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside --------------------------------------------------------------------------------------

    def run(self, *argv: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run ``argv`` in systemd's mount and PID namespaces (and its network namespace)."""
        result = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", "-n", *argv], capture_output=True,
                                text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def show(self, unit: str, *names: str) -> dict[str, str]:
        """``systemctl show -p NAME...`` as a dict."""
        out = self.systemctl("show", unit, *(f"--property={n}" for n in names)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def proc_status(self, pid: int) -> dict[str, str]:
        """``/proc/PID/status`` of a process inside (PID as systemd numbers it)."""
        out = self.run("cat", f"/proc/{pid}/status").stdout
        return {k: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}

    def log(self) -> str:
        """What the launch printed (mount or unshare errors): systemd's own log goes nowhere here."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


