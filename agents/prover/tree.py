"""Rebuild a pool's LeanIMT from its ``Deposit(commitment, leaf_index, new_root)`` events.

Sans-I/O: takes decoded events in any order, returns the tree, and checks every root the contract
announced against our own computation, so a wrong event source (or a pool whose tree disagrees with
``zk.merkle``) is caught before we prove against a root the pool would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from agents.prover.errors import ChainDataError
from zk.merkle import LeanIMT

__all__ = ["DepositEvent", "rebuild_tree"]


@dataclass(frozen=True)
class DepositEvent:
    """One decoded Deposit event."""

    commitment: int
    leaf_index: int
    new_root: int


def rebuild_tree(events: Iterable[DepositEvent]) -> LeanIMT:
    """The pool's tree after these deposits.

    Raises:
        ChainDataError: missing or duplicate leaf indices, or an announced root we do not reproduce.
    """
    ordered = sorted(events, key=lambda e: e.leaf_index)
    tree = LeanIMT()
    for expected, ev in enumerate(ordered):
        if ev.leaf_index != expected:
            raise ChainDataError(f"deposit events: expected leaf {expected}, got {ev.leaf_index}")
        try:
            root = tree.insert(ev.commitment)
        except ValueError as exc:
            raise ChainDataError(f"deposit {expected}: {exc}") from exc
        if root != ev.new_root:
            raise ChainDataError(f"deposit {expected}: pool announced root {ev.new_root}, we computed {root}")
    return tree
