"""A revocation proposal: a tampering node's id, the evidence (its transcript) and guardian signatures.

One JSON file travels from the challenger to the guardians and back: ``warren guardian review``
checks the transcript against its hashes, ``warren guardian sign`` adds a signature of the EIP-712
``Revocation(node_id, evidence_hash, nonce)`` in revocation_registry's domain (chain id and address
are in the file, so a guardian signs for the right contract), and ``warren guardian submit`` sends
a quorum of them. The evidence hash is the transcript hash the challenger posted with its report
(reputation's ReportTranscript event), so the chain ties the revocation to a measured challenge.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from agents.chain import eip712
from agents.challenger.verdict import Transcript, Verdict

__all__ = ["Proposal", "propose"]

#: File format version.
FORMAT = "warren-revocation-proposal/1"


@dataclasses.dataclass
class Proposal:
    """Attributes:
        node_id: the node to revoke.
        evidence_hash: the transcript hash (must equal ``transcript.digest()``).
        nonce: the Revocation nonce (0 unless an earlier proposal for the node used it).
        chain_id / registry: revocation_registry's EIP-712 domain.
        transcript: the evidence.
        reasons: the challenger's verdict reasons.
        proposer: the challenger's address.
        signatures: guardian address (checksummed) -> 65-byte signature (hex), as collected.
    """

    node_id: bytes
    evidence_hash: bytes
    nonce: int
    chain_id: int
    registry: str
    transcript: Transcript
    reasons: list[str]
    proposer: str
    signatures: dict[str, str] = dataclasses.field(default_factory=dict)

    def message(self) -> eip712.Revocation:
        return eip712.Revocation(node_id=self.node_id, evidence_hash=self.evidence_hash, nonce=self.nonce)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "node_id": "0x" + self.node_id.hex(), "evidence_hash": "0x" + self.evidence_hash.hex(),
                "nonce": self.nonce, "chain_id": self.chain_id, "registry": self.registry, "proposer": self.proposer,
                "reasons": list(self.reasons), "transcript": self.transcript.to_dict(),
                "signatures": dict(sorted(self.signatures.items()))}

    @classmethod
    def from_dict(cls, value: dict) -> Proposal:
        if value.get("format") != FORMAT:
            raise ValueError(f"not a revocation proposal (format {value.get('format')!r}, expected {FORMAT!r})")
        try:
            return cls(node_id=bytes.fromhex(value["node_id"].removeprefix("0x")),
                       evidence_hash=bytes.fromhex(value["evidence_hash"].removeprefix("0x")),
                       nonce=int(value["nonce"]), chain_id=int(value["chain_id"]), registry=str(value["registry"]),
                       transcript=Transcript.from_dict(value["transcript"]), reasons=list(value["reasons"]),
                       proposer=str(value["proposer"]), signatures=dict(value.get("signatures", {})))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"revocation proposal is missing or mistypes a field: {exc}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (a guardian adding a signature never leaves half a file)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Proposal:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from None


def propose(transcript: Transcript, verdict: Verdict, *, chain_id: int, registry: str, proposer: str,
            nonce: int = 0) -> Proposal:
    """The proposal to revoke the node a tampering verdict is about.

    Raises:
        ValueError: the verdict is not a tampering one, or not this transcript's.
    """
    if not verdict.tampered:
        raise ValueError("only a node caught tampering is proposed for revocation (slow or down nodes are slashed "
                         "by the failure quorum)")
    if verdict.transcript_hash != transcript.digest():
        raise ValueError("the verdict is not this transcript's (hashes differ)")
    return Proposal(node_id=bytes.fromhex(transcript.node_id), evidence_hash=transcript.digest(), nonce=nonce,
                    chain_id=chain_id, registry=registry, transcript=transcript, reasons=list(verdict.reasons),
                    proposer=proposer)
