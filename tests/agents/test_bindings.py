"""Typed bindings read the same state the contracts hold, and refuse another chain's deployment."""

import pytest
from eth_account import Account

from agents.chain import eip712
from agents.chain.bindings import ChannelStatus, WarrenContracts, node_id_of
from agents.chain.deploy import TOKEN, DeployParameters, deploy_all

STAKE = 100 * TOKEN
DEPOSIT = 5 * TOKEN
PRICE = 2 * TOKEN


@pytest.fixture(scope="module")
def warren(project, chain, owner, operator, client, guardians):
    """One deployment per module; the roles that act on it are set up first (ape's isolation wants
    session fixtures before module ones)."""
    deployment = deploy_all(
        project, owner, chain, DeployParameters(guardians=[g.address for g in guardians]), log=lambda _: None
    )
    return WarrenContracts.at(project, deployment, chain.chain_id)


@pytest.fixture
def registered(owner, operator, warren):
    wg_key = bytes(range(32))
    warren.token.mint(operator, STAKE, sender=owner)
    warren.token.approve(warren.registry, STAKE, sender=operator)
    warren.registry.register_node(wg_key, "NL", PRICE, STAKE, sender=operator)
    return wg_key


def test_node__reads_registration(operator, warren, registered):
    info = warren.node(node_id_of(registered))
    assert (info.operator, info.wg_public_key, info.region) == (operator.address, registered, "NL")
    assert (info.price_per_gib, info.stake, info.active, info.revoked) == (PRICE, STAKE, True, False)


def test_node__unknown_id__empty(warren):
    info = warren.node(b"\x07" * 32)
    assert int(info.operator, 16) == 0 and not info.active and info.stake == 0


def test_channel__open_then_settle__fields_follow(owner, operator, client, warren, registered):
    signer = Account.create()
    warren.token.mint(client, DEPOSIT, sender=owner)
    warren.token.approve(warren.channels, DEPOSIT, sender=client)
    node_id = node_id_of(registered)
    warren.channels.open_channel(node_id, client, signer.address, DEPOSIT, sender=client)
    channel_id = warren.channel_id_of(client.address, signer.address)

    state = warren.channel(channel_id)
    assert (state.node_id, state.client, state.deposit, state.status) == (
        node_id, client.address, DEPOSIT, ChannelStatus.OPEN)

    receipt = eip712.Receipt(channel_id, 1_000, TOKEN)
    warren.channels.settle(channel_id, 1_000, TOKEN, warren.sign(receipt, signer.key), sender=operator)
    state = warren.channel(channel_id)
    assert (state.settled, state.settled_bytes, state.remaining) == (TOKEN, 1_000, DEPOSIT - TOKEN)


def test_channel__never_opened__status_none(warren):
    assert warren.channel(b"\x01" * 32).status is ChannelStatus.NONE


def test_at__other_chain__refused(project, warren, chain):
    from agents.chain.deployment import Deployment

    deployment = Deployment(chain_id=chain.chain_id + 1, addresses={"warren_token": warren.token.address})
    with pytest.raises(ValueError, match="connected chain is"):
        WarrenContracts.at(project, deployment, chain.chain_id)


@pytest.mark.parametrize("length", [0, 31, 33])
def test_node_id_of__wrong_key_length__refused(length):
    with pytest.raises(ValueError, match="32 bytes"):
        node_id_of(b"\x00" * length)
