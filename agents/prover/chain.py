"""The prover agent's chain adapter (ape): deposit, read Deposit events, submit, sync spent notes.

Thin on purpose: the logic lives in ``notes``, ``tree`` and ``redemption``; this file only moves
their inputs and outputs to and from the pool contract.
"""

from __future__ import annotations

from typing import Any

from agents.prover.errors import ChainDataError, ProverError
from agents.prover.notes import NoteStore, StoredNote
from agents.prover.redemption import Redemption
from agents.prover.tree import DepositEvent, rebuild_tree
from zk.merkle import LeanIMT

__all__ = ["deposit_note", "fetch_deposits", "pool_tree", "submit_redemption", "sync_spent"]


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


def submit_redemption(pool: Any, redemption: Redemption, sender: Any) -> Any:
    """Call ``pool.redeem`` with the redemption's arguments (the node does this, as relayer).

    Raises:
        ProverError: the redemption names another pool.
    """
    if redemption.pool.lower() != str(pool.address).lower():
        raise ProverError("redemption is for another pool")
    return pool.redeem(*redemption.args(), sender=sender)


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
