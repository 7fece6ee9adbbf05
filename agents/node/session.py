"""The node's session core: quarantine, session setup, metering gates, timeouts (sans-I/O).

DESIGN.md, "Sessions (exit mode)". A client's WireGuard key is unknown until it handshakes; the
node's responder hands it to :meth:`NodeSessions.admit_unknown`, which puts it in quarantine: its
only allowed IP is a control address derived from its key (:func:`quarantine_address`), from which
the exit's nftables table lets it reach nothing but the node's control port. Quarantine is bounded
(``max_pending``) and timed (``setup_timeout_s``).

The client's first control message is a :class:`~agents.control.SessionRequest`. The runtime reads
the named channel from the chain and hands both here (:meth:`NodeSessions.setup`); the checks are the
ones DESIGN.md lists: the channel exists, pays this node, is open and has room, the request is signed
by the channel's payment signer, binds this tunnel's key and this node, is fresh, and was not seen
before. On success the client gets tunnel addresses from the pool and its exit opens.

Voucher-pool channels (DESIGN.md, "Money": a channel a voucher redemption opened, held by the pool)
are checked the same way against the pool: the request names the pool and the channel's terms
(signer, deposit; the node is this one), the pool stores their hash, and the request is signed for
the pool's EIP-712 domain, as every receipt of that channel is. A request may carry the redemption
that opens its channel: :meth:`NodeSessions.check_redemption` says whether it is worth submitting
(see :mod:`agents.node.chain` for why it travels inside the tunnel).

Prices. A channel is quoted the price it was opened at (payment_channels logs the node's listing in
``ChannelOpened``, and the client refuses to pay more than that), not the node's price now, which
``price_per_gib = "auto"`` moves once per epoch: the runtime looks the open price up once per channel
and passes it to :meth:`NodeSessions.setup`; the ledger's stored terms keep it from then on. A
voucher-pool channel has no logged price and is quoted the node's price when its ledger is first made.

Receipts then go to the session's :class:`~agents.metering.ReceiptLedger` against the node's billed
counter (tunnel bytes minus what the exit dropped, computed by the runtime); :meth:`NodeSessions.tick`
suspends a session whose unpaid bytes pass the credit and resumes it once paid.

Everything here is plain data in, actions out: the runtime applies :class:`Action` values to the
tunnel and the exit table. Time is the caller's ``now`` (seconds), so tests use a fake clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Callable

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from agents.chain.bindings import ChannelState, ChannelStatus, VoucherChannel
from agents.control import SessionRequest, SessionTerms, request_signer
from agents.metering import ChannelTerms, Decision, ReceiptLedger, price_of

__all__ = [
    "Action",
    "AddressPool",
    "Admit",
    "NodeOffer",
    "NodeSessions",
    "PoolExhausted",
    "RemovePeer",
    "Resume",
    "Session",
    "SetupRefused",
    "SetAllowedIPs",
    "Suspend",
    "quarantine_address",
    "voucher_channel_id",
]

#: Default quarantine prefix: a not-yet-paid client's control address lives here.
QUARANTINE_PREFIX = "fd77:7272:0:ffff::/64"
#: A session request older or newer than this (seconds) against the node's clock is refused: it
#: bounds how long a captured request could be replayed, and tolerates ordinary clock skew.
REQUEST_WINDOW_S = 120.0


def quarantine_address(wg_key: bytes, prefix: str = QUARANTINE_PREFIX) -> str:
    """The control address of a client key: the prefix's /64 + 64 bits of BLAKE2s(key).

    Both sides derive it, so the client can talk to the node's control port before it has any
    assigned address; 64 bits make a collision between two live clients negligible.
    """
    network = ipaddress.IPv6Network(prefix)
    interface_id = int.from_bytes(hashlib.blake2s(bytes(wg_key), digest_size=8).digest(), "big")
    return str(network.network_address + (interface_id & ((1 << (128 - max(network.prefixlen, 64))) - 1)))


def voucher_channel_id(chain_id: int, pool: str, nullifier_hash: int) -> bytes:
    """The id of the channel a note's redemption opens: keccak256(abi_encode(chain.id, pool,
    nullifier_hash)) (contracts/voucher_pool.vy ``_channel_id``; a test checks both agree)."""
    return keccak(abi_encode(["uint256", "address", "uint256"],
                             [chain_id, to_checksum_address(pool), int(nullifier_hash)]))


class PoolExhausted(Exception):
    """No tunnel address is left in the pool."""


class AddressPool:
    """Tunnel addresses for clients: one IPv4 /32 and one IPv6 /128 each, reused after release.

    The first host of each prefix is the node's own address.
    """

    def __init__(self, pool_v4: str, pool_v6: str) -> None:
        self.v4 = ipaddress.IPv4Network(pool_v4)
        self.v6 = ipaddress.IPv6Network(pool_v6)
        self.node_v4 = str(self.v4.network_address + 1)
        self.node_v6 = str(self.v6.network_address + 1)
        self._free: list[int] = []
        self._next = 2
        self._limit = min(self.v4.num_addresses - 2, 1 << 24)
        self._used: set[int] = set()

    def allocate(self) -> tuple[str, str]:
        """A fresh (v4, v6) pair.

        Raises:
            PoolExhausted: every address is in use.
        """
        if self._free:
            offset = self._free.pop()
        elif self._next <= self._limit:
            offset, self._next = self._next, self._next + 1
        else:
            raise PoolExhausted(f"all {self._limit - 1} client addresses of {self.v4} are in use")
        self._used.add(offset)
        return str(self.v4.network_address + offset), str(self.v6.network_address + offset)

    def release(self, v4: str) -> None:
        """Give a pair back (by its IPv4 address)."""
        offset = int(ipaddress.IPv4Address(v4)) - int(self.v4.network_address)
        if offset in self._used:
            self._used.remove(offset)
            self._free.append(offset)


@dataclasses.dataclass(frozen=True)
class NodeOffer:
    """What this node sells and on which terms.

    Attributes:
        node_id: keccak256 of the node's WireGuard key.
        chain_id: the chain receipts and requests are signed for.
        channels_address: payment_channels (the EIP-712 verifying contract of its channels).
        price_per_gib: token wei per GiB (as listed on chain now): what a new channel opens at.
        credit_bytes: unpaid bytes carried before a cut-off.
        receipt_bytes / receipt_interval_s: the client's receipt cadence.
        max_pending: clients in quarantine at once.
        setup_timeout_s: a quarantined client must complete setup within this.
        idle_timeout_s: a session with no traffic and no receipt for this long ends.
        voucher_pools: checksummed addresses of the voucher pools whose channels this node accepts
            (the deployment's; a pool named by a client alone could be any contract).
        min_relayer_fee: the smallest relayer fee (token wei) for which the node submits a client's
            redemption (it pays the redemption's gas, ~270,000).
    """

    node_id: bytes
    chain_id: int
    channels_address: str
    price_per_gib: int
    credit_bytes: int = 16 << 20
    receipt_bytes: int = 1 << 20
    receipt_interval_s: float = 5.0
    max_pending: int = 32
    setup_timeout_s: float = 20.0
    idle_timeout_s: float = 600.0
    voucher_pools: tuple[str, ...] = ()
    min_relayer_fee: int = 0


# -- actions ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Action:
    """Something the runtime must do to the tunnel or the exit."""


@dataclasses.dataclass(frozen=True)
class SetAllowedIPs(Action):
    """Replace a peer's allowed IPs (quarantine address plus, once admitted, its tunnel addresses)."""

    wg_key: bytes
    cidrs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RemovePeer(Action):
    """Forget a peer (quarantine timed out, session over)."""

    wg_key: bytes


@dataclasses.dataclass(frozen=True)
class Admit(Action):
    """Open the exit for a session's addresses (``relay_to``: a relay session's only destinations)."""

    v4: str
    v6: str
    relay_to: tuple[tuple[str, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class Suspend(Action):
    """Stop forwarding for a session (unpaid bytes over the credit) without forgetting it."""

    v4: str
    v6: str
    unpaid_bytes: int


@dataclasses.dataclass(frozen=True)
class Resume(Action):
    """Forward again for a suspended session that paid."""

    v4: str
    v6: str


@dataclasses.dataclass(frozen=True)
class Forget(Action):
    """Close the exit for a session's addresses and free them."""

    v4: str
    v6: str


class SetupRefused(Exception):
    """A session request the node refuses; ``reason`` goes back to the client.

    Attributes:
        reason: short snake_case key (``"stale_request"``, ``"channel_not_open"``, ...).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# -- sessions --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Session:
    """One paying client.

    Attributes:
        wg_key: the client's WireGuard key for this session.
        channel: the channel's on-chain state at setup.
        ledger: the channel's receipts (durable).
        v4 / v6: the client's tunnel addresses.
        base_bytes: the channel's paid bytes when this session began (a channel can outlive a
            tunnel: the client may reconnect with a fresh key).
        billed_bytes: bytes billed in this session so far (tunnel bytes minus exit drops).
        counted_bytes: the runtime's latest count, ahead of the bill (which lags a meter period so
            that only packets the exit has already judged are billed); credit checks only, never billed.
        suspended: whether the exit is closed for unpaid bytes.
        last_activity: when billed bytes last grew or a receipt came.
    """

    wg_key: bytes
    channel: ChannelState
    ledger: ReceiptLedger
    v4: str
    v6: str
    base_bytes: int
    started: float
    billed_bytes: int = 0
    counted_bytes: int = 0
    suspended: bool = False
    last_activity: float = 0.0
    session_id: int | None = None
    #: A relay session's exit endpoints (the outer hop of `warren connect --hops 2`); () for an exit.
    relay_to: tuple[tuple[str, int], ...] = ()

    @property
    def channel_id(self) -> bytes:
        """The paying channel."""
        return self.channel.channel_id

    @property
    def observed_bytes(self) -> int:
        """The node's cumulative count for the channel: what receipts are checked against."""
        return self.base_bytes + self.billed_bytes

    @property
    def unpaid_bytes(self) -> int:
        """How far the node's count is ahead of the latest receipt."""
        return self.ledger.unpaid_bytes(self.observed_bytes)

    @property
    def exposure_bytes(self) -> int:
        """What the credit is checked against: the bill, or the runtime's newer count if ahead."""
        return self.base_bytes + max(self.billed_bytes, self.counted_bytes)


#: Builds a channel's ledger: (terms[, voucher channel record]) -> ReceiptLedger over the node's durable
#: store; the record is passed only for voucher-pool channels.
LedgerFactory = Callable[..., ReceiptLedger]
#: Recomputes a payment_channels id: (node_id, client, signer) -> 32 bytes.
ChannelIdOf = Callable[[bytes, str, str], bytes]


class NodeSessions:
    """Quarantine, setup and metering gates of every client of one node.

    Args:
        offer: the node's terms.
        pool: tunnel addresses.
        ledger_for: makes (or reopens) a channel's ledger over the durable store.
        channel_id_of: payment_channels' id function, to check a request names its own channel.
        quarantine_prefix: see :func:`quarantine_address`.
    """

    def __init__(self, offer: NodeOffer, pool: AddressPool, ledger_for: LedgerFactory,
                 channel_id_of: ChannelIdOf, quarantine_prefix: str = QUARANTINE_PREFIX) -> None:
        self.offer = offer
        self.pool = pool
        self._ledger_for = ledger_for
        self._channel_id_of = channel_id_of
        self.quarantine_prefix = quarantine_prefix
        self.pending: dict[bytes, float] = {}          # wg key -> when it entered quarantine
        self.sessions: dict[bytes, Session] = {}       # wg key -> session
        self._ledgers: dict[bytes, ReceiptLedger] = {}  # channel id -> ledger (shared across sessions)
        self._seen: dict[tuple[bytes, bytes], float] = {}  # (channel id, nonce) -> request timestamp
        self.refusals: dict[str, int] = {}
        #: ``revoked(wg_key) -> bool``: keys of revoked nodes (agents.overlay.revocation), refused at
        #: the handshake, before any data flows; None: nothing is revoked here.
        self.revoked: Callable[[bytes], bool] | None = None

    # -- quarantine --------------------------------------------------------------------------------

    def admit_unknown(self, wg_key: bytes, now: float) -> list[str] | None:
        """The WireGuard responder's question for a key it has never seen: quarantine or refuse.

        Returns:
            The quarantine address as the peer's only allowed IP, or None when quarantine is full.
        """
        wg_key = bytes(wg_key)
        if wg_key in self.sessions:
            return None  # a live session's key re-handshakes as a known peer, never through here
        if self.revoked is not None and self.revoked(wg_key):
            self._refuse("revoked")
            return None
        if wg_key not in self.pending and len(self.pending) >= self.offer.max_pending:
            self._refuse("quarantine_full")
            return None
        self.pending.setdefault(wg_key, now)
        return [quarantine_address(wg_key, self.quarantine_prefix) + "/128"]

    # -- setup -------------------------------------------------------------------------------------

    def check_request(self, wg_key: bytes, request: SessionRequest, signature: bytes, names: dict,
                      wall_time: float) -> str:
        """The checks of a session request that need no chain: the runtime makes them before it
        spends gas on a redemption, and :meth:`setup` makes them again.

        Returns:
            The verifying contract the request (and the channel's receipts) are signed for.

        Raises:
            SetupRefused: replayed, not in quarantine, bound to another tunnel or node, stale,
                naming a pool this node does not settle on, or not signed by the named signer.
        """
        wg_key = bytes(wg_key)
        offer = self.offer
        try:
            # A replay is named as one even while the session it was taken from is live.
            if (request.channel_id, request.nonce) in self._seen:
                raise SetupRefused("replayed_request")
            if wg_key in self.sessions:
                raise SetupRefused("already_set_up", "this tunnel already has a session")
            if wg_key not in self.pending:
                raise SetupRefused("not_in_quarantine", "handshake first")
            if request.wg_key != wg_key:
                raise SetupRefused("wrong_tunnel", "the request binds another WireGuard key")
            if request.node_id != offer.node_id:
                raise SetupRefused("wrong_node", "the request names another node")
            if abs(wall_time - request.timestamp) > REQUEST_WINDOW_S:
                raise SetupRefused("stale_request", f"timestamp {request.timestamp} is more than "
                                   f"{REQUEST_WINDOW_S:.0f} s from the node's clock {wall_time:.0f}")
            signer = names.get("signer")
            if "pool" in names:
                if names["pool"] not in offer.voucher_pools:
                    raise SetupRefused("foreign_pool", f"this node settles only on the voucher pools "
                                       f"{', '.join(offer.voucher_pools) or '(none)'}")
                if signer is None or not isinstance(names.get("deposit"), int) or names["deposit"] <= 0:
                    raise SetupRefused("bad_request", "a voucher channel needs its signer and deposit")
                domain = names["pool"]
            else:
                if names.get("client") is None or signer is None:
                    raise SetupRefused("bad_request", "client and signer are required")
                domain = offer.channels_address
            recovered = request_signer(request, signature, offer.chain_id, domain)
            if recovered is None or recovered != signer:
                raise SetupRefused("bad_signature", "not signed by the channel's payment signer")
        except SetupRefused as refusal:
            self._refuse(refusal.reason)
            raise
        return domain

    def check_redemption(self, request: SessionRequest, names: dict, redemption) -> None:
        """Whether a redemption carried by a (checked) voucher session request is worth submitting.

        ``redemption`` is an :class:`agents.prover.redemption.Redemption` (duck-typed: pool, node_id,
        signer, nullifier_hash, relayer_fee). Its proof is not checked here: the runtime simulates
        the transaction first (an ``eth_call``, free), which runs the pool's own verifier.

        Raises:
            SetupRefused: it pays another node (``foreign_redemption``), names another pool, signer
                or channel than the request (``wrong_redemption``), or offers too small a fee.
        """
        try:
            if "pool" not in names:
                raise SetupRefused("wrong_redemption", "a redemption goes with a voucher-pool channel")
            if redemption.node_id.lower() != "0x" + self.offer.node_id.hex():
                raise SetupRefused("foreign_redemption", "the redemption pays another node: not submitted")
            if (to_checksum_address(redemption.pool) != names["pool"]
                    or to_checksum_address(redemption.signer) != names["signer"]):
                raise SetupRefused("wrong_redemption", "the redemption names another pool or signer than "
                                   "the request")
            if voucher_channel_id(self.offer.chain_id, names["pool"], redemption.nullifier_hash) != request.channel_id:
                raise SetupRefused("wrong_redemption", "the redemption opens another channel than the request names")
            if redemption.relayer_fee < self.offer.min_relayer_fee:
                raise SetupRefused("fee_too_low", f"this node submits redemptions for a relayer fee of at least "
                                   f"{self.offer.min_relayer_fee} token wei")
        except SetupRefused as refusal:
            self._refuse(refusal.reason)
            raise

    def setup(self, wg_key: bytes, request: SessionRequest, signature: bytes, names: dict,
              channel: ChannelState, now: float, wall_time: float,
              relay_to: tuple[tuple[str, int], ...] = (),
              open_price: int | None = None) -> tuple[Session, SessionTerms, list[Action]]:
        """Check a session request against the chain's view of its channel; open the session.

        Args:
            wg_key: the WireGuard key of the tunnel the request came through (authenticated).
            request / signature / names: the parsed SESSION_REQUEST.
            channel: the channel as the chain shows it now (for a voucher channel: as the pool shows
                the terms the request names; the chain port refuses terms the pool does not hold).
            now: the caller's monotonic clock; wall_time: unix seconds (requests carry unix time).
            relay_to: a relay session's exit endpoints (checked by the caller against the policy):
                the exit then forwards only WireGuard datagrams to them for this session.
            open_price: the price the channel was opened at (token wei per GiB, its ChannelOpened
                event), for a channel this node holds no ledger of yet; None: the offer's price (a
                voucher channel, or a price the chain no longer shows). A ledger's stored price wins.

        Returns:
            The session, the terms to send, and the actions that open its exit.

        Raises:
            SetupRefused: any check failed (nothing changed).
        """
        wg_key = bytes(wg_key)
        offer = self.offer
        domain = self.check_request(wg_key, request, signature, names, wall_time)
        signer = names["signer"]
        voucher = None
        try:
            if "pool" in names:
                voucher = VoucherChannel(pool=names["pool"], chain_id=offer.chain_id, channel_id=request.channel_id,
                                         node_id=offer.node_id, signer=signer, deposit=names["deposit"])
            else:
                client = names["client"]
                if self._channel_id_of(offer.node_id, client, signer) != request.channel_id:
                    raise SetupRefused("wrong_channel", "client, signer and node do not give this channel id")
            if channel.channel_id != request.channel_id:
                raise SetupRefused("wrong_channel", "the chain's channel is another one")
            if channel.status is ChannelStatus.NONE:
                raise SetupRefused("unknown_channel", "no such channel on chain")
            if channel.status is not ChannelStatus.OPEN:
                raise SetupRefused("channel_not_open", channel.status.name.lower())
            if channel.node_id != offer.node_id:
                raise SetupRefused("foreign_channel", "the channel pays another node")
            if channel.client != (signer if voucher else names["client"]):
                raise SetupRefused("wrong_channel", "the chain's client differs")
            if voucher is not None and channel.deposit != voucher.deposit:
                raise SetupRefused("wrong_channel", "the pool's deposit differs")
            ledger = self._ledger(channel, signer, domain, voucher, open_price)
            latest = ledger.latest()
            paid_amount = latest.receipt.cumulative_amount if latest else 0
            room = channel.deposit - max(paid_amount, channel.settled)
            if room < max(1, price_of(offer.receipt_bytes, ledger.terms.price_per_gib)):
                raise SetupRefused("no_room", f"{room} token wei left of the deposit {channel.deposit}")
            for live in self.sessions.values():
                if live.channel_id == channel.channel_id:
                    raise SetupRefused("channel_in_use", "another tunnel is paying with this channel")
            try:
                v4, v6 = self.pool.allocate()
            except Exception as exc:
                raise SetupRefused("no_address", str(exc)) from None
        except SetupRefused as refusal:
            self._refuse(refusal.reason)
            raise
        # A request older than the window is refused as stale anyway, so only fresher ones need
        # remembering: the replay memory stays bounded by the request rate times the window.
        self._seen = {key: stamp for key, stamp in self._seen.items()
                      if stamp >= wall_time - 2 * REQUEST_WINDOW_S}
        self._seen[(request.channel_id, request.nonce)] = request.timestamp
        del self.pending[wg_key]
        session = Session(wg_key=wg_key, channel=channel, ledger=ledger, v4=v4, v6=v6,
                          base_bytes=ledger.paid_bytes(), started=now, last_activity=now,
                          relay_to=tuple(relay_to))
        self.sessions[wg_key] = session
        terms = SessionTerms(address_v4=v4, address_v6=v6, dns=(self.pool.node_v4, self.pool.node_v6),
                             price_per_gib=ledger.terms.price_per_gib, credit_bytes=offer.credit_bytes,
                             receipt_bytes=offer.receipt_bytes, receipt_interval_s=offer.receipt_interval_s,
                             paid_bytes=ledger.paid_bytes(), paid_amount=paid_amount)
        quarantine = quarantine_address(wg_key, self.quarantine_prefix) + "/128"
        return session, terms, [SetAllowedIPs(wg_key, (quarantine, f"{v4}/32", f"{v6}/128")), Admit(v4, v6, tuple(relay_to))]

    def _ledger(self, channel: ChannelState, signer: str, domain: str,
                voucher: VoucherChannel | None = None, open_price: int | None = None) -> ReceiptLedger:
        """The channel's ledger; receipts are checked for ``domain`` (payment_channels or the pool)
        and priced at ``open_price`` (the offer's price when None) when the ledger is new.

        A voucher channel's ledger is made with its :class:`VoucherChannel` record, which the store
        keeps (kind ``"voucher"``) so that the settler can settle it on the pool.
        """
        ledger = self._ledgers.get(channel.channel_id)
        if ledger is None:
            price = self.offer.price_per_gib if open_price is None else open_price
            terms = ChannelTerms(channel_id=channel.channel_id, signer=signer, deposit=channel.deposit,
                                 price_per_gib=price, credit_bytes=self.offer.credit_bytes,
                                 chain_id=self.offer.chain_id, verifying_contract=domain)
            ledger = self._ledger_for(terms) if voucher is None else self._ledger_for(terms, voucher)
            self._ledgers[channel.channel_id] = ledger
        elif ledger.terms.signer != signer:
            raise SetupRefused("wrong_signer", "the channel's stored signer differs")
        if channel.deposit > ledger.terms.deposit:
            ledger.set_deposit(channel.deposit)
        return ledger

    # -- metering ----------------------------------------------------------------------------------

    def on_receipt(self, wg_key: bytes, receipt, signature: bytes, now: float,
                   counter_bytes: int | None = None) -> tuple[Decision, list[Action]]:
        """A receipt from a session's control connection: verify, store, maybe resume.

        ``counter_bytes`` is the runtime's session count read just now (tunnel bytes less the drops
        last sampled), when it has one: the billed count is sampled only every meter period, in which
        a fast download moves megabytes, so a receipt for bytes already carried would look "beyond
        the counter" against the sample. It is never billed from (drops since the sample are in it).

        Raises:
            SetupRefused: the key has no session (``"no_session"``).
        """
        session = self.sessions.get(bytes(wg_key))
        if session is None:
            raise SetupRefused("no_session", "set up a session first")
        observed = session.observed_bytes
        if counter_bytes is not None:
            observed = max(observed, session.base_bytes + counter_bytes)
        decision = session.ledger.accept(receipt, signature, observed)
        actions: list[Action] = []
        if decision.accepted:
            session.last_activity = now
            if session.suspended and session.ledger.within_credit(session.exposure_bytes):
                session.suspended = False
                actions.append(Resume(session.v4, session.v6))
        return decision, actions

    def update_billed(self, wg_key: bytes, billed_bytes: int, now: float, counted_bytes: int | None = None) -> None:
        """The runtime's billed count for a session (monotonic; a lower value is ignored), and its
        newer count for the credit check (``counted_bytes``, see :attr:`NodeSession.counted_bytes`)."""
        session = self.sessions.get(bytes(wg_key))
        if session is None:
            return
        if counted_bytes is not None:
            session.counted_bytes = counted_bytes
        if billed_bytes > session.billed_bytes:
            session.billed_bytes = billed_bytes
            session.last_activity = now

    def tick(self, now: float) -> list[Action]:
        """Timeouts and credit gates; call every fraction of a second."""
        actions: list[Action] = []
        for wg_key, since in list(self.pending.items()):
            if now - since > self.offer.setup_timeout_s:
                del self.pending[wg_key]
                self._refuse("setup_timeout")
                actions.append(RemovePeer(wg_key))
        for wg_key, session in list(self.sessions.items()):
            if not session.suspended and not session.ledger.within_credit(session.exposure_bytes):
                session.suspended = True
                actions.append(Suspend(session.v4, session.v6, session.ledger.unpaid_bytes(session.exposure_bytes)))
            elif now - session.last_activity > self.offer.idle_timeout_s:
                actions.extend(self.end(wg_key))
        return actions

    def end(self, wg_key: bytes) -> list[Action]:
        """End a session (client left, idle, or node shutting down); its ledger stays."""
        session = self.sessions.pop(bytes(wg_key), None)
        self.pending.pop(bytes(wg_key), None)
        if session is None:
            return [RemovePeer(bytes(wg_key))]
        self.pool.release(session.v4)
        return [Forget(session.v4, session.v6), RemovePeer(session.wg_key)]

    def keys_of_node(self, node_id: int) -> list[bytes]:
        """The WireGuard keys in quarantine or in session whose node id (keccak256 of the key) is
        ``node_id``: what a revocation of that node must tear down (each one through :meth:`end`)."""
        return [key for key in {*self.pending, *self.sessions} if int.from_bytes(keccak(key), "big") == node_id]

    def ledgers(self) -> dict[bytes, ReceiptLedger]:
        """Every channel ledger this node holds (for settlement)."""
        return dict(self._ledgers)

    def count_refusal(self, reason: str) -> None:
        """Count a refusal the runtime made on the core's behalf (a chain port's, e.g. ``wrong_channel``)."""
        self._refuse(reason)

    def _refuse(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
