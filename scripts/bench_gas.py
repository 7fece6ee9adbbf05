"""Gas used by Warren's settlement-layer transactions, measured on a fresh local anvil chain.

Deploys the settlement layer with `agents.chain.deploy.deploy_all` (as `ape run deploy` does; no
voucher pools), runs each operation the way an agent would, and reads `gas_used` from the
transaction receipts. Anchors (from the issue): Orchid budgets 100,000 gas per redemption and Raiden's
settle used 125,052; Raiden's open used 112,922. Targets: settle <= 70,000, open_channel <= 110,000.

Usage:
    .venv/bin/python scripts/bench_gas.py [--quick]

`--quick` is accepted for `make bench` and changes nothing (the run takes a few seconds). The last
stdout line is one JSON object: gas per operation, plus the targets and whether they were met.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.chdir(ROOT)
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")

import ape  # noqa: E402  (ape reads the project from the working directory)
from ape.logging import logger  # noqa: E402
from eth_account import Account  # noqa: E402
from eth_utils import keccak  # noqa: E402

from agents.chain import eip712  # noqa: E402
from agents.chain.bindings import WarrenContracts  # noqa: E402
from agents.chain.deploy import TOKEN, DeployParameters, deploy_all  # noqa: E402

DEPOSIT = 50 * TOKEN
# Anchors and targets quoted in issue 2.
TARGETS = {"settle": 70_000, "open_channel": 110_000}
#: reputation.vy's MAX_SAMPLES: the most reports of one epoch whose measurements are folded.
MAX_SAMPLES = 32
#: The slowest order of 32 samples found for reputation's median selection (quickselect, middle
#: pivot): hill-climbing its step count over swaps from 40 random starts gave 369 steps (random
#: orders: 119 on average, at most 235 in 2,000); ranks of the values in report order.
SLOW_ORDER = (11, 16, 21, 26, 5, 28, 27, 30, 10, 22, 0, 13, 29, 18, 8, 1, 2, 4, 6, 7, 31, 15, 17, 12, 14, 19, 20, 3,
              24, 23, 9, 25)
ANCHORS = {"orchid_redeem_budget": 100_000, "raiden_settle": 125_052, "raiden_open": 112_922}


def _gas(receipt) -> int:
    return int(receipt.gas_used)


def measure() -> dict:
    """Run every operation once (twice where the first and later calls differ) and return gas used."""
    project = ape.project
    acct = ape.accounts.test_accounts
    owner, operator, client, treasury = acct[0], acct[1], acct[2], acct[3]
    challengers = [acct[4], acct[5], acct[6]]
    guardians = [acct[7], acct[8], acct[9]]
    chain = ape.chain
    gas: dict[str, int] = {}

    # Report quorum 2, so two failure reports of four make the epoch's majority that slash_epoch
    # slashes (paying two bounties); revocations need all 3 guardians, the most signatures a revoke
    # here checks.
    params = DeployParameters(
        guardians=[g.address for g in guardians], revocation_quorum=3, report_quorum=2,
        treasury=treasury.address, voucher_denominations=[],
    )
    warren = WarrenContracts.at(project, deploy_all(project, owner, chain, params, log=lambda _: None), chain.chain_id)
    token, registry, channels = warren.token, warren.registry, warren.channels
    for account in (operator, client, *challengers):
        token.mint(account, 10**6 * TOKEN, sender=owner)
    token.mint(treasury, TOKEN, sender=owner)  # the treasury already holds tokens on a live network

    token.approve(registry, 2**256 - 1, sender=operator)
    token.approve(channels, 2**256 - 1, sender=client)
    wg_key = keccak(b"bench node")
    gas["register"] = _gas(registry.register_node(wg_key, "DE", 10**15, params.min_node_stake, sender=operator))
    node_id = keccak(wg_key)

    def signer_key(n: int) -> bytes:
        return keccak(b"bench signer %d" % n)

    def open_(n: int):
        signer = Account.from_key(signer_key(n)).address
        receipt = channels.open_channel(node_id, client, signer, DEPOSIT, sender=client)
        return bytes(receipt.return_value), receipt

    def sign(channel_id: bytes, n: int, nbytes: int, amount: int, key: bytes) -> bytes:
        return warren.sign(eip712.Receipt(channel_id, nbytes, amount), key)

    # open: the very first channel of a fresh contract also turns the contract's token balance from
    # zero to non-zero; every later open (the figure that matters) finds it non-zero.
    _, receipt = open_(0)
    gas["open_channel_first_ever"] = _gas(receipt)
    channel_a, receipt = open_(1)
    gas["open_channel"] = _gas(receipt)

    # settle: first settlement of a channel, then a later one; the operator already holds tokens.
    receipt = channels.settle(channel_a, 10**6, TOKEN, sign(channel_a, 1, 10**6, TOKEN, signer_key(1)), sender=operator)
    gas["settle"] = _gas(receipt)
    receipt = channels.settle(
        channel_a, 2 * 10**6, 2 * TOKEN, sign(channel_a, 1, 2 * 10**6, 2 * TOKEN, signer_key(1)), sender=operator
    )
    gas["settle_again"] = _gas(receipt)

    # cooperative close of channel_a with one more receipt.
    final = (3 * 10**6, 3 * TOKEN)
    node_sig = warren.sign(eip712.CooperativeClose(channel_a, *final), operator.private_key)
    receipt = channels.cooperative_close(
        channel_a, *final, sign(channel_a, 1, *final, signer_key(1)), node_sig, sender=client
    )
    gas["cooperative_close"] = _gas(receipt)

    # unilateral close: start, wait out the challenge period, finalize.
    channel_b, _ = open_(3)
    channels.settle(channel_b, 10**6, TOKEN, sign(channel_b, 3, 10**6, TOKEN, signer_key(3)), sender=operator)
    start = _gas(channels.start_close(channel_b, sender=client))
    chain.pending_timestamp += params.challenge_period + 1
    finalize = _gas(channels.finalize_close(channel_b, sender=client))
    gas["unilateral_close_start"] = start
    gas["unilateral_close_finalize"] = finalize
    gas["unilateral_close"] = start + finalize

    # settle when the operator holds no tokens at all (its balance slot goes from zero to non-zero):
    # the worst case, e.g. an operator that staked everything it had.
    channel_c, _ = open_(4)
    token.transfer(owner, token.balanceOf(operator), sender=operator)
    receipt = channels.settle(channel_c, 10**6, TOKEN, sign(channel_c, 4, 10**6, TOKEN, signer_key(4)), sender=operator)
    gas["settle_to_empty_balance"] = _gas(receipt)

    # Reputation: two passing reports (a node's first of the epoch, then a later one), then two
    # failure reports (a majority of the epoch's four, at the quorum); once the epoch is over,
    # slash_epoch slashes and pushes the two bounties. A fourth challenger is generated.
    reputation = warren.reputation
    extra = acct.generate_test_account()
    chain.set_balance(extra, 10**21)
    token.mint(extra, 10**6 * TOKEN, sender=owner)  # holds tokens, as the other challengers do
    challengers.append(extra)
    for account in challengers:
        token.approve(registry, params.min_challenger_stake, sender=account)
        registry.register_challenger(params.min_challenger_stake, sender=account)
    epoch = chain.pending_timestamp // params.epoch_length
    gas["report"] = _gas(reputation.report(node_id, epoch, 50_000, 20, True, sender=challengers[0]))
    gas["report_later"] = _gas(reputation.report(node_id, epoch, 50_000, 20, True, sender=challengers[1]))
    gas["report_failure"] = _gas(reputation.report(node_id, epoch, 10, 900, False, sender=challengers[2]))
    reputation.report(node_id, epoch, 10, 900, False, sender=challengers[3])
    chain.pending_timestamp = (epoch + 1) * params.epoch_length
    gas["slash_epoch"] = _gas(reputation.slash_epoch(node_id, epoch, sender=owner))

    # The score is folded from an epoch's medians by the node's first report of a later epoch:
    # here the four reports above, then (with 28 more challengers) the most samples an epoch
    # keeps, 32, folded by the first report of the epoch after, in SLOW_ORDER. The fifth report
    # of an epoch starts a new sample word (four samples per word).
    for _ in range(MAX_SAMPLES - len(challengers)):
        account = acct.generate_test_account()
        chain.set_balance(account, 10**21)
        token.mint(account, params.min_challenger_stake, sender=owner)
        token.approve(registry, params.min_challenger_stake, sender=account)
        registry.register_challenger(params.min_challenger_stake, sender=account)
        challengers.append(account)
    epoch += 1
    gas["report_fold"] = _gas(reputation.report(node_id, epoch, 50_000, 20, True, sender=challengers[0]))
    for i, account in enumerate(challengers[1:], start=1):
        rank = SLOW_ORDER[i]
        receipt = reputation.report(node_id, epoch, 40_000 + 1_000 * rank, 20 + rank, True, sender=account)
        if i == 4:
            gas["report_new_sample_word"] = _gas(receipt)
    # The epoch after: 32 challengers reported in the one before, more than reports_per_node (12),
    # so the challenger assignment applies: the seed is drawn (a block), fixed (a later call reads
    # its hash), and only drawn challengers report (each report recomputes the draw).
    chain.pending_timestamp = (epoch + 1) * params.epoch_length
    gas["draw_seed"] = _gas(reputation.draw_seed(sender=challengers[0]))
    gas["draw_seed_fix"] = _gas(reputation.draw_seed(sender=challengers[1]))
    drawn = [a for a in challengers if reputation.is_assigned(a, node_id, epoch + 1)]
    gas["report_fold_max"] = _gas(reputation.report(node_id, epoch + 1, 50_000, 20, True, sender=drawn[0]))
    gas["report_later_drawn"] = _gas(reputation.report(node_id, epoch + 1, 50_000, 20, True, sender=drawn[1]))

    # Revocation by all three guardians (signatures in ascending signer order).
    message = eip712.Revocation(node_id, keccak(b"evidence"), 1)
    signers = sorted(guardians, key=lambda g: int(g.address, 16))
    signatures = [warren.sign_revocation(message, g.private_key) for g in signers]
    receipt = warren.revocations.revoke(node_id, message.evidence_hash, 1, signatures, sender=owner)
    gas["revoke"] = _gas(receipt)
    return gas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for `make bench`; the run is already quick")
    parser.parse_args(argv)
    # ape logs to stdout (deployments, confirmations, "Stopping 'anvil' process"); keep stdout for
    # the figures. disconnect_after stops anvil when the block ends, so even at INFO level its
    # "Stopping" line comes before the JSON object, which stays the last line.
    logger.set_level("ERROR")
    with ape.networks.parse_network_choice("ethereum:local:foundry", disconnect_after=True):
        gas = measure()
    for name, value in gas.items():
        print(f"{name:32s} {value:>9,d}")
    result = dict(gas)
    result["targets"] = TARGETS
    result["anchors"] = ANCHORS
    result["targets_met"] = {name: gas[name] <= limit for name, limit in TARGETS.items()}
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
