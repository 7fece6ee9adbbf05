"""agents.challenger.store (SQLite transcripts, backfill state) and proposal (revocation proposal files)."""

import sqlite3
import stat

import pytest

from agents.challenger.payload import payload
from agents.challenger.proposal import Proposal, propose
from agents.challenger.store import TranscriptStore
from agents.challenger.verdict import judge, record

SEED = bytes(range(32))
SIZE = 200_000


def transcript(node=b"\xaa" * 32, epoch=5, flip=None):
    data = bytearray(payload(SEED, SIZE))
    if flip is not None:
        data[flip] ^= 1
    return record(node_id=node, epoch=epoch, challenger="0x" + "22" * 20, started_at=10.0, seed=SEED, size=SIZE,
                  url="http://x/p", advertised_kbps=1_000, received=bytes(data), elapsed_s=0.1, latency_ms=(5.0,))


def test_store__saved_before_report__listed_until_marked_then_not(tmp_path):
    store = TranscriptStore(tmp_path / "c" / "transcripts.sqlite")
    assert stat.S_IMODE((tmp_path / "c" / "transcripts.sqlite").stat().st_mode) == 0o600
    t = transcript()
    digest = store.save(t, judge(t))
    assert store.save(t, judge(t)) == digest  # idempotent
    assert store.challenged(b"\xaa" * 32, 5) and not store.challenged(b"\xaa" * 32, 6)
    [pending] = store.unreported(5)
    assert (pending.hash, pending.passed, pending.node_id) == (digest, True, b"\xaa" * 32)
    store.mark_reported(digest, "0xabc")
    assert store.unreported(5) == []
    assert store.transcript(digest) == t
    store.close()
    # Survives a restart.
    again = TranscriptStore(tmp_path / "c" / "transcripts.sqlite")
    assert again.reports(5)[0].report_tx == "0xabc"


def test_store__expire_old_epochs_and_meta(tmp_path):
    store = TranscriptStore(tmp_path / "t.sqlite")
    t = transcript(epoch=3)
    store.save(t, judge(t))
    assert store.expire(before_epoch=4) == 1
    assert store.unreported(3) == []
    store.set("last_block", "42")
    assert store.get("last_block") == "42" and store.get("missing", "x") == "x"


def test_store__changed_body__refused_on_load(tmp_path):
    store = TranscriptStore(tmp_path / "t.sqlite")
    t = transcript()
    digest = store.save(t, judge(t))
    db = sqlite3.connect(tmp_path / "t.sqlite")
    db.execute("UPDATE transcripts SET body = replace(body, '\"epoch\":5', '\"epoch\":6')")
    db.commit()
    with pytest.raises(ValueError, match="no longer hashes"):
        store.transcript(digest)
    with pytest.raises(KeyError):
        store.transcript("00" * 32)


def test_propose__tampering_verdict__file_round_trip(tmp_path):
    t = transcript(flip=1234)
    verdict = judge(t)
    proposal = propose(t, verdict, chain_id=31337, registry="0x" + "33" * 20, proposer=t.challenger)
    assert proposal.evidence_hash == t.digest() and proposal.node_id == b"\xaa" * 32
    proposal.signatures["0x" + "44" * 20] = "ab" * 65
    loaded = Proposal.load(proposal.save(tmp_path / "p.json"))
    assert loaded == proposal
    assert loaded.message().evidence_hash == t.digest()


def test_propose__not_tampering__refused():
    t = transcript()
    with pytest.raises(ValueError, match="only a node caught tampering"):
        propose(t, judge(t), chain_id=1, registry="0x" + "33" * 20, proposer="x")


def test_proposal_load__not_a_proposal__clear_error(tmp_path):
    (tmp_path / "x.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a revocation proposal"):
        Proposal.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("nope")
    with pytest.raises(ValueError, match="is not JSON"):
        Proposal.load(tmp_path / "y.json")


def test_store__uptime_probes_share_per_node_and_epoch(tmp_path):
    store = TranscriptStore(tmp_path / "t.sqlite")
    node = b"\xbb" * 32
    assert store.uptime(node, 1) is None
    for at, answered in ((10.0, True), (20.0, False), (30.0, True), (40.0, True)):
        store.add_probe(node, 1, at, answered)
    store.add_probe(node, 1, 10.0, False)  # the same planned probe again: ignored
    assert store.probed(node, 1, 20.0) and not store.probed(node, 1, 50.0)
    assert store.uptime(node, 1) == 0.75 and store.uptime(node, 2) is None
