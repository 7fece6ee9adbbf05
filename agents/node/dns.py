"""The node's resolver inside the tunnel: only allowed names resolve, and their answers open the exit.

:class:`ResolverCore` is sans-I/O: a client's query bytes (plus who sent it and the time) become a
reply to send back or a query to forward upstream; the upstream's answer becomes the client's reply
plus the (address, TTL) pairs to hand to :meth:`agents.node.exit.ExitTable.allow_resolved`.
:class:`NodeResolver` runs it on UDP and TCP sockets bound to the node's tunnel addresses.

Choices, and why:

* A name the policy does not allow gets **REFUSED**, not NXDOMAIN: the name may well exist, and
  REFUSED says "this server will not answer you" (RFC 1035 4.1.1), which is what happened; clients do
  not cache it as a negative answer (RFC 2308 caches NXDOMAIN for the SOA's minimum), so a name
  allowed later resolves at once; and the user's tools show a policy refusal rather than a typo.
* Queries larger than :data:`MAX_QUERY_BYTES`, that do not parse, that are answers, or that carry
  other than one question are dropped without reply (nothing to say to a malformed peer, and no
  amplification); they are counted by reason.
* Upstream answers must carry the id we chose (random per forward, never the client's) and echo the
  question, else they are dropped: an off-path spoofer must guess both, as for any stub resolver.
* TTLs handed to clients are capped at :data:`agents.node.exit.MAX_RESOLVED_TTL_S`, so a client never
  caches an address longer than the exit keeps it allowed.

TCP queries are forwarded over the same UDP upstream socket (an answer too large for UDP reaches
the TCP client truncated; queries over TCP are rare inside a tunnel whose MTU fits ordinary answers).

Why not dnslib's own ``DNSServer``: it starts an unbounded thread per request and reads TCP with no
timeout, so one slow client could pin the node's threads. dnslib still does all parsing and packing.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import ipaddress
import logging
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from dnslib import CLASS, OPCODE, QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord

from agents.node.exit import MAX_RESOLVED_TTL_S
from agents.node.policy import ExitPolicy, domain_allowed, normalize_name

__all__ = [
    "Answer",
    "Drop",
    "Forward",
    "MAX_QUERY_BYTES",
    "NodeResolver",
    "Reply",
    "ResolverCore",
    "ResolverError",
    "system_upstream",
]

log = logging.getLogger(__name__)

#: A query is one question (a name of at most 255 octets) plus header and an EDNS OPT record: far
#: below RFC 1035's classic 512-octet UDP limit, so anything larger is not a query we serve.
MAX_QUERY_BYTES = 512
#: Forwards waiting for the upstream at once; more get SERVFAIL (bounds memory under a query flood).
MAX_PENDING = 1024
#: Seconds the upstream has to answer before the client gets SERVFAIL (stub resolvers retry after
#: 5 s by default, so the client hears from us before it gives up on us).
UPSTREAM_TIMEOUT_S = 3.0
#: TCP: seconds a client may take to send its query, and connections served at once.
TCP_IDLE_S = 5.0
MAX_TCP_CONNECTIONS = 32
#: The largest DNS message (TCP length prefix is 16 bits).
MAX_MESSAGE = 65_535
#: How often the UDP loop wakes to expire forwards (seconds).
TICK_S = 0.25
#: Seconds :meth:`NodeResolver.close` waits for each thread.
JOIN_S = 3.0
_OPT = 41  # EDNS OPT pseudo-record: its "TTL" field holds flags, never capped


class ResolverError(RuntimeError):
    """The resolver cannot start (no upstream, an address it cannot bind)."""


@dataclasses.dataclass(frozen=True)
class Reply:
    """Send ``data`` back to the client that asked (``reply_to`` is the caller's handle)."""

    data: bytes
    reply_to: Any


@dataclasses.dataclass(frozen=True)
class Forward:
    """Send ``data`` to the upstream resolver (the query with an id of ours)."""

    data: bytes
    upstream_id: int


@dataclasses.dataclass(frozen=True)
class Drop:
    """Nothing to send; ``reason`` says why (counted in :attr:`ResolverCore.drops`)."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Answer:
    """The upstream answered: send ``data`` to ``reply_to``; allow ``resolved`` in the exit."""

    data: bytes
    reply_to: Any
    client: str
    resolved: list[tuple[str, int]]


@dataclasses.dataclass
class _Pending:
    client_id: int
    client: str
    reply_to: Any
    qname: str
    qtype: int
    qclass: int
    rd: int
    deadline: float


def _error_reply(request_id: int, question: DNSQuestion | None, rd: int, rcode: int) -> bytes:
    header = DNSHeader(id=request_id, qr=1, rd=rd, ra=1, rcode=rcode)
    return DNSRecord(header, q=question).pack() if question else DNSRecord(header).pack()


class ResolverCore:
    """The policy-checking forwarder (sans-I/O; not thread-safe: the runtime holds a lock).

    Args:
        policy_getter: returns the exit policy in force (read at every query and answer).
        max_pending: see :data:`MAX_PENDING`.
        timeout_s: see :data:`UPSTREAM_TIMEOUT_S`.
        max_ttl: TTLs in replies are capped at this (seconds).

    Attributes:
        refused: per client address, queries refused by policy.
        drops: per reason, messages dropped without reply.
    """

    def __init__(self, policy_getter: Callable[[], ExitPolicy], *, max_pending: int = MAX_PENDING,
                 timeout_s: float = UPSTREAM_TIMEOUT_S, max_ttl: int = MAX_RESOLVED_TTL_S) -> None:
        self.policy_getter = policy_getter
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.max_ttl = max_ttl
        self.pending: dict[int, _Pending] = {}
        self.refused: collections.Counter[str] = collections.Counter()
        self.drops: collections.Counter[str] = collections.Counter()

    def _drop(self, reason: str) -> Drop:
        self.drops[reason] += 1
        return Drop(reason)

    def on_query(self, data: bytes, client: str, now: float, *, reply_to: Any = None,
                 admitted: bool = True) -> Reply | Forward | Drop:
        """One query from ``client`` (its tunnel address) at time ``now`` (seconds)."""
        if len(data) > MAX_QUERY_BYTES:
            return self._drop("oversized")
        if not admitted:
            return self._drop("not_admitted")
        try:
            request = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - dnslib raises DNSError, struct.error, IndexError, ...
            return self._drop("malformed")
        header = request.header
        if header.qr or header.opcode != OPCODE.QUERY or len(request.questions) != 1:
            return self._drop("not_a_query")
        question = request.questions[0]
        name = normalize_name(str(question.qname))
        if not domain_allowed(self.policy_getter(), name):
            self.refused[client] += 1
            return Reply(_error_reply(header.id, question, header.rd, RCODE.REFUSED), reply_to)
        if len(self.pending) >= self.max_pending:
            self.drops["servfail_busy"] += 1
            return Reply(_error_reply(header.id, question, header.rd, RCODE.SERVFAIL), reply_to)
        upstream_id = secrets.randbelow(1 << 16)
        while upstream_id in self.pending:
            upstream_id = secrets.randbelow(1 << 16)
        self.pending[upstream_id] = _Pending(header.id, client, reply_to, name, question.qtype,
                                             question.qclass, header.rd, now + self.timeout_s)
        return Forward(struct.pack("!H", upstream_id) + data[2:], upstream_id)

    def on_upstream(self, data: bytes, now: float) -> Answer | Drop:
        """The upstream's answer to one of our forwards."""
        if len(data) > MAX_MESSAGE:
            return self._drop("upstream_oversized")
        try:
            reply = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - see on_query
            return self._drop("upstream_malformed")
        pending = self.pending.get(reply.header.id)
        if pending is None:
            return self._drop("upstream_unexpected")
        questions = reply.questions
        if (not reply.header.qr or len(questions) != 1
                or normalize_name(str(questions[0].qname)) != pending.qname
                or questions[0].qtype != pending.qtype or questions[0].qclass != pending.qclass):
            return self._drop("upstream_mismatched")
        del self.pending[reply.header.id]
        capped = False
        for rr in (*reply.rr, *reply.auth, *reply.ar):
            if rr.rtype != _OPT and rr.ttl > self.max_ttl:
                rr.ttl = self.max_ttl
                capped = True
        resolved: list[tuple[str, int]] = []
        policy = self.policy_getter()
        if (policy.allow_domains is not None and domain_allowed(policy, pending.qname)
                and reply.header.rcode == RCODE.NOERROR):
            resolved = self._addresses(reply, pending.qname)
        body = reply.pack() if capped else data
        return Answer(struct.pack("!H", pending.client_id) + body[2:], pending.reply_to, pending.client,
                      resolved)

    @staticmethod
    def _addresses(reply: DNSRecord, qname: str) -> list[tuple[str, int]]:
        """A/AAAA records of ``qname`` or of the names its CNAME chain leads to, with their TTLs."""
        names = {qname}
        out = []
        for rr in reply.rr:
            owner = normalize_name(str(rr.rname))
            if owner not in names or rr.rclass != CLASS.IN:
                continue
            if rr.rtype == QTYPE.CNAME:
                names.add(normalize_name(str(rr.rdata.label)))
            elif rr.rtype in (QTYPE.A, QTYPE.AAAA):
                out.append((str(ipaddress.ip_address(str(rr.rdata))), int(rr.ttl)))
        return out

    def expire(self, now: float) -> list[Reply]:
        """SERVFAIL to every client whose forward has waited past its deadline."""
        out = []
        for upstream_id, pending in list(self.pending.items()):
            if pending.deadline <= now:
                del self.pending[upstream_id]
                self.drops["upstream_timeout"] += 1
                question = DNSQuestion(pending.qname, pending.qtype, pending.qclass)
                out.append(Reply(_error_reply(pending.client_id, question, pending.rd, RCODE.SERVFAIL),
                                 pending.reply_to))
        return out


def system_upstream(path: str = "/etc/resolv.conf") -> tuple[str, int]:
    """The first ``nameserver`` of ``path`` as ``(address, 53)``.

    Raises:
        ResolverError: the file is missing or names no nameserver.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    return str(ipaddress.ip_address(parts[1].split("%")[0])), 53
    except OSError as exc:
        raise ResolverError(f"cannot read {path}: {exc}") from None
    raise ResolverError(f"{path} names no nameserver: give the resolver an upstream")


#: Linux socket options (not all in Python 3.11's socket module): bind before the address is up.
_IP_FREEBIND = 15
_IPV6_FREEBIND = 78


def _bound(address: str, port: int, kind: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(MAX_TCP_CONNECTIONS)
            sock.settimeout(TICK_S)  # accept() wakes up to notice close()
    except OSError as exc:
        sock.close()
        raise ResolverError(f"cannot listen on [{address}]:{port}: {exc}") from None
    return sock


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class NodeResolver:
    """The resolver on the node's tunnel addresses (UDP, and TCP with bounded connections).

    Args:
        listen_addresses: the node's tunnel addresses (each gets a UDP and a TCP socket).
        port: DNS port (53).
        upstream: ``(address, port)`` to forward to; None = :func:`system_upstream`.
        policy_getter: returns the exit policy in force.
        is_admitted: whether a client address may use the resolver (admitted and paid up).
        on_resolved: receives [(address, ttl)] answered for allowed domains (before the client
            gets its reply, so the exit already lets the address through when the client connects).
        tcp: also serve DNS over TCP.
    """

    def __init__(self, listen_addresses: Sequence[str], port: int = 53, *,
                 upstream: tuple[str, int] | None = None,
                 policy_getter: Callable[[], ExitPolicy],
                 is_admitted: Callable[[str], bool],
                 on_resolved: Callable[[list[tuple[str, int]]], None],
                 tcp: bool = True) -> None:
        self.listen_addresses = [str(ipaddress.ip_address(a)) for a in listen_addresses]
        self.port = port
        self.upstream = (str(ipaddress.ip_address(upstream[0])), int(upstream[1])) if upstream else None
        self.is_admitted = is_admitted
        self.on_resolved = on_resolved
        self.tcp = tcp
        self.core = ResolverCore(policy_getter)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._udp: list[socket.socket] = []
        self._tcp: list[socket.socket] = []
        self._upstream_sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._tcp_slots = threading.BoundedSemaphore(MAX_TCP_CONNECTIONS)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> "NodeResolver":
        """Bind every socket (in the caller's network namespace) and start serving.

        Raises:
            ResolverError: no upstream could be found, or an address could not be bound.
        """
        if self.upstream is None:
            self.upstream = system_upstream()
        try:
            for address in self.listen_addresses:
                self._udp.append(_bound(address, self.port, socket.SOCK_DGRAM))
                if self.tcp:
                    self._tcp.append(_bound(address, self.port, socket.SOCK_STREAM))
            family = socket.AF_INET6 if ipaddress.ip_address(self.upstream[0]).version == 6 else socket.AF_INET
            self._upstream_sock = socket.socket(family, socket.SOCK_DGRAM)
            # connect(): the kernel then delivers only datagrams from the upstream's address and port.
            self._upstream_sock.connect(self.upstream)
        except Exception:
            self.close()
            raise
        self._spawn(self._udp_loop, "dns-udp")
        for listener in self._tcp:
            self._spawn(self._accept_loop, "dns-tcp", listener)
        return self

    def _spawn(self, target, name: str, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        """Stop serving and close every socket (idempotent)."""
        self._stop.set()
        for sock in (*self._udp, *self._tcp, *([self._upstream_sock] if self._upstream_sock else [])):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(JOIN_S)
        self._threads.clear()

    def __enter__(self) -> "NodeResolver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- UDP --------------------------------------------------------------------------------------

    def _resolved(self, answer: Answer) -> None:
        if answer.resolved:
            try:
                self.on_resolved(answer.resolved)
            except Exception as exc:  # noqa: BLE001 - the client still gets its answer
                log.warning("could not allow resolved addresses %s: %s", answer.resolved, exc)

    def _admitted(self, client: str) -> bool:
        try:
            return bool(self.is_admitted(client))
        except Exception as exc:  # noqa: BLE001 - fail closed
            log.warning("is_admitted(%s) failed: %s", client, exc)
            return False

    def _udp_loop(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            for sock in self._udp:
                selector.register(sock, selectors.EVENT_READ, "client")
            selector.register(self._upstream_sock, selectors.EVENT_READ, "upstream")
            while not self._stop.is_set():
                for key, _ in selector.select(TICK_S):
                    try:
                        data, peer = key.fileobj.recvfrom(MAX_MESSAGE)
                    except OSError:
                        if self._stop.is_set():
                            return
                        continue
                    if peer is None:  # a socket shut down by close()
                        if self._stop.is_set():
                            return
                        continue
                    try:
                        if key.data == "client":
                            self._on_udp_query(key.fileobj, data, peer)
                        else:
                            self._on_upstream(data)
                    except Exception:  # noqa: BLE001 - one bad datagram must not stop the resolver
                        log.exception("DNS datagram from %s not handled", peer)
                with self._lock:
                    expired = self.core.expire(time.monotonic())
                for reply in expired:
                    self._send(reply.reply_to, reply.data)
        except (OSError, ValueError):
            if not self._stop.is_set():
                log.exception("DNS UDP loop failed")
        finally:
            selector.close()

    def _send(self, reply_to: Any, data: bytes) -> None:
        if isinstance(reply_to, _TcpWaiter):
            reply_to.set(data)
            return
        sock, peer = reply_to
        with contextlib.suppress(OSError):
            sock.sendto(data, peer)

    def _on_udp_query(self, sock: socket.socket, data: bytes, peer) -> None:
        client = peer[0].split("%")[0]
        admitted = self._admitted(client)
        with self._lock:
            action = self.core.on_query(data, client, time.monotonic(), reply_to=(sock, peer),
                                        admitted=admitted)
        self._act(action)

    def _act(self, action) -> None:
        if isinstance(action, Reply):
            self._send(action.reply_to, action.data)
        elif isinstance(action, Forward):
            try:
                self._upstream_sock.send(action.data)
            except OSError as exc:
                log.warning("upstream %s unreachable: %s", self.upstream, exc)

    def _on_upstream(self, data: bytes) -> None:
        with self._lock:
            answer = self.core.on_upstream(data, time.monotonic())
        if isinstance(answer, Answer):
            self._resolved(answer)
            self._send(answer.reply_to, answer.data)

    # -- TCP --------------------------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if not self._tcp_slots.acquire(blocking=False):
                conn.close()  # full: the client retries later
                continue
            threading.Thread(target=self._serve_tcp, args=(conn, peer), name="dns-tcp-conn",
                             daemon=True).start()

    def _serve_tcp(self, conn: socket.socket, peer) -> None:
        client = peer[0].split("%")[0]
        try:
            conn.settimeout(TCP_IDLE_S)
            while not self._stop.is_set():
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                (length,) = struct.unpack("!H", head)
                if length > MAX_QUERY_BYTES:
                    with self._lock:
                        self.core.drops["oversized"] += 1
                    return
                data = _recv_exact(conn, length)
                if data is None:
                    return
                waiter = _TcpWaiter()
                admitted = self._admitted(client)
                with self._lock:
                    action = self.core.on_query(data, client, time.monotonic(), reply_to=waiter,
                                                admitted=admitted)
                if isinstance(action, Drop):
                    return
                self._act(action)
                reply = waiter.wait(UPSTREAM_TIMEOUT_S + 2 * TICK_S)
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self._tcp_slots.release()


class _TcpWaiter:
    """Where the UDP loop leaves the answer to a query that came over TCP."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._data: bytes | None = None

    def set(self, data: bytes) -> None:
        self._data = data
        self._event.set()

    def wait(self, timeout: float) -> bytes | None:
        self._event.wait(timeout)
        return self._data
