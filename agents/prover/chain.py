"""The prover agent's chain adapter (ape): deposit, read Deposit events, submit, find channels.

Thin on purpose: the logic lives in ``notes``, ``tree`` and ``redemption``; this file only moves
their inputs and outputs to and from the pool contract. A redemption opens a channel held by the pool
(contracts/voucher_pool.vy); :func:`submit_redemption` (the node) and :func:`find_channel` (the
client, later) both return it as a :class:`~agents.chain.bindings.VoucherChannel`, read from the
``Redeemed`` event and checked against the pool's own view of the channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.chain.bindings import VoucherChannel, VoucherChannelError
from agents.prover.errors import ChainDataError, ProverError
from agents.prover.notes import NoteStore, StoredNote
from agents.prover.redemption import Redemption
from agents.prover.tree import DepositEvent, rebuild_tree
from zk.merkle import LeanIMT

__all__ = [
    "Submission",
    "channel_from_event",
    "deployment_pools",
    "deposit_note",
    "fetch_deposits",
    "find_channel",
    "mentions",
    "pool_tree",
    "submit_redemption",
    "sync_spent",
]


def deployment_pools(project: Any, deployment_path, chain_id: int) -> dict:
    """The voucher pools a deployment file names (``voucher_pool*`` entries), as
    :class:`~agents.chain.bindings.VoucherChannels` by checksummed address.

    These are the pools an agent trusts: a pool named only by the other side could be any contract.
    """
    from eth_utils import to_checksum_address

    from agents.chain.bindings import VoucherChannels
    from agents.chain.deployment import Deployment

    deployment = Deployment.load(deployment_path)
    return {to_checksum_address(address): VoucherChannels(project.voucher_pool.at(address), chain_id)
            for name, address in deployment.addresses.items() if name.startswith("voucher_pool")}


def deposit_note(store: NoteStore, pool: Any, token: Any, sender: Any, amount: int) -> StoredNote:
    """Create a note, save it, pay the pool's denomination and record the leaf index.

    The note is saved *before* the deposit is sent, so a crash cannot lose the secrets of money
    already paid.

    Raises:
        ProverError: ``amount`` is not this pool's denomination.
    """
    denomination = int(pool.denomination())
    if amount != denomination:
        raise ProverError(f"this pool takes exactly {denomination} token wei, not {amount}")
    stored = store.add(str(pool.address), denomination)
    if int(token.allowance(sender, pool)) < amount:
        token.approve(pool, amount, sender=sender)
    receipt = pool.deposit(stored.commitment, amount, sender=sender)
    logs = [log for log in receipt.decode_logs(pool.Deposit) if int(log.commitment) == stored.commitment]
    if len(logs) != 1:
        raise ChainDataError("deposit receipt lacks our Deposit event")
    stored.leaf_index = int(logs[0].leaf_index)
    store.save()
    return stored


def fetch_deposits(pool: Any, start_block: int = 0) -> list[DepositEvent]:
    """Every Deposit event of ``pool`` from ``start_block`` on."""
    head = pool.chain_manager.blocks.head.number
    return [DepositEvent(int(log.commitment), int(log.leaf_index), int(log.new_root))
            for log in pool.Deposit.range(start_block, head + 1)]


def pool_tree(pool: Any, start_block: int = 0) -> LeanIMT:
    """The pool's tree rebuilt from its events, checked against the pool's current root.

    Raises:
        ChainDataError: events inconsistent with each other or with the pool's state.
    """
    tree = rebuild_tree(fetch_deposits(pool, start_block))
    if tree.size != int(pool.size()) or tree.root != int(pool.root()):
        raise ChainDataError("rebuilt tree differs from the pool's size/root (events missing?)")
    return tree


@dataclass(frozen=True)
class Submission:
    """A submitted redemption: the channel it opened and the transaction that opened it."""

    channel: VoucherChannel
    receipt: Any

    @property
    def gas_used(self) -> int:
        """Gas of the redemption transaction."""
        return int(self.receipt.gas_used)

    def __getattr__(self, name: str) -> Any:
        # Callers written when submit_redemption returned the ape receipt (decode_logs, txn_hash...)
        # keep working: anything a Submission lacks is the receipt's.
        if name.startswith("__") or name == "receipt":  # copy/pickle probes, or not initialised yet
            raise AttributeError(name)
        return getattr(self.receipt, name)


def channel_from_event(pool: Any, event: Any) -> VoucherChannel:
    """The channel a decoded ``Redeemed`` event announces, checked against the pool's state.

    Checks: the id is ``pool.channel_id_of(nullifier_hash)``, and the pool stores the hash of the
    terms the event gives (node_id, signer, denomination - relayer_fee).

    Raises:
        ChainDataError: the event disagrees with the pool.
    """
    channel_id = bytes(event.channel_id)
    if channel_id != bytes(pool.channel_id_of(int(event.nullifier_hash))):
        raise ChainDataError("Redeemed event: channel id is not the pool's id for its nullifier hash")
    try:
        channel = VoucherChannel(
            pool=str(pool.address), chain_id=int(pool.chain_manager.chain_id), channel_id=channel_id,
            node_id=bytes(event.node_id), signer=str(event.signer),
            deposit=int(pool.denomination()) - int(event.relayer_fee))
    except VoucherChannelError as exc:
        raise ChainDataError(f"Redeemed event: {exc}") from exc
    stored = bytes(pool.channel(channel_id)[0])
    if stored != channel.terms_hash or stored != bytes(pool.terms_hash(*channel.terms)):
        raise ChainDataError("Redeemed event: the pool stores other terms for this channel")
    return channel


def submit_redemption(pool: Any, redemption: Redemption, sender: Any) -> Submission:
    """Call ``pool.redeem`` with the redemption's arguments (the node does this, as relayer).

    Returns:
        The opened channel (from the ``Redeemed`` event, checked against the pool) and the receipt.

    Raises:
        ProverError: the redemption names another pool.
        ChainDataError: the transaction lacks its ``Redeemed`` event or it disagrees with the pool.
        agents.chain.txsend.TransactionDropped: the transaction left the mempool unmined.
    """
    if redemption.pool.lower() != str(pool.address).lower():
        raise ProverError("redemption is for another pool")
    from agents.chain.txsend import mined

    # ape may hand back a pending transaction's receipt, without logs yet: wait for its block.
    receipt = mined(pool.redeem(*redemption.args(), sender=sender), "submitting a voucher redemption")
    events = [e for e in receipt.decode_logs(pool.Redeemed) if int(e.nullifier_hash) == redemption.nullifier_hash]
    if len(events) != 1:
        raise ChainDataError("redemption receipt lacks its Redeemed event")
    channel = channel_from_event(pool, events[0])
    expected = (bytes.fromhex(redemption.node_id[2:]), redemption.signer.lower())
    if (channel.node_id, channel.signer.lower()) != expected:
        raise ChainDataError("Redeemed event names another node or signer than the redemption")
    return Submission(channel, receipt)


def find_channel(pool: Any, nullifier_hash: int, start_block: int = 0) -> VoucherChannel | None:
    """The channel a note's redemption opened (the client's view, after the node submitted), or None.

    Raises:
        ChainDataError: the pool marks the note spent but no consistent ``Redeemed`` event says how.
    """
    if not pool.nullifier_spent(nullifier_hash):
        return None
    channel_id = bytes(pool.channel_id_of(nullifier_hash))
    head = pool.chain_manager.blocks.head.number
    events = list(pool.Redeemed.range(start_block, head + 1, search_topics={"channel_id": channel_id}))
    if len(events) != 1:
        raise ChainDataError(f"{len(events)} Redeemed events for channel 0x{channel_id.hex()}")
    return channel_from_event(pool, events[0])


def mentions(tx: Any, address: str) -> bool:
    """Whether a transaction (an ape receipt) names ``address``: as its sender, in its call data, or in
    any topic or data of its logs. What the unlinkability checks search: a voucher's redemption and
    channel transactions must not name the depositor.
    """
    needle = bytes.fromhex(address[2:].lower())
    if str(tx.sender).lower() == address.lower():
        return True
    blobs = [bytes(tx.transaction.data)]
    for entry in tx.logs:
        blobs += [bytes(topic) for topic in entry["topics"]]
        data = entry["data"]
        blobs.append(bytes.fromhex(data[2:]) if isinstance(data, str) else bytes(data))
    return any(needle in blob for blob in blobs)


def sync_spent(store: NoteStore, pool: Any) -> int:
    """Mark notes whose nullifier the pool has seen spent; returns how many changed."""
    changed = 0
    for n in store.unspent(str(pool.address)):
        if pool.nullifier_spent(n.note.nullifier_hash):
            n.spent = True
            changed += 1
    if changed:
        store.save()
    return changed
