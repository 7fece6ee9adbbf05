"""Signed records: what is accepted, what is refused and why; the bounded, rate-limited store."""

from __future__ import annotations

import os

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from agents.chain.eip712 import Revocation, sign
from agents.overlay.errors import LocalProtocolError, RecordRejected
from agents.overlay.records import (
    IP,
    MAX_RECORD_SIZE,
    PEER,
    SIGN_PREFIX,
    ip_key,
    make_ip_record,
    make_peer_record,
    make_revocation_record,
    revocation_key,
)

from overlay_consts import CHAIN_ID, NOW, REVOCATION_REGISTRY

ENDPOINTS = [("203.0.113.7", 51820), ("2001:db8::7", 51820)]


@pytest.fixture
def peer_record(operator, registered):
    """Factory: a PeerRecord for a registered node, signed by its operator."""

    def make(seq=1, expires=NOW + 3600, key=None, wg=None, **kw):
        wg = wg or registered()[0]
        return make_peer_record(key or operator.key, wg, ENDPOINTS, seq=seq, expires=expires, **kw)

    return make


def _reason(validator, raw, now=NOW):
    with pytest.raises(RecordRejected) as exc:
        validator.validate(raw, now)
    return exc.value.reason


def test_peer_record__valid__accepted_with_fields(validator, operator, registered):
    wg, nid = registered()
    raw = make_peer_record(operator.key, wg, ENDPOINTS, seq=3, expires=NOW + 60, region="eu-west", price=10**15)
    rec = validator.validate(raw, NOW)
    assert (rec.kind, rec.node_id, rec.key, rec.seq) == (PEER, nid, nid, 3)
    assert (rec.wg_key, rec.region, rec.price, rec.endpoints) == (wg, "eu-west", 10**15, tuple(ENDPOINTS))


def test_peer_record__advertised_capacity__signed_and_read_back(validator, operator, registered, peer_record):
    # The capacity challengers measure a node against travels in the signed record (issue 14).
    wg, _ = registered()
    raw = make_peer_record(operator.key, wg, ENDPOINTS, seq=3, expires=NOW + 60, region="DE", capacity_kbps=25_000)
    rec = validator.validate(raw, NOW)
    assert (rec.capacity_kbps, rec.region, rec.endpoints) == (25_000, "DE", tuple(ENDPOINTS))
    # None advertised: no trailer, so the record is byte for byte the earlier format (8 bytes shorter).
    plain = make_peer_record(operator.key, wg, ENDPOINTS, seq=3, expires=NOW + 60, region="DE")
    assert validator.validate(plain, NOW).capacity_kbps == 0
    assert len(raw) - len(plain) == 8
    # Changing the advertised capacity after signing breaks the signature.
    forged = bytearray(raw)
    forged[-66] ^= 1  # the capacity's last byte
    assert _reason(validator, bytes(forged)) == "mis-signed"
    with pytest.raises(LocalProtocolError, match="capacity"):
        make_peer_record(operator.key, wg, ENDPOINTS, seq=3, expires=NOW + 60, capacity_kbps=1 << 64)


def test_peer_record__zero_capacity_trailer__refused_malformed(validator, operator, registered):
    # 0 is written as no trailer: a record carrying an explicit zero has two encodings of one meaning.
    wg, _ = registered()
    plain = make_peer_record(operator.key, wg, ENDPOINTS, seq=1, expires=NOW + 60)
    unsigned = bytearray(plain[:-65])
    unsigned[50:52] = (int.from_bytes(unsigned[50:52], "big") + 8).to_bytes(2, "big")  # body_len
    unsigned += bytes(8)
    raw = bytes(unsigned) + bytes(
        Account.sign_message(encode_defunct(primitive=SIGN_PREFIX + bytes(unsigned)), operator.key).signature)
    assert _reason(validator, raw) == "malformed"


def test_peer_record__forged_by_another_key__refused_mis_signed(validator, peer_record):
    assert _reason(validator, peer_record(key=Account.create().key)) == "mis-signed"


def test_peer_record__tampered_after_signing__refused_mis_signed(validator, peer_record):
    raw = bytearray(peer_record())
    raw[-70] ^= 1  # a byte of the body (an endpoint's port), signature untouched
    assert _reason(validator, bytes(raw)) == "mis-signed"


def test_peer_record__id_mismatch__refused(validator, operator, registered, directory):
    wg, nid = registered()
    # The operator signs a record for its registered node id but carrying another WireGuard key
    # (the header's node_id no longer hashes from the key inside): refused although well signed.
    raw = bytearray(make_peer_record(operator.key, wg, ENDPOINTS, seq=1, expires=NOW + 60))
    body_at = 52  # version 1 + kind 1 + seq 8 + expires 8 + node_id 32 + body_len 2
    raw[body_at : body_at + 32] = os.urandom(32)
    unsigned = bytes(raw[:-65])
    forged = unsigned + bytes(Account.sign_message(encode_defunct(primitive=SIGN_PREFIX + unsigned), operator.key).signature)
    assert _reason(validator, forged) == "id-mismatch"


def test_peer_record__unsigned__refused(validator, peer_record):
    raw = peer_record()
    assert _reason(validator, raw[:-65]) == "unsigned"
    assert _reason(validator, raw[:-65] + bytes(65)) == "unsigned"


def test_peer_record__expired__refused(validator, peer_record):
    assert _reason(validator, peer_record(expires=NOW - 1)) == "expired"
    assert _reason(validator, peer_record(expires=NOW + 60), now=NOW + 61) == "expired"


def test_peer_record__ttl_beyond_limit__refused(validator, peer_record):
    assert _reason(validator, peer_record(expires=NOW + 30 * 24 * 3600)) == "ttl-too-long"


def test_record__oversized__refused(validator, peer_record):
    assert _reason(validator, peer_record() + bytes(MAX_RECORD_SIZE)) == "oversized"


def test_peer_record__unknown_node__refused(validator, operator):
    raw = make_peer_record(operator.key, os.urandom(32), ENDPOINTS, seq=1, expires=NOW + 60)
    assert _reason(validator, raw) == "unknown-node"


def test_peer_record__revoked_node__refused(validator, directory, operator, registered):
    wg, nid = registered()
    directory.revoked.add(nid)
    raw = make_peer_record(operator.key, wg, ENDPOINTS, seq=1, expires=NOW + 60)
    assert _reason(validator, raw) == "revoked"


@pytest.mark.parametrize("cut", [1, 20, 60])
def test_record__truncated__refused_malformed(validator, peer_record, cut):
    raw = peer_record()
    assert _reason(validator, raw[:cut]) == "malformed"


def test_ip_record__key_is_network_and_ip(validator, operator, registered):
    wg, nid = registered()
    rec = validator.validate(make_ip_record(operator.key, wg, "lab", "10.77.0.2", seq=1, expires=NOW + 60), NOW)
    assert (rec.kind, rec.node_id, rec.network, rec.ip) == (IP, nid, "lab", "10.77.0.2")
    assert rec.key == ip_key("lab", "10.77.0.2") != ip_key("other", "10.77.0.2")


def test_local_builder__oversized_fields__raise_local_error(operator):
    with pytest.raises(LocalProtocolError):
        make_peer_record(operator.key, os.urandom(32), ENDPOINTS * 5, seq=1, expires=NOW + 60)


# ------------------------------------------------------------------------------ revocations


def _revocation(node_id, signers, nonce=1):
    msg = Revocation(node_id.to_bytes(32, "big"), b"\x11" * 32, nonce)
    sigs = [sign(msg, g.key, CHAIN_ID, REVOCATION_REGISTRY) for g in signers]
    return make_revocation_record(node_id, b"\x11" * 32, nonce, sigs, expires=NOW + 3600)


def test_revocation__guardian_quorum__accepted(validator, guardians, registered):
    _, nid = registered()
    rec = validator.validate(_revocation(nid, guardians[:2]), NOW)
    assert rec.key == revocation_key(nid)


def test_revocation__below_quorum__refused(validator, guardians, registered):
    _, nid = registered()
    assert _reason(validator, _revocation(nid, guardians[:1])) == "mis-signed"


def test_revocation__same_guardian_twice__counts_once(validator, guardians, registered):
    _, nid = registered()
    assert _reason(validator, _revocation(nid, [guardians[0], guardians[0]])) == "mis-signed"


def test_revocation__outsiders__refused(validator, registered):
    _, nid = registered()
    assert _reason(validator, _revocation(nid, [Account.create(), Account.create()])) == "mis-signed"


def test_revocation__no_signatures__refused_unsigned(validator, registered):
    _, nid = registered()
    raw = make_revocation_record(nid, b"\x11" * 32, 1, [], expires=NOW + 60)
    assert _reason(validator, raw) == "unsigned"


def test_store__revocation__drops_and_refuses_the_nodes_records(make_store, operator, registered, guardians):
    store = make_store()
    wg, nid = registered()
    store.put(make_peer_record(operator.key, wg, ENDPOINTS, seq=1, expires=NOW + 60), "peer", NOW)
    assert len(store.get(nid, NOW)) == 1
    store.put(_revocation(nid, guardians[1:]), "guardian", NOW)
    assert store.get(nid, NOW) == []
    with pytest.raises(RecordRejected) as exc:
        store.put(make_peer_record(operator.key, wg, ENDPOINTS, seq=2, expires=NOW + 60), "peer", NOW)
    assert exc.value.reason == "revoked"


# ------------------------------------------------------------------------------ store


def test_store__replayed_older_sequence__refused(make_store, operator, registered):
    store = make_store()
    wg, nid = registered()
    old = make_peer_record(operator.key, wg, ENDPOINTS, seq=1, expires=NOW + 60)
    new = make_peer_record(operator.key, wg, ENDPOINTS[:1], seq=2, expires=NOW + 60)
    store.put(new, "a", NOW)
    with pytest.raises(RecordRejected) as exc:
        store.put(old, "b", NOW)
    assert exc.value.reason == "replayed"
    assert store.get(nid, NOW) == [new]


def test_store__same_sequence_different_content__refused(make_store, operator, registered):
    store = make_store()
    wg, _ = registered()
    store.put(make_peer_record(operator.key, wg, ENDPOINTS, seq=5, expires=NOW + 60), "a", NOW)
    with pytest.raises(RecordRejected) as exc:
        store.put(make_peer_record(operator.key, wg, ENDPOINTS[:1], seq=5, expires=NOW + 60), "a", NOW)
    assert exc.value.reason == "replayed"


def test_store__newer_sequence__replaces(make_store, operator, registered):
    store = make_store()
    wg, nid = registered()
    store.put(make_peer_record(operator.key, wg, ENDPOINTS, seq=1, expires=NOW + 60), "a", NOW)
    newer = make_peer_record(operator.key, wg, ENDPOINTS[:1], seq=2, expires=NOW + 60)
    store.put(newer, "a", NOW)
    assert store.get(nid, NOW) == [newer] and len(store) == 1


def test_store__per_source_rate_limit(make_store, operator, registered):
    store = make_store(rate=1.0, burst=3)
    raws = [make_peer_record(operator.key, registered()[0], ENDPOINTS, seq=1, expires=NOW + 60) for _ in range(5)]
    for raw in raws[:3]:
        store.put(raw, "noisy", NOW)
    with pytest.raises(RecordRejected) as exc:
        store.put(raws[3], "noisy", NOW)
    assert exc.value.reason == "rate-limited"
    store.put(raws[3], "quiet", NOW)  # other sources are unaffected
    store.put(raws[4], "noisy", NOW + 1.0)  # the bucket refills at `rate`
    assert len(store) == 5


def test_store__bounded_memory__refuses_when_full_and_expires_first(make_store, operator, registered):
    store = make_store(max_records=2)
    short = make_peer_record(operator.key, registered()[0], ENDPOINTS, seq=1, expires=NOW + 10)
    store.put(short, "a", NOW)
    store.put(make_peer_record(operator.key, registered()[0], ENDPOINTS, seq=1, expires=NOW + 60), "b", NOW)
    third = make_peer_record(operator.key, registered()[0], ENDPOINTS, seq=1, expires=NOW + 60)
    with pytest.raises(RecordRejected) as exc:
        store.put(third, "c", NOW)
    assert exc.value.reason == "store-full"
    store.put(third, "c", NOW + 11)  # the short-lived record expired and made room
    assert len(store) == 2


def test_store__rate_limit_table__is_bounded(make_store, operator, registered):
    store = make_store(max_sources=8)
    raw = make_peer_record(operator.key, registered()[0], ENDPOINTS, seq=1, expires=NOW + 60)
    for i in range(50):
        store.put(raw, ("10.0.0.1", i), NOW)
    assert len(store._buckets) == 8
