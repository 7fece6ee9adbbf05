"""`warren demo`: a small Warren network doing its real job, end to end, on one machine.

What runs, all of it real (no mocks):

1. A local anvil chain (ape-foundry, on a random port) and Warren's contracts, deployed and wired by
   :func:`agents.chain.deploy.deploy_all`.
2. A node operator makes a WireGuard key and registers the node (node_id = keccak256(key), region,
   price per GiB, stake); the token's owner mints tokens to the operator and the client.
3. The client reads the node's key and price from the registry and opens a payment channel to it
   with a fresh payment-signer key.
4. Two hosts in network namespaces (:mod:`agents.netlab`) each run Warren's own Python WireGuard
   tunnel as its own process (``warren tunnel up``); the node admits the client's tunnel key only
   after checking the channel on chain. The client downloads random data from the node through the
   tunnel over TCP and checks each piece's SHA-256.
5. While data flows, the client's payer thread reads its tunnel's per-peer transfer counters
   through the UAPI socket and, every PAY_EVERY_BYTES, signs a cumulative EIP-712 receipt for them
   at the on-chain price and sends it to the node inside the tunnel. The node checks each one with
   :class:`agents.metering.ReceiptLedger` against its own counters (also read through UAPI), stores
   it with fsync, then acknowledges it; it refuses forged, replayed and under-paying receipts, pauses
   sending while too much is unpaid and cuts off a client that stops paying, settles its latest
   receipt on chain mid-way, and finally signs a cooperative close that pays it the rest, pays the
   protocol fee to the treasury and refunds the client.
6. Anonymous payment: the client's tunnel ends; it deposits a voucher into the shielded pool that
   deploy_all deployed (the checked-in depth-20 verifier, whose proving key is remade from its public
   seed and cached in keys/voucher-depth20), proves membership with :mod:`agents.prover`, binding
   the node, a fresh payment signer and a relayer fee, and hands the redemption to the node. The
   node checks it (its own node id, the proof) and submits it as relayer; the pool opens a channel
   it holds itself (:class:`agents.chain.bindings.VoucherChannel`). Over a new tunnel with a fresh
   WireGuard key, the client pays that channel with receipts signed by the fresh signer for the
   pool's EIP-712 domain; the node stores them, settles on the pool, signs the cooperative close
   and submits it, which refunds the signer; it withdraws its relayer fee. Checked: the depositor's
   address is in no redemption or channel transaction or event.
7. Every step is logged (bytes, token amounts, gas per transaction) and checked; the exit code is 0
   only if every check passed. The last stdout line is ``summary: {json}``.

The node and client agent roles run as two objects in this process (the node agent and client agent
of the issues to come will replace them); they share nothing but the chain and the tunnel: sockets
are created inside their own namespaces, and the node identifies the paying channel by the tunnel
source address that WireGuard's cryptokey routing authenticates.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
import warnings
from decimal import Decimal
from pathlib import Path

from eth_account import Account
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agents.chain import eip712
from agents.chain.bindings import ChannelStatus, VoucherChannel, VoucherChannels, WarrenContracts, node_id_of
from agents.chain.deploy import DeployParameters, deploy_all, voucher_pool_name
from agents.chain.eip712 import Receipt
from agents.metering import (
    ChannelTerms,
    CooperativeClose,
    FrameKind,
    FrameReader,
    ReceiptLedger,
    ReceiptSigner,
    ReceiptStore,
    RemoteProtocolError,
    decode_receipt,
    encode_frame,
    encode_receipt,
    price_of,
)
from agents.netlab import Lab, is_root
from agents.netlab.nsenter import NETNS_DIR
from agents.netlab.wireguard import spawn_python_tunnel
from agents.wireguard.backend import TunnelBackend
from agents.wireguard.config import InterfaceConfig, PeerConfig, encode_key, generate_private_key
from agents.wireguard.config import public_key as wg_public_key
from agents.wireguard.uapi import UapiBackend

__all__ = ["DemoFailed", "add_commands", "run_demo"]

#: Token wei per token (the Warren token has 18 decimals).
TOKEN = 10**18
#: The node's asking price, token wei per GiB: high enough that a few MiB cost visible amounts.
PRICE_PER_GIB = 20 * TOKEN
#: The node's stake: node_registry's minimum as deploy_all sets it (100 tokens).
NODE_STAKE = 100 * TOKEN
#: The client's channel deposit, token wei.
DEPOSIT = 5 * TOKEN
#: Tokens the owner mints to the operator and the client.
MINT = 1_000 * TOKEN
#: Protocol fee, basis points (1 %: deploy_all's default; the fee goes to the treasury at close).
FEE_BPS = 100
#: The agreed credit: a receipt may lag (or lead) the node's own counter by at most this many bytes.
CREDIT_BYTES = 2 << 20
#: The node pauses sending while more than this is unpaid (half the credit, so that a receipt signed
#: while data is in flight still lands within the credit), and cuts the client off if no payment
#: comes within PAYMENT_WAIT_S.
SERVE_AHEAD_BYTES = CREDIT_BYTES // 2
PAYMENT_WAIT_S = 2.0
#: The node reads its counter (UAPI) every this many bytes sent; the client pays every this many
#: bytes its own counter grew. Both far below SERVE_AHEAD_BYTES, so a paying client never waits long.
CHECK_EVERY_BYTES = 256 * 1024
PAY_EVERY_BYTES = 256 * 1024
#: How often the client's payer looks at its counter (seconds).
PAY_POLL_S = 0.01
#: Bytes per data frame of the node's data service.
PIECE_BYTES = 64 * 1024
#: The data service's socket send buffer. Its counter only sees bytes once they leave through the
#: tunnel, so whatever sits in the socket buffer is served ahead of the gate: keep it small (Linux
#: doubles the value and would otherwise autotune it to megabytes).
DATA_SNDBUF = 128 * 1024
#: Data rounds (each: download, then pay) and bytes per round; --quick keeps it small.
ROUNDS, ROUND_BYTES = 6, 4 << 20
QUICK_ROUNDS, QUICK_ROUND_BYTES = 4, 1 << 20
#: The voucher pool's denomination (deploy_all deploys one pool per amount) and the relayer fee the
#: client offers the node for submitting its redemption, token wei.
VOUCHER_DENOMINATION = 2 * TOKEN
RELAYER_FEE = TOKEN // 100
#: The pool's circuit depth: deploy_all's pools use the checked-in depth-20 verifier, whose proving
#: key is remade from a public seed (zk/vyper_verifier.py), so the demo proves at depth 20.
VOUCHER_DEPTH = 20
#: Region the node advertises (ISO 3166-1 alpha-2).
REGION = "NL"
#: Tunnel addresses and listen ports (WireGuard's conventional 51820 for the node).
NODE_TUNNEL, CLIENT_TUNNEL, TUNNEL_PREFIX = "10.77.0.1", "10.77.0.2", 24
NODE_PORT, CLIENT_PORT = 51820, 51821
#: Services the node offers inside the tunnel: bulk data, and the metering (receipt) port.
DATA_PORT, METER_PORT = 8080, 7700
#: Socket timeout of every exchange (seconds), so a broken tunnel cannot hang the demo.
IO_TIMEOUT_S = 30.0
#: Largest data request the node serves at once (bytes).
MAX_REQUEST = 1 << 30
#: Data service framing: a 4-byte length before each piece; these two lengths end a reply. After
#: _END comes the SHA-256 of everything sent; after _CUT_OFF the unpaid byte count (8 bytes), then
#: the SHA-256 of what was sent before the cut.
_END, _CUT_OFF = 0, 0xFFFFFFFF


class DemoFailed(Exception):
    """A step of the demo could not be carried out (as opposed to a check that came out false)."""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``warren demo``."""
    parser = subparsers.add_parser(
        "demo", help="run a small Warren network end to end (local chain, two netns hosts; root)",
        description="Start a local anvil chain, deploy Warren, register a node, open a channel, move "
                    "data through Warren's WireGuard tunnel between two network namespaces, pay for "
                    "it with signed receipts, settle and close. Needs root (network namespaces).")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROUNDS} rounds of {QUICK_ROUND_BYTES >> 20} MiB instead of "
                             f"{ROUNDS} of {ROUND_BYTES >> 20} MiB")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the node's receipt store and tunnel configs here (default: a "
                             "temporary folder, removed at the end)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if not is_root():
        print("warren demo: needs root: it builds network namespaces and TUN devices for its two "
              "hosts (run `sudo make demo`, or `sudo .venv/bin/warren demo`)", file=sys.stderr)
        return 2
    rounds, size = (QUICK_ROUNDS, QUICK_ROUND_BYTES) if args.quick else (ROUNDS, ROUND_BYTES)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="warren-demo-")))
        workdir.mkdir(parents=True, exist_ok=True)
        return run_demo(workdir, rounds=rounds, round_bytes=size)


# -- small helpers ---------------------------------------------------------------------------------

def tokens(wei: int, places: int = 6) -> str:
    """Token wei as tokens rounded to ``places`` decimals for reading, e.g. ``0.042932 WRN``.

    The JSON summary keeps exact token wei.
    """
    text = format(round(Decimal(wei) / TOKEN, places), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} WRN"


def mib(nbytes: int) -> str:
    """Bytes as MiB with two decimals."""
    return f"{nbytes / (1 << 20):.2f} MiB"


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 16))
        if not chunk:
            raise ConnectionError(f"connection closed with {left} of {size} bytes missing")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _project_root() -> Path:
    """The repository holding ape-config.yaml and contracts/ (this package is installed editable)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "ape-config.yaml").exists():
        raise DemoFailed(f"no ape-config.yaml in {root}: run the demo from a checkout of Warren")
    return root


@dataclasses.dataclass
class Check:
    """One verified fact of the run."""

    name: str
    ok: bool
    detail: str = ""


class Log:
    """The demo's readable progress log (rich) and its record of checks and gas."""

    def __init__(self) -> None:
        self.console = Console(highlight=False, soft_wrap=True)
        self.checks: list[Check] = []
        self.gas: dict[str, int] = {}
        self._step = 0

    def step(self, title: str) -> None:
        """Start a numbered step."""
        self._step += 1
        self.console.rule(f"[bold cyan]{self._step}. {escape(title)}", align="left")

    def say(self, text: str) -> None:
        """One line of narration (plain text: brackets are not markup)."""
        self.console.print(f"  {escape(text)}")

    def tx(self, label: str, receipt) -> None:
        """Record a transaction's gas and print it."""
        gas = int(receipt.gas_used)
        key = label if label not in self.gas else f"{label} #{sum(k.startswith(label) for k in self.gas) + 1}"
        self.gas[key] = gas
        self.console.print(f"  [dim]tx[/dim] {escape(label):<36} gas [bold]{gas:>9,}[/bold]")

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record and print one verified fact; returns ``ok``."""
        self.checks.append(Check(name, bool(ok), detail))
        mark = "[green]ok[/green]  " if ok else "[red]FAIL[/red]"
        self.console.print(f"  {mark} {escape(name)}" + (f" [dim]({escape(detail)})[/dim]" if detail else ""))
        return bool(ok)


# -- the node --------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Session:
    """One paying client of the node.

    Attributes:
        channel_id: the channel that pays.
        client_key: the client's tunnel key.
        ledger: the node's receipt ledger for the channel.
        voucher: the channel's terms when it is a voucher pool's channel (None: payment_channels').
    """

    channel_id: bytes
    client_key: bytes
    ledger: ReceiptLedger
    voucher: VoucherChannel | None = None


class DemoNode:
    """The node operator's agent: serves data and metering inside the tunnel, settles on chain.

    Args:
        lab_host: the node's namespace.
        backend: its tunnel, driven through UAPI (a TunnelBackend).
        operator: the operator's ape account (registers, settles, signs cooperative closes).
        chain: handles to the deployed contracts and chain id.
        store_dir: folder of the per-channel receipt stores.
        pool: the voucher pool whose channels it also accepts (None: payment_channels' only).
    """

    def __init__(self, lab_host, backend: TunnelBackend, operator, chain: WarrenContracts, node_id: bytes,
                 store_dir: Path, pool: VoucherChannels | None = None) -> None:
        self.host = lab_host
        self.pool = pool
        self.backend = backend
        self.operator = operator
        self.chain = chain
        self.node_id = node_id
        self.store_dir = store_dir
        self.sessions: dict[str, _Session] = {}
        self.refusals: list[str] = []
        self.cut_offs = 0
        self.pauses = 0
        self.accepted = 0
        self._lock = threading.Lock()
        self._paid = threading.Condition(self._lock)  # notified when a receipt is accepted
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listeners: list[socket.socket] = []

    # chain-facing (main thread)

    def admit(self, channel_id: bytes, client_key: bytes, signer: str) -> _Session:
        """Check a client's channel on chain, then let its tunnel key in and open its ledger.

        Raises:
            DemoFailed: the channel does not pay this node, is not open, or has another signer.
        """
        channel = self.chain.channel(channel_id)
        if channel.node_id != self.node_id or channel.status is not ChannelStatus.OPEN:
            raise DemoFailed(f"channel {channel_id.hex()} is not an open channel to this node")
        if self.chain.channel_id_of(channel.node_id, channel.client, signer) != channel_id:
            raise DemoFailed("the announced payment signer is not the channel's")
        terms = ChannelTerms(channel_id=channel_id, signer=signer, deposit=channel.deposit,
                             price_per_gib=self.chain.node(self.node_id).price_per_gib,
                             credit_bytes=CREDIT_BYTES, chain_id=self.chain.chain_id,
                             verifying_contract=self.chain.channels.address)
        return self._open_session(_Session(channel_id, client_key, self._ledger(terms)))

    def admit_voucher(self, channel: VoucherChannel, client_key: bytes) -> _Session:
        """As :meth:`admit`, for a channel a voucher redemption opened in the node's pool.

        The channel's terms come from the redemption the node submitted (or the client's copy of
        them); the pool checks them against the hash it stores. Receipts are for the pool's domain.

        Raises:
            DemoFailed: the channel is not an open channel of the pool to this node.
        """
        state = self.pool.channel(channel)  # raises VoucherChannelError on terms the pool does not hold
        if state.node_id != self.node_id or state.status is not ChannelStatus.OPEN:
            raise DemoFailed(f"voucher channel {channel.channel_id.hex()} is not an open channel to this node")
        terms = ChannelTerms(channel_id=channel.channel_id, signer=channel.signer, deposit=channel.deposit,
                             price_per_gib=self.chain.node(self.node_id).price_per_gib,
                             credit_bytes=CREDIT_BYTES, chain_id=self.pool.chain_id,
                             verifying_contract=self.pool.address)
        return self._open_session(_Session(channel.channel_id, client_key, self._ledger(terms), channel))

    def _ledger(self, terms: ChannelTerms) -> ReceiptLedger:
        return ReceiptLedger(terms, ReceiptStore(self.store_dir / f"{terms.channel_id.hex()}.jsonl"))

    def _open_session(self, session: _Session) -> _Session:
        with self._lock:
            self.sessions[CLIENT_TUNNEL] = session
        self.backend.add_peer(PeerConfig(public_key=session.client_key, allowed_ips=[f"{CLIENT_TUNNEL}/32"]))
        return session

    def settle(self, session: _Session, log: Log):
        """Settle the latest accepted receipt if it pays more than the chain has settled.

        A payment_channels channel and a voucher channel settle alike: only the contract differs.

        Returns:
            (transaction receipt, the AcceptedReceipt settled), or None if there was nothing to settle.
        """
        if session.voucher is None:
            settled = self.chain.channel(session.channel_id).settled
        else:
            settled = self.pool.channel(session.voucher).settled
        with self._lock:
            latest = session.ledger.settleable(settled)
        if latest is None:
            return None
        r = latest.receipt
        if session.voucher is None:
            tx = self.chain.channels.settle(r.channel_id, r.cumulative_bytes, r.cumulative_amount,
                                            latest.signature, sender=self.operator)
            log.tx("payment_channels.settle", tx)
        else:
            tx = self.pool.settle(session.voucher, r, latest.signature, sender=self.operator)
            log.tx("voucher_pool.settle", tx)
        return tx, latest

    # tunnel-facing (server threads)

    def observed_bytes(self, session: _Session) -> int:
        """The node's own counter for this client: rx + tx of its peer, read through UAPI."""
        stats = self.backend.peer(session.client_key)
        return 0 if stats is None else stats.rx_bytes + stats.tx_bytes

    def start(self) -> None:
        """Open the data and metering listeners inside the node's namespace and serve them."""
        for port, handler in ((DATA_PORT, self._serve_data), (METER_PORT, self._serve_meter)):
            with self.host.enter():
                listener = socket.create_server((NODE_TUNNEL, port), reuse_port=False)
            listener.settimeout(0.2)
            self._listeners.append(listener)
            thread = threading.Thread(target=self._accept_loop, args=(listener, handler),
                                      name=f"node-{port}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop serving: end the server threads, close the listeners."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for listener in self._listeners:
            listener.close()

    def _accept_loop(self, listener: socket.socket, handler) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(IO_TIMEOUT_S)
                with self._lock:
                    session = self.sessions.get(peer[0])
                if session is None:  # not a paying client's tunnel address
                    continue
                with contextlib.suppress(OSError, ConnectionError):
                    handler(conn, session)

    def _await_payment(self, session: _Session) -> int:
        """Wait (bounded) until the client's unpaid bytes are back under SERVE_AHEAD_BYTES.

        Returns:
            0 if the client may be served, else the unpaid bytes it failed to pay for in time.
        """
        deadline = time.monotonic() + PAYMENT_WAIT_S
        paused = False
        while True:
            observed = self.observed_bytes(session)
            with self._lock:
                unpaid = session.ledger.unpaid_bytes(observed)
            if unpaid <= SERVE_AHEAD_BYTES:
                return 0
            if not paused:
                paused = True
                self.pauses += 1
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.is_set():
                return unpaid
            with self._paid:
                self._paid.wait(min(left, 0.05))

    def _serve_data(self, conn: socket.socket, session: _Session) -> None:
        """Send random bytes on request, metered: pause while unpaid, cut off if payment stops."""
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, DATA_SNDBUF)
        while not self._stop.is_set():
            try:
                size = min(int.from_bytes(_recv_exact(conn, 8), "big"), MAX_REQUEST)
            except ConnectionError:
                return
            digest, sent, since_check = hashlib.sha256(), 0, CHECK_EVERY_BYTES
            while sent < size:
                if since_check >= CHECK_EVERY_BYTES:
                    since_check = 0
                    unpaid = self._await_payment(session)
                    if unpaid:
                        self.cut_offs += 1
                        conn.sendall(_CUT_OFF.to_bytes(4, "big") + unpaid.to_bytes(8, "big")
                                     + digest.digest())
                        break
                piece = os.urandom(min(size - sent, PIECE_BYTES))
                digest.update(piece)
                conn.sendall(len(piece).to_bytes(4, "big") + piece)
                sent += len(piece)
                since_check += len(piece)
            else:
                conn.sendall(_END.to_bytes(4, "big") + digest.digest())

    def _serve_meter(self, conn: socket.socket, session: _Session) -> None:
        """Receive receipts (and the close request): verify, store, then acknowledge or refuse."""
        reader = FrameReader()
        while not self._stop.is_set():
            data = conn.recv(4096)
            if not data:
                return
            try:
                frames = reader.feed(data)
                for frame in frames:
                    if frame.kind not in (FrameKind.RECEIPT, FrameKind.CLOSE_REQUEST):
                        raise RemoteProtocolError("unexpected_kind", frame.kind.name)
                    receipt, signature = decode_receipt(frame.body)
                    observed = self.observed_bytes(session)
                    with self._lock:
                        latest = session.ledger.latest()
                        if (frame.kind is FrameKind.CLOSE_REQUEST and latest is not None
                                and latest.receipt == receipt and latest.signature == signature):
                            decision = None  # closing at the latest receipt: nothing new to store
                        else:
                            decision = session.ledger.accept(receipt, signature, observed)
                            if decision.accepted:
                                self.accepted += 1
                                self._paid.notify_all()
                    if decision is not None and not decision.accepted:
                        self.refusals.append(decision.reason.value)
                        conn.sendall(encode_frame(FrameKind.REFUSED, decision.reason.value.encode()))
                    elif frame.kind is FrameKind.CLOSE_REQUEST:
                        consent = CooperativeClose(*dataclasses.astuple(receipt))
                        terms = session.ledger.terms  # the channel's own domain: payment_channels or pool
                        node_signature = eip712.sign(consent, self.operator.private_key,
                                                     terms.chain_id, terms.verifying_contract)
                        conn.sendall(encode_frame(FrameKind.CLOSE_SIGNATURE, node_signature))
                    else:
                        conn.sendall(encode_frame(FrameKind.ACK))
            except RemoteProtocolError:
                return  # malformed stream: drop the connection


# -- the client ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Download:
    """What one data request brought."""

    received: int
    digest_ok: bool
    cut_off: bool = False
    unpaid: int = 0


class DemoClient:
    """The client's agent: pays a channel with receipts for what its own tunnel counters saw.

    A payer thread watches the client's counter (UAPI) and signs and sends a receipt whenever it
    grew by PAY_EVERY_BYTES, so payment streams alongside the data as the node requires.
    """

    def __init__(self, lab_host, backend: TunnelBackend, node_key: bytes, signer: ReceiptSigner) -> None:
        self.host = lab_host
        self.backend = backend
        self.node_key = node_key
        self.signer = signer
        self.sent: list[tuple[int, bool]] = []  # (cumulative bytes, acknowledged) per payer receipt
        self.last_signed: tuple[Receipt, bytes] | None = None
        self.paying = threading.Event()
        self._data: socket.socket | None = None
        self._meter: socket.socket | None = None
        self._reader = None
        self._meter_lock = threading.Lock()
        self._stop = threading.Event()
        self._payer: threading.Thread | None = None

    def start_paying(self) -> None:
        """Start (or resume) the payer thread."""
        self.paying.set()
        if self._payer is None:
            self._payer = threading.Thread(target=self._pay_loop, name="client-payer", daemon=True)
            self._payer.start()

    def pause_paying(self) -> None:
        """Stop the payer; returns once no payment is in flight."""
        self.paying.clear()
        with self._meter_lock:  # the payer checks the flag under this lock
            pass

    def pay_now(self):
        """Sign and send a receipt for the counter as it is now; returns the node's reply frame."""
        with self._meter_lock:
            return self._pay_locked()

    def _pay_locked(self):
        receipt, signature = self.signer.sign(self.observed_bytes())
        self.last_signed = receipt, signature
        reply = self._exchange(FrameKind.RECEIPT, encode_receipt(receipt, signature))
        self.sent.append((receipt.cumulative_bytes, reply.kind is FrameKind.ACK))
        return reply

    def _pay_loop(self) -> None:
        while not self._stop.wait(PAY_POLL_S):
            if not self.paying.is_set():
                continue
            with self._meter_lock:
                if not self.paying.is_set():
                    continue
                paid = self.signer.latest.cumulative_bytes if self.signer.latest else 0
                if self.observed_bytes() - paid >= PAY_EVERY_BYTES:
                    try:
                        self._pay_locked()
                    except (OSError, ConnectionError):
                        return  # the main thread sees the broken connection too

    def _connect(self, port: int) -> socket.socket:
        with self.host.enter():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(IO_TIMEOUT_S)
        sock.connect((NODE_TUNNEL, port))
        return sock

    def observed_bytes(self) -> int:
        """rx + tx of the node's peer entry in the client's own tunnel, read through UAPI."""
        stats = self.backend.peer(self.node_key)
        return 0 if stats is None else stats.rx_bytes + stats.tx_bytes

    def download(self, size: int) -> Download:
        """Ask the node for ``size`` random bytes through the tunnel; check their SHA-256."""
        if self._data is None:
            self._data = self._connect(DATA_PORT)
        self._data.sendall(size.to_bytes(8, "big"))
        digest, received = hashlib.sha256(), 0
        while True:
            length = int.from_bytes(_recv_exact(self._data, 4), "big")
            if length == _END:
                return Download(received, _recv_exact(self._data, 32) == digest.digest())
            if length == _CUT_OFF:
                unpaid = int.from_bytes(_recv_exact(self._data, 8), "big")
                return Download(received, _recv_exact(self._data, 32) == digest.digest(), True, unpaid)
            if length > PIECE_BYTES:
                raise ConnectionError(f"data piece of {length} bytes")
            piece = _recv_exact(self._data, length)
            digest.update(piece)
            received += length

    def exchange(self, kind, body: bytes):
        """Send one metering frame and return the node's reply frame."""
        with self._meter_lock:
            return self._exchange(kind, body)

    def _exchange(self, kind, body: bytes):
        if self._meter is None:
            self._meter, self._reader = self._connect(METER_PORT), FrameReader()
        self._meter.sendall(encode_frame(kind, body))
        while True:
            data = self._meter.recv(4096)
            if not data:
                raise ConnectionError("metering connection closed by the node")
            frames = self._reader.feed(data)
            if frames:
                return frames[0]

    def close(self) -> None:
        """Stop the payer and close the connections."""
        self._stop.set()
        if self._payer is not None:
            self._payer.join(timeout=5)
        for sock in (self._data, self._meter):
            if sock is not None:
                sock.close()


# -- the run ---------------------------------------------------------------------------------------

def run_demo(workdir: Path, *, rounds: int = ROUNDS, round_bytes: int = ROUND_BYTES) -> int:
    """Run the whole demo; returns 0 only if every check passed."""
    log = Log()
    started = time.monotonic()
    summary: dict = {"ok": False}
    try:
        _run(log, workdir, rounds, round_bytes, summary)
    except Exception as exc:  # any failed step ends the demo, after the lab and chain are torn down
        log.check("demo ran to the end", False, f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, DemoFailed):
            log.console.print_exception(max_frames=8)
    else:
        log.check("demo ran to the end", True)
    ok = all(c.ok for c in log.checks)
    _print_summary(log, summary, ok, time.monotonic() - started)
    summary.update(ok=ok, seconds=round(time.monotonic() - started, 1), gas=log.gas,
                   checks={c.name: c.ok for c in log.checks})
    print("summary: " + json.dumps(summary, sort_keys=True), flush=True)
    return 0 if ok else 1


def _run(log: Log, workdir: Path, rounds: int, round_bytes: int, summary: dict) -> None:
    root = _project_root()
    os.chdir(root)  # ape reads the project (contracts, ape-config.yaml) from the working directory
    bin_dir = str(Path(sys.executable).parent)  # anvil is linked next to the interpreter
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    warnings.filterwarnings("ignore")  # pydantic/ape import-time noise would drown the log

    log.step("Local chain")
    import ape
    from ape.logging import logger as ape_logger

    ape_logger.set_level("ERROR")
    with ape.networks.parse_network_choice("ethereum:local:foundry") as provider:
        log.say(f"anvil (ape-foundry) at {provider.uri}, chain id {ape.chain.chain_id}")
        with _lab(log) as (lab, tracked):
            _run_on_chain(log, ape, lab, tracked, workdir, rounds, round_bytes, summary)
    log.say("anvil stopped")


@dataclasses.dataclass
class _Tracked:
    """What the run started outside this process, to verify it is gone afterwards."""

    pids: list[int] = dataclasses.field(default_factory=list)
    sockets: list[str] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def _lab(log: Log):
    """A netns lab that is torn down (and checked to be gone) however the run ends."""
    lab, tracked = Lab(prefix="wdemo"), _Tracked()
    try:
        yield lab, tracked
    finally:
        lab.close()
        left = [ns.name for ns in lab.namespaces if os.path.exists(os.path.join(NETNS_DIR, ns.name))]
        left += [f"pid {pid}" for pid in tracked.pids if os.path.exists(f"/proc/{pid}")]
        left += [path for path in tracked.sockets if os.path.exists(path)]
        log.check("lab cleaned up: namespaces, tunnel processes, UAPI sockets", not left,
                  ", ".join(left) or f"{len(lab.namespaces)} namespaces, {len(tracked.pids)} processes")


def _run_on_chain(log: Log, ape, lab: Lab, tracked: _Tracked, workdir: Path, rounds: int,
                  round_bytes: int, summary: dict) -> None:
    """Steps 2-7 on a connected chain and an open lab."""
    accounts = ape.accounts.test_accounts
    owner, operator, client, treasury = accounts[0], accounts[1], accounts[2], accounts[3]
    guardians = [a.address for a in accounts[7:10]]
    params = DeployParameters(guardians=guardians, fee_bps=FEE_BPS, treasury=treasury.address,
                              min_node_stake=NODE_STAKE, voucher_denominations=[VOUCHER_DENOMINATION],
                              voucher_depth=VOUCHER_DEPTH)
    deployment = deploy_all(ape.project, owner, ape.chain, params, log=log.say)
    project = ape.project
    contracts = WarrenContracts.at(project, deployment, ape.chain.chain_id)
    token, registry, channels = contracts.token, contracts.registry, contracts.channels
    log.say(f"owner {owner.address}, operator {operator.address}, client {client.address}, "
            f"treasury {treasury.address}")

    # -- the node operator ------------------------------------------------------------------------
    log.step("Node operator registers a node")
    node_private = generate_private_key()
    node_key = wg_public_key(node_private)
    node_id = node_id_of(node_key)
    log.say(f"WireGuard key {encode_key(node_key)}  ->  node_id {node_id.hex()[:16]}...")
    log.tx("warren_token.mint (operator)", token.mint(operator, MINT, sender=owner))
    log.tx("warren_token.mint (client)", token.mint(client, MINT, sender=owner))
    log.tx("warren_token.approve (stake)", token.approve(registry, NODE_STAKE, sender=operator))
    tx = registry.register_node(node_key, REGION, PRICE_PER_GIB, NODE_STAKE, sender=operator)
    log.tx("node_registry.register_node", tx)
    (event,) = tx.decode_logs(registry.NodeRegistered)
    log.check("NodeRegistered: node_id = keccak256(WireGuard key), operator, stake",
              bytes(event.node_id) == node_id and event.operator == operator.address
              and int(event.stake) == NODE_STAKE and registry.is_active(node_id),
              f"region {REGION}, price {tokens(PRICE_PER_GIB)}/GiB, stake {tokens(NODE_STAKE)}")

    # -- the client opens a channel ---------------------------------------------------------------
    log.step("Client opens a payment channel")
    listed = contracts.node(node_id)
    chain_key, price = listed.wg_public_key, listed.price_per_gib
    log.check("client reads the node's WireGuard key and price from the registry",
              chain_key == node_key and price == PRICE_PER_GIB, f"{tokens(price)}/GiB")
    payer = Account.create()  # a fresh payment signer for this channel only
    log.say(f"fresh payment signer {payer.address}")
    balances_before = {name: int(token.balanceOf(acct)) for name, acct in
                       (("operator", operator), ("client", client), ("treasury", treasury))}
    log.tx("warren_token.approve (deposit)", token.approve(channels, DEPOSIT, sender=client))
    tx = channels.open_channel(node_id, client, payer.address, DEPOSIT, sender=client)
    log.tx("payment_channels.open_channel", tx)
    (opened,) = tx.decode_logs(channels.ChannelOpened)
    channel_id = bytes(opened.channel_id)
    log.check("ChannelOpened: to this node, with the fresh signer and the deposit",
              bytes(opened.node_id) == node_id and opened.signer == payer.address
              and int(opened.deposit) == DEPOSIT,
              f"channel {channel_id.hex()[:16]}..., deposit {tokens(DEPOSIT)}")

    # -- two hosts and Warren's tunnel ------------------------------------------------------------
    log.step("Two hosts in network namespaces, Warren's Python WireGuard between them")
    node_host, client_host = lab.add_host("node"), lab.add_host("client")
    link = lab.connect(node_host, client_host)
    log.say(f"namespaces {node_host.name} ({link.a_address}) and {client_host.name} "
            f"({link.b_address}), joined by a veth pair")
    node_config = InterfaceConfig(private_key=node_private, listen_port=NODE_PORT,
                                  addresses=[f"{NODE_TUNNEL}/{TUNNEL_PREFIX}"])
    client_private = generate_private_key()  # a fresh tunnel key per session (DESIGN.md)
    client_key = wg_public_key(client_private)
    client_config = InterfaceConfig(
        private_key=client_private, listen_port=CLIENT_PORT,
        addresses=[f"{CLIENT_TUNNEL}/{TUNNEL_PREFIX}"],
        peers=[PeerConfig(public_key=chain_key, allowed_ips=[f"{NODE_TUNNEL}/32"],
                          endpoint=(link.a_address, NODE_PORT))])
    node_proc = spawn_python_tunnel(lab, node_host, node_config, str(workdir))
    client_proc = spawn_python_tunnel(lab, client_host, client_config, str(workdir))
    node_backend, client_backend = UapiBackend(node_proc.ifname), UapiBackend(client_proc.ifname)
    for proc in (node_proc, client_proc):
        tracked.pids.append(proc.process.pid)
        tracked.sockets.append(proc.uapi.path)
    log.say(f"`warren tunnel up` pid {node_proc.process.pid} ({node_proc.ifname}, {NODE_TUNNEL}) "
            f"and pid {client_proc.process.pid} ({client_proc.ifname}, {CLIENT_TUNNEL})")

    node = DemoNode(node_host, node_backend, operator, contracts, node_id, workdir / "receipts")
    session = node.admit(channel_id, client_key, payer.address)
    log.check("node checked the channel on chain and admitted the client's tunnel key",
              node_backend.peer(client_key) is not None, f"client key {encode_key(client_key)[:12]}...")
    node.start()
    try:
        terms = ChannelTerms(channel_id=channel_id, signer=payer.address, deposit=DEPOSIT,
                             price_per_gib=price, credit_bytes=CREDIT_BYTES,
                             chain_id=contracts.chain_id, verifying_contract=channels.address)
        client_agent = DemoClient(client_host, client_backend, chain_key,
                                  ReceiptSigner(terms, payer.key))
        try:
            close_reply = _traffic_and_payment(log, contracts, node, session, client_agent,
                                               payer.key, rounds, round_bytes, summary)
        finally:
            client_agent.close()
    finally:
        node.stop()

    # -- close ------------------------------------------------------------------------------------
    log.step("Cooperative close: the node signs, the client submits")
    # The node settles from what it stored: reload the store as a restarted node would.
    reloaded = ReceiptLedger(session.ledger.terms, ReceiptStore(session.ledger.store.path))
    latest = reloaded.latest()  # the final receipt the node signed its consent over
    log.check("node reloads its receipt store (as after a restart): same latest receipt",
              latest == session.ledger.latest(),
              f"{len(reloaded.store.load())} records re-verified from {reloaded.store.path.name[:16]}...")
    final, final_signature = latest.receipt, latest.signature
    node_signature = close_reply.body
    settled_before = contracts.channel(channel_id).settled
    tx = channels.cooperative_close(channel_id, final.cumulative_bytes, final.cumulative_amount,
                                    final_signature, node_signature, sender=client)
    log.tx("payment_channels.cooperative_close", tx)
    (closed,) = tx.decode_logs(channels.ChannelClosed)
    fee = int(channels.fee_of(final.cumulative_amount))
    refund = DEPOSIT - final.cumulative_amount
    log.check("ChannelClosed: cooperative, settled = final receipt, refund and fee as computed",
              int(closed.kind) == 1 and int(closed.settled) == final.cumulative_amount
              and int(closed.refund) == refund and int(closed.fee) == fee,
              f"settled {tokens(final.cumulative_amount)}, refund {tokens(refund)}, fee {tokens(fee)}")
    status = contracts.channel(channel_id).status
    log.check("channel finalised on chain", status is ChannelStatus.FINALISED, f"settled earlier {tokens(settled_before)}")

    after = {name: int(token.balanceOf(acct)) for name, acct in
             (("operator", operator), ("client", client), ("treasury", treasury))}
    earned = after["operator"] - balances_before["operator"]
    node_share = final.cumulative_amount - fee
    log.check("operator earned the final amount less the fee", earned == node_share,
              f"+{tokens(earned)}")
    log.check("treasury received the protocol fee",
              after["treasury"] - balances_before["treasury"] == fee, f"+{tokens(fee)}")
    log.check("client paid exactly the final receipt (deposit refunded)",
              balances_before["client"] - after["client"] == final.cumulative_amount,
              f"-{tokens(final.cumulative_amount)} for {mib(final.cumulative_bytes)}")
    log.check("token conserved (operator + client + treasury + channels)",
              sum(after.values()) + int(token.balanceOf(channels)) == sum(balances_before.values()),
              "")
    summary.update(
        final_bytes=final.cumulative_bytes, final_amount_wei=final.cumulative_amount,
        operator_earned_wei=earned, treasury_fee_wei=fee, client_refund_wei=refund,
        price_per_gib_wei=price)

    # -- anonymous payment ------------------------------------------------------------------------
    log.step("The client's tunnel ends; a new session will be paid anonymously")
    lab.stop(client_proc.process)
    node_backend.remove_peer(client_key)
    log.say(f"stopped `warren tunnel up` pid {client_proc.process.pid}; the node forgot the client's key")
    _voucher_leg(log, ape, _VoucherLeg(
        lab=lab, tracked=tracked, workdir=workdir, deployment=deployment, contracts=contracts,
        node_host=node_host, client_host=client_host, node_endpoint=(link.a_address, NODE_PORT),
        node_backend=node_backend, node_key=chain_key, node_id=node_id, operator=operator, client=client,
        treasury=treasury, rounds=max(2, rounds // 2), round_bytes=round_bytes), summary)


@dataclasses.dataclass
class _VoucherLeg:
    """What the anonymous-payment leg takes over from the first leg: chain, lab, hosts, roles."""

    lab: Lab
    tracked: _Tracked
    workdir: Path
    deployment: object
    contracts: WarrenContracts
    node_host: object
    client_host: object
    node_endpoint: tuple[str, int]
    node_backend: TunnelBackend
    node_key: bytes
    node_id: bytes
    operator: object
    client: object
    treasury: object
    rounds: int
    round_bytes: int


def _voucher_keys(log: Log):
    """The proving key of the deployed pool's verifier (contracts/groth16_verifier.vy, depth 20).

    That verifier is the development key remade from a public seed (zk/vyper_verifier.py), so its
    proving key can be remade too (a few seconds); it is kept in the prover's key folder
    (keys/voucher-depth20, as ``warren voucher setup`` writes it) and reused while it matches.
    """
    from zk.export import ExportError, vk_to_json
    from zk.groth16 import setup_dev
    from zk.keys import default_keys_dir, load_keys, save_keys
    from zk.voucher import voucher_circuit
    from zk.vyper_verifier import CHECKED_IN_SEED, CHECKED_IN_VK, vk_from_snarkjs

    folder = default_keys_dir(VOUCHER_DEPTH)
    wanted = vk_from_snarkjs(CHECKED_IN_VK)
    with contextlib.suppress(FileNotFoundError, ExportError, ValueError, KeyError):
        pk, vk = load_keys(folder)
        if vk_from_snarkjs(vk_to_json(vk)) == wanted:
            log.say(f"proving key of the pool's verifier loaded from {folder}")
            return pk, vk
    started = time.monotonic()
    pk, vk = setup_dev(voucher_circuit(VOUCHER_DEPTH), CHECKED_IN_SEED.encode())
    log.say(f"proving key of the pool's verifier remade from its public seed in {time.monotonic() - started:.1f} s")
    if not folder.exists():  # never overwrite someone's own keys
        try:
            save_keys(folder, pk, vk)
            log.say(f"kept in {folder} for the next run")
        except OSError as exc:  # a read-only checkout: remade again next time, nothing else lost
            log.say(f"not kept ({exc})")
    if vk_from_snarkjs(vk_to_json(vk)) != wanted:
        raise DemoFailed("the remade development key is not the checked-in verifier's")
    return pk, vk


def _mentions(tx, address: str) -> bool:
    """Whether a transaction names ``address``: as sender, in its call data, or in any of its logs."""
    needle = bytes.fromhex(address[2:])
    if str(tx.sender).lower() == address.lower():
        return True
    blobs = [bytes(tx.transaction.data)]
    for entry in tx.logs:
        blobs += [bytes(topic) for topic in entry["topics"]]
        data = entry["data"]
        blobs.append(bytes.fromhex(data[2:]) if isinstance(data, str) else bytes(data))
    return any(needle in blob for blob in blobs)


def _voucher_leg(log: Log, ape, leg: _VoucherLeg, summary: dict) -> None:
    """The anonymous-payment leg: deposit, prove, node submits, pay the pool channel, settle, close."""
    from agents.prover.chain import deposit_note, find_channel, pool_tree, submit_redemption
    from agents.prover.notes import NoteStore
    from agents.prover.redemption import Redemption, check_redemption, make_redemption
    from agents.prover.signers import SignerStore

    contracts, client, operator = leg.contracts, leg.client, leg.operator
    token = contracts.token
    pool_address = leg.deployment.address(voucher_pool_name(VOUCHER_DENOMINATION))
    vouchers = contracts.voucher_channels(ape.project, pool_address)
    pool = vouchers.pool

    log.step("Client deposits a voucher into the shielded pool")
    log.check("pool deployed by deploy_all: the checked-in depth-20 verifier, our denomination",
              pool.verifier() == leg.deployment.address("groth16_verifier")
              and int(pool.max_depth()) == VOUCHER_DEPTH and int(pool.denomination()) == VOUCHER_DENOMINATION,
              f"pool {pool_address[:10]}..., {tokens(VOUCHER_DENOMINATION)}")
    pk, vk = _voucher_keys(log)
    client_dir = leg.workdir / "client"
    notes, signers = NoteStore(client_dir / "notes.json"), SignerStore(client_dir / "signers.json")
    balances_before = {name: int(token.balanceOf(acct)) for name, acct in
                       (("operator", operator), ("client", client), ("treasury", leg.treasury))}
    stored = deposit_note(notes, pool, token, client, VOUCHER_DENOMINATION)
    (deposit_log,) = [e for e in pool.Deposit.range(leg.deployment.block, ape.chain.blocks.head.number + 1)
                      if int(e.commitment) == stored.commitment]
    deposit_tx = ape.chain.provider.get_receipt(deposit_log.transaction_hash)
    log.tx("voucher_pool.deposit", deposit_tx)
    log.check("Deposit: the note's commitment is in the pool's tree",
              int(deposit_log.leaf_index) == stored.leaf_index and int(pool.root()) == int(deposit_log.new_root),
              f"leaf {stored.leaf_index}, note kept in {notes.path.name} (mode "
              f"{os.stat(notes.path).st_mode & 0o777:o})")

    log.step("Client proves; the node checks the redemption and submits it as relayer")
    payer = signers.new(stored.note.nullifier_hash)  # the payment signer: a fresh key for this voucher only
    log.say(f"fresh payment signer {payer.address} (key in {signers.path.name}, mode "
            f"{os.stat(signers.path).st_mode & 0o777:o})")
    tree = pool_tree(pool, leg.deployment.block)
    started = time.monotonic()
    redemption = make_redemption(stored, tree, pk, VOUCHER_DEPTH, leg.node_id, payer.address, RELAYER_FEE)
    prove_s = time.monotonic() - started
    log.say(f"Groth16 proof over a depth-{VOUCHER_DEPTH} tree in {prove_s:.1f} s; "
            f"relayer fee {tokens(RELAYER_FEE)} for the node")
    handed = Redemption.from_json(redemption.to_json())  # the document the client hands to the node
    node_ok = check_redemption(vk, handed, pool_address, leg.node_id)
    log.check("node: the redemption pays this node and its proof verifies (before paying gas)",
              node_ok and not pool.nullifier_spent(handed.nullifier_hash)
              and not check_redemption(vk, handed, pool_address, b"\x00" * 32))
    if not node_ok:
        raise DemoFailed("the node refused the redemption")
    operator_fees_before = int(pool.relayer_balance(operator))
    submission = submit_redemption(pool, handed, operator)
    channel = submission.channel
    log.tx("voucher_pool.redeem", submission.receipt)
    deposit = VOUCHER_DENOMINATION - RELAYER_FEE
    log.check("Redeemed: a channel to this node, paid by the fresh signer, deposit = denomination - fee",
              (channel.node_id, channel.signer, channel.deposit) == (leg.node_id, payer.address, deposit)
              and channel.channel_id == bytes(pool.channel_id_of(handed.nullifier_hash)),
              f"channel {channel.channel_id.hex()[:16]}..., deposit {tokens(deposit)}")
    log.check("relayer fee credited to the node", int(pool.relayer_balance(operator)) - operator_fees_before
              == RELAYER_FEE, f"+{tokens(RELAYER_FEE)}")
    found = find_channel(pool, stored.note.nullifier_hash, leg.deployment.block)
    signers.set_channel(found)
    log.check("client finds the same channel on chain and keeps it beside the signer's key",
              found == channel and SignerStore(signers.path).find(payer.address).channel == channel)

    log.step("A fresh tunnel; the client pays the voucher channel with receipts")
    client_private = generate_private_key()  # a fresh tunnel key: nothing links it to the first session
    client_key = wg_public_key(client_private)
    config = InterfaceConfig(
        private_key=client_private, listen_port=CLIENT_PORT + 1, addresses=[f"{CLIENT_TUNNEL}/{TUNNEL_PREFIX}"],
        peers=[PeerConfig(public_key=leg.node_key, allowed_ips=[f"{NODE_TUNNEL}/32"], endpoint=leg.node_endpoint)])
    proc = spawn_python_tunnel(leg.lab, leg.client_host, config, str(leg.workdir))
    leg.tracked.pids.append(proc.process.pid)
    leg.tracked.sockets.append(proc.uapi.path)
    log.say(f"`warren tunnel up` pid {proc.process.pid} ({proc.ifname}) with a fresh key")
    node = DemoNode(leg.node_host, leg.node_backend, operator, contracts, leg.node_id,
                    leg.workdir / "receipts", pool=vouchers)
    session = node.admit_voucher(channel, client_key)
    log.check("node checked the voucher channel on the pool and admitted the tunnel key",
              leg.node_backend.peer(client_key) is not None)
    node.start()
    try:
        terms = session.ledger.terms  # same price and credit; the pool's EIP-712 domain
        client_agent = DemoClient(leg.client_host, UapiBackend(proc.ifname), leg.node_key,
                                  ReceiptSigner(terms, payer.private_key))
        try:
            close_reply, moved, settle_txs = _voucher_traffic(log, contracts, node, session, client_agent,
                                                              payer.private_key, leg.rounds, leg.round_bytes)
        finally:
            client_agent.close()
    finally:
        node.stop()

    log.step("Cooperative close of the voucher channel: the node submits it")
    reloaded = ReceiptLedger(session.ledger.terms, ReceiptStore(session.ledger.store.path))
    latest = reloaded.latest()
    final = latest.receipt
    close_tx = vouchers.cooperative_close(channel, final, latest.signature, close_reply.body, sender=operator)
    log.tx("voucher_pool.cooperative_close", close_tx)
    (closed,) = close_tx.decode_logs(pool.ChannelClosed)
    fee = final.cumulative_amount * int(pool.fee_bps()) // 10_000
    refund = deposit - final.cumulative_amount
    log.check("ChannelClosed: cooperative, settled = final receipt, the signer refunded",
              (int(closed.kind), int(closed.settled), int(closed.refund), int(closed.fee))
              == (1, final.cumulative_amount, refund, fee)
              and int(token.balanceOf(payer.address)) == refund
              and vouchers.channel(channel).status is ChannelStatus.FINALISED,
              f"settled {tokens(final.cumulative_amount)}, refund {tokens(refund)} to {payer.address[:10]}...")
    withdraw_tx = pool.withdraw_relayer_fees(sender=operator)
    log.tx("voucher_pool.withdraw_relayer_fees", withdraw_tx)
    after = {name: int(token.balanceOf(acct)) for name, acct in
             (("operator", operator), ("client", client), ("treasury", leg.treasury))}
    earned = after["operator"] - balances_before["operator"]
    log.check("node's balance rose by the channel's amount less the fee, plus the relayer fee",
              earned == final.cumulative_amount - fee + RELAYER_FEE + operator_fees_before, f"+{tokens(earned)}")
    log.check("treasury received the voucher channel's protocol fee",
              after["treasury"] - balances_before["treasury"] == fee, f"+{tokens(fee)}")
    log.check("client paid the denomination, and nothing else", balances_before["client"] - after["client"]
              == VOUCHER_DENOMINATION, f"-{tokens(VOUCHER_DENOMINATION)}")

    anonymous = {"voucher_pool.redeem": submission.receipt, "voucher_pool.cooperative_close": close_tx,
                 "voucher_pool.withdraw_relayer_fees": withdraw_tx}
    anonymous.update({f"voucher_pool.settle #{i}": tx for i, tx in enumerate(settle_txs, 1)})
    named = [label for label, tx in anonymous.items() if _mentions(tx, client.address)]
    log.check("the depositor's address is in no redemption or channel transaction or event",
              not named and _mentions(deposit_tx, client.address),
              f"searched {len(anonymous)} transactions (sender, call data, logs); only the deposit names "
              f"{client.address[:10]}..." if not named else ", ".join(named))
    summary["voucher"] = {
        "denomination_wei": VOUCHER_DENOMINATION, "relayer_fee_wei": RELAYER_FEE, "deposit_wei": deposit,
        "depth": VOUCHER_DEPTH, "prove_s": round(prove_s, 2), "data_bytes": moved,
        "final_bytes": final.cumulative_bytes, "final_amount_wei": final.cumulative_amount,
        "receipts_accepted": len(reloaded.store.load()), "refusals": list(node.refusals),
        "settled_mid_wei": int(settle_txs[0].decode_logs(pool.ReceiptSettled)[0].cumulative_amount),
        "operator_earned_wei": earned, "treasury_fee_wei": fee, "signer_refund_wei": refund,
        "depositor_in_anonymous_txs": named,
    }


def _voucher_traffic(log: Log, contracts: WarrenContracts, node: DemoNode, session: _Session,
                     client: DemoClient, signer_key: str, rounds: int, round_bytes: int):
    """Metered rounds paid to the voucher channel, a settlement on the pool, a refusal, the close request.

    Returns:
        (the node's close-signature reply, bytes moved, the settle transactions).
    """
    handshake_ok = client.host.ping(NODE_TUNNEL, count=2)
    log.check("handshake with the fresh key completed, ping through the tunnel", handshake_ok)
    client.start_paying()
    moved, settles = 0, []
    for n in range(1, rounds + 1):
        moved += _data_round(client, round_bytes, f"voucher round {n}")
        with node._lock:
            latest = session.ledger.latest()
        log.say(f"round {n}: {mib(round_bytes)} sha256 ok; node holds receipts up to "
                f"{latest.receipt.cumulative_bytes if latest else 0:,} B")
        if n == 1:
            before = int(contracts.token.balanceOf(node.operator))
            settled = node.settle(session, log)
            if settled is None:
                raise DemoFailed("nothing to settle on the voucher channel: no receipt was accepted")
            tx, record = settled
            settles.append(tx)
            gained = int(contracts.token.balanceOf(node.operator)) - before
            log.check("node settled the voucher channel on the pool: its balance rose",
                      gained > 0 and node.pool.channel(session.voucher).settled == record.receipt.cumulative_amount,
                      f"+{tokens(gained)} for {mib(record.receipt.cumulative_bytes)}")
    client.pause_paying()
    reply = client.pay_now()
    log.check("every voucher round's SHA-256 matched; every receipt stored and acked",
              reply.kind is FrameKind.ACK and all(ok for _, ok in client.sent), f"{len(client.sent)} receipts")

    last, _ = client.last_signed
    elsewhere = Receipt(session.channel_id, last.cumulative_bytes + 1000, last.cumulative_amount + 10**15)
    signature = eip712.sign(elsewhere, signer_key, contracts.chain_id, contracts.channels.address)
    reply = client.exchange(FrameKind.RECEIPT, encode_receipt(elsewhere, signature))
    log.check("the same signer's receipt for payment_channels' domain: refused", reply.kind is FrameKind.REFUSED
              and reply.body == b"wrong_signer", reply.body.decode())

    with client._meter_lock:
        receipt, signature = client.signer.sign(client.observed_bytes())
        reply = client._exchange(FrameKind.CLOSE_REQUEST, encode_receipt(receipt, signature))
    log.check("final receipt accepted; node returned its cooperative-close signature for the pool",
              reply.kind is FrameKind.CLOSE_SIGNATURE and eip712.recover(
                  CooperativeClose(*dataclasses.astuple(receipt)), reply.body, contracts.chain_id,
                  node.pool.address) == node.operator.address,
              f"{mib(receipt.cumulative_bytes)} -> {tokens(receipt.cumulative_amount)}")
    return reply, moved, settles


def _data_round(client: DemoClient, round_bytes: int, label: str) -> int:
    """Download one round, paid as it flows; returns the bytes received.

    Raises:
        DemoFailed: the node cut the client off, or a byte was lost or changed.
    """
    got = client.download(round_bytes)
    if got.cut_off or not got.digest_ok or got.received != round_bytes:
        raise DemoFailed(f"{label}: {got}")
    return got.received


def _traffic_and_payment(log: Log, contracts: WarrenContracts, node: DemoNode, session: _Session,
                         client: DemoClient, signer_key: bytes, rounds: int, round_bytes: int,
                         summary: dict):
    """Steps 5-6: metered data rounds, a mid-way settlement, refusals, cut-off, the close request.

    Returns:
        The node's reply to the close request (its CooperativeClose signature).
    """
    channels = contracts.channels
    handshake_ok = client.host.ping(NODE_TUNNEL, count=2)
    stats = client.backend.peer(client.node_key)
    log.check("handshake completed, ping through the tunnel",
              handshake_ok and stats is not None and stats.last_handshake is not None)

    log.step(f"Data and receipts: {rounds} rounds of {mib(round_bytes)} through the tunnel")
    log.say(f"the client pays every {PAY_EVERY_BYTES >> 10} KiB its counter grows; the node pauses "
            f"past {SERVE_AHEAD_BYTES >> 10} KiB unpaid and refuses receipts more than "
            f"{CREDIT_BYTES >> 10} KiB off its own counter")
    client.start_paying()
    moved, settled_mid = 0, None
    for n in range(1, rounds + 1):
        got_bytes = _data_round(client, round_bytes, f"round {n}")
        moved += got_bytes
        with node._lock:
            latest, held = session.ledger.latest(), node.accepted
        paid = latest.receipt if latest else None
        log.say(f"round {n}: {mib(got_bytes)} sha256 ok; client counter {client.observed_bytes():,} B, "
                f"node counter {node.observed_bytes(session):,} B; node holds {held} receipts, "
                f"latest {paid.cumulative_bytes if paid else 0:,} B = "
                f"{tokens(paid.cumulative_amount if paid else 0)}")
        if n == (rounds + 1) // 2:
            before = int(contracts.token.balanceOf(node.operator))
            settled = node.settle(session, log)
            if settled is None:
                raise DemoFailed("nothing to settle mid-way: no receipt was accepted")
            tx, record = settled
            (event,) = tx.decode_logs(channels.ReceiptSettled)
            gained = int(contracts.token.balanceOf(node.operator)) - before
            amount = record.receipt.cumulative_amount
            settled_mid = amount
            log.check("node settled its latest receipt mid-way: its balance rose",
                      int(event.cumulative_amount) == amount
                      and int(event.node_amount) == gained == amount - int(channels.fee_of(amount)),
                      f"+{tokens(gained)}: receipt of {mib(record.receipt.cumulative_bytes)}, "
                      f"{tokens(amount)} less the {FEE_BPS / 100:g} % fee, which the contract keeps "
                      f"for the treasury until close")
    client.pause_paying()
    reply = client.pay_now()  # pay for the tail of the last round
    acked = [ok for _, ok in client.sent]
    log.check("every round's SHA-256 matched; every receipt the client sent was stored and acked",
              all(acked) and reply.kind is FrameKind.ACK,
              f"{mib(moved)} moved, {len(acked)} receipts")
    stored = session.ledger.store.load()
    log.check("the node's fsynced store holds every acknowledged receipt",
              len(stored) == len(acked) and stored[-1].receipt == client.signer.latest,
              f"{len(stored)} records in {session.ledger.store.path}")
    drift = node.observed_bytes(session) - client.observed_bytes()
    log.say(f"counters now: client {client.observed_bytes():,} B, node {node.observed_bytes(session):,} B"
            f" (difference {drift:+,} B)")

    log.step("The node refuses what it should")
    last, last_signature = client.last_signed  # what the client sent last (and the node holds)
    forger = Account.create()
    forged = Receipt(session.channel_id, last.cumulative_bytes + 1000, last.cumulative_amount + 10**15)
    forged_sig = eip712.sign(forged, forger.key, contracts.chain_id, channels.address)
    reply = client.exchange(FrameKind.RECEIPT, encode_receipt(forged, forged_sig))
    log.check("receipt signed by another key: refused", reply.kind is FrameKind.REFUSED
              and reply.body == b"wrong_signer", reply.body.decode())
    reply = client.exchange(FrameKind.RECEIPT, encode_receipt(last, last_signature))
    log.check("latest receipt replayed: refused", reply.kind is FrameKind.REFUSED
              and reply.body == b"replayed", reply.body.decode())
    cheap = Receipt(session.channel_id, last.cumulative_bytes + (1 << 20), last.cumulative_amount + 1)
    cheap_sig = eip712.sign(cheap, signer_key, contracts.chain_id, channels.address)
    reply = client.exchange(FrameKind.RECEIPT, encode_receipt(cheap, cheap_sig))
    log.check("receipt paying less than the on-chain price: refused", reply.kind is FrameKind.REFUSED
              and reply.body == b"underpriced", reply.body.decode())

    # Cut off: the client (not paying since the rounds ended) asks for more than the node serves
    # on credit.
    asked = 4 * CREDIT_BYTES
    pauses_before = node.pauses
    got = client.download(asked)
    moved += got.received
    log.check("client stops paying: node pauses, then cuts it off mid-transfer",
              got.cut_off and got.digest_ok and got.unpaid > SERVE_AHEAD_BYTES
              and got.received < asked and node.pauses > pauses_before,
              f"{mib(got.received)} of {mib(asked)} served; {got.unpaid:,} B unpaid after "
              f"{PAYMENT_WAIT_S:g} s")
    reply = client.pay_now()
    client.start_paying()
    again = client.download(round_bytes)
    moved += again.received
    log.check("client pays up, node serves again", reply.kind is FrameKind.ACK and not again.cut_off
              and again.digest_ok and again.received == round_bytes,
              f"receipt for {mib(client.signer.latest.cumulative_bytes)}")
    client.pause_paying()

    # The final receipt for everything so far, with the request to close at it.
    with client._meter_lock:
        receipt, signature = client.signer.sign(client.observed_bytes())
        reply = client._exchange(FrameKind.CLOSE_REQUEST, encode_receipt(receipt, signature))
    log.check("final receipt accepted; node returned its cooperative-close signature",
              reply.kind is FrameKind.CLOSE_SIGNATURE and len(reply.body) == 65,
              f"{mib(receipt.cumulative_bytes)} -> {tokens(receipt.cumulative_amount)}")
    expected = price_of(receipt.cumulative_bytes, contracts.node(node.node_id).price_per_gib)
    log.check("final amount is the on-chain price of the client's counted bytes",
              receipt.cumulative_amount == expected, f"{tokens(expected)}")
    summary.update(rounds=rounds, round_bytes=round_bytes, data_bytes=moved,
                   receipts_accepted=len(session.ledger.store.load()), refusals=list(node.refusals),
                   cut_offs=node.cut_offs, pauses=node.pauses, settled_mid_wei=settled_mid)
    return reply


def _print_summary(log: Log, summary: dict, ok: bool, seconds: float) -> None:
    log.step("Summary")
    table = Table(show_header=True, header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("data through the tunnel", mib(summary["data_bytes"]) if "data_bytes" in summary else "-"),
        ("bytes paid for (final receipt)", f"{summary['final_bytes']:,}" if "final_bytes" in summary else "-"),
        ("receipts stored by the node", str(summary.get("receipts_accepted", "-"))),
        ("receipts refused", ", ".join(summary.get("refusals", [])) or "-"),
        ("client paid", tokens(summary["final_amount_wei"]) if "final_amount_wei" in summary else "-"),
        ("operator earned", tokens(summary["operator_earned_wei"]) if "operator_earned_wei" in summary else "-"),
        ("treasury fee", tokens(summary["treasury_fee_wei"]) if "treasury_fee_wei" in summary else "-"),
        ("client refund", tokens(summary["client_refund_wei"]) if "client_refund_wei" in summary else "-"),
    ]
    voucher = summary.get("voucher")
    if voucher:
        rows += [
            ("voucher: data through the fresh tunnel", mib(voucher["data_bytes"])),
            ("voucher: paid from the pool channel", tokens(voucher["final_amount_wei"])),
            ("voucher: refund to the fresh signer", tokens(voucher["signer_refund_wei"])),
            ("voucher: relayer fee to the node", tokens(voucher["relayer_fee_wei"])),
        ]
    for name, value in rows:
        table.add_row(name, value)
    log.console.print(table)
    gas = Table(show_header=True, header_style="bold")
    gas.add_column("transaction")
    gas.add_column("gas", justify="right")
    for name, used in log.gas.items():
        gas.add_row(name, f"{used:,}")
    log.console.print(gas)
    failed = [c for c in log.checks if not c.ok]
    passed = len(log.checks) - len(failed)
    if ok:
        log.console.print(f"[bold green]all {passed} checks passed[/bold green] in {seconds:.0f} s")
    else:
        log.console.print(f"[bold red]{len(failed)} of {len(log.checks)} checks FAILED[/bold red]: "
                          + escape("; ".join(f"{c.name} ({c.detail})" for c in failed)))
