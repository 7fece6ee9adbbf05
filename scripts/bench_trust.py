"""Trust-layer benchmark (issue 14): challengers, slashing and revocation over a simulated network.

Challenges (agents.challenger.sim, pure): ``--nodes`` nodes (default 1,000; 5 % throttled to a tenth
of what they advertise), ``--challengers`` challengers (30) each planning ``--per-epoch`` challenges
an epoch with the real planner and judging measurements with realistic noise (log-normal path
factor, sigma 0.25; 1 % of challenges fail outright) by the real verdict rule, for ``--epochs``
epochs (100); reputation.vy's slashing mirrored (a slash takes 10 %). Run with no lying challenger
and with ``--liars`` (3: a 10 % minority reporting honest nodes failed and throttled nodes passed),
under the contract's rule (``majority``: at least a quorum of 3 failure reports *and* at least half
of the epoch's reports failed, judged once the epoch is over) and the rule it replaced in issue 14
(``count``: the 3rd failure report in an epoch slashes). Figures: ``false_slash_rate`` (honest
nodes slashed at least once / honest nodes; goal 0 in 100 epochs, also with liars),
``detect_throttled_epochs`` (epochs until the last throttled node is first slashed; goal <= 2).

Contract leg (agents.challenger.contract_check, default on, ``--no-anvil`` skips it): a plain anvil,
Warren deployed with deploy_all, ``--contract-nodes`` (40) of the simulated nodes registered (half
throttled, the honest half split between those with the most failure reports and random ones), one
staked challenger per simulated challenger, and the simulation's reports on them for its first
``--contract-epochs`` (3) epochs sent through the real ``reputation.report``; each epoch is then
judged by ``slash_refusal`` and ``slash_epoch`` in the next one. Figures: ``contract_agreement``
(share of node-epochs where the contract's verdict equals the simulator's rule on the same reports;
goal 1.0), ``contract_false_slashes``, ``contract_detected`` (of ``contract_throttled_node_epochs``),
the gas of ``report`` and ``slash_epoch`` (median, max) and ``contract_wall_s``; and the scores the
chain folded from each closed epoch's medians over the challengers: ``contract_score_mismatches``
(nodes whose score, throughput or report count differs from the simulator's mirror; goal 0),
``contract_score_honest_min`` and ``contract_score_throttled_max`` (basis points), beside
``report_average_score_honest_min``, the replaced moving average over single reports on the same
reports (what the lying challengers did to an honest node's score before).

Revocation and eclipse figures come from the overlay simulator (agents.overlay.trust_sim.measure,
issue 14's other half) when that module exists: ``revocation_propagation_s``,
``revocation_broadcast_messages``, ``eclipse_lookup_success``.

Usage:
    .venv/bin/python scripts/bench_trust.py [--quick] [--nodes N] [--epochs N] [--per-epoch N]
        [--no-anvil] [--contract-nodes N] [--contract-epochs N]

``--quick``: 300 nodes, 10 epochs, overlay figures at 300 nodes. Last stdout line: one JSON object;
top-level challenge figures are the contract's rule (``majority``) with the lying minority, the
``_honest`` suffix without liars; ``count`` holds the same figures under the replaced rule.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.challenger.contract_check import ReportLog, check_on_chain, sample_nodes  # noqa: E402
from agents.challenger.sim import SimConfig, simulate  # noqa: E402

KEYS = ("false_slash_rate", "false_slashed_nodes", "detect_throttled_epochs", "detect_throttled_epochs_median")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 nodes, 10 epochs (smoke run)")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--challengers", type=int, default=30)
    parser.add_argument("--liars", type=int, default=3)
    parser.add_argument("--per-epoch", type=int, default=600, help="challenges per challenger per epoch")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-anvil", action="store_true", help="skip the contract leg (no anvil)")
    parser.add_argument("--contract-nodes", type=int, default=40, help="simulated nodes replayed on chain")
    parser.add_argument("--contract-epochs", type=int, default=3, help="epochs replayed on chain")
    args = parser.parse_args(argv)
    nodes = args.nodes or (300 if args.quick else 1000)
    epochs = args.epochs or (10 if args.quick else 100)
    per_epoch = min(args.per_epoch, nodes)
    started = time.monotonic()
    runs = {}
    log = ReportLog(min(args.contract_epochs, epochs))
    for rule in ("majority", "count"):
        for liars in (0, args.liars):
            config = SimConfig(nodes=nodes, challengers=args.challengers, liars=liars, epochs=epochs,
                               per_epoch=per_epoch, rule=rule, seed=args.seed)
            hook = log if (rule, liars) == ("majority", args.liars) else None
            runs[(rule, liars)] = simulate(config, on_report=hook)
            print(json.dumps(runs[(rule, liars)]), file=sys.stderr, flush=True)
    contract, contract_honest = runs[("majority", args.liars)], runs[("majority", 0)]
    out = {"nodes": nodes, "challengers": args.challengers, "lying_challengers": args.liars, "epochs": epochs,
           "challenges_per_node_epoch": contract["challenges_per_node_epoch"], "rule": "majority",
           "quorum": contract["quorum"], "throttled_nodes": contract["throttled_nodes"]}
    for key in KEYS:
        out[key] = contract[key]
        out[key + "_honest"] = contract_honest[key]
    out["count"] = {k: runs[("count", args.liars)][k] for k in KEYS}
    out["count"].update({k + "_honest": runs[("count", 0)][k] for k in KEYS})
    out["challenge_sim_s"] = round(time.monotonic() - started, 1)
    if not args.no_anvil:
        contract = check_on_chain(log.reports, sample_nodes(log, args.contract_nodes, args.seed),
                                  args.challengers, log.epochs)
        contract.pop("verdicts")
        out.update(contract)
    if importlib.util.find_spec("agents.overlay.trust_sim") is not None:
        from agents.overlay.trust_sim import measure

        overlay = measure(nodes=nodes, lookups=100 if args.quick else 500)
        out.update({k: v for k, v in overlay.items() if k != "nodes"})
    else:
        out["revocation_propagation_s"] = out["revocation_broadcast_messages"] = out["eclipse_lookup_success"] = None
    out["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
