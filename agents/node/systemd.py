"""`warren node install-service`: a systemd unit that runs `warren node run` as its own user.

:func:`unit_text` is pure (paths and names in, the unit file's text out); :func:`install` writes it
(0644, refusing to overwrite without ``force``) and returns the commands that enable it.

What the unit grants and why:

* ``User=``/``Group=``: a system user of its own (not root): a bug in the node reaches only its
  data folder.
* ``AmbientCapabilities=`` and ``CapabilityBoundingSet=`` ``CAP_NET_ADMIN CAP_NET_BIND_SERVICE``:
  the only privileges the node uses. CAP_NET_ADMIN: creating its TUN (TUNSETIFF), its nftables
  table, its routes, and the forwarding sysctls under ``net.*`` (the kernel lets CAP_NET_ADMIN
  write those as root could); the child processes it runs (``nft``, ``ip``, ``sysctl``) inherit the
  ambient set. CAP_NET_BIND_SERVICE: the resolver it offers its clients inside the tunnel listens on
  port 53 (without it: "cannot listen on [10.77.0.1]:53: Permission denied", found by running
  this unit under systemd).
* ``Restart=on-failure``: a crash restarts the node, which settles the receipts it had stored (the
  store is on disk before any receipt is acknowledged). ``TimeoutStopSec=90`` covers the node's
  30 s settlement patience at SIGTERM with room to spare.
* Hardening that fits: ``NoNewPrivileges``, ``ProtectSystem=strict`` with the data folder as the
  only writable path, ``ProtectHome`` (read-only when the program or its interpreter lives under /home or /root),
  ``PrivateTmp`` (the service gets fresh, empty /tmp and /var/tmp: a program, interpreter, config
  or data folder under them is not there for it, so `install-service` warns, see
  :func:`under_private_tmp`), ``DevicePolicy=closed`` with ``/dev/net/tun`` allowed, kernel modules, logs and
  control groups protected, address families limited to IP, unix and netlink, ``UMask=0077``.
  Not ``ProtectKernelTunables``: it makes /proc/sys read-only, and the exit sets
  ``net.ipv4.ip_forward`` and friends there. Not ``PrivateNetwork``/``PrivateDevices``: the node
  is a network device.
* ``Environment=HOME=<data folder>``: the service user's home is /nonexistent, and ape (``~/.ape``)
  and vvm (``~/.vvm``, listed when ape-vyper looks for compilers) keep folders there: without it the
  node stops at start with "No such file or directory: '/nonexistent/.vvm'" (seen by the test that
  runs this unit under a real systemd, tests/node/test_systemd_run.py).
* ``ExecReload`` sends SIGHUP: the node reads its exit policy again without dropping sessions.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from agents.errors import UserError

__all__ = ["DEFAULT_UNIT_DIR", "DEFAULT_USER", "PRIVATE_TMP", "install", "under_private_tmp", "unit_text",
           "unreachable"]

DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_USER = "warren"
#: The folders ``PrivateTmp=yes`` replaces with empty ones of the service's own (systemd.exec).
PRIVATE_TMP = (Path("/tmp"), Path("/var/tmp"))


def _quote(arg: str) -> str:
    """One ExecStart argument: systemd splits on spaces and honours double quotes (systemd.service)."""
    if arg and all(c.isalnum() or c in "/._-:=+@," for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _interpreters(program: Path) -> list[Path]:
    """The interpreter a script's ``#!`` line names, as written and resolved (a venv's python is a
    symlink to the one it was made from: pyenv's lives in /root/.pyenv); empty for a binary."""
    try:
        with open(program, "rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return []
    if not first.startswith(b"#!") or not first[2:].split():
        return []
    named = Path(first[2:].split()[0].decode(errors="replace"))
    return [named, named.resolve()]


def unreachable(paths: list[Path]) -> list[str]:
    """Why a user other than root and the owner could not reach each of ``paths``, in words.

    A folder on the way without search permission for others (``o+x``), such as /root's 0700, stops
    the service user whatever the file's own mode (group membership is not looked at: a system user
    has a group of its own).
    """
    problems = []
    for path in paths:
        for folder in [*reversed(Path(path).parents)][1:]:
            try:
                mode = folder.stat().st_mode
            except OSError:
                break
            if not mode & 0o001:
                problems.append(f"{path}: {folder} is {oct(mode & 0o777)[2:]}, others cannot enter it")
                break
    return problems


def under_private_tmp(paths: list[Path]) -> list[tuple[Path, Path]]:
    """(path, folder) for each of ``paths`` (as given and resolved) under a folder PrivateTmp hides.

    The unit keeps ``PrivateTmp=yes``: inside the service /tmp and /var/tmp are new and empty, so a
    program there fails with status 203/EXEC and a config or data folder there is missing.
    """
    found = []
    for path in paths:
        for form in dict.fromkeys((Path(os.path.abspath(path)), Path(path).resolve())):
            for folder in PRIVATE_TMP:
                if form.is_relative_to(folder) and form != folder and (form, folder) not in found:
                    found.append((form, folder))
    return found


def unit_text(*, program: Path, config: Path, data_dir: Path, user: str = DEFAULT_USER,
              description: str = "Warren exit node", docs: str = "") -> str:
    """The unit file for ``program node run --config config`` as ``user``, writing only ``data_dir``.

    ``docs``: the Documentation= URI (default: the README of this installation, a file: URI).
    """
    if not docs:
        from agents.chain.connect import REPO_ROOT

        docs = (REPO_ROOT / "README.md").as_uri()
    under_home = any(str(p).startswith(("/home/", "/root/")) for p in (program, config, *_interpreters(program)))
    home_protect = "read-only" if under_home else "yes"
    exec_start = " ".join(_quote(a) for a in (str(program), "node", "run", "--config", str(config),
                                                "--log-format", "json"))
    return f"""# Written by `warren node install-service`; see agents/node/systemd.py for why each line is here.
[Unit]
Description={description}
Documentation={_quote(docs)}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={user}
Environment={_quote("HOME=" + str(data_dir))}
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5
TimeoutStopSec=90
AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={_quote(str(data_dir))}
ProtectHome={home_protect}
PrivateTmp=yes
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
UMask=0077

[Install]
WantedBy=multi-user.target
"""


def install(*, config: Path, data_dir: Path, unit_dir: Path = DEFAULT_UNIT_DIR, name: str = "warren-node",
            user: str = DEFAULT_USER, program: Path | None = None, force: bool = False,
            owned: tuple[Path, ...] = ()) -> tuple[Path, list[str]]:
    """Write ``<unit_dir>/<name>.service``; returns its path and the commands that enable it.

    ``owned``: further files the service user must read (the operator's keystore, passphrase file).

    Raises:
        UserError: the unit exists and ``force`` is false, or the folder cannot be written.
    """
    program = program or Path(sys.executable).with_name("warren")
    path = Path(unit_dir) / f"{name}.service"
    if path.exists() and not force:
        raise UserError(f"{path} already exists: pass --force to overwrite it")
    text = unit_text(program=program, config=config, data_dir=data_dir, user=user)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror}): run as root, or pass --unit-dir") from None
    q = shlex.quote
    problems = unreachable([program, *_interpreters(program)[1:]])
    steps = [f"# WARNING {p}: the service cannot start (status 203/EXEC); install Python and warren where "
             f"user {user} can run them (a venv under /opt made from /usr/bin/python3)" for p in problems]
    steps += [f"# WARNING {hidden}: the program lives under {folder}, which the service's PrivateTmp hides "
              f"(status 203/EXEC): install Warren elsewhere (a venv under /opt made from /usr/bin/python3)"
              for hidden, folder in under_private_tmp([program, *_interpreters(program)])[:1]]
    steps += [f"# WARNING {hidden}: it lives under {folder}, which the service's PrivateTmp hides (the service would "
              f"not find it): keep the config, data folder and keys elsewhere (under /etc/warren, /var/lib/warren)"
              for hidden, folder in under_private_tmp([config, data_dir, *owned])]
    steps += [
        f"useradd --system --no-create-home --shell /usr/sbin/nologin {q(user)}   # once",
        "chown -R " + " ".join([f"{q(user)}:{q(user)}", *(q(str(p)) for p in (data_dir, config, *owned))]),
        "systemctl daemon-reload",
        f"systemctl enable --now {q(name)}",
        f"journalctl -u {q(name)} -f   # its log, one JSON object per line",
    ]
    return path, steps
