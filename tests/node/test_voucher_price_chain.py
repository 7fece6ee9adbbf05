"""A voucher channel is quoted the node's price when its pool opened it, not the node's price now.

A voucher-pool channel has no price on chain (the pool opens it for whoever redeems a note), so the
node reads its listing at the channel's opening: its last NodeRegistered/NodeUpdated before the
pool's Redeemed log. On anvil with deploy_all and a depth-2 pool on its own development key (real
Groth16 proofs, as tests/agents/test_deploy.py makes them); the session setup runs through the
node's runtime (:meth:`NodeAgent._setup`) as in test_autoprice_chain.py.
"""

import os
import time
import types

import pytest
from eth_account import Account

from agents.chain.bindings import WarrenContracts
from agents.chain.deploy import TOKEN, DeployParameters, deploy_all, voucher_pool_name
from agents.control import ControlKind, ControlReader, SessionRequest, SessionTerms, decode_json, encode_json, sign_request
from agents.metering import ReceiptLedger
from agents.node.agent import NodeAgent
from agents.node.chain import NodeChain
from agents.node.session import AddressPool, NodeOffer, voucher_channel_id
from agents.node.store import NodeStore

DEPTH = 2
STAKE = 100 * TOKEN
OLD_PRICE, NEW_PRICE = 10**15, 2 * 10**15


class Recorder:
    """A tunnel or exit stand-in: takes the runtime's actions, does nothing (they need namespaces)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class CountingChain(NodeChain):
    """The real chain port, counting its voucher price lookups."""

    lookups = 0

    def voucher_open_price(self, channel_id, pool):
        CountingChain.lookups += 1
        return super().voucher_open_price(channel_id, pool)


@pytest.fixture(scope="module")
def deployed(project, chain, owner, operator, client, guardians, tmp_path_factory):
    from zk.export import vk_to_json, write_json
    from zk.groth16 import setup_dev
    from zk.voucher import voucher_circuit

    circuit = voucher_circuit(DEPTH)
    pk, vk = setup_dev(circuit)
    vk_path = tmp_path_factory.mktemp("vk") / "vk.json"
    write_json(vk_path, vk_to_json(vk))
    params = DeployParameters(guardians=[g.address for g in guardians], voucher_depth=DEPTH,
                              voucher_vk=str(vk_path), voucher_denominations=[TOKEN])
    deployment = deploy_all(project, owner, chain, params, log=lambda _: None)
    contracts = WarrenContracts.at(project, deployment, chain.chain_id)
    pool = deployment.address(voucher_pool_name(TOKEN))
    for account in (operator, client):
        contracts.token.mint(account, 1_000 * TOKEN, sender=owner)
    return types.SimpleNamespace(contracts=contracts, block=deployment.block, pool=pool, circuit=circuit, pk=pk,
                                 binding=contracts.voucher_channels(project, pool))


@pytest.fixture
def node(deployed, operator, tmp_path):
    port = CountingChain(deployed.contracts, operator, os.urandom(32), start_block=deployed.block,
                         voucher_pools={deployed.pool: deployed.binding})
    store = NodeStore(tmp_path / "node.db")
    deployed.notes = []  # the pool's leaves in this test (each test's deposits are reverted after it)
    yield types.SimpleNamespace(chain=port, store=store)
    store.close()


def _redeem(deployed, node_id, client, operator):
    """Deposit a fresh note and redeem it (operator as relayer) into a channel to ``node_id``:
    (channel id, payment signer, deposit)."""
    from zk.export import proof_calldata
    from zk.groth16 import prove
    from zk.merkle import LeanIMT
    from zk.voucher import Note, ext_data_hash, voucher_inputs

    pool = deployed.binding.pool
    note = Note(nullifier=int.from_bytes(os.urandom(16), "big"), secret=int.from_bytes(os.urandom(16), "big"))
    deployed.contracts.token.approve(pool.address, TOKEN, sender=client)
    pool.deposit(note.commitment, TOKEN, sender=client)
    deployed.notes.append(note.commitment)
    tree = LeanIMT()
    for commitment in deployed.notes:
        tree.insert(commitment)
    signer = Account.create()
    inputs = voucher_inputs(note, tree.proof(len(deployed.notes) - 1), ext_data_hash(node_id, signer.address, 0),
                            DEPTH)
    proof = proof_calldata(prove(deployed.pk, deployed.circuit, deployed.circuit.witness(inputs)))
    pool.redeem(proof, tree.root, note.nullifier_hash, node_id, signer.address, 0, sender=operator)
    return voucher_channel_id(deployed.contracts.chain_id, deployed.pool, note.nullifier_hash), signer, TOKEN


def _agent(node, deployed, price):
    contracts = deployed.contracts

    def ledger_for(terms, voucher=None):  # as agents/node/service.py stores them
        if voucher is None:
            node.store.upsert_channel(terms)
        else:
            node.store.upsert_channel(terms, kind="voucher", pool=voucher.pool, voucher_terms=voucher.to_json())
        return ReceiptLedger(terms, node.store.receipt_store(terms.channel_id))

    offer = NodeOffer(node_id=node.chain.node_id, chain_id=contracts.chain_id,
                      channels_address=str(contracts.channels.address), price_per_gib=price,
                      voucher_pools=(deployed.pool,))
    agent = NodeAgent(tunnel_factory=None, chain=node.chain, offer=offer, pool=AddressPool("10.78.0.0/16", "fd78::/64"),
                      ledger_for=ledger_for, exit_table=Recorder(), store=node.store, private_key=b"\x01" * 32,
                      listen_port=0)
    agent.tunnel = Recorder()
    return agent


def _setup(agent, deployed, channel_id, signer, deposit):
    """One voucher SESSION_REQUEST through the node's runtime; the SESSION_ACCEPT's terms."""
    wg_key = os.urandom(32)
    assert agent.core.admit_unknown(wg_key, time.monotonic())
    request = SessionRequest(channel_id, agent.offer.node_id, wg_key, int(time.time()), os.urandom(32))
    signature = sign_request(request, signer.key, deployed.contracts.chain_id, deployed.pool)
    body = request.to_wire(signature, signer=signer.address, pool=deployed.pool, voucher_deposit=deposit)
    [frame] = ControlReader().feed(encode_json(ControlKind.SESSION_REQUEST, body))
    [reply] = ControlReader().feed(agent._setup(wg_key, frame))
    assert reply.kind is ControlKind.SESSION_ACCEPT, decode_json(reply)
    return SessionTerms.from_wire(decode_json(reply))


def test_voucher_channel__opened_before_a_rise__quoted_its_open_price__new_one_the_new_price(
        node, deployed, chain, client, operator):
    contracts = deployed.contracts
    node.chain.ensure_registered("DE", OLD_PRICE, STAKE)
    old = _redeem(deployed, node.chain.node_id, client, operator)
    assert node.chain.voucher_open_price(old[0], deployed.pool) == OLD_PRICE
    assert node.chain.voucher_open_price(os.urandom(32), deployed.pool) is None  # never redeemed

    # The next epoch: the listing rises (once per epoch), and the node offers the new price.
    length = int(contracts.registry.update_epoch_length())
    chain.mine(timestamp=(chain.pending_timestamp // length + 1) * length + 5)
    node.chain.update_price("DE", NEW_PRICE)
    assert contracts.node(node.chain.node_id).price_per_gib == NEW_PRICE
    agent = _agent(node, deployed, NEW_PRICE)

    # The channel redeemed before the rise is quoted the price it opened at (one lookup, then stored).
    CountingChain.lookups = 0
    terms = _setup(agent, deployed, *old)
    assert terms.price_per_gib == OLD_PRICE and CountingChain.lookups == 1
    stored = node.store.channel(old[0])
    assert stored.kind == "voucher" and stored.terms.price_per_gib == OLD_PRICE

    # A channel redeemed after the rise is quoted the new price.
    new = _redeem(deployed, node.chain.node_id, client, operator)
    assert _setup(agent, deployed, *new).price_per_gib == NEW_PRICE

    # A restarted node (a new runtime on the same store) quotes the old channel from its stored terms.
    restarted = _agent(node, deployed, NEW_PRICE)
    CountingChain.lookups = 0
    assert _setup(restarted, deployed, *old).price_per_gib == OLD_PRICE and CountingChain.lookups == 0


def test_voucher_open_price__another_nodes_channel_or_foreign_pool__none(node, deployed, client, operator):
    node.chain.ensure_registered("DE", OLD_PRICE, STAKE)
    other_node = os.urandom(32)
    channel_id, _, _ = _redeem(deployed, other_node, client, operator)
    assert node.chain.voucher_open_price(channel_id, deployed.pool) is None
    assert node.chain.voucher_open_price(channel_id, "0x" + "ee" * 20) is None
