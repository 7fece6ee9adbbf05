"""Many epochs of challenges over a large network, with reputation.vy's slashing rule mirrored (pure).

Each epoch every challenger plans its challenges with the real :func:`agents.challenger.plan.plan_epoch`
(its own secret, weighted towards busy and new nodes) and judges each simulated measurement with the
real :func:`agents.challenger.verdict.service_reasons`. Measurements carry noise: a node delivers
its capacity times a goodput factor (0.9: headers, TCP) times a log-normal path factor per
challenge (sigma 0.25, the challenger's own link and the path between), and a challenge fails
outright with probability 1 % (a timeout, a reset). Throttled nodes deliver a tenth of what they
advertise; a lying challenger reports honest nodes failed and throttled nodes passed.

Two slashing rules are mirrored:

* ``majority`` (reputation.vy since issue 14, the default): at least ``quorum`` failure reports *and*
  failures at least half of that epoch's reports (the lower median of the epoch is a failure, as
  ``epoch_service`` computes it), decided when the epoch ends (``slash_epoch``, during the next
  epoch). Honest noise then has to fail half of a node's challenges at once, and a lying minority
  can never make the median;
* ``count`` (reputation.vy before issue 14, kept for the comparison): the ``quorum``-th distinct
  failure report in an epoch slashes.

The score is mirrored too (:func:`median_score`): reputation.vy folds each closed epoch's lower
medians over the challengers into moving averages over epochs; :func:`report_average_score` is the
rule it replaced (a moving average over single reports, which each lying report moved).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable

from agents.challenger.plan import NodeInfo, PlanPolicy, plan_epoch
from agents.challenger.verdict import Policy, service_reasons

__all__ = ["ReportHook", "SimConfig", "epoch_median", "median_score", "report_average_score", "simulate", "slashes"]

#: reputation.vy: basis points, the moving average's weight 1/8 (RFC 6298's alpha), and how many of an
#: epoch's reports keep their measurement for its medians.
BPS = 10_000
EMA_WEIGHT_DIVISOR = 8
MAX_SAMPLES = 32

#: Called for every simulated report: (epoch, node_id, challenger index, measured kbps, passed,
#: node throttled). agents.challenger.contract_check replays these on the real contract.
ReportHook = Callable[[int, bytes, int, float, bool, bool], None]


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Attributes are the network and the challengers' schedule; see the module docstring for noise
    and for ``rule`` (``"majority"``: the contract's; ``"count"``: the rule it replaced)."""

    nodes: int = 1000
    challengers: int = 30
    liars: int = 6
    epochs: int = 100
    per_epoch: int = 300
    throttled_share: float = 0.05
    quorum: int = 3
    slash_bps: int = 1000
    goodput: float = 0.9
    noise_sigma: float = 0.25
    transient_failure: float = 0.01
    capacity_kbps: tuple[int, int] = (20_000, 500_000)
    rule: str = "majority"
    seed: int = 1


def slashes(failures: int, reports: int, quorum: int, rule: str = "majority") -> bool:
    """Whether an epoch with ``reports`` reports on a node, ``failures`` of them failed, is slashed.

    ``majority`` is reputation.vy's ``slash_epoch`` (``_refusal``): failures >= quorum and
    2 * failures >= reports; ``count`` the rule it replaced (failures >= quorum).
    """
    if failures < quorum:
        return False
    return rule == "count" or 2 * failures >= reports


def _lower_median(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def _average(old: int, sample: int) -> int:
    return (old * (EMA_WEIGHT_DIVISOR - 1) + sample) // EMA_WEIGHT_DIVISOR


def epoch_median(reports: list[tuple[bool, int, int]]) -> tuple[bool, int, int]:
    """reputation.epoch_median over one epoch's ``(passed, throughput_kbps, latency_ms)`` reports, in
    report order: passed when fewer than half failed; the lower medians of the first MAX_SAMPLES
    reports' figures."""
    failures = sum(not passed for passed, _, _ in reports)
    kept = reports[:MAX_SAMPLES]
    return (2 * failures < len(reports), _lower_median([t for _, t, _ in kept]),
            _lower_median([x for _, _, x in kept]))


def median_score(epochs: list[list[tuple[bool, int, int]]]) -> tuple[int, int, int, int]:
    """reputation.vy's ``(score, throughput_kbps, latency_ms, report_count)`` once ``epochs`` (each
    a closed epoch's reports, oldest first; epochs without reports are skipped) are folded."""
    score = throughput = latency = count = 0
    for reports in epochs:
        if not reports:
            continue
        passed, t, x = epoch_median(reports)
        sample = BPS if passed else 0
        if count == 0:
            score, throughput, latency = sample, t, x
        else:
            score, throughput, latency = _average(score, sample), _average(throughput, t), _average(latency, x)
        count += len(reports)
    return score, throughput, latency, count


def report_average_score(verdicts: list[bool]) -> int:
    """The score before issue 14: a moving average over single reports' verdicts (the first seeds it)."""
    score = None
    for passed in verdicts:
        sample = BPS if passed else 0
        score = sample if score is None else _average(score, sample)
    return score or 0


def simulate(config: SimConfig = SimConfig(), on_report: ReportHook | None = None) -> dict:
    """Run the epochs; returns the figures (see :func:`scripts.bench_trust`).

    Args:
        config: the network, the challengers and the rule.
        on_report: called with every report as it is made (see :data:`ReportHook`).
    """
    if config.rule not in ("majority", "count"):
        raise ValueError(f"unknown slashing rule {config.rule!r}: 'majority' or 'count'")
    rng = random.Random(config.seed)
    ids = [rng.getrandbits(256).to_bytes(32, "big") for _ in range(config.nodes)]
    capacity = {n: rng.randint(*config.capacity_kbps) for n in ids}
    throttled = set(rng.sample(ids, int(config.nodes * config.throttled_share)))
    traffic = {n: int(rng.paretovariate(1.5) * 10) for n in ids}
    infos = [NodeInfo(n, registered_epoch=-rng.randint(0, 50), traffic=traffic[n]) for n in ids]
    secrets = [rng.getrandbits(256).to_bytes(32, "big") for _ in range(config.challengers)]
    liars = set(range(config.liars))
    policy, plan_policy = Policy(), PlanPolicy(per_epoch=config.per_epoch, margin_s=60)
    stake = {n: 10_000 for n in ids}
    slashed_epochs: dict[bytes, list[int]] = {n: [] for n in ids}
    reports = 0
    for epoch in range(config.epochs):
        failures: dict[bytes, int] = {}
        totals: dict[bytes, int] = {}
        for c, secret in enumerate(secrets):
            for challenge in plan_epoch(infos, epoch, 3600.0, secret, plan_policy):
                node = challenge.node_id
                advertised = capacity[node]
                delivered = advertised / 10 if node in throttled else advertised
                if rng.random() < config.transient_failure:
                    measured = 0.0
                else:
                    measured = delivered * config.goodput * math.exp(rng.gauss(0.0, config.noise_sigma))
                passed = not service_reasons(measured, advertised, None, None, policy)
                if c in liars:
                    passed = node in throttled
                if on_report is not None:
                    on_report(epoch, node, c, measured, passed, node in throttled)
                reports += 1
                totals[node] = totals.get(node, 0) + 1
                if not passed:
                    failures[node] = failures.get(node, 0) + 1
        for node, failed in failures.items():
            if not slashes(failed, totals[node], config.quorum, config.rule):
                continue
            stake[node] -= stake[node] * config.slash_bps // 10_000
            slashed_epochs[node].append(epoch)
    honest = [n for n in ids if n not in throttled]
    falsely = [n for n in honest if slashed_epochs[n]]
    detect = sorted((slashed_epochs[n][0] + 1 if slashed_epochs[n] else config.epochs + 1) for n in throttled)
    return {
        "nodes": config.nodes, "challengers": config.challengers, "lying_challengers": config.liars,
        "epochs": config.epochs, "rule": config.rule, "quorum": config.quorum,
        "challenges_per_node_epoch": round(reports / config.epochs / config.nodes, 2),
        "false_slash_rate": round(len(falsely) / len(honest), 6),
        "false_slashed_nodes": len(falsely),
        "false_slashes": sum(len(slashed_epochs[n]) for n in honest),
        "throttled_nodes": len(throttled),
        "detect_throttled_epochs": detect[-1] if detect else None,
        "detect_throttled_epochs_median": detect[len(detect) // 2] if detect else None,
        "throttled_slashed_every_epoch": all(len(slashed_epochs[n]) == config.epochs for n in throttled),
    }
