"""Keys, proofs and public inputs in snarkjs's JSON formats, and back.

- ``verification_key.json``: ``protocol``, ``curve`` ("bn128"), ``nPublic``, ``vk_alpha_1``,
  ``vk_beta_2``, ``vk_gamma_2``, ``vk_delta_2``, ``IC``; points projective with z = 1, decimal strings,
  G2 coordinates ``[c0, c1]`` (real part first). ``vk_alphabeta_12`` (a cached pairing snarkjs writes
  but its verifier recomputes) is not written.
- ``proof.json``: ``pi_a``, ``pi_b``, ``pi_c``, ``protocol``, ``curve``.
- ``public.json``: the public inputs as decimal strings.

``vk_to_json`` is the project's one snarkjs writer for verification keys. The Vyper verifier is
generated from a verification key by ``zk.vyper_verifier``, whose ``verifier_key`` takes a
``zk.groth16.VerifyingKey`` as it is (no JSON round trip) and ``proof_calldata`` here is the one
proof -> ``uint256[8]`` conversion (``zk.onchain.proof_calldata`` also reads snarkjs JSON into it).
"""

from __future__ import annotations

import json
from pathlib import Path

from gmpy2 import mpz

from zk.groth16 import Proof, VerifyingKey

__all__ = [
    "vk_to_json", "vk_from_json", "proof_to_json", "proof_from_json", "public_to_json",
    "public_from_json", "proof_calldata", "write_json", "ExportError", "pk_to_json", "pk_from_json",
]


class ExportError(ValueError):
    """A JSON document is not a well-formed snarkjs object (a remote party's mistake)."""


def _g1(p) -> list[str]:
    return ["0", "1", "0"] if p is None else [str(int(p[0])), str(int(p[1])), "1"]


def _g2(p) -> list[list[str]]:
    if p is None:
        return [["0", "0"], ["1", "0"], ["0", "0"]]
    return [[str(int(p[0][0])), str(int(p[0][1]))], [str(int(p[1][0])), str(int(p[1][1]))], ["1", "0"]]


def _num(v) -> mpz:
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise ExportError(f"not a number: {v!r}")
    try:
        n = int(v, 0) if isinstance(v, str) and v.startswith("0x") else int(v)
    except ValueError as exc:
        raise ExportError(f"not a number: {v!r}") from exc
    if n < 0:
        raise ExportError(f"negative coordinate: {v!r}")
    return mpz(n)


def _from_g1(v):
    try:
        x, y, z = (_num(c) for c in v)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"bad G1 point: {v!r}") from exc
    if z == 0:
        return None
    if z != 1:
        raise ExportError("G1 point not normalised (z must be 1)")
    return (x, y)


def _from_g2(v):
    try:
        (x0, x1), (y0, y1), (z0, z1) = ((_num(a), _num(b)) for a, b in v)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"bad G2 point: {v!r}") from exc
    if (z0, z1) == (0, 0):
        return None
    if (z0, z1) != (1, 0):
        raise ExportError("G2 point not normalised (z must be [1, 0])")
    return ((x0, x1), (y0, y1))


def vk_to_json(vk: VerifyingKey) -> dict:
    """snarkjs ``verification_key.json`` object."""
    return {
        "protocol": "groth16",
        "curve": "bn128",
        "nPublic": len(vk.ic) - 1,
        "vk_alpha_1": _g1(vk.alpha_1),
        "vk_beta_2": _g2(vk.beta_2),
        "vk_gamma_2": _g2(vk.gamma_2),
        "vk_delta_2": _g2(vk.delta_2),
        "IC": [_g1(p) for p in vk.ic],
    }


def vk_from_json(obj: dict) -> VerifyingKey:
    """Parse a snarkjs verification key.

    Raises:
        ExportError: wrong protocol/curve, missing fields or malformed points.
    """
    try:
        if obj.get("protocol") != "groth16" or obj.get("curve") != "bn128":
            raise ExportError("not a groth16 / bn128 verification key")
        ic = [_from_g1(p) for p in obj["IC"]]
        if obj.get("nPublic", len(ic) - 1) != len(ic) - 1:
            raise ExportError("nPublic does not match IC")
        return VerifyingKey(_from_g1(obj["vk_alpha_1"]), _from_g2(obj["vk_beta_2"]),
                            _from_g2(obj["vk_gamma_2"]), _from_g2(obj["vk_delta_2"]), ic)
    except (KeyError, AttributeError, TypeError) as exc:
        raise ExportError(f"malformed verification key: {exc}") from exc


def proof_to_json(proof: Proof) -> dict:
    """snarkjs ``proof.json`` object."""
    return {"pi_a": _g1(proof.a), "pi_b": _g2(proof.b), "pi_c": _g1(proof.c),
            "protocol": "groth16", "curve": "bn128"}


def proof_from_json(obj: dict) -> Proof:
    """Parse a snarkjs proof (validity is ``zk.groth16.verify``'s job).

    Raises:
        ExportError: missing fields or malformed points.
    """
    try:
        return Proof(_from_g1(obj["pi_a"]), _from_g2(obj["pi_b"]), _from_g1(obj["pi_c"]))
    except (KeyError, TypeError) as exc:
        raise ExportError(f"malformed proof: {exc}") from exc


def public_to_json(public: list[int]) -> list[str]:
    """snarkjs ``public.json`` list."""
    return [str(int(x)) for x in public]


def public_from_json(obj: list) -> list[int]:
    """Parse ``public.json`` (range checks are the verifier's job).

    Raises:
        ExportError: not a list of numbers.
    """
    if not isinstance(obj, list):
        raise ExportError("public inputs must be a list")
    return [int(_num(v)) for v in obj]


def proof_calldata(proof: Proof) -> list[int]:
    """The proof as the verifier contract's ``uint256[8]``: A, B (imaginary part first, EIP-197), C."""
    a, b, c = proof.a, proof.b, proof.c
    return [int(v) for v in (a[0], a[1], b[0][1], b[0][0], b[1][1], b[1][0], c[0], c[1])]


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON."""
    Path(path).write_text(json.dumps(obj, indent=1) + "\n")


# -- proving keys (our own JSON layout: snarkjs keeps proving keys in its binary .zkey) -------------


def pk_to_json(pk) -> dict:
    """A proving key as JSON (hex coordinates; ``null`` for infinity). Includes its verifying key."""
    def g1(p):
        return None if p is None else [hex(int(p[0])), hex(int(p[1]))]

    def g2(p):
        return None if p is None else [hex(int(c)) for c in (*p[0], *p[1])]

    return {
        "format": "warren-groth16-pk-1", "n_vars": pk.n_vars, "n_public": pk.n_public,
        "domain": pk.domain, "alpha_1": g1(pk.alpha_1), "beta_1": g1(pk.beta_1),
        "beta_2": g2(pk.beta_2), "delta_1": g1(pk.delta_1), "delta_2": g2(pk.delta_2),
        "a_1": [g1(p) for p in pk.a_1], "b_1": [g1(p) for p in pk.b_1],
        "b_2": [g2(p) for p in pk.b_2], "l_1": [g1(p) for p in pk.l_1],
        "h_1": [g1(p) for p in pk.h_1], "vk": vk_to_json(pk.vk),
    }


def pk_from_json(obj: dict):
    """Parse ``pk_to_json``'s output.

    Raises:
        ExportError: wrong format tag or malformed content.
    """
    from zk.groth16 import ProvingKey

    def g1(v):
        return None if v is None else (mpz(int(v[0], 16)), mpz(int(v[1], 16)))

    def g2(v):
        if v is None:
            return None
        c = [mpz(int(x, 16)) for x in v]
        return ((c[0], c[1]), (c[2], c[3]))

    if not isinstance(obj, dict) or obj.get("format") != "warren-groth16-pk-1":
        raise ExportError("not a warren-groth16-pk-1 proving key")
    try:
        return ProvingKey(
            obj["n_vars"], obj["n_public"], obj["domain"], g1(obj["alpha_1"]), g1(obj["beta_1"]),
            g2(obj["beta_2"]), g1(obj["delta_1"]), g2(obj["delta_2"]),
            [g1(p) for p in obj["a_1"]], [g1(p) for p in obj["b_1"]], [g2(p) for p in obj["b_2"]],
            [g1(p) for p in obj["l_1"]], [g1(p) for p in obj["h_1"]], vk_from_json(obj["vk"]),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ExportError(f"malformed proving key: {exc}") from exc
