"""Number-theoretic transform over F_r (radix-2, iterative), for the prover's quotient polynomial.

``ntt`` evaluates a polynomial given by ``n`` coefficients at the powers of a primitive ``n``-th
root of unity; ``intt`` interpolates back; the ``coset_*`` variants work on ``g * <omega>`` with
``g = 5`` (a generator of F_r^*, so the coset avoids the roots of unity where Z(X) = X^n - 1 is 0).
"""

from __future__ import annotations

from functools import cache

from gmpy2 import mpz

from zk.field import R, root_of_unity

__all__ = ["ntt", "intt", "coset_ntt", "coset_intt", "COSET"]

#: The coset shift g (F_r^*'s generator 5, as snarkjs/ffjavascript use).
COSET = 5
_r = mpz(R)


@cache
def _twiddles(n: int, inverse: bool) -> tuple[tuple, ...]:
    """Per stage (half-size m = 1, 2, 4, ...), the m twiddles w_{2m}^j."""
    w_n = root_of_unity(n)
    if inverse:
        w_n = pow(w_n, -1, R)
    stages = []
    m = 1
    while m < n:
        w = mpz(pow(w_n, n // (2 * m), R))
        tw = [mpz(1)]
        for _ in range(m - 1):
            tw.append(tw[-1] * w % _r)
        stages.append(tuple(tw))
        m *= 2
    return tuple(stages)


@cache
def _bitrev(n: int) -> tuple[int, ...]:
    bits = n.bit_length() - 1
    return tuple(int(f"{i:0{bits}b}"[::-1], 2) if bits else 0 for i in range(n))


def _transform(values: list, inverse: bool) -> list:
    n = len(values)
    if n & (n - 1):
        raise ValueError("ntt: length must be a power of two")
    r = _r
    a = [mpz(values[i]) for i in _bitrev(n)]
    for stage, tw in enumerate(_twiddles(n, inverse)):
        m = 1 << stage
        for start in range(0, n, 2 * m):
            for j in range(m):
                u = a[start + j]
                t = a[start + j + m] * tw[j] % r
                a[start + j] = (u + t) % r
                a[start + j + m] = (u - t) % r
    if inverse:
        n_inv = mpz(pow(n, -1, R))
        a = [x * n_inv % r for x in a]
    return a


def ntt(coeffs: list) -> list:
    """Evaluations ``p(omega^i)`` of the polynomial with these ``n`` coefficients."""
    return _transform(coeffs, False)


def intt(evals: list) -> list:
    """Coefficients of the polynomial of degree < n taking these values at ``omega^i``."""
    return _transform(evals, True)


def coset_ntt(coeffs: list) -> list:
    """Evaluations ``p(g * omega^i)``."""
    g, acc, out = mpz(COSET), mpz(1), []
    for c in coeffs:
        out.append(c * acc % _r)
        acc = acc * g % _r
    return ntt(out)


def coset_intt(evals: list) -> list:
    """Coefficients of ``p`` from its values at ``g * omega^i``."""
    coeffs = intt(evals)
    g_inv, acc = mpz(pow(COSET, -1, R)), mpz(1)
    for i in range(len(coeffs)):
        coeffs[i] = coeffs[i] * acc % _r
        acc = acc * g_inv % _r
    return coeffs
