"""agents.challenger.contract_check: simulated reports replayed on the real reputation.vy (anvil, ~10 s).

A small simulation (60 nodes, 10 challengers, 2 of them lying, 2 epochs) plus two constructed nodes:
one failed by 6 of 10 challengers in epoch 0 (a failure majority: slashed) and one failed by 3 of 10
(the quorum reached by noise, no majority: not slashed). The contract's verdict must equal the
simulator's rule on every node-epoch, the replayed tallies the simulated ones, and the on-chain
scores (medians over the challengers, folded per epoch) the simulator's mirror of that rule. (At
this size a node gets ~5 reports an epoch, so 2 liars plus noise can slash an honest simulated node:
both sides agree on it, which is what is checked; the 1,000-node figures are bench_trust's.)
"""

from __future__ import annotations

import pytest

from agents.challenger.contract_check import Report, ReportLog, check_on_chain, sample_nodes
from agents.challenger.sim import SimConfig, simulate

pytestmark = pytest.mark.slow

CHALLENGERS, EPOCHS = 10, 2
MAJORITY_FAILED, NOISY_HONEST = b"\x01" * 32, b"\x02" * 32


def constructed(node_id: bytes, failures: int) -> list[Report]:
    """Every challenger reports on ``node_id`` in each epoch; the first ``failures`` fail it in epoch 0."""
    return [Report(epoch, node_id, c, 0 if (epoch == 0 and c < failures) else 50_000,
                   not (epoch == 0 and c < failures))
            for epoch in range(EPOCHS) for c in range(CHALLENGERS)]


def test_check_on_chain__simulated_and_constructed_reports__contract_agrees_with_simulator():
    log = ReportLog(EPOCHS)
    simulate(SimConfig(nodes=60, challengers=CHALLENGERS, liars=2, epochs=EPOCHS, per_epoch=30,
                       throttled_share=0.1, seed=5), on_report=log)
    nodes = sample_nodes(log, 8, seed=5)
    nodes.update({MAJORITY_FAILED: True, NOISY_HONEST: False})
    reports = log.reports + constructed(MAJORITY_FAILED, 6) + constructed(NOISY_HONEST, 3)

    result = check_on_chain(reports, nodes, CHALLENGERS, EPOCHS)

    assert result["contract_node_epochs"] == len(nodes) * EPOCHS
    assert result["contract_agreement"] == 1.0
    assert result["contract_tally_mismatches"] == 0
    assert result["verdicts"][(MAJORITY_FAILED, 0)] == (True, True)
    assert result["verdicts"][(MAJORITY_FAILED, 1)] == (False, False)
    assert result["verdicts"][(NOISY_HONEST, 0)] == (False, False)
    assert result["contract_detected"] >= 1 and result["contract_gas_report"]["max"] > 0
    # The scores the chain folded from the epochs' medians are the simulator's mirror of that rule.
    assert result["contract_score_mismatches"] == 0
    # Every throttled node (the constructed one failed epoch 0 only: 1,250) scores below every honest one.
    assert result["contract_score_throttled_max"] < result["contract_score_honest_min"]
