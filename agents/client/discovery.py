"""Finding an exit node in the overlay and a path to it, from the client's tunnel socket.

DESIGN.md, "Sessions (exit mode)", step 1: the chain lists the nodes; the overlay says where a node is
now. :class:`ClientDiscovery` runs an overlay node in client mode on the client's WireGuard socket
(:func:`agents.node.presence.make_overlay`, as the node does): it routes look-ups through a bootstrap
peer and registers there as its rendezvous (which also keeps a NAT mapping open for introductions and
relayed frames). Its overlay id is the hash of a fresh overlay-only key (the overlay proves every
sender's id with its key, :mod:`agents.overlay.auth`), never of the tunnel's key, so it links nothing.

* :meth:`ClientDiscovery.resolve`: the node's PeerRecord from the DHT, accepted only when it validates
  here (signature of the operator the ``directory`` lists for that node id, not expired, not revoked):
  a holder that serves a forged record is not believed.
* :meth:`ClientDiscovery.path_to`: the endpoint to give WireGuard. The record's endpoints are either
  the node's own public endpoint or its rendezvous (:mod:`agents.node.presence`); an overlay PING tells
  which, by the id in the PONG. A public endpoint is used as it is; through a rendezvous the NAT agent
  punches (direct path: the node's NAT mapping), and when punching fails it falls back on a relay
  session, for which a :class:`~agents.overlay.wgrelay.RelayBridge` loopback port stands in as the
  WireGuard endpoint (as mesh mode does; relayed tunnels need ``wgrelay.MESH_MTU``).
* :meth:`ClientDiscovery.rtt`: the round trip of an overlay PING (public endpoint, punched path) or of
  an echo frame through the relay (:data:`agents.node.presence.ECHO_REQUEST`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from agents.node.presence import ECHO_NONCE, ECHO_REPLY, ECHO_REQUEST, JOIN_TIMEOUT_S, make_overlay
from agents.overlay.core import GetDone, OverlayConfig
from agents.overlay.nat import PUNCH_SYNC_S, PUNCH_TIMEOUT_S, DataReceived, PathDown, PathUp
from agents.overlay.records import PEER, Record, RevocationAuthority
from agents.overlay.wgrelay import RelayBridge
from agents.overlay.ids import node_id_from_wg_key
from agents.overlay.wire import Contact
from agents.wireguard.config import generate_private_key, public_key

__all__ = ["ClientDiscovery", "PATH_TIMEOUT_S"]

log = logging.getLogger(__name__)

# Punching (PUNCH_SYNC_S + PUNCH_TIMEOUT_S), then asking the relay and its RELAY_OK: a few seconds on
# a loaded machine.
PATH_TIMEOUT_S = PUNCH_SYNC_S + PUNCH_TIMEOUT_S + 7.0
PROBE_TIMEOUT_S = 2.0  # an overlay PING to a published endpoint: several WAN round trips


class ClientDiscovery:
    """Overlay look-ups and paths for a client (see the module docstring).

    Args:
        tunnel: the client's running ``agents.wireguard.runtime.Tunnel``.
        directory: the OperatorDirectory (node_registry on chain).
        bootstrap: ``(host, port)`` of public overlay peers (the first that answers is used).
        authority: who may revoke (revocation records are refused without one).
        config: overlay tunables.
    """

    def __init__(self, tunnel, *, directory, bootstrap: list, authority: RevocationAuthority | None = None,
                 config: OverlayConfig | None = None) -> None:
        self.tunnel = tunnel
        self.bootstrap = [tuple(b) for b in bootstrap]
        self._directory, self._authority, self._config = directory, authority, config
        # A key of its own for the overlay (not the tunnel's): the id it proves is unlinkable to the
        # WireGuard key the exit sees, as the random id it replaces was.
        overlay_key = generate_private_key()
        self.client_id = node_id_from_wg_key(public_key(overlay_key))
        self._reactor, self.rt, self.nat = make_overlay(tunnel, self.client_id, directory, authority=authority,
                                                        config=config, auth_key=overlay_key)
        self.bridge: RelayBridge | None = None
        self.paths: dict[int, tuple[str, tuple]] = {}  # node id -> (kind, WireGuard endpoint)
        self._echoes: dict[bytes, list] = {}  # nonce -> [event, receive time]
        self._lock = threading.Lock()
        self._gateway_lock = threading.Lock()
        self.rt.listeners.append(self._on_event)
        self._try = 0
        if self.bootstrap:
            self._ask_gateway(self.bootstrap[0])

    # ------------------------------------------------------------------ overlay plumbing

    def _ask_gateway(self, peer: tuple) -> None:
        self.rt.call(lambda node, now: node.use_gateway(peer, now))
        self.rt.call(lambda node, now: self.nat.register(peer, now))

    def _ensure_gateway(self, deadline: float) -> bool:
        """Wait (until ``deadline``, monotonic) for a bootstrap peer to answer, trying each in turn."""
        with self._gateway_lock:
            while self.rt.node.gateway is None:
                started = time.monotonic()
                while self.rt.node.gateway is None and time.monotonic() < min(deadline, started + JOIN_TIMEOUT_S):
                    time.sleep(0.05)
                if self.rt.node.gateway is not None:
                    break
                if time.monotonic() >= deadline or not self.bootstrap:
                    return False
                self._try = (self._try + 1) % len(self.bootstrap)
                self._ask_gateway(self.bootstrap[self._try])
            return True

    def _op(self, start, kind, timeout: float):
        op = self.rt.call(start)
        return self.rt.wait_for(lambda e: isinstance(e, kind) and e.op_id == op, timeout)

    # ------------------------------------------------------------------ public API

    def resolve(self, node_id: bytes, timeout: float = 10.0) -> Record | None:
        """The node's current PeerRecord, validated here, or None (unknown, forged, expired, timed out)."""
        nid = int.from_bytes(node_id, "big")
        deadline = time.monotonic() + timeout
        if not self._ensure_gateway(deadline):
            return None
        ev = self._op(lambda node, now: node.get(nid, now), GetDone, max(deadline - time.monotonic(), 0.1))
        if ev is None:
            return None
        if ev.rejected:
            log.info("discovery: %d record(s) for %x refused", len(ev.rejected), nid)
        peers = [r for r in ev.records if r.kind == PEER and r.node_id == nid]
        return max(peers, key=lambda r: r.seq) if peers else None

    def path_to(self, node_id: bytes, timeout: float = PATH_TIMEOUT_S, *,
                peer_record: Record | None = None) -> tuple | None:
        """The ``(host, port)`` to give WireGuard for the node: public, punched, or a relay bridge port.

        ``peer_record``: the node's PeerRecord if the caller has just resolved it (saves a lookup).

        Returns:
            The endpoint, or None when the node cannot be resolved or reached.
        """
        nid = int.from_bytes(node_id, "big")
        deadline = time.monotonic() + timeout
        held = self.paths.get(nid)
        if held is not None and (held[0] == "public" or self.nat.path(nid) is not None):
            return held[1]
        rec = peer_record or self.resolve(node_id, timeout)
        if rec is None:
            return None
        rendezvous = None
        for endpoint in rec.endpoints:
            answer = self._probe(tuple(endpoint), min(PROBE_TIMEOUT_S, max(deadline - time.monotonic(), 0.1)))
            if answer is None:
                continue
            if answer[0] == nid:  # the node itself answered: a public endpoint
                self.paths[nid] = ("public", tuple(endpoint))
                return tuple(endpoint)
            rendezvous = rendezvous or tuple(endpoint)
        if rendezvous is None:
            return None
        return self._via_rendezvous(nid, rendezvous, deadline)

    def rtt(self, target, timeout: float = PROBE_TIMEOUT_S) -> float | None:
        """Round-trip time in seconds to a node (``bytes`` id) or an endpoint, or None (no answer).

        For a node id, the path :meth:`path_to` found is measured: an overlay PING to a public or
        punched endpoint, an echo through the relay otherwise.
        """
        if isinstance(target, tuple):
            answer = self._probe(target, timeout)
            return None if answer is None else answer[1]
        nid = int.from_bytes(target, "big")
        held = self.paths.get(nid)
        if held is None:
            return None
        if held[0] == "public":
            answer = self._probe(held[1], timeout, expect=nid)
            return None if answer is None else answer[1]
        kind = self.nat.path(nid)
        if kind == "direct":
            answer = self._probe(self.nat.peers[nid].direct, timeout, expect=nid)
            return None if answer is None else answer[1]
        if kind == "relay":
            return self._echo(nid, timeout)
        return None

    def sibling(self, tunnel) -> "ClientDiscovery":
        """Another client overlay node on ``tunnel``'s socket, with this one's directory, bootstrap,
        authority and config and an overlay key of its own.

        `--paths N` reaches an exit behind a NAT from each path's own socket: a punched mapping
        admits only the address and port that punched it, and a relay bridge feeds only its own
        tunnel (agents.client.multipath.reach_from_paths).
        """
        return ClientDiscovery(tunnel, directory=self._directory, bootstrap=self.bootstrap,
                               authority=self._authority, config=self._config)

    def close(self) -> None:
        """Stop the overlay timers and the relay bridge (the tunnel is the caller's)."""
        if self._on_event in self.rt.listeners:
            self.rt.listeners.remove(self._on_event)
        if getattr(self.tunnel, "_demux", None) == self.rt.on_datagram:  # not a later attachment's
            self.tunnel.set_demux(None)
        self._reactor.close()
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None

    def __enter__(self) -> "ClientDiscovery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ paths

    def _probe(self, endpoint: tuple, timeout: float, expect: int = 0) -> tuple[int, float] | None:
        """Overlay PING ``endpoint``: ``(answering node id, round trip s)`` or None."""
        done = threading.Event()
        result: list = []
        sent = time.monotonic()

        def pong(sender: Contact, now: float) -> None:
            result.append((sender.node_id, time.monotonic() - sent))
            done.set()

        self.rt.call(lambda node, now: node.ping(Contact(expect, endpoint), now, pong))
        return result[0] if done.wait(timeout) else None

    def _via_rendezvous(self, nid: int, rendezvous: tuple, deadline: float) -> tuple | None:
        if self.nat.rendezvous != rendezvous:  # the node's rendezvous is not ours: register there too
            self.rt.call(lambda node, now: self.nat.register(rendezvous, now))
        with self.rt.lock:  # only a PathUp/PathDown after this call counts (the history is kept)
            old = {id(e) for e in self.rt.events if isinstance(e, (PathUp, PathDown))}
            self.rt.call(lambda node, now: self.nat.connect(nid, now))  # the lock is re-entrant
        ev = self.rt.wait_for(lambda e: isinstance(e, (PathUp, PathDown)) and e.peer == nid and id(e) not in old,
                              max(deadline - time.monotonic(), 0.1))
        if not isinstance(ev, PathUp):
            log.info("discovery: no path to %x: %s", nid, getattr(ev, "reason", "timed out"))
            return None
        if ev.kind == "direct":
            endpoint = tuple(ev.addr)
        else:
            with self._lock:
                if self.bridge is None:
                    self.bridge = RelayBridge(self.tunnel, self._relay_send)
            endpoint = self.bridge.endpoint(nid)
        self.paths[nid] = (ev.kind, endpoint)
        return endpoint

    def _upgrade(self, nid: int, direct: tuple) -> None:
        from agents.wireguard.config import PeerConfig

        held = self.paths.get(nid)
        if held is None or held[0] != "relay" or self.bridge is None:
            return
        for peer in self.tunnel.peers():  # the WireGuard peer whose endpoint is the bridge port
            if peer.endpoint is not None and tuple(peer.endpoint) == held[1]:
                self.tunnel.add_peer(PeerConfig(public_key=peer.public_key, allowed_ips=list(peer.allowed_ips),
                                                endpoint=direct, persistent_keepalive=peer.persistent_keepalive,
                                                preshared_key=self.tunnel._psk.get(peer.public_key)))
        self.paths[nid] = ("direct", direct)
        with contextlib.suppress(Exception):
            self.bridge.drop(nid)
        log.info("discovery: path to %x upgraded to direct %s", nid, direct)

    def _relay_send(self, peer: int, datagram: bytes) -> None:
        self.rt.call(lambda node, now: self.nat.send(peer, datagram, now))

    def _echo(self, nid: int, timeout: float) -> float | None:
        nonce = os.urandom(ECHO_NONCE)
        slot = [threading.Event(), 0.0]
        self._echoes[nonce] = slot
        try:
            sent = time.monotonic()
            self.rt.call(lambda node, now: self.nat.send(nid, ECHO_REQUEST + nonce, now))
            return slot[1] - sent if slot[0].wait(timeout) else None
        finally:
            self._echoes.pop(nonce, None)

    def _on_event(self, ev) -> None:
        # called by the runtime with its lock held: quick work only
        if isinstance(ev, DataReceived):
            if ev.data.startswith(ECHO_REPLY):
                slot = self._echoes.get(ev.data[len(ECHO_REPLY):])
                if slot is not None:
                    slot[1] = time.monotonic()
                    slot[0].set()
            elif ev.via == "relay" and self.bridge is not None and self.bridge.has(ev.peer):
                self.bridge.deliver(ev.peer, ev.data)
        elif isinstance(ev, PathUp) and ev.kind == "direct" and self.paths.get(ev.peer, ("",))[0] == "relay":
            # a later punch worked (nat.RETRY_DIRECT_S): move WireGuard's endpoint off the bridge, on a
            # thread (the runtime's lock is held here, and the tunnel updates routes)
            threading.Thread(target=self._upgrade, args=(ev.peer, tuple(ev.addr)), daemon=True).start()
        elif isinstance(ev, PathDown) and ev.peer in self.paths:
            # the relay ended the session: the next path_to finds a path again
            self.paths.pop(ev.peer, None)
            if self.bridge is not None and self.bridge.has(ev.peer):
                self.bridge.drop(ev.peer)
