"""`warren`: the command line.

Each part of Warren contributes its own subcommands from a module named ``agents.<part>.cli`` that
defines ``add_commands(subparsers)``; parsers set ``func`` to a callable taking the parsed args and
returning an exit code. A part whose cli module does not exist yet simply adds no commands.

A failure a person can fix (a :class:`agents.errors.UserError`, or anything
:func:`agents.errors.explain` recognises: no gas money, no chain, a missing deployment file...)
prints ``warren: <message>`` on stderr and exits 1, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from agents.errors import explain

__all__ = ["main", "build_parser"]

# The parts that contribute subcommands, in the order `warren --help` lists them.
_PARTS = (
    "agents.wireguard.cli",  # warren tunnel ...
    "agents.overlay.cli",    # warren mesh ...
    "agents.prover.cli",     # warren voucher ...
    "agents.node.cli",       # warren node ...
    "agents.client.cli",     # warren connect / status / disconnect
    "agents.challenger.cli", # warren challenger run
    "agents.guardian.cli",   # warren guardian review / sign / submit
    "agents.demo",           # warren demo
)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package does not exist yet
        return False


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every available part's subcommands."""
    parser = argparse.ArgumentParser(prog="warren", description="Warren: a decentralized VPN.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _PARTS:
        if _module_exists(name):
            importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `warren` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - plain words for what a person can fix; bugs keep their traceback
        message = explain(exc)
        if message is None:
            raise
        print(f"warren: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
