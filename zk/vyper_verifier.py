"""Generate the Vyper Groth16 verifier (contracts/groth16_verifier.vy) from a verification key.

The verification key is taken as the prover makes it (``zk.groth16.VerifyingKey``), in the snarkjs
JSON format (``verification_key.json``: ``vk_alpha_1``, ``vk_beta_2``, ``vk_gamma_2``, ``vk_delta_2``,
``IC``, decimal strings, G2 as ``[[x.re, x.im], [y.re, y.im], [1, 0]]``) or as this module's
:class:`VerifyingKey` (plain affine ints, what the template needs); :func:`verifier_key` is the one
conversion. The key is baked into the contract as constants; beta, gamma and delta are negated here
so the contract never negates at run time. The snarkjs JSON writer is ``zk.export.vk_to_json``.

Command line::

    python -m zk.vyper_verifier verification_key.json contracts/groth16_verifier.vy [--circuit WORDS]

The checked-in contracts/groth16_verifier.vy is made from zk/vk/voucher-depth20.json (a development
key for the depth-20 voucher circuit) with :data:`CHECKED_IN_CIRCUIT` as its title words.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Sequence

from eth_utils import keccak
from py_ecc.optimized_bn128 import field_modulus as P

from zk.export import vk_to_json
from zk.groth16 import VerifyingKey as GrothVerifyingKey

__all__ = [
    "CHECKED_IN_CIRCUIT",
    "CHECKED_IN_SEED",
    "CHECKED_IN_VK",
    "G1",
    "G2",
    "VerifyingKey",
    "VerifierSourceError",
    "render_verifier",
    "verifier_key",
    "vk_from_snarkjs",
]

#: The verification key contracts/groth16_verifier.vy is generated from: the depth-20 development
#: key that `python -m zk.keys --depth 20 --seed "warren development key v1"` makes, so anyone can
#: remake its proving key (and, knowing the seed, forge proofs: local and test networks only).
CHECKED_IN_VK = Path(__file__).parent / "vk" / "voucher-depth20.json"
#: The public seed of that development key.
CHECKED_IN_SEED = "warren development key v1"
#: The circuit words in that contract's title.
CHECKED_IN_CIRCUIT = (
    f'the Warren voucher circuit (depth 20, development key zk/vk/voucher-depth20.json, seed "{CHECKED_IN_SEED}")'
)
#: The template rendered by :func:`render_verifier`.
TEMPLATE_PATH = Path(__file__).parent / "templates" / "groth16_verifier.vy.tmpl"

#: An affine G1 point (x, y); (0, 0) is the point at infinity, as in EIP-196.
G1 = tuple[int, int]
#: An affine G2 point ((x.re, x.im), (y.re, y.im)).
G2 = tuple[tuple[int, int], tuple[int, int]]


class VerifierSourceError(ValueError):
    """The verification key given to the generator is malformed (our misuse)."""


@dataclass(frozen=True)
class VerifyingKey:
    """A Groth16 verification key over BN254, affine coordinates as Python ints.

    Attributes:
        alpha: alpha in G1.
        beta: beta in G2.
        gamma: gamma in G2.
        delta: delta in G2.
        ic: IC[0..n_public] in G1 (IC[0] is the constant term).
    """

    alpha: G1
    beta: G2
    gamma: G2
    delta: G2
    ic: tuple[G1, ...]

    @property
    def n_public(self) -> int:
        """Number of public inputs the key verifies."""
        return len(self.ic) - 1

    def fingerprint(self) -> str:
        """keccak256 of the canonical snarkjs JSON of this key (``zk.export.vk_to_json``), as 0x-hex."""
        canonical = json.dumps(vk_to_json(self.to_groth16()), sort_keys=True, separators=(",", ":"))
        return "0x" + keccak(canonical.encode()).hex()

    def to_groth16(self) -> GrothVerifyingKey:
        """The same key as zk.groth16 holds it (None for the point at infinity)."""

        def g1(p: G1) -> tuple[int, int] | None:
            return None if p == (0, 0) else p

        return GrothVerifyingKey(g1(self.alpha), self.beta, self.gamma, self.delta, [g1(p) for p in self.ic])


def _int(value: Any) -> int:
    return int(value, 0) if isinstance(value, str) and value.startswith("0x") else int(value)


def _g1_from_json(point: Sequence[Any]) -> G1:
    x, y = _int(point[0]), _int(point[1])
    z = _int(point[2]) if len(point) > 2 else 1
    if z == 0:
        return (0, 0)
    if z != 1:
        raise VerifierSourceError("G1 point is not affine (z must be 1 or 0)")
    return (x, y)


def _g2_from_json(point: Sequence[Sequence[Any]]) -> G2:
    (x0, x1), (y0, y1) = point[0], point[1]
    return ((_int(x0), _int(x1)), (_int(y0), _int(y1)))


def vk_from_snarkjs(data: dict[str, Any] | str | Path) -> VerifyingKey:
    """Read a snarkjs ``verification_key.json`` (dict, JSON text or path).

    Args:
        data: The parsed JSON object, a JSON string, or a path to the file.

    Returns:
        The verification key.

    Raises:
        VerifierSourceError: Not a Groth16 BN254 key.
    """
    if isinstance(data, Path) or (isinstance(data, str) and not data.lstrip().startswith("{")):
        data = json.loads(Path(data).read_text())
    elif isinstance(data, str):
        data = json.loads(data)
    if data.get("protocol", "groth16") != "groth16":
        raise VerifierSourceError(f"not a groth16 key: {data.get('protocol')!r}")
    if data.get("curve", "bn128") not in ("bn128", "bn254"):
        raise VerifierSourceError(f"not a BN254 key: {data.get('curve')!r}")
    vk = VerifyingKey(
        alpha=_g1_from_json(data["vk_alpha_1"]),
        beta=_g2_from_json(data["vk_beta_2"]),
        gamma=_g2_from_json(data["vk_gamma_2"]),
        delta=_g2_from_json(data["vk_delta_2"]),
        ic=tuple(_g1_from_json(p) for p in data["IC"]),
    )
    if "nPublic" in data and int(data["nPublic"]) != vk.n_public:
        raise VerifierSourceError("nPublic does not match the number of IC points")
    return vk


def verifier_key(vk: VerifyingKey | GrothVerifyingKey | dict[str, Any] | str | Path) -> VerifyingKey:
    """The key as the verifier template needs it, from any form the project holds keys in.

    Args:
        vk: A :class:`VerifyingKey` (returned as is), a ``zk.groth16.VerifyingKey`` (the prover's and
            ``zk.keys``'s; converted directly), or a snarkjs ``verification_key.json`` as a dict, JSON
            text or path (:func:`vk_from_snarkjs`).

    Returns:
        The verification key with plain affine int coordinates ((0, 0) for infinity).

    Raises:
        VerifierSourceError: ``vk`` is none of these, or not a Groth16 BN254 key.
    """
    if isinstance(vk, VerifyingKey):
        return vk
    if isinstance(vk, GrothVerifyingKey):

        def g1(p) -> G1:
            return (0, 0) if p is None else (int(p[0]), int(p[1]))

        def g2(p) -> G2:
            return ((int(p[0][0]), int(p[0][1])), (int(p[1][0]), int(p[1][1])))

        return VerifyingKey(
            alpha=g1(vk.alpha_1), beta=g2(vk.beta_2), gamma=g2(vk.gamma_2), delta=g2(vk.delta_2),
            ic=tuple(g1(p) for p in vk.ic),
        )
    if isinstance(vk, (dict, str, Path)):
        return vk_from_snarkjs(vk)
    raise VerifierSourceError(f"not a verification key: {type(vk).__name__}")


def _neg_g2(point: G2) -> G2:
    (x0, x1), (y0, y1) = point
    return ((x0, x1), ((-y0) % P, (-y1) % P))


def _check(vk: VerifyingKey) -> None:
    coords = [*vk.alpha, *(c for p in vk.ic for c in p)]
    coords += [c for p in (vk.beta, vk.gamma, vk.delta) for pair in p for c in pair]
    if any(not 0 <= c < P for c in coords):
        raise VerifierSourceError("verification key coordinate not below p")
    if vk.n_public < 1:
        raise VerifierSourceError("verification key has no IC points")


def render_verifier(
    vk: VerifyingKey | GrothVerifyingKey | dict[str, Any] | str | Path,
    *,
    circuit: str = "the Warren voucher circuit",
    implements: bool | None = None,
) -> str:
    """Render the Vyper verifier source for ``vk``.

    Args:
        vk: The verification key, in any form :func:`verifier_key` reads.
        circuit: Words naming the circuit, for the NatSpec title.
        implements: Declare ``implements: IGroth16Verifier`` (contracts/interfaces/groth16_verifier.vyi,
            which fixes three public inputs). Defaults to True when ``vk`` has three public inputs.
            Turn it off to compile the source outside the project's contracts folder.

    Returns:
        The contract source.
    """
    vk = verifier_key(vk)
    _check(vk)
    if implements is None:
        implements = vk.n_public == 3
    if implements and vk.n_public != 3:
        raise VerifierSourceError("IGroth16Verifier fixes three public inputs")
    ic_lines = []
    for i, (x, y) in enumerate(vk.ic):
        ic_lines.append(f"IC{i}_X: constant(uint256) = {x}")
        ic_lines.append(f"IC{i}_Y: constant(uint256) = {y}")
    steps = []
    for i in range(vk.n_public):
        steps.append(
            f"    term = raw_call(EC_MUL, abi_encode(IC{i + 1}_X, IC{i + 1}_Y, public_inputs[{i}]),"
            " max_outsize=64, is_static_call=True)"
        )
        steps.append("    vk_x = raw_call(EC_ADD, concat(vk_x, term), max_outsize=64, is_static_call=True)")
    nb, ng, nd = _neg_g2(vk.beta), _neg_g2(vk.gamma), _neg_g2(vk.delta)
    values: dict[str, Any] = {
        "circuit": circuit,
        "n_public": vk.n_public,
        "vk_fingerprint": vk.fingerprint(),
        "implements": (
            "# @notice The interface voucher_pool.vy calls.\n"
            "from interfaces import groth16_verifier as IGroth16Verifier\n"
            "implements: IGroth16Verifier\n"
            if implements
            else ""
        ),
        "alpha_x": vk.alpha[0],
        "alpha_y": vk.alpha[1],
        "ic_constants": "\n".join(ic_lines),
        "vk_x_steps": "\n".join(steps),
    }
    for name, point in (("beta", nb), ("gamma", ng), ("delta", nd)):
        (x_re, x_im), (y_re, y_im) = point
        values[f"neg_{name}_x_re"], values[f"neg_{name}_x_im"] = x_re, x_im
        values[f"neg_{name}_y_re"], values[f"neg_{name}_y_im"] = y_re, y_im
    return Template(TEMPLATE_PATH.read_text()).substitute(values)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zk.vyper_verifier VK_JSON OUT.vy [--circuit WORDS]``: write the verifier for a key."""
    parser = argparse.ArgumentParser(prog="python -m zk.vyper_verifier", description=__doc__.splitlines()[0])
    parser.add_argument("vk", type=Path, help="snarkjs verification_key.json")
    parser.add_argument("out", type=Path, help="the .vy file to write")
    parser.add_argument("--circuit", default="the Warren voucher circuit", help="words naming the circuit")
    args = parser.parse_args(argv)
    args.out.write_text(render_verifier(args.vk, circuit=args.circuit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
