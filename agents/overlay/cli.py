"""`warren mesh ...`: mesh mode from the command line.

* ``warren mesh cert``: the group owner certifies a member (its WireGuard public key, its signing
  address, its virtual IP); prints the certificate as hex.
* ``warren mesh gateway``: a public overlay node that stores the group's records, introduces members
  to each other (rendezvous) and, with ``--relay``, relays for pairs that cannot punch through.
* ``warren mesh up --network NAME ...``: bring this host into the mesh: a WireGuard tunnel (TUN device
  with the certified virtual IP; needs root), the overlay on the tunnel's UDP socket, registration at
  the gateway, publication of the certificate and IPRecord, then tunnels to ``--peer`` virtual IPs
  (and to any member who connects): direct when a punch works, through a ``--relay`` gateway when
  not (the tunnel MTU is ``wgrelay.MESH_MTU`` so relayed packets fit), until SIGINT/SIGTERM. Any
  other virtual IP is resolved on demand when a packet is sent to it (``--no-on-demand`` to disable).

Key files: the WireGuard private key is base64 (``warren tunnel genkey``); Ethereum keys (owner,
member) are hex private keys.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from eth_account import Account

__all__ = ["add_commands"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 51820  # WireGuard's customary port: the overlay shares the tunnel's socket


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``warren mesh`` and its subcommands."""
    mesh = subparsers.add_parser("mesh", help="mesh VPN between hosts behind NATs (GroupVPN-style)")
    sub = mesh.add_subparsers(dest="mesh_command", metavar="ACTION")

    cert = sub.add_parser("cert", help="group owner: certify a member; prints the certificate (hex)")
    cert.add_argument("--owner-key", required=True, type=Path, help="file with the owner's hex private key")
    cert.add_argument("--network", required=True, help="mesh network name")
    cert.add_argument("--wg-public-key", required=True, help="member's WireGuard public key (base64)")
    cert.add_argument("--member", required=True, help="member's signing address (0x...)")
    cert.add_argument("--ip", required=True, help="member's virtual IP")
    cert.add_argument("--days", type=float, default=30.0, help="validity in days")
    cert.add_argument("--seq", type=int, default=None, help="sequence number (default: now)")
    cert.set_defaults(func=_cert)

    gw = sub.add_parser("gateway", help="run a public gateway: record store, rendezvous, optional relay")
    gw.add_argument("--network", required=True)
    gw.add_argument("--owner", required=True, help="group owner's address")
    gw.add_argument("--listen", default=f"0.0.0.0:{DEFAULT_PORT}", help="HOST:PORT to bind")
    gw.add_argument("--relay", action="store_true", help="volunteer as a relay")
    gw.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: until a signal)")
    gw.set_defaults(func=_gateway)

    up = sub.add_parser("up", help="join this host to a mesh network and keep it up")
    up.add_argument("--network", required=True)
    up.add_argument("--owner", required=True, help="group owner's address")
    up.add_argument("--gateway", required=True, help="HOST:PORT of a mesh gateway")
    up.add_argument("--wg-key", required=True, type=Path, help="file with our WireGuard private key (base64)")
    up.add_argument("--member-key", required=True, type=Path, help="file with our member hex private key")
    up.add_argument("--cert", required=True, type=Path, help="file with our certificate (hex, from `mesh cert`)")
    up.add_argument("--listen-port", type=int, default=DEFAULT_PORT)
    up.add_argument("--ifname", default="warren-mesh", help="TUN interface name")
    up.add_argument("--prefix", type=int, default=24, help="virtual network prefix length")
    up.add_argument("--peer", action="append", default=[], metavar="VIP", help="virtual IP to connect to now")
    up.add_argument("--no-on-demand", dest="on_demand", action="store_false",
                    help="do not resolve virtual IPs on demand from traffic (only --peer and incoming)")
    up.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: until a signal)")
    up.set_defaults(func=_up)

    mesh.set_defaults(func=lambda args: mesh.print_help() or 2)


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _read_hex_key(path: Path) -> str:
    return path.read_text().strip()


def _cert(args: argparse.Namespace) -> int:
    from agents.wireguard.config import decode_key

    from .records import make_member_certificate

    now = int(time.time())
    raw = make_member_certificate(_read_hex_key(args.owner_key), decode_key(args.wg_public_key), args.network,
                                  args.member, args.ip, seq=args.seq if args.seq is not None else now,
                                  expires=now + int(args.days * 86400))
    print(raw.hex())
    return 0


def _wait(seconds: float) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait(seconds if seconds > 0 else None)


def _store(owner: str, network: str):
    from .mesh import GroupDirectory, group_authority
    from .records import RecordValidator
    from .store import RecordStore

    directory = GroupDirectory(owner, network)
    return directory, RecordStore(RecordValidator(directory, group_authority(owner)))


def _gateway(args: argparse.Namespace) -> int:
    from .core import OverlayConfig, OverlayNode
    from .nat import NatAgent
    from .runtime import UdpReactor

    from agents.wireguard.config import generate_private_key, public_key

    from .ids import node_id_from_wg_key
    from .mesh import guard_mesh

    directory, store = _store(args.owner, args.network)
    key = generate_private_key()  # the gateway's overlay identity: it proves its id like every host
    node = OverlayNode(node_id_from_wg_key(public_key(key)), OverlayConfig(), store=store, now=time.time())
    guard_mesh(node, directory, key)
    nat = NatAgent(node, relay_volunteer=args.relay)
    with UdpReactor() as reactor:
        rt = reactor.add_udp(node, bind=_hostport(args.listen))
        rt.call(lambda n, now: n.start_alone())
        print(f"mesh gateway for {args.network!r} on {rt.address[0]}:{rt.address[1]}"
              f"{' (relay)' if args.relay else ''}", flush=True)
        _wait(args.seconds)
        print(f"registered {len(nat.registry)}, records {len(store)}, relayed {nat.stats['relayed_bytes']} bytes")
    return 0


def _up(args: argparse.Namespace) -> int:
    from agents.wireguard.config import InterfaceConfig, decode_key, public_key
    from agents.wireguard.runtime import Tunnel

    from .core import OverlayConfig, OverlayNode
    from .errors import RecordRejected
    from .ids import node_id_from_wg_key
    from .mesh import MeshHost, guard_mesh
    from .nat import NatAgent
    from .runtime import UdpReactor, attach_to_tunnel
    from .ondemand import OnDemand
    from .wgrelay import MESH_MTU

    wg_priv = decode_key(args.wg_key.read_text())
    member_key = _read_hex_key(args.member_key)
    cert_raw = bytes.fromhex(args.cert.read_text().strip())
    directory, store = _store(args.owner, args.network)
    try:
        cert = store.validator.validate(cert_raw, time.time())
    except RecordRejected as exc:
        print(f"warren mesh: certificate refused: {exc.reason}", file=sys.stderr)
        return 1
    if cert.wg_key != public_key(wg_priv) or cert.member != Account.from_key(member_key).address:
        print("warren mesh: the certificate is for another WireGuard key or member key", file=sys.stderr)
        return 1
    gateway = _hostport(args.gateway)
    # on demand, the tunnel holds our IP as a /32 and a resolver device the prefix route (ondemand.py)
    own_prefix = 32 if args.on_demand else args.prefix
    tunnel = Tunnel(InterfaceConfig(private_key=wg_priv, listen_port=args.listen_port, mtu=MESH_MTU,
                                    addresses=[f"{cert.ip}/{own_prefix}"]), args.ifname).start()
    try:
        node = OverlayNode(node_id_from_wg_key(public_key(wg_priv)), OverlayConfig(), store=store, now=time.time())
        guard_mesh(node, directory, wg_priv)
        nat = NatAgent(node)
        with UdpReactor() as reactor:
            rt = attach_to_tunnel(node, tunnel, reactor)
            rt.call(lambda n, now: n.use_gateway(gateway, now))
            rt.call(lambda n, now: nat.register(gateway, now))
            deadline = time.monotonic() + 10
            while (node.gateway is None or nat.reflexive is None) and time.monotonic() < deadline:
                time.sleep(0.05)
            if node.gateway is None:
                print(f"warren mesh: gateway {args.gateway} does not answer", file=sys.stderr)
                return 1
            host = MeshHost(tunnel, rt, nat, directory, member_key, cert_raw)
            errors = host.publish()
            print(f"{args.ifname}: {cert.ip} in {args.network!r}, public address {nat.reflexive}"
                  f"{'; publish failed: ' + ', '.join(errors) if errors else ''}", flush=True)
            resolver = None
            if args.on_demand:
                resolver = OnDemand(host, f"{cert.ip}/{args.prefix}", f"{args.ifname[:10]}-rs")
            try:
                for vip in args.peer:
                    print(f"{vip}: {host.connect(vip) or 'unreachable'}", flush=True)
                _wait(args.seconds)
            finally:
                if resolver is not None:
                    resolver.close()
                host.close()
    finally:
        tunnel.close()
    return 0
