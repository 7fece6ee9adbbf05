"""The revocation list: persistence, certificates checked by guardian quorum, the chain follower, and
the node's admission refusing a revoked key (pure parts, fake clocks)."""

from __future__ import annotations

import os
import stat

import pytest

from agents.chain.eip712 import Revocation, sign
from agents.chain.revocations import RevocationFollower
from agents.overlay.errors import LocalProtocolError, RecordRejected
from agents.overlay.ids import node_id_from_wg_key
from agents.overlay.records import REVOCATION, revocation_key
from agents.overlay.revocation import (
    RevocationFacts,
    RevocationList,
    SqliteRevocations,
    certificate,
    facts_from_record,
)

from overlay_consts import CHAIN_ID, NOW, REVOCATION_REGISTRY

EVIDENCE = b"\x22" * 32


def _facts(node_id, signers=(), nonce=7, **kw):
    msg = Revocation(node_id.to_bytes(32, "big"), EVIDENCE, nonce)
    sigs = tuple(sign(msg, g.key, CHAIN_ID, REVOCATION_REGISTRY) for g in signers)
    return RevocationFacts(node_id, EVIDENCE, nonce, sigs, **kw)


def test_list__add__listeners_hear_each_id_once():
    heard = []
    rl = RevocationList()
    rl.listeners.append(heard.append)
    assert rl.add(_facts(5, heard_at=1.0)) is True
    assert rl.add(_facts(5, heard_at=2.0, source="overlay")) is False
    assert [f.node_id for f in heard] == [5]
    assert rl.is_revoked(5) and rl.is_revoked((5).to_bytes(32, "big")) and not rl.is_revoked(6)


def test_list__chain_event_after_certificate__fills_in_the_transaction(tmp_path):
    rl = RevocationList(SqliteRevocations(tmp_path / "r.db"))
    rl.add(_facts(9, source="overlay", heard_at=1.0))
    rl.add(_facts(9, tx_hash=b"\xab" * 32, block=12, heard_at=3.0))
    f = rl.facts(9)
    assert (f.source, f.tx_hash, f.block, f.heard_at) == ("overlay", b"\xab" * 32, 12, 1.0)


def test_list__restart__revocations_and_next_block_survive(tmp_path, guardians):
    path = tmp_path / "revocations.db"
    rl = RevocationList(SqliteRevocations(path))
    wg = os.urandom(32)
    rl.add(_facts(node_id_from_wg_key(wg), guardians[:2], tx_hash=b"\x01" * 32, block=4, heard_at=10.0))
    rl.set_last_block(5)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = RevocationList(SqliteRevocations(path))
    assert again.is_revoked_key(wg) and again.last_block() == 5
    assert again.facts(node_id_from_wg_key(wg)) == rl.facts(node_id_from_wg_key(wg))


def test_list__foreign_file__refused_with_what_to_do(tmp_path):
    path = tmp_path / "revocations.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(LocalProtocolError, match="move it away"):
        SqliteRevocations(path)


def test_certificate__quorum__validates_and_round_trips(validator, guardians, registered):
    _, nid = registered()
    facts = _facts(nid, guardians[:2])
    raw = certificate(facts, NOW)
    rec = validator.validate(raw, NOW)
    assert (rec.kind, rec.key, rec.node_id, rec.nonce) == (REVOCATION, revocation_key(nid), nid, 7)
    back = facts_from_record(rec, NOW)
    assert (back.node_id, back.evidence_hash, back.signatures, back.source) == (nid, EVIDENCE, facts.signatures,
                                                                                 "overlay")


def test_certificate__one_guardian_short__refused(validator, guardians, registered):
    _, nid = registered()
    with pytest.raises(RecordRejected) as exc:
        validator.validate(certificate(_facts(nid, guardians[:1]), NOW), NOW)
    assert exc.value.reason == "mis-signed"


def test_certificate__same_guardian_twice__refused(validator, guardians, registered):
    _, nid = registered()
    facts = _facts(nid, [guardians[0], guardians[0]])
    with pytest.raises(RecordRejected):
        validator.validate(certificate(facts, NOW), NOW)


def test_certificate__event_without_signatures__cannot_be_made():
    with pytest.raises(LocalProtocolError, match="no guardian signatures"):
        certificate(_facts(3), NOW)


class _Chain:
    """The follower's port over a list of (block, facts): a chain that can also be down."""

    def __init__(self):
        self.events, self.height, self.down = [], 0, False

    def head(self):
        if self.down:
            raise ConnectionError("rpc down")
        return self.height

    def revocations(self, start, end, now):
        return [f for b, f in self.events if start <= b <= end]


def test_follower__new_blocks__reads_each_revocation_once():
    chain, rl = _Chain(), RevocationList()
    follower = RevocationFollower(chain, rl)
    chain.events.append((3, _facts(1, block=3)))
    chain.height = 5
    assert [f.node_id for f in follower.step(0.0)] == [1]
    assert follower.step(1.0) == [] and rl.last_block() is None  # memory-only list keeps no block
    assert follower.list.is_revoked(1)


def test_follower__rpc_down__backs_off_then_catches_up(tmp_path):
    chain = _Chain()
    rl = RevocationList(SqliteRevocations(tmp_path / "r.db"))
    follower = RevocationFollower(chain, rl, backoff_s=5.0, max_blocks=10)
    chain.height = 2
    follower.step(0.0)
    assert rl.last_block() == 3
    chain.down = True
    assert follower.step(1.0) == [] and follower.last_error == "rpc down"
    chain.down = False
    chain.events.append((25, _facts(8, block=25)))
    chain.height = 30
    assert follower.step(3.0) == []  # still backing off
    assert follower.step(6.0) == [] and rl.last_block() == 13  # 10 blocks per step
    assert follower.step(7.0) == [] and rl.last_block() == 23
    assert [f.node_id for f in follower.step(8.0)] == [8]
    assert [f.node_id for f in rl.all()] == [8] and rl.last_block() == 31


def test_node_admission__revoked_key__refused_before_quarantine(monkeypatch):
    from agents.node.session import AddressPool, NodeOffer, NodeSessions

    offer = NodeOffer(node_id=b"\x01" * 32, chain_id=1, channels_address="0x" + "00" * 20, price_per_gib=1,
                      credit_bytes=1, receipt_bytes=1, receipt_interval_s=1.0, max_pending=8, setup_timeout_s=5.0)
    core = NodeSessions(offer, AddressPool("10.70.0.0/24", "fd70::/64"), None, None)
    bad, good = os.urandom(32), os.urandom(32)
    rl = RevocationList()
    core.revoked = rl.is_revoked_key
    assert core.admit_unknown(bad, 0.0) is not None  # not revoked yet: quarantined
    rl.add(_facts(node_id_from_wg_key(bad)))
    assert core.keys_of_node(node_id_from_wg_key(bad)) == [bad]
    core.end(bad)
    assert core.admit_unknown(bad, 1.0) is None and core.refusals["revoked"] == 1
    assert core.admit_unknown(good, 1.0) is not None
