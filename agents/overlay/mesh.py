"""Mesh mode (GroupVPN-style): hosts with virtual IPs reach each other directly through NATs.

A group owner's key certifies members (:func:`~agents.overlay.records.make_member_certificate`: node
id / WireGuard key, the member's signing address, its virtual IP), as GroupVPN's group CA did; mesh
hosts need no stake. :class:`GroupDirectory` is the :class:`~agents.overlay.records.OperatorDirectory`
of a mesh: it learns members from certificates that validate against the owner's address, lets a
member's IPRecord claim only its certified IP, and refuses revoked members (a revocation is the
owner's EIP-712 ``Revocation`` signature, checked by a one-guardian
:class:`~agents.overlay.records.RevocationAuthority`).

:class:`MeshHost` ties the parts together on one host: a WireGuard tunnel (the runtime engineer's
``agents.wireguard.runtime.Tunnel``, real TUN device) whose UDP socket also carries the overlay
(:func:`~agents.overlay.runtime.attach_to_tunnel`); an overlay node in client mode behind a public
gateway that stores records; a :class:`~agents.overlay.nat.NatAgent` for rendezvous and punching. A
packet to a virtual IP is resolved through the DHT (IPRecord -> node id -> MEMBER certificate with the
WireGuard key), a direct path is punched, and the peer is added to the tunnel with that endpoint.

When punching fails (symmetric NAT on both sides), the NAT agent's relay session carries the
WireGuard datagrams: the peer's WireGuard endpoint is a loopback port of a
:class:`~agents.overlay.wgrelay.RelayBridge` that means "via the relay" (see :mod:`.wgrelay`); when a
later punch succeeds the endpoint moves to the direct address, keeping the WireGuard session.

Peers are set up on demand too: :class:`~agents.overlay.ondemand.OnDemand` turns the first packet to
an unknown virtual IP into :meth:`MeshHost.connect` (packets queued meanwhile).

Every overlay datagram proves its sender (:func:`guard_mesh`, :mod:`agents.overlay.auth`): a host
with its WireGuard key, the gateway with a key of its own. Without it anyone could register at the
gateway as a member's id and take that member's introductions and relay sessions. Only certified
members (and the host's own gateway) enter routing state.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import time

from eth_utils import to_checksum_address

from agents.wireguard.errors import LocalProtocolError as TunnelError

from .core import GetDone, PutDone
from .nat import DataReceived, NatAgent, PathDown, PathUp
from .errors import RecordRejected
from .wgrelay import RelayBridge
from .records import (
    IP,
    MEMBER,
    InMemoryDirectory,
    Record,
    RevocationAuthority,
    decode_record,
    ip_key,
    make_ip_record,
)

__all__ = ["GroupDirectory", "MeshHost", "group_authority", "guard_mesh", "ZERO_ADDRESS"]

log = logging.getLogger(__name__)

ZERO_ADDRESS = "0x" + "00" * 20
# Relayed WireGuard datagrams kept while a new peer's certificate is checked: a handshake
# initiation (and a retransmission or two) per peer, for a few peers at once; bounded memory.
MAX_PENDING_DATAGRAMS = 4
MAX_PENDING_PEERS = 16
MESH_CHAIN_ID = 0  # mesh revocations are not on chain: EIP-712 domain with chain id 0 ...
# ... and the zero address as verifying contract (the owner's signature is all that counts)


def group_authority(owner: str) -> RevocationAuthority:
    """Who may revoke a mesh member: the group owner alone."""
    return RevocationAuthority({to_checksum_address(owner)}, 1, MESH_CHAIN_ID, ZERO_ADDRESS)


def guard_mesh(node, directory: "GroupDirectory", key: bytes) -> None:
    """Authenticate ``node``'s overlay senders with ``key`` (the X25519 key its id is made of) and
    admit into its routing state only certified members and the gateway it uses."""
    from .trust import guard

    def admit(nid: int) -> bool:
        return nid in directory.members or (node.gateway is not None and nid == node.gateway.node_id)

    guard(node, auth_key=key, admit=admit)


class GroupDirectory(InMemoryDirectory):
    """Members of one mesh network, learned from the owner's certificates.

    Args:
        owner: the group owner's address (signs MEMBER certificates and revocations).
        network: the mesh network's name.
    """

    def __init__(self, owner: str, network: str) -> None:
        super().__init__()
        self.group_owner = to_checksum_address(owner)
        self.network = network
        self.members: dict[int, Record] = {}

    def admit(self, cert: Record) -> None:
        """Record a validated certificate (called by the validator)."""
        held = self.members.get(cert.node_id)
        if held is None or cert.seq >= held.seq:
            self.members[cert.node_id] = cert
            self.operators[cert.node_id] = cert.member

    def may_claim_ip(self, node_id: int, network: str, ip: str) -> bool:
        """An IPRecord may only claim the member's certified virtual IP in this network."""
        cert = self.members.get(node_id)
        return cert is not None and network == self.network and cert.ip == ip


class MeshHost:
    """One mesh host (see the module docstring).

    Args:
        tunnel: a started ``agents.wireguard.runtime.Tunnel`` (its TUN has our virtual IP).
        runtime: the overlay runtime attached to the tunnel's socket (node with a record store whose
            validator uses a :class:`GroupDirectory`).
        nat: the NAT agent on the same node.
        directory: the group directory.
        member_key: our member signing key (its address is in our certificate).
        certificate: our MEMBER certificate (raw).
    """

    def __init__(self, tunnel, runtime, nat: NatAgent, directory: GroupDirectory, member_key, certificate: bytes):
        self.tunnel = tunnel
        self.rt = runtime
        self.nat = nat
        self.directory = directory
        self.member_key = member_key
        self.certificate = certificate
        self.cert = runtime.node.store.validator.validate(certificate, runtime.clock())
        self.peers: dict[int, str] = {}  # node id -> path kind used ("direct" or "relay")
        self.bridge: RelayBridge | None = None  # loopback ports of relayed peers (wgrelay.py)
        self._pending: dict[int, list[bytes]] = {}  # relayed datagrams from peers not yet added
        self._lock = threading.RLock()
        runtime.listeners.append(self._on_event)
        self.listener_installed = True

    @property
    def vip(self) -> str:
        return self.cert.ip

    def _op(self, start, kind, timeout: float):
        op = self.rt.call(start)
        ev = self.rt.wait_for(lambda e: isinstance(e, kind) and e.op_id == op, timeout)
        return ev

    def publish(self, ttl: int = 3600, timeout: float = 10.0) -> list[str]:
        """Put our certificate and our IPRecord into the DHT (the node republishes them).

        Returns:
            The failure reasons (empty when both were stored).
        """
        now = int(time.time())
        iprec = make_ip_record(self.member_key, self.cert.wg_key, self.cert.network, self.cert.ip,
                               seq=now, expires=now + ttl)
        errors = []
        for raw in (self.certificate, iprec):
            ev = self._op(lambda node, now, raw=raw: node.put(raw, now), PutDone, timeout)
            if ev is None or not ev.ok:
                errors.append(ev.reason if ev else "timed out")
        return errors

    def resolve(self, vip: str, timeout: float = 10.0) -> Record | None:
        """Virtual IP -> the member's certificate (via its IPRecord in the DHT), or None."""
        net = self.cert.network
        ev = self._op(lambda node, now: node.get(ip_key(net, vip), now), GetDone, timeout)
        if ev is None:
            return None
        ips = [r for r in ev.records if r.kind == IP and r.ip == vip]
        validator = self.rt.node.store.validator
        for raw in ev.rejected:
            # An IPRecord is checked against its member's certificate, which we may not hold yet:
            # fetch the certificate (validating it admits the member), then check the record again.
            try:
                rec = decode_record(raw)
            except RecordRejected:
                continue
            if rec.kind != IP or rec.ip != vip or self.certificate_of(rec.node_id, timeout) is None:
                continue
            try:
                ips.append(validator.validate(raw, self.rt.clock()))
            except RecordRejected as exc:
                log.info("mesh: IPRecord for %s refused: %s", vip, exc.reason)
        if not ips:
            return None
        node_id = max(ips, key=lambda r: r.seq).node_id
        return self.directory.members.get(node_id) or self.certificate_of(node_id, timeout)

    def certificate_of(self, node_id: int, timeout: float = 10.0) -> Record | None:
        """The MEMBER certificate of ``node_id`` from the DHT (validated, so the directory learns it)."""
        ev = self._op(lambda node, now: node.get(node_id, now), GetDone, timeout)
        certs = [r for r in (ev.records if ev else []) if r.kind == MEMBER]
        return max(certs, key=lambda r: r.seq) if certs else None

    def connect(self, vip: str, timeout: float = 20.0) -> str | None:
        """Resolve ``vip``, punch a path, add the peer to the tunnel; returns the path kind or None."""
        cert = self.resolve(vip)
        if cert is None or self.rt.node.store.validator.is_revoked(cert.node_id):
            return None
        if cert.node_id in self.peers:
            return self.peers[cert.node_id]
        with self.rt.lock:  # only a PathUp that comes after this call counts (the history is kept)
            old = {id(e) for e in self.rt.events if isinstance(e, PathUp)}
        self.rt.call(lambda node, now: self.nat.connect(cert.node_id, now))
        up = self.rt.wait_for(lambda e: isinstance(e, PathUp) and e.peer == cert.node_id and id(e) not in old,
                              timeout)
        if up is None:
            return None
        self._add_peer(cert, up)
        return up.kind

    def _on_event(self, ev) -> None:
        # called by the runtime with its lock held: quick work here, DHT look-ups on a thread
        if isinstance(ev, PathUp):
            held = self.peers.get(ev.peer)
            if held == "direct" or (held == "relay" and ev.kind == "relay"):
                return
            # the other end of a punch or of a relay session (its certificate is checked first), or
            # a later punch for a relayed peer (upgrade); on a thread: that work runs `ip route`
            threading.Thread(target=self._accept, args=(ev,), daemon=True).start()
        elif isinstance(ev, DataReceived) and ev.via == "relay":
            held = self.peers.get(ev.peer)
            if held == "relay" and self.bridge is not None:
                self.bridge.deliver(ev.peer, ev.data)
            elif held is None and (ev.peer in self._pending or len(self._pending) < MAX_PENDING_PEERS):
                # the peer's first handshake can overtake our certificate check (_accept): keep it
                queue = self._pending.setdefault(ev.peer, [])
                if len(queue) < MAX_PENDING_DATAGRAMS:
                    queue.append(ev.data)
        elif isinstance(ev, PathDown) and self.peers.get(ev.peer) == "relay":
            # the relay's budget ran out: forget the peer, so the next packet resolves it again
            threading.Thread(target=self._remove_peer, args=(ev.peer,), daemon=True).start()

    def _accept(self, up: PathUp) -> None:
        cert = self.directory.members.get(up.peer) or self.certificate_of(up.peer)
        if cert is None or self.rt.node.store.validator.is_revoked(up.peer):
            log.warning("mesh: refusing uncertified or revoked peer %x", up.peer)
            self._pending.pop(up.peer, None)
            return
        self._add_peer(cert, up)

    def _remove_peer(self, node_id: int) -> None:
        cert = self.directory.members.get(node_id)
        with self._lock:
            if self.peers.get(node_id) != "relay":
                return
            if self.bridge is not None:
                self.bridge.drop(node_id)
            if cert is not None:
                self.tunnel.remove_peer(cert.wg_key)
                with contextlib.suppress(TunnelError):  # the route, so OnDemand sees packets again
                    self.tunnel.tun.ip("route", "del", f"{cert.ip}/{32 if ':' not in cert.ip else 128}")
            # last: whoever sees the peer gone from ``peers`` (status, tests: they read without the
            # lock) finds its WireGuard peer and route gone too (CI once saw the peer still there)
            del self.peers[node_id]
        log.info("mesh: relay path to %x ended", node_id)

    def _relay_send(self, peer: int, datagram: bytes) -> None:
        self.rt.call(lambda node, now: self.nat.send(peer, datagram, now))

    def _add_peer(self, cert: Record, up: PathUp) -> None:
        from agents.wireguard.config import PeerConfig

        with self._lock:
            if self.peers.get(cert.node_id) == "direct":
                return
            if up.kind == "direct":
                endpoint = up.addr
            else:  # WireGuard's endpoint for this peer is a loopback port that means "via the relay"
                if self.bridge is None:
                    self.bridge = RelayBridge(self.tunnel, self._relay_send)
                endpoint = self.bridge.endpoint(cert.node_id)
            net = ipaddress.ip_network(f"{cert.ip}/{32 if ':' not in cert.ip else 128}")
            # add or update: on an upgrade the WireGuard session is kept, only the endpoint moves
            self.tunnel.add_peer(PeerConfig(public_key=cert.wg_key, allowed_ips=[str(net)], endpoint=endpoint,
                                            persistent_keepalive=25))
            was = self.peers.get(cert.node_id)
            self.peers[cert.node_id] = up.kind
            for datagram in self._pending.pop(cert.node_id, []):
                if up.kind == "relay":
                    self.bridge.deliver(cert.node_id, datagram)
            if was == "relay" and up.kind == "direct" and self.bridge is not None:
                self.bridge.drop(cert.node_id)
            log.info("mesh: %s via %s", cert.ip, up.kind)

    def close(self) -> None:
        """Stop the relay bridge (the tunnel and the runtime belong to the caller)."""
        if self.listener_installed:
            self.rt.listeners.remove(self._on_event)
            self.listener_installed = False
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None
