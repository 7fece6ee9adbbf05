"""The prover agent: the client's notes, the pool's tree, proofs, and redemptions for nodes.

See ``agents.prover.cli`` for the ``warren voucher`` commands.
"""

from agents.prover.errors import ChainDataError, ProverError
from agents.prover.notes import NoteStore, StoredNote
from agents.prover.redemption import Redemption, check_redemption, make_redemption
from agents.prover.tree import DepositEvent, rebuild_tree

__all__ = [
    "ChainDataError", "ProverError", "NoteStore", "StoredNote", "Redemption", "check_redemption",
    "make_redemption", "DepositEvent", "rebuild_tree",
]
