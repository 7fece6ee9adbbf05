"""`warren connect`, `warren status`, `warren disconnect`: the client's commands.

    warren connect --config client.toml [--region NL[,DE]] [--max-price WEI] [--budget WEI] [--node ID]
                   [--pay channel|voucher] [--hops 1|2] [--relay-region DE] [--paths N]
    warren status --config client.toml
    warren switch --config client.toml
    warren disconnect --config client.toml
    warren fetch URL --config client.toml --paths N -o FILE [--sha256 HEX]

`connect` stays in the foreground (run it as a service); `status`, `switch` and `disconnect` talk to it over
its control socket, and `disconnect` also cleans up after a client that was killed (its kill switch
stays up until then, on purpose).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["add_commands"]


def add_commands(subparsers) -> None:
    """Register `warren connect`, `warren status`, `warren switch`, `warren disconnect`."""
    connect = subparsers.add_parser("connect", help="buy bandwidth from the best exit node and route everything "
                                                    "through it (kill switch on until `warren disconnect`)")
    _config(connect)
    connect.add_argument("--region", help="only nodes of this region (ISO 3166-1 alpha-2), or of these, most "
                                             "wanted first (NL,DE: NL while one is left there, then DE)")
    connect.add_argument("--max-price", type=int, help="skip nodes above this price, token wei per GiB")
    connect.add_argument("--budget", type=int, help="deposit of each channel, token wei")
    connect.add_argument("--node", help="use this node id only")
    connect.add_argument("--pay", choices=("channel", "voucher"),
                         help="channel: a payment channel funded by [account]; voucher: a note deposited with "
                              "`warren voucher deposit`, unlinkable on chain (default: the config's pay)")
    connect.add_argument("--hops", type=int, choices=(1, 2), default=1,
                         help="2: through a relay node of another operator, so the exit never learns your "
                              "address (both are paid; --region and --node choose the exit)")
    connect.add_argument("--relay-region", help="with --hops 2: a relay of this region (ISO 3166-1 alpha-2)")
    connect.add_argument("--paths", type=int, default=1, metavar="N",
                         help="N exits of different operators at once, each paid for its own bytes; new "
                              "connections are spread over them by measured throughput (`warren fetch` "
                              "splits one download over them)")
    from agents.logs import add_argument

    add_argument(connect)
    connect.set_defaults(func=_connect)
    status = subparsers.add_parser("status", help="the running connection: node, bytes, spent, balance")
    _config(status)
    status.set_defaults(func=_status)
    switch = subparsers.add_parser("switch", help="move to the standby node now; the current node is paid up and "
                                                  "its channel closed cooperatively")
    _config(switch)
    switch.set_defaults(func=_switch)
    disconnect = subparsers.add_parser("disconnect", help="close the channel, remove the kill switch and routes")
    _config(disconnect)
    disconnect.set_defaults(func=_disconnect)
    fetch = subparsers.add_parser("fetch", help="download a file over the running client's paths at once "
                                                "(byte ranges; `warren connect --paths N` first)")
    _config(fetch)
    fetch.add_argument("url", help="http:// or https:// URL of a server that serves byte ranges")
    fetch.add_argument("--paths", type=int, default=1, metavar="N", help="pull over the first N live paths")
    fetch.add_argument("-o", "--output", type=Path, required=True, help="the file to write")
    fetch.add_argument("--sha256", help="expected SHA-256 (hex): exit 1 when the file's differs")
    fetch.add_argument("--stall-s", type=float, default=3.0,
                       help="a path silent this long gives its range to the others (seconds)")
    fetch.add_argument("--deadline-s", type=float, help="give up after this long (seconds)")
    fetch.set_defaults(func=_fetch)


def _config(parser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="client config file (TOML)")


def _connect(args) -> int:
    from agents.client.config import load_config
    from agents.client.service import run_connect
    from agents.logs import configure, protect

    configure(args.log_level, args.log_format)
    config = load_config(args.config)
    if config.account is not None:
        protect(config.account)  # the passphrase never appears in a log line
    return run_connect(config, region=args.region, max_price=args.max_price,
                       budget=args.budget, node=args.node, pay=args.pay, hops=args.hops,
                       relay_region=args.relay_region, paths=args.paths)


def _status(args) -> int:
    from agents.client.config import load_config
    from agents.client.service import status

    print(json.dumps(status(load_config(args.config)), indent=1))
    return 0


def _fetch(args) -> int:
    from agents.client.config import load_config
    from agents.client.fetch import fetch, path_devices
    from agents.client.service import status
    from agents.errors import UserError

    config = load_config(args.config)
    devices = path_devices(status(config), args.paths)

    def alive() -> dict:
        return {p["tun"]: bool(p.get("alive")) for p in status(config).get("paths", [])}

    summary = fetch(args.url, args.output, devices, expected_sha256=args.sha256, stall_s=args.stall_s,
                    deadline_s=args.deadline_s, alive=alive)
    print(json.dumps(summary), flush=True)
    if summary["sha256_ok"] is False:
        raise UserError(f"{args.output}: SHA-256 {summary['sha256']} is not the expected {args.sha256}")
    return 0


def _switch(args) -> int:
    from agents.client.config import load_config
    from agents.client.service import switch
    from agents.errors import UserError

    answer = switch(load_config(args.config))
    if "error" in answer:
        raise UserError(answer["error"])
    print(json.dumps(answer), flush=True)
    return 0


def _disconnect(args) -> int:
    from agents.client.config import load_config
    from agents.client.service import disconnect

    print(json.dumps(disconnect(load_config(args.config))))
    return 0
