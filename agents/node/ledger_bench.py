"""How many receipts a second one core verifies (ReceiptLedger: signature, channel, growth, price,
credit) and durably stores (NodeStore, committed with synchronous=FULL).

Receipts are signed beforehand with libsecp256k1 (coincurve) over :func:`agents.chain.eip712.fast_digest`
(the client's cost is not the node's); only ``accept`` and the batch commits are timed, as CPU time
(``time.process_time``) and wall time. Run ``python -m agents.node.ledger_bench --count 20000``; the
last stdout line is one JSON object (scripts/ convention).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import coincurve
from eth_account import Account

from agents.chain import eip712
from agents.metering import GIB, ChannelTerms, ReceiptLedger
from agents.node.store import NodeStore

__all__ = ["GOAL_PER_SECOND", "receipts_per_second"]

#: Issue 9's goal for one core.
GOAL_PER_SECOND = 2_000
#: Bytes each receipt adds (a receipt per MiB is a chatty client: the heaviest load per byte).
STEP_BYTES = 1 << 20
#: Price used, token wei per GiB (any positive price exercises the underpricing check).
PRICE = 10**15
#: Channels' contract address in the EIP-712 domain (any address: nothing is sent to a chain).
CONTRACT = "0x" + "ab" * 20


def _sign(key: coincurve.PrivateKey, receipt: eip712.Receipt, chain_id: int) -> bytes:
    signature = key.sign_recoverable(eip712.fast_digest(receipt, chain_id, CONTRACT), hasher=None)
    return signature[:64] + bytes([signature[64] + 27])  # libsecp256k1 signs with low s


def receipts_per_second(seconds: float | None = None, count: int | None = None, channels: int = 64,
                        batch: int = 64, path: str | os.PathLike | None = None, chain_id: int = 31337) -> dict:
    """Measure accept + durable store throughput.

    Args:
        seconds: run until this much wall time was measured (or use ``count``).
        count: number of receipts (default 4,000 when neither is given).
        channels: receipts rotate over this many channels (one ledger each).
        batch: receipts per transaction (:meth:`NodeStore.batch`); 1 = one fsync per receipt.
        path: the database (default a temporary folder, removed after).
        chain_id: EIP-712 domain chain id.

    Returns:
        {"receipts", "wall_s", "cpu_s", "per_second_wall", "per_second_cpu", "channels", "batch",
        "goal", "goal_met"} (goal judged on CPU time: one core's work, whatever else the machine runs).
    """
    if seconds is None and count is None:
        count = 4_000
    with tempfile.TemporaryDirectory() as tmp:
        db = NodeStore(Path(path) if path else Path(tmp) / "bench.db")
        keys, ledgers = [], []
        for n in range(channels):
            key = coincurve.PrivateKey(os.urandom(32))
            terms = ChannelTerms(os.urandom(32), Account.from_key(key.secret).address, (1 << 96) - 1, PRICE,
                                 GIB, chain_id, CONTRACT)
            db.upsert_channel(terms)
            keys.append(key)
            ledgers.append(ReceiptLedger(terms, db.receipt_store(terms.channel_id)))
        sent = [0] * channels
        done, wall, cpu = 0, 0.0, 0.0
        while (count is not None and done < count) or (count is None and wall < seconds):
            size = batch if count is None else min(batch, count - done)
            work = []
            for i in range(done, done + size):  # untimed: the client's signing
                c = i % channels
                sent[c] += STEP_BYTES
                receipt = eip712.Receipt(ledgers[c].terms.channel_id, sent[c], -(-sent[c] * PRICE // GIB) + 1)
                work.append((ledgers[c], receipt, _sign(keys[c], receipt, chain_id), sent[c]))
            w0, c0 = time.perf_counter(), time.process_time()
            with db.batch():
                for ledger, receipt, signature, observed in work:
                    if not ledger.accept(receipt, signature, observed).accepted:
                        raise AssertionError(f"bench receipt refused: {ledger.accept(receipt, signature, observed)}")
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
            done += size
        db.close()
    return {"receipts": done, "wall_s": round(wall, 4), "cpu_s": round(cpu, 4),
            "per_second_wall": round(done / wall), "per_second_cpu": round(done / cpu) if cpu else None,
            "channels": channels, "batch": batch, "goal": GOAL_PER_SECOND,
            "goal_met": cpu > 0 and done / cpu >= GOAL_PER_SECOND}


def main(argv: list[str] | None = None) -> int:
    """CLI: prints each configuration's figures, the last line a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--batch", type=int, action="append", help="receipts per commit (repeatable)")
    args = parser.parse_args(argv)
    results = [receipts_per_second(count=args.count, channels=args.channels, batch=b)
               for b in (args.batch or [1, 16, 64])]
    print(json.dumps({"bench": "ledger", "load_avg": os.getloadavg()[0], "runs": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
