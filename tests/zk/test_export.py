"""snarkjs JSON export: round trips, malformed documents, agreement with the contracts side."""

import json

import pytest

from zk.export import (
    ExportError, proof_calldata, proof_from_json, proof_to_json, public_from_json, public_to_json,
    vk_from_json, vk_to_json, write_json,
)
from zk.groth16 import verify


def test_vk_proof_public__json_roundtrip__still_verifies(keys, redemption, tmp_path):
    public, proof = redemption
    write_json(tmp_path / "verification_key.json", vk_to_json(keys[1]))
    write_json(tmp_path / "proof.json", proof_to_json(proof))
    write_json(tmp_path / "public.json", public_to_json(public))
    vk = vk_from_json(json.loads((tmp_path / "verification_key.json").read_text()))
    pr = proof_from_json(json.loads((tmp_path / "proof.json").read_text()))
    pub = public_from_json(json.loads((tmp_path / "public.json").read_text()))
    assert (vk, pr, pub) == (keys[1], proof, public)
    assert verify(vk, pub, pr)


def test_json__snarkjs_shape(keys, redemption):
    doc = vk_to_json(keys[1])
    assert doc["protocol"] == "groth16" and doc["curve"] == "bn128" and doc["nPublic"] == 3
    assert len(doc["IC"]) == 4 and doc["vk_alpha_1"][2] == "1" and doc["vk_beta_2"][2] == ["1", "0"]
    proof = proof_to_json(redemption[1])
    assert set(proof) == {"pi_a", "pi_b", "pi_c", "protocol", "curve"}
    assert all(isinstance(v, str) for v in proof["pi_a"])


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(protocol="plonk"),
    lambda d: d.pop("IC"),
    lambda d: d.update(vk_alpha_1=["1", "2", "3"]),   # not normalised
    lambda d: d.update(vk_alpha_1=["x", "2", "1"]),
    lambda d: d.update(vk_beta_2=[["1"], ["2", "3"], ["1", "0"]]),
    lambda d: d.update(nPublic=2),
])
def test_vk_from_json__malformed__raises(keys, mutate):
    doc = vk_to_json(keys[1])
    mutate(doc)
    with pytest.raises(ExportError):
        vk_from_json(doc)


def test_public_from_json__malformed__raises():
    with pytest.raises(ExportError):
        public_from_json({"0": "1"})
    with pytest.raises(ExportError):
        public_from_json(["-1"])


def test_calldata__agrees_with_the_contracts_side(redemption):
    from zk.onchain import proof_calldata as contracts_calldata

    proof = redemption[1]
    assert proof_calldata(proof) == contracts_calldata(proof_to_json(proof)) == contracts_calldata(proof)


def test_verifier_key__groth16_key__equals_the_snarkjs_round_trip(keys):
    from zk.vyper_verifier import verifier_key, vk_from_snarkjs

    direct = verifier_key(keys[1])
    assert direct == vk_from_snarkjs(vk_to_json(keys[1])) == verifier_key(vk_to_json(keys[1]))
    assert direct.ic == tuple(tuple(int(c) for c in p) for p in keys[1].ic)
    assert verifier_key(direct) is direct
    assert direct.to_groth16() == keys[1]


def test_verifier_key__fingerprint__hash_of_the_exported_json(keys):
    from eth_utils import keccak

    from zk.vyper_verifier import verifier_key

    canonical = json.dumps(vk_to_json(keys[1]), sort_keys=True, separators=(",", ":"))
    assert verifier_key(keys[1]).fingerprint() == "0x" + keccak(canonical.encode()).hex()


def test_verifier_key__not_a_key__raises():
    from zk.vyper_verifier import VerifierSourceError, verifier_key

    with pytest.raises(VerifierSourceError):
        verifier_key(42)
    with pytest.raises(VerifierSourceError):
        verifier_key({"protocol": "plonk"})


def test_render_verifier__any_key_form__same_source(keys):
    from zk.vyper_verifier import render_verifier, verifier_key

    source = render_verifier(keys[1])
    assert source == render_verifier(vk_to_json(keys[1])) == render_verifier(verifier_key(keys[1]))
    assert verifier_key(keys[1]).fingerprint() in source
