"""The node's chain port: registration at start, channel reads for session setup, close signatures.

Everything the node asks the chain goes through here (the session core and runtime never touch ape),
so a test can give the runtime the real contracts on anvil and the core a plain object.
"""

from __future__ import annotations

import logging

from eth_abi import encode as abi_encode
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

from agents.chain import eip712
from agents.chain.bindings import ChannelState, WarrenContracts, node_id_of
from agents.errors import UserError, preflight, preflight_tokens

__all__ = ["NodeChain", "channel_id_of"]

log = logging.getLogger("warren.node")

ZERO_ADDRESS = "0x" + "00" * 20
#: Gas asked for by the ETH checks before each transaction (generous round figures of what they use).
REGISTER_GAS, UPDATE_GAS, APPROVE_GAS = 250_000, 60_000, 50_000


def channel_id_of(chain_id: int, channels_address: str, node_id: bytes, client: str, signer: str) -> bytes:
    """payment_channels' id, computed locally: keccak256(abi_encode(chain.id, self, node_id, client,
    signer)) (contracts/payment_channels.vy ``_channel_id``; a test checks both agree)."""
    return keccak(abi_encode(["uint256", "address", "bytes32", "address", "address"],
                             [chain_id, to_checksum_address(channels_address), bytes(node_id),
                              to_checksum_address(client), to_checksum_address(signer)]))


class NodeChain:
    """The node's view of its deployment.

    Args:
        contracts: the deployment's contracts.
        operator: the operator's ape account (sends registration and settlement transactions, signs
            cooperative closes).
        wg_public_key: the node's WireGuard public key.
    """

    def __init__(self, contracts: WarrenContracts, operator, wg_public_key: bytes) -> None:
        self.contracts = contracts
        self.operator = operator
        self.wg_public_key = bytes(wg_public_key)
        self.node_id = node_id_of(self.wg_public_key)

    @property
    def chain_id(self) -> int:
        return self.contracts.chain_id

    @property
    def channels_address(self) -> str:
        return str(self.contracts.channels.address)

    def channel(self, channel_id: bytes) -> ChannelState:
        """A channel's state, read now."""
        return self.contracts.channel(channel_id)

    def channel_id_of(self, node_id: bytes, client: str, signer: str) -> bytes:
        """See :func:`channel_id_of` (no RPC)."""
        return channel_id_of(self.chain_id, self.channels_address, node_id, client, signer)

    def sign_close(self, close: eip712.CooperativeClose) -> bytes:
        """The operator's EIP-712 CooperativeClose signature (r || s || v)."""
        signable = encode_typed_data(full_message=eip712.typed_data(close, self.chain_id, self.channels_address))
        sig = self.operator.sign_message(signable)
        return bytes(sig.r) + bytes(sig.s) + bytes([sig.v])

    def ensure_registered(self, region: str, price_per_gib: int, stake: int) -> str:
        """Register and stake if the node is not registered; update region/price if they changed.

        Returns:
            What was done: "registered", "updated" or "unchanged".

        Raises:
            UserError: the node id belongs to another operator, or is revoked.
        """
        info = self.contracts.node(self.node_id)
        registry, token = self.contracts.registry, self.contracts.token
        operator = to_checksum_address(self.operator.address)
        if info.revoked:
            raise UserError(f"node {self.node_id.hex()} is revoked on chain: it can never serve again "
                            "(make a new WireGuard key with `warren node init --force`)")
        if info.operator in ("", ZERO_ADDRESS):
            preflight_tokens(token, operator, stake, "registering the node (its stake)")
            needs_approval = int(token.allowance(operator, registry.address)) < stake
            preflight(self.operator, REGISTER_GAS + (APPROVE_GAS if needs_approval else 0), "registering the node")
            if needs_approval:
                token.approve(registry.address, stake, sender=self.operator)
            registry.register_node(self.wg_public_key, region, price_per_gib, stake, sender=self.operator)
            log.info("registered node %s (region %s, price %d token wei/GiB, stake %d)", self.node_id.hex()[:16],
                     region, price_per_gib, stake)
            return "registered"
        if to_checksum_address(info.operator) != operator:
            raise UserError(f"node id {self.node_id.hex()} is registered by {info.operator}, not by this "
                            f"operator ({operator})")
        if info.region != region or info.price_per_gib != price_per_gib:
            preflight(self.operator, UPDATE_GAS, "updating the node's region and price")
            registry.update_node(self.node_id, region, price_per_gib, sender=self.operator)
            log.info("updated node: region %s -> %s, price %d -> %d", info.region, region, info.price_per_gib,
                     price_per_gib)
            return "updated"
        return "unchanged"
