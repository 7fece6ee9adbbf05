"""`warren node run`: the exit node's runtime around :class:`agents.node.session.NodeSessions`.

Threads, each small:

* the WireGuard tunnel (:class:`agents.wireguard.runtime.Tunnel`, its own threads), whose responder
  asks :meth:`NodeSessions.admit_unknown` about keys it has never seen;
* ``control``: accepts TCP connections on the node's tunnel addresses (port
  :data:`agents.control.CONTROL_PORT`), one thread per connection: session setup (the channel is
  read from the chain), receipts (stored before acknowledged), cooperative closes;
* ``meter``: every :data:`METER_PERIOD_S`, turns tunnel counters minus exit drops into billed bytes,
  ticks the session core (quarantine timeouts, credit cut-offs) and applies its actions to the tunnel
  and the exit table; sends each session an invoice (which doubles as the client's heartbeat);
* ``settle``: the settlement loop (:mod:`agents.node.settlement`);
* ``status``: a unix socket (0600) answering ``warren node status`` with live figures.

The exit (:class:`agents.node.exit.ExitTable`) and the in-tunnel resolver
(:class:`agents.node.dns.NodeResolver`) are installed at start and removed at stop; SIGTERM and
SIGINT stop cleanly (settle, remove the table, close the tunnel).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable

from agents.chain import eip712
from agents.control import (
    CONTROL_PORT,
    PING_MAX,
    ControlKind,
    ControlReader,
    SessionRequest,
    decode_json,
    encode,
    encode_ack,
    encode_invoice,
    encode_json,
    parse_relay_to,
)
from agents.metering import RemoteProtocolError, decode_receipt
from agents.node.policy import address_denied
from agents.node.session import (
    Admit,
    AddressPool,
    Forget,
    NodeOffer,
    NodeSessions,
    RemovePeer,
    Resume,
    SetAllowedIPs,
    SetupRefused,
    Suspend,
    quarantine_address,
)
from agents.wireguard.config import InterfaceConfig

__all__ = ["NodeAgent", "billed_bytes"]

log = logging.getLogger("warren.node")

#: How often the meter thread samples counters, ticks the core and invoices (seconds). Also the
#: client's heartbeat: its failover waits for a few of these to be missed.
METER_PERIOD_S = 0.25
#: A WireGuard transport message adds a 16-byte header and a 16-byte tag, and pads the payload to a
#: multiple of 16: a dropped IP packet of n bytes was n + 32 .. n + 47 bytes of tunnel traffic. The
#: node subtracts the upper bound, so dropped traffic is never billed (it may under-bill by up to 15
#: bytes per dropped packet, in the client's favour).
DROP_OVERHEAD = 47
#: Bound on simultaneous control connections (a client needs one).
MAX_CONTROL_CONNECTIONS = 256
#: A control connection that sends nothing for this long is closed (seconds).
CONTROL_IDLE_S = 120.0


def billed_bytes(rx: int, tx: int, dropped_packets: int, dropped_bytes: int) -> int:
    """Tunnel bytes minus what the exit dropped (never negative)."""
    return max(0, rx + tx - dropped_bytes - DROP_OVERHEAD * dropped_packets)


class NodeAgent:
    """One running exit node.

    Args:
        tunnel_factory: ``(InterfaceConfig, admit_unknown) -> started Tunnel``.
        chain: the node's chain port (``channel(channel_id)``, ``channel_id_of(node, client,
            signer)``, ``sign_close(receipt) -> signature``, ``open_price(channel_id)``,
            ``voucher_open_price(channel_id, pool)``).
        offer: the node's terms.
        pool: tunnel addresses.
        ledger_for: channel ledgers over the node's store.
        exit_table: the exit's nftables table (installed by :meth:`start`).
        resolver: the in-tunnel DNS resolver (started by :meth:`start`), or None.
        store: the node's database (sessions are recorded there), or None.
        private_key: the node's WireGuard private key.
        listen_port: WireGuard's UDP port.
    """

    def __init__(self, *, tunnel_factory: Callable, chain, offer: NodeOffer, pool: AddressPool,
                 ledger_for, exit_table, resolver=None, store=None, private_key: bytes,
                 listen_port: int, mtu: int | None = None, on_stop: Callable[[], None] | None = None) -> None:
        self.chain = chain
        self.offer = offer
        self.pool = pool
        self.exit = exit_table
        self.resolver = resolver
        self.store = store
        self._tunnel_factory = tunnel_factory
        self._private_key = private_key
        self._listen_port = listen_port
        self._mtu = mtu
        self._on_stop = on_stop
        self.core = NodeSessions(offer, pool, ledger_for, chain.channel_id_of)
        self.lock = threading.RLock()
        self.tunnel = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listeners: list[socket.socket] = []
        self._connections: dict[bytes, socket.socket] = {}
        self._addr_key: dict[str, bytes] = {}
        self._dropped: dict[str, tuple[int, int]] = {}
        #: Each session's tunnel counters at the last meter period (billed from a period later).
        self._sampled: dict[bytes, tuple[int, int] | None] = {}
        self._session_rows: dict[bytes, int] = {}
        self.started_at = time.time()
        self.counters = {"receipts_accepted": 0, "receipts_refused": 0, "sessions": 0,
                         "setups_refused": 0}
        #: Refused receipts by reason (the metering core's refusal names), for status and metrics.
        self.receipt_refusals: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> NodeAgent:
        """Bring up the tunnel, exit, resolver and control service."""
        prefix_v4 = self.pool.v4.prefixlen
        prefix_v6 = self.pool.v6.prefixlen
        config = InterfaceConfig(private_key=self._private_key, listen_port=self._listen_port,
                                 addresses=[f"{self.pool.node_v4}/{prefix_v4}", f"{self.pool.node_v6}/{prefix_v6}"],
                                 mtu=self._mtu)
        self.tunnel = self._tunnel_factory(config, self._admit_unknown)
        self.tunnel.tun.add_route(self.core.quarantine_prefix)
        self.exit.install()
        if self.resolver is not None:
            self.resolver.start()
        for address in (self.pool.node_v4, self.pool.node_v6):
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind((address, CONTROL_PORT))
            listener.listen(64)
            listener.settimeout(0.5)
            self._listeners.append(listener)
            self._spawn(f"control-{family.name}", self._accept_loop, listener)
        self._spawn("meter", self._meter_loop)
        log.info("node %s serving on udp/%d; control %s and [%s]:%d", self.offer.node_id.hex()[:16],
                 self._listen_port, self.pool.node_v4, self.pool.node_v6, CONTROL_PORT)
        return self

    def stop(self) -> None:
        """Stop serving; end sessions; remove the exit table; close the tunnel (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.close()
        with self.lock:
            for conn in list(self._connections.values()):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            for wg_key in list(self.core.sessions):
                self._end_session(wg_key)
        for thread in self._threads:
            thread.join(timeout=3)
        if self.resolver is not None:
            self.resolver.close()
        with contextlib.suppress(Exception):
            self.exit.remove()
        if self.tunnel is not None:
            self.tunnel.close()
        if self._on_stop:
            self._on_stop()

    def _spawn(self, name: str, target, *args) -> None:
        def run():
            try:
                target(*args)
            except Exception:
                if not self._stop.is_set():
                    log.exception("node thread %s failed", name)
        thread = threading.Thread(target=run, name=f"node-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- quarantine --------------------------------------------------------------------------------

    def _admit_unknown(self, wg_key: bytes, source, now: float):
        # Called by the WireGuard core: must not call back into the tunnel; the core's own lock
        # may be held. Our lock is taken briefly.
        with self.lock:
            allowed = self.core.admit_unknown(wg_key, time.monotonic())
            if allowed:
                self._addr_key[quarantine_address(wg_key, self.core.quarantine_prefix)] = bytes(wg_key)
                log.info("quarantine: %s from %s", _short(wg_key), _endpoint(source))
            return allowed

    # -- control connections -----------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                key = self._addr_key.get(_canonical(peer[0]))
                if key is None or len(self._connections) >= MAX_CONTROL_CONNECTIONS:
                    conn.close()  # not one of our tunnel peers (or too many): nothing to say
                    continue
                old = self._connections.pop(key, None)
                self._connections[key] = conn
            if old is not None:
                with contextlib.suppress(OSError):
                    old.close()
            self._spawn(f"conn-{_short(key)}", self._serve, conn, key)

    def _serve(self, conn: socket.socket, wg_key: bytes) -> None:
        reader = ControlReader()
        conn.settimeout(CONTROL_IDLE_S)
        leaving = False
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except (TimeoutError, OSError):
                    return
                if not data:
                    return
                for frame in reader.feed(data):
                    reply = self._handle(wg_key, frame)
                    if reply:
                        self._send(wg_key, reply, conn)
                    if frame.kind is ControlKind.SESSION_REQUEST and wg_key not in self.core.sessions:
                        return  # refused: close the connection
                    if frame.kind is ControlKind.CLOSE_REQUEST and reply and reply[0] == ControlKind.CLOSE_SIGNATURE:
                        # The client is leaving. It may still need the tunnel to submit the close (its RPC
                        # goes through it), so the session ends when it hangs up, not now.
                        leaving = True
        except RemoteProtocolError as exc:
            log.warning("control %s: %s; closing", _short(wg_key), exc)
        finally:
            with self.lock:
                if self._connections.get(wg_key) is conn:
                    del self._connections[wg_key]
                if leaving and wg_key in self.core.sessions:  # receipts stored: free its exit
                    self._end_session(wg_key)
            with contextlib.suppress(OSError):
                conn.close()

    def _send(self, wg_key: bytes, data: bytes, conn: socket.socket | None = None) -> None:
        conn = conn or self._connections.get(wg_key)
        if conn is None:
            return
        try:
            conn.sendall(data)
        except OSError:
            pass

    def _handle(self, wg_key: bytes, frame) -> bytes | None:
        if frame.kind is ControlKind.SESSION_REQUEST:
            return self._setup(wg_key, frame)
        if frame.kind in (ControlKind.RECEIPT, ControlKind.CLOSE_REQUEST):
            receipt, signature = decode_receipt(frame.body)
            with self.lock:
                try:
                    counters = self.tunnel.peer_counters(wg_key) if wg_key in self.core.sessions else None
                    counter = None if counters is None else self._billed(self.core.sessions[wg_key], counters,
                                                                         self._dropped)
                    decision, actions = self.core.on_receipt(wg_key, receipt, signature, time.monotonic(), counter)
                except SetupRefused as refusal:
                    return encode(ControlKind.REFUSED, refusal.reason.encode())
                self._apply(actions)
                if decision.accepted:
                    self.counters["receipts_accepted"] += 1
                else:
                    self.counters["receipts_refused"] += 1
                    reason = decision.reason.value
                    self.receipt_refusals[reason] = self.receipt_refusals.get(reason, 0) + 1
            if not decision.accepted:
                log.info("receipt refused from %s: %s %s", _short(wg_key), decision.reason.value, decision.detail)
                latest = self.core.sessions[wg_key].ledger.latest() if wg_key in self.core.sessions else None
                replayed_final = (frame.kind is ControlKind.CLOSE_REQUEST and latest is not None
                                  and latest.receipt == receipt)
                if not replayed_final:
                    return encode(ControlKind.REFUSED, decision.reason.value.encode())
            if frame.kind is ControlKind.CLOSE_REQUEST:
                close = eip712.CooperativeClose(receipt.channel_id, receipt.cumulative_bytes,
                                                receipt.cumulative_amount)
                signature = self.chain.sign_close(close)
                return encode(ControlKind.CLOSE_SIGNATURE, signature)
            return encode_ack(receipt.cumulative_bytes, receipt.cumulative_amount)
        if frame.kind is ControlKind.PING and wg_key in self.core.sessions and len(frame.body) <= PING_MAX:
            return encode(ControlKind.PONG, frame.body)  # the client's latency probe: answered at once
        return None  # node->client kinds (and pings outside a session) from a client: ignored

    def _setup(self, wg_key: bytes, frame) -> bytes:
        try:
            body = decode_json(frame)
            request, signature, names = SessionRequest.from_wire(body)
        except RemoteProtocolError as exc:
            return encode_json(ControlKind.SESSION_REFUSED, {"reason": exc.reason, "detail": str(exc)})
        try:
            relay_to = self._relay_targets(body)
        except SetupRefused as refusal:
            self.core.count_refusal(refusal.reason)
            return self._refused(wg_key, refusal)
        redemption = None
        if "redemption" in body:  # a voucher channel to open first (agents.node.chain says why here)
            try:
                redemption = self._checked_redemption(wg_key, request, signature, names, body["redemption"])
            except SetupRefused as refusal:  # counted by the core
                return self._refused(wg_key, refusal)
        try:
            if redemption is not None:
                self.chain.redeem(redemption)
            channel = self.chain.session_channel(request.channel_id, names)
            open_price = self._open_price(channel, names.get("pool"))
        except SetupRefused as refusal:
            self.core.count_refusal(refusal.reason)
            return self._refused(wg_key, refusal)
        except Exception as exc:  # the chain is the authority: without it, no new session
            log.warning("setup %s: chain read failed: %s", _short(wg_key), exc)
            return encode_json(ControlKind.SESSION_REFUSED, {"reason": "chain_unavailable",
                                                             "detail": "the node cannot read the chain; retry"})
        with self.lock:
            try:
                session, terms, actions = self.core.setup(wg_key, request, signature, names, channel,
                                                          time.monotonic(), time.time(), relay_to, open_price)
            except SetupRefused as refusal:
                return self._refused(wg_key, refusal)
            self._addr_key[session.v4] = wg_key
            self._addr_key[_canonical(session.v6)] = wg_key
            self._apply(actions)
            self.counters["sessions"] += 1
            if self.store is not None:
                self._session_rows[wg_key] = self.store.start_session(
                    channel_id=session.channel_id, client_key=wg_key.hex(), v4=session.v4, v6=session.v6,
                    at=time.time())
        log.info("session %s: channel %s, %s / %s", _short(wg_key), session.channel_id.hex()[:16],
                 session.v4, session.v6)
        return encode_json(ControlKind.SESSION_ACCEPT, terms.to_wire())

    def _open_price(self, channel, pool: str | None = None) -> int | None:
        """The price a channel was opened at: its ledger's (this run, or stored by an earlier one),
        else the chain's: a payment channel's ChannelOpened event, a voucher channel's (``pool``
        names its pool) the node's listing when the pool logged its Redeemed (one or two log queries
        per channel, then kept in the ledger's stored terms). None for a channel the core will
        refuse anyway (not open, another node's), and for one whose events the chain no longer
        shows (the offer's price then; the client's bound is the node's listing too). Called
        outside the lock: it may wait for the chain.
        """
        from agents.chain.bindings import ChannelStatus

        if channel.status is not ChannelStatus.OPEN or channel.node_id != self.offer.node_id:
            return None
        with self.lock:
            ledger = self.core.ledgers().get(channel.channel_id)
        if ledger is not None:
            return ledger.terms.price_per_gib
        stored = self.store.channel(channel.channel_id) if self.store is not None else None
        if stored is not None and stored.kind == ("voucher" if pool else "channels"):
            return stored.terms.price_per_gib
        if pool:
            price = self.chain.voucher_open_price(channel.channel_id, pool)
        else:
            price = self.chain.open_price(channel.channel_id)
        if price is None:
            log.warning("channel %s: no opening event found; quoting the node's price %d",
                        channel.channel_id.hex()[:16], self.offer.price_per_gib)
        return price

    def set_price(self, price_per_gib: int) -> None:
        """The node's price from now on: channels opened at it get it; open channels keep theirs."""
        with self.lock:
            self.offer = dataclasses.replace(self.offer, price_per_gib=int(price_per_gib))
            self.core.offer = self.offer

    def _relay_targets(self, body: dict) -> tuple[tuple[str, int], ...]:
        """A relay session's exit endpoints (``relay_to``), refused when the policy denies one (a
        client must not aim this node's uplink at a private range through a relay session).

        Raises:
            SetupRefused: malformed, or a denied address.
        """
        try:
            targets = parse_relay_to(body) or ()
        except RemoteProtocolError as exc:
            raise SetupRefused(exc.reason, str(exc)) from None
        for address, port in targets:
            if address_denied(self.exit.policy, address):
                raise SetupRefused("relay_denied", f"this node's exit policy refuses {address}")
        return targets

    def _refused(self, wg_key: bytes, refusal: SetupRefused) -> bytes:
        self.counters["setups_refused"] += 1
        log.info("setup refused for %s: %s %s", _short(wg_key), refusal.reason, refusal.detail)
        return encode_json(ControlKind.SESSION_REFUSED, {"reason": refusal.reason, "detail": refusal.detail})

    def _checked_redemption(self, wg_key: bytes, request, signature: bytes, names: dict, doc):
        """The redemption a voucher session request carries, parsed and checked by the core before
        any chain call (the request itself first: signed by the channel's signer for this tunnel,
        this node and this minute).

        Raises:
            SetupRefused: the request or the redemption fails a check (counted by the core).
        """
        import json

        from agents.prover.errors import ProverError
        from agents.prover.redemption import Redemption

        with self.lock:
            self.core.check_request(wg_key, request, signature, names, time.time())
        try:
            redemption = Redemption.from_json(json.dumps(doc))
        except (ProverError, TypeError, ValueError) as exc:
            self.core.count_refusal("bad_redemption")
            raise SetupRefused("bad_redemption", str(exc)) from None
        with self.lock:
            self.core.check_redemption(request, names, redemption)
        return redemption

    # -- metering ----------------------------------------------------------------------------------

    def _meter_loop(self) -> None:
        while not self._stop.wait(METER_PERIOD_S):
            self.meter_once()

    def meter_once(self) -> None:
        """Sample counters, bill, tick the core, apply its actions, invoice every session."""
        # The bill is the tunnel's counters of the previous period less the exit's drops now: a packet
        # is counted when decrypted, and may still wait (in the tunnel's batch of decrypted packets,
        # in the TUN's queue) for the exit to drop it; billed bytes never go down, so a bill from the
        # counters and drops of one moment kept what was in flight then (CI: 60,720 B of a 1.7 MB
        # flood at a blocked address billed). A period later every packet counted then has met the
        # exit's rules. The bill lags one period (METER_PERIOD_S); the credit check and receipts use
        # the current counters (counted_bytes, on_receipt), so neither a cut-off nor a receipt waits.
        with self.lock:
            sampled = {key: self.tunnel.peer_counters(key) for key in self.core.sessions}
        previous, self._sampled = self._sampled, sampled
        try:
            dropped = self.exit.dropped()
        except Exception as exc:
            log.warning("reading the exit's drop counters failed: %s", exc)
            dropped = self._dropped
        self._dropped = dropped
        now = time.monotonic()
        invoices = []
        with self.lock:
            for wg_key, session in list(self.core.sessions.items()):
                counted = previous.get(wg_key)
                if sampled.get(wg_key) is None:
                    continue
                billed = self._billed(session, counted, dropped) if counted is not None else 0
                self.core.update_billed(wg_key, billed, now, self._billed(session, sampled[wg_key], dropped))
                # unbilled: what the exit dropped of what was billed from (never the period still in flight)
                carried = counted[0] + counted[1] if counted is not None else 0
                invoices.append((wg_key, session.billed_bytes, max(0, carried - billed)))
            self._apply(self.core.tick(now))
        for wg_key, billed, unbilled in invoices:
            self._send(wg_key, encode_invoice(billed, unbilled))

    @staticmethod
    def _billed(session, counters: tuple[int, int], dropped: dict) -> int:
        """A session's billed bytes from its tunnel counters and the exit's drop counters."""
        packets = bytes_ = 0
        for address in (session.v4, _canonical(session.v6)):
            p, b = dropped.get(address, (0, 0))
            packets, bytes_ = packets + p, bytes_ + b
        return billed_bytes(counters[0], counters[1], packets, bytes_)

    def _apply(self, actions) -> None:
        for action in actions:
            if isinstance(action, SetAllowedIPs):
                self.tunnel.set_allowed_ips(action.wg_key, list(action.cidrs))
            elif isinstance(action, Admit):
                self.exit.admit(action.v4, action.v6, action.relay_to or None)
            elif isinstance(action, Suspend):
                log.info("cut off %s: %d bytes unpaid", action.v4, action.unpaid_bytes)
                self.exit.suspend(action.v4, action.v6)
            elif isinstance(action, Resume):
                log.info("serving %s again: paid", action.v4)
                self.exit.resume(action.v4, action.v6)
            elif isinstance(action, Forget):
                self.exit.forget(action.v4, action.v6)
                self._addr_key.pop(action.v4, None)
                self._addr_key.pop(_canonical(action.v6), None)
            elif isinstance(action, RemovePeer):
                self._forget_peer(action.wg_key)

    def _forget_peer(self, wg_key: bytes) -> None:
        self._addr_key.pop(quarantine_address(wg_key, self.core.quarantine_prefix), None)
        with contextlib.suppress(Exception):
            self.tunnel.remove_peer(wg_key)
        conn = self._connections.pop(wg_key, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    def _end_session(self, wg_key: bytes) -> None:
        session = self.core.sessions.get(wg_key)
        row = self._session_rows.pop(wg_key, None)
        if session is not None and row is not None and self.store is not None:
            self.store.update_session_bytes(row, session.billed_bytes)
            self.store.end_session(row, at=time.time())
        self._apply(self.core.end(wg_key))

    # -- status ------------------------------------------------------------------------------------

    def status(self) -> dict:
        """Live figures (what `warren node status` shows next to the chain's)."""
        with self.lock:
            sessions = [{
                "client": _short(key), "channel_id": s.channel_id.hex(), "v4": s.v4, "v6": s.v6,
                "rx_bytes": rx, "tx_bytes": tx,  # the tunnel's counters: from and to the client
                "billed_bytes": s.billed_bytes, "paid_bytes": s.ledger.paid_bytes(),
                "paid_amount": (s.ledger.latest().receipt.cumulative_amount if s.ledger.latest() else 0),
                "suspended": s.suspended, "age_s": round(time.monotonic() - s.started, 1),
            } for key, s in self.core.sessions.items()
                for rx, tx in [self._counters_of(key)]]
            return {
                "node_id": self.offer.node_id.hex(), "uptime_s": round(time.time() - self.started_at, 1),
                "price_per_gib": self.offer.price_per_gib, "pending": len(self.core.pending),
                "sessions": sessions, "counters": dict(self.counters),
                "refusals": dict(self.core.refusals), "receipt_refusals": dict(self.receipt_refusals),
            }

    def _counters_of(self, wg_key: bytes) -> tuple[int, int]:
        counters = self.tunnel.peer_counters(wg_key) if self.tunnel is not None else None
        return counters or (0, 0)


def _short(key: bytes) -> str:
    return bytes(key).hex()[:12]


def _endpoint(source) -> str:
    return f"{source[0]}:{source[1]}" if source else "?"


def _canonical(address: str) -> str:
    """One spelling per address (IPv6 compressed; IPv4-mapped IPv6 as plain IPv4)."""
    parsed = ipaddress.ip_address(address.split("%")[0])
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
        return str(parsed.ipv4_mapped)
    return str(parsed)
