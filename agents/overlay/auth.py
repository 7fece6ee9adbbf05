"""Overlay sender authentication: a challenge-response once per contact, then a MAC on every datagram.

Without it, an overlay message's ``sender_id`` is only a claim, so anyone can answer a lookup as any
ring position, or fill routing tables with ids of their choosing (an eclipse). A Warren host already
holds the key its id is made of (``node_id = keccak256(wg public key)``, X25519), so the id can be
proven with that key, at the cost of one round trip per new contact and a 16-byte tag per datagram:

1. ``HELLO``  I -> R: ``pub_I | n_I``. R checks ``keccak256(pub_I) == sender_id``, computes
   ``dh = X25519(r, pub_I)`` and keys from ``dh, id_I, id_R, n_I, n_R``.
2. ``REPLY``  R -> I: ``pub_R | n_R | n_I | tag``, the tag under the R->I key: I checks the id, derives
   the same keys (only the holders of ``i`` or ``r`` can) and the tag (R holds ``r`` and saw ``n_I``).
3. From then on every overlay datagram between them carries ``BLAKE2s-128(key_dir, datagram)``. R's
   first verified datagram from I proves I holds ``i`` and received ``n_R`` at that address: the
   challenge-response that binds the id to the address.

A session belongs to one (address, peer id) pair: a datagram is accepted only with a valid tag from
the address its session was made at and with that session's peer id in its header, so a recorded
datagram replayed from elsewhere is dropped, and a NAT that changes a host's mapping makes it
handshake again (the receiver answers an unknown or stale sender with ``RESET``, unauthenticated: at
worst an extra round trip). RELAYED frames keep their origin's id in the header (the relay forwards
them); for those the tag proves the relay, and the relay session id proves the origin.

Why static-static X25519 and not signatures: the operator's secp256k1 key signs records, but
signing and recovering on every contact costs ~0.5 ms each; one X25519 (~50 us) per contact pair and
a keyed BLAKE2s per datagram (~1 us) are cheap enough for the relay data path. No forward secrecy is
needed: nothing secret is sent, the MAC only authenticates.

This is a sans-I/O part of :class:`agents.overlay.core.OverlayNode` (``node.auth``): ``open`` before
decoding, ``seal`` on the outbox; it queues datagrams for a contact until its handshake completes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from . import wire
from .errors import RemoteProtocolError
from .ids import node_id_from_wg_key

__all__ = ["AUTH", "TAG_SIZE", "OverlayAuth"]

AUTH = wire.AUTH
TAG_SIZE = wire.AUTH_TAG
HELLO, REPLY, RESET = 1, 2, 3
_HEAD = struct.Struct(">B32sIB")  # the overlay header (type, sender id, txid) and a sub-type
_LABEL = b"warren overlay auth v1"
#: A HELLO without answer is sent again after this long while datagrams wait (seconds); a contact's
#: queue is dropped after PENDING_TIMEOUT_S (the core's request timeouts then treat it as dead).
RESEND_S, PENDING_TIMEOUT_S = 0.25, 3.0
#: Datagrams queued per contact during its handshake (a lookup sends one or two).
MAX_QUEUED = 32
#: Sessions kept (least recently used forgotten first): a node talks to ~log2(N) fingers, its
#: successors and the hosts that look things up through it; 4,096 costs ~1 MiB.
MAX_SESSIONS = 4096
#: At most one RESET per address per this long (seconds): they cost the receiver a handshake.
RESET_EVERY_S = 1.0


def _mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, key=key, digest_size=TAG_SIZE).digest()


@dataclass
class _Session:
    peer_id: int
    send: bytes
    recv: bytes
    used: float = 0.0


@dataclass
class _Pending:
    nonce: bytes
    started: float | None  # None: queued from the outbox, which carries no time; set by open/tick
    sent: float | None
    queue: list = field(default_factory=list)


class OverlayAuth:
    """Sender authentication of one overlay node (see the module docstring).

    Args:
        private_key: the host's 32-byte X25519 private key (its WireGuard key).
        rng: ``rng(n) -> n random bytes``.
    """

    def __init__(self, private_key: bytes, rng=os.urandom) -> None:
        self._private = X25519PrivateKey.from_private_bytes(bytes(private_key))
        self.public = self._private.public_key().public_bytes_raw()
        self.id = node_id_from_wg_key(self.public)
        self._id_bytes = self.id.to_bytes(32, "big")
        self._rng = rng
        self._now = 0.0
        self._init: OrderedDict = OrderedDict()  # addr -> _Session we initiated (confirmed by REPLY)
        self._resp: OrderedDict = OrderedDict()  # addr -> _Session the peer initiated
        self._pending: dict[tuple, _Pending] = {}
        self._reset_at: dict[tuple, float] = {}
        self._out: list = []
        self.stats = {"handshakes": 0, "rejected": 0, "resets": 0}

    # ------------------------------------------------------------------ keys

    def _keys(self, peer_pub: bytes, id_i: bytes, id_r: bytes, n_i: bytes, n_r: bytes) -> tuple[bytes, bytes]:
        dh = self._private.exchange(X25519PublicKey.from_public_bytes(peer_pub))
        base = hashlib.blake2s(_LABEL + id_i + id_r + n_i + n_r, key=dh).digest()
        return hashlib.blake2s(b"\x01", key=base).digest(), hashlib.blake2s(b"\x02", key=base).digest()

    def _msg(self, sub: int, body: bytes) -> bytes:
        return _HEAD.pack(AUTH, self._id_bytes, 0, sub) + body

    @staticmethod
    def _keep(table: OrderedDict, addr: tuple, session: _Session) -> None:
        table[addr] = session
        table.move_to_end(addr)
        while len(table) > MAX_SESSIONS:
            table.popitem(last=False)

    # ------------------------------------------------------------------ outgoing

    def seal(self, items: list) -> list:
        """The core's outbox, each datagram tagged (or queued behind a handshake), plus handshake
        messages of our own."""
        out = []
        for item in items:
            addr, data = item[0], item[1]
            s = self._init.get(addr) or self._resp.get(addr)
            if s is not None:
                s.used = self._now
                out.append((addr, data + _mac(s.send, data), *item[2:]))
            elif len(item) > 2:
                out.append(item)  # a low-TTL punch: it dies before any peer, nothing to prove
            else:
                self._queue(addr, data)
        out.extend(self._out)
        self._out = []
        return out

    def _queue(self, addr: tuple, data: bytes) -> None:
        # The outbox carries no time (a lookup may be started long after the last datagram or tick
        # we saw), so a new contact's times are taken at the next open/tick (_stamp).
        p = self._pending.get(addr)
        if p is None:
            p = self._pending[addr] = _Pending(self._rng(16), None, None)
            self._out.append((addr, self._msg(HELLO, self.public + p.nonce)))
        elif p.sent is not None and self._now - p.sent >= RESEND_S:
            p.sent = self._now
            self._out.append((addr, self._msg(HELLO, self.public + p.nonce)))
        if len(p.queue) < MAX_QUEUED:
            p.queue.append(data)

    def _stamp(self, now: float) -> None:
        self._now = now
        for p in self._pending.values():
            if p.started is None:
                p.started = p.sent = now

    # ------------------------------------------------------------------ incoming

    def open(self, data: bytes, addr: tuple, now: float) -> bytes:
        """The datagram without its tag if its sender is proven; raises RemoteProtocolError to drop it
        (handshake messages are consumed here, their answers queued for :meth:`seal`)."""
        self._stamp(now)
        if len(data) >= _HEAD.size and data[0] == AUTH:
            self._handshake(data, addr, now)
            raise RemoteProtocolError("overlay: authentication handshake")
        if len(data) < wire.HEADER_SIZE + TAG_SIZE:
            raise RemoteProtocolError("overlay: datagram without a sender tag")
        body, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
        sender = int.from_bytes(body[1:33], "big")
        relayed = body[0] == wire.RELAYED
        for table in (self._resp, self._init):
            s = table.get(addr)
            if s is not None and (relayed or s.peer_id == sender) and hmac.compare_digest(_mac(s.recv, body), tag):
                s.used = now
                return body
        self.stats["rejected"] += 1
        if now - self._reset_at.get(addr, -RESET_EVERY_S) >= RESET_EVERY_S:
            self._reset_at[addr] = now
            if len(self._reset_at) > MAX_SESSIONS:
                self._reset_at.clear()
            self._out.append((addr, self._msg(RESET, b"")))
        raise RemoteProtocolError("overlay: sender not proven")

    def _handshake(self, data: bytes, addr: tuple, now: float) -> None:
        _, sender_raw, _, sub = _HEAD.unpack_from(data)
        body = data[_HEAD.size:]
        if sub == HELLO and len(body) == 48:
            pub, n_i = body[:32], body[32:]
            if node_id_from_wg_key(pub) != int.from_bytes(sender_raw, "big") or pub == self.public:
                self.stats["rejected"] += 1
                return
            # a HELLO means the peer holds no session with us (it sends one only then): one we
            # initiated is dead on its side (a restart), so do not seal with it any more
            n_r = self._rng(16)
            try:
                k_i2r, k_r2i = self._keys(pub, sender_raw, self._id_bytes, n_i, n_r)
            except ValueError:  # a low-order point: the shared secret would be zero
                self.stats["rejected"] += 1
                return
            self._init.pop(addr, None)
            self._keep(self._resp, addr, _Session(int.from_bytes(sender_raw, "big"), k_r2i, k_i2r, now))
            head = self._msg(REPLY, self.public + n_r + n_i)
            self._out.append((addr, head + _mac(k_r2i, head)))
        elif sub == REPLY and len(body) == 80:
            p = self._pending.get(addr)
            pub, n_r, n_i, tag = body[:32], body[32:48], body[48:64], body[64:]
            if p is None or n_i != p.nonce or node_id_from_wg_key(pub) != int.from_bytes(sender_raw, "big"):
                self.stats["rejected"] += 1
                return
            try:
                k_i2r, k_r2i = self._keys(pub, self._id_bytes, sender_raw, n_i, n_r)
            except ValueError:  # a low-order point
                self.stats["rejected"] += 1
                return
            if not hmac.compare_digest(_mac(k_r2i, data[:-TAG_SIZE]), tag):
                self.stats["rejected"] += 1
                return
            del self._pending[addr]
            s = _Session(int.from_bytes(sender_raw, "big"), k_i2r, k_r2i, now)
            self._keep(self._init, addr, s)
            self.stats["handshakes"] += 1
            for queued in p.queue:
                self._out.append((addr, queued + _mac(s.send, queued)))
        elif sub == RESET:
            if addr in self._init or addr in self._resp:
                self.stats["resets"] += 1
                self._init.pop(addr, None)
                self._resp.pop(addr, None)

    # ------------------------------------------------------------------ time (a core component)

    def next_deadline(self) -> float:
        # a contact not stamped yet is stamped by the next open or tick, whenever that comes
        started = [p.started for p in self._pending.values() if p.started is not None]
        return min(started) + PENDING_TIMEOUT_S if started else float("inf")

    def tick(self, now: float) -> None:
        self._stamp(now)
        for addr in [a for a, p in self._pending.items() if now - p.started >= PENDING_TIMEOUT_S]:
            del self._pending[addr]

    def peer_at(self, addr: tuple) -> int | None:
        """The proven id of the host at ``addr``, if a session exists."""
        s = self._init.get(addr) or self._resp.get(addr)
        return None if s is None else s.peer_id

    def attach(self, node) -> "OverlayAuth":
        """Make ``node`` (an OverlayNode with our id) authenticate every datagram through us."""
        if node.id != self.id:
            raise ValueError("overlay auth: the node's id is not this key's")
        node.auth = self
        node.components.append(self)
        return self
