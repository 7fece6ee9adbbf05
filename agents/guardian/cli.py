"""`warren guardian review|sign|submit PROPOSAL`: the guardian's side of a revocation.

    warren guardian review proposal.json
    warren guardian sign proposal.json --keystore guardian.json --passphrase-file pass [--out signed.json]
    warren guardian submit signed-a.json signed-b.json --keystore submitter.json --passphrase-env VAR \\
        [--rpc URL] [--deployment FILE]

`review` prints what the evidence shows and exits 1 if it does not hold up. `sign` reviews first and
refuses to sign evidence that fails; the key comes from a 0600 keystore (passphrase from a file or
environment variable, never the command line), an ape account alias, or a local test account, as a
node operator's does (agents.wallet). `submit` gathers the signatures of every copy given, refuses
forged, duplicate and non-guardian ones before sending anything, checks the quorum and that the
proposal's contract is the deployment's revocation registry, then sends ``revoke``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agents.errors import UserError

__all__ = ["add_commands"]


def add_commands(subparsers) -> None:
    """Register `warren guardian`."""
    guardian = subparsers.add_parser("guardian", help="review, sign and submit revocations of tampering nodes")
    sub = guardian.add_subparsers(dest="guardian_command", metavar="ACTION", required=True)
    p = sub.add_parser("review", help="check a proposal's evidence (transcript and hashes)")
    p.add_argument("proposal", type=Path)
    p.set_defaults(func=_review)
    p = sub.add_parser("sign", help="review, then add your EIP-712 Revocation signature to the proposal")
    p.add_argument("proposal", type=Path)
    p.add_argument("--out", type=Path, help="write the signed copy here (default: the proposal file itself)")
    _account_args(p)
    p.set_defaults(func=_sign)
    p = sub.add_parser("submit", help="send a quorum of guardian signatures to the revocation registry")
    p.add_argument("proposals", type=Path, nargs="+", help="copies of one proposal, each with signatures")
    _account_args(p)
    from agents.chain.connect import DEFAULT_NETWORK, DEFAULT_RPC

    p.add_argument("--rpc", default=DEFAULT_RPC, help="chain RPC URL")
    p.add_argument("--network", default=DEFAULT_NETWORK, help="ape network choice")
    p.add_argument("--deployment", type=Path, help="deployment file (default deployments/<net>.json)")
    p.set_defaults(func=_submit)


def _account_args(p) -> None:
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--keystore", type=Path, help="keystore JSON of the account (mode 0600)")
    who.add_argument("--ape-alias", help="an ape account alias")
    who.add_argument("--test-account", type=int, help="ape test account N (local networks only)")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--passphrase-file", type=Path, help="file holding the passphrase (mode 0600)")
    secret.add_argument("--passphrase-env", metavar="VAR", help="environment variable holding the passphrase")


def _spec(args):
    from agents.wallet import AccountSpec

    return AccountSpec(keystore=args.keystore, ape_alias=args.ape_alias, test_account=args.test_account,
                       passphrase_file=args.passphrase_file, passphrase_env=args.passphrase_env)


def _load(path: Path):
    from agents.challenger.proposal import Proposal

    try:
        return Proposal.load(path)
    except FileNotFoundError:
        raise UserError(f"no proposal file at {path}") from None
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None


def _review(args) -> int:
    from agents.guardian.core import review

    proposal = _load(args.proposal)
    result = review(proposal)
    print(json.dumps({"node_id": "0x" + proposal.node_id.hex(), "evidence_hash": "0x" + proposal.evidence_hash.hex(),
                      "ok": result.ok, "problems": list(result.problems), "findings": list(result.findings),
                      "reasons": proposal.reasons, "signatures": len(proposal.signatures)}, indent=1))
    return 0 if result.ok else 1


def _sign(args) -> int:
    from agents.guardian.core import sign
    from agents.wallet import load_account, private_key_of

    proposal = _load(args.proposal)
    account = load_account(_spec(args), "ethereum:local:foundry" if args.test_account is not None else None)
    address, signature = sign(proposal, private_key_of(account))
    proposal.signatures[address] = "0x" + signature.hex()
    out = proposal.save(args.out or args.proposal)
    print(json.dumps({"signed": address, "proposal": str(out), "signatures": len(proposal.signatures)}))
    return 0


def _submit(args) -> int:
    from agents.chain.connect import connect, load_contracts
    from agents.guardian.core import GuardianError, gather, review
    from agents.wallet import load_account

    proposals = [_load(path) for path in args.proposals]
    checked = review(proposals[0])
    if not checked.ok:
        raise GuardianError("not submitting: the evidence does not hold up: " + "; ".join(checked.problems))
    with connect(args.rpc, args.network) as project:
        contracts = load_contracts(project, args.deployment, args.network)
        registry = contracts.revocations
        first = proposals[0]
        if first.registry.lower() != str(registry.address).lower() or first.chain_id != contracts.chain_id:
            raise GuardianError(f"the proposal is for revocation registry {first.registry} on chain {first.chain_id}, "
                                f"not this deployment's {registry.address} on chain {contracts.chain_id}")
        if contracts.registry.is_revoked(first.node_id):
            raise GuardianError(f"node 0x{first.node_id.hex()} is already revoked: nothing to submit")
        signatures, signers, refused = gather(proposals, lambda a: bool(registry.is_guardian(a)))
        for refusal in refused:
            print(f"warren: refused signature of {refusal.guardian}: {refusal.reason}", file=sys.stderr)
        quorum = int(registry.quorum())
        if len(signatures) < quorum:
            raise GuardianError(f"{len(signatures)} valid guardian signatures, the registry needs {quorum}: gather more "
                                "with `warren guardian sign` (nothing was sent)")
        account = load_account(_spec(args), args.network)
        tx = registry.revoke(first.node_id, first.evidence_hash, first.nonce, signatures, sender=account)
        print(json.dumps({"revoked": "0x" + first.node_id.hex(), "tx": str(tx.txn_hash), "signers": signers,
                          "refused": [{"guardian": r.guardian, "reason": r.reason} for r in refused]}))
    return 0
