"""`warren connect`: the client's runtime around :mod:`agents.client.session`.

Order of events, fail closed throughout (DESIGN.md, "Sessions (exit mode)"):

1. The kill switch goes up first (:class:`agents.client.killswitch.KillSwitch`): from here until an
   explicit disconnect the host sends nothing but WireGuard to the chosen nodes.
2. Nodes come from the chain (:func:`agents.client.selection.list_candidates`), are filtered and
   ranked; their endpoints come from :class:`Locator` (the overlay's signed PeerRecords).
3. A channel is opened to the best node (or an open one reused) with a fresh payment signer.
4. One WireGuard tunnel (our runtime, a TUN device): the node is its peer for 0.0.0.0/0 and ::/0 (the
   tunnel installs wg-quick's fwmark policy routing); the TUN starts with only the quarantine address
   derived from our key, from which the control connection asks for a session; the node's terms give
   the tunnel addresses and the DNS server, which the host then uses.
5. The payer loop signs receipts on the meter's cadence and watches liveness. When the node goes
   silent, :meth:`ClientAgent.failover` moves the same TUN to the standby node (already chosen, its
   endpoint resolved and its channel opened): the peer's allowed IPs move to the new peer in one
   core call, so no packet takes another way; the old channel is closed (cooperatively if the node
   answers, else a unilateral close is started).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from agents.chain.eip712 import Receipt
from agents.client.selection import Candidate
from agents.client.session import ClientMeter, LatencyProbe, Liveness
from agents.control import (
    CONTROL_PORT,
    ControlKind,
    ControlReader,
    SessionRequest,
    SessionTerms,
    decode_ack,
    decode_invoice,
    decode_json,
    encode,
    encode_json,
    sign_request,
)
from agents.metering import ChannelTerms, LocalProtocolError, ReceiptSigner, RemoteProtocolError, encode_receipt
from agents.node.session import quarantine_address
from agents.wireguard.config import PeerConfig

__all__ = ["ClientAgent", "ConnectError", "OpenChannel", "Route"]

log = logging.getLogger("warren.client")

#: The node's control address (the first host of its default v6 pool, agents.node.session).
NODE_CONTROL_V6 = "fd77:7272::1"
#: How often the payer loop looks at the counters (seconds).
PAY_POLL_S = 0.05
#: Control-channel round trip above which (three probes in a row) the node counts as gone. It is
#: measured inside the tunnel, behind the user's own traffic: a saturated home uplink adds its queue.
DEFAULT_MAX_LATENCY_S = 2.0
#: Setup must finish within this (seconds): handshake, control connection, chain check.
SETUP_TIMEOUT_S = 10.0
#: How long a failover away from a slow (still answering) node waits at least for its close
#: signature; a node is slow past ``max_latency_s``, so the wait is twice that when longer.
CLOSE_WAIT_S = 1.0
#: WireGuard keepalive towards the node (seconds): keeps NAT mappings open and liveness fresh.
KEEPALIVE_S = 1
#: A node failed over away from is not the standby again for this long (see _prepare_standby);
#: the payer looks for a standby this often while it has none.
RECENTLY_LEFT_S = 60.0
STANDBY_RETRY_S = 15.0
#: A node found dead is looked at again this much later before the client fails over
#: (:meth:`ClientAgent._dead_after_all`).
STALL_GRACE_S = 0.1
#: Priority of the rule of a tunnel with its own control table (before wg-quick's rules and main).
CONTROL_RULE_PRIORITY = 100


class ConnectError(Exception):
    """A node could not be used (setup refused, no answer, no channel)."""


@dataclasses.dataclass
class OpenChannel:
    """A channel this client holds to one node, with its payment signer.

    ``channels_address`` is the contract holding the channel (payment_channels, or a voucher pool):
    the EIP-712 domain of its session requests and receipts. ``session_names`` are the naming fields
    of the session request (None: a payment channel's client and signer); ``redemption`` is a voucher
    redemption the node submits during setup to open the channel (None once it is open).
    """

    channel_id: bytes
    node_id: bytes
    signer_key: bytes
    signer: str
    deposit: int
    chain_id: int
    channels_address: str
    receipt_signer: ReceiptSigner | None = None
    session_names: dict | None = None
    redemption: dict | None = None
    #: The price the channel was opened at (token wei per GiB, payment_channels' ChannelOpened); None:
    #: not known here (a voucher channel, an older record), the node's listing when chosen is the bound.
    price_per_gib: int | None = None


@dataclasses.dataclass
class Route:
    """A node chosen to carry traffic: who, where, and the channel paying it."""

    candidate: Candidate
    endpoint: tuple[str, int]
    channel: OpenChannel | None = None


class _Session:
    """One live session: the control connection, the meter, liveness."""

    def __init__(self, route: Route, conn: socket.socket, terms: SessionTerms, meter: ClientMeter,
                 rx0: int, tx0: int, liveness: Liveness) -> None:
        self.route = route
        self.conn = conn
        self.terms = terms
        self.meter = meter
        self.rx0, self.tx0 = rx0, tx0
        self.liveness = liveness
        self.probe = LatencyProbe()
        self.reader = ControlReader()
        self.started = time.monotonic()
        self.close_signature: bytes | None = None


class ClientAgent:
    """One `warren connect`.

    Args:
        tunnel: the started client Tunnel (TUN + socket; no peer yet).
        chain: the client's chain port: ``open_channel(candidate, deposit) -> OpenChannel``,
            ``cooperative_close(channel, receipt, signature, node_signature)``,
            ``start_close(channel)``.
        killswitch: the engaged kill switch (``set_endpoints``).
        resolv: DNS pointing (``point_to``/``restore``), or None.
        budget: deposit per channel (token wei).
        dead_after_s: silence (nothing received) after which the node counts as gone.
        max_latency_s: control-channel round trip above which, three probes in a row, it does too.
        allowed_ips: what the node's peer carries (full tunnel by default; the relay hop of
            `--hops 2` carries only the exit endpoints and the control address, agents.client.hops).
        control_table: put the route to the node's control address in this routing table, looked
            up for this tunnel's quarantine address only (a rule), instead of the main table: two
            tunnels at once (relay and exit) each reach their own node's control address.
        request_extra: more fields of the session request (the relay hop's ``relay_to``).
    """

    def __init__(self, *, tunnel, chain, killswitch, resolv=None, budget: int,
                 dead_after_s: float = 1.5, max_latency_s: float = DEFAULT_MAX_LATENCY_S,
                 on_event: Callable[[str, dict], None] | None = None,
                 allowed_ips: tuple[str, ...] = ("0.0.0.0/0", "::/0"), control_table: int | None = None,
                 request_extra: dict | None = None) -> None:
        self.tunnel = tunnel
        self.chain = chain
        self.killswitch = killswitch
        self.resolv = resolv
        self.budget = budget
        self.dead_after_s = dead_after_s
        self.max_latency_s = max_latency_s
        self.on_event = on_event or (lambda kind, data: None)
        self.allowed_ips = list(allowed_ips)
        self.control_table = control_table
        self.request_extra = dict(request_extra or {})
        #: The control rule added (``ip -6 rule`` arguments), for whoever undoes the connection.
        self.control_rule: tuple[str, ...] | None = None
        self.lock = threading.RLock()
        self.session: _Session | None = None
        self.standby: Route | None = None
        self.spare: list[Route] = []
        #: Every route chosen at connect: the spares are refilled from it (a dead node may come back).
        self.plan: list[Route] = []
        self._retry_at = 0.0
        #: node id -> when the client failed over away from it (monotonic seconds).
        self._left_at: dict[bytes, float] = {}
        self.history: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failovers: list[dict] = []
        self.spent = 0

    # -- connecting --------------------------------------------------------------------------------

    def connect(self, routes: list[Route]) -> None:
        """Use the first route that works; keep the next one warm as the standby.

        Raises:
            ConnectError: no route worked.
        """
        self.killswitch.set_endpoints([r.endpoint for r in routes[:2]])
        errors = []
        for index, route in enumerate(routes):
            try:
                self._bring_up(route)
            except ConnectError as exc:
                errors.append(f"{route.candidate.node.node_id.hex()[:12]}: {exc}")
                log.warning("node %s unusable: %s", route.candidate.node.node_id.hex()[:12], exc)
                continue
            self.plan = list(routes)
            self.spare = routes[index + 1:]
            self._prepare_standby()
            self._thread = threading.Thread(target=self._pay_loop, name="client-payer", daemon=True)
            self._thread.start()
            return
        raise ConnectError("no node could be used: " + "; ".join(errors))

    def _prepare_standby(self, *, desperate: bool = False, reuse: OpenChannel | None = None) -> None:
        """Pick the next route and open its channel ahead of need (a failover then costs only the
        handshake and setup).

        A node the client left less than :data:`RECENTLY_LEFT_S` ago is passed over (a channel opened
        to a node just seen dead locks a deposit for nothing), unless ``desperate``: the current node
        is gone and nothing else is left (then every node of the plan is tried, the one just left
        too: it may have come back, and then gets back ``reuse``, its channel still open, rather
        than a second deposit).
        """
        now = time.monotonic()
        current = self.session.route.candidate.node.node_id if self.session else None

        def wanted(route: Route) -> bool:
            node_id = route.candidate.node.node_id
            left = self._left_at.get(node_id)
            return desperate or (node_id != current and (left is None or now - left >= RECENTLY_LEFT_S))

        if not self.spare and self.standby is None:
            self.spare = [Route(r.candidate, r.endpoint) for r in self.plan]
        self.spare = [r for r in self.spare if wanted(r)]
        while self.spare and self.standby is None:
            route = self.spare.pop(0)
            try:
                if route.channel is None and reuse is not None and route.candidate.node.node_id == current:
                    route.channel = reuse
                elif route.channel is None:
                    route.channel = self.chain.open_channel(route.candidate, self.budget)
                self.standby = route
            except Exception as exc:
                log.warning("standby %s: %s", route.candidate.node.node_id.hex()[:12], exc)
        endpoints = [self.session.route.endpoint] if self.session else []
        if self.standby:
            endpoints.append(self.standby.endpoint)
        self.killswitch.set_endpoints(endpoints)

    def _bring_up(self, route: Route) -> None:
        node = route.candidate.node
        if route.channel is None:
            route.channel = self.chain.open_channel(route.candidate, self.budget)
        channel = route.channel
        peer = PeerConfig(public_key=node.wg_public_key, allowed_ips=list(self.allowed_ips),
                          endpoint=route.endpoint, persistent_keepalive=KEEPALIVE_S)
        old = self.session
        self.tunnel.add_peer(peer)  # takes /0 from the previous peer in one step: no gap, no leak
        if old is not None:
            with contextlib.suppress(Exception):
                self.tunnel.remove_peer(old.route.candidate.node.wg_public_key)
        my_key = self.tunnel.public_key
        quarantine = quarantine_address(my_key)
        tun = self.tunnel.tun
        # Addresses are replaced, never flushed: a TUN left without an IPv4 address loses its IPv4
        # routes (the kernel drops them), and with them the full-tunnel default route.
        tun.ip("addr", "replace", f"{quarantine}/128", "dev", tun.name, "nodad")
        self._control_route(quarantine, quarantine)
        rx0, tx0 = self.tunnel.peer_counters(node.wg_public_key) or (0, 0)
        conn, terms = self._setup(route, my_key, quarantine)
        agreed = channel.price_per_gib if channel.price_per_gib is not None else node.price_per_gib
        if terms.price_per_gib > agreed:
            conn.close()
            raise ConnectError(f"the node asks {terms.price_per_gib} token wei per GiB, more than the "
                               f"{agreed} its channel was opened at (or it lists on chain): refused")
        tun.ip("addr", "replace", f"{terms.address_v4}/32", "dev", tun.name)
        tun.ip("addr", "replace", f"{terms.address_v6}/128", "dev", tun.name, "nodad")
        if old is not None:
            for family, address, prefix in (("-4", old.terms.address_v4, 32), ("-6", old.terms.address_v6, 128)):
                if address not in (terms.address_v4, terms.address_v6):
                    with contextlib.suppress(Exception):
                        tun.ip(family, "addr", "del", f"{address}/{prefix}", "dev", tun.name)
        # The node's control address is also its IPv6 resolver (agents.node.session): once admitted,
        # reach it from the session address, which the node's exit admits for DNS; from the quarantine
        # address only the control port answers (the control connection binds that address itself).
        self._control_route(quarantine, terms.address_v6)
        if self.resolv is not None:
            self.resolv.point_to(list(terms.dns))
        if channel.receipt_signer is None:
            channel.receipt_signer = ReceiptSigner(ChannelTerms(
                channel_id=channel.channel_id, signer=channel.signer, deposit=channel.deposit,
                price_per_gib=terms.price_per_gib, credit_bytes=terms.credit_bytes,
                chain_id=channel.chain_id, verifying_contract=channel.channels_address), channel.signer_key)
        meter = ClientMeter(channel.receipt_signer, terms, time.monotonic())
        with self.lock:
            self.session = _Session(route, conn, terms, meter, rx0, tx0,
                                    Liveness(dead_after_s=self.dead_after_s, max_latency_s=self.max_latency_s))
            self.session.liveness.heard(1, time.monotonic())
        log.info("connected through %s (%s) at %s: tunnel %s / %s", node.node_id.hex()[:12], node.region,
                 _fmt(route.endpoint), terms.address_v4, terms.address_v6)
        self.on_event("connected", {"node_id": node.node_id.hex(), "region": node.region,
                                    "endpoint": _fmt(route.endpoint)})

    def _control_route(self, quarantine: str, source: str) -> None:
        """Route the node's control address into this tunnel, from ``source``.

        With :attr:`control_table`, the route goes to that table and a rule (added once) sends only
        this tunnel's quarantine address there: the control connection binds that address.
        """
        tun = self.tunnel.tun
        table = () if self.control_table is None else ("table", str(self.control_table))
        tun.ip("-6", "route", "replace", f"{NODE_CONTROL_V6}/128", "dev", tun.name, "src", source, *table)
        if self.control_table is not None and self.control_rule is None:
            rule = ("from", f"{quarantine}/128", "table", str(self.control_table),
                    "priority", str(CONTROL_RULE_PRIORITY))
            tun.ip("-6", "rule", "add", *rule)
            self.control_rule = rule

    def _setup(self, route: Route, my_key: bytes, quarantine: str) -> tuple[socket.socket, SessionTerms]:
        node, channel = route.candidate.node, route.channel
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        conn = None
        while time.monotonic() < deadline:
            conn = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            conn.settimeout(1.0)
            try:
                conn.bind((quarantine, 0))
                conn.connect((NODE_CONTROL_V6, CONTROL_PORT))
                break
            except OSError:
                conn.close()
                conn = None
                time.sleep(0.1)
        if conn is None:
            raise ConnectError("no answer from the node's control address (handshake or quarantine failed)")
        request = SessionRequest(channel.channel_id, node.node_id, my_key, int(time.time()), os.urandom(32))
        signature = sign_request(request, channel.signer_key, channel.chain_id, channel.channels_address)
        names = channel.session_names or {"client": self.chain.client_address, "signer": channel.signer}
        body = {**request.to_wire(signature, **names), **self.request_extra}
        if channel.redemption is not None:  # the node submits it as relayer before checking the channel
            body["redemption"] = channel.redemption
        conn.sendall(encode_json(ControlKind.SESSION_REQUEST, body))
        reader = ControlReader()
        conn.settimeout(max(0.5, deadline - time.monotonic()))
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    raise ConnectError("the node closed the control connection")
                for frame in reader.feed(data):
                    if frame.kind is ControlKind.SESSION_ACCEPT:
                        channel.redemption = None  # submitted: the channel is open now
                        conn.settimeout(None)
                        conn.setblocking(False)
                        return conn, SessionTerms.from_wire(decode_json(frame))
                    if frame.kind is ControlKind.SESSION_REFUSED:
                        body = decode_json(frame)
                        raise ConnectError(f"refused: {body.get('reason')} {body.get('detail', '')}".strip())
        except (OSError, RemoteProtocolError) as exc:
            conn.close()
            raise ConnectError(f"setup failed: {exc}") from None

    # -- paying ------------------------------------------------------------------------------------

    def _pay_loop(self) -> None:
        standby_check = time.monotonic() + STANDBY_RETRY_S
        while not self._stop.wait(PAY_POLL_S):
            try:
                self.pay_once()
                if self.standby is None and time.monotonic() >= standby_check:
                    standby_check = time.monotonic() + STANDBY_RETRY_S
                    with self.lock:
                        self._prepare_standby()
            except Exception:
                log.exception("payer step failed")

    def pay_once(self) -> None:
        """Read frames, sign what is due, check liveness (fail over when the node is gone)."""
        with self.lock:
            session = self.session
            if session is None:
                return
            now = time.monotonic()
            node_key = session.route.candidate.node.wg_public_key
            counters = self.tunnel.peer_counters(node_key)
            if counters is not None:
                rx, tx = counters
                session.liveness.heard(rx, now)
                own = (rx - session.rx0) + (tx - session.tx0)
                self._read_frames(session)
                try:
                    signed = session.meter.next_receipt(own, now)
                except LocalProtocolError as exc:
                    log.warning("cannot pay: %s", exc)
                    signed = None
                if signed:
                    receipt, signature = signed
                    self.spent = receipt.cumulative_amount
                    self._write(session, encode(ControlKind.RECEIPT, encode_receipt(receipt, signature)))
            nonce, waited = session.probe.due(now)
            if waited is not None:
                session.liveness.waiting(waited)
            if nonce is not None:
                self._write(session, encode(ControlKind.PING, nonce))
            dead = session.liveness.dead(now) if now - session.started > self.dead_after_s else None
            if dead:
                dead = self._dead_after_all(session)
            if dead:
                self.failover(dead, answering=session.liveness.answering(time.monotonic()))

    def _dead_after_all(self, session: _Session) -> str | None:
        """Look again :data:`STALL_GRACE_S` later before failing over: on a loaded machine it may be
        this process that stalled, with the node's answer waiting unread in our sockets (the
        tunnel's receive thread needs a moment to count it)."""
        time.sleep(STALL_GRACE_S)
        now = time.monotonic()
        counters = self.tunnel.peer_counters(session.route.candidate.node.wg_public_key)
        if counters is not None:
            session.liveness.heard(counters[0], now)
        self._read_frames(session)
        return session.liveness.dead(now)

    def _read_frames(self, session: _Session) -> None:
        while True:
            try:
                data = session.conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not data:
                return
            try:
                frames = session.reader.feed(data)
            except RemoteProtocolError as exc:
                log.warning("node sent a malformed frame: %s", exc)
                return
            for frame in frames:
                if frame.kind is ControlKind.INVOICE:
                    before = session.meter.overclaim_bytes
                    session.meter.on_invoice(*decode_invoice(frame.body))
                    if session.meter.overclaim_bytes > before:
                        log.warning("node bills %d bytes more than we counted plus the credit; paying only "
                                    "what we counted", session.meter.overclaim_bytes)
                elif frame.kind is ControlKind.ACK:
                    session.meter.on_ack(decode_ack(frame.body)[0])
                elif frame.kind is ControlKind.REFUSED:
                    reason = frame.body.decode(errors="replace")
                    session.meter.on_refused(reason)
                    log.warning("node refused a receipt: %s", reason)
                elif frame.kind is ControlKind.CLOSE_SIGNATURE:
                    session.close_signature = frame.body
                elif frame.kind is ControlKind.PONG:
                    rtt = session.probe.on_pong(frame.body, time.monotonic())
                    if rtt is not None:
                        session.liveness.latency(rtt)

    def _write(self, session: _Session, data: bytes) -> None:
        try:
            session.conn.setblocking(True)
            session.conn.settimeout(1.0)
            session.conn.sendall(data)
        except OSError as exc:
            log.warning("control connection: %s", exc)
        finally:
            with contextlib.suppress(OSError):
                session.conn.setblocking(False)

    # -- failover ----------------------------------------------------------------------------------

    def failover(self, why: str, answering: bool = False) -> None:
        """Move to the standby node now (the kill switch holds throughout).

        ``answering``: the old node still answers (too slowly). It is then paid up and asked for its
        close signature before the move (waiting at most twice ``max_latency_s``, at least
        :data:`CLOSE_WAIT_S`): the node's control address is the same on every node, so once the
        tunnel has moved the old node cannot be asked any more. Its channel then closes
        cooperatively; a silent node's channel gets a unilateral close.
        """
        with self.lock:
            if time.monotonic() < self._retry_at:
                return  # every node failed a moment ago: try again after a pause, not every poll
            old = self.session
            started = time.monotonic()
            log.warning("node %s gone (%s): failing over", old.route.candidate.node.node_id.hex()[:12], why)
            self._left_at[old.route.candidate.node.node_id] = started
            closing = (self._ask_to_close(old, wait_s=max(CLOSE_WAIT_S, 2 * self.max_latency_s))
                       if answering else None)
            left = self._session_summary(old)
            self.history.append(left)
            attempts = 0
            while True:
                route = self.standby
                self.standby = None
                if route is None and attempts < max(1, len(self.plan)):
                    self._prepare_standby(desperate=True, reuse=None if closing else old.route.channel)
                    route = self.standby
                    self.standby = None
                attempts += 1
                if route is None:
                    self._retry_at = time.monotonic() + max(self.dead_after_s, 1.0)
                    log.error("no other node to fail over to; traffic stays blocked (retrying)")
                    self.on_event("stalled", {"why": why})
                    return
                self.killswitch.set_endpoints([route.endpoint])
                try:
                    self._bring_up(route)
                    break
                except ConnectError as exc:
                    log.warning("standby %s unusable: %s", route.candidate.node.node_id.hex()[:12], exc)
            took = time.monotonic() - started
            self.failovers.append({"from": old.route.candidate.node.node_id.hex(),
                                   "to": route.candidate.node.node_id.hex(), "why": why,
                                   "switch_s": round(took, 3)})
            self.on_event("failover", self.failovers[-1])
        with contextlib.suppress(OSError):
            old.conn.close()
        threading.Thread(target=self._after_failover, args=(old, closing, left), daemon=True).start()

    def _after_failover(self, old: _Session, closing: tuple[Receipt, bytes, bytes | None] | None,
                        left: dict) -> None:
        with self.lock:
            kept = self.session is not None and self.session.route.channel is old.route.channel
        closed = "kept" if kept else self._close(old.route.channel, closing)
        with self.lock:
            left["closed"] = closed
            self._prepare_standby()

    # -- leaving -----------------------------------------------------------------------------------

    def disconnect(self) -> dict:
        """Pay what is owed, close the channel cooperatively, stop paying; returns a summary.

        The kill switch and routes are the caller's to remove (they outlive this object on purpose).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
        with self.lock:
            session = self.session
        if session is None:
            return {}
        closing = self._ask_to_close(session, wait_s=3.0)  # the payer has stopped: nobody else signs
        summary = self._session_summary(session)
        summary["closed"] = self._close(session.route.channel, closing)
        with contextlib.suppress(OSError):
            session.conn.close()
        return summary

    def _ask_to_close(self, session: _Session, wait_s: float) -> tuple[Receipt, bytes, bytes | None] | None:
        """Pay what is owed and ask the node for its close signature over that final receipt.

        Returns ``(receipt, signature, node_signature)`` (node_signature None: no answer within
        ``wait_s``), or None when nothing was ever signed. The session's control connection stays open:
        the node ends the session when we hang up.
        """
        self._read_frames(session)
        counters = self.tunnel.peer_counters(session.route.candidate.node.wg_public_key) or (0, 0)
        session.meter.due((counters[0] - session.rx0) + (counters[1] - session.tx0), time.monotonic())
        final = session.meter.final_receipt() or session.meter.last_signed
        if final is None:
            return None
        receipt, signature = final
        self._write(session, encode(ControlKind.CLOSE_REQUEST, encode_receipt(receipt, signature)))
        deadline = time.monotonic() + wait_s
        while session.close_signature is None and time.monotonic() < deadline:
            time.sleep(0.05)
            self._read_frames(session)
        return receipt, signature, session.close_signature

    def _close(self, channel, closing: tuple[Receipt, bytes, bytes | None] | None) -> str | None:
        """Close ``channel`` on chain: cooperatively when the node signed, else start a unilateral
        close. Returns "cooperative", "left_open" (a voucher channel), "unilateral" or None (failed)."""
        if closing is not None and closing[2] is not None:
            receipt, signature, node_signature = closing
            try:
                return self.chain.cooperative_close(channel, receipt, signature, node_signature) or "cooperative"
            except Exception as exc:
                log.warning("cooperative close failed: %s; starting a unilateral close", exc)
        try:
            self.chain.start_close(channel)
        except Exception as exc:
            log.warning("could not start a unilateral close of channel %s: %s", channel.channel_id.hex()[:16], exc)
            return None
        log.info("unilateral close started on channel %s", channel.channel_id.hex()[:16])
        return "unilateral"

    # -- status ------------------------------------------------------------------------------------

    def _session_summary(self, session: _Session) -> dict:
        node = session.route.candidate.node
        latest = session.meter.signer.latest
        return {"node_id": node.node_id.hex(), "region": node.region, "endpoint": _fmt(session.route.endpoint),
                "channel_id": session.route.channel.channel_id.hex(), "own_bytes": session.meter.own_bytes,
                "invoiced_bytes": session.meter.invoice or 0, "paid_bytes": latest.cumulative_bytes if latest else 0,
                "session_paid_bytes": max(0, (latest.cumulative_bytes if latest else 0) - session.meter.base_bytes),
                "spent": latest.cumulative_amount if latest else 0, "overclaim_bytes": session.meter.overclaim_bytes,
                "refusals": dict(session.meter.refusals)}

    def status(self) -> dict:
        """What `warren status` shows."""
        with self.lock:
            session = self.session
            if session is None:
                return {"connected": False, "history": self.history}
            stats = self.tunnel.peer(session.route.candidate.node.wg_public_key)
            last = stats.last_handshake if stats else None
            rx, tx = self.tunnel.peer_counters(session.route.candidate.node.wg_public_key) or (session.rx0, session.tx0)
            channel = session.route.channel
            out = self._session_summary(session)
            out.update({"connected": True, "tunnel_v4": session.terms.address_v4,
                        "rx_bytes": rx - session.rx0, "tx_bytes": tx - session.tx0,  # this session, from / to the node
                        "tunnel_v6": session.terms.address_v6, "deposit": channel.deposit,
                        "channel_balance": channel.deposit - out["spent"],
                        "since_handshake_s": round(time.time() - last, 1) if last else None,
                        "latency_ms": (round(session.probe.last_rtt_s * 1000, 1)
                                       if session.probe.last_rtt_s is not None else None),
                        "standby": self.standby.candidate.node.node_id.hex() if self.standby else None,
                        "failovers": self.failovers, "history": self.history})
            return out


def _fmt(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_v6(address: str) -> bool:
    return isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address)
