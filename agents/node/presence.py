"""An exit node's presence in the overlay: ring membership, NAT traversal, its signed PeerRecord.

Exit mode uses the overlay pieces mesh mode uses (:mod:`agents.overlay.mesh`), with the chain as
authority instead of a group owner: the node id is ``keccak256(wg public key)`` and a PeerRecord is
valid only when signed by the operator node_registry binds to that id (the ``directory``,
:class:`agents.chain.directory.RegistryDirectory` in production).

:class:`NodePresence` runs on the node's WireGuard tunnel socket (DESIGN.md: one UDP socket per host,
:func:`~agents.overlay.runtime.attach_to_tunnel`):

* **Public node** (``public_endpoint`` given): joins the ring through a bootstrap peer, or starts the
  ring when it is its own bootstrap; it answers REGISTER/CONNECT as a rendezvous for every host (the
  NAT agent always does), and with ``relay=True`` carries relay sessions within
  :class:`~agents.overlay.nat.RelayLimits`. Its PeerRecord lists ``public_endpoint``.
* **Node behind a NAT** (no ``public_endpoint``): does not join the ring (nobody could reach it
  unsolicited); it routes its puts through a bootstrap peer (client mode,
  :meth:`~agents.overlay.core.OverlayNode.use_gateway`) and registers with that peer as its
  rendezvous, which keeps the NAT mapping alive; it also stays registered with the next bootstrap
  peer (:data:`BACKUP_RENDEZVOUS`), so clients still reach it when its first rendezvous dies. Its
  PeerRecord lists the *rendezvous'* endpoints, never its own reflexive address (an unsolicited datagram there would leave the conntrack entry that
  spoils a later punch, see :data:`agents.overlay.nat.PUNCH_SYNC_S`). A client tells the two cases
  apart by the id in the PONG of an overlay PING to the endpoint (:mod:`agents.client.discovery`).

Clients that reach us through a relay: the relay's session shows up here as ``PathUp(kind="relay")``;
a :class:`~agents.overlay.wgrelay.RelayBridge` loopback port then injects the client's relayed
WireGuard datagrams into the tunnel, whose core answers the port it saw them come from (WireGuard
roaming), so replies go back through the relay with no peer configuration here. Relayed datagrams
must fit one overlay datagram: tunnels that serve relayed clients use ``wgrelay.MESH_MTU``.

Latency: an :data:`ECHO_REQUEST` in NAT DATA (direct) or RELAYED (relay) frames is answered with
:data:`ECHO_REPLY` and the same nonce, so a client measures the round trip over its real path.

The record is republished with a fresh expiry (and sequence number) every ``ttl_s / 2``, so it never
lapses while the node runs and lapses within ``ttl_s`` after it stops.

Known peers survive a restart (``peers_file``, as Bitcoin's peers.dat or a BitTorrent DHT's saved
nodes): the ring members we know are written there whenever they change, and a restarting public node
joins through them after its configured bootstrap peers. Without that, the ring's first node (its own
bootstrap) restarted alone while the others, having dropped it as dead, kept a ring of their own:
the overlay stayed split and clients asking the first node found nobody else.

Records live in memory on their holders. A public node holds its own (it owns its id's key); a node
behind a NAT looks its record up every ``record_check_s`` and publishes it again when it is gone, so
a record outlives the restart of all of its holders by seconds, not by half a TTL.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from pathlib import Path

from agents.overlay.core import GetDone, Joined, OverlayConfig, OverlayNode, PutDone
from agents.overlay.errors import LocalProtocolError, RemoteProtocolError
from agents.overlay.ids import node_id_from_wg_key
from agents.overlay.nat import DataReceived, NatAgent, PathDown, PathUp, RelayLimits
from agents.overlay.records import PEER, RecordValidator, RevocationAuthority, make_peer_record
from agents.overlay.runtime import UdpReactor, attach_to_tunnel
from agents.overlay.store import RecordStore
from agents.overlay.trust import guard
from agents.overlay.wgrelay import RelayBridge

__all__ = [
    "DEFAULT_TTL_S",
    "ECHO_REQUEST",
    "ECHO_REPLY",
    "JOIN_TIMEOUT_S",
    "MAX_RELAYED_CLIENTS",
    "NodePresence",
    "make_overlay",
]

log = logging.getLogger(__name__)

# One hour: a stale endpoint (node moved or stopped) is believed at most this long; republished every
# half TTL, so one lost put is repaired before the record lapses. Well under records.MAX_TTL (1 day).
DEFAULT_TTL_S = 3600
JOIN_TIMEOUT_S = 10.0  # per bootstrap peer: a few overlay RPC timeouts (OverlayConfig.rpc_timeout 1 s)
PUBLISH_TIMEOUT_S = 10.0  # one put: a lookup (bounded by lookup_deadline, 10 s) and a STORE
# Behind a NAT: besides the first rendezvous, stay registered with this many more bootstrap peers
# (listed in the PeerRecord after it), waiting at most BACKUP_WAIT_S for their answers at start.
BACKUP_RENDEZVOUS = 1
BACKUP_WAIT_S = 3.0
# Known peers tried on a restart: each dead one costs JOIN_TIMEOUT_S, so a few of the closest.
REJOIN_PEERS = 4
# How often the known-peer list is compared with the saved one (written only when it changed).
PEERS_SAVE_S = 5.0
# A node behind a NAT does not hold its own record (it is not in the ring): this often it looks the
# record up and publishes it again when it is gone (every holder restarted: stores are in memory).
RECORD_CHECK_S = 15.0
# Loopback bridge ports for relayed clients (one socket each): the relay grants at most 64 sessions
# (RelayLimits.max_sessions), and a node rarely has more relayed clients than that at once.
MAX_RELAYED_CLIENTS = 64
# Echo frames: first byte 0xff is no WireGuard message type (1..4), so RelayBridge never injects them.
ECHO_REQUEST = b"\xffwarren-echo?"
ECHO_REPLY = b"\xffwarren-echo!"
ECHO_NONCE = 8  # bytes of nonce after the magic


def make_overlay(tunnel, node_id: int, directory, *, authority: RevocationAuthority | None = None,
                 config: OverlayConfig | None = None, relay: bool = False,
                 limits: RelayLimits | None = None, revocations=None, auth_key: bytes | None = None):
    """An overlay node + NAT agent on ``tunnel``'s socket, timers on a reactor of its own.

    Shared by the node (:class:`NodePresence`) and the client (:mod:`agents.client.discovery`).
    With ``revocations`` (an :class:`agents.overlay.revocation.RevocationList`), revoked ids are
    refused everywhere: their datagrams, records and routing entries.

    With ``auth_key`` (the X25519 private key ``node_id`` is the keccak256 of the public key of), every
    datagram proves its sender id (:mod:`agents.overlay.auth`), only ids the directory lists (registered
    with stake on chain) enter routing state, and lookups refuse implausible ownership claims
    (:mod:`agents.overlay.trust`).

    Returns:
        ``(reactor, runtime, nat)``; the caller closes the reactor (which stops the timers; the
        tunnel's socket belongs to the tunnel).
    """
    store = RecordStore(RecordValidator(directory, authority))
    # SystemRandom: request ids (txids) must not be predictable from the public node id, or an
    # off-path host could forge replies to our look-ups
    node = OverlayNode(node_id, config or OverlayConfig(), store=store, rng=random.SystemRandom(),
                       now=time.time())
    guard(node, revocations=revocations, directory=directory, auth_key=auth_key)
    nat = NatAgent(node, relay_volunteer=relay, limits=limits or RelayLimits())
    reactor = UdpReactor().start()
    try:
        rt = attach_to_tunnel(node, tunnel, reactor)
    except Exception:
        reactor.close()
        raise
    return reactor, rt, nat


class NodePresence:
    """An exit node in the overlay (see the module docstring).

    Args:
        tunnel: the node's running ``agents.wireguard.runtime.Tunnel``.
        operator_key: the operator's Ethereum private key (signs the PeerRecord).
        region: region label (as registered in node_registry, at most 32 ASCII characters).
        price_per_gib: token wei per GiB (as registered; the record holds it in 16 bytes).
        directory: the OperatorDirectory (node_registry on chain).
        bootstrap: ``(host, port)`` of overlay peers to join through (a public node may list itself).
        public_endpoint: our ``(host, port)`` reachable from anywhere, or None behind a NAT.
        relay: volunteer as relay (public nodes only).
        ttl_s: lifetime of each published PeerRecord, seconds.
        relay_limits: what the relay grants one session.
        authority: who may revoke (revocation records are refused without one).
        config: overlay tunables.
        peers_file: where the ring members we know are kept across restarts (None: not kept).
        record_check_s: behind a NAT, how often to check that our record can still be found.
        revocations: the node's :class:`agents.overlay.revocation.RevocationList` (None: none kept).
        capacity_kbps: the bandwidth the node advertises in its PeerRecord, kbit/s (0: none).
    """

    def __init__(self, tunnel, *, operator_key, region: str, price_per_gib: int, directory,
                 bootstrap: list, public_endpoint: tuple | None = None, relay: bool = False,
                 ttl_s: int = DEFAULT_TTL_S, relay_limits: RelayLimits | None = None,
                 authority: RevocationAuthority | None = None, config: OverlayConfig | None = None,
                 peers_file: Path | None = None, record_check_s: float = RECORD_CHECK_S,
                 revocations=None, capacity_kbps: int = 0) -> None:
        if relay and public_endpoint is None:
            raise LocalProtocolError("presence: a relay must have a public endpoint")
        if not bootstrap and public_endpoint is None:
            raise LocalProtocolError("presence: a node behind a NAT needs a bootstrap peer")
        if not 0 <= price_per_gib < 1 << 128:
            raise LocalProtocolError("presence: price does not fit the PeerRecord (16 bytes)")
        self.tunnel = tunnel
        self.operator_key = operator_key
        self.region = region
        self.price_per_gib = price_per_gib
        #: The bandwidth advertised in the PeerRecord (kbit/s; 0: none): what challengers measure against.
        self.capacity_kbps = int(capacity_kbps)
        self.bootstrap = [tuple(b) for b in bootstrap]
        self.public_endpoint = tuple(public_endpoint) if public_endpoint else None
        self.relay = relay
        self.ttl_s = int(ttl_s)
        self.peers_file = Path(peers_file) if peers_file is not None else None
        self.record_check_s = record_check_s
        self._saved_peers: list[tuple] = self._load_peers()
        self.node_id = node_id_from_wg_key(tunnel.public_key)
        self._reactor, self.rt, self.nat = make_overlay(tunnel, self.node_id, directory, authority=authority,
                                                        config=config, relay=relay, limits=relay_limits,
                                                        revocations=revocations,
                                                        auth_key=tunnel.config.private_key)
        self.rendezvous: tuple | None = None
        self.backup_rendezvous: tuple = ()
        self.joined = False
        self.endpoints: tuple = ()
        self.seq = 0
        self.expires = 0
        self.last_publish: str | None = None  # "ok" or the failure reason
        self.bridge: RelayBridge | None = None
        self._relayed: set[int] = set()  # client overlay ids with a bridge port
        self._stop = threading.Event()
        self._republisher: threading.Thread | None = None
        self.rt.listeners.append(self._on_event)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "NodePresence":
        """Join (or start) the ring, register behind a NAT, publish the PeerRecord; returns self.

        Raises:
            RemoteProtocolError: no bootstrap peer answered, or the record could not be stored.
            LocalProtocolError: our own record is invalid (e.g. the directory lists another operator).
        """
        if self.public_endpoint is not None:
            self._join_ring()
            self.endpoints = (self.public_endpoint,)
        else:
            self._use_rendezvous()
            self.endpoints = (self.rendezvous, *self.backup_rendezvous)
        reason = self.publish()
        if reason != "ok":
            raise RemoteProtocolError(f"presence: PeerRecord not stored: {reason}")
        self._republisher = threading.Thread(target=self._republish_loop, name="presence-republish", daemon=True)
        self._republisher.start()
        return self

    def _join_ring(self) -> None:
        configured = [b for b in self.bootstrap if b != self.public_endpoint]
        known = [p for p in self._saved_peers if p != self.public_endpoint and p not in configured]
        for peer in configured + known[:REJOIN_PEERS]:
            with self.rt.lock:
                old = {id(e) for e in self.rt.events if isinstance(e, Joined)}
            self.rt.call(lambda node, now, peer=peer: node.bootstrap(peer, now))
            if self.rt.wait_for(lambda e: isinstance(e, Joined) and id(e) not in old, JOIN_TIMEOUT_S):
                self.joined = True
                if peer not in configured:
                    log.info("presence: rejoined the ring through known peer %s:%d", *peer)
                return
        if configured:
            raise RemoteProtocolError(f"presence: no bootstrap peer of {configured} let us join")
        # our own bootstrap and no known peer answered: the first node of a ring
        self.rt.call(lambda node, now: node.start_alone())
        self.joined = True

    # ------------------------------------------------------------------ known peers

    def known_peers(self) -> list[tuple]:
        """``(host, port)`` of the ring members in our routing table, closest successors first."""
        with self.rt.lock:
            return [tuple(c.addr) for c in self.rt.node.table.contacts() if c.node_id != self.node_id]

    def _load_peers(self) -> list[tuple]:
        if self.peers_file is None or not self.peers_file.exists():
            return []
        try:
            return [(str(h), int(p)) for h, p in json.loads(self.peers_file.read_text())]
        except (ValueError, TypeError, OSError) as exc:  # a damaged file is only a lost hint
            log.warning("presence: ignoring known-peers file %s: %s", self.peers_file, exc)
            return []

    def save_peers(self) -> None:
        """Write the known peers (atomically) if they changed since the last write."""
        peers = self.known_peers()
        if self.peers_file is None or not peers or peers == self._saved_peers:
            return
        tmp = self.peers_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(peers))
        os.replace(tmp, self.peers_file)
        self._saved_peers = peers

    def _use_rendezvous(self) -> None:
        for i, peer in enumerate(self.bootstrap):
            self.rt.call(lambda node, now, peer=peer: node.use_gateway(peer, now))
            self.rt.call(lambda node, now, peer=peer: self.nat.register(peer, now))
            deadline = time.monotonic() + JOIN_TIMEOUT_S
            while time.monotonic() < deadline and not self._stop.is_set():
                if self.rt.node.gateway is not None and self.nat.reflexive is not None:
                    self.rendezvous = peer
                    self._add_backup_rendezvous(self.bootstrap[i + 1:])
                    return
                time.sleep(0.05)
        raise RemoteProtocolError(f"presence: no bootstrap peer of {self.bootstrap} answered")

    def _add_backup_rendezvous(self, candidates: list) -> None:
        """Stay registered with up to :data:`BACKUP_RENDEZVOUS` more bootstrap peers that answer, so
        that clients still reach us through one of them when our first rendezvous dies."""
        backups = [tuple(p) for p in candidates[:BACKUP_RENDEZVOUS]]
        for peer in backups:
            self.rt.call(lambda node, now, peer=peer: self.nat.register_backup(peer, now))
        deadline = time.monotonic() + BACKUP_WAIT_S
        while time.monotonic() < deadline and not self._stop.is_set():
            with self.rt.lock:
                if self.nat.registered_at.issuperset(backups):
                    break
            time.sleep(0.05)
        with self.rt.lock:
            self.backup_rendezvous = tuple(p for p in self.nat.backups if p in self.nat.registered_at)

    def publish(self) -> str:
        """Sign and store a fresh PeerRecord (seq and expiry from now); returns "ok" or why not."""
        now = int(time.time())
        self.seq = max(self.seq + 1, now)
        expires = now + self.ttl_s
        raw = make_peer_record(self.operator_key, self.tunnel.public_key, self.endpoints, seq=self.seq,
                               expires=expires, region=self.region, price=self.price_per_gib,
                               capacity_kbps=self.capacity_kbps)
        op = self.rt.call(lambda node, t: node.put(raw, t))
        ev = self.rt.wait_for(lambda e: isinstance(e, PutDone) and e.op_id == op, PUBLISH_TIMEOUT_S)
        self.last_publish = "timed out" if ev is None else "ok" if ev.ok else (ev.reason or "refused")
        if self.last_publish == "ok":
            self.expires = expires
        else:
            log.warning("presence: PeerRecord put failed: %s", self.last_publish)
        return self.last_publish

    def _republish_loop(self) -> None:
        interval = max(self.ttl_s / 2, 1.0)
        retry = min(interval, 10.0)  # a failed put is retried sooner, still well within the TTL
        due = time.monotonic() + interval
        check_due = time.monotonic() + self.record_check_s
        while not self._stop.wait(min(PEERS_SAVE_S, self.record_check_s, max(due - time.monotonic(), 0.0))):
            try:
                self.save_peers()
            except OSError as exc:
                log.warning("presence: cannot save known peers: %s", exc)
            if self.public_endpoint is None and time.monotonic() >= check_due:
                check_due = time.monotonic() + self.record_check_s
                if not self.record_findable():
                    log.info("presence: our PeerRecord is no longer in the overlay (its holders restarted?): "
                             "publishing it again")
                    due = 0.0
            if time.monotonic() < due:
                continue
            try:
                due = time.monotonic() + (interval if self.publish() == "ok" else retry)
            except LocalProtocolError as exc:  # e.g. the operator changed on chain: keep trying
                log.warning("presence: cannot republish: %s", exc)
                due = time.monotonic() + retry

    def record_findable(self) -> bool:
        """Whether a look-up of our id finds our current PeerRecord (True when we cannot tell)."""
        op = self.rt.call(lambda node, t: node.get(self.node_id, t))
        ev = self.rt.wait_for(lambda e: isinstance(e, GetDone) and e.op_id == op, PUBLISH_TIMEOUT_S)
        if ev is None:  # the overlay did not answer: a put would not get through either
            return True
        return any(r.kind == PEER and r.node_id == self.node_id and r.seq >= self.seq for r in ev.records)

    def close(self) -> None:
        """Stop republishing, the relay bridge and the overlay timers (the tunnel is the caller's)."""
        self._stop.set()
        if self._republisher is not None:
            self._republisher.join(timeout=PUBLISH_TIMEOUT_S + 1)
        try:
            self.save_peers()
        except OSError as exc:
            log.warning("presence: cannot save known peers: %s", exc)
        if self._on_event in self.rt.listeners:
            self.rt.listeners.remove(self._on_event)
        if getattr(self.tunnel, "_demux", None) == self.rt.on_datagram:  # not a later attachment's
            self.tunnel.set_demux(None)
        self._reactor.close()
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None

    def status(self) -> dict:
        """What the node's overlay presence looks like now (for `warren node status`)."""
        with self.rt.lock:
            return {
                "node_id": "0x" + self.node_id.to_bytes(32, "big").hex(),
                "mode": "public" if self.public_endpoint else "behind-nat",
                "ring_joined": self.joined,
                "gateway": self.rt.node.gateway.addr if self.rt.node.gateway else None,
                "endpoints": list(self.endpoints),
                "rendezvous": self.rendezvous,
                "backup_rendezvous": list(self.backup_rendezvous),
                "reflexive": self.nat.reflexive,
                "relay": self.relay,
                "relay_sessions": len(self.nat.sessions),
                "relayed_bytes": self.nat.stats["relayed_bytes"],
                "registered_here": len(self.nat.registry),
                "relayed_clients": len(self._relayed),
                "record_seq": self.seq,
                "record_expires": self.expires,
                "last_publish": self.last_publish,
            }

    # ------------------------------------------------------------------ events

    def _on_event(self, ev) -> None:
        # called by the runtime with its lock held: only quick work here
        if isinstance(ev, PathUp):
            if ev.kind == "relay":
                if self.bridge is None:
                    self.bridge = RelayBridge(self.tunnel, self._relay_send)
                if ev.peer in self._relayed or len(self._relayed) < MAX_RELAYED_CLIENTS:
                    self.bridge.endpoint(ev.peer)
                    self._relayed.add(ev.peer)
                else:
                    log.warning("presence: too many relayed clients, refusing %x", ev.peer)
            elif ev.peer in self._relayed:
                # upgraded to a direct path: the client's WireGuard roams there, stop injecting
                self._drop(ev.peer)
        elif isinstance(ev, DataReceived):
            if ev.data.startswith(ECHO_REQUEST) and len(ev.data) == len(ECHO_REQUEST) + ECHO_NONCE:
                self.nat.send(ev.peer, ECHO_REPLY + ev.data[len(ECHO_REQUEST):], self.rt.clock())
            elif ev.via == "relay" and self.bridge is not None:
                self.bridge.deliver(ev.peer, ev.data)
        elif isinstance(ev, PathDown) and ev.peer in self._relayed:
            self._drop(ev.peer)

    def _drop(self, peer: int) -> None:
        self._relayed.discard(peer)
        self.bridge.drop(peer)

    def _relay_send(self, peer: int, datagram: bytes) -> None:
        self.rt.call(lambda node, now: self.nat.send(peer, datagram, now))

    def __enter__(self) -> "NodePresence":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
