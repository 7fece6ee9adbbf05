"""Economic simulation of Warren's rewards and prices (issue 11), fed with gas measured on anvil.

First deploys the settlement layer on a fresh local anvil (agents.chain.deploy.deploy_all, as
scripts/bench_gas.py does) and measures, from transaction receipts, the gas of what a node pays for:
opening and cooperatively closing a channel, a price update, a challenger report, entering an epoch
(`rewards.submit`, first of its region and a later one) and `rewards.claim`. Then runs the
agent-based model of agents/economy/sim.py over many seeds: every strategy of the issue against the
honest run with the same seed, a paired experiment (common random numbers: every draw is a hash of
seed, purpose and ids, so a cheat's extra nodes or challenger identities shift no other draw; supply
moves between regions as an expected quantity, so no migration draw can flip between the two runs).

Usage:
    .venv/bin/python scripts/sim_economy.py [--quick] [--seeds N] [--epochs N] [--gas-gwei G]
        [--challenger-stake T] [--migration P] [--migration-sharpness B]

`--quick` (smoke test): 4 seeds of 40 epochs. The last stdout line is one JSON object: per strategy
`{profit_vs_honest, ci95}`, `honest_fee_share` (with the settle size and gas price it holds for),
`supply_response_epochs`, and the measured gas (`gas_claim`, `gas_price_update`, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.chdir(ROOT)
sys.path.insert(0, str(ROOT))
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")

from agents.economy.sim import Gas, Params, Strategy, compare  # noqa: E402

#: Ethereum mainnet gas for comparison (gwei): a quiet day's base fee plus tip.
MAINNET_GWEI = 20.0
#: Seeds per strategy: a run takes about 60 ms (draws and supply vectorised), so 800 seeds of
#: 8 runs keep the whole script within about 7 minutes on a loaded 2-core box.
DEFAULT_SEEDS = 800


def measure_gas() -> tuple[Gas, dict[str, int]]:
    """Deploy on a fresh anvil and measure each transaction the model charges a node for.

    Returns:
        The gas the model uses, and every figure measured (for the JSON line).
    """
    import ape
    from ape.logging import logger
    from eth_account import Account
    from eth_utils import keccak

    from agents.chain import eip712
    from agents.chain.bindings import WarrenContracts
    from agents.chain.deploy import TOKEN, DeployParameters, deploy_all

    logger.set_level("ERROR")
    with ape.networks.parse_network_choice("ethereum:local:foundry", disconnect_after=True):
        acct = ape.accounts.test_accounts
        owner, operator, client, treasury = acct[0], acct[1], acct[2], acct[3]
        challengers = [acct[4], acct[5], acct[6]]
        chain = ape.chain
        params = DeployParameters(guardians=[acct[7].address], revocation_quorum=1, treasury=treasury.address,
                                  voucher_denominations=[])
        deployment = deploy_all(ape.project, owner, chain, params, log=lambda _: None)
        warren = WarrenContracts.at(ape.project, deployment, chain.chain_id)
        token, registry, channels, reputation, rewards = (
            warren.token, warren.registry, warren.channels, warren.reputation, warren.rewards)
        for account in (operator, client, *challengers):
            token.mint(account, 10**6 * TOKEN, sender=owner)
        token.approve(registry, 2**256 - 1, sender=operator)
        token.approve(channels, 2**256 - 1, sender=client)
        for account in challengers:
            token.approve(registry, params.min_challenger_stake, sender=account)
            registry.register_challenger(params.min_challenger_stake, sender=account)

        epoch_length = params.epoch_length
        epoch = chain.pending_timestamp // epoch_length + 1
        chain.pending_timestamp = epoch * epoch_length + 60
        nodes = []
        for n in range(2):
            wg_key = keccak(b"sim node %d" % n)
            receipt = registry.register_node(wg_key, "DE", 10**15, params.min_node_stake, sender=operator)
            nodes.append(keccak(wg_key))
        gas = {"register": int(receipt.gas_used)}

        def channel(n: int, amount: int):
            key = keccak(b"sim signer %d" % n)
            signer = Account.from_key(key).address
            opened = channels.open_channel(nodes[0], client, signer, amount, sender=client)
            channel_id = bytes(opened.return_value)
            final = (10**6, amount)
            closed = channels.cooperative_close(
                channel_id, *final, warren.sign(eip712.Receipt(channel_id, *final), key),
                warren.sign(eip712.CooperativeClose(channel_id, *final), operator.private_key), sender=operator)
            return int(opened.gas_used), int(closed.gas_used)

        channel(0, TOKEN)  # the region's first payment ever writes a fresh slot; later ones do not
        gas["open_channel"], gas["cooperative_close"] = channel(1, TOKEN)
        key = keccak(b"sim signer settle")
        opened = channels.open_channel(nodes[0], client, Account.from_key(key).address, TOKEN, sender=client)
        channel_id = bytes(opened.return_value)
        gas["settle"] = int(channels.settle(channel_id, 10**6, TOKEN // 2,
                                            warren.sign(eip712.Receipt(channel_id, 10**6, TOKEN // 2), key),
                                            sender=operator).gas_used)
        gas["update_price"] = int(registry.update_node(nodes[0], "DE", 2 * 10**15, sender=operator).gas_used)
        reports = [int(reputation.report(node_id, epoch, 100_000, 20, True, sender=c).gas_used)
                   for node_id in nodes for c in challengers]
        # Challenger 0, 1, 2 on node 0, then on node 1: the epoch's first report of each (it counts the
        # challenger in C) on a node already reported on, its later ones likewise, and the first report
        # of a node (a fresh histogram word) in both cases.
        gas["report"], gas["report_more"] = reports[1], reports[4]
        gas["report_first_of_node"], gas["report_more_first_of_node"] = reports[0], reports[3]
        chain.pending_timestamp = (epoch + 1) * epoch_length + 60
        gas["submit_first_of_region"] = int(rewards.submit(nodes[0], epoch, sender=operator).gas_used)
        gas["submit"] = int(rewards.submit(nodes[1], epoch, sender=operator).gas_used)
        chain.pending_timestamp = (epoch + 2) * epoch_length + 60
        claims = [rewards.claim(node_id, epoch, sender=operator) for node_id in nodes]
        gas["claim_first"] = int(claims[0].gas_used)  # mints to an operator that already holds tokens
        gas["claim"] = int(claims[1].gas_used)
    measured = dict(gas)
    return Gas(open_channel=measured["open_channel"], cooperative_close=measured["cooperative_close"],
               settle=measured["settle"], submit=measured["submit_first_of_region"], claim=measured["claim"],
               update_price=measured["update_price"], report=measured["report"],
               report_more=measured["report_more"],
               register=measured["register"]), measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 4 seeds of 40 epochs")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                        help=f"runs per strategy (default {DEFAULT_SEEDS})")
    parser.add_argument("--epochs", type=int, default=90, help="epochs (days) per run (default 90)")
    parser.add_argument("--gas-gwei", type=float, default=Params.gas_gwei,
                        help="median gas price, gwei (default: a rollup's 0.05)")
    parser.add_argument("--challenger-stake", type=float, default=None,
                        help="challenger stake, tokens (default: deploy_all's min_challenger_stake)")
    parser.add_argument("--migration", type=float, default=Params.migration,
                        help="share of supply that reconsiders its region each epoch (0: no supply moves, "
                             "to separate a cheat's direct effect from the migrations it sets off)")
    parser.add_argument("--migration-sharpness", type=float, default=Params.migration_sharpness,
                        help="how alike operators are in the gain that makes a move worth it (the logit's "
                             "slope on log pay; large: all move at exactly --migration-gain x)")
    args = parser.parse_args(argv)
    seeds, epochs = (4, 40) if args.quick else (args.seeds, args.epochs)

    started = time.monotonic()
    gas, measured = measure_gas()
    from agents.chain.deploy import TOKEN, DeployParameters

    stake = args.challenger_stake if args.challenger_stake is not None else \
        DeployParameters().min_challenger_stake / TOKEN
    params = Params(epochs=epochs, gas=gas, gas_gwei=args.gas_gwei, shock_epoch=min(30, epochs // 3),
                    challenger_stake_tokens=stake, migration=args.migration,
                    migration_sharpness=args.migration_sharpness)
    result = compare(params, list(range(seeds)))
    mainnet = compare(replace(params, gas_gwei=MAINNET_GWEI), list(range(min(seeds, 10))), [])

    for name, figures in result["strategies"].items():
        print(f"{name:28s} profit vs honest {figures['profit_vs_honest']:+8.2%}  "
              f"95 % CI [{figures['ci95'][0]:+.2%}, {figures['ci95'][1]:+.2%}]  "
              f"median seed {figures['median_profit_delta_usd']:+.2f} $, total {figures['total_profit_ratio']:+.2%}")
    print(f"honest fee share {result['honest_fee_share']:.2%} (rollup {params.gas_gwei} gwei, "
          f"channels of ${params.channel_usd:.2f}); at {MAINNET_GWEI:.0f} gwei {mainnet['honest_fee_share']:.2%}")
    # What a mainnet channel must pay for its close's gas to stay within the 5 % goal with the fee.
    close_usd = gas.cooperative_close * MAINNET_GWEI * 1e-9 * params.eth_usd
    mainnet_settle_usd = close_usd / (0.05 - params.fee)
    print(f"  on mainnet a close costs ${close_usd:.2f}: channels must pay >= ${mainnet_settle_usd:.0f} for 5 %")
    print(f"supply response {result['supply_response_epochs']} epochs after a x{params.shock_factor:g} "
          f"demand rise in {params.shock_region}")
    for name, value in measured.items():
        print(f"gas {name:24s} {value:>9,d}")

    out = {
        **result["strategies"],
        "honest_fee_share": result["honest_fee_share"],
        "honest_fee_share_ci95": result["honest_fee_share_ci95"],
        "honest_fee_share_mainnet": mainnet["honest_fee_share"],
        "settle_size_usd": params.channel_usd,
        "gas_gwei": params.gas_gwei,
        "mainnet_gas_gwei": MAINNET_GWEI,
        "mainnet_settle_size_usd_for_5pct": round(mainnet_settle_usd, 1),
        "supply_response_epochs": result["supply_response_epochs"],
        "supply_response_epochs_ci95": result["supply_response_epochs_ci95"],
        "honest_profit_usd": result["honest_profit_usd"],
        "gas_claim": measured["claim"],
        "gas_price_update": measured["update_price"],
        "gas": measured,
        "seeds": seeds,
        "epochs": epochs,
        "params": {k: v for k, v in asdict(params).items() if k != "gas"},
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
