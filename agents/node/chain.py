"""The node's chain port: registration at start, channel reads for session setup, close signatures.

Everything the node asks the chain goes through here (the session core and runtime never touch ape),
so a test can give the runtime the real contracts on anvil and the core a plain object.

Voucher-pool channels. A client paying anonymously (``warren connect --pay voucher``) holds a note
in a voucher pool; the channel its redemption opens is held by the pool and named by its terms. Why
the client's redemption reaches the node *inside the tunnel, during session setup* (the quarantine
control channel), rather than as a file the user hands to the operator for ``warren voucher submit``:

* the user runs one command. A file handed over out of band needs a second channel between a
  stranger and an operator (mail, a web form) that would itself link the two, and a wait for a person;
* the redemption is sent by the node's operator (it earns the relayer fee), so the transaction that
  opens the channel carries no address of the client's, and the client's signer needs no ETH
  (funding it would link it to the depositor);
* the redemption travels only inside WireGuard, bound to a request signed by the channel's fresh
  signer for this tunnel, this node and this minute, so a captured one is useless elsewhere; the
  node refuses one that pays another node before spending anything, and simulates the transaction
  (a free ``eth_call``, which runs the pool's own verifier) before sending it, so a bad proof costs
  a quarantined client's setup attempt and not the node's gas;
* a retried setup (a client whose first attempt timed out) finds the note already redeemed: the node
  skips the submission and reads the channel, so nothing is redeemed twice.

``warren voucher submit`` stays for operators who want to take redemptions by hand.
"""

from __future__ import annotations

import logging
import threading

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

from agents.chain import eip712
from agents.chain.bindings import (
    ChannelState,
    VoucherChannel,
    VoucherChannelError,
    VoucherChannels,
    WarrenContracts,
    node_id_of,
)
from agents.errors import UserError, preflight, preflight_tokens
from agents.node.session import SetupRefused

__all__ = ["NodeChain", "PriceUpdateRefused", "channel_id_of"]

log = logging.getLogger("warren.node")

ZERO_ADDRESS = "0x" + "00" * 20
#: Gas asked for by the ETH checks before each transaction (generous round figures of what they use).
REGISTER_GAS, UPDATE_GAS, APPROVE_GAS = 250_000, 60_000, 50_000
#: voucher_pool.redeem as relayer: 269,593 steady, 286,681 for a relayer's first (docs/BENCHMARKS.md).
REDEEM_GAS = 290_000


class PriceUpdateRefused(Exception):
    """The registry refused a price update (its revert string, e.g. ``"node_registry: updated this epoch"``)."""


def _topic(abi) -> str:
    """An event's topic 0: the keccak of its signature."""
    return "0x" + keccak(text=abi.selector).hex()


def _decoded(abi, log) -> dict:
    """An event log's non-indexed fields by name."""
    data = [i for i in abi.inputs if not i.indexed]
    values = abi_decode([i.canonical_type for i in data], bytes(log["data"]))
    return dict(zip([i.name for i in data], values, strict=True))


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
        voucher_pools: the deployment's voucher pools (by checksummed address) whose channels the
            node accepts (:func:`agents.prover.chain.deployment_pools`).
        tx_lock: held while the operator sends a transaction. Share it with every other sender of
            the same account (the settler): ape takes the nonce from the chain when it signs, so two
            threads sending at once (a redemption in a session setup, a settlement) could take the
            same one and lose a transaction.
        start_block: the deployment's first block: where a channel's ChannelOpened is looked for.
    """

    def __init__(self, contracts: WarrenContracts, operator, wg_public_key: bytes,
                 voucher_pools: dict[str, VoucherChannels] | None = None,
                 tx_lock: threading.Lock | None = None, start_block: int = 0) -> None:
        self.contracts = contracts
        self.start_block = int(start_block)
        self.operator = operator
        self.tx_lock = tx_lock or threading.Lock()
        self.wg_public_key = bytes(wg_public_key)
        self.node_id = node_id_of(self.wg_public_key)
        self.voucher_pools = dict(voucher_pools or {})
        #: voucher channel id -> its pool's address (the EIP-712 domain of its close signature).
        self._voucher_domain: dict[bytes, str] = {}

    @property
    def chain_id(self) -> int:
        return self.contracts.chain_id

    @property
    def channels_address(self) -> str:
        return str(self.contracts.channels.address)

    def channel(self, channel_id: bytes) -> ChannelState:
        """A channel's state, read now."""
        return self.contracts.channel(channel_id)

    def open_price(self, channel_id: bytes) -> int | None:
        """The price a payment channel was opened at (token wei per GiB): its ChannelOpened event's
        ``price_per_gib``, the node's listing when the channel opened. One ``eth_getLogs`` filtered by
        the event and the channel id (an indexed topic), from the deployment's first block: one log
        comes back, however long the chain. None when there is none (a pruned history).
        """
        channels = self.contracts.channels
        logs = self._logs(channels, [channels.ChannelOpened.abi], bytes(channel_id))
        return _decoded(channels.ChannelOpened.abi, logs[-1])["price_per_gib"] if logs else None

    def voucher_open_price(self, channel_id: bytes, pool: str) -> int | None:
        """The price a voucher channel was opened at (token wei per GiB): the node's listing when the
        pool logged the channel's ``Redeemed``, as the registry's last ``NodeRegistered`` or
        ``NodeUpdated`` of this node before that log says. A voucher channel has no price on chain
        (the pool opens it for whoever redeems a note), so the listing at its opening is what its
        client saw and agreed to; a later change of the listing must not reach it. Two
        ``eth_getLogs``, each filtered by an indexed id. None when the pool logged no such channel
        for this node, or the history is pruned.
        """
        binding = self.voucher_pools.get(to_checksum_address(pool))
        if binding is None:
            return None
        redeemed_abi = binding.pool.Redeemed.abi
        redeemed = [log for log in self._logs(binding.pool, [redeemed_abi], bytes(channel_id))
                    if bytes(log["topics"][2]) == self.node_id]
        if not redeemed:
            return None
        opened = redeemed[-1]
        registry = self.contracts.registry
        abis = [registry.NodeRegistered.abi, registry.NodeUpdated.abi]
        at = (opened["blockNumber"], opened["logIndex"])
        listings = [log for log in self._logs(registry, abis, self.node_id, to_block=opened["blockNumber"])
                    if (log["blockNumber"], log["logIndex"]) < at]
        if not listings:
            return None
        last = listings[-1]
        abi = next(a for a in abis if "0x" + bytes(last["topics"][0]).hex() == _topic(a))
        return _decoded(abi, last)["price_per_gib"]

    def _logs(self, contract, abis: list, first_topic: bytes, to_block: int | str = "latest") -> list:
        """``contract``'s logs of any of ``abis`` whose first indexed field is ``first_topic``, from
        the deployment's first block, in chain order."""
        import ape

        return list(ape.chain.provider.web3.eth.get_logs({
            "address": str(contract.address), "fromBlock": self.start_block, "toBlock": to_block,
            "topics": [[_topic(abi) for abi in abis], "0x" + bytes(first_topic).hex()]}))

    def price_epoch_s(self) -> int:
        """Seconds per epoch of the registry's once-per-epoch listing rule (the reputation/rewards epoch;
        reputation's when the registry has no limit)."""
        return int(self.contracts.registry.update_epoch_length()) or int(self.contracts.reputation.epoch_length())

    def listed_price(self) -> int:
        """The node's price on chain now, token wei per GiB."""
        return int(self.contracts.registry.node_price(self.node_id))

    def auto_start_price(self, floor: int, ceiling: int) -> int:
        """Where ``price_per_gib = "auto"`` starts: the listing on chain, within ``[floor, ceiling]``;
        the floor for a node not registered yet (it earns its way up)."""
        info = self.contracts.node(self.node_id)
        if info.operator in ("", ZERO_ADDRESS):
            return floor
        return min(ceiling, max(floor, info.price_per_gib))

    def update_price(self, region: str, price_per_gib: int) -> str:
        """List ``price_per_gib`` (and ``region``) on chain; returns the transaction hash.

        Raises:
            PriceUpdateRefused: the registry reverted (its string: once per epoch, a revoked key, ...).
            UserError: the operator cannot pay the gas.
            Exception: the chain did not answer (retry later).
        """
        from ape.exceptions import ContractLogicError

        from agents.chain.txsend import send_as

        what = "updating the node's price"
        registry = self.contracts.registry
        with self.tx_lock:
            preflight(self.operator, UPDATE_GAS, what)
            try:
                receipt = send_as(self.operator, lambda: registry.update_node(
                    self.node_id, region, price_per_gib, sender=self.operator), what)
            except ContractLogicError as exc:
                raise PriceUpdateRefused(str(getattr(exc, "message", None) or exc).strip()) from None
        return str(receipt.txn_hash)

    def channel_id_of(self, node_id: bytes, client: str, signer: str) -> bytes:
        """See :func:`channel_id_of` (no RPC)."""
        return channel_id_of(self.chain_id, self.channels_address, node_id, client, signer)

    def session_channel(self, channel_id: bytes, names: dict) -> ChannelState:
        """The channel a session request names, read now: a payment channel by its id, a voucher
        channel (``names`` has ``pool``) as the pool shows the terms the request names, with this
        node as the node.

        Raises:
            SetupRefused: a pool that is not the deployment's (``foreign_pool``), malformed terms
                (``bad_request``), or terms the pool does not hold for this channel (``wrong_channel``:
                another node's channel, another signer or deposit).
        """
        if "pool" not in names:
            return self.channel(channel_id)
        binding = self.voucher_pools.get(names["pool"])
        if binding is None:
            raise SetupRefused("foreign_pool", "this node settles only on its deployment's voucher pools")
        try:
            record = VoucherChannel(pool=names["pool"], chain_id=self.chain_id, channel_id=bytes(channel_id),
                                    node_id=self.node_id, signer=names.get("signer"), deposit=names.get("deposit"))
        except VoucherChannelError as exc:
            raise SetupRefused("bad_request", str(exc)) from None
        try:
            state = binding.channel(record)
        except VoucherChannelError:
            raise SetupRefused("wrong_channel", "the pool holds other terms for this channel (another node, "
                               "signer or deposit)") from None
        self._voucher_domain[record.channel_id] = record.pool
        return state

    def redeem(self, redemption) -> str:
        """Submit a client's redemption as relayer (see the module docstring for why the node does).

        Args:
            redemption: an :class:`agents.prover.redemption.Redemption` the session core checked
                (:meth:`agents.node.session.NodeSessions.check_redemption`).

        Returns:
            ``"redeemed"``, or ``"already"`` when the note was redeemed before (a retried setup).

        Raises:
            SetupRefused: the pool is not ours, the pool would refuse it (``bad_redemption``: an
                invalid proof, an unknown root, ...), or the operator cannot pay the gas
                (``node_unavailable``; the operator's log says why in plain words).
        """
        from ape.exceptions import ContractLogicError

        from agents.prover.chain import submit_redemption

        binding = self.voucher_pools.get(to_checksum_address(redemption.pool))
        if binding is None:
            raise SetupRefused("foreign_pool", "this node settles only on its deployment's voucher pools")
        pool = binding.pool
        if pool.nullifier_spent(redemption.nullifier_hash):
            return "already"
        try:
            pool.redeem.call(*redemption.args(), sender=self.operator)  # eth_call: the pool's verifier, no gas
        except ContractLogicError as exc:
            raise SetupRefused("bad_redemption", getattr(exc, "message", None) or str(exc)) from None
        try:
            preflight(self.operator, REDEEM_GAS, "submitting a client's voucher redemption")
        except UserError as exc:
            log.error("%s", exc)
            raise SetupRefused("node_unavailable", "the node cannot submit redemptions now") from None
        with self.tx_lock:
            submission = submit_redemption(pool, redemption, self.operator)
        log.info("redeemed a voucher as relayer: channel %s, fee %d token wei, gas %d",
                 submission.channel.channel_id.hex()[:16], redemption.relayer_fee, submission.gas_used)
        return "redeemed"

    def sign_close(self, close: eip712.CooperativeClose) -> bytes:
        """The operator's EIP-712 CooperativeClose signature (r || s || v), for the domain of the
        contract holding the channel (its voucher pool, or payment_channels)."""
        domain = self._voucher_domain.get(bytes(close.channel_id), self.channels_address)
        signable = encode_typed_data(full_message=eip712.typed_data(close, self.chain_id, domain))
        # encode_rsv pads r and s to 32 bytes: ape builds them with to_bytes(int), which drops a
        # leading zero byte (1 signature in 128), and the contract refuses a 64-byte signature
        # (CI: "signature_recovery: invalid signature length" on a cooperative close).
        return bytes(self.operator.sign_message(signable).encode_rsv())

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
