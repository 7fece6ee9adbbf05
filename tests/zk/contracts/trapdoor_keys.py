"""Helpers of the zk contract tests: trapdoor keys, proofs built from scalars, a py_ecc reference check.

A *trapdoor* verification key has alpha, beta, gamma, delta and IC chosen as known multiples of the
generators, so a valid proof for any public inputs can be built from scalars (choose A = a*G1,
B = b*G2, solve for C). That is a real proof for that key: the verifier and the pool cannot tell it
from a prover's, which lets the pool's checks (root, nullifier, binding of node / signer / fee) be
tested independently of the prover. (A module of its own, not conftest.py: tests/zk/conftest.py
exists too, and ``from conftest import`` would be ambiguous.)
"""

import random
from dataclasses import dataclass

from py_ecc import optimized_bn128 as bn

from zk.field import R
from zk.vyper_verifier import VerifyingKey

#: One token in token wei (18 decimals).
TOKEN = 10**18
#: BN254 base field modulus p (EIP-196).
P = bn.field_modulus
#: Denomination of the test pool: 10 tokens.
DENOMINATION = 10 * TOKEN
#: Tree depth of the test pool (8 leaves: small enough to fill in a test).
TEST_DEPTH = 3


def g1(point) -> tuple[int, int]:
    """py_ecc projective G1 point -> affine ints ((0, 0) for infinity)."""
    if bn.is_inf(point):
        return (0, 0)
    x, y = bn.normalize(point)
    return (int(x), int(y))


def g2(point) -> tuple[tuple[int, int], tuple[int, int]]:
    """py_ecc projective G2 point -> ((x.re, x.im), (y.re, y.im))."""
    x, y = bn.normalize(point)
    return ((int(x.coeffs[0]), int(x.coeffs[1])), (int(y.coeffs[0]), int(y.coeffs[1])))


def calldata(a, b, c) -> list[int]:
    """Affine A, B, C -> the verifier's uint256[8] (G2 imaginary part first)."""
    return [a[0], a[1], b[0][1], b[0][0], b[1][1], b[1][0], c[0], c[1]]


@dataclass(frozen=True)
class Trapdoor:
    """A verification key whose discrete logs we know, and the key itself."""

    alpha: int
    beta: int
    gamma: int
    delta: int
    ic: tuple[int, ...]
    vk: VerifyingKey

    @staticmethod
    def make(seed: int, n_public: int = 3) -> "Trapdoor":
        rng = random.Random(seed)
        alpha, beta, gamma, delta = (rng.randrange(1, R) for _ in range(4))
        ic = tuple(rng.randrange(1, R) for _ in range(n_public + 1))
        vk = VerifyingKey(
            alpha=g1(bn.multiply(bn.G1, alpha)),
            beta=g2(bn.multiply(bn.G2, beta)),
            gamma=g2(bn.multiply(bn.G2, gamma)),
            delta=g2(bn.multiply(bn.G2, delta)),
            ic=tuple(g1(bn.multiply(bn.G1, k)) for k in ic),
        )
        return Trapdoor(alpha, beta, gamma, delta, ic, vk)

    def prove(self, public_inputs, rng: random.Random | None = None) -> list[int]:
        """A valid proof for ``public_inputs``: a*b = alpha*beta + gamma*L(x) + delta*c."""
        rng = rng or random.Random()
        a, b = rng.randrange(1, R), rng.randrange(1, R)
        lx = (self.ic[0] + sum(x * k for x, k in zip(public_inputs, self.ic[1:]))) % R
        c = (a * b - self.alpha * self.beta - self.gamma * lx) * pow(self.delta, -1, R) % R
        return calldata(g1(bn.multiply(bn.G1, a)), g2(bn.multiply(bn.G2, b)), g1(bn.multiply(bn.G1, c)))


def python_verify(vk: VerifyingKey, proof: list[int], public_inputs) -> bool:
    """Reference Groth16 check with py_ecc's pairing: e(A,B) == e(alpha,beta) e(vk_x,gamma) e(C,delta).

    Returns False for malformed input (coordinates >= p, points off the curve or, for B, outside the
    order-r subgroup, public inputs >= r), which the contract rejects by reverting.
    """
    if any(not 0 <= v < P for v in proof) or any(not 0 <= x < R for x in public_inputs):
        return False

    def pt1(x, y):
        return bn.Z1 if (x, y) == (0, 0) else (bn.FQ(x), bn.FQ(y), bn.FQ.one())

    def pt2(x_re, x_im, y_re, y_im):
        if (x_re, x_im, y_re, y_im) == (0, 0, 0, 0):
            return bn.Z2
        return (bn.FQ2([x_re, x_im]), bn.FQ2([y_re, y_im]), bn.FQ2.one())

    a = pt1(proof[0], proof[1])
    b = pt2(proof[3], proof[2], proof[5], proof[4])
    c = pt1(proof[6], proof[7])
    if not (bn.is_on_curve(a, bn.b) and bn.is_on_curve(c, bn.b) and bn.is_on_curve(b, bn.b2)):
        return False
    if not bn.is_inf(bn.multiply(b, R)):
        return False
    vk_x = pt1(*vk.ic[0])
    for x, point in zip(public_inputs, vk.ic[1:]):
        vk_x = bn.add(vk_x, bn.multiply(pt1(*point), x))
    beta = pt2(vk.beta[0][0], vk.beta[0][1], vk.beta[1][0], vk.beta[1][1])
    gamma = pt2(vk.gamma[0][0], vk.gamma[0][1], vk.gamma[1][0], vk.gamma[1][1])
    delta = pt2(vk.delta[0][0], vk.delta[0][1], vk.delta[1][0], vk.delta[1][1])
    acc = bn.FQ12.one()
    for q, p_ in ((b, bn.neg(a)), (beta, pt1(*vk.alpha)), (gamma, vk_x), (delta, c)):
        if not (bn.is_inf(q) or bn.is_inf(p_)):
            acc = acc * bn.pairing(q, p_, final_exponentiate=False)
    return bn.final_exponentiate(acc) == bn.FQ12.one()


def _sqrt_fp(v: int) -> int | None:
    s = pow(v, (P + 1) // 4, P)  # p = 3 mod 4
    return s if s * s % P == v % P else None


def _sqrt_fq2(a: bn.FQ2) -> bn.FQ2 | None:
    a0, a1 = (int(c) for c in a.coeffs)
    s = _sqrt_fp((a0 * a0 + a1 * a1) % P)
    if s is None:
        return None
    for d in ((a0 + s) * pow(2, -1, P) % P, (a0 - s) * pow(2, -1, P) % P):
        x0 = _sqrt_fp(d)
        if x0:
            root = bn.FQ2([x0, a1 * pow(2 * x0, -1, P) % P])
            if root * root == a:
                return root
    return None


def find_g2_outside_subgroup():
    """A point on the twist curve y^2 = x^3 + b2 that is not in the order-r subgroup."""
    for k in range(1, 100):
        x = bn.FQ2([k, 1])
        y = _sqrt_fq2(x**3 + bn.b2)
        if y is None:
            continue
        point = (x, y, bn.FQ2.one())
        assert bn.is_on_curve(point, bn.b2)
        if not bn.is_inf(bn.multiply(point, R)):
            return g2(point)
    raise AssertionError("no point found")
