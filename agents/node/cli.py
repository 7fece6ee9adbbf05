"""`warren node ...`: run a Warren exit node. This module holds `init`; other actions add themselves
the same way (a function ``_add_<action>(sub)`` called from :func:`add_commands`).

    warren node init --config node.toml --region DE --price-per-gib 1000000000000000 \\
        --keystore operator.json --passphrase-file passphrase [--data-dir D] [--rpc URL] ...
    warren node init ... --price-per-gib auto --price-floor W --price-ceiling W --capacity-mbps N

`init` makes the WireGuard key (0600; an existing key file is kept, since the node id on chain is
its hash), a new operator keystore encrypted with the passphrase when ``--keystore`` names a missing
file (or uses the existing one, an ape alias, or a local test account), writes the config (0600),
and prints the node id, the operator address and the next command. A passphrase is read from a file
or an environment variable, never from the command line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from agents.errors import UserError

__all__ = ["add_commands"]


def add_commands(subparsers) -> None:
    """Register `warren node` and its actions."""
    node = subparsers.add_parser("node", help="run an exit node: sell bandwidth, get paid on chain")
    sub = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    _add_init(sub)
    _add_run(sub)
    _add_status(sub)
    _add_earnings(sub)
    _add_stake_actions(sub)
    _add_install_service(sub)


def _add_init(sub) -> None:
    from agents.node.config import DEFAULT_DATA_DIR, NodeConfig

    d = NodeConfig.__dataclass_fields__
    p = sub.add_parser("init", help="make the node's keys and config file")
    p.add_argument("--config", type=Path, required=True, help="config file to write (mode 0600)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config file")
    p.add_argument("--region", required=True, help="ISO 3166-1 alpha-2 region, e.g. DE")
    p.add_argument("--price-per-gib", type=_price, required=True,
                   help='price in token wei per GiB, or "auto": it follows utilisation between --price-floor '
                        'and --price-ceiling')
    p.add_argument("--price-floor", type=_wei, help="auto: lowest price, token wei per GiB")
    p.add_argument("--price-ceiling", type=_wei, help="auto: highest price, token wei per GiB")
    p.add_argument("--capacity-mbps", type=float, help="auto: the bandwidth the node sells, Mbit/s")
    p.add_argument("--target-utilisation", type=float, help="auto: share of capacity the price aims to sell "
                                                            "(default 0.7)")
    p.add_argument("--price-step", type=float, help="auto: price moves by step x (utilisation - target) per "
                                                    "epoch (default 0.5)")
    p.add_argument("--stake", type=_wei, default=d["stake"].default, help="stake in token wei")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"data folder (default {DEFAULT_DATA_DIR})")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--keystore", type=Path, help="operator keystore JSON (created if missing)")
    who.add_argument("--ape-alias", help="an ape account alias as operator")
    who.add_argument("--test-account", type=int, help="ape test account N as operator (local networks only)")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--passphrase-file", type=Path, help="file holding the passphrase (mode 0600)")
    secret.add_argument("--passphrase-env", metavar="VAR", help="environment variable holding the passphrase")
    p.add_argument("--rpc", default=d["rpc"].default, help="chain RPC URL")
    p.add_argument("--network", default=d["network"].default, help="ape network choice")
    p.add_argument("--deployment", type=Path, help="deployment file (default deployments/<net>.json)")
    p.add_argument("--listen-port", type=int, default=d["listen_port"].default, help="WireGuard UDP port")
    p.add_argument("--public-endpoint", help="host:port reachable from the internet (omit behind a NAT)")
    p.add_argument("--bootstrap", action="append", default=[], metavar="HOST:PORT", help="overlay peer (repeatable)")
    p.add_argument("--interface", default=d["interface"].default, help="TUN interface name")
    p.add_argument("--uplink", help="interface towards the internet (default: the default route's)")
    p.set_defaults(func=_init)


def _wei(text: str) -> int:
    import argparse

    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of token wei, found {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of token wei >= 0, found {text}")
    return value


def _price(text: str) -> int | str:
    import argparse

    if text.strip().lower() == "auto":
        return "auto"
    try:
        return _wei(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f'expected a whole number of token wei >= 0 or "auto", found {text!r}') from None


def _price_rule(args):
    """The ``[price]`` table the auto flags describe (None for a fixed price); refusals in words."""
    from agents.node.pricing import DEFAULT_STEP, DEFAULT_TARGET_UTILISATION, PriceRule

    flags = {"--price-floor": args.price_floor, "--price-ceiling": args.price_ceiling,
             "--capacity-mbps": args.capacity_mbps, "--target-utilisation": args.target_utilisation,
             "--price-step": args.price_step}
    if args.price_per_gib != "auto":
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            raise UserError(f"{', '.join(given)}: only with --price-per-gib auto (the price is fixed at "
                            f"{args.price_per_gib})")
        return None
    missing = [flag for flag in ("--price-floor", "--price-ceiling", "--capacity-mbps") if flags[flag] is None]
    if missing:
        raise UserError(f"--price-per-gib auto needs {', '.join(missing)} (the bounds in token wei per GiB and "
                        f"the bandwidth the node sells)")
    try:
        return PriceRule(floor=args.price_floor, ceiling=args.price_ceiling, capacity_mbps=args.capacity_mbps,
                         target_utilisation=(DEFAULT_TARGET_UTILISATION if args.target_utilisation is None
                                             else args.target_utilisation),
                         step=DEFAULT_STEP if args.price_step is None else args.price_step)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _endpoint(text: str | None, flag: str):
    from agents.tomlconfig import parse_endpoint

    if text is None:
        return None
    try:
        return parse_endpoint(text)
    except ValueError:
        raise UserError(f"{flag}: expected host:port (IPv6 as [addr]:port), found {text!r}") from None


def _operator(args):
    """(AccountSpec, address, what happened) for the operator flags; makes a new keystore if asked."""
    from agents.wallet import AccountSpec, create_keystore, read_passphrase

    spec = AccountSpec(
        keystore=args.keystore.resolve() if args.keystore else None,
        passphrase_file=args.passphrase_file.resolve() if args.passphrase_file else None,
        passphrase_env=args.passphrase_env,
        ape_alias=args.ape_alias,
        test_account=args.test_account,
    )  # WalletError (a UserError) for a keystore without a passphrase source, and the like
    if spec.test_account is not None:
        if args.network.split(":")[1:2] != ["local"]:
            raise UserError(f"--test-account works only on a local network, not {args.network!r}")
        from ape import accounts

        return spec, str(accounts.test_accounts[spec.test_account].address), f"test account {spec.test_account}"
    if spec.ape_alias is not None:
        from agents.wallet import load_account

        # Unlocking checks the alias and passphrase now rather than at the first transaction.
        return spec, str(load_account(spec, args.network).address), f"ape account {spec.ape_alias!r}"
    passphrase = read_passphrase(spec)
    if not spec.keystore.exists():
        return spec, create_keystore(spec.keystore, passphrase), f"new keystore {spec.keystore} (0600)"
    from eth_account import Account
    from eth_utils import to_checksum_address

    try:
        keystore = json.loads(spec.keystore.read_text())
        Account.decrypt(keystore, passphrase)  # a wrong passphrase is found now, not at `node run`
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{spec.keystore} is not a keystore file ({exc})") from None
    except ValueError:
        raise UserError(f"wrong passphrase for keystore {spec.keystore}") from None
    return spec, to_checksum_address("0x" + keystore["address"].removeprefix("0x")), f"existing keystore {spec.keystore}"


def _wg_key(path: Path) -> tuple[bytes, str]:
    """The node's WireGuard private key: the one in ``path``, or a new one written there (0600)."""
    from agents.wireguard.config import decode_key, encode_key, generate_private_key

    if path.exists():
        try:
            return decode_key(path.read_text()), f"existing WireGuard key {path}"
        except Exception as exc:  # noqa: BLE001 - agents.wireguard's ConfigError or a read error
            raise UserError(f"{path} does not hold a WireGuard key ({exc}): move it away and retry") from None
    key = generate_private_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(encode_key(key) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return key, f"new WireGuard key {path} (0600)"


def _init(args) -> int:
    from agents.chain.bindings import node_id_of
    from agents.node.config import NodeConfig, check_ifname, check_region, write_config
    from agents.wireguard.config import public_key

    if args.config.exists() and not args.force:  # before anything is made
        raise UserError(f"config file {args.config} already exists: pass --force to overwrite it")
    try:
        region = check_region(args.region)
        check_ifname(args.interface)
        if args.uplink is not None:
            check_ifname(args.uplink)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not 0 <= args.listen_port <= 65535:
        raise UserError(f"--listen-port: expected 0-65535, found {args.listen_port}")
    price_rule = _price_rule(args)
    public_endpoint = _endpoint(args.public_endpoint, "--public-endpoint")
    bootstrap = tuple(_endpoint(b, "--bootstrap") for b in args.bootstrap)
    if not args.rpc.startswith(("http://", "https://", "ws://", "wss://")):
        raise UserError(f"--rpc: expected a URL such as http://127.0.0.1:8545, found {args.rpc!r}")
    data_dir = args.data_dir.expanduser().resolve()
    spec, address, account_note = _operator(args)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key, key_note = _wg_key(data_dir / "wg.key")
    config = NodeConfig(
        region=region, price_per_gib=args.price_per_gib, price=price_rule, operator=spec, stake=args.stake,
        data_dir=data_dir,
        interface=args.interface, listen_port=args.listen_port, public_endpoint=public_endpoint,
        uplink=args.uplink, bootstrap=bootstrap, rpc=args.rpc, network=args.network,
        deployment=args.deployment.resolve() if args.deployment else None,
    )
    write_config(args.config, config, force=args.force)
    node_id = node_id_of(public_key(key))
    print(f"config    {args.config} (0600)")
    print(f"wireguard {key_note}")
    print(f"operator  {address} ({account_note})")
    print(f"node id   0x{node_id.hex()}")
    print(f"next: fund {address} with ETH for gas and {args.stake} token wei of stake, then run")
    print(f"  warren node run --config {args.config}")
    return 0


# -- run / status / earnings / unbond / withdraw -----------------------------------------------------

def _config_arg(parser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the node's config file (TOML)")


def _add_run(sub) -> None:
    from agents.logs import add_argument

    p = sub.add_parser("run", help="serve as an exit until SIGTERM: register, publish, carry, get paid")
    _config_arg(p)
    add_argument(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from agents.logs import configure
    from agents.node.config import load_config
    from agents.node.service import run_node

    configure(args.log_level, args.log_format)
    return run_node(load_config(args.config), config_path=args.config)


def _add_status(sub) -> None:
    p = sub.add_parser("status", help="registration, stake and score from the chain; live sessions from the node")
    _config_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_status)


def _chain_facts(config) -> tuple[dict, dict | None]:
    """What the chain says about this node (never what the node process remembers), and its earnings
    totals in token wei: the store's receipts with the chain's settled amounts and fee, as `warren
    node earnings` computes them (None before the node has a database)."""
    import dataclasses

    from agents.chain.bindings import node_id_of
    from agents.chain.connect import connect, load_contracts
    from agents.wireguard.config import decode_key, public_key

    from agents.node.earnings import from_chain
    from agents.node.status import chain_facts
    from agents.node.store import NodeStore

    node_id = node_id_of(public_key(decode_key(Path(config.wg_key_file).read_text().strip())))
    db = Path(config.data_dir) / "node.db"
    with connect(config.rpc, config.network) as project:
        contracts = load_contracts(project, config.deployment, config.network)
        facts = chain_facts(contracts, node_id)
        if not db.exists():
            return facts, None
        store = NodeStore(db)
        try:
            report = from_chain(store, contracts)
        finally:
            store.close()
    totals = {k: v for k, v in dataclasses.asdict(report).items() if k not in ("channels", "days")}
    return facts, {**totals, "channels": len(report.channels)}


def _status(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from agents.node.config import load_config
    from agents.node.service import status_socket
    from agents.unixctl import NotRunning, request

    config = load_config(args.config)
    facts, earnings = _chain_facts(config)
    try:
        live = request(status_socket(config), {"command": "status"})
    except NotRunning:
        live = None
    if args.json:
        print(json.dumps({"chain": facts, "earnings": earnings, "live": live}))
        return 0
    console = Console()
    table = Table(title=f"node {facts['node_id'][:18]}... (chain)", show_header=False)
    for key in ("registered", "operator", "region", "price_per_gib", "stake", "active", "unbond_at", "revoked",
                "score_bps", "reports"):
        table.add_row(key, str(facts[key]))
    console.print(table)
    if earnings is not None:
        console.print("earnings (token wei; settled from the chain): earned {earned} = settled {settled} + "
                      "unsettled {unsettled}; fee {fee}, net {net}, over {channels} channels".format(**earnings))
    if live is None:
        console.print("the node is not running (no answer at its status socket)")
        return 0
    sessions = Table(title=f"live: {len(live['sessions'])} sessions, {live['pending']} in quarantine")
    for column in ("client", "channel", "billed bytes", "paid bytes", "paid (token wei)", "cut off"):
        sessions.add_column(column)
    for s in live["sessions"]:
        sessions.add_row(s["client"], s["channel_id"][:16], str(s["billed_bytes"]), str(s["paid_bytes"]),
                         str(s["paid_amount"]), "yes" if s["suspended"] else "")
    console.print(sessions)
    price = _price_line(live)
    if price:
        console.print(price)
    settlement = live.get("settlement") or {}
    console.print(f"settlement: {json.dumps(settlement)}")
    return 0


def _price_line(live: dict) -> str | None:
    """The live auto price in one line (None for a fixed price or an older node)."""
    import time

    price = live.get("price") or {}
    if price.get("mode") != "auto":
        return None
    at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(price["next_decision_at"]))
    line = (f"price: auto, {live['price_per_gib']} token wei/GiB now, within [{price['floor']}, {price['ceiling']}], "
            f"towards {price['target_utilisation']:.0%} of {price['capacity_mbps']:g} Mbit/s; next decision {at}")
    last = price.get("last")
    if last:
        line += f"; after epoch {last['epoch']}: {last['reason']} ({last['outcome']})"
    return line


def _add_earnings(sub) -> None:
    p = sub.add_parser("earnings", help="earnings per day and per channel (settled + unsettled = total)")
    _config_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_earnings)


def _earnings(args) -> int:
    import dataclasses

    from rich.console import Console

    from agents.chain.connect import connect, load_contracts
    from agents.node.config import load_config
    from agents.node.earnings import from_chain, render
    from agents.node.store import NodeStore

    config = load_config(args.config)
    store = NodeStore(Path(config.data_dir) / "node.db")
    try:
        with connect(config.rpc, config.network) as project:
            contracts = load_contracts(project, config.deployment, config.network)
            report = from_chain(store, contracts)
    finally:
        store.close()
    if args.json:
        print(json.dumps(dataclasses.asdict(report), default=lambda v: v.hex() if isinstance(v, bytes) else str(v)))
    else:
        Console().print(render(report))
    return 0


def _add_stake_actions(sub) -> None:
    p = sub.add_parser("unbond", help="stop taking new channels and start the unbonding delay")
    _config_arg(p)
    p.set_defaults(func=_unbond)
    p = sub.add_parser("withdraw", help="withdraw the stake once the unbonding delay has passed")
    _config_arg(p)
    p.set_defaults(func=_withdraw)


def _stake_action(args, action: str) -> int:
    from agents.chain.bindings import node_id_of
    from agents.chain.connect import connect, load_contracts
    from agents.errors import preflight
    from agents.node.config import load_config
    from agents.wallet import load_account
    from agents.wireguard.config import decode_key, public_key

    config = load_config(args.config)
    node_id = node_id_of(public_key(decode_key(Path(config.wg_key_file).read_text().strip())))
    with connect(config.rpc, config.network) as project:
        contracts = load_contracts(project, config.deployment, config.network)
        operator = load_account(config.operator, config.network)
        info = contracts.node(node_id)
        if int(info.operator, 16) == 0:
            raise UserError(f"node 0x{node_id.hex()} is not registered")
        registry = contracts.registry
        unbond_at = int(registry.node_unbond_at(node_id))
        if action == "unbond":
            if unbond_at:
                raise UserError(f"the node is already unbonding: its stake can be withdrawn from unix time {unbond_at}")
            preflight(operator, 80_000, "unbonding")
            registry.request_unbonding(node_id, sender=operator)
            print(f"unbonding: withdraw after {int(registry.node_unbond_at(node_id))} (unix time) with "
                  f"`warren node withdraw --config {args.config}`")
        else:
            from ape.exceptions import ContractLogicError

            if not unbond_at:
                raise UserError("the node is not unbonding: run `warren node unbond` first")
            preflight(operator, 100_000, "withdrawing the stake")
            # Whether the delay is over is the next block's timestamp's to say, not this machine's
            # clock (a chain's time can lag or lead it): ape estimates the gas first, so a refusal
            # costs nothing and is put in words here.
            try:
                registry.withdraw_stake(node_id, sender=operator)
            except ContractLogicError as exc:
                if "unbonding not over" not in str(exc):
                    raise
                raise UserError(f"the unbonding delay ends at unix time {unbond_at}; withdraw after that") from None
            print(f"withdrew {info.stake} token wei of stake to {info.operator}")
    return 0


def _unbond(args) -> int:
    return _stake_action(args, "unbond")


def _withdraw(args) -> int:
    return _stake_action(args, "withdraw")


def _add_install_service(sub) -> None:
    from agents.node.systemd import DEFAULT_UNIT_DIR, DEFAULT_USER

    p = sub.add_parser("install-service", help="write a systemd unit that runs the node as its own user")
    _config_arg(p)
    p.add_argument("--user", default=DEFAULT_USER, help=f"system user the node runs as (default {DEFAULT_USER})")
    p.add_argument("--name", default="warren-node", help="unit name (default warren-node)")
    p.add_argument("--unit-dir", type=Path, default=DEFAULT_UNIT_DIR, help=f"where to write (default {DEFAULT_UNIT_DIR})")
    p.add_argument("--force", action="store_true", help="overwrite an existing unit file")
    p.set_defaults(func=_install_service)


def _install_service(args) -> int:
    from agents.node.config import load_config
    from agents.node.systemd import install

    config = load_config(args.config)  # a broken config is found now, not at the service's first start
    owned = tuple(p for p in (config.operator.keystore, config.operator.passphrase_file,
                              None if Path(config.wg_key_file).is_relative_to(config.data_dir) else config.wg_key_file)
                  if p is not None)
    path, steps = install(config=args.config.resolve(), data_dir=Path(config.data_dir), unit_dir=args.unit_dir,
                          name=args.name, user=args.user, force=args.force, owned=owned)
    print(f"wrote {path}")
    print("enable it (as root):")
    for step in steps:
        print(f"  {step}")
    return 0
