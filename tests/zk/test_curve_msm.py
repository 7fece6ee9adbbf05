"""Hand-written G1/G2 arithmetic and Pippenger MSM, checked against py-ecc."""

import random

import pytest
from py_ecc import optimized_bn128 as bn

from zk.curve import G1, G1_GEN, G2, G2_GEN, in_subgroup_g2, on_curve_g1, on_curve_g2
from zk.field import Q, R
from zk.msm import msm, msm_shifted, shift_table, signed_digits


def _pe(point):
    p = bn.normalize(point)
    if isinstance(p[0], bn.FQ2):
        return tuple(tuple(int(c) for c in v.coeffs) for v in p)
    return tuple(int(v.n) for v in p)


def _ours(point):
    return tuple(tuple(int(c) for c in v) if isinstance(v, tuple) else int(v) for v in point)


@pytest.mark.parametrize("group,gen,pe_gen", [(G1, G1_GEN, bn.G1), (G2, G2_GEN, bn.G2)])
def test_multiply__equals_py_ecc(group, gen, pe_gen):
    scalars = [1, 2, 3, R - 1, random.randrange(R), random.randrange(R)]
    for k, ours in zip(scalars, group.multiply_many([gen] * len(scalars), scalars)):
        assert _ours(ours) == _pe(bn.multiply(pe_gen, k))
    assert group.fixed_base_many(gen, scalars) == group.multiply_many([gen] * len(scalars), scalars)


@pytest.mark.parametrize("group,gen", [(G1, G1_GEN), (G2, G2_GEN)])
def test_batch_add__doubling_and_cancellation(group, gen):
    two = group.multiply(gen, 2)
    out = group.batch_add([gen, gen, None, gen], [gen, group.neg(gen), gen, None])
    assert out == [two, None, gen, gen]


def test_signed_digits__recompose():
    for s in (0, 1, R - 1, random.randrange(R)):
        for c in (3, 8, 13):
            d = signed_digits(s, c, 254 // c + 1)
            assert all(abs(x) <= 1 << (c - 1) for x in d)
            assert sum(x << (c * k) for k, x in enumerate(d)) == s


@pytest.mark.parametrize("group,gen", [(G1, G1_GEN), (G2, G2_GEN)])
def test_msm__equals_sum_of_products(group, gen):
    n = 40
    points = group.fixed_base_many(gen, [random.randrange(1, R) for _ in range(n)])
    points[5] = None  # a zero query entry
    scalars = [random.randrange(R) for _ in range(n)]
    scalars[7] = 0
    scalars[9] = R - 1
    expected = None
    for p, s in zip(points, scalars):
        if p is not None:
            expected = group.add(expected, group.multiply(p, s))
    assert msm(group, points, scalars) == expected
    assert msm(group, points, scalars, c=5) == expected
    assert msm_shifted(group, shift_table(group, points, 6), scalars, 6) == expected


def test_curve_checks():
    assert on_curve_g1(G1_GEN) and not on_curve_g1((G1_GEN[0], G1_GEN[1] + 1))
    assert not on_curve_g1((G1_GEN[0] + Q, G1_GEN[1]))
    assert on_curve_g2(G2_GEN) and in_subgroup_g2(G2_GEN)
