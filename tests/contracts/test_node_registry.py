"""node_registry: registration, stake, unbonding, slashing and revocation on a real anvil chain."""

import os

import ape
import pytest
from eth_utils import keccak


def _unbond_and_wait(registry, chain, node_id, operator):
    tx = registry.request_unbonding(node_id, sender=operator)
    unbond_at = tx.decode_logs(registry.NodeUnbondingRequested)[0].unbond_at
    chain.pending_timestamp = unbond_at
    return unbond_at


# --- registration -------------------------------------------------------------------------------


def test_register_node__records_node_pulls_stake_and_logs(registry, token, operator):
    stake = registry.min_node_stake()
    before = token.balanceOf(operator)
    wg_key = bytes(range(32))
    token.approve(registry, stake, sender=operator)
    tx = registry.register_node(wg_key, "NL", 7, stake, sender=operator)

    node_id = keccak(wg_key)
    assert bytes(tx.return_value) == node_id
    assert registry.node_operator(node_id) == operator
    assert registry.node_stake(node_id) == stake
    assert registry.is_active(node_id)
    assert bytes(registry.node_wg_key(node_id)) == wg_key
    assert registry.node_region(node_id) == "NL"
    assert registry.node_price(node_id) == 7
    assert token.balanceOf(operator) == before - stake
    assert token.balanceOf(registry) == stake
    [log] = tx.decode_logs(registry.NodeRegistered)
    assert bytes(log.node_id) == node_id
    assert log.operator == operator
    assert bytes(log.wg_public_key) == wg_key
    assert (log.region, log.price_per_gib, log.stake, log.node_index) == ("NL", 7, stake, 1)


def test_register_node__below_minimum_stake__reverts(registry, token, operator):
    stake = registry.min_node_stake() - 1
    token.approve(registry, stake, sender=operator)
    with ape.reverts("node_registry: stake below minimum"):
        registry.register_node(os.urandom(32), "DE", 1, stake, sender=operator)


def test_register_node__zero_stake__reverts(registry, operator):
    with ape.reverts("node_registry: stake below minimum"):
        registry.register_node(os.urandom(32), "DE", 1, 0, sender=operator)


@pytest.mark.parametrize("region", ["", "D", "de", "D1", "@Z"])
def test_register_node__bad_region__reverts(registry, token, operator, region):
    stake = registry.min_node_stake()
    token.approve(registry, stake, sender=operator)
    with ape.reverts("node_registry: bad region"):
        registry.register_node(os.urandom(32), region, 1, stake, sender=operator)


def test_register_node__empty_key__reverts(registry, operator):
    with ape.reverts("node_registry: empty key"):
        registry.register_node(b"\x00" * 32, "DE", 1, registry.min_node_stake(), sender=operator)


def test_register_node__same_key_twice__reverts(register_node, stranger):
    wg_key = os.urandom(32)
    register_node(wg_key=wg_key)
    with ape.reverts("node_registry: already registered"):
        register_node(sender=stranger, wg_key=wg_key)


def test_register_node__without_allowance__reverts_in_token(registry, operator):
    with ape.reverts("erc20: insufficient allowance"):
        registry.register_node(os.urandom(32), "DE", 1, registry.min_node_stake(), sender=operator)


def test_register_node__extreme_region_and_price__read_back(registry, register_node):
    node_id = register_node(region="ZZ", price_per_gib=2**240 - 1)
    assert (registry.node_region(node_id), registry.node_price(node_id)) == ("ZZ", 2**240 - 1)
    node_id = register_node(region="AA", price_per_gib=0)
    assert (registry.node_region(node_id), registry.node_price(node_id)) == ("AA", 0)


def test_register_node__price_above_240_bits__reverts(registry, token, operator):
    token.approve(registry, registry.min_node_stake(), sender=operator)
    with ape.reverts("node_registry: price too high"):
        registry.register_node(os.urandom(32), "DE", 2**240, registry.min_node_stake(), sender=operator)


def test_update_node__price_above_240_bits_or_bad_region__reverts(registry, operator, node_id):
    with ape.reverts("node_registry: price too high"):
        registry.update_node(node_id, "DE", 2**240, sender=operator)
    with ape.reverts("node_registry: bad region"):
        registry.update_node(node_id, "De", 1, sender=operator)


def test_views__unknown_node__empty(registry):
    node_id = os.urandom(32)
    assert registry.node_operator(node_id) == ape.utils.ZERO_ADDRESS
    assert (registry.node_region(node_id), registry.node_price(node_id), registry.node_stake(node_id)) == ("", 0, 0)
    assert bytes(registry.node_wg_key(node_id)) == bytes(32)
    assert bytes(registry.node_id_at(registry.node_count() + 1)) == bytes(32)
    assert not registry.is_active(node_id)


def test_update_node__operator_changes_region_and_price(registry, operator, node_id):
    tx = registry.update_node(node_id, "FR", 99, sender=operator)
    assert (registry.node_region(node_id), registry.node_price(node_id)) == ("FR", 99)
    [log] = tx.decode_logs(registry.NodeUpdated)
    assert (bytes(log.node_id), log.region, log.price_per_gib) == (node_id, "FR", 99)


def test_update_node__not_operator__reverts(registry, stranger, node_id):
    with ape.reverts("node_registry: not the operator"):
        registry.update_node(node_id, "FR", 99, sender=stranger)


def test_update_node__unknown_node__reverts(registry, operator):
    with ape.reverts("node_registry: unknown node"):
        registry.update_node(os.urandom(32), "FR", 99, sender=operator)


# --- stake and unbonding ------------------------------------------------------------------------


def test_increase_stake__adds_and_logs(registry, token, operator, node_id):
    stake = registry.node_stake(node_id)
    token.approve(registry, 5, sender=operator)
    tx = registry.increase_stake(node_id, 5, sender=operator)
    assert registry.node_stake(node_id) == stake + 5
    [log] = tx.decode_logs(registry.NodeStakeIncreased)
    assert (log.amount, log.stake) == (5, stake + 5)


def test_increase_stake__zero__reverts(registry, operator, node_id):
    with ape.reverts("node_registry: zero amount"):
        registry.increase_stake(node_id, 0, sender=operator)


def test_increase_stake__while_unbonding__reverts(registry, token, operator, node_id):
    registry.request_unbonding(node_id, sender=operator)
    token.approve(registry, 5, sender=operator)
    with ape.reverts("node_registry: unbonding"):
        registry.increase_stake(node_id, 5, sender=operator)


def test_request_unbonding__deactivates_and_logs(registry, operator, node_id, chain):
    tx = registry.request_unbonding(node_id, sender=operator)
    [log] = tx.decode_logs(registry.NodeUnbondingRequested)
    assert log.unbond_at == tx.timestamp + registry.unbonding_delay()
    assert not registry.is_active(node_id)
    assert registry.node_operator(node_id) == operator  # still registered, still slashable
    with ape.reverts("node_registry: unbonding"):
        registry.request_unbonding(node_id, sender=operator)


def test_request_unbonding__not_operator__reverts(registry, stranger, node_id):
    with ape.reverts("node_registry: not the operator"):
        registry.request_unbonding(node_id, sender=stranger)


def test_withdraw_stake__without_request__reverts(registry, operator, node_id):
    with ape.reverts("node_registry: not unbonding"):
        registry.withdraw_stake(node_id, sender=operator)


def test_withdraw_stake__one_second_early__reverts(registry, operator, node_id, chain):
    unbond_at = _unbond_and_wait(registry, chain, node_id, operator)
    chain.pending_timestamp = unbond_at - 1
    with ape.reverts("node_registry: unbonding not over"):
        registry.withdraw_stake(node_id, sender=operator)


def test_withdraw_stake__at_delay__pays_deregisters_and_logs(registry, token, operator, node_id, chain):
    stake = registry.node_stake(node_id)
    before = token.balanceOf(operator)
    _unbond_and_wait(registry, chain, node_id, operator)
    tx = registry.withdraw_stake(node_id, sender=operator)
    assert token.balanceOf(operator) == before + stake
    assert registry.node_operator(node_id) == ape.utils.ZERO_ADDRESS
    assert registry.node_stake(node_id) == 0
    [log] = tx.decode_logs(registry.NodeStakeWithdrawn)
    assert (bytes(log.node_id), log.operator, log.amount) == (node_id, operator, stake)


def test_withdraw_stake__key_may_register_again_with_new_index(registry, operator, register_node, chain):
    wg_key = os.urandom(32)
    node_id = register_node(wg_key=wg_key)
    first = registry.node_index(node_id)
    _unbond_and_wait(registry, chain, node_id, operator)
    registry.withdraw_stake(node_id, sender=operator)
    assert register_node(wg_key=wg_key) == node_id
    assert registry.node_index(node_id) > first
    assert registry.is_active(node_id)
    # The old registration still names its node (payment_channels' channel view reads it).
    assert bytes(registry.node_id_at(first)) == node_id


# --- challengers --------------------------------------------------------------------------------


def test_register_challenger__stakes_and_logs(registry, token, challenger):
    stake = registry.min_challenger_stake()
    token.approve(registry, stake, sender=challenger)
    tx = registry.register_challenger(stake, sender=challenger)
    assert registry.is_challenger(challenger)
    assert registry.challenger_stake(challenger) == stake
    [log] = tx.decode_logs(registry.ChallengerRegistered)
    assert (log.challenger, log.stake) == (challenger, stake)
    with ape.reverts("node_registry: already challenger"):
        registry.register_challenger(stake, sender=challenger)


def test_register_challenger__below_minimum__reverts(registry, challenger):
    with ape.reverts("node_registry: stake below minimum"):
        registry.register_challenger(registry.min_challenger_stake() - 1, sender=challenger)


def test_challenger_unbonding__withdraws_after_delay_only(registry, token, challenger, chain):
    stake = registry.min_challenger_stake()
    token.approve(registry, stake, sender=challenger)
    registry.register_challenger(stake, sender=challenger)
    before = token.balanceOf(challenger)
    with ape.reverts("node_registry: not unbonding"):
        registry.withdraw_challenger_stake(sender=challenger)
    tx = registry.request_challenger_unbonding(sender=challenger)
    unbond_at = tx.decode_logs(registry.ChallengerUnbondingRequested)[0].unbond_at
    assert not registry.is_challenger(challenger)
    chain.pending_timestamp = unbond_at - 1
    with ape.reverts("node_registry: unbonding not over"):
        registry.withdraw_challenger_stake(sender=challenger)
    chain.pending_timestamp = unbond_at
    tx = registry.withdraw_challenger_stake(sender=challenger)
    assert token.balanceOf(challenger) == before + stake
    assert tx.decode_logs(registry.ChallengerStakeWithdrawn)[0].amount == stake


def test_request_challenger_unbonding__not_challenger__reverts(registry, stranger):
    with ape.reverts("node_registry: not a challenger"):
        registry.request_challenger_unbonding(sender=stranger)


def test_request_challenger_unbonding__twice__reverts(registry, token, challenger):
    stake = registry.min_challenger_stake()
    token.approve(registry, stake, sender=challenger)
    registry.register_challenger(stake, sender=challenger)
    registry.request_challenger_unbonding(sender=challenger)
    with ape.reverts("node_registry: unbonding"):
        registry.request_challenger_unbonding(sender=challenger)
    with ape.reverts("node_registry: not a challenger"):
        registry.increase_challenger_stake(1, sender=challenger)


# --- slashing -----------------------------------------------------------------------------------


def test_slash__authorised__takes_amount_and_logs(registry, token, slasher, treasury, node_id):
    stake = registry.node_stake(node_id)
    before = token.balanceOf(treasury)
    tx = registry.slash(node_id, 10, treasury, sender=slasher)
    assert tx.return_value == 10
    assert registry.node_stake(node_id) == stake - 10
    assert token.balanceOf(treasury) == before + 10
    [log] = tx.decode_logs(registry.NodeSlashed)
    assert (bytes(log.node_id), log.slasher, log.recipient, log.amount) == (node_id, slasher, treasury, 10)


def test_slash__larger_than_stake__takes_only_the_stake(registry, token, slasher, treasury, node_id):
    stake = registry.node_stake(node_id)
    before = token.balanceOf(treasury)
    tx = registry.slash(node_id, stake * 10, treasury, sender=slasher)
    assert tx.return_value == stake
    assert registry.node_stake(node_id) == 0
    assert token.balanceOf(treasury) == before + stake
    assert tx.decode_logs(registry.NodeSlashed)[0].amount == stake
    again = registry.slash(node_id, 1, treasury, sender=slasher)
    assert again.return_value == 0


def test_slash__unauthorised_caller__reverts(registry, operator, treasury, node_id):
    with ape.reverts("node_registry: not a slasher"):
        registry.slash(node_id, 1, treasury, sender=operator)


def test_slash__slasher_removed__reverts(registry, owner, slasher, treasury, node_id):
    registry.set_slasher(slasher, False, sender=owner)
    with ape.reverts("node_registry: not a slasher"):
        registry.slash(node_id, 1, treasury, sender=slasher)


def test_set_slasher__not_owner__reverts(registry, stranger):
    with ape.reverts("ownable: caller is not the owner"):
        registry.set_slasher(stranger, True, sender=stranger)


def test_slash__during_unbonding__still_takes_stake(registry, operator, slasher, treasury, node_id):
    registry.request_unbonding(node_id, sender=operator)
    assert registry.slash(node_id, 7, treasury, sender=slasher).return_value == 7


def test_slash__after_unbonding_completed__reverts(registry, operator, slasher, treasury, node_id, chain):
    _unbond_and_wait(registry, chain, node_id, operator)
    registry.withdraw_stake(node_id, sender=operator)
    with ape.reverts("node_registry: unknown node"):
        registry.slash(node_id, 1, treasury, sender=slasher)


def test_slash__zero_recipient__reverts(registry, slasher, node_id):
    with ape.reverts("node_registry: zero recipient"):
        registry.slash(node_id, 1, ape.utils.ZERO_ADDRESS, sender=slasher)


def test_slash_challenger__takes_at_most_stake(registry, token, slasher, challenger, treasury):
    stake = registry.min_challenger_stake()
    token.approve(registry, stake, sender=challenger)
    registry.register_challenger(stake, sender=challenger)
    tx = registry.slash_challenger(challenger, stake + 1, treasury, sender=slasher)
    assert tx.return_value == stake
    assert not registry.is_challenger(challenger)
    assert tx.decode_logs(registry.ChallengerSlashed)[0].amount == stake


def test_slash__below_minimum__node_inactive_until_topped_up(
    registry, channels, token, slasher, treasury, operator, client, signer, node_id
):
    # A node slashed below the minimum stake takes no new channels until it tops its stake up.
    registry.slash(node_id, 1, treasury, sender=slasher)
    assert not registry.is_active(node_id)
    assert tuple(registry.node_ref(node_id))[1] is False
    with ape.reverts("payment_channels: node not active"):
        channels.open_channel(node_id, client, signer, 1, sender=client)
    token.approve(registry, 1, sender=operator)
    registry.increase_stake(node_id, 1, sender=operator)
    assert registry.is_active(node_id)


def test_slash_challenger__below_minimum__not_a_challenger_until_topped_up(
    registry, token, slasher, challenger, treasury
):
    stake = registry.min_challenger_stake()
    token.approve(registry, stake + 1, sender=challenger)
    registry.register_challenger(stake, sender=challenger)
    registry.slash_challenger(challenger, 1, treasury, sender=slasher)
    assert not registry.is_challenger(challenger)
    registry.increase_challenger_stake(1, sender=challenger)
    assert registry.is_challenger(challenger)
    assert registry.challenger_stake(challenger) == stake


# --- revocation ---------------------------------------------------------------------------------


def test_revoke__takes_whole_stake_marks_revoked_and_logs(registry, token, revoker, treasury, node_id):
    stake = registry.node_stake(node_id)
    before = token.balanceOf(treasury)
    tx = registry.revoke(node_id, treasury, sender=revoker)
    assert tx.return_value == stake
    assert registry.is_revoked(node_id)
    assert not registry.is_active(node_id)
    assert registry.node_stake(node_id) == 0
    assert token.balanceOf(treasury) == before + stake
    [log] = tx.decode_logs(registry.NodeRevoked)
    assert (bytes(log.node_id), log.recipient, log.amount) == (node_id, treasury, stake)


def test_revoke__not_revoker__reverts(registry, revoker, owner, treasury, node_id):
    with ape.reverts("node_registry: not the revoker"):
        registry.revoke(node_id, treasury, sender=owner)


def test_revoke__no_revoker_set__reverts(registry, stranger, treasury, node_id):
    with ape.reverts("node_registry: not the revoker"):
        registry.revoke(node_id, treasury, sender=stranger)


def test_revoke__twice__reverts(registry, revoker, treasury, node_id):
    registry.revoke(node_id, treasury, sender=revoker)
    with ape.reverts("node_registry: already revoked"):
        registry.revoke(node_id, treasury, sender=revoker)


def test_register_node__revoked_key__reverts(registry, revoker, treasury, register_node, stranger):
    wg_key = os.urandom(32)
    node_id = register_node(wg_key=wg_key)
    registry.revoke(node_id, treasury, sender=revoker)
    with ape.reverts("node_registry: key revoked"):
        register_node(sender=stranger, wg_key=wg_key)


def test_revoke__unregistered_key__blocks_future_registration(registry, revoker, treasury, register_node):
    wg_key = os.urandom(32)
    assert registry.revoke(keccak(wg_key), treasury, sender=revoker).return_value == 0
    with ape.reverts("node_registry: key revoked"):
        register_node(wg_key=wg_key)


def test_revoked_node__cannot_unbond_withdraw_or_update(registry, revoker, operator, treasury, node_id):
    registry.revoke(node_id, treasury, sender=revoker)
    with ape.reverts("node_registry: key revoked"):
        registry.update_node(node_id, "FR", 1, sender=operator)
    with ape.reverts("node_registry: key revoked"):
        registry.request_unbonding(node_id, sender=operator)
    with ape.reverts("node_registry: key revoked"):
        registry.withdraw_stake(node_id, sender=operator)
