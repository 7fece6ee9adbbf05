"""A multi-party trusted setup for Groth16 in which one honest participant suffices.

Two phases, as in Bowe-Gabizon-Miers ("Scalable Multi-party Computation for zk-SNARK Parameters in
the Random Beacon Model", 2017) and as snarkjs runs them:

1. Powers of tau (any circuit up to a domain size): ``[tau^i]_1`` (i < 2n-1), ``[tau^i]_2``,
   ``[alpha tau^i]_1``, ``[beta tau^i]_1`` (i < n), ``[beta]_2``. Each participant multiplies tau,
   alpha and beta by secrets of their own and throws them away.
2. Circuit-specific: the keys are derived from phase 1 (Lagrange basis by an inverse NTT *in the
   group*, then each variable's A, B, C combination), with delta = 1; each participant multiplies
   delta by a secret and divides the L and H queries by it.

Every contribution carries, per secret ``x``: ``[x]_1``, ``[x]_2`` and a Schnorr proof of knowledge of
``x`` bound to the hash of the state it updates (so nobody can cancel earlier contributions). Checks
are pairing equations (``e(P1, Q1) = e(P2, Q2)``) on random linear combinations of the vectors,
batched with random weights into one multi-pairing per contribution. ``verify_transcript`` replays the
whole ceremony from the generators: anyone can run it. Gamma stays 1 (as in snarkjs).

The transcript keeps every intermediate state: fine for the circuits we set up here; for depth 20 the
states are tens of MB each and phase 1 in pure Python takes minutes per participant (see
docs/BENCHMARKS.md), which is why ``zk.groth16.setup_dev`` exists for development.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field

from gmpy2 import mpz
from py_ecc import optimized_bn128 as bn

from zk.curve import G1, G1_GEN, G2, G2_GEN, on_curve_g1, on_curve_g2
from zk.field import R, root_of_unity
from zk.groth16 import ProvingKey, VerifyingKey, _rows, domain_size
from zk.r1cs import Circuit

__all__ = [
    "Phase1", "Phase2", "Contribution", "CeremonyError", "new_phase1", "contribute_phase1",
    "verify_phase1", "new_phase2", "contribute_phase2", "verify_phase2", "keys_from_phase2",
    "Transcript", "verify_transcript", "transcript_to_json", "transcript_from_json",
]


class CeremonyError(ValueError):
    """A contribution or transcript does not verify (a participant misbehaved)."""


# -- states -----------------------------------------------------------------------------------------


@dataclass
class Phase1:
    """Powers of tau for a domain of size ``n``."""

    n: int
    tau_g1: list
    tau_g2: list
    alpha_g1: list
    beta_g1: list
    beta_g2: tuple


@dataclass
class Phase2:
    """The circuit-specific state: a proving key under construction (delta and L/H change)."""

    pk: ProvingKey


@dataclass
class Contribution:
    """A participant's public record for one secret each of (tau, alpha, beta) or (delta,)."""

    name: str
    g1: list          # [x]_1 per secret
    g2: list          # [x]_2 per secret
    pok: list         # (R point, z) Schnorr proof per secret


def _enc(obj):
    """Canonical JSON-able form of points / lists / ints (hex)."""
    if obj is None:
        return None
    if isinstance(obj, (list, tuple)):
        return [_enc(x) for x in obj]
    if isinstance(obj, str):
        return obj
    return hex(int(obj))


def _hash(*parts) -> bytes:
    return hashlib.sha256(json.dumps(_enc(list(parts)), separators=(",", ":")).encode()).digest()


def phase1_hash(s: Phase1) -> bytes:
    """SHA-256 of a phase-1 state (what the next contribution's proofs bind to)."""
    return _hash([s.n], s.tau_g1, s.tau_g2, s.alpha_g1, s.beta_g1, s.beta_g2)


def phase2_hash(s: Phase2) -> bytes:
    """SHA-256 of a phase-2 state."""
    pk = s.pk
    return _hash(pk.alpha_1, pk.beta_1, pk.beta_2, pk.delta_1, pk.delta_2, pk.a_1, pk.b_1, pk.b_2,
                 pk.l_1, pk.h_1, pk.vk.ic)


# -- proofs of knowledge and pairing checks -------------------------------------------------------


def _challenge(context: bytes, x1, r1) -> int:
    return int.from_bytes(_hash([context.hex()], x1, r1), "big") % R


def _pok(context: bytes, x: int):
    k = secrets.randbelow(R - 1) + 1
    x1, r1 = G1.multiply_many([G1_GEN, G1_GEN], [x, k])
    return x1, (r1, (k + _challenge(context, x1, r1) * x) % R)


def _check_pok(context: bytes, x1, pok) -> bool:
    r1, z = pok
    if not (on_curve_g1(r1) and on_curve_g1(x1)) or x1 is None:
        return False
    c = _challenge(context, x1, r1)
    lhs = G1.multiply(G1_GEN, z)
    return lhs == G1.add(r1, G1.multiply(x1, c))


def _pe1(p):
    return bn.Z1 if p is None else (bn.FQ(int(p[0])), bn.FQ(int(p[1])), bn.FQ(1))


def _pe2(p):
    if p is None:
        return bn.Z2
    return (bn.FQ2([int(p[0][0]), int(p[0][1])]), bn.FQ2([int(p[1][0]), int(p[1][1])]), bn.FQ2.one())


def _same_ratio(equations: list[tuple]) -> bool:
    """All ``e(P1, Q1) == e(P2, Q2)`` hold, checked as one random combination (one final exp)."""
    by_q: dict = {}
    order = []
    for p1, q1, p2, q2 in equations:
        if p1 is None and p2 is None:
            continue
        w = secrets.randbelow(R - 1) + 1
        for p, q, sign in ((p1, q1, 1), (p2, q2, -1)):
            key = _enc(q)
            key = json.dumps(key)
            if key not in by_q:
                by_q[key] = (q, [], [])
                order.append(key)
            by_q[key][1].append(p if sign > 0 else G1.neg(p))
            by_q[key][2].append(w)
    f = bn.FQ12.one()
    for key in order:
        q, ps, ws = by_q[key]
        acc = None
        for p, v in zip(ps, G1.multiply_many(ps, ws)):
            acc = G1.add(acc, v)
        if acc is not None and q is not None:
            f = f * bn.pairing(_pe2(q), _pe1(acc), final_exponentiate=False)
    return bn.final_exponentiate(f) == bn.FQ12.one()


def _rlc(points: list, weights: list[int], group):
    acc = None
    for v in group.multiply_many(points, weights):
        acc = group.add(acc, v)
    return acc


def _weights(n: int) -> list[int]:
    return [secrets.randbelow(R - 1) + 1 for _ in range(n)]


# -- phase 1 --------------------------------------------------------------------------------------


def new_phase1(n: int) -> Phase1:
    """The starting point: every secret is 1."""
    return Phase1(n, [G1_GEN] * (2 * n - 1), [G2_GEN] * n, [G1_GEN] * n, [G1_GEN] * n, G2_GEN)


def contribute_phase1(state: Phase1, name: str, entropy: bytes | None = None) -> tuple[Phase1, Contribution]:
    """Update ``state`` with fresh secrets (tau, alpha, beta) and return the new state and the record.

    The secrets come from the OS CSPRNG (mixed with ``entropy`` if given) and are not kept.
    """
    seed = secrets.token_bytes(32) + (entropy or b"")
    t, a, b = (int.from_bytes(hashlib.sha256(seed + bytes([i])).digest(), "big") % (R - 1) + 1
               for i in range(3))
    n = state.n
    pw = [1]
    for _ in range(2 * n - 2):
        pw.append(pw[-1] * t % R)
    new = Phase1(
        n,
        G1.multiply_many(state.tau_g1, pw),
        G2.multiply_many(state.tau_g2, pw[:n]),
        G1.multiply_many(state.alpha_g1, [p * a % R for p in pw[:n]]),
        G1.multiply_many(state.beta_g1, [p * b % R for p in pw[:n]]),
        G2.multiply(state.beta_g2, b),
    )
    ctx = phase1_hash(state)
    g1s, poks = [], []
    for x in (t, a, b):
        x1, pok = _pok(ctx, x)
        g1s.append(x1)
        poks.append(pok)
    g2s = G2.multiply_many([G2_GEN] * 3, [t, a, b])
    return new, Contribution(name, g1s, g2s, poks)


def _geometric(vec: list, tau_g2_1, group_is_g1: bool, tau_g1_1=None) -> list[tuple]:
    """Equations saying vec[i+1] = tau * vec[i] for all i (one random combination)."""
    if len(vec) < 2:
        return []
    w = _weights(len(vec) - 1)
    if group_is_g1:
        lo, hi = _rlc(vec[:-1], w, G1), _rlc(vec[1:], w, G1)
        return [(hi, G2_GEN, lo, tau_g2_1)]
    lo, hi = _rlc(vec[:-1], w, G2), _rlc(vec[1:], w, G2)
    return [(tau_g1_1, lo, G1_GEN, hi)]


def verify_phase1(old: Phase1, new: Phase1, c: Contribution) -> None:
    """Check that ``new`` is ``old`` updated by the secrets ``c`` proves knowledge of.

    Raises:
        CeremonyError: if any check fails.
    """
    n = old.n
    lens = (len(new.tau_g1), len(new.tau_g2), len(new.alpha_g1), len(new.beta_g1))
    if new.n != n or lens != (2 * n - 1, n, n, n):
        raise CeremonyError(f"{c.name}: phase-1 vectors have the wrong length")
    if new.tau_g1[0] != G1_GEN or new.tau_g2[0] != G2_GEN:
        raise CeremonyError(f"{c.name}: tau^0 must be the generator")
    pts1 = new.tau_g1 + new.alpha_g1 + new.beta_g1
    if not all(p is not None and on_curve_g1(p) for p in pts1) or \
            not all(p is not None and on_curve_g2(p) for p in new.tau_g2 + [new.beta_g2]):
        raise CeremonyError(f"{c.name}: a point is off its curve or at infinity")
    ctx = phase1_hash(old)
    if len(c.g1) != 3 or len(c.g2) != 3 or len(c.pok) != 3 or \
            not all(_check_pok(ctx, x1, pok) for x1, pok in zip(c.g1, c.pok)):
        raise CeremonyError(f"{c.name}: proof of knowledge does not verify")
    t1, a1, b1 = c.g1
    t2, a2, b2 = c.g2
    eqs = [(x1, G2_GEN, G1_GEN, x2) for x1, x2 in zip(c.g1, c.g2)]      # [x]_1 and [x]_2 agree
    eqs += [
        (new.tau_g1[1], G2_GEN, old.tau_g1[1], t2),                      # tau' = tau * t
        (new.alpha_g1[0], G2_GEN, old.alpha_g1[0], a2),                  # alpha' = alpha * a
        (new.beta_g1[0], G2_GEN, old.beta_g1[0], b2),                    # beta' = beta * b
        (b1, old.beta_g2, G1_GEN, new.beta_g2),                          # [beta']_2 = b [beta]_2
        (new.beta_g1[0], G2_GEN, G1_GEN, new.beta_g2),                   # G1 and G2 beta agree
        (new.tau_g1[1], G2_GEN, G1_GEN, new.tau_g2[1]),                  # G1 and G2 tau agree
    ]
    for vec in (new.tau_g1, new.alpha_g1, new.beta_g1):
        eqs += _geometric(vec, new.tau_g2[1], True)
    eqs += _geometric(new.tau_g2, None, False, new.tau_g1[1])
    if not _same_ratio(eqs):
        raise CeremonyError(f"{c.name}: pairing checks fail")


# -- from phase 1 to the circuit ------------------------------------------------------------------


def _group_intt(group, points: list) -> list:
    """Inverse NTT in the group: ``out[i] = (1/n) sum_j omega^(-ij) points[j]``."""
    n = len(points)
    w_inv = pow(root_of_unity(n), -1, R)
    bits = n.bit_length() - 1
    a = [points[int(f"{i:0{bits}b}"[::-1], 2) if bits else 0] for i in range(n)]
    m = 1
    while m < n:
        wm = pow(w_inv, n // (2 * m), R)
        idx_hi = [s + j + m for s in range(0, n, 2 * m) for j in range(m)]
        tw = [pow(wm, j, R) for s in range(0, n, 2 * m) for j in range(m)]
        t = group.multiply_many([a[i] for i in idx_hi], tw)
        lo = [a[i - m] for i in idx_hi]
        plus = group.batch_add(lo, t)
        minus = group.batch_add(lo, [group.neg(x) for x in t])
        for k, i in enumerate(idx_hi):
            a[i - m], a[i] = plus[k], minus[k]
        m *= 2
    return group.multiply_many(a, [pow(n, -1, R)] * n)


def _signed_bits(c: int) -> list[int]:
    """Non-adjacent form of ``c`` as a field element taken in (-R/2, R/2]: digits in {-1, 0, 1}."""
    c %= R
    if c > R // 2:
        c -= R
    sign = 1 if c >= 0 else -1
    c = abs(c)
    out = []
    while c:
        if c & 1:
            d = 2 - (c & 3)  # 1 if c = 1 mod 4, -1 if c = 3 mod 4
            c -= d
        else:
            d = 0
        out.append(sign * d)
        c >>= 1
    return out


def _combine(group, basis_rows: list[list], rows_list: list, n_vars: int) -> list:
    """Per variable j: sum over matrices M and rows i of M[i][j] * basis_M[i].

    Each basis point is doubled once into a chain ``2^k * L_i`` (batched over all i); each entry then
    costs one addition per non-zero digit of its coefficient's NAF (coefficients such as -1 are
    small), and all entries are summed per variable by batched affine additions.
    """
    lists = [[] for _ in range(n_vars)]
    for basis, rows in zip(basis_rows, rows_list):
        coeffs = [(i, j, _signed_bits(coeff)) for i, row in enumerate(rows) for j, coeff in row]
        if not coeffs:
            continue
        depth = max(len(bits) for _, _, bits in coeffs)
        chain = [list(basis)]
        for _ in range(depth - 1):
            chain.append(group.batch_double(chain[-1]))
        for i, j, bits in coeffs:
            for k, d in enumerate(bits):
                if d == 1:
                    lists[j].append(chain[k][i])
                elif d == -1:
                    lists[j].append(group.neg(chain[k][i]))
    return group.sum_lists([[p for p in lst if p is not None] for lst in lists])


def new_phase2(p1: Phase1, circuit: Circuit) -> Phase2:
    """The circuit's keys from the final powers of tau, with delta = gamma = 1 (deterministic).

    Raises:
        CeremonyError: if the powers of tau are too small for the circuit.
    """
    n = domain_size(circuit)
    if p1.n < n:
        raise CeremonyError(f"powers of tau for {p1.n} < the circuit's domain {n}")
    if p1.n != n:
        raise CeremonyError("use powers of tau of exactly the circuit's domain size")
    lag_g1 = _group_intt(G1, p1.tau_g1[:n])
    lag_g2 = _group_intt(G2, p1.tau_g2)
    lag_alpha = _group_intt(G1, p1.alpha_g1)
    lag_beta = _group_intt(G1, p1.beta_g1)
    rows_a, rows_b, rows_c, _ = _rows(circuit)
    nv, npub = circuit.n_vars, circuit.n_public
    a_1 = _combine(G1, [lag_g1], [rows_a], nv)
    b_1 = _combine(G1, [lag_g1], [rows_b], nv)
    b_2 = _combine(G2, [lag_g2], [rows_b], nv)
    k = _combine(G1, [lag_beta, lag_alpha, lag_g1], [rows_a, rows_b, rows_c], nv)
    h_1 = G1.batch_add(p1.tau_g1[n : 2 * n - 1], [G1.neg(p) for p in p1.tau_g1[: n - 1]])
    vk = VerifyingKey(p1.alpha_g1[0], p1.beta_g2, G2_GEN, G2_GEN, k[: npub + 1])
    pk = ProvingKey(nv, npub, n, p1.alpha_g1[0], p1.beta_g1[0], p1.beta_g2, G1_GEN, G2_GEN,
                    a_1, b_1, b_2, k[npub + 1 :], h_1, vk)
    return Phase2(pk)


def contribute_phase2(state: Phase2, name: str) -> tuple[Phase2, Contribution]:
    """Multiply delta by a fresh secret ``d`` and divide the L and H queries by it."""
    d = secrets.randbelow(R - 1) + 1
    d_inv = pow(d, -1, R)
    pk = state.pk
    delta_1 = G1.multiply(pk.delta_1, d)
    delta_2 = G2.multiply(pk.delta_2, d)
    lh = G1.multiply_many(pk.l_1 + pk.h_1, [d_inv] * (len(pk.l_1) + len(pk.h_1)))
    vk = VerifyingKey(pk.vk.alpha_1, pk.vk.beta_2, pk.vk.gamma_2, delta_2, pk.vk.ic)
    new = ProvingKey(pk.n_vars, pk.n_public, pk.domain, pk.alpha_1, pk.beta_1, pk.beta_2, delta_1,
                     delta_2, pk.a_1, pk.b_1, pk.b_2, lh[: len(pk.l_1)], lh[len(pk.l_1) :], vk)
    x1, pok = _pok(phase2_hash(state), d)
    return Phase2(new), Contribution(name, [x1], [G2.multiply(G2_GEN, d)], [pok])


def verify_phase2(old: Phase2, new: Phase2, c: Contribution) -> None:
    """Check a delta update: only delta, L and H changed, consistently with a known secret.

    Raises:
        CeremonyError: if any check fails.
    """
    o, p = old.pk, new.pk
    same = (o.n_vars, o.n_public, o.domain, o.alpha_1, o.beta_1, o.beta_2, o.a_1, o.b_1, o.b_2,
            o.vk.alpha_1, o.vk.beta_2, o.vk.gamma_2, o.vk.ic)
    if same != (p.n_vars, p.n_public, p.domain, p.alpha_1, p.beta_1, p.beta_2, p.a_1, p.b_1, p.b_2,
                p.vk.alpha_1, p.vk.beta_2, p.vk.gamma_2, p.vk.ic):
        raise CeremonyError(f"{c.name}: changed more than delta, L and H")
    if p.vk.delta_2 != p.delta_2 or len(p.l_1) != len(o.l_1) or len(p.h_1) != len(o.h_1):
        raise CeremonyError(f"{c.name}: inconsistent delta or query lengths")
    if not all(q is not None and on_curve_g1(q) for q in [p.delta_1] + p.l_1 + p.h_1) or \
            not on_curve_g2(p.delta_2):
        raise CeremonyError(f"{c.name}: a point is off its curve or at infinity")
    if len(c.g1) != 1 or len(c.g2) != 1 or not _check_pok(phase2_hash(old), c.g1[0], c.pok[0]):
        raise CeremonyError(f"{c.name}: proof of knowledge does not verify")
    w = _weights(len(p.l_1) + len(p.h_1))
    old_lh, new_lh = _rlc(o.l_1 + o.h_1, w, G1), _rlc(p.l_1 + p.h_1, w, G1)
    eqs = [
        (c.g1[0], G2_GEN, G1_GEN, c.g2[0]),             # [d]_1 and [d]_2 agree
        (p.delta_1, G2_GEN, o.delta_1, c.g2[0]),        # delta' = delta * d (G1)
        (p.delta_1, G2_GEN, G1_GEN, p.delta_2),         # G1 and G2 delta agree
        (new_lh, p.delta_2, old_lh, o.delta_2),         # L, H divided by d
    ]
    if not _same_ratio(eqs):
        raise CeremonyError(f"{c.name}: pairing checks fail")


def keys_from_phase2(state: Phase2) -> tuple[ProvingKey, VerifyingKey]:
    """The final proving and verifying keys."""
    return state.pk, state.pk.vk


# -- transcript -----------------------------------------------------------------------------------


@dataclass
class Transcript:
    """Everything needed to re-check a ceremony: each state and each contribution record."""

    circuit_name: str
    phase1: list = field(default_factory=list)        # [(Contribution, Phase1)]
    phase2: list = field(default_factory=list)        # [(Contribution, Phase2)]


def verify_transcript(t: Transcript, circuit: Circuit) -> tuple[ProvingKey, VerifyingKey]:
    """Replay a ceremony from the generators; returns the keys it produced.

    Raises:
        CeremonyError: if any step fails, or the transcript has no contribution in a phase.
    """
    if not t.phase1 or not t.phase2:
        raise CeremonyError("each phase needs at least one contribution")
    state1 = new_phase1(domain_size(circuit))
    for contrib, nxt in t.phase1:
        verify_phase1(state1, nxt, contrib)
        state1 = nxt
    state2 = new_phase2(state1, circuit)
    for contrib, nxt in t.phase2:
        verify_phase2(state2, nxt, contrib)
        state2 = nxt
    return keys_from_phase2(state2)


# -- transcript files -----------------------------------------------------------------------------


def _pt(obj):
    """Points / nested lists -> hex JSON (None stays null)."""
    return _enc(obj)


def _g1_in(v):
    return None if v is None else (mpz(int(v[0], 16)), mpz(int(v[1], 16)))


def _g2_in(v):
    return None if v is None else ((mpz(int(v[0][0], 16)), mpz(int(v[0][1], 16))),
                                   (mpz(int(v[1][0], 16)), mpz(int(v[1][1], 16))))


def _contrib_out(c: Contribution) -> dict:
    return {"name": c.name, "g1": _pt(c.g1), "g2": _pt(c.g2),
            "pok": [[_pt(r), hex(int(z))] for r, z in c.pok]}


def _contrib_in(d: dict) -> Contribution:
    return Contribution(str(d["name"]), [_g1_in(p) for p in d["g1"]], [_g2_in(p) for p in d["g2"]],
                        [(_g1_in(r), int(z, 16)) for r, z in d["pok"]])


def transcript_to_json(t: Transcript) -> dict:
    """The transcript as JSON: every state and record, hex coordinates (``zk.export`` for keys)."""
    from zk.export import pk_to_json

    return {
        "format": "warren-ceremony-1",
        "circuit": t.circuit_name,
        "phase1": [{"contribution": _contrib_out(c), "state": {
            "n": s.n, "tau_g1": _pt(s.tau_g1), "tau_g2": _pt(s.tau_g2), "alpha_g1": _pt(s.alpha_g1),
            "beta_g1": _pt(s.beta_g1), "beta_g2": _pt(s.beta_g2)}} for c, s in t.phase1],
        "phase2": [{"contribution": _contrib_out(c), "state": pk_to_json(s.pk)} for c, s in t.phase2],
    }


def transcript_from_json(obj: dict) -> Transcript:
    """Parse ``transcript_to_json``'s output.

    Raises:
        CeremonyError: wrong format or malformed content.
    """
    from zk.export import ExportError, pk_from_json

    if not isinstance(obj, dict) or obj.get("format") != "warren-ceremony-1":
        raise CeremonyError("not a warren-ceremony-1 transcript")
    try:
        t = Transcript(str(obj["circuit"]))
        for step in obj["phase1"]:
            s = step["state"]
            t.phase1.append((_contrib_in(step["contribution"]), Phase1(
                int(s["n"]), [_g1_in(p) for p in s["tau_g1"]], [_g2_in(p) for p in s["tau_g2"]],
                [_g1_in(p) for p in s["alpha_g1"]], [_g1_in(p) for p in s["beta_g1"]], _g2_in(s["beta_g2"]))))
        for step in obj["phase2"]:
            t.phase2.append((_contrib_in(step["contribution"]), Phase2(pk_from_json(step["state"]))))
        return t
    except (KeyError, TypeError, ValueError, IndexError, ExportError) as exc:
        raise CeremonyError(f"malformed transcript: {exc}") from exc


def _circuit_of(name: str) -> Circuit:
    from zk.voucher import voucher_circuit

    if not name.startswith("voucher-depth"):
        raise CeremonyError(f"unknown circuit {name!r} (expected voucher-depth<D>)")
    return voucher_circuit(int(name.removeprefix("voucher-depth")))


def main(argv: list[str] | None = None) -> int:
    """``python -m zk.ceremony``: run one step of a ceremony on a transcript file.

    init --depth D T        start a transcript for the voucher circuit of depth D
    phase1 --name N T       add a powers-of-tau contribution
    phase2 --name N T       add a delta contribution (the first one derives the circuit keys)
    verify T [--out DIR]    replay everything; write the keys (zk.keys layout) if it verifies
    """
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m zk.ceremony", description=main.__doc__.splitlines()[0])
    parser.add_argument("action", choices=["init", "phase1", "phase2", "verify"])
    parser.add_argument("transcript", type=Path)
    parser.add_argument("--depth", type=int)
    parser.add_argument("--name", default="anonymous")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    path = args.transcript
    if args.action == "init":
        if args.depth is None:
            parser.error("init needs --depth")
        path.write_text(json.dumps(transcript_to_json(Transcript(f"voucher-depth{args.depth}"))))
        return 0
    t = transcript_from_json(json.loads(path.read_text()))
    circuit = _circuit_of(t.circuit_name)
    if args.action == "phase1":
        if t.phase2:
            raise CeremonyError("phase 2 has started: phase 1 is closed")
        state = t.phase1[-1][1] if t.phase1 else new_phase1(domain_size(circuit))
        t.phase1.append(tuple(reversed(contribute_phase1(state, args.name))))
    elif args.action == "phase2":
        if not t.phase1:
            raise CeremonyError("phase 1 has no contribution yet")
        state = t.phase2[-1][1] if t.phase2 else new_phase2(t.phase1[-1][1], circuit)
        t.phase2.append(tuple(reversed(contribute_phase2(state, args.name))))
    else:
        pk, vk = verify_transcript(t, circuit)
        names = [c.name for c, _ in t.phase1] + [c.name for c, _ in t.phase2]
        print(f"transcript verifies: contributions by {', '.join(names)}")
        if args.out:
            from zk.keys import save_keys

            save_keys(args.out, pk, vk)
        return 0
    path.write_text(json.dumps(transcript_to_json(t)))
    print(f"{args.action} contribution by {args.name} added to {path}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
