"""A redemption: what the client hands to the node, and what the node submits to the pool.

The client proves (``make_redemption``) and gives the node a small JSON document; the node checks it
(``check_redemption``: same pool, its own node id, proof valid for the public inputs recomputed from
the arguments, so it never pays gas for a bad one) and calls ``voucher_pool.redeem`` as relayer,
earning the fee. The pool opens a channel to the node whose payment signer is the redemption's fresh
key, with a deposit of denomination - fee (``agents.prover.chain.submit_redemption`` returns it).
The depositor's address never appears in the redemption.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from agents.prover.errors import ProverError
from agents.prover.notes import StoredNote
from zk.export import proof_calldata
from zk.groth16 import Proof, Prover, ProvingKey, VerifyingKey, verify
from zk.merkle import LeanIMT
from zk.voucher import ext_data_hash, voucher_circuit, voucher_inputs

__all__ = ["Redemption", "make_redemption", "check_redemption"]


@dataclass(frozen=True)
class Redemption:
    """Arguments of ``voucher_pool.redeem`` plus the pool they are for.

    Attributes:
        pool: pool address.
        proof: the proof as ``uint256[8]`` (A, B imaginary-first, C).
        root / nullifier_hash: public inputs.
        node_id: 0x-hex bytes32 of the node paid.
        signer: the channel's payment signer (a fresh key).
        relayer_fee: paid to the submitter, token wei.
    """

    pool: str
    proof: tuple[int, ...]
    root: int
    nullifier_hash: int
    node_id: str
    signer: str
    relayer_fee: int

    def args(self) -> tuple:
        """Positional arguments for ``voucher_pool.redeem``."""
        return (list(self.proof), self.root, self.nullifier_hash, bytes.fromhex(self.node_id[2:]),
                self.signer, self.relayer_fee)

    def public_inputs(self) -> list[int]:
        """[root, nullifier_hash, ext_data_hash] recomputed from the arguments."""
        return [self.root, self.nullifier_hash,
                ext_data_hash(bytes.fromhex(self.node_id[2:]), self.signer, self.relayer_fee)]

    def to_json(self) -> str:
        """JSON text (numbers as decimal strings)."""
        d = asdict(self)
        d["proof"] = [str(v) for v in self.proof]
        for k in ("root", "nullifier_hash", "relayer_fee"):
            d[k] = str(d[k])
        return json.dumps(d, indent=1)

    @staticmethod
    def from_json(text: str) -> "Redemption":
        """Parse ``to_json``'s output.

        Raises:
            ProverError: malformed document.
        """
        try:
            d = json.loads(text)
            node_id = d["node_id"]
            if not (isinstance(node_id, str) and node_id.startswith("0x") and len(node_id) == 66):
                raise ValueError("node_id must be 0x + 64 hex digits")
            bytes.fromhex(node_id[2:])
            proof = tuple(int(v) for v in d["proof"])
            if len(proof) != 8:
                raise ValueError("proof must have 8 words")
            return Redemption(str(d["pool"]), proof, int(d["root"]), int(d["nullifier_hash"]), node_id,
                              str(d["signer"]), int(d["relayer_fee"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ProverError(f"malformed redemption: {exc}") from exc


def make_redemption(stored: StoredNote, tree: LeanIMT, pk: ProvingKey, max_depth: int, node_id: bytes,
                    signer: str, relayer_fee: int = 0, prover: Prover | None = None) -> Redemption:
    """Prove that ``stored`` is in ``tree`` and bind the proof to node, signer and fee.

    Raises:
        ProverError: the note is spent, not deposited, or not at its index in the tree.
    """
    if stored.spent:
        raise ProverError("note already spent")
    if stored.leaf_index is None:
        raise ProverError("note was never deposited")
    if stored.leaf_index >= tree.size or tree.leaves[stored.leaf_index] != stored.commitment:
        raise ProverError("note is not in the pool's tree at its index (tree not synced?)")
    circuit = voucher_circuit(max_depth)
    ext = ext_data_hash(node_id, signer, relayer_fee)
    witness = circuit.witness(voucher_inputs(stored.note, tree.proof(stored.leaf_index), ext, max_depth))
    if prover is None:
        with Prover(pk, circuit, precompute=False) as one_off:
            proof = one_off.prove(witness)
    else:
        proof = prover.prove(witness)
    return Redemption(stored.pool, tuple(proof_calldata(proof)), tree.root, stored.note.nullifier_hash,
                      "0x" + node_id.hex(), signer, relayer_fee)


def check_redemption(vk: VerifyingKey, redemption: Redemption, pool: str | None = None,
                     node_id: bytes | None = None) -> bool:
    """The node's check before submitting: right pool, our node, valid proof for the recomputed inputs.

    Args:
        vk: the pool's verification key.
        redemption: what the client handed over.
        pool: the pool the node will submit to (None: not checked).
        node_id: the node's own id (None: not checked): a redemption paying another node is refused,
            since submitting it would spend our gas on someone else's channel.
    """
    if pool is not None and redemption.pool.lower() != pool.lower():
        return False
    if node_id is not None and redemption.node_id.lower() != "0x" + bytes(node_id).hex():
        return False
    w = redemption.proof
    proof = Proof((w[0], w[1]), ((w[3], w[2]), (w[5], w[4])), (w[6], w[7]))
    try:
        public = redemption.public_inputs()
    except ValueError:
        return False
    return verify(vk, public, proof)
