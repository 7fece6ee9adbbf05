"""LeanIMT: the lean incremental Merkle tree of Semaphore v4 / zk-kit, with Poseidon(2).

Why this tree rather than a fixed-depth (Tornado) tree: in a LeanIMT a node without a right sibling
is carried up unchanged, so inserting leaf number ``i`` costs one hash per 1-bit of ``i`` (about
depth/2 on average) and the depth grows with the tree, whereas a fixed-depth tree always pays
``depth`` hashes (20 Poseidon calls on chain per deposit). Proofs drop the levels without a sibling,
so the circuit (``zk.gadgets.lean_imt_root``) takes a private depth.

This class is the reference the on-chain tree must agree with (``zk/PUBLIC_INPUTS.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from zk.field import R, FieldError
from zk.poseidon import poseidon

__all__ = ["LeanIMT", "MerkleProof", "hash_pair"]


def hash_pair(left: int, right: int) -> int:
    """The tree's node hash: circomlib ``Poseidon(2)``."""
    return poseidon([left, right])


@dataclass(frozen=True)
class MerkleProof:
    """A compressed LeanIMT proof (zk-kit's ``LeanIMTMerkleProof``).

    Attributes:
        root: the tree root the proof leads to.
        leaf: the proven leaf.
        index: leaf position in the tree (0-based).
        siblings: the siblings on the path, bottom-up, levels without a sibling omitted.
        path_bits: for each sibling, 1 when the running node is the right child.
    """

    root: int
    leaf: int
    index: int
    siblings: tuple[int, ...]
    path_bits: tuple[int, ...]

    def compute_root(self) -> int:
        """Recompute the root from leaf and path (what the circuit does)."""
        node = self.leaf
        for sib, bit in zip(self.siblings, self.path_bits):
            node = hash_pair(sib, node) if bit else hash_pair(node, sib)
        return node


class LeanIMT:
    """An append-only LeanIMT holding every level, so it can produce proofs for any leaf."""

    def __init__(self, leaves: list[int] | None = None) -> None:
        self._levels: list[list[int]] = [[]]
        for leaf in leaves or []:
            self.insert(leaf)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    @property
    def depth(self) -> int:
        """ceil(log2(size)); 0 for zero or one leaf."""
        return max(0, (self.size - 1).bit_length())

    @property
    def root(self) -> int:
        """The root (0 for the empty tree)."""
        return self._levels[self.depth][0] if self.size else 0

    @property
    def leaves(self) -> list[int]:
        """The leaves, in insertion order."""
        return list(self._levels[0])

    def index_of(self, leaf: int) -> int:
        """Position of ``leaf``.

        Raises:
            ValueError: if absent.
        """
        return self._levels[0].index(leaf)

    def insert(self, leaf: int) -> int:
        """Append ``leaf``; returns the new root.

        Raises:
            FieldError: for 0 or a value outside ``[1, R)`` (zk-kit and the pool refuse them).
        """
        if not isinstance(leaf, int) or not 0 < leaf < R:
            raise FieldError(f"leaf must be in [1, R): {leaf!r}")
        index = self.size
        new_depth = max(self.depth, index.bit_length())  # depth after this insert
        while len(self._levels) <= new_depth:
            self._levels.append([])
        node = leaf
        for level in range(new_depth):
            row = self._levels[level]
            pos = index >> level
            if pos < len(row):
                row[pos] = node
            else:
                row.append(node)
            if pos & 1:
                node = hash_pair(row[pos - 1], node)
            # else: no right sibling yet, the node is carried up unchanged
        top = self._levels[new_depth]
        if top:
            top[0] = node
        else:
            top.append(node)
        return node

    def proof(self, index: int) -> MerkleProof:
        """The compressed proof for leaf number ``index``.

        Raises:
            IndexError: if there is no such leaf.
        """
        if not 0 <= index < self.size:
            raise IndexError(f"no leaf {index}")
        siblings, bits = [], []
        pos = index
        for level in range(self.depth):
            row = self._levels[level]
            sib = pos ^ 1
            if sib < len(row):
                siblings.append(row[sib])
                bits.append(pos & 1)
            pos >>= 1
        return MerkleProof(self.root, self._levels[0][index], index, tuple(siblings), tuple(bits))
