"""Circuit gadgets: Poseidon and the LeanIMT Merkle root.

Each gadget takes a ``Circuit`` and LCs and returns LCs; its witness comes for free from the hints
the builder records (see ``zk.r1cs``).
"""

from __future__ import annotations

from zk.field import R
from zk.poseidon import params
from zk.r1cs import LC, Circuit, Term

__all__ = ["poseidon_gadget", "sbox", "lean_imt_root"]


def sbox(c: Circuit, x: LC) -> LC:
    """``x^5`` in three constraints (x^2, x^4, x^5); free when ``x`` is a constant."""
    x2 = c.mul(x, x)
    x4 = c.mul(x2, x2)
    return c.mul(x4, x)


def poseidon_gadget(c: Circuit, inputs: list[Term]) -> LC:
    """circomlib's ``Poseidon(len(inputs))`` inside the circuit.

    The MDS mixing and round constants are linear, so they only reshape LCs; only S-boxes cost
    constraints: t=3 (two inputs) costs (8*3 - 1 + 57) * 3 = 240 constraints (the very first S-box
    acts on the constant capacity element), the same as circomlib's optimised template.
    """
    p = params(len(inputs) + 1)
    t, half = p.t, p.full_rounds // 2
    state = [LC.const(0)] + [LC.of(x) for x in inputs]
    for rnd in range(p.full_rounds + p.partial_rounds):
        state = [s + p.constants[rnd * t + i] for i, s in enumerate(state)]
        if rnd < half or rnd >= half + p.partial_rounds:
            state = [_sbox_or_const(c, s) for s in state]
        else:
            state[0] = _sbox_or_const(c, state[0])
        state = [_mix(row, state) for row in p.mds]
    return state[0]


def _sbox_or_const(c: Circuit, x: LC) -> LC:
    if x.is_const():
        return LC.const(pow(x.const_value(), 5, R))
    return sbox(c, x)


def _mix(row: tuple[int, ...], state: list[LC]) -> LC:
    out = LC()
    for m, s in zip(row, state):
        out = out + s * m
    return out


def lean_imt_root(c: Circuit, leaf: LC, depth: LC, indices: list[LC], siblings: list[LC]) -> LC:
    """The LeanIMT root of ``leaf`` from a compressed proof (Semaphore v4 ``BinaryMerkleRoot``).

    ``depth`` is the number of siblings actually used (levels without a sibling are dropped from a
    LeanIMT proof); ``indices[i]`` is 1 when the running node is the right child at step ``i``.
    The gadget hashes all ``MAX_DEPTH = len(siblings)`` levels and selects the node after ``depth``
    steps, so one circuit serves every tree size up to 2^MAX_DEPTH. A ``depth`` above MAX_DEPTH
    yields root 0, which the pool never accepts.

    Cost per level: 1 (bit) + 1 (swap) + 240 (hash) + 2 (is-equal) + 1 (select) constraints.
    """
    max_depth = len(siblings)
    node = leaf
    root = LC()
    for i in range(max_depth):
        at_depth = c.is_zero(depth - i)
        root = root + c.mul(at_depth, node)
        c.assert_bit(indices[i])
        # swap: (left, right) = (node, sib) if bit == 0 else (sib, node); d = bit * (sib - node)
        d = c.mul(indices[i], siblings[i] - node)
        node = poseidon_gadget(c, [node + d, siblings[i] - d])
    at_depth = c.is_zero(depth - max_depth)
    return root + c.mul(at_depth, node)
