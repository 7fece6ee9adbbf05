"""The prover agent: the client's notes and payment signers, the pool's tree, proofs, redemptions.

See ``agents.prover.cli`` for the ``warren voucher`` commands and ``agents.prover.chain`` for the
chain adapter (deposit, submit a redemption and get its :class:`VoucherChannel`, find a channel).
"""

from agents.chain.bindings import VoucherChannel
from agents.prover.errors import ChainDataError, ProverError
from agents.prover.notes import NoteStore, StoredNote
from agents.prover.redemption import Redemption, check_redemption, make_redemption
from agents.prover.signers import SignerStore, StoredSigner
from agents.prover.tree import DepositEvent, rebuild_tree

__all__ = [
    "ChainDataError", "ProverError", "NoteStore", "StoredNote", "Redemption", "check_redemption",
    "make_redemption", "SignerStore", "StoredSigner", "VoucherChannel", "DepositEvent", "rebuild_tree",
]
