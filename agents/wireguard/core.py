"""`WireGuardDevice`: the sans-I/O WireGuard device (one interface, many peers).

Bytes and a caller-supplied monotonic clock go in; datagrams to send, inner IP packets and events come
out. There are no sockets or threads inside, and no clock reads on any path (the one exception: when
no ``wall_offset`` is given, the constructor reads the wall clock once to turn ``now`` into TAI64N
time). A runtime feeds `encapsulate` from its TUN reader, `decapsulate` from its UDP reader, calls
`tick` by `next_deadline`, and sends whatever `drain_outbox` returns after each call.

Thread safety: `encapsulate` and `decapsulate` may run concurrently (the runtime's TUN and UDP threads)
with `tick` and the other methods. State is guarded by one short per-device lock, held only for the
lookups and counter updates; the ChaCha20-Poly1305 work of the transport hot paths runs outside it.
Handshake messages are processed under the lock (they are rare, and rate-limited per peer). This
buys safety, not parallelism: pyca/cryptography keeps the GIL during AEAD calls (PyNaCl's X25519,
through cffi, releases it).
`drop_counters` increments made outside the lock are best-effort under heavy concurrency.

Protocol behaviour follows the WireGuard paper and wireguard-go: the initiator uses a session as soon
as the response arrives; the responder keeps its new session as "next" until the first data message
proves the initiator has it (key confirmation); the timers are those of `timers.PeerTimers`.

Admission of strangers (DESIGN.md "Sessions (exit mode)", step 2): with an ``admit_unknown`` callback
the responder answers an initiator whose static key is not configured, once the initiation is fully
authenticated and the owner's callback hands it allowed IPs; a stock WireGuard peer list cannot.
"""

import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from . import messages as _m
from .allowed_ips import AllowedIPs, parse_prefix
from .cookie import CookieChecker, CookieGenerator, SourceRateLimiter
from .errors import LocalProtocolError, RemoteProtocolError
from .noise import (
    KEY_SIZE,
    INITIAL_HASH,
    ConsumedInitiation,
    StaticKey,
    consume_initiation,
    consume_response,
    create_initiation,
    create_response,
    dh,
    hash_,
    generate_ephemeral,
    load_public,
)
from .replay import ReplayWindow
from .tai64n import tai64n
from .timers import (
    KEEPALIVE_TIMEOUT,
    MAX_STAGED_PACKETS,
    MAX_TIMER_HANDSHAKES,
    MIN_INITIATION_INTERVAL,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    ZERO_KEYS_AFTER,
    PeerTimers,
)

__all__ = [
    "DEFAULT_MTU",
    "Event",
    "HandshakeCompleted",
    "HandshakeFailed",
    "SessionExpired",
    "EndpointChanged",
    "PeerStatus",
    "AdmitUnknown",
    "WireGuardDevice",
]

#: wg-quick's default interface MTU (1500 - 80 bytes of IPv6/UDP/WireGuard overhead); bounds padding.
DEFAULT_MTU = 1420
#: A received session older than this makes the initiator rekey at once (paper 6.2: REJECT_AFTER_TIME
#: - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT, so the new session exists before the old one is rejected).
_REKEY_ON_RECEIVE_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
_NONCE_PREFIX = bytes(4)
_TRANSPORT_HEADER = _m.TRANSPORT_HEADER
#: How many removed peers' latest TAI64N timestamps are remembered, so that an initiation captured
#: before a peer was removed cannot, replayed, bring the peer back through ``admit_unknown`` (each
#: entry ~100 bytes; only `remove_peer` adds entries, so a remote sender cannot evict them).
_REMEMBERED_TIMESTAMPS = 4096

#: ``admit_unknown(remote_static_public_key, source_endpoint, now)`` -> allowed IPs to admit the
#: initiator with, or None to refuse it (see `WireGuardDevice`).
AdmitUnknown = Callable[[bytes, tuple[str, int], float], Iterable[str] | None]


@dataclass(frozen=True, slots=True)
class Event:
    """Base of the events `drain_events` returns.

    Attributes:
        public_key: the peer concerned.
        time: monotonic seconds at which it happened (the caller's clock).
    """

    public_key: bytes
    time: float


@dataclass(frozen=True, slots=True)
class HandshakeCompleted(Event):
    """A new session is in use with the peer (``initiator``: we started the handshake)."""

    initiator: bool


@dataclass(frozen=True, slots=True)
class HandshakeFailed(Event):
    """A handshake gave up: its queued packets were dropped.

    MAX_TIMER_HANDSHAKES + 2 initiations, spread over a little more than REKEY_ATTEMPT_TIME, went
    unanswered (or the peer has no endpoint to send them to).
    """


@dataclass(frozen=True, slots=True)
class SessionExpired(Event):
    """The peer's current session reached REJECT_AFTER_TIME with no replacement: sending stopped."""


@dataclass(frozen=True, slots=True)
class EndpointChanged(Event):
    """An authenticated packet arrived from a new address (roaming); replies now go there."""

    endpoint: tuple[str, int]


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One peer as `WireGuardDevice.peers` reports it (the fields ``wg show`` prints).

    Attributes:
        public_key: the peer's static X25519 public key.
        endpoint: its current (host, port), or None.
        allowed_ips: its prefixes as text.
        last_handshake: wall-clock Unix seconds of the latest completed handshake, or None.
        rx_bytes: bytes of authenticated datagrams (handshake and transport) received from it.
        tx_bytes: bytes of datagrams (handshake and transport) sent to it.
        keepalive: persistent keepalive interval in seconds, or None.
    """

    public_key: bytes
    endpoint: tuple[str, int] | None
    allowed_ips: list[str]
    last_handshake: float | None
    rx_bytes: int
    tx_bytes: int
    keepalive: int | None


class _Keypair:
    """One session's transport keys and counters."""

    __slots__ = ("peer", "send", "receive", "send_counter", "replay", "created", "initiator",
                 "local_index", "remote_index")

    def __init__(self, peer: "_Peer", send_key: bytes, receive_key: bytes, created: float, initiator: bool,
                 local_index: int, remote_index: int) -> None:
        self.peer = peer
        self.send = ChaCha20Poly1305(send_key)
        self.receive = ChaCha20Poly1305(receive_key)
        self.send_counter = 0
        self.replay = ReplayWindow()
        self.created = created
        self.initiator = initiator
        self.local_index = local_index
        self.remote_index = remote_index


class _Peer:
    """Everything the device knows about one peer."""

    __slots__ = ("public_key", "remote", "remote_hash", "static_static", "preshared_key", "endpoint",
                 "persistent_keepalive", "cookies", "timers", "handshake", "last_sent_handshake",
                 "latest_timestamp", "last_initiation_consumed", "current", "previous", "next", "staged",
                 "rx_bytes", "tx_bytes", "last_handshake", "sent_last_minute_handshake", "expiry_reported")

    def __init__(self, public_key: bytes, static_static: bytes, jitter: Callable[[], float]) -> None:
        self.public_key = public_key
        self.remote = load_public(public_key)
        self.remote_hash = hash_(INITIAL_HASH + public_key)
        self.static_static = static_static
        self.preshared_key: bytes | None = None
        self.endpoint: tuple[str, int] | None = None
        self.persistent_keepalive: int | None = None
        self.cookies = CookieGenerator(public_key)
        self.timers = PeerTimers(jitter)
        self.handshake = None
        self.last_sent_handshake: float | None = None
        self.latest_timestamp = bytes(12)
        self.last_initiation_consumed: float | None = None
        self.current: _Keypair | None = None
        self.previous: _Keypair | None = None
        self.next: _Keypair | None = None
        self.staged: deque[bytes] = deque(maxlen=MAX_STAGED_PACKETS)
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.last_handshake: float | None = None
        self.sent_last_minute_handshake = False
        self.expiry_reported = False


class WireGuardDevice:
    """A WireGuard interface's protocol state: our static key, peers, sessions and timers.

    Args:
        private_key: our 32-byte X25519 private key.
        rng: source of random bytes (ephemeral keys, indices, cookie secrets, timer jitter).
        wall_offset: seconds to add to the caller's monotonic ``now`` to get Unix time (for TAI64N
            timestamps and ``last_handshake``). Default: measured once here from ``time.time() -
            time.monotonic()``, which suits a runtime passing ``time.monotonic()``; tests pass their own.
        mtu: the tunnel MTU; transport payloads are zero-padded to a multiple of 16 bytes up to it.
        admit_unknown: see Attributes.

    Attributes:
        public_key: our 32-byte public key.
        under_load: when True, handshake messages without a valid mac2 get a cookie reply instead of
            being processed, and those with one are limited to 20 per second per source address
            (the runtime sets it when its handshake rate or backlog grows).
        drop_counters: reason -> count of inputs dropped silently.
        mtu: see Args.
        admit_unknown: None (the default: initiations from keys that are not peers are dropped, counted
            as ``unknown_peer``), or ``admit_unknown(remote_static_public_key, source, now)``, called
            for an initiation from a key that is not a peer, and only once it is fully authenticated:
            mac1 valid, the under-load mac2/cookie and rate rules applied as for peers, and the
            encrypted timestamp decrypted (which proves the sender holds the static private key; the
            encrypted static alone does not) and newer than any timestamp of a removed peer with
            that key. It returns allowed IPs (CIDR strings, possibly none) to admit the initiator
            with: the device then adds it as a peer (no pre-shared key, endpoint = ``source``) and
            answers as for any peer; or None to refuse: the initiation is dropped silently and
            counted as ``unknown_peer``. It is called *without* the device's lock held, on the
            thread that called `decapsulate`; it should be cheap and must bound admissions itself.
            It must not call back into the device (the call is not reentrant-safe: a peer it added
            or removed meanwhile would race the admission). Exceptions it raises propagate out of
            `decapsulate`, as do `LocalProtocolError` for bad prefixes it returns (nothing is added).
    """

    def __init__(self, private_key: bytes, *, rng: Callable[[int], bytes] = os.urandom,
                 wall_offset: float | None = None, mtu: int = DEFAULT_MTU,
                 admit_unknown: AdmitUnknown | None = None) -> None:
        self._static = StaticKey(private_key)
        self.public_key: bytes = self._static.public
        self._rng = rng
        self._timer_random = random.Random(rng(16))
        self._wall_offset = time.time() - time.monotonic() if wall_offset is None else wall_offset
        self._checker = CookieChecker(self.public_key, rng)
        self._limiter = SourceRateLimiter()
        self._peers: dict[bytes, _Peer] = {}
        # Our 32-bit indices -> the peer with a pending initiation we sent, or a session's keypair.
        self._index: dict[int, _Peer | _Keypair] = {}
        self._routes = AllowedIPs()
        self._outbox: list[tuple[bytes, tuple[str, int]]] = []
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self.under_load = False
        self.drop_counters: dict[str, int] = {}
        self.mtu = mtu
        self.admit_unknown: AdmitUnknown | None = admit_unknown
        # Removed peers' public key -> latest TAI64N timestamp (oldest removal first; bounded).
        self._removed_timestamps: dict[bytes, bytes] = {}

    # ------------------------------------------------------------------ configuration

    def add_peer(self, public_key: bytes, *, preshared_key: bytes | None = None, allowed_ips: Iterable[str] = (),
                 endpoint: tuple[str, int] | None = None, persistent_keepalive: int | None = None) -> None:
        """Add a peer, or reconfigure an existing one (its sessions are kept).

        Args:
            public_key: the peer's 32-byte static public key.
            preshared_key: optional 32-byte pre-shared key (Noise psk2).
            allowed_ips: prefixes routed to the peer and accepted from it; they replace the
                peer's previous ones, and move away from any other peer holding them.
            endpoint: (host, port) to send to until the peer roams; None to wait to hear from it
                (or, for a known peer, to keep its current endpoint).
            persistent_keepalive: seconds between keepalives (1..65535), or None/0 for none.

        Raises:
            LocalProtocolError: bad key lengths, our own key, bad prefixes or interval.
        """
        public_key = bytes(public_key)
        if public_key == self.public_key:
            raise LocalProtocolError("a device cannot be its own peer")
        if preshared_key is not None and len(preshared_key) != KEY_SIZE:
            raise LocalProtocolError(f"preshared key must be {KEY_SIZE} bytes, got {len(preshared_key)}")
        if persistent_keepalive is not None and not 0 <= persistent_keepalive <= 65535:
            raise LocalProtocolError(f"persistent keepalive out of range: {persistent_keepalive}")
        prefixes = list(allowed_ips)
        with self._lock:
            peer = self._peers.get(public_key)
            if peer is None:
                peer = _Peer(public_key, dh(self._static.private, load_public(public_key)), self._jitter)
                self._peers[public_key] = peer
            peer.preshared_key = bytes(preshared_key) if preshared_key else None
            if endpoint is not None:
                peer.endpoint = (str(endpoint[0]), int(endpoint[1]))
            was_on, peer.persistent_keepalive = bool(peer.persistent_keepalive), persistent_keepalive or None
            if not peer.persistent_keepalive:
                peer.timers.persistent_keepalive = None
            elif not was_on:
                # wireguard-go (uapi.go) sends a keepalive at once when the interval goes from off to on.
                peer.timers.persistent_keepalive = float("-inf")
            self._routes.remove_value(peer)
            try:
                self._routes.insert_many(prefixes, peer)
            except LocalProtocolError:
                self._routes.remove_value(peer)
                raise

    def remove_peer(self, public_key: bytes) -> None:
        """Forget a peer, its routes and all its sessions.

        Raises:
            LocalProtocolError: unknown peer.
        """
        with self._lock:
            peer = self._peers.pop(bytes(public_key), None)
            if peer is None:
                raise LocalProtocolError("unknown peer")
            self._routes.remove_value(peer)
            self._zero_keys_locked(peer)
            peer.timers.clear()
            peer.staged.clear()
            remembered = self._removed_timestamps
            remembered.pop(peer.public_key, None)
            remembered[peer.public_key] = peer.latest_timestamp
            if len(remembered) > _REMEMBERED_TIMESTAMPS:
                del remembered[next(iter(remembered))]

    def set_allowed_ips(self, public_key: bytes, allowed_ips: Iterable[str]) -> None:
        """Replace one peer's allowed IPs, keeping everything else (sessions, endpoint, key, keepalive).

        Raises:
            LocalProtocolError: unknown peer, or a bad prefix (the peer's routes are then unchanged).
        """
        prefixes = list(allowed_ips)
        for cidr in prefixes:  # all of them checked before anything changes
            parse_prefix(cidr)
        with self._lock:
            peer = self._peers.get(bytes(public_key))
            if peer is None:
                raise LocalProtocolError("unknown peer")
            self._routes.remove_value(peer)
            self._routes.insert_many(prefixes, peer)

    def peer_counters(self, public_key: bytes) -> tuple[int, int] | None:
        """(rx_bytes, tx_bytes) of one peer, as `peers` counts them; None if it is not a peer.

        One dictionary lookup, no listing: cheap enough to poll per peer for metering.
        """
        peer = self._peers.get(bytes(public_key))
        if peer is None:
            return None
        return peer.rx_bytes, peer.tx_bytes

    def initiate_handshake(self, public_key: bytes, now: float) -> None:
        """Start a handshake with a peer now (subject to the one-per-REKEY_TIMEOUT limit); see the outbox.

        Raises:
            LocalProtocolError: unknown peer.
        """
        with self._lock:
            peer = self._peers.get(bytes(public_key))
            if peer is None:
                raise LocalProtocolError("unknown peer")
            self._send_initiation_locked(peer, now, False)

    # ------------------------------------------------------------------ hot paths

    def encapsulate(self, ip_packet: bytes, now: float) -> tuple[bytes, tuple[str, int]] | None:
        """Encrypt an outgoing IP packet for the peer its destination routes to.

        Args:
            ip_packet: an IPv4 or IPv6 packet read from the TUN device.
            now: monotonic seconds.

        Returns:
            (datagram, endpoint) to send; or None when there is no route (counted in
            ``drop_counters``), or no usable session or no endpoint yet: then the packet is queued
            (at most MAX_STAGED_PACKETS per peer) and a handshake initiation is put in the outbox if
            the peer's endpoint is known. As in wireguard-go, the queue leaves once a session is
            confirmed, whoever initiated it, and is dropped when the handshake gives up.
        """
        size = len(ip_packet)
        if size >= 20 and ip_packet[0] >> 4 == 4:
            peer = self._routes.lookup_v4(int.from_bytes(ip_packet[16:20], "big"))
        elif size >= 40 and ip_packet[0] >> 4 == 6:
            peer = self._routes.lookup_v6(int.from_bytes(ip_packet[24:40], "big"))
        else:
            self._count("bad_ip_header")
            return None
        if peer is None:
            self._count("no_route")
            return None
        with self._lock:
            endpoint = peer.endpoint
            keypair = peer.current
            if keypair is None or endpoint is None or keypair.send_counter >= REJECT_AFTER_MESSAGES \
                    or now - keypair.created >= REJECT_AFTER_TIME:
                if self._peers.get(peer.public_key) is peer:  # not removed meanwhile
                    peer.staged.append(bytes(ip_packet))
                    self._send_initiation_locked(peer, now, False)
                return None
            counter = keypair.send_counter
            keypair.send_counter = counter + 1
            padded = (size + 15) & ~15
            if padded > self.mtu:
                padded = size if size > self.mtu else self.mtu
            peer.tx_bytes += padded + 32
            timers = peer.timers
            if timers.new_handshake is None:  # timers.data_sent, inlined
                timers.new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()
            timers.send_keepalive = None
            if peer.persistent_keepalive:
                timers.persistent_keepalive = now + peer.persistent_keepalive
            if counter + 1 >= REKEY_AFTER_MESSAGES or (keypair.initiator and now - keypair.created >= REKEY_AFTER_TIME):
                self._send_initiation_locked(peer, now, False)
        if padded != size:
            ip_packet = bytes(ip_packet) + bytes(padded - size)
        header = _TRANSPORT_HEADER.pack(4, keypair.remote_index, counter)
        return header + keypair.send.encrypt(_NONCE_PREFIX + header[8:16], ip_packet, None), endpoint

    def decapsulate(self, datagram: bytes, source: tuple[str, int], now: float) -> bytes | None:
        """Process one received datagram.

        Args:
            datagram: a UDP payload.
            source: the (host, port) it came from.
            now: monotonic seconds.

        Returns:
            The inner IP packet of a valid transport message; None for keepalives, handshake and
            cookie messages (whose replies go to the outbox) and anything dropped (counted in
            ``drop_counters``, never answered).
        """
        size = len(datagram)
        if size < _m.TRANSPORT_MIN_SIZE or datagram[0] != 4 or datagram[1] or datagram[2] or datagram[3] \
                or size > _m.TRANSPORT_MAX_SIZE:
            self._handle_control(datagram, source, now)
            return None
        _, receiver, counter = _TRANSPORT_HEADER.unpack_from(datagram)
        keypair = self._index.get(receiver)
        if keypair is None or keypair.__class__ is not _Keypair:
            self._count("unknown_receiver")
            return None
        if counter >= REJECT_AFTER_MESSAGES or now - keypair.created >= REJECT_AFTER_TIME:
            self._count("expired_session")
            return None
        try:
            plain = keypair.receive.decrypt(_NONCE_PREFIX + datagram[8:16], datagram[16:], None)
        except InvalidTag:
            self._count("decrypt_failed")
            return None
        peer = keypair.peer
        inner = None
        reason = None
        if plain:
            inner, reason = self._check_inner(plain, peer)
        with self._lock:
            if self._index.get(receiver) is not keypair:
                reason = "expired_session"
            elif not keypair.replay.check_and_set(counter, REJECT_AFTER_MESSAGES):
                reason = "replay"
            else:
                peer.rx_bytes += size
                if peer.endpoint != source:
                    self._roam_locked(peer, source, now)
                timers = peer.timers
                timers.new_handshake = None
                if peer.persistent_keepalive:
                    timers.persistent_keepalive = now + peer.persistent_keepalive
                if plain and inner is not None:
                    if timers.send_keepalive is None:
                        timers.send_keepalive = now + KEEPALIVE_TIMEOUT
                    else:
                        timers.need_another_keepalive = True
                if keypair is peer.next:
                    self._confirm_locked(peer, keypair, now)
                elif keypair.initiator and keypair is peer.current and not peer.sent_last_minute_handshake \
                        and now - keypair.created >= _REKEY_ON_RECEIVE_AGE:
                    peer.sent_last_minute_handshake = True
                    self._send_initiation_locked(peer, now, False)
                if reason is None:
                    return inner
        if reason is not None:
            self._count(reason)
        return None

    # ------------------------------------------------------------------ timers, queues, status

    def tick(self, now: float) -> None:
        """Run every timer whose deadline has passed (safe to call at any time, any number of times)."""
        with self._lock:
            for peer in list(self._peers.values()):
                timers = peer.timers
                deadline = timers.retransmit_handshake
                if deadline is not None and now >= deadline:
                    timers.retransmit_handshake = None
                    if timers.handshake_attempts > MAX_TIMER_HANDSHAKES:
                        # wireguard-go expiredRetransmitHandshake: drop the queue, stop retrying; the
                        # half-done handshake stays until zero_key_material (a late answer may land).
                        self._events.append(HandshakeFailed(peer.public_key, now))
                        peer.staged.clear()
                        timers.send_keepalive = None
                        if timers.zero_key_material is None:
                            timers.zero_key_material = now + ZERO_KEYS_AFTER
                    else:
                        timers.handshake_attempts += 1
                        self._send_initiation_locked(peer, now, True)
                deadline = timers.send_keepalive
                if deadline is not None and now >= deadline:
                    timers.send_keepalive = None
                    self._send_keepalive_locked(peer, now)
                    if timers.need_another_keepalive:
                        timers.need_another_keepalive = False
                        timers.send_keepalive = now + KEEPALIVE_TIMEOUT
                deadline = timers.new_handshake
                if deadline is not None and now >= deadline:
                    timers.new_handshake = None
                    self._send_initiation_locked(peer, now, False)
                deadline = timers.zero_key_material
                if deadline is not None and now >= deadline:
                    timers.zero_key_material = None
                    self._zero_keys_locked(peer)
                deadline = timers.persistent_keepalive
                if deadline is not None and now >= deadline:
                    timers.persistent_keepalive = None
                    if peer.persistent_keepalive:
                        self._send_keepalive_locked(peer, now)
                current = peer.current
                if current is not None and not peer.expiry_reported and now - current.created >= REJECT_AFTER_TIME:
                    peer.expiry_reported = True
                    self._events.append(SessionExpired(peer.public_key, now))

    def next_deadline(self) -> float | None:
        """The earliest time `tick` has work to do, or None if no timer is armed.

        The hot paths only arm timers at least one second ahead of their ``now`` (the shortest is a
        1-second persistent keepalive), so a runtime that re-reads this at least once a second after
        its own calls never misses a deadline.
        """
        best = None
        with self._lock:
            for peer in self._peers.values():
                deadline = peer.timers.next_deadline()
                current = peer.current
                if current is not None and not peer.expiry_reported:
                    expiry = current.created + REJECT_AFTER_TIME
                    if deadline is None or expiry < deadline:
                        deadline = expiry
                if deadline is not None and (best is None or deadline < best):
                    best = deadline
        return best

    def drain_outbox(self) -> list[tuple[bytes, tuple[str, int]]]:
        """Datagrams the core wants sent, as (bytes, (host, port)), oldest first; empties the outbox.

        Cheap when there is nothing to send (no lock taken), so runtimes may call it after every packet.
        """
        if not self._outbox:
            return []
        with self._lock:
            out, self._outbox = self._outbox, []
        return out

    def drain_events(self) -> list[Event]:
        """Events since the last call, oldest first."""
        if not self._events:
            return []
        with self._lock:
            out, self._events = self._events, []
        return out

    def peers(self) -> list[PeerStatus]:
        """A snapshot of every peer's status, in the order they were added."""
        with self._lock:
            prefixes = self._routes.prefixes_by_value()
            return [
                PeerStatus(
                    public_key=peer.public_key,
                    endpoint=peer.endpoint,
                    allowed_ips=prefixes.get(id(peer), []),
                    last_handshake=peer.last_handshake,
                    rx_bytes=peer.rx_bytes,
                    tx_bytes=peer.tx_bytes,
                    keepalive=peer.persistent_keepalive,
                )
                for peer in self._peers.values()
            ]

    # ------------------------------------------------------------------ internals

    def _count(self, reason: str) -> None:
        counters = self.drop_counters
        counters[reason] = counters.get(reason, 0) + 1

    def _jitter(self) -> float:
        """Timer jitter in [0, REKEY_TIMEOUT_JITTER_MAX): from a PRNG seeded by ``rng``, not ``rng`` itself.

        Jitter needs no secrecy (wireguard-go uses fastrandn) and the new-handshake timer re-arms on
        the send path after every received packet: os.urandom there cost ~1.4 us a call (a getrandom
        system call), random.Random ~0.1 us.
        """
        return self._timer_random.random() * REKEY_TIMEOUT_JITTER_MAX

    def _new_index_locked(self) -> int:
        while True:
            index = int.from_bytes(self._rng(4), "little")
            if index not in self._index:
                return index

    def _check_inner(self, plain: bytes, peer: _Peer) -> tuple[bytes | None, str | None]:
        """Validate a decrypted payload's IP header and source address; strip the padding."""
        size = len(plain)
        version = plain[0] >> 4
        if version == 4 and size >= 20:
            length = (plain[2] << 8) | plain[3]
            if length < 20 or length > size:
                return None, "bad_ip_header"
            routed = self._routes.lookup_v4(int.from_bytes(plain[12:16], "big"))
        elif version == 6 and size >= 40:
            length = 40 + ((plain[4] << 8) | plain[5])
            if length > size:
                return None, "bad_ip_header"
            routed = self._routes.lookup_v6(int.from_bytes(plain[8:24], "big"))
        else:
            return None, "bad_ip_header"
        if routed is not peer:
            return None, "allowed_ips"
        return (plain if length == size else plain[:length]), None

    def _send_locked(self, peer: _Peer, datagram: bytes) -> None:
        self._outbox.append((datagram, peer.endpoint))
        peer.tx_bytes += len(datagram)

    def _roam_locked(self, peer: _Peer, source: tuple[str, int], now: float) -> None:
        endpoint = (str(source[0]), int(source[1]))
        if peer.endpoint != endpoint:
            peer.endpoint = endpoint
            self._events.append(EndpointChanged(peer.public_key, now, endpoint))

    def _send_initiation_locked(self, peer: _Peer, now: float, is_retry: bool) -> None:
        """wireguard-go SendHandshakeInitiation: at most one per REKEY_TIMEOUT, then retransmitted.

        With no endpoint nothing is sent but the retransmission timer still runs (wireguard-go's
        send fails the same way), so packets queued for an unreachable peer are dropped when the
        attempts run out instead of lingering; nothing went out, so the rate limit is not spent and
        the first packet after an endpoint is configured initiates at once.
        """
        timers = peer.timers
        if not is_retry:
            timers.handshake_attempts = 0
        if peer.endpoint is None:
            if is_retry or timers.retransmit_handshake is None:
                timers.handshake_initiated(now)
            return
        if peer.last_sent_handshake is not None and now - peer.last_sent_handshake < REKEY_TIMEOUT:
            return
        peer.last_sent_handshake = now
        if peer.handshake is not None and self._index.get(peer.handshake.sender_index) is peer:
            del self._index[peer.handshake.sender_index]
        index = self._new_index_locked()
        ephemeral = generate_ephemeral(self._rng)
        message, state = create_initiation(self._static, peer.remote, peer.remote_hash, peer.static_static, index,
                                           tai64n(now + self._wall_offset), ephemeral)
        peer.handshake = state
        self._index[index] = peer
        self._send_locked(peer, peer.cookies.add_macs(message, now))
        timers.traversal(now, peer.persistent_keepalive)
        timers.any_authenticated_sent()
        timers.handshake_initiated(now)

    def _seal_locked(self, peer: _Peer, keypair: _Keypair, payload: bytes, now: float) -> None:
        counter = keypair.send_counter
        keypair.send_counter = counter + 1
        size = len(payload)
        padded = min((size + 15) & ~15, max(self.mtu, size))
        header = _TRANSPORT_HEADER.pack(4, keypair.remote_index, counter)
        payload = bytes(payload) + bytes(padded - size)
        self._send_locked(peer, header + keypair.send.encrypt(_NONCE_PREFIX + header[8:16], payload, None))
        timers = peer.timers
        timers.traversal(now, peer.persistent_keepalive)
        timers.any_authenticated_sent()
        if size:
            timers.data_sent(now)

    def _send_keepalive_locked(self, peer: _Peer, now: float) -> None:
        """wireguard-go SendKeepalive: an empty packet, unless queued packets can carry the news."""
        if peer.endpoint is None:
            return
        if not peer.staged:
            peer.staged.append(b"")
        self._send_staged_locked(peer, now)

    def _send_staged_locked(self, peer: _Peer, now: float) -> None:
        keypair = peer.current
        if peer.endpoint is None:
            return
        if keypair is None or keypair.send_counter + len(peer.staged) >= REJECT_AFTER_MESSAGES \
                or now - keypair.created >= REJECT_AFTER_TIME:
            self._send_initiation_locked(peer, now, False)
            return
        while peer.staged:
            self._seal_locked(peer, keypair, peer.staged.popleft(), now)
        if keypair.send_counter >= REKEY_AFTER_MESSAGES or (keypair.initiator and now - keypair.created >= REKEY_AFTER_TIME):
            self._send_initiation_locked(peer, now, False)

    def _free_locked(self, keypair: _Keypair | None) -> None:
        if keypair is not None and self._index.get(keypair.local_index) is keypair:
            del self._index[keypair.local_index]

    def _zero_keys_locked(self, peer: _Peer) -> None:
        for keypair in (peer.previous, peer.current, peer.next):
            self._free_locked(keypair)
        peer.previous = peer.current = peer.next = None
        if peer.handshake is not None and self._index.get(peer.handshake.sender_index) is peer:
            del self._index[peer.handshake.sender_index]
        peer.handshake = None

    def _confirm_locked(self, peer: _Peer, keypair: _Keypair, now: float) -> None:
        """The initiator used the session we answered with: it becomes current (key confirmation)."""
        self._free_locked(peer.previous)
        peer.previous = peer.current
        peer.current = keypair
        peer.next = None
        self._handshake_complete_locked(peer, now, initiator=False)
        if peer.staged:
            self._send_staged_locked(peer, now)

    def _handshake_complete_locked(self, peer: _Peer, now: float, initiator: bool) -> None:
        peer.timers.handshake_complete()
        peer.last_handshake = now + self._wall_offset
        peer.sent_last_minute_handshake = False
        peer.expiry_reported = False
        self._events.append(HandshakeCompleted(peer.public_key, now, initiator))

    def _handle_control(self, datagram: bytes, source: tuple[str, int], now: float) -> None:
        """Handshake, cookie and malformed messages: never raises, never answers the unauthenticated."""
        try:
            kind = _m.message_type(datagram)
            if kind == _m.MESSAGE_COOKIE_REPLY:
                self._handle_cookie_reply(_m.parse_cookie_reply(datagram), now)
                return
            if kind == _m.MESSAGE_TRANSPORT:  # pragma: no cover - transport never reaches here
                raise RemoteProtocolError("truncated")
            if not self._checker.mac1_valid(datagram):
                raise RemoteProtocolError("bad_mac1")
            if self.under_load:
                if not self._checker.mac2_valid(datagram, source, now):
                    sender = int.from_bytes(datagram[4:8], "little")
                    reply = self._checker.create_reply(datagram, sender, source, now)
                    with self._lock:
                        self._outbox.append((reply, (str(source[0]), int(source[1]))))
                    return
                with self._lock:
                    allowed = self._limiter.allow(str(source[0]), now)
                if not allowed:
                    raise RemoteProtocolError("rate_limited")
            if kind == _m.MESSAGE_INITIATION:
                self._handle_initiation(_m.parse_initiation(datagram), source, now)
            else:
                self._handle_response(_m.parse_response(datagram), source, now)
        except RemoteProtocolError as exc:
            self._count(exc.reason)

    def _handle_initiation(self, message: _m.Initiation, source: tuple[str, int], now: float) -> None:
        admit = self.admit_unknown
        stranger_static_static: list[bytes] = []
        with self._lock:
            peers = self._peers

            def static_static(key: bytes) -> bytes | None:
                peer = peers.get(key)
                if peer is not None:
                    return peer.static_static
                if admit is None or key == self.public_key:
                    return None
                # A stranger: DH with its claimed key, so the timestamp AEAD proves it holds the
                # private key before anyone is asked to admit it.
                shared = dh(self._static.private, key)
                stranger_static_static.append(shared)
                return shared

            consumed = consume_initiation(self._static, message, static_static)
            peer = peers.get(consumed.remote_static)
            if peer is not None:
                self._answer_initiation_locked(peer, consumed, source, now)
                return
            if consumed.timestamp <= self._removed_timestamps.get(consumed.remote_static, bytes(12)):
                raise RemoteProtocolError("replayed_initiation")
        # Outside the lock: the owner's callback may take its own locks (see the class docstring).
        allowed = admit(consumed.remote_static, (str(source[0]), int(source[1])), now)
        if allowed is None:
            raise RemoteProtocolError("unknown_peer")
        prefixes = list(allowed)
        for cidr in prefixes:  # our caller's error: raised before anything changes
            parse_prefix(cidr)
        with self._lock:
            peer = peers.get(consumed.remote_static)
            if peer is None:  # else configured meanwhile by add_peer: its configuration stands
                peer = _Peer(consumed.remote_static, stranger_static_static[0], self._jitter)
                peers[peer.public_key] = peer
                self._routes.insert_many(prefixes, peer)
                self._removed_timestamps.pop(peer.public_key, None)
            self._answer_initiation_locked(peer, consumed, source, now)

    def _answer_initiation_locked(self, peer: _Peer, consumed: ConsumedInitiation, source: tuple[str, int], now: float) -> None:
        """Replay and flood checks on an authenticated initiation from ``peer``, then the response."""
        if consumed.timestamp <= peer.latest_timestamp:
            raise RemoteProtocolError("replayed_initiation")
        if peer.last_initiation_consumed is not None and now - peer.last_initiation_consumed < MIN_INITIATION_INTERVAL:
            raise RemoteProtocolError("initiation_flood")
        peer.latest_timestamp = consumed.timestamp
        peer.last_initiation_consumed = now
        peer.rx_bytes += _m.INITIATION_SIZE
        self._roam_locked(peer, source, now)
        timers = peer.timers
        timers.any_authenticated_received()
        timers.traversal(now, peer.persistent_keepalive)
        index = self._new_index_locked()
        ephemeral = generate_ephemeral(self._rng)
        response, send_key, receive_key = create_response(consumed, peer.remote, peer.preshared_key, index,
                                                          ephemeral)
        keypair = _Keypair(peer, send_key, receive_key, now, False, index, consumed.sender_index)
        self._free_locked(peer.next)
        self._free_locked(peer.previous)
        peer.next = keypair
        peer.previous = None
        self._index[index] = keypair
        self._send_locked(peer, peer.cookies.add_macs(response, now))
        timers.session_derived(now)
        timers.traversal(now, peer.persistent_keepalive)
        timers.any_authenticated_sent()

    def _handle_response(self, message: _m.Response, source: tuple[str, int], now: float) -> None:
        with self._lock:
            peer = self._index.get(message.receiver)
            if peer is None or peer.__class__ is not _Peer or peer.handshake is None \
                    or peer.handshake.sender_index != message.receiver:
                raise RemoteProtocolError("unknown_receiver")
            send_key, receive_key = consume_response(peer.handshake, self._static, message, peer.preshared_key)
            keypair = _Keypair(peer, send_key, receive_key, now, True, message.receiver, message.sender)
            peer.handshake = None
            self._index[message.receiver] = keypair
            if peer.next is not None:
                self._free_locked(peer.previous)
                self._free_locked(peer.current)
                peer.previous = peer.next
                peer.next = None
            else:
                self._free_locked(peer.previous)
                peer.previous = peer.current
            peer.current = keypair
            peer.rx_bytes += _m.RESPONSE_SIZE
            self._roam_locked(peer, source, now)
            timers = peer.timers
            timers.any_authenticated_received()
            timers.traversal(now, peer.persistent_keepalive)
            timers.session_derived(now)
            self._handshake_complete_locked(peer, now, initiator=True)
            self._send_keepalive_locked(peer, now)

    def _handle_cookie_reply(self, message: _m.CookieReply, now: float) -> None:
        with self._lock:
            entry = self._index.get(message.receiver)
            if entry is None:
                raise RemoteProtocolError("unknown_receiver")
            peer = entry if entry.__class__ is _Peer else entry.peer
            peer.cookies.consume_reply(message, now)
