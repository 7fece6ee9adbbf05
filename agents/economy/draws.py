"""The simulation's random numbers, as counters rather than streams (common random numbers).

Every random quantity is a function of the seed, its purpose and the ids it belongs to (a
counter-based hash, as reputation draws with keccak(seed, challenger, node)), never the next number
of a shared generator: a run that adds actors shifts no other draw (agents.economy.sim).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PURPOSES", "normals", "uniforms"]

#: One stream per purpose: a draw is a hash of (purpose, seed, ids), so no stream shifts when a cheat
#: adds actors and no purpose shares numbers with another.
PURPOSES = {"capacity": 1, "gas": 2, "demand": 3, "assign": 4, "uptime": 5, "noise": 6}  # 7 was "move"
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1, _MUL2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = (np.uint64(k) for k in (30, 27, 31, 11))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> _S30)) * _MUL1
    x = (x ^ (x >> _S27)) * _MUL2
    return x ^ (x >> _S31)


def uniforms(seed: int, purpose: str, *ids) -> np.ndarray:
    """Uniforms in (0, 1), one per element of the broadcast ``ids`` (non-negative ints or int arrays),
    each a hash of (purpose, seed, its ids): the same ids give the same number in every run with the
    seed, whatever else the run contains (the simulation's keccak(seed, challenger, node))."""
    arrays = [np.asarray(i, dtype=np.uint64) for i in ids]
    shape = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else ()
    h = np.full(shape, PURPOSES[purpose], dtype=np.uint64)
    with np.errstate(over="ignore"):  # 0-d arrays warn on the wrap-around the hash relies on
        for part in (np.uint64(seed), *arrays):
            h = _mix(h + _GOLDEN + part)
    return ((h >> _S11).astype(np.float64) + 0.5) * 2.0**-53


def normals(seed: int, purpose: str, *ids) -> np.ndarray:
    """Standard normals (Box-Muller on two :func:`uniforms` of the same ids)."""
    u1, u2 = uniforms(seed, purpose, *ids, 0), uniforms(seed, purpose, *ids, 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)
