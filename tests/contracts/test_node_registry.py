"""node_registry: registration, stake, unbonding, slashing and revocation on a real anvil chain."""

import ape
import pytest
from eth_utils import keccak


def test_register_node__records_node_and_pulls_stake(registry, token, operator, register_node):
    stake = registry.min_node_stake()
    before = token.balanceOf(operator)
    wg_key = bytes(range(32))
    node_id = register_node(wg_key=wg_key, region="NL", price_per_gib=7)
    assert node_id == keccak(wg_key)
    assert registry.node_operator(node_id) == operator
    assert registry.node_stake(node_id) == stake
    assert registry.is_active(node_id)
    assert bytes(registry.node_wg_key(node_id)) == wg_key
    assert registry.node_region(node_id) == "NL"
    assert registry.node_price(node_id) == 7
    assert token.balanceOf(operator) == before - stake
    assert token.balanceOf(registry) == stake
