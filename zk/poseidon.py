"""Poseidon over the BN254 scalar field, bit-for-bit equal to circomlib's ``Poseidon(n)``.

Parameters are the ones circomlib uses (Grassi et al., "Poseidon: A New Hash Function for
Zero-Knowledge Proof Systems", USENIX Security 2021, and the reference script
``generate_parameters_grain.sage`` v1.1): S-box x^5, 8 full rounds, and for width ``t = n + 1`` the
partial-round counts of circomlib's ``N_ROUNDS_P = [56, 57, 56, 60, 60, 63, 64, 63]``. The round
constants and the MDS matrix are generated here exactly as that script does (a Grain LFSR seeded with
the parameters, self-shrinking, rejection sampling below R; the MDS matrix is the Cauchy matrix
``1 / (x_i + y_j)`` from the next ``2t`` draws), instead of being pasted in as thousands of digits.
The known-answer tests in ``tests/zk/test_poseidon.py`` pin the result to circomlib's published
outputs, e.g. ``poseidon([1, 2]) == 7853200120776062878684798364095072458815029376092732009249414926327459813530``.

The sponge is circomlib's: state ``[0, in_1, ..., in_n]``, output ``state[0]`` after the permutation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from zk.field import R, FieldError

__all__ = ["PoseidonParams", "params", "permute", "poseidon", "FULL_ROUNDS", "PARTIAL_ROUNDS"]

#: Full rounds for every width (circomlib ``N_ROUNDS_F``; 4 before and 4 after the partial rounds).
FULL_ROUNDS = 8
#: Partial rounds by width t = 2..9 (circomlib ``poseidon.circom``: ``N_ROUNDS_P``).
PARTIAL_ROUNDS = {2: 56, 3: 57, 4: 56, 5: 60, 6: 60, 7: 63, 8: 64, 9: 63}
#: Bits of R, the "n" of the reference script.
_FIELD_BITS = 254


@dataclass(frozen=True)
class PoseidonParams:
    """Everything that defines one Poseidon width.

    Attributes:
        t: state width (inputs + 1 capacity element).
        full_rounds: number of full rounds (all S-boxes).
        partial_rounds: number of partial rounds (S-box on ``state[0]`` only).
        constants: round constants, ``t`` per round, round-major.
        mds: the t x t MDS matrix; ``new[i] = sum_j mds[i][j] * old[j]``.
    """

    t: int
    full_rounds: int
    partial_rounds: int
    constants: tuple[int, ...]
    mds: tuple[tuple[int, ...], ...]


def _grain_bits(t: int, full_rounds: int, partial_rounds: int):
    """The self-shrinking Grain LFSR of the reference script, as a generator of bits."""
    # Initial 80-bit state: field type (1 = prime field, 2 bits), S-box (0 = x^alpha, 4 bits),
    # field size (12 bits), t (12 bits), R_F (10 bits), R_P (10 bits), then 30 ones.
    init = f"{1:02b}{0:04b}{_FIELD_BITS:012b}{t:012b}{full_rounds:010b}{partial_rounds:010b}" + "1" * 30
    bits = [int(b) for b in init]
    pos = 0  # a ring buffer: bits[pos] is the oldest bit

    def step() -> int:
        nonlocal pos
        new = (bits[(pos + 62) % 80] ^ bits[(pos + 51) % 80] ^ bits[(pos + 38) % 80]
               ^ bits[(pos + 23) % 80] ^ bits[(pos + 13) % 80] ^ bits[pos])
        bits[pos] = new
        pos = (pos + 1) % 80
        return new

    for _ in range(160):  # discard the first 160 bits
        step()
    while True:  # self-shrinking: of each pair (a, b), output b only when a == 1
        if step() == 1:
            yield step()
        else:
            step()


def _draw(gen, nbits: int) -> int:
    value = 0
    for _ in range(nbits):
        value = (value << 1) | next(gen)
    return value


@cache
def params(t: int) -> PoseidonParams:
    """The circomlib Poseidon parameters for width ``t`` (2 <= t <= 9), generated once and cached.

    Raises:
        FieldError: for an unsupported width.
    """
    if t not in PARTIAL_ROUNDS:
        raise FieldError(f"poseidon: unsupported width {t}")
    rf, rp = FULL_ROUNDS, PARTIAL_ROUNDS[t]
    gen = _grain_bits(t, rf, rp)
    constants = []
    while len(constants) < (rf + rp) * t:
        c = _draw(gen, _FIELD_BITS)
        if c < R:  # rejection sampling, as the script does for prime fields
            constants.append(c)
    while True:  # Cauchy MDS matrix from 2t distinct draws (reduced mod R, as the script's F(...))
        draws = [_draw(gen, _FIELD_BITS) % R for _ in range(2 * t)]
        xs, ys = draws[:t], draws[t:]
        if len(set(draws)) == 2 * t and all((x + y) % R for x in xs for y in ys):
            break
    mds = tuple(tuple(pow(x + y, -1, R) for y in ys) for x in xs)
    return PoseidonParams(t, rf, rp, tuple(constants), mds)


def permute(state: list[int], p: PoseidonParams) -> list[int]:
    """The Poseidon permutation on a ``t``-element state (a new list is returned)."""
    t = p.t
    state = list(state)
    half = p.full_rounds // 2
    for rnd in range(p.full_rounds + p.partial_rounds):
        base = rnd * t
        state = [(s + p.constants[base + i]) % R for i, s in enumerate(state)]
        if rnd < half or rnd >= half + p.partial_rounds:
            state = [pow(s, 5, R) for s in state]
        else:
            state[0] = pow(state[0], 5, R)
        state = [sum(m * s for m, s in zip(row, state)) % R for row in p.mds]
    return state


def poseidon(inputs: list[int]) -> int:
    """circomlib's ``Poseidon(len(inputs))`` of field elements.

    Raises:
        FieldError: if there are 0 or more than 8 inputs, or an input is not in ``[0, R)``.
    """
    if not 1 <= len(inputs) <= 8:
        raise FieldError(f"poseidon: takes 1 to 8 inputs, got {len(inputs)}")
    for x in inputs:
        if not isinstance(x, int) or not 0 <= x < R:
            raise FieldError(f"poseidon: input not a field element: {x!r}")
    return permute([0, *inputs], params(len(inputs) + 1))[0]
