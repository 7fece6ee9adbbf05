"""BN254 G1 and G2 arithmetic on gmpy2 integers, for the prover and the setup.

Written by hand because py-ecc's curve code (Python ints, projective, one point at a time) is
~100x too slow for a prover: here points are affine tuples, and the hot operation is a *batch* of
independent affine additions sharing one field inversion (Montgomery's trick), which is what
Pippenger buckets and fixed-base tables need. py-ecc stays the reference: tests compare with it, and
verification uses its pairing.

Points: G1 ``(x, y)`` with ``x, y`` in F_q; G2 ``((x0, x1), (y0, y1))`` with coordinates in
F_q2 = F_q[u]/(u^2 + 1); ``None`` is the point at infinity.
"""

from __future__ import annotations

from gmpy2 import invert, mpz

from zk.field import Q, R

__all__ = [
    "G1_GEN", "G2_GEN", "G1", "G2", "Group", "on_curve_g1", "on_curve_g2", "in_subgroup_g2",
]

_q = mpz(Q)
#: G1 generator (1, 2) (EIP-196).
G1_GEN = (mpz(1), mpz(2))
#: G2 generator (EIP-197; py-ecc's ``G2``), coordinates as (c0, c1) = c0 + c1*u.
G2_GEN = (
    (mpz(10857046999023057135944570762232829481370756359578518086990519993285655852781),
     mpz(11559732032986387107991004021392285783925812861821192530917403151452391805634)),
    (mpz(8495653923123431417604973247489272438418190587263600148770280649306958101930),
     mpz(4082367875863433681332203403145435568316851327593401208105741076214120093531)),
)
#: Twist curve constant b' = 3 / (9 + u) of G2 (py-ecc ``b2``).
_B2 = (mpz(19485874751759354771024239261021720505790618469301721065564631296452457478373),
       mpz(266929791119991161246907387137283842545076965332900288569378510910307636690))


class Group:
    """One of G1 / G2: batch affine addition, negation, scalar multiplication.

    Subclasses implement the field operations (``_mul``, ``_sq``, ``_sub``, ``_add``, ``_inv_many``,
    ``_is_zero``) on their coordinate type; the algorithms here are written once.
    """

    generator: tuple

    # -- field hooks (overridden) ------------------------------------------------------------------

    def neg(self, p):
        """-p."""
        raise NotImplementedError

    def batch_add(self, ps: list, qs: list) -> list:
        """``[p + q for p, q in zip(ps, qs)]`` with one field inversion for the whole batch."""
        raise NotImplementedError

    def batch_double(self, ps: list) -> list:
        """``[2 p for p in ps]`` with one field inversion for the whole batch."""
        raise NotImplementedError

    def _batch_add_general(self, ps: list, qs: list) -> list:
        """``batch_add`` when some pairs involve infinity, equal points or opposite points."""
        out = [None] * len(ps)
        distinct, doubled = [], []
        for i, (p, r) in enumerate(zip(ps, qs)):
            if p is None:
                out[i] = r
            elif r is None:
                out[i] = p
            elif p[0] != r[0]:
                distinct.append(i)
            elif p[1] == r[1]:
                doubled.append(i)
            # else p == -r: the sum is infinity (None)
        if distinct:
            sums = self.batch_add([ps[i] for i in distinct], [qs[i] for i in distinct])
            for i, v in zip(distinct, sums):
                out[i] = v
        if doubled:
            for i, v in zip(doubled, self.batch_double([ps[i] for i in doubled])):
                out[i] = v
        return out

    # -- derived -----------------------------------------------------------------------------------

    def add(self, p, q):
        """p + q."""
        return self.batch_add([p], [q])[0]

    def sum_lists(self, lists: list[list]) -> list:
        """The sum of each list of points, all lists reduced together by pairwise batch additions."""
        lists = [list(lst) for lst in lists]
        while True:
            ps, qs, where = [], [], []
            for k, lst in enumerate(lists):
                n = len(lst)
                if n >= 2:
                    ps.extend(lst[0 : n - 1 : 2])
                    qs.extend(lst[1:n:2])
                    where.append((k, n // 2, lst[-1] if n & 1 else None, n & 1))
            if not ps:
                break
            sums = self.batch_add(ps, qs)
            pos = 0
            for k, m, tail, odd in where:
                new = sums[pos : pos + m]
                pos += m
                if odd:
                    new.append(tail)
                lists[k] = new
        return [lst[0] if lst else None for lst in lists]

    def multiply_many(self, points: list, scalars: list[int]) -> list:
        """``[s * p]`` for many (point, scalar) pairs at once: double-and-add with batched steps."""
        scalars = [int(s) % R for s in scalars]
        acc = [None] * len(points)
        base = list(points)
        for bit in range(max((s.bit_length() for s in scalars), default=0)):
            idx = [i for i, s in enumerate(scalars) if (s >> bit) & 1 and base[i] is not None]
            if idx:
                sums = self.batch_add([acc[i] for i in idx], [base[i] for i in idx])
                for i, v in zip(idx, sums):
                    acc[i] = v
            base = self.batch_double(base)
        return acc

    def multiply(self, p, scalar: int):
        """scalar * p."""
        return self.multiply_many([p], [scalar])[0]

    def fixed_base_many(self, base, scalars: list[int], window: int = 8) -> list:
        """``[s * base for s in scalars]`` via a table of multiples of ``base`` (setup's workhorse)."""
        nwin = (256 + window - 1) // window
        # row k holds d * 2^(window*k) * base for d = 0 .. 2^window - 1
        rows, cur, size = [], base, 1 << window
        for _ in range(nwin):
            mults = [None, cur] + [None] * (size - 2)
            filled = 2
            while filled < size:  # mults[filled + i] = mults[filled - 1] + mults[i + 1]
                count = min(filled - 1, size - filled)
                sums = self.batch_add([mults[filled - 1]] * count, mults[1 : 1 + count])
                mults[filled : filled + count] = sums
                filled += count
            rows.append(mults)
            cur = self.add(mults[-1], cur)  # 2^window * cur
        mask = (1 << window) - 1
        lists = []
        for s in scalars:
            s = int(s) % R
            lst, k = [], 0
            while s:
                d = s & mask
                if d:
                    lst.append(rows[k][d])
                s >>= window
                k += 1
            lists.append(lst)
        return self.sum_lists(lists)


class _G1(Group):
    generator = G1_GEN

    def neg(self, p):
        return None if p is None else (p[0], (-p[1]) % _q)

    def batch_add(self, ps, qs):
        # Fast path (buckets: no infinity, no equal x): one pass of prefix products, one inversion.
        q = _q
        try:
            dx = [r[0] - p[0] for p, r in zip(ps, qs)]
        except TypeError:  # a point at infinity
            return self._batch_add_general(ps, qs)
        if not dx or not all(dx):
            return self._batch_add_general(ps, qs)
        n = len(dx)
        prefix = [None] * n
        acc = mpz(1)
        for i in range(n):
            prefix[i] = acc
            acc = acc * dx[i] % q
        inv = invert(acc, q)
        out = [None] * n
        for i in range(n - 1, -1, -1):
            d_inv = inv * prefix[i] % q
            inv = inv * dx[i] % q
            x1, y1 = ps[i]
            x2, y2 = qs[i]
            lam = (y2 - y1) * d_inv % q
            x3 = (lam * lam - x1 - x2) % q
            out[i] = (x3, (lam * (x1 - x3) - y1) % q)
        return out

    def batch_double(self, ps):
        """``[2 p for p in ps]`` with one inversion (lambda = 3 x^2 / 2 y)."""
        q = _q
        idx = [i for i, p in enumerate(ps) if p is not None and p[1]]
        out = [None] * len(ps)
        if not idx:
            return out
        prefix, acc = [], mpz(1)
        for i in idx:
            prefix.append(acc)
            acc = acc * 2 * ps[i][1] % q
        inv = invert(acc, q)
        for j in range(len(idx) - 1, -1, -1):
            i = idx[j]
            x, y = ps[i]
            d_inv = inv * prefix[j] % q
            inv = inv * 2 * y % q
            lam = 3 * x * x * d_inv % q
            x3 = (lam * lam - 2 * x) % q
            out[i] = (x3, (lam * (x - x3) - y) % q)
        return out


def _f2_mul(a, b):
    t0 = a[0] * b[0]
    t1 = a[1] * b[1]
    return ((t0 - t1) % _q, ((a[0] + a[1]) * (b[0] + b[1]) - t0 - t1) % _q)


def _f2_inv(a):
    d = invert((a[0] * a[0] + a[1] * a[1]) % _q, _q)
    return (a[0] * d % _q, (-a[1]) * d % _q)


class _G2(Group):
    generator = G2_GEN

    def neg(self, p):
        return None if p is None else (p[0], ((-p[1][0]) % _q, (-p[1][1]) % _q))

    def batch_add(self, ps, qs):
        # Fast path (no infinity, no equal x), F_q2 products inlined: (a0 + a1 u)(b0 + b1 u), u^2 = -1.
        q = _q
        try:
            dx = [((r[0][0] - p[0][0]) % q, (r[0][1] - p[0][1]) % q) for p, r in zip(ps, qs)]
        except TypeError:
            return self._batch_add_general(ps, qs)
        if not dx or not all(d[0] or d[1] for d in dx):
            return self._batch_add_general(ps, qs)
        n = len(dx)
        prefix = [None] * n
        a0, a1 = mpz(1), mpz(0)
        for i in range(n):
            prefix[i] = (a0, a1)
            b0, b1 = dx[i]
            t0, t1 = a0 * b0, a1 * b1
            a0, a1 = (t0 - t1) % q, ((a0 + a1) * (b0 + b1) - t0 - t1) % q
        ninv = invert((a0 * a0 + a1 * a1) % q, q)
        ia, ib = a0 * ninv % q, (-a1) * ninv % q
        out = [None] * n
        for i in range(n - 1, -1, -1):
            pa, pb = prefix[i]
            t0, t1 = ia * pa, ib * pb
            d0, d1 = (t0 - t1) % q, ((ia + ib) * (pa + pb) - t0 - t1) % q
            da, db = dx[i]
            t0, t1 = ia * da, ib * db
            ia, ib = (t0 - t1) % q, ((ia + ib) * (da + db) - t0 - t1) % q
            (x1, y1), (x2, y2) = ps[i], qs[i]
            na, nb = y2[0] - y1[0], y2[1] - y1[1]
            t0, t1 = na * d0, nb * d1
            la, lb = (t0 - t1) % q, ((na + nb) * (d0 + d1) - t0 - t1) % q
            x3a = ((la + lb) * (la - lb) - x1[0] - x2[0]) % q
            x3b = (2 * la * lb - x1[1] - x2[1]) % q
            ea, eb = x1[0] - x3a, x1[1] - x3b
            t0, t1 = la * ea, lb * eb
            out[i] = ((x3a, x3b), ((t0 - t1 - y1[0]) % q, ((la + lb) * (ea + eb) - t0 - t1 - y1[1]) % q))
        return out

    def batch_double(self, ps):
        """``[2 p for p in ps]`` with one inversion (lambda = 3 x^2 / 2 y over F_q2)."""
        q = _q
        idx = [i for i, p in enumerate(ps) if p is not None and (p[1][0] or p[1][1])]
        out = [None] * len(ps)
        if not idx:
            return out
        dens = [(2 * ps[i][1][0] % q, 2 * ps[i][1][1] % q) for i in idx]
        prefix, acc = [], (mpz(1), mpz(0))
        for d in dens:
            prefix.append(acc)
            acc = _f2_mul(acc, d)
        inv = _f2_inv(acc)
        for j in range(len(idx) - 1, -1, -1):
            i = idx[j]
            x, y = ps[i]
            d_inv = _f2_mul(inv, prefix[j])
            inv = _f2_mul(inv, dens[j])
            x2 = _f2_mul(x, x)
            lam = _f2_mul((3 * x2[0] % q, 3 * x2[1] % q), d_inv)
            l2 = _f2_mul(lam, lam)
            x3 = ((l2[0] - 2 * x[0]) % q, (l2[1] - 2 * x[1]) % q)
            t = _f2_mul(lam, ((x[0] - x3[0]) % q, (x[1] - x3[1]) % q))
            out[i] = (x3, ((t[0] - y[0]) % q, (t[1] - y[1]) % q))
        return out


G1 = _G1()
G2 = _G2()


def on_curve_g1(p) -> bool:
    """True for infinity or a point with coordinates in F_q on y^2 = x^3 + 3."""
    if p is None:
        return True
    x, y = p
    return 0 <= x < Q and 0 <= y < Q and (y * y - x * x * x - 3) % Q == 0


def on_curve_g2(p) -> bool:
    """True for infinity or a point on the twist y^2 = x^3 + 3/(9+u) with coordinates in F_q."""
    if p is None:
        return True
    x, y = p
    if not all(0 <= c < Q for c in (*x, *y)):
        return False
    y2 = _f2_mul(y, y)
    x3 = _f2_mul(_f2_mul(x, x), x)
    return (y2[0] - x3[0] - _B2[0]) % Q == 0 and (y2[1] - x3[1] - _B2[1]) % Q == 0


def in_subgroup_g2(p) -> bool:
    """True when ``R * p`` is infinity (G2's cofactor is not 1, so points on the twist may not be)."""
    if p is None:
        return True
    # R * p = (R - 1) * p + p; compare (R - 1) * p with -p, avoiding the doubling of -p's special case.
    return G2.multiply(p, R - 1) == G2.neg(p)
