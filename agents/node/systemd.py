"""`warren node install-service`: a systemd unit that runs `warren node run` as its own user.

:func:`unit_text` is pure (paths and names in, the unit file's text out); :func:`install` writes it
(0644, refusing to overwrite without ``force``) and returns the commands that enable it.

What the unit grants and why:

* ``User=``/``Group=``: a system user of its own (not root): a bug in the node reaches only its
  data folder.
* ``AmbientCapabilities=CAP_NET_ADMIN`` and ``CapabilityBoundingSet=CAP_NET_ADMIN``: the only
  privilege the node uses: creating its TUN (TUNSETIFF), its nftables table, its routes, and the
  forwarding sysctls under ``net.*`` (the kernel lets CAP_NET_ADMIN write those as root could). The
  child processes it runs (``nft``, ``ip``, ``sysctl``) inherit the ambient set.
* ``Restart=on-failure``: a crash restarts the node, which settles the receipts it had stored (the
  store is on disk before any receipt is acknowledged). ``TimeoutStopSec=90`` covers the node's
  30 s settlement patience at SIGTERM with room to spare.
* Hardening that fits: ``NoNewPrivileges``, ``ProtectSystem=strict`` with the data folder as the
  only writable path, ``ProtectHome`` (read-only when the program lives under /home or /root),
  ``PrivateTmp``, ``DevicePolicy=closed`` with ``/dev/net/tun`` allowed, kernel modules, logs and
  control groups protected, address families limited to IP, unix and netlink, ``UMask=0077``.
  Not ``ProtectKernelTunables``: it makes /proc/sys read-only, and the exit sets
  ``net.ipv4.ip_forward`` and friends there. Not ``PrivateNetwork``/``PrivateDevices``: the node
  is a network device.
* ``ExecReload`` sends SIGHUP: the node reads its exit policy again without dropping sessions.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from agents.errors import UserError

__all__ = ["DEFAULT_UNIT_DIR", "DEFAULT_USER", "install", "unit_text"]

DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_USER = "warren"


def _quote(arg: str) -> str:
    """One ExecStart argument: systemd splits on spaces and honours double quotes (systemd.service)."""
    if arg and all(c.isalnum() or c in "/._-:=+@," for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(*, program: Path, config: Path, data_dir: Path, user: str = DEFAULT_USER,
              description: str = "Warren exit node", docs: str = "") -> str:
    """The unit file for ``program node run --config config`` as ``user``, writing only ``data_dir``.

    ``docs``: the Documentation= URI (default: the README of this installation, a file: URI).
    """
    if not docs:
        from agents.chain.connect import REPO_ROOT

        docs = (REPO_ROOT / "README.md").as_uri()
    home_protect = "read-only" if str(program).startswith(("/home/", "/root/")) or str(config).startswith(
        ("/home/", "/root/")) else "yes"
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
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5
TimeoutStopSec=90
AmbientCapabilities=CAP_NET_ADMIN
CapabilityBoundingSet=CAP_NET_ADMIN
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
    steps = [
        f"useradd --system --no-create-home --shell /usr/sbin/nologin {q(user)}   # once",
        "chown -R " + " ".join([f"{q(user)}:{q(user)}", *(q(str(p)) for p in (data_dir, config, *owned))]),
        "systemctl daemon-reload",
        f"systemctl enable --now {q(name)}",
        f"journalctl -u {q(name)} -f   # its log, one JSON object per line",
    ]
    return path, steps
