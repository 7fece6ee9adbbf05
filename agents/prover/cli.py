"""`warren voucher ...`: deposit into the voucher pool, list notes, redeem to a node, pay its channel.

    warren voucher setup --depth 20                       # development keys (keys/voucher-depth20)
    warren voucher deposit --amount 10000000000000000000  # pays the pool of that denomination
    warren voucher list
    warren voucher redeem --node 0x<node_id> [--signer 0x<addr>] [--fee N] [--out r.json] [--submit]
    warren voucher submit r.json --account <node operator> [--node 0x<id>] [--out channel.json]
    warren voucher sync                                   # the client: spent notes -> their channels
    warren voucher fees [--withdraw] --account <node operator>

A redemption opens a channel held by the pool: id keccak256(chain id, pool, nullifier hash), terms
(node id, signer, deposit = denomination - relayer fee). Without ``--signer``, ``redeem`` makes a
fresh payment signer and keeps its key in the signers file (mode 0600, beside the notes); ``submit``,
``redeem --submit`` and ``sync`` print the channel and its terms, and store it beside the signer's key
when the key is ours. ``submit`` refuses a redemption for another node (``--node``, or by default any
node whose registered operator is not ``--account``).

Chain commands run inside ape's network context (``--network``, default ethereum:local:foundry) with
an ape account (``--account`` alias, or a test account index on local networks). The pool comes from
``--pool`` or the deployment file's ``voucher_pool*`` entries (the one whose denomination matches).
"""

from __future__ import annotations

import sys
from pathlib import Path

from agents.chain.bindings import VoucherChannel, VoucherChannelError
from agents.prover.errors import ChainDataError, ProverError
from agents.prover.notes import NoteStore
from agents.prover.signers import SignerStore

__all__ = ["add_commands"]

DEFAULT_NOTES = Path.home() / ".warren" / "notes.json"
#: The signers file's name, in the notes file's folder unless ``--signers`` says otherwise.
SIGNERS_NAME = "signers.json"


def add_commands(subparsers) -> None:
    """Register `warren voucher` and its subcommands."""
    voucher = subparsers.add_parser("voucher", help="anonymous payment: the shielded voucher pool")
    sub = voucher.add_subparsers(dest="voucher_command", metavar="ACTION", required=True)

    def common(p, chain=True):
        p.add_argument("--notes", type=Path, default=DEFAULT_NOTES, help="notes file (mode 0600)")
        p.add_argument("--signers", type=Path, help=f"payment signers file (mode 0600; default "
                       f"{SIGNERS_NAME} beside the notes)")
        if chain:
            p.add_argument("--network", default="ethereum:local:foundry", help="ape network choice")
            p.add_argument("--rpc", help="attach to the chain already running here (e.g. http://127.0.0.1:8545) "
                           "instead of letting ape choose")
            p.add_argument("--account", default="0", help="ape account alias, or test account index")
            p.add_argument("--pool", help="voucher pool address (default: from the deployment file)")
            p.add_argument("--deployment", type=Path, help="deployment file (default deployments/<net>.json)")

    setup = sub.add_parser("setup", help="one-command development keys for the voucher circuit")
    setup.add_argument("--depth", type=int, default=20, help="maximum tree depth")
    setup.add_argument("--out", type=Path, help="folder (default keys/voucher-depth<D>)")
    setup.add_argument("--seed", help="reproducible keys from this public string (development only)")
    setup.set_defaults(func=_setup)

    dep = sub.add_parser("deposit", help="deposit one note of --amount (token wei)")
    common(dep)
    dep.add_argument("--amount", type=int, required=True, help="denomination, in token wei")
    dep.set_defaults(func=_deposit)

    lst = sub.add_parser("list", help="list stored notes")
    common(lst, chain=False)
    lst.set_defaults(func=_list)

    red = sub.add_parser("redeem", help="prove a note and hand the redemption to a node")
    common(red)
    red.add_argument("--node", required=True, help="node id (0x + 64 hex digits)")
    red.add_argument("--signer", help="the channel's payment signer (default: a fresh key, kept in "
                     "the signers file)")
    red.add_argument("--fee", type=int, default=0, help="relayer fee for the submitting node, token wei")
    red.add_argument("--keys", type=Path, help="key folder (default keys/voucher-depth<pool depth>)")
    red.add_argument("--out", type=Path, help="write the redemption JSON here (default: stdout)")
    red.add_argument("--submit", action="store_true", help="submit it ourselves instead of via the node")
    red.set_defaults(func=_redeem)

    sub_ = sub.add_parser("submit", help="(node) check a redemption handed to us and submit it as relayer")
    common(sub_)
    sub_.add_argument("redemption", type=Path, help="the redemption JSON the client handed over")
    sub_.add_argument("--keys", type=Path, help="key folder with verification_key.json "
                      "(default keys/voucher-depth<pool depth>)")
    sub_.add_argument("--node", help="our node id (default: refuse any node --account does not operate)")
    sub_.add_argument("--out", type=Path, help="write the opened channel (JSON) here, for the client")
    sub_.set_defaults(func=_submit)

    sync = sub.add_parser("sync", help="(client) mark spent notes and record the channels they opened")
    common(sync)
    sync.set_defaults(func=_sync)

    close = sub.add_parser("close", help="close a voucher channel unilaterally: the client signs a close "
                           "request with the channel's signer; anyone submits it (--submit)")
    common(close)
    which = close.add_mutually_exclusive_group(required=True)
    which.add_argument("--channel", help="(client) our channel's id (0x...; see `sync`): sign its close request")
    which.add_argument("--request", type=Path, help="(relayer) a signed close request file to submit")
    close.add_argument("--out", type=Path, help="write the signed request (JSON) here, for a relayer")
    close.add_argument("--submit", action="store_true",
                       help="submit it from --account (that account is then seen starting this channel's close)")
    close.add_argument("--finalize", action="store_true",
                       help="instead, finish a close whose challenge period is over (anyone may; refunds the signer)")
    close.set_defaults(func=_close)

    fees = sub.add_parser("fees", help="(node) relayer fees the pool holds for --account")
    common(fees)
    fees.add_argument("--withdraw", action="store_true", help="withdraw them to --account")
    fees.set_defaults(func=_fees)

    for action in sub.choices.values():  # the voucher's own errors print as plain words (agents.cli)
        action.set_defaults(func=_plain(action.get_default("func")))


def _plain(func):
    """``func`` with the prover's errors turned into UserError (printed as ``warren: ...``, exit 1)."""
    import functools

    from agents.errors import UserError

    @functools.wraps(func)
    def run(args):
        try:
            return func(args)
        except (ProverError, ChainDataError, VoucherChannelError) as exc:
            raise UserError(str(exc)) from exc

    return run


def _setup(args) -> int:
    from zk.keys import default_keys_dir, dev_keys

    out = args.out or default_keys_dir(args.depth)
    dev_keys(args.depth, out, args.seed.encode() if args.seed else None)
    print(f"development keys for depth {args.depth} written to {out}")
    return 0


def _list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    store = NoteStore(args.notes)
    table = Table(title=f"notes in {args.notes}")
    for col in ("#", "pool", "amount (wei)", "leaf", "state", "commitment", "channel"):
        table.add_column(col, no_wrap=True)
    for i, n in enumerate(store.notes):
        state = "spent" if n.spent else ("unspent" if n.leaf_index is not None else "not deposited")
        table.add_row(str(i), n.pool, str(n.denomination), "-" if n.leaf_index is None else str(n.leaf_index),
                      state, hex(n.commitment)[:18] + "...", (n.channel_id or "-")[:18])
    Console().print(table)
    return 0


def _chain(args):
    """The ape network context for ``--network`` (the connected one if ape is already connected)."""
    from contextlib import nullcontext

    from ape import networks

    if getattr(args, "rpc", None):  # a plain error if nothing answers there (agents.chain.connect)
        from agents.chain.connect import connect

        return connect(args.rpc, args.network)
    provider = networks.active_provider
    if provider is not None and provider.is_connected:
        return nullcontext()
    return networks.parse_network_choice(args.network)


def _account(args):
    from ape import accounts

    if args.account.isdigit():
        return accounts.test_accounts[int(args.account)]
    return accounts.load(args.account)


def _pool(args, amount: int | None = None):
    from ape import project

    if args.pool:
        return project.voucher_pool.at(args.pool)
    from agents.chain.connect import load_deployment
    from agents.chain.deployment import default_path

    path = args.deployment or default_path(args.network)
    dep = load_deployment(path)
    candidates = [a for name, a in dep.addresses.items() if name.startswith("voucher_pool")]
    pools = [project.voucher_pool.at(a) for a in candidates]
    if amount is not None:
        pools = [p for p in pools if int(p.denomination()) == amount]
    if len(pools) != 1:
        raise ProverError(f"{len(pools)} voucher pools match in {path}: pass --pool")
    return pools[0]


def _deposit(args) -> int:
    from ape import project

    from agents.prover.chain import deposit_note

    with _chain(args):
        pool = _pool(args, args.amount)
        token = project.warren_token.at(pool.token())
        stored = deposit_note(NoteStore(args.notes), pool, token, _account(args), args.amount)
    print(f"deposited leaf {stored.leaf_index} into {stored.pool}; note saved in {args.notes}")
    return 0


def _signers(args) -> SignerStore:
    return SignerStore(args.signers or args.notes.with_name(SIGNERS_NAME))


def _print_channel(channel: VoucherChannel, denomination: int | None = None) -> None:
    fee = "" if denomination is None else f" (denomination {denomination} - relayer fee {denomination - channel.deposit})"
    print(f"channel 0x{channel.channel_id.hex()} in pool {channel.pool} (chain {channel.chain_id})")
    print(f"  node    0x{channel.node_id.hex()}")
    print(f"  signer  {channel.signer}")
    print(f"  deposit {channel.deposit} token wei{fee}")


def _redeem(args) -> int:
    from agents.prover.chain import pool_tree, submit_redemption, sync_spent
    from agents.prover.redemption import make_redemption
    from zk.keys import default_keys_dir, load_keys

    node = args.node[2:] if args.node.startswith("0x") else args.node
    node_id = bytes.fromhex(node)
    if len(node_id) != 32:
        raise ProverError("--node must be 32 bytes")
    store = NoteStore(args.notes)
    signers = _signers(args)
    with _chain(args):
        pool = _pool(args)
        sync_spent(store, pool)
        unspent = store.unspent(str(pool.address))
        if not unspent:
            raise ProverError("no unspent note for this pool")
        depth = int(pool.max_depth())
        pk, _ = load_keys(args.keys or default_keys_dir(depth))
        tree = pool_tree(pool)
        stored = unspent[0]
        nullifier_hash = stored.note.nullifier_hash
        if args.signer:
            signer = args.signer
        else:  # a fresh key, saved before its address goes anywhere
            signer = signers.new(nullifier_hash).address
            print(f"fresh payment signer {signer} (key in {signers.path})")
        redemption = make_redemption(stored, tree, pk, depth, node_id, signer, args.fee)
        channel_id = bytes(pool.channel_id_of(nullifier_hash))
        denomination = int(pool.denomination())
        if args.submit:
            submission = submit_redemption(pool, redemption, _account(args))
            stored.spent = True
            stored.redeemed_to = "0x" + node_id.hex()
            stored.channel_id = "0x" + submission.channel.channel_id.hex()
            store.save()
            _keep_channel(signers, submission.channel)
            print(f"redeemed (gas {submission.gas_used}) into")
            _print_channel(submission.channel, denomination)
    text = redemption.to_json()
    if args.out:
        args.out.write_text(text + "\n")
        print(f"redemption written to {args.out}: hand it to node 0x{node_id.hex()}")
    elif not args.submit:
        print(text)
    if not args.submit:
        print(f"once submitted: channel 0x{channel_id.hex()}, node 0x{node_id.hex()}, signer {signer}, "
              f"deposit {denomination - args.fee} token wei")
    return 0


def _keep_channel(signers: SignerStore, channel: VoucherChannel) -> None:
    """Store the channel beside its signer's key, if the key is ours."""
    if any(s.address.lower() == channel.signer.lower() for s in signers.signers):
        signers.set_channel(channel)


def _submit(args) -> int:
    from agents.prover.chain import submit_redemption
    from agents.prover.redemption import Redemption, check_redemption
    from zk.keys import default_keys_dir, load_keys

    redemption = Redemption.from_json(args.redemption.read_text())
    node_id = bytes.fromhex(redemption.node_id[2:])
    with _chain(args):
        pool = _trusted_pool(args, redemption.pool)
        account = _account(args)
        if args.node:
            ours = args.node.lower().removeprefix("0x") == node_id.hex()
        else:
            ours = str(_registry(pool).node_operator(node_id)).lower() == str(account.address).lower()
        if not ours:
            raise ProverError(f"redemption pays node {redemption.node_id}, not ours: not submitted")
        _, vk = load_keys(args.keys or default_keys_dir(int(pool.max_depth())))
        if not check_redemption(vk, redemption, str(pool.address), node_id):
            raise ProverError("redemption does not verify for this pool: not submitted")
        if pool.nullifier_spent(redemption.nullifier_hash):
            raise ProverError("this note was already redeemed: not submitted")
        from ape.exceptions import ContractLogicError

        try:
            submission = submit_redemption(pool, redemption, account)
        except ContractLogicError as exc:
            raise ProverError(f"the pool refused the redemption: {exc}") from exc
        denomination = int(pool.denomination())
    print(f"redeemed as relayer (fee {redemption.relayer_fee} token wei, gas {submission.gas_used}) into")
    _print_channel(submission.channel, denomination)
    if args.out:
        args.out.write_text(submission.channel.to_json() + "\n")
        print(f"channel written to {args.out}")
    return 0


def _sync(args) -> int:
    from agents.prover.chain import find_channel, sync_spent

    store = NoteStore(args.notes)
    signers = _signers(args)
    with _chain(args):
        pool = _pool(args)
        changed = sync_spent(store, pool)
        found = 0
        for n in store.notes:
            if not n.spent or n.pool.lower() != str(pool.address).lower():
                continue
            channel = find_channel(pool, n.note.nullifier_hash)
            if channel is None:
                continue
            n.channel_id = "0x" + channel.channel_id.hex()
            _keep_channel(signers, channel)
            found += 1
            _print_channel(channel)
        store.save()
    print(f"{changed} notes newly seen spent; {found} channels known")
    return 0


def _close(args) -> int:
    """Sign, hand over, submit or finish a voucher channel's unilateral close.

    The channel's signer is a fresh key with no gas money (funding it from the client's wallet would
    link the two), so the client signs an EIP-712 CloseRequest and anyone submits it
    (``voucher_pool.start_close_for``); ``--finalize`` refunds the signer after the challenge period.
    """
    import json

    from agents.chain import eip712
    from agents.chain.bindings import VoucherChannels

    if args.request is not None:
        try:
            doc = json.loads(args.request.read_text())
            channel, signature = VoucherChannel.from_json(doc["channel"]), bytes.fromhex(doc["signature"][2:])
        except (OSError, ValueError, KeyError, TypeError, VoucherChannelError) as exc:
            raise ProverError(f"{args.request} is not a close request: {exc}") from exc
    else:
        stored = next((s for s in _signers(args).signers
                       if s.channel is not None and "0x" + s.channel.channel_id.hex() == args.channel.lower()), None)
        if stored is None:
            raise ProverError(f"no stored signer holds channel {args.channel} (run `warren voucher sync`)")
        channel = stored.channel
        signature = eip712.sign(eip712.CloseRequest(channel.channel_id), stored.private_key,
                                channel.chain_id, channel.pool)
        request = {"channel": json.loads(channel.to_json()), "signature": "0x" + signature.hex()}
        if args.out:
            args.out.write_text(json.dumps(request, indent=1))
            print(f"signed close request written to {args.out}: any relayer can submit it")
        elif not (args.submit or args.finalize):
            print(json.dumps(request, indent=1))
    if not (args.submit or args.finalize):
        return 0
    with _chain(args):
        from ape import project

        pools = VoucherChannels(project.voucher_pool.at(channel.pool), channel.chain_id)
        state = pools.channel(channel)
        if args.finalize:
            receipt = pools.finalize_close(channel, sender=_account(args))
            print(f"closed: signer {channel.signer} refunded {channel.deposit - state.settled} token wei "
                  f"(gas {receipt.gas_used})")
        else:
            receipt = pools.start_close_for(channel, signature, sender=_account(args))
            close_at = pools.channel(channel).close_at
            print(f"close started: the node may settle until {close_at} (unix); then run with --finalize "
                  f"(gas {receipt.gas_used})")
    return 0


def _fees(args) -> int:
    with _chain(args):
        pool = _pool(args)
        account = _account(args)
        balance = int(pool.relayer_balance(account.address))
        print(f"relayer fees held for {account.address} by pool {pool.address}: {balance} token wei")
        if args.withdraw:
            if balance == 0:
                raise ProverError("no relayer fees to withdraw")
            receipt = pool.withdraw_relayer_fees(sender=account)
            print(f"withdrew {balance} token wei (gas {receipt.gas_used})")
    return 0


def _registry(pool):
    from ape import project

    return project.node_registry.at(pool.registry())


def _trusted_pool(args, address: str):
    """The pool a redemption names, if it is one the node trusts: ``--pool``, or a voucher pool of the
    deployment file. A pool address taken from the client's document alone could be any contract
    that accepts the call and reports a channel that never pays.

    Raises:
        ProverError: the pool is not ours, or there is no deployment file to say which pools are.
    """
    from ape import project

    if args.pool:
        trusted = [args.pool]
    else:
        from agents.chain.connect import load_deployment
        from agents.chain.deployment import DeploymentError, default_path

        path = args.deployment or default_path(args.network)
        try:
            deployment = load_deployment(path)
        except DeploymentError as exc:
            raise ProverError(f"{exc} (or pass --pool)") from exc
        trusted = [a for name, a in deployment.addresses.items() if name.startswith("voucher_pool")]
    if address.lower() not in {a.lower() for a in trusted}:
        raise ProverError(f"redemption names pool {address}, not one of ours: not submitted")
    return project.voucher_pool.at(address)


def _guard(func):
    def run(args) -> int:
        try:
            return func(args)
        except (ProverError, ChainDataError) as exc:
            print(f"warren voucher: {exc}", file=sys.stderr)
            return 1
    return run


for _name in ("_setup", "_deposit", "_list", "_redeem", "_submit", "_sync", "_close", "_fees"):
    globals()[_name] = _guard(globals()[_name])
