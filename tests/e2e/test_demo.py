"""`warren demo --quick` end to end, as `make demo` runs it: its own anvil, lab and tunnels.

The demo starts its own anvil on a random port (ape-config.yaml: foundry host auto), so it never
touches the chain of the `ape test` session running this file.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.metering import price_of
from agents.netlab import is_root

ROOT = Path(__file__).resolve().parents[2]
#: Bound on the whole demo (it takes ~20 s here: anvil start, contract compilation and the depth-20
#: proof of the anonymous leg dominate).
DEMO_TIMEOUT_S = 600
#: The demo's constants (agents/demo.py): deposit 5 tokens, 4 quick rounds of 1 MiB.
DEPOSIT = 5 * 10**18
QUICK_ROUNDS, QUICK_ROUND_BYTES = 4, 1 << 20
DEMO_NETNS_PREFIX = "wdemo-"


def _warren(*args, preexec=(), timeout=DEMO_TIMEOUT_S):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run([*preexec, sys.executable, "-m", "agents.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _demo_namespaces():
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.startswith(DEMO_NETNS_PREFIX)}


@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.skipif(not is_root(), reason="the demo builds network namespaces: root only (CI is root)")
def test_demo_quick__every_check_passes_and_money_adds_up():
    before = _demo_namespaces()
    result = _warren("demo", "--quick")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]

    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("summary: "), output[-3000:]
    summary = json.loads(last.removeprefix("summary: "))
    assert summary["ok"] is True
    assert summary["checks"] and all(summary["checks"].values()), summary["checks"]
    assert f"all {len(summary['checks'])} checks passed" in result.stdout

    # Data really moved, and was paid for by receipts the node stored.
    assert summary["rounds"] == QUICK_ROUNDS and summary["round_bytes"] == QUICK_ROUND_BYTES
    assert summary["data_bytes"] >= QUICK_ROUNDS * QUICK_ROUND_BYTES
    assert summary["final_bytes"] > summary["data_bytes"]  # WireGuard counts headers and ACKs too
    # The payer sends a receipt per 256 KiB of counter growth: several per round.
    assert summary["receipts_accepted"] >= QUICK_ROUNDS + 2
    assert summary["refusals"] == ["wrong_signer", "replayed", "underpriced"]
    assert summary["cut_offs"] == 1 and summary["pauses"] >= 1  # the client that stopped paying

    # The money: price of the counted bytes; node + treasury got it; the client got the rest back.
    final = summary["final_amount_wei"]
    assert final == price_of(summary["final_bytes"], summary["price_per_gib_wei"])
    assert 0 < summary["settled_mid_wei"] < final
    assert summary["operator_earned_wei"] + summary["treasury_fee_wei"] == final
    assert summary["treasury_fee_wei"] == final * 100 // 10_000  # fee_bps = 100
    assert summary["client_refund_wei"] == DEPOSIT - final

    # The anonymous leg: a voucher redeemed by the node, paid by receipts, settled and closed on the pool.
    voucher = summary["voucher"]
    assert voucher["depth"] == 20 and voucher["depositor_in_anonymous_txs"] == []
    assert voucher["deposit_wei"] == voucher["denomination_wei"] - voucher["relayer_fee_wei"]
    assert voucher["data_bytes"] >= 2 * QUICK_ROUND_BYTES and voucher["final_bytes"] > voucher["data_bytes"]
    assert voucher["final_amount_wei"] == price_of(voucher["final_bytes"], summary["price_per_gib_wei"])
    assert 0 < voucher["settled_mid_wei"] < voucher["final_amount_wei"]
    assert voucher["refusals"] == ["wrong_signer"]  # the same signer's receipt for payment_channels' domain
    assert voucher["treasury_fee_wei"] == voucher["final_amount_wei"] * 100 // 10_000
    assert voucher["signer_refund_wei"] == voucher["deposit_wei"] - voucher["final_amount_wei"]
    assert voucher["operator_earned_wei"] == (voucher["final_amount_wei"] - voucher["treasury_fee_wei"]
                                              + voucher["relayer_fee_wei"])

    gas = summary["gas"]
    for tx in ("node_registry.register_node", "payment_channels.open_channel",
               "payment_channels.settle", "payment_channels.cooperative_close", "voucher_pool.deposit",
               "voucher_pool.redeem", "voucher_pool.settle", "voucher_pool.cooperative_close"):
        assert gas[tx] > 21_000, tx
    assert _demo_namespaces() == before, "the demo left network namespaces behind"


@pytest.mark.skipif(is_root() and not shutil.which("setpriv"), reason="needs setpriv to drop root")
def test_demo__not_root__clear_error():
    # As root, drop to nobody for this one run; otherwise we are already unprivileged.
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if is_root() else []
    result = _warren("demo", "--quick", preexec=drop, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "warren demo: needs root" in result.stderr
    assert "network namespaces" in result.stderr
