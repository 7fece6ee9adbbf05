"""What a guardian does with a revocation proposal, without the chain (pure but for signing).

* :func:`review`: the proposal's evidence hash is its transcript's hash, the transcript is about the
  node named, it shows tampering, and it is consistent with itself
  (:func:`agents.challenger.verdict.check_transcript`: the payload regenerated from the seed, with
  the listed differences applied, hashes as the node's delivery did).
* :func:`sign`: the guardian's EIP-712 ``Revocation`` signature in revocation_registry's domain.
* :func:`gather`: the signatures of several copies of a proposal, checked one by one *before* any gas
  is spent, as revocation_registry would check them: each must recover to the guardian it is filed
  under (else forged), come from a current guardian (the caller's ``is_guardian``), once per guardian
  (else duplicate), in the one encoding the contract accepts (65 bytes, v 27/28, low s: EIP-2). The
  good ones come back sorted by signer address, the order ``revoke`` wants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from eth_utils import to_checksum_address

from agents.chain import eip712
from agents.challenger.proposal import Proposal
from agents.challenger.verdict import check_transcript, judge
from agents.errors import UserError

__all__ = ["GuardianError", "Refusal", "Review", "gather", "review", "sign"]

#: secp256k1 group order (SEC 2, section 2.4.1): EIP-2 accepts only s <= N / 2.
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class GuardianError(UserError):
    """A proposal that cannot be signed or submitted, with the reason in words."""


@dataclasses.dataclass(frozen=True)
class Review:
    """``ok`` when ``problems`` is empty; ``findings`` say what the evidence shows."""

    ok: bool
    problems: tuple[str, ...]
    findings: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A signature left out of a submission, and why."""

    guardian: str
    reason: str


def review(proposal: Proposal) -> Review:
    """Check a proposal's evidence against its hashes (see the module docstring)."""
    problems: list[str] = []
    transcript = proposal.transcript
    if transcript.digest() != proposal.evidence_hash:
        problems.append("the evidence hash is not the transcript's hash (the transcript was changed or swapped)")
    if transcript.node_id != proposal.node_id.hex():
        problems.append(f"the transcript is about node {transcript.node_id[:16]}, not the node proposed")
    own, findings = check_transcript(transcript)
    problems.extend(own)
    if not judge(transcript).tampered:
        problems.append("the transcript shows no changed bytes: slow or failed nodes are for the failure quorum, "
                        "not for revocation")
    return Review(ok=not problems, problems=tuple(problems), findings=tuple(findings))


def sign(proposal: Proposal, private_key: bytes) -> tuple[str, bytes]:
    """``(guardian address, signature)`` of the proposal's Revocation.

    Raises:
        GuardianError: the review found problems (a guardian never signs evidence that fails it).
    """
    result = review(proposal)
    if not result.ok:
        raise GuardianError("not signing: the evidence does not hold up: " + "; ".join(result.problems))
    signature = eip712.sign(proposal.message(), private_key, proposal.chain_id, proposal.registry)
    address = eip712.recover(proposal.message(), signature, proposal.chain_id, proposal.registry)
    return to_checksum_address(address), signature


def _encoding_problem(signature: bytes) -> str | None:
    if len(signature) != 65:
        return f"signature is {len(signature)} bytes, not 65"
    if signature[64] not in (27, 28):
        return f"signature v is {signature[64]}, not 27 or 28"
    if int.from_bytes(signature[32:64], "big") > _SECP256K1_N // 2:
        return "signature has a high s (EIP-2): the contract accepts only the low-s form"
    return None


def gather(proposals: list[Proposal], is_guardian: Callable[[str], bool]) -> tuple[list[bytes], list[str], list[Refusal]]:
    """The valid signatures of one proposal's copies: ``(signatures, signers, refusals)``, sorted by signer.

    Raises:
        GuardianError: the copies are not of the same proposal (node, evidence, nonce or domain differ).
    """
    if not proposals:
        raise GuardianError("no proposal given")
    first = proposals[0]
    key = (first.node_id, first.evidence_hash, first.nonce, first.chain_id, first.registry.lower())
    for other in proposals[1:]:
        if (other.node_id, other.evidence_hash, other.nonce, other.chain_id, other.registry.lower()) != key:
            raise GuardianError("the proposal files are not copies of one proposal (node id, evidence hash, nonce or "
                                "contract differ): submit each proposal on its own")
    message = first.message()
    good: dict[str, bytes] = {}
    refused: list[Refusal] = []
    for proposal in proposals:
        for claimed, signature_hex in proposal.signatures.items():
            try:
                signature = bytes.fromhex(signature_hex.removeprefix("0x"))
                claimed = to_checksum_address(claimed)
            except ValueError:
                refused.append(Refusal(str(claimed), "not a hex signature or address"))
                continue
            problem = _encoding_problem(signature)
            if problem:
                refused.append(Refusal(claimed, problem))
                continue
            try:
                signer = to_checksum_address(eip712.recover(message, signature, first.chain_id, first.registry))
            except Exception:  # noqa: BLE001 - a signature no key made
                signer = None
            if signer != claimed:
                refused.append(Refusal(claimed, "forged: the signature is not this guardian's over this revocation"))
                continue
            if signer in good:
                if good[signer] != signature:
                    refused.append(Refusal(claimed, "duplicate: this guardian's signature is already counted"))
                continue  # the same signature in two copies is one signature
            if not is_guardian(signer):
                refused.append(Refusal(claimed, "not a guardian of the revocation registry"))
                continue
            good[signer] = signature
    signers = sorted(good, key=lambda a: int(a, 16))
    return [good[s] for s in signers], signers, refused
