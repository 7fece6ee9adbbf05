"""The voucher circuit: "I know a note in the pool's tree, here is its nullifier hash, and this
redemption goes to that node, that signer, with that fee".

Public inputs (``zk/PUBLIC_INPUTS.md``): ``root``, ``nullifier_hash``, ``ext_data_hash``.
Private inputs: ``nullifier``, ``secret``, ``depth`` and, per level, ``index_i`` / ``sibling_i``.

    nullifier_hash == Poseidon([nullifier])
    leaf = commitment = Poseidon([nullifier_hash, secret])
    root == LeanIMT root of leaf along the (compressed) path
    ext_data_hash^2 is computed, so the input is bound into the proof
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import cache

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from zk.field import R, FieldError
from zk.gadgets import lean_imt_root, poseidon_gadget
from zk.merkle import MerkleProof
from zk.poseidon import poseidon
from zk.r1cs import Circuit

__all__ = [
    "Note", "voucher_circuit", "voucher_inputs", "ext_data_hash", "commitment_of",
    "nullifier_hash_of", "PUBLIC_INPUTS",
]

#: Public inputs, in order (the verifier's IC[1..]).
PUBLIC_INPUTS = ("root", "nullifier_hash", "ext_data_hash")
#: Bits of randomness in a fresh nullifier / secret (31 bytes: always below R, as Tornado's notes).
_NOTE_BITS = 248


def nullifier_hash_of(nullifier: int) -> int:
    """``Poseidon([nullifier])``: revealed when the note is redeemed."""
    return poseidon([nullifier])


def commitment_of(nullifier: int, secret: int) -> int:
    """``Poseidon([Poseidon([nullifier]), secret])``: the leaf deposited into the pool."""
    return poseidon([nullifier_hash_of(nullifier), secret])


@dataclass(frozen=True)
class Note:
    """A deposit's secrets; whoever holds them can redeem the deposit.

    Attributes:
        nullifier: random field element, revealed only as its hash.
        secret: random field element, never revealed.
    """

    nullifier: int
    secret: int

    @staticmethod
    def random() -> "Note":
        """A fresh note from the OS CSPRNG."""
        return Note(secrets.randbits(_NOTE_BITS), secrets.randbits(_NOTE_BITS))

    @property
    def commitment(self) -> int:
        """The leaf to deposit."""
        return commitment_of(self.nullifier, self.secret)

    @property
    def nullifier_hash(self) -> int:
        """The value that marks this note spent."""
        return nullifier_hash_of(self.nullifier)


def ext_data_hash(node_id: bytes, signer: str, relayer_fee: int) -> int:
    """``keccak256(abi.encode(bytes32 node_id, address signer, uint256 fee)) mod R``.

    Raises:
        FieldError: for a node id that is not 32 bytes or a negative / oversized fee.
    """
    if len(node_id) != 32:
        raise FieldError("node_id must be 32 bytes")
    if not 0 <= relayer_fee < 1 << 256:
        raise FieldError("relayer_fee must be a uint256")
    data = abi_encode(["bytes32", "address", "uint256"], [node_id, to_checksum_address(signer), relayer_fee])
    return int.from_bytes(keccak(data), "big") % R


@cache
def voucher_circuit(max_depth: int) -> Circuit:
    """The voucher circuit for trees of up to 2^max_depth leaves (built once per depth)."""
    c = Circuit()
    root = c.public("root")
    nullifier_hash = c.public("nullifier_hash")
    ext = c.public("ext_data_hash")
    nullifier = c.private("nullifier")
    secret = c.private("secret")
    depth = c.private("depth")
    indices = [c.private(f"index_{i}") for i in range(max_depth)]
    siblings = [c.private(f"sibling_{i}") for i in range(max_depth)]

    nh = poseidon_gadget(c, [nullifier])
    c.assert_equal(nh, nullifier_hash)
    leaf = poseidon_gadget(c, [nh, secret])
    c.assert_equal(lean_imt_root(c, leaf, depth, indices, siblings), root)
    c.mul(ext, ext, "ext_data_hash_squared")  # binds ext_data_hash (Tornado's recipientSquare)
    return c


def voucher_inputs(note: Note, proof: MerkleProof, ext_hash: int, max_depth: int) -> dict[str, int]:
    """The named circuit inputs for redeeming ``note`` with a tree ``proof``.

    Raises:
        FieldError: if the proof is longer than ``max_depth`` or is not for this note's leaf.
    """
    if len(proof.siblings) > max_depth:
        raise FieldError(f"tree too deep for the circuit: {len(proof.siblings)} > {max_depth}")
    if proof.leaf != note.commitment:
        raise FieldError("the Merkle proof is not for this note")
    pad = max_depth - len(proof.siblings)
    inputs = {
        "root": proof.root,
        "nullifier_hash": note.nullifier_hash,
        "ext_data_hash": ext_hash,
        "nullifier": note.nullifier,
        "secret": note.secret,
        "depth": len(proof.siblings),
    }
    for i, (bit, sib) in enumerate(zip(list(proof.path_bits) + [0] * pad, list(proof.siblings) + [0] * pad)):
        inputs[f"index_{i}"] = bit
        inputs[f"sibling_{i}"] = sib
    return inputs
