"""Key files: a folder with ``proving_key.json`` (ours) and ``verification_key.json`` (snarkjs).

Command line (one-command development setup)::

    python -m zk.keys --depth 20 --out keys/voucher-depth20
    python -m zk.keys --depth 20 --seed warren-dev   # reproducible (public trapdoor: dev only)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from zk.export import pk_from_json, pk_to_json, vk_from_json, vk_to_json, write_json
from zk.groth16 import ProvingKey, VerifyingKey, setup_dev
from zk.voucher import voucher_circuit

__all__ = ["save_keys", "load_keys", "dev_keys", "default_keys_dir"]


def default_keys_dir(depth: int) -> Path:
    """Where ``warren voucher`` looks for the keys of a depth by default."""
    return Path("keys") / f"voucher-depth{depth}"


def save_keys(folder: str | Path, pk: ProvingKey, vk: VerifyingKey) -> None:
    """Write both key files into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "proving_key.json", pk_to_json(pk))
    write_json(folder / "verification_key.json", vk_to_json(vk))


def load_keys(folder: str | Path) -> tuple[ProvingKey, VerifyingKey]:
    """Read both key files; the verifying key must be the one inside the proving key.

    Raises:
        FileNotFoundError: a file is missing.
        zk.export.ExportError: malformed or mismatched files.
    """
    from zk.export import ExportError

    folder = Path(folder)
    pk = pk_from_json(json.loads((folder / "proving_key.json").read_text()))
    vk = vk_from_json(json.loads((folder / "verification_key.json").read_text()))
    if vk != pk.vk:
        raise ExportError(f"{folder}: verification_key.json does not belong to proving_key.json")
    return pk, vk


def dev_keys(depth: int, folder: str | Path, seed: bytes | None = None) -> tuple[ProvingKey, VerifyingKey]:
    """Development keys for the voucher circuit of ``depth``, saved into ``folder``.

    ``seed`` makes them reproducible (and forgeable by anyone who knows it): see ``setup_dev``.
    """
    pk, vk = setup_dev(voucher_circuit(depth), seed)
    save_keys(folder, pk, vk)
    return pk, vk


def main(argv: list[str] | None = None) -> int:
    """``python -m zk.keys``: development setup for the voucher circuit."""
    parser = argparse.ArgumentParser(prog="python -m zk.keys", description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, required=True, help="maximum tree depth of the circuit")
    parser.add_argument("--out", type=Path, help="output folder (default keys/voucher-depth<D>)")
    parser.add_argument("--seed", help="derive the toxic waste from this public string (reproducible, "
                        "development only: anyone knowing it can forge proofs)")
    args = parser.parse_args(argv)
    out = args.out or default_keys_dir(args.depth)
    t0 = time.perf_counter()
    dev_keys(args.depth, out, args.seed.encode() if args.seed else None)
    print(f"development keys for depth {args.depth} in {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
