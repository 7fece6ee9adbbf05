"""Replay simulated challenger reports on the real reputation.vy and compare its slashing with the simulator's.

The trust simulator (:mod:`agents.challenger.sim`) judges 1,000 nodes for 100 epochs in Python; its
slashing rule (:func:`agents.challenger.sim.slashes`) mirrors ``reputation.slash_epoch``. This module
checks the mirror against the contract itself: a plain anvil (:func:`agents.netlab.world.start_anvil`),
Warren deployed with :func:`agents.chain.deploy.deploy_all` (its default one-day epoch, quorum 3), a
sample of the simulated nodes registered, one staked challenger per simulated challenger, and the
simulation's reports on those nodes for its first few epochs sent through the real ``report``.
Reputation's challenger assignment applies from the second epoch (the first one's 30 challengers
are more than ``reports_per_node``): the seed is drawn and fixed and only the simulated reports of
drawn (challenger, node) pairs are sent, and the mirror judges the same reports (the simulator's
challengers pick their nodes themselves, so about 12/30 of each node's reports are kept; a
simulator planning from the draw is not built). After each epoch the chain is moved into the next one and every sampled node-epoch is asked
``slash_refusal`` and then sent ``slash_epoch`` (refused ones revert, which is the verdict too); the
contract's verdict (``epoch_tally``'s slashed flag) is compared with the simulator's rule over the
same reports. Once the last epoch is over, every sampled node's ``score``, ``throughput_kbps`` and
``report_count`` (the closed epochs' medians folded) are compared with the simulator's mirror
(:func:`agents.challenger.sim.median_score`), and the honest nodes' lowest score is set beside what
the rule it replaced (a moving average over single reports) gives on the same reports, lying
challengers included.

ape deploys (deploy_all needs ape's project and accounts); everything after that goes over raw
JSON-RPC to anvil's unlocked dev accounts, in batches of ``eth_sendTransaction`` (automine off,
blocks mined by hand) with a fixed gas limit (no estimate): ape sends one transaction at a time and
waits for its receipt, which for the ~2,400 reports of a default run would cost minutes (estimated
from tens of milliseconds per ape transaction, not measured here); the batches take seconds.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
import urllib.request

from eth_abi import decode, encode
from eth_utils import keccak

from agents.challenger.sim import median_score, report_average_score, slashes

__all__ = ["ContractCheckError", "Report", "ReportLog", "check_on_chain", "sample_nodes"]

#: Gas limit given to every replayed transaction (a report uses ~100k, a slash with three bounty
#: transfers ~200k); fixed so that anvil does not estimate each one, and so refused slashes are mined.
TX_GAS = 600_000
#: Gas price of every replayed transaction, wei: fixed well above anvil's base fee (1 gwei at the
#: start, up 12.5 % a full block), so that no transaction waits in the pool for a cheaper block.
GAS_PRICE = 10**10
#: Seconds into an epoch at which its reports are sent (well inside a one-day epoch).
EPOCH_OFFSET_S = 60
#: Latency carried by every replayed report, ms (the simulator measures throughput only).
LATENCY_MS = 30
#: Requests per JSON-RPC batch (anvil handles them in order; keeps one HTTP body moderate).
BATCH = 500


class ContractCheckError(RuntimeError):
    """The chain did not do what the replay needs (a setup transaction reverted, an RPC error)."""


@dataclasses.dataclass(frozen=True)
class Report:
    """One simulated report: ``challenger`` is the simulator's challenger index."""

    epoch: int
    node_id: bytes
    challenger: int
    throughput_kbps: int
    passed: bool


class ReportLog:
    """A :data:`agents.challenger.sim.ReportHook` that keeps the reports of the first ``epochs`` epochs."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.reports: list[Report] = []
        self.throttled: dict[bytes, bool] = {}

    def __call__(self, epoch: int, node_id: bytes, challenger: int, measured: float, passed: bool,
                 throttled: bool) -> None:
        self.throttled[node_id] = throttled
        if epoch < self.epochs:
            self.reports.append(Report(epoch, node_id, challenger, int(measured), passed))


def sample_nodes(log: ReportLog, size: int, seed: int = 1) -> dict[bytes, bool]:
    """Pick ``size`` nodes (id -> throttled): up to half throttled, and of the honest half, half those
    with the most failure reports in the window (the ones near the threshold), half at random."""
    rng = random.Random(seed)
    throttled = sorted(n for n, t in log.throttled.items() if t)
    honest = sorted(n for n, t in log.throttled.items() if not t)
    chosen = rng.sample(throttled, min(len(throttled), size // 2))
    failures: dict[bytes, int] = {}
    for report in log.reports:
        if not report.passed:
            failures[report.node_id] = failures.get(report.node_id, 0) + 1
    rest = size - len(chosen)
    worst = sorted(honest, key=lambda n: (-failures.get(n, 0), n))[:rest // 2]
    others = [n for n in honest if n not in set(worst)]
    chosen += worst + rng.sample(others, min(len(others), rest - len(worst)))
    return {n: log.throttled[n] for n in chosen}


class _Rpc:
    """Batched JSON-RPC to one endpoint."""

    def __init__(self, url: str):
        self.url = url
        self.next_id = 0

    def batch(self, calls: list[tuple[str, list]]) -> list:
        out = []
        for start in range(0, len(calls), BATCH):
            chunk = calls[start:start + BATCH]
            body = [{"jsonrpc": "2.0", "id": self.next_id + i, "method": m, "params": p} for i, (m, p) in enumerate(chunk)]
            self.next_id += len(chunk)
            request = urllib.request.Request(self.url, data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - local anvil
                answers = sorted(json.loads(response.read()), key=lambda a: a["id"])
            for answer in answers:
                if "error" in answer:
                    raise ContractCheckError(f"RPC error: {answer['error']}")
                out.append(answer["result"])
        return out

    def call(self, method: str, *params) -> object:
        return self.batch([(method, list(params))])[0]


def _calldata(signature: str, types: list[str], values: list) -> str:
    return "0x" + (keccak(text=signature)[:4] + encode(types, values)).hex()


_nonces: dict[str, int] = {}


def _tx(sender: str, to: str, data: str) -> tuple[str, list]:
    """An eth_sendTransaction with its nonce set here: anvil answers a batch's requests concurrently,
    and left to itself gave two transactions of one sender the same nonce ("replacement transaction
    underpriced")."""
    nonce = _nonces.get(sender, 0)
    _nonces[sender] = nonce + 1
    return "eth_sendTransaction", [{"from": sender, "to": to, "data": data, "gas": hex(TX_GAS), "nonce": hex(nonce),
                                    "gasPrice": hex(GAS_PRICE)}]


def _send(rpc: _Rpc, txs: list[tuple[str, list]]) -> list[dict | None]:
    """Send a batch with automine off, then mine until every receipt is there; returns the receipts.

    With automine on, a transaction that reached anvil before its sender's previous one (a batch's
    requests run concurrently) sometimes stayed in the pool for good; mining by hand takes them all.
    """
    rpc.call("evm_setAutomine", False)
    try:
        hashes = rpc.batch(txs)
        for _ in range(1000):
            rpc.call("evm_mine")
            receipts = rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
            if all(receipts):
                return receipts
        return receipts
    finally:
        rpc.call("evm_setAutomine", True)


def _send_all(rpc: _Rpc, txs: list[tuple[str, list]], what: str) -> list[dict]:
    """Send, and require every receipt to have succeeded."""
    receipts = _send(rpc, txs)
    failed = [r for r in receipts if r is None or int(r["status"], 16) != 1]
    if failed:
        pending = sum(r is None for r in failed)
        raise ContractCheckError(f"{len(failed)} of {len(txs)} {what} transactions failed ({pending} not mined)")
    return receipts


def _move_to(rpc: _Rpc, timestamp: int) -> None:
    rpc.call("evm_setNextBlockTimestamp", hex(timestamp))
    rpc.call("evm_mine")


def check_on_chain(reports: list[Report], nodes: dict[bytes, bool], challengers: int, epochs: int) -> dict:
    """Replay ``reports`` on ``nodes`` (id -> throttled) on a fresh anvil; compare slashing verdicts.

    Args:
        reports: the simulated reports (epochs 0 .. ``epochs`` - 1; others and other nodes ignored).
        nodes: the sampled nodes, registered under their simulated id as WireGuard key.
        challengers: how many challengers the simulation had (one staked account each).
        epochs: how many epochs to replay.

    Returns:
        The figures: ``contract_node_epochs``, ``contract_agreement``, ``contract_false_slashes``,
        ``contract_detected``, ``contract_throttled_node_epochs``, ``contract_tally_mismatches``,
        ``contract_gas_report`` / ``contract_gas_slash_epoch`` (median, max), ``contract_score_mismatches``
        (nodes whose on-chain score, throughput or report count differs from the mirror),
        ``contract_score_honest_min`` / ``contract_score_throttled_max`` (basis points) and
        ``report_average_score_honest_min`` (the replaced rule on the same reports), and ``contract_wall_s``;
        ``verdicts`` maps (node id, epoch) to (contract slashed, simulator slashes).

    Raises:
        ContractCheckError: a setup transaction reverted or anvil answered an error.
    """
    from agents.chain.connect import connect
    from agents.chain.deploy import TOKEN, DeployParameters, deploy_all
    from agents.netlab.world import start_anvil

    started = time.monotonic()
    reports = [r for r in reports if r.node_id in nodes and r.epoch < epochs]
    with start_anvil(None, "--accounts", str(2 + challengers)) as anvil:
        with connect(anvil.url) as project:
            from ape import accounts, chain
            from ape.logging import logger

            logger.set_level("ERROR")
            owner = accounts.test_accounts[0]
            params = DeployParameters(guardians=[accounts.test_accounts[1].address], revocation_quorum=1,
                                      voucher_denominations=[])
            deployment = deploy_all(project, owner, chain, params, log=lambda _: None)
        rpc = _Rpc(anvil.url)
        dev = rpc.call("eth_accounts")
        _nonces.clear()
        counts = rpc.batch([("eth_getTransactionCount", [a, "pending"]) for a in dev])
        _nonces.update({a: int(c, 16) for a, c in zip(dev, counts)})
        owner_addr, operator, members = dev[0], dev[1], dev[2:2 + challengers]
        token, registry, reputation = (deployment.address(n) for n in ("warren_token", "node_registry", "reputation"))
        node_stake, member_stake = params.min_node_stake, params.min_challenger_stake

        # Three rounds, each waiting for the one before: a batch's requests run concurrently.
        approve = "approve(address,uint256)", ["address", "uint256"]
        mint = "mint(address,uint256)", ["address", "uint256"]
        _send_all(rpc, [_tx(owner_addr, token, _calldata(*mint, [operator, node_stake * len(nodes)]))]
                  + [_tx(owner_addr, token, _calldata(*mint, [m, member_stake])) for m in members], "mint")
        _send_all(rpc, [_tx(operator, token, _calldata(*approve, [registry, 2**256 - 1]))]
                  + [_tx(m, token, _calldata(*approve, [registry, member_stake])) for m in members], "approve")
        _send_all(rpc, [_tx(m, registry, _calldata("register_challenger(uint256)", ["uint256"], [member_stake]))
                        for m in members]
                  + [_tx(operator, registry, _calldata(
                      "register_node(bytes32,string,uint256,uint256)", ["bytes32", "string", "uint256", "uint256"],
                      [node, "DE", TOKEN // 1000, node_stake])) for node in nodes], "register")

        chain_id = {node: keccak(node) for node in nodes}  # node_registry: node_id = keccak256(wg key)
        length = params.epoch_length
        first = int(rpc.call("eth_getBlockByNumber", "latest", False)["timestamp"], 16) // length + 1
        by_epoch: dict[int, list[Report]] = {}
        for report in reports:
            by_epoch.setdefault(report.epoch, []).append(report)
        report_gas: list[int] = []
        slash_gas: list[int] = []
        verdicts: dict[tuple[bytes, int], tuple[bool, bool]] = {}
        mismatches = 0
        for e in range(epochs + 1):
            _move_to(rpc, (first + e) * length + EPOCH_OFFSET_S)
            if e > 0:
                judged = first + e - 1
                ids = list(nodes)
                sig = "slash_refusal(bytes32,uint256)"
                refusals = [decode(["string"], bytes.fromhex(r[2:]))[0] for r in rpc.batch(
                    [("eth_call", [{"to": reputation, "data": _calldata(sig, ["bytes32", "uint256"],
                                                                      [chain_id[n], judged])}, "latest"])
                     for n in ids])]
                sent = _send(rpc, [_tx(owner_addr, reputation, _calldata(
                    "slash_epoch(bytes32,uint256)", ["bytes32", "uint256"], [chain_id[n], judged])) for n in ids])
                tallies = [decode(["uint256", "uint256", "bool"], bytes.fromhex(r[2:])) for r in rpc.batch(
                    [("eth_call", [{"to": reputation, "data": _calldata(
                        "epoch_tally(bytes32,uint256)", ["bytes32", "uint256"], [chain_id[n], judged])}, "latest"])
                     for n in ids])]
                for n, refusal, receipt, (total, failed, slashed) in zip(ids, refusals, sent, tallies):
                    ok = int(receipt["status"], 16) == 1
                    if ok:
                        slash_gas.append(int(receipt["gasUsed"], 16))
                    if ok != (refusal == "") or ok != slashed:
                        raise ContractCheckError(f"slash_refusal {refusal!r} but slash_epoch status {ok}, "
                                                 f"tally slashed {slashed}")
                    mine = [r for r in by_epoch.get(e - 1, []) if r.node_id == n]
                    sim_failed = sum(not r.passed for r in mine)
                    mismatches += (total, failed) != (len(mine), sim_failed)
                    verdicts[(n, e - 1)] = (slashed, slashes(sim_failed, len(mine), params.report_quorum))
            if e < epochs:
                epoch = first + e
                by_epoch[e] = _drawn_only(rpc, reputation, owner_addr, members, epoch, by_epoch.get(e, []))
                receipts = _send_all(rpc, [_tx(members[r.challenger], reputation, _calldata(
                    "report(bytes32,uint256,uint256,uint256,bool)", ["bytes32", "uint256", "uint256", "uint256", "bool"],
                    [chain_id[r.node_id], epoch, r.throughput_kbps, LATENCY_MS, r.passed]))
                    for r in by_epoch.get(e, [])], "report")
                report_gas += [int(r["gasUsed"], 16) for r in receipts]
        scores = _scores(rpc, reputation, [chain_id[n] for n in nodes])
    mirrored = {n: median_score([[(r.passed, r.throughput_kbps, LATENCY_MS) for r in by_epoch.get(e, [])
                                  if r.node_id == n] for e in range(epochs)]) for n in nodes}
    score_mismatches = sum(scores[i] != (m[0], m[1], m[3]) for i, m in enumerate(mirrored.values()))
    honest = [i for i, n in enumerate(nodes) if not nodes[n]]
    throttled = [i for i, n in enumerate(nodes) if nodes[n]]
    averaged = [report_average_score([r.passed for r in reports if r.node_id == n])
                for n in nodes if not nodes[n]]
    agree = sum(c == s for c, s in verdicts.values())
    throttled_epochs = [k for k in verdicts if nodes[k[0]]]
    return {
        "contract_nodes": len(nodes), "contract_epochs": epochs, "contract_reports": len(report_gas),
        "contract_node_epochs": len(verdicts),
        "contract_agreement": round(agree / len(verdicts), 6) if verdicts else None,
        "contract_false_slashes": sum(verdicts[k][0] for k in verdicts if not nodes[k[0]]),
        "contract_detected": sum(verdicts[k][0] for k in throttled_epochs),
        "contract_throttled_node_epochs": len(throttled_epochs),
        "contract_slashes": sum(c for c, _ in verdicts.values()),
        "contract_tally_mismatches": mismatches,
        "contract_gas_report": _median_max(report_gas),
        "contract_gas_slash_epoch": _median_max(slash_gas),
        "contract_score_mismatches": score_mismatches,
        "contract_score_honest_min": min((scores[i][0] for i in honest), default=None),
        "contract_score_throttled_max": max((scores[i][0] for i in throttled), default=None),
        "report_average_score_honest_min": min(averaged, default=None),
        "contract_wall_s": round(time.monotonic() - started, 1),
        "verdicts": verdicts,
    }


def _drawn_only(rpc: _Rpc, reputation: str, sender: str, members: list[str], epoch: int,
                reports: list[Report]) -> list[Report]:
    """The epoch's reports whose challenger reputation's assignment draws for the node (the others
    would be refused: a challenger does not challenge a node it is not drawn for). When the draw
    applies, the seed is drawn and fixed first (two draw_seed calls in two blocks) and the rule
    recomputed here (agents.challenger.assignment.is_drawn, the contract's own rule)."""
    from agents.challenger.assignment import is_drawn

    def assignment() -> tuple[bytes, int, int]:
        data = _calldata("assignment(uint256)", ["uint256"], [epoch])
        seed, _, active = decode(["bytes32", "uint256", "uint256"],
                                 bytes.fromhex(rpc.call("eth_call", {"to": reputation, "data": data}, "latest")[2:]))
        per_node = decode(["uint256"], bytes.fromhex(rpc.call("eth_call", {"to": reputation, "data": _calldata(
            "reports_per_node()", [], [])}, "latest")[2:]))[0]
        return seed, active, per_node

    seed, active, per_node = assignment()
    if active <= per_node:
        return reports
    for _ in range(2):  # draw (this block), then fix (the next one reads its hash)
        _send_all(rpc, [_tx(sender, reputation, _calldata("draw_seed()", [], []))], "draw_seed")
    seed, active, per_node = assignment()
    return [r for r in reports if is_drawn(seed, members[r.challenger], keccak(r.node_id), active, per_node)]


def _scores(rpc: _Rpc, reputation: str, ids: list[bytes]) -> list[tuple[int, int, int]]:
    """``(score, throughput_kbps, report_count)`` of each node, read from the chain in one batch."""
    calls = [("eth_call", [{"to": reputation, "data": _calldata(f"{view}(bytes32)", ["bytes32"], [node])}, "latest"])
             for node in ids for view in ("score", "throughput_kbps", "report_count")]
    values = [int(v, 16) for v in rpc.batch(calls)]
    return [tuple(values[3 * i:3 * i + 3]) for i in range(len(ids))]


def _median_max(values: list[int]) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"median": ordered[len(ordered) // 2], "max": ordered[-1]}
