"""The node's and client's chain ports against the real contracts on anvil."""

import os

import pytest
from eth_account import Account

from agents.chain import eip712
from agents.chain.bindings import ChannelStatus, WarrenContracts, node_id_of
from agents.chain.deploy import TOKEN, DeployParameters, deploy_all
from agents.client.chain import ClientChain
from agents.client.selection import eligible, list_candidates, rank
from agents.errors import UserError
from agents.node.chain import NodeChain

STAKE = 100 * TOKEN
PRICE = 2 * TOKEN
DEPOSIT = 5 * TOKEN


@pytest.fixture(scope="module")
def warren(project, chain, owner, operator, client, stranger, guardians):
    deployment = deploy_all(project, owner, chain, DeployParameters(guardians=[g.address for g in guardians]),
                            log=lambda _: None)
    contracts = WarrenContracts.at(project, deployment, chain.chain_id)
    for account in (operator, client, stranger):
        contracts.token.mint(account, 1_000 * TOKEN, sender=owner)
    return contracts


@pytest.fixture
def node(warren, operator):
    return NodeChain(warren, operator, os.urandom(32))


def test_ensure_registered__new__registers_then_unchanged_then_updates(warren, node):
    assert node.ensure_registered("NL", PRICE, STAKE) == "registered"
    info = warren.node(node.node_id)
    assert (info.region, info.price_per_gib, info.stake, info.active) == ("NL", PRICE, STAKE, True)
    assert node.ensure_registered("NL", PRICE, STAKE) == "unchanged"
    assert node.ensure_registered("DE", PRICE * 2, STAKE) == "updated"
    info = warren.node(node.node_id)
    assert (info.region, info.price_per_gib) == ("DE", PRICE * 2)


def test_ensure_registered__key_of_another_operator__plain_error(warren, node, stranger):
    node.ensure_registered("NL", PRICE, STAKE)
    squatter = NodeChain(warren, stranger, node.wg_public_key)
    with pytest.raises(UserError, match="is registered by"):
        squatter.ensure_registered("NL", PRICE, STAKE)


def test_ensure_registered__too_few_tokens__plain_error(warren, accounts):
    poor = accounts[9]  # has ETH for gas, holds no tokens
    with pytest.raises(UserError, match="registering the node .its stake. needs"):
        NodeChain(warren, poor, os.urandom(32)).ensure_registered("NL", PRICE, 10**30)


def test_channel_id_of__local__equals_contract(warren, node, client):
    signer = Account.create().address
    assert node.channel_id_of(node.node_id, client.address, signer) == \
        warren.channel_id_of(node.node_id, client.address, signer)


def test_client_opens_reuses_and_closes__node_signature_accepted(warren, node, client, tmp_path):
    node.ensure_registered("NL", PRICE, STAKE)
    port = ClientChain(warren, client, tmp_path)
    candidate = next(c for c in list_candidates(warren) if c.node.node_id == node.node_id)
    opened = port.open_channel(candidate, DEPOSIT)
    state = warren.channel(opened.channel_id)
    assert state.status is ChannelStatus.OPEN and state.node_id == node.node_id and state.deposit == DEPOSIT
    assert oct((tmp_path / "signers" / f"{opened.channel_id.hex()}.key").stat().st_mode & 0o777) == "0o600"
    assert opened.price_per_gib == PRICE  # the listing the contract bound the channel to
    node.ensure_registered("NL", PRICE * 3, STAKE)  # the node raises its price: not for this channel
    again = port.open_channel(candidate, DEPOSIT)
    assert again.channel_id == opened.channel_id and again.signer_key == opened.signer_key
    assert again.price_per_gib == PRICE

    receipt = eip712.Receipt(opened.channel_id, 1 << 20, PRICE // 1024)
    signature = eip712.sign(receipt, opened.signer_key, warren.chain_id, warren.channels.address)
    node_signature = node.sign_close(eip712.CooperativeClose(*receipt.__dict__.values()))
    before = int(warren.token.balanceOf(client))
    port.cooperative_close(opened, receipt, signature, node_signature)
    assert warren.channel(opened.channel_id).status is ChannelStatus.FINALISED
    assert int(warren.token.balanceOf(client)) == before + DEPOSIT - PRICE // 1024


def test_selection__drops_unbonding_and_ranks_reputable_cheap_first(warren, operator):
    cheap = NodeChain(warren, operator, os.urandom(32))
    dear = NodeChain(warren, operator, os.urandom(32))
    leaving = NodeChain(warren, operator, os.urandom(32))
    cheap.ensure_registered("SE", PRICE, STAKE)
    dear.ensure_registered("SE", PRICE * 4, STAKE)
    leaving.ensure_registered("SE", PRICE, STAKE)
    warren.registry.request_unbonding(leaving.node_id, sender=operator)
    found = eligible(list_candidates(warren), regions=("SE",))
    ids = [c.node.node_id for c in rank(found)]
    assert ids == [cheap.node_id, dear.node_id]
    assert [c.node.node_id for c in eligible(found, max_price=PRICE)] == [cheap.node_id]


def test_client_open__too_few_tokens__plain_error_before_any_gas(warren, node, accounts, tmp_path):
    node.ensure_registered("NL", PRICE, STAKE)
    poor = accounts[9]  # ETH for gas, no tokens
    candidate = next(c for c in list_candidates(warren) if c.node.node_id == node.node_id)
    nonce = poor.nonce
    with pytest.raises(UserError, match=rf"account {poor.address} has 0\.0000 tokens .*a channel with this budget .--budget. needs 5\.0000 tokens"):
        ClientChain(warren, poor, tmp_path).open_channel(candidate, DEPOSIT)
    assert poor.nonce == nonce


def test_sign_close__r_with_a_leading_zero_byte__still_65_bytes(warren):
    """ape builds a signature's r and s with to_bytes(int), dropping a leading zero byte (1 in 128);
    the close signature must keep its 65 bytes, or payment_channels refuses it."""
    from ape.types.signatures import MessageSignature

    class Signer:  # the operator account, returning a signature whose r lost its zero byte
        def sign_message(self, signable):
            return MessageSignature(v=27, r=b"\x01" * 31, s=b"\x02" * 32)

    node = NodeChain(warren, Signer(), os.urandom(32))
    signature = node.sign_close(eip712.CooperativeClose(b"\x03" * 32, 1, 1))
    assert signature == b"\x00" + b"\x01" * 31 + b"\x02" * 32 + bytes([27])
