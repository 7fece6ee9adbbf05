"""Generate contracts/poseidon_t3.vy, an unrolled Vyper Poseidon(2) equal to zk/poseidon.py.

The round constants are written inline into the unrolled rounds (a constant array indexed at run
time would be copied into memory on every access); the MDS multiplication is one internal function,
because inlining its nine 32-byte constants into 65 rounds would pass the 24,576-byte code size limit
of EIP-170.

Command line::

    python -m zk.vyper_poseidon contracts/poseidon_t3.vy
"""

from __future__ import annotations

import sys
from pathlib import Path
from string import Template
from typing import Sequence

from zk.poseidon import PoseidonParams, params

__all__ = ["render_poseidon_t3"]

#: The template rendered by :func:`render_poseidon_t3`.
TEMPLATE_PATH = Path(__file__).parent / "templates" / "poseidon_t3.vy.tmpl"


def _sbox(var: str) -> list[str]:
    """Lines raising ``var`` to the fifth power (three mulmods)."""
    return [
        f"    x = uint256_mulmod({var}, {var}, R)",
        "    x = uint256_mulmod(x, x, R)",
        f"    {var} = uint256_mulmod(x, {var}, R)",
    ]


def render_poseidon_t3(p: PoseidonParams | None = None, *, implements: bool = True) -> str:
    """Render the Vyper source of Poseidon with width 3.

    Args:
        p: The parameters; circomlib's t = 3 parameters by default.
        implements: Declare ``implements: IPoseidonT3`` (contracts/interfaces/poseidon_t3.vyi); turn
            it off to compile the source outside the project's contracts folder.

    Returns:
        The contract source.
    """
    p = p or params(3)
    if p.t != 3:
        raise ValueError("render_poseidon_t3 needs the t = 3 parameters")
    half = p.full_rounds // 2
    lines: list[str] = []
    for rnd in range(p.full_rounds + p.partial_rounds):
        c = p.constants[rnd * 3 : rnd * 3 + 3]
        full = rnd < half or rnd >= half + p.partial_rounds
        lines.append(f"    # round {rnd} ({'full' if full else 'partial'})")
        for i in range(3):
            lines.append(f"    s{i} = unsafe_add(s{i}, {c[i]})")
        for i in range(3 if full else 1):
            lines += _sbox(f"s{i}")
        lines.append("    s0, s1, s2 = self._mix(s0, s1, s2)")
    mds = "\n".join(
        f"M{i}{j}: constant(uint256) = {p.mds[i][j]}" for i in range(3) for j in range(3)
    )
    return Template(TEMPLATE_PATH.read_text()).substitute(
        implements=(
            "\n# @notice The interface voucher_pool.vy calls.\n"
            "from interfaces import poseidon_t3 as IPoseidonT3\n"
            "implements: IPoseidonT3\n"
            if implements
            else ""
        ),
        mds_constants=mds,
        rounds="\n".join(lines),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zk.vyper_poseidon OUT.vy``: write the Vyper Poseidon contract."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    Path(args[0]).write_text(render_poseidon_t3())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
