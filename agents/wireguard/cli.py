"""`warren tunnel ...`: bring a tunnel up from a wg-quick file, show tunnels, make keys.

* ``warren tunnel up --config wg0.conf [--ifname wg0]`` runs the Python data plane until interrupted
  (SIGINT or SIGTERM), printing a status line per peer every few seconds.
* ``warren tunnel show [IFNAME]`` prints every WireGuard interface with a UAPI socket (ours and
  wireguard-go's) the way `wg show` does: peers, endpoint, allowed IPs, latest handshake, transfer.
* ``warren tunnel genkey`` / ``warren tunnel pubkey`` behave like `wg genkey` / `wg pubkey`.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from agents.wireguard.backend import PeerStats
from agents.wireguard.config import (
    decode_key,
    encode_key,
    format_endpoint,
    generate_private_key,
    load,
    public_key,
)
from agents.wireguard.errors import WireGuardError
from agents.wireguard.uapi import SOCKET_DIR, DeviceInfo, UapiClient

__all__ = ["add_commands", "format_show"]

#: How often `tunnel up` checks that its data plane is still running (seconds): a dead thread (say,
#: the TUN device deleted under it) should end the process promptly, with exit status 1.
LIVENESS_CHECK_S = 1.0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``warren tunnel`` and its subcommands."""
    tunnel = subparsers.add_parser("tunnel", help="WireGuard-compatible tunnels")
    sub = tunnel.add_subparsers(dest="tunnel_command", metavar="ACTION")

    up = sub.add_parser("up", help="bring a tunnel up from a wg-quick file; run until interrupted")
    up.add_argument("--config", required=True, type=Path, help="wg-quick [Interface]/[Peer] file")
    up.add_argument("--ifname", help="TUN interface name (default: the file's stem, e.g. wg0)")
    up.add_argument("--status-interval", type=float, default=5.0, metavar="SECONDS",
                    help="seconds between status lines (0: none)")
    up.add_argument("--time-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    up.add_argument("--no-uapi", action="store_true", help="do not serve the UAPI socket")
    up.set_defaults(func=_up)

    show = sub.add_parser("show", help="list interfaces and peers like `wg show`")
    show.add_argument("ifname", nargs="?", help="one interface (default: every UAPI socket)")
    show.set_defaults(func=_show)

    genkey = sub.add_parser("genkey", help="print a new private key (base64)")
    genkey.set_defaults(func=lambda args: print(encode_key(generate_private_key())) or 0)

    pubkey = sub.add_parser("pubkey", help="read a private key on stdin, print its public key")
    pubkey.set_defaults(func=_pubkey)

    tunnel.set_defaults(func=lambda args: tunnel.print_help() or 2)


def _pubkey(args: argparse.Namespace) -> int:
    try:
        print(encode_key(public_key(decode_key(sys.stdin.read()))))
    except WireGuardError as exc:
        print(f"warren tunnel pubkey: {exc}", file=sys.stderr)
        return 1
    return 0


def _up(args: argparse.Namespace) -> int:
    from agents.wireguard.runtime import Tunnel  # imports the core: only needed here

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = load(args.config)
    ifname = args.ifname or args.config.stem
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        tunnel = Tunnel(config, ifname, time_scale=args.time_scale, uapi=not args.no_uapi)
    except WireGuardError as exc:
        print(f"warren tunnel up: {exc}", file=sys.stderr)
        return 1
    with tunnel:
        tunnel.start()
        print(f"interface {ifname} up: public key {encode_key(tunnel.public_key)}, "
              f"listening on {tunnel.listen_port}", flush=True)
        interval = args.status_interval
        next_status = time.monotonic() + interval
        while not stop.wait(min(LIVENESS_CHECK_S, interval) if interval > 0 else LIVENESS_CHECK_S):
            if not tunnel.running:
                print("warren tunnel up: data plane stopped", file=sys.stderr)
                return 1
            if interval > 0 and time.monotonic() >= next_status:
                next_status += interval
                for peer in tunnel.peers():
                    print(_status_line(peer), flush=True)
    return 0


def _status_line(peer: PeerStats) -> str:
    return (f"peer {encode_key(peer.public_key)[:8]}... endpoint "
            f"{format_endpoint(peer.endpoint) if peer.endpoint else '(none)'} handshake "
            f"{_ago(peer.last_handshake)} rx {_bytes(peer.rx_bytes)} tx {_bytes(peer.tx_bytes)}")


def _show(args: argparse.Namespace) -> int:
    if args.ifname:
        names = [args.ifname]
    else:
        names = sorted(Path(p).stem for p in glob.glob(os.path.join(SOCKET_DIR, "*.sock")))
    status = 0
    for name in names:
        try:
            info = UapiClient(name).get()
        except (WireGuardError, OSError) as exc:
            print(f"warren tunnel show: {name}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(format_show(name, info))
    return status


def format_show(ifname: str, info: DeviceInfo, now: float | None = None) -> str:
    """One interface in `wg show`'s layout."""
    lines = [f"interface: {ifname}"]
    if info.public_key:
        lines += [f"  public key: {encode_key(info.public_key)}", "  private key: (hidden)"]
    lines.append(f"  listening port: {info.listen_port}")
    for peer in info.peers:
        lines += ["", f"peer: {encode_key(peer.public_key)}"]
        if peer.endpoint:
            lines.append(f"  endpoint: {format_endpoint(peer.endpoint)}")
        lines.append(f"  allowed ips: {', '.join(peer.allowed_ips) or '(none)'}")
        if peer.last_handshake:
            lines.append(f"  latest handshake: {_ago(peer.last_handshake, now)}")
        if peer.rx_bytes or peer.tx_bytes:
            lines.append(f"  transfer: {_bytes(peer.rx_bytes)} received, "
                         f"{_bytes(peer.tx_bytes)} sent")
        if peer.persistent_keepalive:
            lines.append(f"  persistent keepalive: every {peer.persistent_keepalive} seconds")
    return "\n".join(lines) + "\n"


def _ago(when: float | None, now: float | None = None) -> str:
    if not when:
        return "(none)"
    seconds = max(0, int((now or time.time()) - when))
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size or (unit == "second" and not parts):
            count, seconds = divmod(seconds, size)
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return ", ".join(parts) + " ago"


def _bytes(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count} B"
