"""scripts/sim_economy.py --quick: measures gas on its own anvil and ends with the issue's JSON line."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sim_economy_quick__last_line_is_the_json_the_issue_asks_for():
    done = subprocess.run([sys.executable, "scripts/sim_economy.py", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for strategy in ("wash_traffic", "sybil_split", "throttling", "overclaiming_receipts", "serve_challengers_only",
                     "lying_challenger_minority", "self_dealing_challengers"):
        figures = out[strategy]
        assert figures["ci95"][0] <= figures["profit_vs_honest"] <= figures["ci95"][1]
    assert 0 < out["honest_fee_share"] < 0.05
    assert out["supply_response_epochs"] >= 0
    # Gas read from anvil receipts, not assumed: plausible ranges for one mint and one listing update.
    assert 40_000 < out["gas_claim"] < 120_000 and 25_000 < out["gas_price_update"] < 100_000
