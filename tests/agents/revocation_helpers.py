"""Shared by the revocation tests on anvil: register a node and revoke it with two guardians."""

from agents.chain import eip712
from agents.chain.bindings import node_id_of
from agents.chain.deploy import TOKEN

STAKE = 100 * TOKEN


def register_and_revoke(warren, owner, operator, guardians, wg_key: bytes, *, evidence: bytes, nonce: int):
    """Register ``wg_key`` for ``operator``, then revoke it (2 guardians, ascending); returns
    ``(node id bytes, signatures)``."""
    warren.token.mint(operator, STAKE, sender=owner)
    warren.token.approve(warren.registry, STAKE, sender=operator)
    warren.registry.register_node(wg_key, "NL", TOKEN, STAKE, sender=operator)
    node_id = node_id_of(wg_key)
    revocation = eip712.Revocation(node_id, evidence, nonce)
    signers = sorted(guardians[:2], key=lambda g: int(g.address, 16))
    signatures = [warren.sign_revocation(revocation, g.private_key) for g in signers]
    warren.revocations.revoke(node_id, evidence, nonce, signatures, sender=owner)
    return node_id, signatures
