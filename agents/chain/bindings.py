"""Typed handles on a deployment of Warren's contracts, for the agents.

ape gives contract instances whose calls return tuples and ape types; agents want named fields and
plain Python values. :class:`WarrenContracts` wraps the five settlement contracts of one deployment
and turns the views agents read most (a node, a channel) into frozen dataclasses. Transactions stay
ape calls on the instances (``contracts.channels.settle(..., sender=operator)``), so gas, events and
reverts work as ape documents them.

Voucher channels (funded through a voucher pool, held by the pool itself) are named by a
:class:`VoucherChannel`: the pool stores only a hash of the channel's terms, so every call names
them. :class:`VoucherChannels` wraps one pool and takes a VoucherChannel where payment_channels takes
a channel id; its ``channel()`` returns the same :class:`ChannelState`, so node code reads, settles
and closes either kind of channel the same way. Receipts for a pool channel are signed for the pool's
EIP-712 domain (verifying contract = the pool), never payment_channels'.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass

from eth_abi import encode as abi_encode
from eth_utils import is_address, keccak, to_checksum_address

from agents.chain import eip712
from agents.chain.deployment import Deployment

__all__ = [
    "ChannelState",
    "ChannelStatus",
    "NodeInfo",
    "RewardEntry",
    "VoucherChannel",
    "VoucherChannelError",
    "VoucherChannels",
    "WarrenContracts",
    "node_id_of",
]


def node_id_of(wg_public_key: bytes) -> bytes:
    """A node's id: keccak256 of its 32-byte WireGuard public key (DESIGN.md, "Identities")."""
    if len(wg_public_key) != 32:
        raise ValueError(f"a WireGuard public key has 32 bytes, not {len(wg_public_key)}")
    return keccak(wg_public_key)


class ChannelStatus(enum.IntEnum):
    """payment_channels' channel states, as `channel()` returns them."""

    NONE = 0
    OPEN = 1
    CLOSING = 2
    FINALISED = 3


@dataclass(frozen=True)
class ChannelState:
    """One channel as payment_channels stores it (amounts in token wei, times in seconds)."""

    channel_id: bytes
    node_id: bytes
    client: str
    deposit: int
    settled: int
    settled_bytes: int
    close_at: int
    status: ChannelStatus

    @property
    def remaining(self) -> int:
        """What the deposit can still pay."""
        return self.deposit - self.settled


@dataclass(frozen=True)
class NodeInfo:
    """A node as node_registry knows it."""

    node_id: bytes
    operator: str
    wg_public_key: bytes
    region: str
    price_per_gib: int
    stake: int
    active: bool
    revoked: bool


@dataclass(frozen=True)
class RewardEntry:
    """A node's entry in one rewards epoch (contracts/rewards.vy).

    Attributes:
        epoch: the epoch number.
        service_kbps: the median of the challengers' measurements it entered with (0: not entered).
        region: its region at entry ("" if not entered).
        claimed: whether its reward was minted.
        pending: what a claim mints (0 when claimed or not entered; may still shrink while the
            epoch's submission window is open).
    """

    epoch: int
    service_kbps: int
    region: str
    claimed: bool
    pending: int


@dataclass(frozen=True)
class WarrenContracts:
    """The contracts of one deployment, as ape instances, plus the chain id receipts are bound to."""

    token: object
    registry: object
    channels: object
    reputation: object
    revocations: object
    chain_id: int
    rewards: object = None  # contracts/rewards.vy; None for a deployment made before it existed

    @classmethod
    def at(cls, project, deployment: Deployment, chain_id: int) -> WarrenContracts:
        """Attach to a deployment; refuses one made on another chain.

        Raises:
            ValueError: when the deployment's chain id differs from the connected chain's.
        """
        if deployment.chain_id != chain_id:
            raise ValueError(
                f"deployment is for chain {deployment.chain_id}, but the connected chain is {chain_id}"
            )
        return cls(
            token=project.warren_token.at(deployment.address("warren_token")),
            registry=project.node_registry.at(deployment.address("node_registry")),
            channels=project.payment_channels.at(deployment.address("payment_channels")),
            reputation=project.reputation.at(deployment.address("reputation")),
            revocations=project.revocation_registry.at(deployment.address("revocation_registry")),
            chain_id=chain_id,
            rewards=(project.rewards.at(deployment.addresses["rewards"]) if "rewards" in deployment.addresses
                     else None),
        )

    def node(self, node_id: bytes) -> NodeInfo:
        """What the registry says about a node (an unknown id gives an empty operator)."""
        registry = self.registry
        return NodeInfo(
            node_id=bytes(node_id),
            operator=str(registry.node_operator(node_id)),
            wg_public_key=bytes(registry.node_wg_key(node_id)),
            region=str(registry.node_region(node_id)),
            price_per_gib=int(registry.node_price(node_id)),
            stake=int(registry.node_stake(node_id)),
            active=bool(registry.is_active(node_id)),
            revoked=bool(registry.is_revoked(node_id)),
        )

    def reward_entry(self, node_id: bytes, epoch: int) -> RewardEntry:
        """A node's rewards entry for an epoch.

        Raises:
            ValueError: when this deployment has no rewards contract.
        """
        if self.rewards is None:
            raise ValueError("this deployment has no rewards contract: deploy again with `ape run deploy`")
        service, region, claimed = self.rewards.entry(node_id, epoch)
        return RewardEntry(epoch=int(epoch), service_kbps=int(service), region=str(region),
                           claimed=bool(claimed), pending=int(self.rewards.pending(node_id, epoch)))

    def region_paid(self, region: str) -> int:
        """What clients have paid nodes listed in ``region`` so far, token wei (fee included)."""
        if len(region) != 2:
            raise ValueError(f"a region is two letters (ISO 3166-1 alpha-2), not {region!r}")
        return int(self.channels.region_paid(int.from_bytes(region.encode("ascii"), "big")))

    def channel(self, channel_id: bytes) -> ChannelState:
        """A channel's state (status NONE for an id never opened)."""
        node_id, client, deposit, settled, settled_bytes, close_at, status = self.channels.channel(channel_id)
        return ChannelState(
            channel_id=bytes(channel_id),
            node_id=bytes(node_id),
            client=str(client),
            deposit=int(deposit),
            settled=int(settled),
            settled_bytes=int(settled_bytes),
            close_at=int(close_at),
            status=ChannelStatus(int(status)),
        )

    def channel_id_of(self, node_id: bytes, client: str, signer: str) -> bytes:
        """The id payment_channels gives the channel of a (node, client, payment signer) triple.

        The id commits to the node, so the same client and signer have a different channel (and
        receipts that pay nowhere else) at each node.
        """
        return bytes(self.channels.channel_id_of(node_id, client, signer))

    def sign(self, message: eip712.Receipt | eip712.CooperativeClose, private_key: bytes) -> bytes:
        """Sign a receipt or cooperative close for this deployment's payment_channels."""
        return eip712.sign(message, private_key, self.chain_id, self.channels.address)

    def sign_revocation(self, revocation: eip712.Revocation, private_key: bytes) -> bytes:
        """A guardian's signature on a revocation for this deployment's revocation_registry."""
        return eip712.sign(revocation, private_key, self.chain_id, self.revocations.address)

    def voucher_channels(self, project, pool: str) -> VoucherChannels:
        """The binding of one voucher pool's channels (the pool's address, e.g. from the deployment)."""
        return VoucherChannels(project.voucher_pool.at(pool), self.chain_id)


# -- voucher channels ------------------------------------------------------------------------------

class VoucherChannelError(Exception):
    """A voucher channel's terms are malformed, or disagree with what its pool stores."""


@dataclass(frozen=True)
class VoucherChannel:
    """A channel a voucher redemption opened in a voucher pool: its id and its terms.

    The pool keeps only ``keccak256(abi_encode(node_id, signer, deposit))`` (contracts/voucher_pool.vy),
    so whoever acts on the channel (the node settling, the signer closing) must know these terms; they
    come from the pool's ``Redeemed`` event. A client keeps this record next to the signer's key.

    Attributes:
        pool: checksummed address of the voucher pool (the receipts' EIP-712 verifying contract).
        chain_id: the chain of the pool (the receipts' EIP-712 chain id).
        channel_id: keccak256(abi_encode(chain_id, pool, nullifier_hash)), 32 bytes.
        node_id: the node the channel pays, 32 bytes.
        signer: checksummed address of the payment signer (also the refund address).
        deposit: denomination - relayer_fee, token wei.
    """

    pool: str
    chain_id: int
    channel_id: bytes
    node_id: bytes
    signer: str
    deposit: int

    def __post_init__(self) -> None:
        for name in ("pool", "signer"):
            value = getattr(self, name)
            if not (isinstance(value, str) and is_address(value)):
                raise VoucherChannelError(f"{name} is not an address: {value!r}")
            object.__setattr__(self, name, to_checksum_address(value))
        for name in ("channel_id", "node_id"):
            value = getattr(self, name)
            if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
                raise VoucherChannelError(f"{name} must be 32 bytes")
            object.__setattr__(self, name, bytes(value))
        if not (isinstance(self.deposit, int) and self.deposit > 0):
            raise VoucherChannelError(f"deposit must be a positive number of token wei, not {self.deposit!r}")
        if not (isinstance(self.chain_id, int) and self.chain_id > 0):
            raise VoucherChannelError(f"chain id must be positive, not {self.chain_id!r}")

    @property
    def terms_hash(self) -> bytes:
        """What the pool stores for this channel: keccak256(abi_encode(node_id, signer, deposit))."""
        return keccak(abi_encode(["bytes32", "address", "uint256"], [self.node_id, self.signer, self.deposit]))

    @property
    def terms(self) -> tuple[bytes, str, int]:
        """(node_id, signer, deposit): the arguments every pool channel call repeats."""
        return self.node_id, self.signer, self.deposit

    def to_json(self) -> str:
        """JSON text (bytes as 0x-hex, the deposit as a decimal string)."""
        d = asdict(self)
        d.update(channel_id="0x" + self.channel_id.hex(), node_id="0x" + self.node_id.hex(),
                 deposit=str(self.deposit))
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> VoucherChannel:
        """Parse :meth:`to_json`'s output (or the dict it holds).

        Raises:
            VoucherChannelError: malformed document.
        """
        try:
            d = json.loads(text) if isinstance(text, str) else dict(text)
            return cls(pool=d["pool"], chain_id=int(d["chain_id"]), channel_id=_bytes32(d["channel_id"]),
                       node_id=_bytes32(d["node_id"]), signer=d["signer"], deposit=int(d["deposit"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise VoucherChannelError(f"malformed voucher channel: {exc}") from exc


def _bytes32(text: str) -> bytes:
    if not (isinstance(text, str) and text.startswith("0x") and len(text) == 66):
        raise ValueError(f"expected 0x + 64 hex digits, got {text!r}")
    return bytes.fromhex(text[2:])


@dataclass(frozen=True)
class VoucherChannels:
    """One voucher pool's channels, driven by :class:`VoucherChannel` records.

    The methods mirror payment_channels' (``channel``, ``settle``, ``cooperative_close``,
    ``start_close``, ``finalize_close``, ``exit_revoked``) with the channel's terms filled in from the
    record; transactions return ape receipts and revert as the pool does ("voucher_pool: ...").

    Attributes:
        pool: the voucher_pool ape instance.
        chain_id: the connected chain's id.
    """

    pool: object
    chain_id: int

    @property
    def address(self) -> str:
        """The pool's address: the verifying contract of its channels' receipts."""
        return str(self.pool.address)

    def _check(self, channel: VoucherChannel) -> None:
        if channel.pool != to_checksum_address(self.address) or channel.chain_id != self.chain_id:
            raise VoucherChannelError(
                f"channel belongs to pool {channel.pool} on chain {channel.chain_id}, not to "
                f"{self.address} on chain {self.chain_id}")

    def channel(self, channel: VoucherChannel) -> ChannelState:
        """The channel's state, as :meth:`WarrenContracts.channel` gives a payment channel's.

        ``client`` is the signer (a voucher channel refunds its signer); status NONE for a channel
        never opened.

        Raises:
            VoucherChannelError: the channel is another pool's, or the pool stores other terms.
        """
        self._check(channel)
        terms_hash, settled, settled_bytes, close_at, status = self.pool.channel(channel.channel_id)
        status = ChannelStatus(int(status))
        if status is not ChannelStatus.NONE and bytes(terms_hash) != channel.terms_hash:
            raise VoucherChannelError(f"pool stores other terms for channel 0x{channel.channel_id.hex()}")
        return ChannelState(
            channel_id=channel.channel_id,
            node_id=channel.node_id,
            client=channel.signer,
            deposit=channel.deposit,
            settled=int(settled),
            settled_bytes=int(settled_bytes),
            close_at=int(close_at),
            status=status,
        )

    def settle(self, channel: VoucherChannel, receipt: eip712.Receipt, signature: bytes, sender):
        """Settle a receipt (the node operator of ``channel.node_id``); returns the ape receipt."""
        self._check(channel)
        if receipt.channel_id != channel.channel_id:
            raise VoucherChannelError("receipt is for another channel")
        return self.pool.settle(channel.channel_id, *channel.terms, receipt.cumulative_bytes,
                                receipt.cumulative_amount, signature, sender=sender)

    def cooperative_close(self, channel: VoucherChannel, receipt: eip712.Receipt, signature: bytes,
                          node_signature: bytes, sender):
        """Close at once with the signer's final receipt and the operator's CooperativeClose."""
        self._check(channel)
        if receipt.channel_id != channel.channel_id:
            raise VoucherChannelError("receipt is for another channel")
        return self.pool.cooperative_close(channel.channel_id, *channel.terms, receipt.cumulative_bytes,
                                           receipt.cumulative_amount, signature, node_signature,
                                           sender=sender)

    def start_close(self, channel: VoucherChannel, sender):
        """Start a unilateral close (``sender`` must be the signer)."""
        self._check(channel)
        return self.pool.start_close(channel.channel_id, *channel.terms, sender=sender)

    def start_close_for(self, channel: VoucherChannel, signature: bytes, sender):
        """Start a unilateral close with the signer's :class:`eip712.CloseRequest` signature
        (``sender`` may be anyone: a relayer, so the signer needs no gas money)."""
        self._check(channel)
        return self.pool.start_close_for(channel.channel_id, *channel.terms, signature, sender=sender)

    def finalize_close(self, channel: VoucherChannel, sender):
        """Finish a unilateral close once the challenge period is over (anyone)."""
        self._check(channel)
        return self.pool.finalize_close(channel.channel_id, *channel.terms, sender=sender)

    def exit_revoked(self, channel: VoucherChannel, sender):
        """Refund the signer at once because the node is revoked or not registered (anyone)."""
        self._check(channel)
        return self.pool.exit_revoked(channel.channel_id, *channel.terms, sender=sender)

    def sign(self, message: eip712.Receipt | eip712.CooperativeClose | eip712.CloseRequest,
             private_key: bytes) -> bytes:
        """Sign a receipt, cooperative close or close request for this pool's domain."""
        return eip712.sign(message, private_key, self.chain_id, self.address)
