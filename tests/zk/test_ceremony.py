"""The multi-party setup: honest contributions verify and give working keys; cheating is caught."""

import dataclasses
import json

import pytest

from zk.ceremony import (
    CeremonyError, Transcript, contribute_phase1, contribute_phase2, new_phase1, new_phase2,
    verify_phase1, verify_phase2, verify_transcript, transcript_from_json, transcript_to_json,
)
from zk.curve import G1, G1_GEN
from zk.groth16 import domain_size, prove, verify
from zk.r1cs import Circuit


@pytest.fixture(scope="module")
def cubic():
    """y^3 + y + 5 == x: small enough that a ceremony runs in seconds."""
    c = Circuit()
    x = c.public("x")
    y = c.private("y")
    c.assert_equal(c.mul(c.mul(y, y), y) + y + 5, x)
    return c


@pytest.fixture(scope="module")
def ceremony(cubic):
    """Two phase-1 participants, one phase-2 participant; (transcript, last phase-1 state)."""
    t = Transcript("cubic")
    state = new_phase1(domain_size(cubic))
    for name in ("alice", "bob"):
        state, record = contribute_phase1(state, name)
        t.phase1.append((record, state))
    p2, record = contribute_phase2(new_phase2(state, cubic), "carol")
    t.phase2.append((record, p2))
    return t


def test_transcript__json_file_replays_and_keys_prove(ceremony, cubic, tmp_path):
    path = tmp_path / "transcript.json"
    path.write_text(json.dumps(transcript_to_json(ceremony)))
    pk, vk = verify_transcript(transcript_from_json(json.loads(path.read_text())), cubic)
    proof = prove(pk, cubic, cubic.witness({"x": 35, "y": 3}))
    assert verify(vk, [35], proof) and not verify(vk, [36], proof)
    assert vk.delta_2 != vk.gamma_2  # carol's delta really is in the key


def test_phase1__tampered_power__rejected(ceremony):
    (rec_a, state_a), (rec_b, state_b) = ceremony.phase1
    bad = dataclasses.replace(state_b, tau_g1=list(state_b.tau_g1))
    bad.tau_g1[3] = G1.add(bad.tau_g1[3], G1_GEN)
    with pytest.raises(CeremonyError, match="pairing"):
        verify_phase1(state_a, bad, rec_b)


def test_phase1__proof_of_knowledge_replayed_on_another_state__rejected(ceremony, cubic):
    (rec_a, state_a), (rec_b, state_b) = ceremony.phase1
    with pytest.raises(CeremonyError, match="knowledge"):
        verify_phase1(new_phase1(domain_size(cubic)), state_b, rec_b)  # bob's record, alice skipped


def test_phase1__state_not_derived_from_previous__rejected(ceremony, cubic):
    (rec_a, state_a), _ = ceremony.phase1
    fresh, rec = contribute_phase1(new_phase1(domain_size(cubic)), "mallory")
    with pytest.raises(CeremonyError):
        verify_phase1(state_a, fresh, dataclasses.replace(rec, pok=rec_a.pok))


def test_phase2__l_query_tampered__rejected(ceremony, cubic):
    _, last1 = ceremony.phase1[-1]
    start = new_phase2(last1, cubic)
    rec, state = ceremony.phase2[0]
    pk = state.pk
    bad = dataclasses.replace(state, pk=dataclasses.replace(pk, l_1=[G1.add(pk.l_1[0], G1_GEN)] + pk.l_1[1:]))
    with pytest.raises(CeremonyError, match="pairing"):
        verify_phase2(start, bad, rec)


def test_phase2__contribution_that_changes_ic__rejected(ceremony, cubic):
    _, last1 = ceremony.phase1[-1]
    start = new_phase2(last1, cubic)
    nxt, rec = contribute_phase2(start, "mallory")
    vk = dataclasses.replace(nxt.pk.vk, ic=[G1_GEN] + nxt.pk.vk.ic[1:])
    with pytest.raises(CeremonyError, match="changed more"):
        verify_phase2(start, dataclasses.replace(nxt, pk=dataclasses.replace(nxt.pk, vk=vk)), rec)


def test_transcript__empty_phase__rejected(cubic):
    with pytest.raises(CeremonyError):
        verify_transcript(Transcript("cubic"), cubic)


def test_transcript_from_json__malformed__rejected():
    with pytest.raises(CeremonyError):
        transcript_from_json({"format": "warren-ceremony-1", "circuit": "x", "phase1": [{"state": {}}]})
    with pytest.raises(CeremonyError):
        transcript_from_json({"format": "something else"})
