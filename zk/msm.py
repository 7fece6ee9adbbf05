"""Multi-scalar multiplication ``sum_i s_i * P_i`` by Pippenger's bucket method.

For window width ``c`` every scalar is recoded into signed digits in ``[-2^(c-1), 2^(c-1)]`` (halving
the number of buckets: ``-d * P`` is ``d * (-P)`` and negation is free in affine coordinates). Each
(window, digit) pair names a bucket; all buckets of all windows are summed together by
``Group.sum_lists``, i.e. rounds of pairwise affine additions that share one field inversion per round
(Montgomery's batch inversion), so the cost is about 6 multiplications per point and window instead of
the ~11 of a mixed Jacobian addition. Bucket sums are then weighted by their digit with the usual
running sum, again batched across windows, and the windows are combined by doubling.

With a *shifted* table (``2^(c*k) * P_i`` precomputed for every window ``k``, see ``shift_table``),
all windows share one set of buckets: no per-window running sums and no doublings.
"""

from __future__ import annotations

from zk.curve import Group
from zk.field import R

__all__ = ["msm", "msm_shifted", "shift_table", "negate_table", "signed_digits", "best_window"]

_SCALAR_BITS = 254


def best_window(n: int) -> int:
    """A window width minimising ~n*254/c + 2^c*254/c bucket additions (measured on this prover)."""
    if n < 32:
        return 3
    c = max(4, (n.bit_length() - 3))
    return min(c, 13)


def signed_digits(s: int, c: int, nwin: int) -> list[int]:
    """``s`` as ``nwin`` digits ``d_k`` in ``[-2^(c-1), 2^(c-1)]`` with ``s = sum d_k 2^(c k)``."""
    half, full, mask = 1 << (c - 1), 1 << c, (1 << c) - 1
    out = []
    carry = 0
    for _ in range(nwin):
        d = (s & mask) + carry
        s >>= c
        if d > half:
            d -= full
            carry = 1
        else:
            carry = 0
        out.append(d)
    return out


def _bucket_lists(group: Group, points_for_window, scalars: list[int], c: int, nwin: int, shared: bool):
    half = 1 << (c - 1)
    nb = half if shared else half * nwin
    lists = [[] for _ in range(nb)]
    neg = group.neg
    for i, s in enumerate(scalars):
        if not s:
            continue
        for k, d in enumerate(signed_digits(s, c, nwin)):
            if d:
                p = points_for_window(i, k)
                if p is None:
                    continue
                slot = (abs(d) - 1) + (0 if shared else k * half)
                lists[slot].append(p if d > 0 else neg(p))
    return group.sum_lists(lists)


def _weighted_sums(group: Group, buckets: list, half: int, nwin: int) -> list:
    """For each window k: sum_d d * buckets[k*half + d - 1], by running sums batched over windows."""
    running = [None] * nwin
    total = [None] * nwin
    for d in range(half, 0, -1):
        running = group.batch_add(running, [buckets[k * half + d - 1] for k in range(nwin)])
        total = group.batch_add(total, running)
    return total


def _weighted_sum(group: Group, buckets: list, chunks: int = 32):
    """``sum_d (d + 1) * buckets[d]`` with the running sums of ``chunks`` slices batched together.

    For a slice starting at d0: sum (d + 1) B_d = sum (d - d0 + 1) B_d + d0 * sum B_d.
    """
    n = len(buckets)
    size = -(-n // chunks)
    starts = list(range(0, n, size))
    padded = buckets + [None] * (size * len(starts) - n)
    running = [None] * len(starts)
    total = [None] * len(starts)
    for off in range(size - 1, -1, -1):
        running = group.batch_add(running, [padded[s + off] for s in starts])
        total = group.batch_add(total, running)
    # running now holds each slice's plain sum; add d0 * sum for each slice
    shifted = group.multiply_many(running, starts)
    return group.sum_lists([total + shifted])[0]


def msm(group: Group, points: list, scalars: list[int], c: int | None = None):
    """``sum s_i * P_i`` (affine result, ``None`` for infinity); ``None`` points are skipped.

    Args:
        group: ``zk.curve.G1`` or ``zk.curve.G2``.
        points: affine points.
        scalars: field elements (reduced mod R here), as many as points.
        c: window width (default from ``best_window``).
    """
    if len(points) != len(scalars):
        raise ValueError("msm: points and scalars differ in length")
    scalars = [int(s) % R for s in scalars]
    n = sum(1 for s in scalars if s)
    if n == 0:
        return None
    c = c or best_window(n)
    nwin = _SCALAR_BITS // c + 1
    half = 1 << (c - 1)
    buckets = _bucket_lists(group, lambda i, k: points[i], scalars, c, nwin, shared=False)
    sums = _weighted_sums(group, buckets, half, nwin)
    acc = None
    for k in range(nwin - 1, -1, -1):  # Horner over windows: acc = 2^c * acc + sums[k]
        for _ in range(c):
            acc = group.add(acc, acc) if acc is not None else None
        acc = group.add(acc, sums[k])
    return acc


def shift_table(group: Group, points: list, c: int) -> list[list]:
    """``table[k][i] = 2^(c*k) * points[i]`` for every window ``k`` (precomputed once per key)."""
    nwin = _SCALAR_BITS // c + 1
    table = [list(points)]
    cur = list(points)
    for _ in range(1, nwin):
        for _ in range(c):
            cur = group.batch_double(cur)
        table.append(cur)
    return table


def negate_table(group: Group, table: list[list]) -> list[list]:
    """The negated points of a ``shift_table`` (negative signed digits use them)."""
    return [[group.neg(p) for p in row] for row in table]


def msm_shifted(group: Group, table: list[list], scalars: list[int], c: int,
                neg_table: list[list] | None = None):
    """``sum s_i * table[0][i]`` using a ``shift_table`` built with the same ``c``.

    Signed digits come from the offset trick: with ``H = sum_k 2^(c-1) 2^(ck)``, the unsigned
    digits ``u_k`` of ``s + H`` give ``s = sum_k (u_k - 2^(c-1)) 2^(ck)``.
    """
    nwin = _SCALAR_BITS // c + 1
    if len(table) != nwin:
        raise ValueError("msm_shifted: table built for another window width")
    if neg_table is None:
        neg_table = negate_table(group, table)
    half, mask = 1 << (c - 1), (1 << c) - 1
    offset = sum(half << (c * k) for k in range(nwin))
    shifted = [int(s) % R + offset for s in scalars]
    lists: list[list] = [[] for _ in range(half)]
    for k in range(nwin):
        sh = c * k
        pos, neg = table[k], neg_table[k]
        for i, t in enumerate(shifted):
            u = (t >> sh) & mask
            if u > half:
                p = pos[i]
                if p is not None:
                    lists[u - half - 1].append(p)
            elif u < half:
                p = neg[i]
                if p is not None:
                    lists[half - u - 1].append(p)
    return _weighted_sum(group, group.sum_lists(lists))
