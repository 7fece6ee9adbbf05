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
from agents.netlab import can_build_namespaces

ROOT = Path(__file__).resolve().parents[2]
#: Bound on the whole demo (it takes ~20 s here: anvil start, contract compilation and the depth-20
#: proof of the anonymous leg dominate).
DEMO_TIMEOUT_S = 600
#: The demo's figures (agents/demo.py, agents/netlab/warren_net.py): 16 MiB in quick mode, 1 token per
#: GiB, 1,000 tokens minted to each role, 100 staked by each node, 5 deposited per channel.
QUICK_FILE_BYTES = 16 << 20
PRICE_PER_GIB = 10**18
MINTED, STAKE, DEPOSIT = 1_000 * 10**18, 100 * 10**18, 5 * 10**18
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
@pytest.mark.skipif(not can_build_namespaces(), reason="the demo builds network namespaces: root only (CI is root)")
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

    # The download went through two exits (one killed mid-way) and the user waited a few seconds.
    assert summary["file_bytes"] == QUICK_FILE_BYTES
    assert summary["failover_gap_s"] is not None and summary["failover_gap_s"] < 15
    closing = [c for c in summary["channels"] if c["status"] == "closing"]
    finalised = [c for c in summary["channels"] if c["status"] == "finalised"]
    assert len(closing) == 1 and len(finalised) == 1, summary["channels"]

    # The money, from the chain: the live channel paid the bytes the client counted at the node's
    # price; the node's operator got it less the fee; the client got the rest of its deposit back.
    live = finalised[0]
    assert live["settled"] == price_of(live["settled_bytes"], PRICE_PER_GIB)
    assert live["settled_bytes"] > 0
    fee = live["settled"] * summary["fee_bps"] // 10_000
    assert sorted(b - (MINTED - STAKE) for b in summary["operator_balances"].values())[-1] == live["settled"] - fee
    assert summary["client_balance"] == MINTED - live["settled"] - DEPOSIT  # the dead channel's deposit is still closing
    assert _demo_namespaces() == before, "the demo left network namespaces behind"


@pytest.mark.skipif(can_build_namespaces() and not shutil.which("setpriv"), reason="needs setpriv to drop capabilities")
def test_demo__not_root__clear_error():
    # As root, drop every capability for this one run (the uid stays, so a checkout in a 0700
    # folder stays readable); otherwise we are already unprivileged.
    drop = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if can_build_namespaces() else []
    result = _warren("demo", "--quick", preexec=drop, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "warren demo: needs root" in result.stderr
    assert "network namespaces" in result.stderr
