"""Typed handles on a deployment of Warren's contracts, for the agents.

ape gives contract instances whose calls return tuples and ape types; agents want named fields and
plain Python values. :class:`WarrenContracts` wraps the five settlement contracts of one deployment
and turns the views agents read most (a node, a channel) into frozen dataclasses. Transactions stay
ape calls on the instances (``contracts.channels.settle(..., sender=operator)``), so gas, events and
reverts work as ape documents them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from eth_utils import keccak

from agents.chain import eip712
from agents.chain.deployment import Deployment

__all__ = ["ChannelState", "ChannelStatus", "NodeInfo", "WarrenContracts", "node_id_of"]


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
class WarrenContracts:
    """The contracts of one deployment, as ape instances, plus the chain id receipts are bound to."""

    token: object
    registry: object
    channels: object
    reputation: object
    revocations: object
    chain_id: int

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

    def channel_id_of(self, client: str, signer: str) -> bytes:
        """The id payment_channels gives the channel of a (client, payment signer) pair."""
        return bytes(self.channels.channel_id_of(client, signer))

    def sign(self, message: eip712.Receipt | eip712.CooperativeClose, private_key: bytes) -> bytes:
        """Sign a receipt or cooperative close for this deployment's payment_channels."""
        return eip712.sign(message, private_key, self.chain_id, self.channels.address)

    def sign_revocation(self, revocation: eip712.Revocation, private_key: bytes) -> bytes:
        """A guardian's signature on a revocation for this deployment's revocation_registry."""
        return eip712.sign(revocation, private_key, self.chain_id, self.revocations.address)
