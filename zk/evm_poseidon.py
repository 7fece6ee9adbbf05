"""Generate a hand-scheduled EVM bytecode contract for Poseidon(2) (t = 3), equal to zk/poseidon.py.

Why bytecode next to the Vyper contract (contracts/poseidon_t3.vy): Vyper keeps every local in
memory and calls an internal function per round, so its Poseidon costs about twice the gas. Here the
state lives on the stack, the modulus r sits at the bottom of the stack (``DUPn`` instead of a
32-byte push), the MDS matrix is written to memory once, additions are lazy (every word stays
below 4r < 2^256 and the next ``MULMOD`` reduces it), and each round's constants are folded into
the previous round's matrix multiplication. A small symbolic stack model below picks every
``DUPn``/``SWAPn``, so the schedule can be read round by round. This is the approach of circomlibjs'
``poseidon_gencontract`` (a generated contract called statically), written from the Poseidon paper's
round structure; our output is checked against zk/poseidon.py on chain.

ABI: ``hash(uint256 a, uint256 b) -> uint256``. The selector is not checked: the code reads the words
at call-data offsets 4 and 36, and reverts with ``Error("poseidon_t3: input not in field")`` when an
input is not below r.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_abi import encode as abi_encode

from zk.field import R
from zk.poseidon import PoseidonParams, params

__all__ = ["ABI", "REVERT_REASON", "PoseidonBytecode", "build_poseidon_t3"]

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
    "STOP": 0x00, "ADD": 0x01, "MULMOD": 0x09, "MOD": 0x06, "LT": 0x10, "ISZERO": 0x15,
    "CALLDATALOAD": 0x35, "CODECOPY": 0x39, "POP": 0x50, "MLOAD": 0x51, "MSTORE": 0x52,
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


def _mix(a: _Asm, p: PoseidonParams, state: list[str], next_c: tuple[int, ...] | None, outputs: int) -> list[str]:
    """Push M * state (+ next round's constants) as new words, then drop the old state."""
    new = []
    for i in range(outputs):
        for j in range(3):
            a.dup("R")
            a.dup(state[j])
            a.push(0x20 * (3 * i + j), "off", width=2)
            a.op("MLOAD", pops=1, push="m")
            a.op("MULMOD", pops=3, push="t")
            if j:
                a.op("ADD", pops=2, push="t")
        if next_c is not None:
            a.push(next_c[i], "c", width=32)
            a.op("ADD", pops=2, push="t")
        a.rename("t", f"n{i}")
        new.append(f"n{i}")
    for name in state:
        a.drop(name)
    return new


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
    a = _Asm()
    # MDS matrix to memory words 0..8 (row-major), once per call.
    for i in range(3):
        for j in range(3):
            a.push(p.mds[i][j], "m", width=32)
            a.push(0x20 * (3 * i + j), "off", width=2)
            a.op("MSTORE", pops=2)
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
    c = p.constants
    a.push(c[2], "c", width=32)
    a.op("ADD", pops=2, push="s2")
    a.swap(1)
    a.push(c[1], "c", width=32)
    a.op("ADD", pops=2, push="s1")
    a.push(c[0], "s0", width=32)
    state = ["s0", "s1", "s2"]
    half = p.full_rounds // 2
    rounds = p.full_rounds + p.partial_rounds
    for rnd in range(rounds):
        full = rnd < half or rnd >= half + p.partial_rounds
        targets = state if full else state[:1]
        for name in targets:  # bring each S-box input to the top, raise it to the fifth power
            k = a.stack[::-1].index(name)
            if k:
                a.swap(k)
            _pow5(a, name)
        last = rnd == rounds - 1
        next_c = None if last else c[(rnd + 1) * 3 : (rnd + 2) * 3]
        new = _mix(a, p, state, next_c, outputs=1 if last else 3)
        state = [f"s{i}" for i in range(len(new))]
        for old, fresh in zip(new, state):
            a.rename(old, fresh)
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
    a.labels["reason"] = len(a.code)
    a.code += reason
    runtime = a.link()
    # Deployment code: CODECOPY the runtime (which follows this 13-byte prefix) to memory 0, return it.
    n = len(runtime)
    prefix = bytes([0x61]) + n.to_bytes(2, "big") + bytes([0x80, 0x61, 0x00, 0x0D, 0x60, 0x00, 0x39, 0x60, 0x00, 0xF3])
    assert len(prefix) == 13
    return PoseidonBytecode(runtime=runtime, initcode=prefix + runtime)
