"""Groth16 (Groth, "On the Size of Pairing-based Non-interactive Arguments", EUROCRYPT 2016) on BN254.

- ``setup_dev``: one-command development setup (toxic waste drawn from the OS CSPRNG and dropped);
  ``zk.ceremony`` produces the same keys from a verifiable multi-party ceremony.
- ``Prover``: holds a proving key's precomputed MSM tables and (optionally) two worker processes;
  ``prove`` = witness -> quotient polynomial by NTT -> five Pippenger MSMs (``zk.msm``).
- ``verify``: py-ecc's pairing, after checking every input is canonical and every point is on its
  curve and in its subgroup.

QAP: the domain is the ``n``-th roots of unity, ``n`` the smallest power of two above
``constraints + n_public + 1``. As snarkjs does, the rows after the circuit's constraints are
``w_j * 0 = 0`` for j = 0..n_public, which makes the public inputs' polynomials linearly independent
(Groth16's soundness needs it) even when a public input appears in no constraint.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import secrets
import time
from dataclasses import dataclass

from gmpy2 import mpz
from py_ecc import optimized_bn128 as bn

from zk.curve import G1, G1_GEN, G2, G2_GEN, in_subgroup_g2, on_curve_g1, on_curve_g2
from zk.field import R, batch_inverse, root_of_unity
from zk.msm import msm, msm_shifted, negate_table, shift_table
from zk.ntt import COSET, coset_intt, coset_ntt, intt
from zk.r1cs import Circuit

__all__ = [
    "ProvingKey", "VerifyingKey", "Proof", "Prover", "ProofError", "setup_dev", "keys_from_secrets",
    "qap_at", "domain_size", "prove", "verify",
]

#: Window width of the prover's shifted Pippenger tables (13 measured best for 5k-8k points).
TABLE_WINDOW = 13


class ProofError(ValueError):
    """The witness does not satisfy the circuit, or keys do not fit it (our misuse)."""


@dataclass
class VerifyingKey:
    """Groth16 verifying key (affine points; G2 coordinates as (c0, c1))."""

    alpha_1: tuple
    beta_2: tuple
    gamma_2: tuple
    delta_2: tuple
    ic: list  # IC[0] for the constant 1, IC[1..] for the public inputs


@dataclass
class ProvingKey:
    """Groth16 proving key for one circuit.

    Attributes:
        n_vars / n_public / domain: witness length, public inputs, QAP domain size.
        a_1, b_1, b_2: per variable, A_j(tau), B_j(tau) in G1 / G1 / G2 (None when zero).
        l_1: per private variable (index n_public+1..), (beta A_j + alpha B_j + C_j)(tau) / delta.
        h_1: tau^i Z(tau) / delta for i = 0..n-2.
    """

    n_vars: int
    n_public: int
    domain: int
    alpha_1: tuple
    beta_1: tuple
    beta_2: tuple
    delta_1: tuple
    delta_2: tuple
    a_1: list
    b_1: list
    b_2: list
    l_1: list
    h_1: list
    vk: VerifyingKey


@dataclass
class Proof:
    """A Groth16 proof: A, C in G1, B in G2 (affine)."""

    a: tuple
    b: tuple
    c: tuple


def domain_size(circuit: Circuit) -> int:
    """The QAP domain: the smallest power of two >= constraints + n_public + 1."""
    need = len(circuit.constraints) + circuit.n_public + 1
    return 1 << (need - 1).bit_length()


def _rows(circuit: Circuit):
    """A, B, C rows including the public-input rows (A: w_j, B: 0, C: 0)."""
    a, b, c = circuit.matrices()
    m = len(a)
    a = a + [[(j, 1)] for j in range(circuit.n_public + 1)]
    b = b + [[] for _ in range(circuit.n_public + 1)]
    c = c + [[] for _ in range(circuit.n_public + 1)]
    return a, b, c, m


def qap_at(circuit: Circuit, tau: int) -> tuple[list[int], list[int], list[int], int]:
    """``(u, v, w, Z(tau))``: every variable's A, B, C polynomial evaluated at ``tau``."""
    n = domain_size(circuit)
    omega = root_of_unity(n)
    z = (pow(tau, n, R) - 1) % R
    if z == 0:
        raise ProofError("tau is in the domain")
    pts, acc = [], 1
    for _ in range(n):
        pts.append(acc)
        acc = acc * omega % R
    # L_i(tau) = omega^i / n * Z(tau) / (tau - omega^i)
    invs = batch_inverse([(tau - p) % R for p in pts])
    zn = z * pow(n, -1, R) % R
    lag = [p * i * zn % R for p, i in zip(pts, invs)]
    rows_a, rows_b, rows_c, _ = _rows(circuit)
    out = []
    for rows in (rows_a, rows_b, rows_c):
        vec = [0] * circuit.n_vars
        for i, row in enumerate(rows):
            li = lag[i]
            for j, coeff in row:
                vec[j] = (vec[j] + coeff * li) % R
        out.append(vec)
    return out[0], out[1], out[2], z


def keys_from_secrets(circuit: Circuit, tau: int, alpha: int, beta: int, gamma: int, delta: int):
    """Proving and verifying keys from known toxic waste (dev setup and tests only)."""
    u, v, w, z = qap_at(circuit, tau)
    n = domain_size(circuit)
    npub = circuit.n_public
    g_inv, d_inv = pow(gamma, -1, R), pow(delta, -1, R)
    k = [(beta * u[j] + alpha * v[j] + w[j]) % R for j in range(circuit.n_vars)]
    ic_s = [k[j] * g_inv % R for j in range(npub + 1)]
    l_s = [k[j] * d_inv % R for j in range(npub + 1, circuit.n_vars)]
    h_s, acc = [], z * d_inv % R
    for _ in range(n - 1):
        h_s.append(acc)
        acc = acc * tau % R
    g1_scalars = [alpha, beta, delta] + u + v + ic_s + l_s + h_s
    pts = G1.fixed_base_many(G1_GEN, g1_scalars)
    g2 = G2.fixed_base_many(G2_GEN, [beta, gamma, delta] + v)
    alpha_1, beta_1, delta_1 = pts[0:3]
    pos = 3
    a_1 = pts[pos : pos + len(u)]; pos += len(u)
    b_1 = pts[pos : pos + len(v)]; pos += len(v)
    ic = pts[pos : pos + len(ic_s)]; pos += len(ic_s)
    l_1 = pts[pos : pos + len(l_s)]; pos += len(l_s)
    h_1 = pts[pos:]
    vk = VerifyingKey(alpha_1, g2[0], g2[1], g2[2], ic)
    pk = ProvingKey(circuit.n_vars, npub, n, alpha_1, beta_1, g2[0], delta_1, g2[2],
                    a_1, b_1, g2[3:], l_1, h_1, vk)
    return pk, vk


def setup_dev(circuit: Circuit, seed: bytes | None = None) -> tuple[ProvingKey, VerifyingKey]:
    """One-command development setup: fresh toxic waste, used once and forgotten.

    Not for production: whoever ran it could forge proofs if they kept the randomness; use
    ``zk.ceremony`` for keys nobody alone can forge with. With ``seed`` the toxic waste is derived
    from it (SHA-256), so anyone can regenerate the same keys: for a checked-in development verifier
    whose proving key must be reproducible, and *never* for value (the seed is the trapdoor).
    """
    if seed is None:
        rnd = [secrets.randbelow(R - 1) + 1 for _ in range(5)]
    else:
        rnd = [int.from_bytes(hashlib.sha256(seed + bytes([i])).digest(), "big") % (R - 1) + 1
               for i in range(5)]
    return keys_from_secrets(circuit, *rnd)


# -- proving ---------------------------------------------------------------------------------------


def _quotient(circuit: Circuit, witness: list[int], n: int) -> list:
    """Coefficients of h = (A*B - C) / Z, degree <= n - 2, from the witness (7 NTTs)."""
    rows_a, rows_b, rows_c, _ = _rows(circuit)
    w = [mpz(x) for x in witness]
    r = mpz(R)
    evals = []
    for rows in (rows_a, rows_b, rows_c):
        ev = [sum(coeff * w[j] for j, coeff in row) % r for row in rows]
        evals.append(ev + [mpz(0)] * (n - len(ev)))
    coset = [coset_ntt(intt(ev)) for ev in evals]
    z_inv = mpz(pow((pow(COSET, n, R) - 1) % R, -1, R))
    h = coset_intt([(a * b - c) * z_inv % r for a, b, c in zip(*coset)])
    if h[-1] != 0:
        raise ProofError("witness does not satisfy the circuit (quotient has degree n - 1)")
    return h[:-1]


# Worker-process state: the tables of the proving key, installed once per process.
_TABLES: dict = {}


def _install(tables: dict) -> None:
    _TABLES.clear()
    _TABLES.update(tables)


def _msm_job(name: str, scalars: list[int]):
    """One MSM in a worker; returns (point, CPU seconds it took, worker pid)."""
    t0 = time.process_time()
    group = G2 if name.endswith("_2") else G1
    table = _TABLES[name]
    if _TABLES.get("precomputed"):
        point = msm_shifted(group, table[0], scalars, TABLE_WINDOW, table[1])
    else:
        point = msm(group, table, scalars)
    return point, time.process_time() - t0, os.getpid()


class Prover:
    """Proves one circuit with one proving key, fast.

    Precomputes (unless ``precompute=False``), per MSM, the points shifted for every Pippenger
    window (``zk.msm.shift_table``: ~254 doublings per point, paid once), with the constant points
    (alpha, beta, delta) folded in so each proof element is a single MSM. With ``workers=2`` the
    tables live in two forked worker processes, which run the G2 MSM and two G1 MSMs while the main
    process does the NTTs and the largest G1 MSM. Use as a context manager (or call ``close``).
    """

    def __init__(self, pk: ProvingKey, circuit: Circuit, workers: int = 0,
                 precompute: bool = True) -> None:
        if (circuit.n_vars, circuit.n_public, domain_size(circuit)) != (pk.n_vars, pk.n_public, pk.domain):
            raise ProofError("proving key does not match the circuit")
        self.pk, self.circuit, self.workers = pk, circuit, workers
        points = {
            "a_1": [pk.alpha_1, pk.delta_1] + pk.a_1,
            "b_1": [pk.beta_1, pk.delta_1] + pk.b_1,
            "b_2": [pk.beta_2, pk.delta_2] + pk.b_2,
            "c_1": [pk.delta_1] + pk.l_1 + pk.h_1,
        }
        if precompute:
            self._tables = {}
            for k, v in points.items():
                group = G2 if k.endswith("_2") else G1
                table = shift_table(group, v, TABLE_WINDOW)
                self._tables[k] = (table, negate_table(group, table))
        else:
            self._tables = points
        self._tables["precomputed"] = precompute
        self._pool = None
        #: CPU seconds each process spent on the last proof ({pid: seconds}).
        self.last_cpu: dict[int, float] = {}
        if workers:
            _install(self._tables)  # forked workers inherit the tables (copy-on-write)
            self._pool = mp.get_context("fork").Pool(workers)

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "Prover":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def prove(self, witness: list[int]) -> Proof:
        """A zero-knowledge proof for this witness (fresh blinding r, s from the OS CSPRNG).

        Raises:
            ProofError: if the witness does not satisfy the circuit.
        """
        pk = self.pk
        if len(witness) != pk.n_vars:
            raise ProofError("witness has the wrong length")
        r, s = secrets.randbelow(R), secrets.randbelow(R)
        jobs = {
            "a_1": [1, r] + witness,
            "b_1": [1, s] + witness,
            "b_2": [1, s] + witness,
        }
        priv = witness[pk.n_public + 1 :]
        t0 = time.process_time()
        if self._pool is not None:
            pending = {k: self._pool.apply_async(_msm_job, (k, v)) for k, v in jobs.items()}
            h = _quotient(self.circuit, witness, pk.domain)
            c_part = self._msm("c_1", [(-r * s) % R] + priv + h)
            done = {k: p.get() for k, p in pending.items()}
            out = {k: v[0] for k, v in done.items()}
            per_process: dict = {}
            for _, cpu, pid in done.values():
                per_process[pid] = per_process.get(pid, 0.0) + cpu
        else:
            per_process = {}
            out = {k: self._msm(k, v) for k, v in jobs.items()}
            h = _quotient(self.circuit, witness, pk.domain)
            c_part = self._msm("c_1", [(-r * s) % R] + priv + h)
        a, b1, b2 = out["a_1"], out["b_1"], out["b_2"]
        # C = sum_priv w_j L_j + h(tau) Z(tau)/delta + s A + r B1 - r s delta
        sa, rb = G1.multiply_many([a, b1], [s, r])
        c = G1.add(G1.add(c_part, sa), rb)
        per_process[os.getpid()] = time.process_time() - t0
        self.last_cpu = per_process
        return Proof(a, b2, c)

    def _msm(self, name: str, scalars: list[int]):
        group = G2 if name.endswith("_2") else G1
        if self._tables["precomputed"]:
            table, neg = self._tables[name]
            return msm_shifted(group, table, scalars, TABLE_WINDOW, neg)
        return msm(group, self._tables[name], scalars)


def prove(pk: ProvingKey, circuit: Circuit, witness: list[int]) -> Proof:
    """One proof in this process, plain Pippenger (no tables): for tests and one-off proofs."""
    with Prover(pk, circuit, precompute=False) as prover:
        return prover.prove(witness)


# -- verification ----------------------------------------------------------------------------------


def _pe_g1(p):
    return bn.Z1 if p is None else (bn.FQ(int(p[0])), bn.FQ(int(p[1])), bn.FQ(1))


def _pe_g2(p):
    if p is None:
        return bn.Z2
    return (bn.FQ2([int(p[0][0]), int(p[0][1])]), bn.FQ2([int(p[1][0]), int(p[1][1])]), bn.FQ2.one())


def _valid_g1(p) -> bool:
    try:
        return p is not None and len(p) == 2 and on_curve_g1(p)
    except TypeError:
        return False


def _valid_g2(p) -> bool:
    try:
        ok = p is not None and len(p) == 2 and all(len(c) == 2 for c in p) and on_curve_g2(p)
    except TypeError:
        return False
    return ok and in_subgroup_g2(p)


def verify(vk: VerifyingKey, public: list[int], proof: Proof) -> bool:
    """True iff ``proof`` is valid for these public inputs (py-ecc pairing).

    Rejects (returns False) wrong input counts, public inputs outside ``[0, R)``, coordinates outside
    ``[0, Q)``, points at infinity, off their curve, or (G2) outside the order-R subgroup.
    """
    if len(public) != len(vk.ic) - 1:
        return False
    if not all(isinstance(x, int) and 0 <= x < R for x in public):
        return False
    if not (_valid_g1(proof.a) and _valid_g1(proof.c) and _valid_g2(proof.b)):
        return False
    vk_x = vk.ic[0]
    for x, p in zip(public, vk.ic[1:]):
        vk_x = G1.add(vk_x, G1.multiply(p, x)) if x else vk_x
    # e(-A, B) e(alpha, beta) e(vk_x, gamma) e(C, delta) == 1, one final exponentiation
    f = bn.FQ12.one()
    for g1, g2 in ((G1.neg(proof.a), proof.b), (vk.alpha_1, vk.beta_2), (vk_x, vk.gamma_2),
                   (proof.c, vk.delta_2)):
        if g1 is None:
            continue
        f = f * bn.pairing(_pe_g2(g2), _pe_g1(g1), final_exponentiate=False)
    return bn.final_exponentiate(f) == bn.FQ12.one()
