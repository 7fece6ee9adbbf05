"""Generate a hand-scheduled EVM bytecode contract for Poseidon(2) (t = 3), equal to zk/poseidon.py.

Why bytecode next to the Vyper contract (contracts/poseidon_t3.vy): Vyper keeps every local in
memory and calls an internal function per round, so its Poseidon costs about three times the gas
(40.5k against 13.7k; every deposit hashes up to ``depth`` times). Here the state lives on the
stack, the modulus r sits at the bottom of the stack (``DUPn`` instead of a 32-byte push), additions
are lazy (every word stays below 4r < 2^256 and the next ``MULMOD``/``ADDMOD`` reduces it), each
round's constants are folded into the previous round's matrix multiplication, and the 57 partial
rounds use the sparse-matrix form of the Poseidon paper (Grassi et al., USENIX Security 2021,
appendix B, as circomlib's optimised ``poseidon.circom`` does): the MDS matrix of each partial round
is factored as ``A_r * B_r``, ``B_r = diag(1, M^)`` commutes with the partial S-box and is pushed
into the round before, ``A_r`` touches the state with 5 multiplications instead of 9; the round
constants of words 1..2 in partial rounds are pushed forward through the linear layers, so a partial
round adds one constant. :func:`sparse_form` derives those constants from zk/poseidon.py's and
:func:`permute_sparse` runs them in Python, checked against ``zk.poseidon.permute``. A small
symbolic stack model below picks every ``DUPn``/``SWAPn``, so the schedule can be read round by
round. Checked against zk/poseidon.py on chain (tests/zk/contracts/test_poseidon_onchain.py).

ABI: ``hash(uint256 a, uint256 b) -> uint256``. The selector is not checked: the code reads the words
at call-data offsets 4 and 36, and reverts with ``Error("poseidon_t3: input not in field")`` when an
input is not below r. It is not payable (a call with value reverts without data).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_abi import encode as abi_encode

from zk.field import R
from zk.poseidon import PoseidonParams, params

__all__ = [
    "ABI",
    "REVERT_REASON",
    "PoseidonBytecode",
    "SparseForm",
    "build_poseidon_t3",
    "permute_sparse",
    "sparse_form",
]

#: The ABI the generated contract answers (the selector itself is ignored).
ABI = [
    {
        "type": "function",
        "name": "hash",
        "stateMutability": "pure",
        "inputs": [{"name": "a", "type": "uint256"}, {"name": "b", "type": "uint256"}],
        "outputs": [{"name": "", "type": "uint256"}],
    }
]
#: Revert reason for an input >= r (same string as contracts/poseidon_t3.vy).
REVERT_REASON = "poseidon_t3: input not in field"

# Opcodes used (Ethereum Yellow Paper, appendix H).
_OP = {
    "STOP": 0x00, "ADD": 0x01, "ADDMOD": 0x08, "MULMOD": 0x09, "MOD": 0x06, "LT": 0x10, "ISZERO": 0x15,
    "CALLVALUE": 0x34, "CALLDATALOAD": 0x35, "CODECOPY": 0x39, "POP": 0x50, "MLOAD": 0x51, "MSTORE": 0x52,
    "JUMPI": 0x57, "JUMPDEST": 0x5B, "RETURN": 0xF3, "REVERT": 0xFD,
}
_PUSH1, _DUP1, _SWAP1 = 0x60, 0x80, 0x90


@dataclass
class _Asm:
    """A tiny assembler with a symbolic stack: names for the words, DUP/SWAP found by name."""

    code: bytearray = field(default_factory=bytearray)
    stack: list[str] = field(default_factory=list)  # bottom .. top
    fixups: list[tuple[int, str]] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)

    def op(self, name: str, pops: int = 0, push: str | None = None) -> None:
        self.code.append(_OP[name])
        if pops:
            del self.stack[-pops:]
        if push is not None:
            self.stack.append(push)

    def push(self, value: int, name: str, width: int | None = None) -> None:
        n = width or max(1, (value.bit_length() + 7) // 8)
        self.code.append(_PUSH1 + n - 1)
        self.code += value.to_bytes(n, "big")
        self.stack.append(name)

    def push_label(self, label: str) -> None:
        self.code.append(_PUSH1 + 1)  # PUSH2
        self.fixups.append((len(self.code), label))
        self.code += b"\0\0"
        self.stack.append("@" + label)

    def label(self, label: str) -> None:
        self.labels[label] = len(self.code)
        self.code.append(_OP["JUMPDEST"])

    def dup(self, name: str, as_name: str | None = None) -> None:
        k = self.stack[::-1].index(name) + 1
        assert k <= 16, "stack too deep"
        self.code.append(_DUP1 + k - 1)
        self.stack.append(as_name or name)

    def swap(self, k: int) -> None:
        assert 1 <= k <= 16
        self.code.append(_SWAP1 + k - 1)
        self.stack[-1], self.stack[-1 - k] = self.stack[-1 - k], self.stack[-1]

    def drop(self, name: str) -> None:
        """Remove ``name`` from the stack: swap the top into its place, then pop."""
        k = self.stack[::-1].index(name)
        if k:
            self.swap(k)
        self.op("POP", pops=1)

    def rename(self, old: str, new: str) -> None:
        i = len(self.stack) - 1 - self.stack[::-1].index(old)
        self.stack[i] = new

    def link(self) -> bytes:
        for pos, label in self.fixups:
            self.code[pos : pos + 2] = self.labels[label].to_bytes(2, "big")
        return bytes(self.code)


@dataclass(frozen=True)
class PoseidonBytecode:
    """The generated contract.

    Attributes:
        runtime: The runtime code.
        initcode: Deployment code (copies ``runtime`` into place and returns it).
        abi: The ABI (see :data:`ABI`).
    """

    runtime: bytes
    initcode: bytes
    abi: list = field(default_factory=lambda: ABI)


@dataclass(frozen=True)
class SparseForm:
    """Poseidon(t = 3) rewritten for cheap partial rounds; same permutation.

    Attributes:
        constants: per round, the 3 constants added before the S-box (partial rounds: only [0]).
        dense: per round, the 3x3 matrix of a full round (None for partial rounds).
        sparse: per partial round, (m00, (v0, v1), (w0, w1)): new0 = m00*x0 + v0*x1 + v1*x2,
            new1 = x1 + w0*x0, new2 = x2 + w1*x0.
    """

    constants: tuple[tuple[int, int, int], ...]
    dense: tuple[tuple[tuple[int, ...], ...] | None, ...]
    sparse: dict[int, tuple[int, tuple[int, int], tuple[int, int]]]


def _matmul(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    return [[sum(a[i][k] * b[k][j] for k in range(len(b))) % R for j in range(len(b[0]))] for i in range(len(a))]


def _matvec(a, x: list[int]) -> list[int]:
    return [sum(m * v for m, v in zip(row, x)) % R for row in a]


def sparse_form(p: PoseidonParams | None = None) -> SparseForm:
    """Derive the sparse-partial-round form of Poseidon t = 3 from its plain parameters.

    Args:
        p: The parameters; circomlib's t = 3 parameters by default.

    Returns:
        The constants and matrices :func:`permute_sparse` and the bytecode use.
    """
    p = p or params(3)
    t, half, rp = p.t, p.full_rounds // 2, p.partial_rounds
    mds = [list(row) for row in p.mds]
    rounds = p.full_rounds + rp
    consts = [list(p.constants[r * t : (r + 1) * t]) for r in range(rounds)]
    # Constants of words 1..2 in partial rounds skip the S-box: push them through the matrix into
    # the next round's constants, so a partial round adds one constant.
    for r in range(half, half + rp):
        carry = _matvec(mds, [0, consts[r][1], consts[r][2]])
        consts[r][1] = consts[r][2] = 0
        consts[r + 1] = [(a + b) % R for a, b in zip(consts[r + 1], carry)]
    # Matrices, last partial round first: M_r = A_r * B_r with B_r = diag(1, M^) commuting with the
    # partial S-box; B_r joins the previous round's matrix.
    dense: list = [tuple(tuple(row) for row in mds)] * rounds
    sparse = {}
    mat = mds
    for r in range(half + rp - 1, half - 1, -1):
        (a, b), (c, d) = (mat[1][1], mat[1][2]), (mat[2][1], mat[2][2])
        det = pow((a * d - b * c) % R, -1, R)
        inv = [[d * det % R, -b * det % R], [-c * det % R, a * det % R]]
        v = (mat[0][1], mat[0][2])
        v_hat = ((v[0] * inv[0][0] + v[1] * inv[1][0]) % R, (v[0] * inv[0][1] + v[1] * inv[1][1]) % R)
        sparse[r] = (mat[0][0], v_hat, (mat[1][0], mat[2][0]))
        dense[r] = None
        mat = _matmul([[1, 0, 0], [0, a, b], [0, c, d]], mds)
    dense[half - 1] = tuple(tuple(row) for row in mat)
    return SparseForm(tuple(tuple(c) for c in consts), tuple(dense), sparse)


def permute_sparse(state: list[int], form: SparseForm) -> list[int]:
    """The Poseidon permutation computed with :func:`sparse_form`'s constants (reference for the bytecode)."""
    x = list(state)
    for r, c in enumerate(form.constants):
        x = [(v + k) % R for v, k in zip(x, c)]
        if form.dense[r] is None:
            x[0] = pow(x[0], 5, R)
            m00, (v0, v1), (w0, w1) = form.sparse[r]
            x = [(m00 * x[0] + v0 * x[1] + v1 * x[2]) % R, (x[1] + w0 * x[0]) % R, (x[2] + w1 * x[0]) % R]
        else:
            x = _matvec(form.dense[r], [pow(v, 5, R) for v in x])
    return x



def _pow5(a: _Asm, name: str) -> None:
    """Replace the top word ``name`` with name^5 mod r (three MULMODs)."""
    assert a.stack[-1] == name
    a.dup("R")
    a.dup(name)
    a.dup(name)
    a.op("MULMOD", pops=3, push="x2")  # [x, x2]
    a.dup("R")
    a.swap(1)
    a.dup("x2")
    a.op("MULMOD", pops=3, push="x4")  # [x, x4]
    a.dup("R")
    a.swap(2)  # [R, x4, x]
    a.op("MULMOD", pops=3, push=name)  # x5 keeps the name


def _add_constant(a: _Asm, value: int) -> None:
    if value:
        a.push(value, "c", width=32)
        a.op("ADD", pops=2, push="t")


def _dense_mix(a: _Asm, mat, state: list[str], next_c, outputs: int) -> None:
    """Push mat * state (+ next round's constants) as new words n0.., then drop the old state."""
    for i in range(outputs):
        for j in range(3):
            a.dup("R")
            a.dup(state[j])
            a.push(mat[i][j], "m", width=32)
            a.op("MULMOD", pops=3, push="t")
            if j:
                a.op("ADD", pops=2, push="t")
        if next_c is not None:
            _add_constant(a, next_c[i])
        a.rename("t", f"n{i}")
    for name in state:
        a.drop(name)


def _sparse_mix(a: _Asm, sparse, state: list[str], next_c) -> None:
    """new0 = m00*x0 + v0*x1 + v1*x2, new1 = x1 + w0*x0, new2 = x2 + w1*x0 (+ next constants)."""
    m00, (v0, v1), (w0, w1) = sparse
    x0, x1, x2 = state
    for j, (coef, name) in enumerate(((m00, x0), (v0, x1), (v1, x2))):
        a.dup("R")
        a.dup(name)
        a.push(coef, "m", width=32)
        a.op("MULMOD", pops=3, push="t")
        if j:
            a.op("ADD", pops=2, push="t")
    _add_constant(a, next_c[0])
    a.rename("t", "n0")
    for i, (coef, name) in enumerate(((w0, x1), (w1, x2)), start=1):
        a.dup("R")  # ADDMOD's modulus
        a.dup("R")
        a.dup(x0)
        a.push(coef, "m", width=32)
        a.op("MULMOD", pops=3, push="t")
        a.dup(name)
        a.op("ADDMOD", pops=3, push="t")  # reduced: words 1..2 would otherwise grow every round
        _add_constant(a, next_c[i])
        a.rename("t", f"n{i}")
    for name in state:
        a.drop(name)


def build_poseidon_t3(p: PoseidonParams | None = None) -> PoseidonBytecode:
    """Assemble the Poseidon(2) contract.

    Args:
        p: The parameters; circomlib's t = 3 parameters by default.

    Returns:
        The runtime code, its deployment code and the ABI.
    """
    p = p or params(3)
    if p.t != 3:
        raise ValueError("build_poseidon_t3 needs the t = 3 parameters")
    form = sparse_form(p)
    a = _Asm()
    # Not payable: a call carrying ether reverts (as Vyper and Solidity do for non-payable functions).
    a.op("CALLVALUE", push="value")
    a.push_label("refuse_value")
    a.op("JUMPI", pops=2)
    a.push(R, "R", width=32)
    for offset, name in ((0x04, "a"), (0x24, "b")):
        a.push(offset, "off", width=1)
        a.op("CALLDATALOAD", pops=1, push=name)
        a.dup("R")
        a.dup(name)
        a.op("LT", pops=2, push="ok")  # name < R
        a.op("ISZERO", pops=1, push="bad")
        a.push_label("revert")
        a.op("JUMPI", pops=2)
    # Round 0's constants: state = [0 + c0, a + c1, b + c2]; stack [R, a, b] -> [R, s2, s1, s0].
    c = form.constants
    a.push(c[0][2], "c", width=32)
    a.op("ADD", pops=2, push="s2")
    a.swap(1)
    a.push(c[0][1], "c", width=32)
    a.op("ADD", pops=2, push="s1")
    a.push(c[0][0], "s0", width=32)
    state = ["s0", "s1", "s2"]
    rounds = len(c)
    for rnd in range(rounds):
        full = form.dense[rnd] is not None
        for name in state if full else state[:1]:  # bring each S-box input to the top, x^5
            k = a.stack[::-1].index(name)
            if k:
                a.swap(k)
            _pow5(a, name)
        last = rnd == rounds - 1
        next_c = None if last else c[rnd + 1]
        if full:
            _dense_mix(a, form.dense[rnd], state, next_c, outputs=1 if last else 3)
        else:
            _sparse_mix(a, form.sparse[rnd], state, next_c)
        fresh = [f"s{i}" for i in range(1 if last else 3)]
        for i, name in enumerate(fresh):
            a.rename(f"n{i}", name)
        state = fresh
    # Only state[0] of the last round is needed: reduce it below r and return it.
    a.dup("R")
    a.swap(1)
    a.op("MOD", pops=2, push="out")
    a.push(0, "off", width=1)
    a.op("MSTORE", pops=2)
    a.push(32, "len", width=1)
    a.push(0, "off", width=1)
    a.op("RETURN", pops=2)
    # Revert with Error(string), the ABI encoding Solidity and Vyper use.
    reason = bytes.fromhex("08c379a0") + abi_encode(["string"], [REVERT_REASON])
    a.stack = []
    a.label("revert")
    a.push(len(reason), "len", width=2)
    a.push_label("reason")
    a.push(0, "off", width=1)
    a.op("CODECOPY", pops=3)
    a.push(len(reason), "len", width=2)
    a.push(0, "off", width=1)
    a.op("REVERT", pops=2)
    a.stack = []
    a.label("refuse_value")
    a.push(0, "len", width=1)
    a.push(0, "off", width=1)
    a.op("REVERT", pops=2)
    a.labels["reason"] = len(a.code)
    a.code += reason
    runtime = a.link()
    # Deployment code: CODECOPY the runtime (which follows this 13-byte prefix) to memory 0, return it.
    n = len(runtime)
    prefix = bytes([0x61]) + n.to_bytes(2, "big") + bytes([0x80, 0x61, 0x00, 0x0D, 0x60, 0x00, 0x39, 0x60, 0x00, 0xF3])
    assert len(prefix) == 13
    return PoseidonBytecode(runtime=runtime, initcode=prefix + runtime)
