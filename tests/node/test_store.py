"""NodeStore: receipts survive SIGKILL once acknowledged, reload and re-verify; corrupt rows are refused;
sessions and settlements round-trip; batches share one transaction."""

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak

from agents.metering import GIB, ChannelTerms, LocalProtocolError, ReceiptLedger, ReceiptSigner
from agents.node.store import NodeStore

CHAIN_ID = 31337
CHANNELS = "0x" + "11" * 20
PRICE = 10**15  # token wei per GiB
DEPOSIT = 10**18
REPO = Path(__file__).resolve().parents[2]


def _terms(n: int, key: bytes | None = None) -> tuple[ChannelTerms, bytes]:
    key = key or keccak(b"store test signer %d" % n)
    return ChannelTerms(keccak(b"channel %d" % n), Account.from_key(key).address, DEPOSIT, PRICE, GIB,
                        CHAIN_ID, CHANNELS), key


@pytest.fixture
def store(tmp_path):
    s = NodeStore(tmp_path / "node.db")
    yield s
    s.close()


def _fill(store, n_channel=0, count=3):
    terms, key = _terms(n_channel)
    store.upsert_channel(terms)
    ledger = ReceiptLedger(terms, store.receipt_store(terms.channel_id))
    signer = ReceiptSigner(terms, key)
    for i in range(1, count + 1):
        receipt, signature = signer.sign(i * GIB // 4)
        assert ledger.accept(receipt, signature, i * GIB // 4).accepted
    return terms, ledger


def test_reopen__ledger_continues_from_latest(tmp_path):
    store = NodeStore(tmp_path / "node.db")
    terms, ledger = _fill(store, count=4)
    latest = ledger.latest()
    store.close()
    again = NodeStore(tmp_path / "node.db")
    assert ReceiptLedger(terms, again.receipt_store(terms.channel_id)).latest() == latest
    assert again.latest_receipts() == {terms.channel_id: latest}
    again.close()


def test_files__mode_0600(tmp_path, store):
    _fill(store)
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


_CHILD = textwrap.dedent("""
    import sys
    from eth_account import Account
    from agents.metering import GIB, ChannelTerms, ReceiptLedger, ReceiptSigner
    from agents.node.store import NodeStore
    key = bytes.fromhex(sys.stdin.readline().strip())  # the signer key on stdin, never argv
    path, cid, batch = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3])
    terms = ChannelTerms(cid, Account.from_key(key).address, 10**18, 10**15, GIB, 31337, "0x" + "11" * 20)
    store = NodeStore(path)
    store.upsert_channel(terms)
    ledger = ReceiptLedger(terms, store.receipt_store(cid))
    signer = ReceiptSigner(terms, key)
    n = 0
    while True:
        done = []
        with store.batch():
            for _ in range(batch):
                n += 1
                receipt, signature = signer.sign(n * 1000)
                assert ledger.accept(receipt, signature, n * 1000).accepted
                done.append(n * 1000)
        for nbytes in done:  # acknowledged only after the batch committed
            print(nbytes, flush=True)
""")


@pytest.mark.parametrize("batch", [1, 8])
def test_sigkill__every_acknowledged_receipt_survives_and_reverifies(tmp_path, batch):
    terms, key = _terms(7)
    path = tmp_path / "node.db"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), terms.channel_id.hex(), str(batch)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        child.stdin.write(key.hex() + "\n")
        child.stdin.flush()
        acknowledged = []
        deadline = time.monotonic() + 30
        while len(acknowledged) < 40 and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, "child died"
            acknowledged.append(int(line))
        os.kill(child.pid, signal.SIGKILL)  # mid-loop: more receipts may be in flight
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stdout.close()
        child.stdin.close()
    assert len(acknowledged) == 40
    store = NodeStore(path)
    ledger = ReceiptLedger(terms, store.receipt_store(terms.channel_id))  # re-verifies every row
    stored = [r.receipt.cumulative_bytes for r in store.receipt_store(terms.channel_id).load()]
    assert stored[:len(acknowledged)] == acknowledged
    assert ledger.paid_bytes() >= acknowledged[-1]
    store.close()


def test_corrupt_number__load_refused(tmp_path, store):
    terms, _ = _fill(store)
    with sqlite3.connect(tmp_path / "node.db") as raw:
        raw.execute("UPDATE receipts SET cumulative_amount='12x' WHERE id=3")
    with pytest.raises(LocalProtocolError, match="corrupt receipt row 3"):
        store.receipt_store(terms.channel_id).load()
    with pytest.raises(LocalProtocolError, match="corrupt receipt row 3"):
        store.unsettled()


def test_tampered_amount__ledger_refuses_to_load(tmp_path, store):
    terms, _ = _fill(store)
    with sqlite3.connect(tmp_path / "node.db") as raw:
        raw.execute("UPDATE receipts SET cumulative_amount='999' WHERE id=3")
    with pytest.raises(LocalProtocolError, match="record 3 fails verification"):
        ReceiptLedger(terms, store.receipt_store(terms.channel_id))


def test_not_a_database__refused(tmp_path):
    path = tmp_path / "node.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LocalProtocolError, match="not a usable node database"):
        NodeStore(path)


def test_newer_schema__refused(tmp_path):
    NodeStore(tmp_path / "node.db").close()
    with sqlite3.connect(tmp_path / "node.db") as raw:
        raw.execute("PRAGMA user_version=99")
    with pytest.raises(LocalProtocolError, match="schema version 99 is newer"):
        NodeStore(tmp_path / "node.db")


def test_receipt_for_unknown_channel__refused(store):
    terms, key = _terms(3)
    ledger = ReceiptLedger(terms, store.receipt_store(terms.channel_id))
    receipt, signature = ReceiptSigner(terms, key).sign(1000)
    with pytest.raises(LocalProtocolError, match="FOREIGN KEY"):
        ledger.accept(receipt, signature, 1000)
    assert store.latest_receipts() == {}


def test_upsert__top_up_updates_deposit__other_signer_refused(store):
    terms, _ = _terms(1)
    store.upsert_channel(terms, at=5.0)
    store.upsert_channel(terms.with_deposit(3 * DEPOSIT), at=9.0)
    stored = store.channel(terms.channel_id)
    assert (stored.terms.deposit, stored.first_seen, stored.kind) == (3 * DEPOSIT, 5.0, "channels")
    other, _ = _terms(2)
    with pytest.raises(LocalProtocolError, match="other terms"):
        store.upsert_channel(ChannelTerms(terms.channel_id, other.signer, DEPOSIT, PRICE, GIB, CHAIN_ID, CHANNELS))


def test_voucher_channel__terms_round_trip(store):
    terms, _ = _terms(1)
    voucher = {"pool": "0x" + "22" * 20, "deposit": str(DEPOSIT)}
    with pytest.raises(LocalProtocolError, match="needs its pool"):
        store.upsert_channel(terms, kind="voucher")
    store.upsert_channel(terms, kind="voucher", pool=voucher["pool"], voucher_terms=voucher)
    stored = store.channel(terms.channel_id)
    assert (stored.kind, stored.pool, stored.voucher_terms) == ("voucher", voucher["pool"], voucher)


def test_batch__one_transaction__invisible_until_commit_and_rolled_back_on_error(tmp_path, store):
    terms, key = _terms(4)
    store.upsert_channel(terms)
    ledger = ReceiptLedger(terms, store.receipt_store(terms.channel_id))
    signer = ReceiptSigner(terms, key)
    reader = sqlite3.connect(tmp_path / "node.db")
    count = lambda: reader.execute("SELECT COUNT(*) FROM receipts").fetchone()[0]  # noqa: E731
    with store.batch():
        for i in range(1, 4):
            assert ledger.accept(*signer.sign(i * 1000), i * 1000).accepted
        assert count() == 0
    assert count() == 3
    with pytest.raises(RuntimeError), store.batch():
        ledger.accept(*signer.sign(9000), 9000)
        raise RuntimeError("crash inside the batch")
    assert count() == 3
    reader.close()


def test_batch__other_thread_append_waits_for_commit(store):
    terms_a, key_a = _terms(5)
    terms_b, key_b = _terms(6)
    for t in (terms_a, terms_b):
        store.upsert_channel(t)
    ledger_a = ReceiptLedger(terms_a, store.receipt_store(terms_a.channel_id))
    ledger_b = ReceiptLedger(terms_b, store.receipt_store(terms_b.channel_id))
    receipt_b = ReceiptSigner(terms_b, key_b).sign(1000)
    finished = threading.Event()
    thread = threading.Thread(target=lambda: (ledger_b.accept(*receipt_b, 1000), finished.set()))
    with store.batch():
        ledger_a.accept(*ReceiptSigner(terms_a, key_a).sign(1000), 1000)
        thread.start()
        assert not finished.wait(0.2)  # it may not return inside our open transaction
    thread.join(5)
    assert finished.is_set() and set(store.latest_receipts()) == {terms_a.channel_id, terms_b.channel_id}


def test_sessions__round_trip(store):
    terms, _ = _terms(1)
    store.upsert_channel(terms)
    sid = store.start_session(channel_id=terms.channel_id, client_key="ab" * 32, v4="10.7.0.2", v6="fd00::2", at=10.0)
    store.update_session_bytes(sid, 2**63 + 5)  # beyond SQLite's integers
    store.end_session(sid, at=20.0)
    [row] = store.sessions()
    assert (row.id, row.channel_id, row.v4, row.started_at, row.ended_at, row.billed_bytes) == (
        sid, terms.channel_id, "10.7.0.2", 10.0, 20.0, 2**63 + 5)


def test_settlements__confirmed_counts__failed_and_pending_do_not(store):
    terms, ledger = _fill(store)
    latest = ledger.latest().receipt
    [(cid, record, settled)] = store.unsettled()
    assert (cid, record.receipt, settled) == (terms.channel_id, latest, 0)
    failed = store.settlement_started(cid, latest.cumulative_amount, latest.cumulative_bytes, 1.0)
    store.settlement_failed(failed, "payment_channels: stale amount", 2.0)
    pending = store.settlement_started(cid, latest.cumulative_amount, latest.cumulative_bytes, 3.0)
    assert store.settled_amount(cid) == 0 and store.unsettled()[0][2] == 0
    assert [r.id for r in store.settlements(status="pending")] == [pending]
    store.settlement_confirmed(pending, b"\xaa" * 32, 61_882, 4.0)
    assert store.settled_amount(cid) == latest.cumulative_amount
    assert store.unsettled() == []
    with pytest.raises(LocalProtocolError, match="not pending"):
        store.settlement_confirmed(pending, b"\xbb" * 32, 1, 5.0)
    rows = store.settlements(cid)
    assert [(r.status, r.gas, r.reason) for r in rows] == [
        ("failed", None, "payment_channels: stale amount"), ("confirmed", 61_882, None)]


def test_latest_receipts__one_per_channel(store):
    ledgers = [_fill(store, n, count=n + 1)[1] for n in range(3)]
    assert store.latest_receipts() == {led.terms.channel_id: led.latest() for led in ledgers}


def test_paid_bytes_between__what_receipts_added_in_the_window_per_channel(tmp_path):
    now = [1000.0]
    store = NodeStore(tmp_path / "node.db", clock=lambda: now[0])
    _fill(store, 0, count=2)  # stored at 1000: up to GIB/2 on channel 0
    now[0] = 2000.0
    terms, ledger = _fill(store, 1, count=1)  # GIB/4 on channel 1 at 2000
    signer = ReceiptSigner(terms, _terms(1)[1])
    signer.latest = ledger.latest().receipt
    now[0] = 2500.0
    receipt, signature = signer.sign(GIB)
    assert ledger.accept(receipt, signature, GIB).accepted  # channel 1 to GIB at 2500
    assert store.paid_bytes_between(0, 1000) == 0 and store.paid_bytes_between(1000, 1001) == GIB // 2
    assert store.paid_bytes_between(1500, 3000) == GIB  # channel 1: 0 -> GIB
    assert store.paid_bytes_between(2200, 3000) == GIB - GIB // 4  # only what the 2500 receipt added
    assert store.paid_bytes_between(0, 3000) == GIB // 2 + GIB
    store.close()
