"""What the chain says about a node: the one function `warren node status` and the dashboard share.

Never what the node process remembers: every figure is read from the contracts now.
"""

from __future__ import annotations

__all__ = ["chain_facts"]


def chain_facts(contracts, node_id: bytes) -> dict:
    """Registration, stake, unbonding, score and revocation of ``node_id`` (amounts in token wei)."""
    info = contracts.node(node_id)
    registered = int(info.operator, 16) != 0
    return {
        "node_id": "0x" + node_id.hex(), "registered": registered, "operator": info.operator,
        "region": info.region, "price_per_gib": info.price_per_gib, "stake": info.stake,
        "active": info.active, "revoked": info.revoked,
        "unbond_at": int(contracts.registry.node_unbond_at(node_id)) if registered else 0,
        "score_bps": int(contracts.reputation.score(node_id)),
        "reports": int(contracts.reputation.report_count(node_id)),
        "fee_bps": int(contracts.channels.fee_bps()),
        "operator_balance": int(contracts.token.balanceOf(info.operator)) if registered else 0,
    }
