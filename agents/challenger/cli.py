"""`warren challenger run|once|endpoint`: the proof-of-bandwidth challenger.

    warren challenger run --config challenger.toml        # the silverback app (same as `silverback run`)
    warren challenger once --config challenger.toml [--all]  # the last epoch's slashes, then one tick now
                                                             # (--all: the whole epoch's plan)
    warren challenger endpoint --listen 0.0.0.0:8080      # the payload endpoint, on an internet host
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from agents.errors import UserError

__all__ = ["add_commands"]

#: The silverback app both `warren challenger run` and `silverback run` start.
APP = "agents.challenger.app:bot"


def add_commands(subparsers) -> None:
    """Register `warren challenger`."""
    challenger = subparsers.add_parser("challenger", help="measure nodes as a customer and report on chain")
    sub = challenger.add_subparsers(dest="challenger_command", metavar="ACTION", required=True)
    p = sub.add_parser("run", help=f"run the challenger (the silverback app {APP})")
    p.add_argument("--config", type=Path, required=True)
    p.set_defaults(func=_run)
    p = sub.add_parser("once", help="one tick now: slash the last epoch's failing nodes, run the due challenges "
                                    "and send the reports")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--all", action="store_true", help="run all of this epoch's planned challenges not yet run")
    p.set_defaults(func=_once)
    p = sub.add_parser("endpoint", help="serve challenge payloads (run on a host on the open internet)")
    p.add_argument("--listen", default="0.0.0.0:8080", help="HOST:PORT")
    p.set_defaults(func=lambda args: __import__("agents.challenger.endpoint", fromlist=["main"]).main(
        ["--listen", args.listen]))


def _run(args) -> int:
    from agents.challenger.config import load_config

    config = load_config(args.config)  # errors in plain words before silverback starts
    silverback = shutil.which("silverback", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    if silverback is None:
        raise UserError("silverback is not installed: run `make` (it is in the project's dependencies)")
    network = config.client.network
    env = dict(os.environ, WARREN_CHALLENGER_CONFIG=str(Path(args.config).resolve()))
    if network.split(":")[1] == "local":
        # ape-foundry attaches to the config's RPC as agents.chain.connect does (its host setting, from
        # the environment: silverback's --network takes no provider settings).
        env["APE_FOUNDRY_HOST"] = config.client.rpc
    os.execve(silverback, [silverback, "run", APP, "--network", network], env)
    return 0  # not reached


def _once(args) -> int:
    from agents.challenger.config import load_config
    from agents.challenger.service import open_challenger

    with open_challenger(load_config(args.config)) as challenger:
        slashes = challenger.slash_previous()
        ran = challenger.tick(now_all=args.all)
    print(json.dumps({"challenges": ran, "slashes": slashes}))
    return 0
