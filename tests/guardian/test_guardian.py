"""agents.guardian: review a proposal's evidence, sign its Revocation, gather signatures, revoke on anvil."""

import dataclasses

import ape
import pytest
from eth_account import Account
from eth_utils import keccak

from agents.challenger.payload import payload
from agents.challenger.proposal import propose
from agents.challenger.verdict import judge, record
from agents.guardian.core import GuardianError, gather, review, sign

SEED = bytes(range(32))
SIZE = 300_000
KEYS = [keccak(b"warren guardian %d" % i) for i in range(4)]
ADDRESSES = [Account.from_key(k).address for k in KEYS]
GUARDIANS = set(ADDRESSES[:3])  # the fourth key is nobody's guardian
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def tampered_proposal(node_id=b"\x5a" * 32, chain_id=31337, registry="0x" + "77" * 20):
    data = bytearray(payload(SEED, SIZE))
    data[4096:4100] = b"EVIL"
    transcript = record(node_id=node_id, epoch=2, challenger="0x" + "11" * 20, started_at=1.0, seed=SEED, size=SIZE,
                        url="http://203.0.113.9/p", advertised_kbps=1_000, received=bytes(data), elapsed_s=0.2,
                        latency_ms=(4.0,))
    return propose(transcript, judge(transcript), chain_id=chain_id, registry=registry, proposer=transcript.challenger)


def signed(proposal, *indices):
    for i in indices:
        address, signature = sign(proposal, KEYS[i])
        proposal.signatures[address] = "0x" + signature.hex()
    return proposal


def test_review__genuine_tampering_evidence__ok_with_findings():
    result = review(tampered_proposal())
    assert result.ok and result.problems == ()
    assert any("differ from the payload regenerated from its seed" in f for f in result.findings)


def test_review__swapped_transcript_or_other_node__problems_and_sign_refuses():
    proposal = tampered_proposal()
    swapped = dataclasses.replace(proposal, transcript=dataclasses.replace(proposal.transcript, elapsed_s=9.0))
    assert "the evidence hash is not the transcript's hash" in review(swapped).problems[0]
    other = dataclasses.replace(proposal, node_id=b"\x01" * 32)
    assert any("not the node proposed" in p for p in review(other).problems)
    with pytest.raises(GuardianError, match="not signing: the evidence does not hold up"):
        sign(swapped, KEYS[0])


def test_review__honest_download_framed_as_tampering__refused():
    proposal = tampered_proposal()
    honest = record(node_id=proposal.node_id, epoch=2, challenger="0x" + "11" * 20, started_at=1.0, seed=SEED,
                    size=SIZE, url="u", advertised_kbps=1_000, received=payload(SEED, SIZE), elapsed_s=0.2)
    framed = dataclasses.replace(honest, diffs=proposal.transcript.diffs)
    forged = dataclasses.replace(proposal, transcript=framed, evidence_hash=framed.digest())
    assert not review(forged).ok


def test_gather__refuses_forged_duplicate_non_guardian_and_malleable_before_any_gas():
    proposal = signed(tampered_proposal(), 0, 1, 3)
    copy = signed(tampered_proposal(), 2)
    # Forged: guardian 2's name on guardian 0's signature.
    copy.signatures[ADDRESSES[1]] = proposal.signatures[ADDRESSES[0]]
    # Duplicate: guardian 0 signs again in the high-s encoding (same signer, second signature).
    sig = bytes.fromhex(proposal.signatures[ADDRESSES[0]][2:])
    twin = sig[:32] + (N - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") + bytes([55 - sig[64]])
    third = tampered_proposal()
    third.signatures[ADDRESSES[0]] = "0x" + twin.hex()
    signatures, signers, refused = gather([proposal, copy, third], lambda a: a in GUARDIANS)
    assert signers == sorted([ADDRESSES[0], ADDRESSES[1], ADDRESSES[2]], key=lambda a: int(a, 16))
    assert len(signatures) == 3
    reasons = {(r.guardian, r.reason.split(":")[0]) for r in refused}
    assert (ADDRESSES[3], "not a guardian of the revocation registry") in reasons
    assert (ADDRESSES[1], "forged") in reasons
    assert (ADDRESSES[0], "signature has a high s (EIP-2)") in reasons


def sign_with_nonce(digest: bytes, key: bytes, k: int) -> bytes:
    """ECDSA over secp256k1 with an explicit nonce ``k`` (eth-keys signs only with RFC 6979's): a second
    valid low-s signature of the same key over the same digest."""
    from py_ecc.secp256k1 import secp256k1

    d, z = int.from_bytes(key, "big"), int.from_bytes(digest, "big")
    x, y = secp256k1.multiply(secp256k1.G, k)
    r = x % N
    s = pow(k, -1, N) * (z + r * d) % N
    v = 27 + (y & 1)
    if s > N // 2:
        s, v = N - s, 55 - v
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])


def test_gather__two_signatures_of_one_guardian__duplicate():
    from agents.chain import eip712

    proposal = signed(tampered_proposal(), 0)
    other = tampered_proposal()
    digest = eip712.digest(proposal.message(), proposal.chain_id, proposal.registry)
    second = sign_with_nonce(digest, KEYS[0], 0xC0FFEE)
    assert eip712.recover(proposal.message(), second, proposal.chain_id, proposal.registry) == ADDRESSES[0]
    other.signatures[ADDRESSES[0]] = "0x" + second.hex()
    signatures, signers, refused = gather([proposal, other], lambda a: True)
    assert signers == [ADDRESSES[0]] and len(signatures) == 1
    assert [(r.guardian, r.reason.split(":")[0]) for r in refused] == [(ADDRESSES[0], "duplicate")]
    # The very same signature in two copies is one signature, not a duplicate.
    other.signatures[ADDRESSES[0]] = proposal.signatures[ADDRESSES[0]]
    assert gather([proposal, other], lambda a: True)[2] == []


def test_gather__copies_of_different_proposals__refused():
    with pytest.raises(GuardianError, match="not copies of one proposal"):
        gather([tampered_proposal(), tampered_proposal(node_id=b"\x01" * 32)], lambda a: True)


def test_submit__gathered_signatures__revoke_on_chain_and_too_few_are_caught_first(
    project, owner, registry, treasury, chain, register_node, accounts
):
    for address in ADDRESSES:
        chain.set_balance(address, 10**20)
    contract = owner.deploy(project.revocation_registry, registry, treasury, sorted(GUARDIANS), 2)
    registry.set_revoker(contract, sender=owner)
    node_id = register_node()
    stake = registry.node_stake(node_id)
    proposal = signed(tampered_proposal(node_id=node_id, chain_id=chain.chain_id, registry=contract.address), 0, 3)
    signatures, _, refused = gather([proposal], lambda a: bool(contract.is_guardian(a)))
    assert len(signatures) == 1 < contract.quorum()  # the non-guardian's was refused: too few, nothing sent
    assert [r.guardian for r in refused] == [ADDRESSES[3]]
    signed(proposal, 1)
    signatures, _, _ = gather([proposal], lambda a: bool(contract.is_guardian(a)))
    tx = contract.revoke(node_id, proposal.evidence_hash, 0, signatures, sender=accounts[9])
    [event] = tx.events.filter(contract.NodeRevoked)
    assert bytes(event.evidence_hash) == proposal.transcript.digest()
    assert event.slashed == stake and registry.is_revoked(node_id)
    with ape.reverts("revocation_registry: already revoked"):
        contract.revoke(node_id, proposal.evidence_hash, 0, signatures, sender=accounts[9])


def test_cli__review_then_sign_with_a_0600_keystore(tmp_path, capsys):
    import json

    from agents.challenger.proposal import Proposal
    from agents.cli import main
    from agents.wallet import create_keystore

    path = tampered_proposal().save(tmp_path / "proposal.json")
    assert main(["guardian", "review", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    secret = tmp_path / "pass"
    secret.write_text("guardian passphrase\n")
    secret.chmod(0o600)
    keystore = tmp_path / "guardian.json"
    create_keystore(keystore, "guardian passphrase", KEYS[1], kdf="pbkdf2", iterations=2)
    assert main(["guardian", "sign", str(path), "--keystore", str(keystore), "--passphrase-file", str(secret)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["signed"] == ADDRESSES[1], out
    assert list(Proposal.load(path).signatures) == [ADDRESSES[1]]
    # A passphrase file others can read is refused, as for a node operator's key.
    secret.chmod(0o644)
    assert main(["guardian", "sign", str(path), "--keystore", str(keystore), "--passphrase-file", str(secret)]) == 1
    assert "readable by others" in capsys.readouterr().err


def test_cli__review_of_changed_evidence__exit_1(tmp_path, capsys):
    import json

    from agents.cli import main

    proposal = tampered_proposal()
    proposal = dataclasses.replace(proposal, transcript=dataclasses.replace(proposal.transcript, elapsed_s=3.0))
    path = proposal.save(tmp_path / "proposal.json")
    assert main(["guardian", "review", str(path)]) == 1
    assert not json.loads(capsys.readouterr().out)["ok"]
