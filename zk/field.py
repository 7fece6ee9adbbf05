"""The BN254 scalar field F_r, in which every circuit value lives.

Values are plain Python ints in ``[0, R)``; the hot paths (prover, NTT) convert them to gmpy2 integers
themselves. This module only holds the constants and the few helpers the rest of ``zk`` shares.
"""

from __future__ import annotations

__all__ = ["R", "Q", "FieldError", "to_field", "inv", "batch_inverse", "root_of_unity", "TWO_ADICITY"]

#: Order of the BN254 (alt_bn128) G1 group, the scalar field of every circuit (EIP-196, "curve order").
R = 21888242871839275222246405745257275088548364400416034343698204186575808495617
#: Characteristic of the BN254 base field, in which curve coordinates live (EIP-196, "field modulus").
Q = 21888242871839275222246405745257275088696311157297823662689037894645226208583
#: R - 1 = 2^28 * odd, so F_r has multiplicative subgroups of every power-of-two order up to 2^28.
TWO_ADICITY = 28
#: 5 generates F_r^* (the generator snarkjs/ffjavascript use); 5^((R-1)/2^28) has order exactly 2^28.
_GENERATOR = 5


class FieldError(ValueError):
    """A value handed to us is not a canonical field element (our caller's mistake)."""


def to_field(value: int) -> int:
    """Check that ``value`` is a canonical element of F_r and return it.

    Raises:
        FieldError: if ``value`` is not an int in ``[0, R)``.
    """
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < R:
        raise FieldError(f"not a field element: {value!r}")
    return value


def inv(value: int) -> int:
    """Multiplicative inverse in F_r.

    Raises:
        ZeroDivisionError: for zero.
    """
    if value % R == 0:
        raise ZeroDivisionError("inverse of zero in F_r")
    return pow(value, -1, R)


def batch_inverse(values: list[int], modulus: int = R) -> list[int]:
    """Montgomery's trick: the inverses of all ``values`` with one modular inversion.

    Raises:
        ZeroDivisionError: if any value is zero.
    """
    prefix = [1] * (len(values) + 1)
    acc = 1
    for i, v in enumerate(values):
        acc = acc * v % modulus
        prefix[i + 1] = acc
    inv_acc = pow(acc, -1, modulus)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inv_acc * prefix[i] % modulus
        inv_acc = inv_acc * values[i] % modulus
    return out


def root_of_unity(order: int) -> int:
    """A primitive ``order``-th root of unity in F_r (``order`` a power of two <= 2^28)."""
    if order < 1 or order & (order - 1) or order > 1 << TWO_ADICITY:
        raise FieldError(f"no root of unity of order {order}")
    w = pow(_GENERATOR, (R - 1) >> TWO_ADICITY, R)
    return pow(w, (1 << TWO_ADICITY) // order, R)
