"""``price_per_gib = "auto"`` against the real contracts on anvil: the node's listing follows its utilisation
once per epoch within its bounds, and every channel is quoted the price it was opened at.

Only the clock is a fake (the node's and its store's unix time, kept in step with the chain's blocks
by mining at the same times). The session setup runs through the node's own runtime
(:meth:`NodeAgent._setup`), whose tunnel and exit are recorders: they need namespaces, and nothing
here depends on them.
"""

import os
import time
import types

import pytest
from eth_account import Account

from agents.chain.bindings import WarrenContracts
from agents.chain.deploy import TOKEN, DeployParameters, deploy_all
from agents.chain.eip712 import Receipt
from agents.control import ControlKind, ControlReader, SessionRequest, SessionTerms, decode_json, encode_json, sign_request
from agents.metering import AcceptedReceipt, ChannelTerms, ReceiptLedger, ReceiptSigner
from agents.node.agent import NodeAgent
from agents.node.autoprice import AutoPrice
from agents.node.chain import NodeChain, PriceUpdateRefused
from agents.node.pricing import AutoPricer, PriceRule, capacity_bytes
from agents.node.session import AddressPool, NodeOffer
from agents.node.store import NodeStore

STAKE, DEPOSIT = 100 * TOKEN, 5 * TOKEN
FLOOR = 10**15
CEILING = 12 * FLOOR // 10
CAPACITY_MBPS = 0.08  # 10,000 bytes a second: a day's capacity is 864 MB of receipts


class Clock:
    """The node's unix time (a fake the test moves with the chain)."""

    def __init__(self, now: float) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def deployed(project, chain, owner, operator, client, guardians):
    deployment = deploy_all(project, owner, chain, DeployParameters(guardians=[g.address for g in guardians],
                                                                    voucher_denominations=[]), log=lambda _: None)
    contracts = WarrenContracts.at(project, deployment, chain.chain_id)
    for account in (operator, client):
        contracts.token.mint(account, 1_000 * TOKEN, sender=owner)
    return types.SimpleNamespace(contracts=contracts, block=deployment.block)


@pytest.fixture
def epoch_start(deployed, chain):
    """A fresh epoch's first second, with the chain's head there (ten epochs on: clear of earlier tests)."""
    length = int(deployed.contracts.registry.update_epoch_length())
    start = (chain.pending_timestamp // length + 10) * length
    chain.mine(timestamp=start)
    return start


@pytest.fixture
def node(deployed, operator, tmp_path, epoch_start):
    clock = Clock(epoch_start)
    port = NodeChain(deployed.contracts, operator, os.urandom(32), start_block=deployed.block)
    store = NodeStore(tmp_path / "node.db", clock=clock)
    yield types.SimpleNamespace(chain=port, store=store, clock=clock)
    store.close()


def _at(chain, clock, when):
    """Move the node's clock and the chain's head to unix time ``when``."""
    clock.now = float(when)
    chain.mine(timestamp=int(when))


def _carry(store, channel_id, cumulative_bytes, price=FLOOR):
    """A receipt stored now (the store's clock): the node carried up to ``cumulative_bytes`` on the channel."""
    terms = ChannelTerms(channel_id, "0x" + "22" * 20, DEPOSIT, price, 1 << 20, 1, "0x" + "11" * 20)
    store.upsert_channel(terms)
    store.receipt_store(channel_id).append(AcceptedReceipt(
        Receipt(channel_id, cumulative_bytes, -(-cumulative_bytes * price // (1 << 30))), b"\x00" * 65,
        cumulative_bytes))


def test_auto_price__full_fuller_idle__up_ceiling_floor_at_most_once_per_epoch(node, deployed, chain, epoch_start,
                                                                                caplog):
    contracts, length = deployed.contracts, node.chain.price_epoch_s()
    assert length == int(contracts.registry.update_epoch_length()) > 0
    rule = PriceRule(FLOOR, CEILING, CAPACITY_MBPS)
    start = node.chain.auto_start_price(FLOOR, CEILING)
    assert start == FLOOR  # not registered yet: the floor
    assert node.chain.ensure_registered("DE", start, STAKE) == "registered"
    offered = []
    auto = AutoPrice(AutoPricer(rule, length, node.clock()), node.chain, node.store, "DE", offered.append)
    day = capacity_bytes(CAPACITY_MBPS, length)
    channel = os.urandom(32)
    caplog.set_level("INFO", logger="warren.node")

    listed = []
    carried = 0
    for epoch, share in enumerate((0.9, 1.5, 0.0, 0.0)):
        _at(chain, node.clock, epoch_start + epoch * length + 600)
        carried += int(share * day)
        if share:
            _carry(node.store, channel, carried)
        assert auto.step(node.clock()) is None  # mid-epoch: nothing due
        _at(chain, node.clock, epoch_start + (epoch + 1) * length + 5)
        proposal = auto.step(node.clock())
        assert proposal is not None and proposal.window.epoch == epoch_start // length + epoch
        listed.append(contracts.node(node.chain.node_id).price_per_gib)
        assert offered[-1] == listed[-1]
        # at most once per epoch: the pricer does not decide again, and the registry would refuse
        assert auto.step(node.clock() + 60) is None
        if proposal.changed:
            with pytest.raises(PriceUpdateRefused, match="^node_registry: updated this epoch$"):
                node.chain.update_price("DE", listed[-1] + 1)

    # 90 %: +10 %; 150 % counts as full: +15 %, held at the ceiling; idle: -35 %, held at the floor; idle again: stays
    assert listed == [1_100_000_000_000_001, CEILING, FLOOR, FLOOR]
    assert all(FLOOR <= price <= CEILING for price in listed)
    assert f"auto price: {FLOOR} -> 1100000000000001 token wei/GiB after epoch {epoch_start // length}: " \
           f"utilisation 90.0% ({int(0.9 * day)} of {day} bytes; target 70%): up to 1100000000000001" in caplog.text
    assert "utilisation 0.0%" in caplog.text and "the price stays" in caplog.text


def test_auto_price__listing_changed_elsewhere_this_epoch__refused_logged_next_epoch_moves(node, deployed, chain,
                                                                                         epoch_start, caplog):
    length = node.chain.price_epoch_s()
    node.chain.ensure_registered("DE", FLOOR, STAKE)
    offered = []
    auto = AutoPrice(AutoPricer(PriceRule(FLOOR, CEILING, CAPACITY_MBPS), length, node.clock()), node.chain,
                     node.store, "DE", offered.append)
    _carry(node.store, os.urandom(32), capacity_bytes(CAPACITY_MBPS, length))
    _at(chain, node.clock, epoch_start + length + 5)
    by_hand = 11 * FLOOR // 10
    node.chain.update_price("DE", by_hand)  # the operator, by hand, in the new epoch
    proposal = auto.step(node.clock())  # never raises
    assert proposal.changed and offered == [by_hand]
    assert deployed.contracts.node(node.chain.node_id).price_per_gib == by_hand
    assert "the registry refused" in caplog.text and "(node_registry: updated this epoch): the next epoch decides " \
                                                      "again" in caplog.text
    assert auto.status()["last"]["outcome"] == "refused: node_registry: updated this epoch"
    assert auto.step(node.clock() + 3600) is None
    _at(chain, node.clock, epoch_start + 2 * length + 5)
    assert auto.step(node.clock()).changed  # an idle epoch: down to the floor
    assert deployed.contracts.node(node.chain.node_id).price_per_gib == FLOOR == offered[-1]


def test_auto_start_price__registered_outside_the_bounds__clamped_into_them(node):
    node.chain.ensure_registered("DE", 5 * CEILING, STAKE)
    assert node.chain.auto_start_price(FLOOR, CEILING) == CEILING
    assert node.chain.auto_start_price(10 * CEILING, 20 * CEILING) == 10 * CEILING


# -- quoting: each channel its open price --------------------------------------------------------------

class Recorder:
    """A tunnel or exit stand-in: takes the runtime's actions, does nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _agent(node, deployed, price):
    contracts = deployed.contracts

    def ledger_for(terms, voucher=None):
        node.store.upsert_channel(terms)
        return ReceiptLedger(terms, node.store.receipt_store(terms.channel_id))

    offer = NodeOffer(node_id=node.chain.node_id, chain_id=contracts.chain_id,
                      channels_address=str(contracts.channels.address), price_per_gib=price)
    agent = NodeAgent(tunnel_factory=None, chain=node.chain, offer=offer, pool=AddressPool("10.77.0.0/16", "fd77::/64"),
                      ledger_for=ledger_for, exit_table=Recorder(), store=node.store, private_key=b"\x01" * 32,
                      listen_port=0)
    agent.tunnel = Recorder()
    return agent


def _open(deployed, node, client):
    contracts, signer = deployed.contracts, Account.create()
    contracts.token.approve(contracts.channels.address, DEPOSIT, sender=client)
    contracts.channels.open_channel(node.chain.node_id, client, signer.address, DEPOSIT, sender=client)
    return signer, contracts.channel_id_of(node.chain.node_id, client.address, signer.address)


def _setup(agent, deployed, client, signer, channel_id):
    """One SESSION_REQUEST through the node's runtime; the SESSION_ACCEPT's terms."""
    wg_key = os.urandom(32)
    assert agent.core.admit_unknown(wg_key, time.monotonic())
    request = SessionRequest(channel_id, agent.offer.node_id, wg_key, int(time.time()), os.urandom(32))
    signature = sign_request(request, signer.key, deployed.contracts.chain_id, str(deployed.contracts.channels.address))
    body = request.to_wire(signature, client=client.address, signer=signer.address)
    [frame] = ControlReader().feed(encode_json(ControlKind.SESSION_REQUEST, body))
    [reply] = ControlReader().feed(agent._setup(wg_key, frame))
    assert reply.kind is ControlKind.SESSION_ACCEPT, decode_json(reply)
    return wg_key, SessionTerms.from_wire(decode_json(reply))


class CountingChain(NodeChain):
    """The real chain port, counting its ChannelOpened lookups."""

    lookups = 0

    def open_price(self, channel_id):
        CountingChain.lookups += 1
        return super().open_price(channel_id)


def test_session__channel_opened_before_a_rise__quoted_its_open_price__new_channel_the_new_one(
        node, deployed, chain, client, operator, epoch_start):
    contracts, length = deployed.contracts, node.chain.price_epoch_s()
    node.chain = CountingChain(contracts, operator, node.chain.wg_public_key, start_block=deployed.block)
    node.chain.ensure_registered("DE", FLOOR, STAKE)
    offered = []
    agent = _agent(node, deployed, FLOOR)
    auto = AutoPrice(AutoPricer(PriceRule(FLOOR, CEILING, CAPACITY_MBPS), length, node.clock()), node.chain,
                     node.store, "DE", lambda price: (offered.append(price), agent.set_price(price)))
    old_signer, old_channel = _open(deployed, node, client)
    assert node.chain.open_price(old_channel) == FLOOR and node.chain.open_price(os.urandom(32)) is None

    # A full epoch: the price rises; the node offers it from then on.
    _carry(node.store, os.urandom(32), capacity_bytes(CAPACITY_MBPS, length))
    _at(chain, node.clock, epoch_start + length + 5)
    risen = auto.step(node.clock()).new_price
    assert risen > FLOOR and contracts.node(node.chain.node_id).price_per_gib == risen == agent.offer.price_per_gib

    # The channel opened before the rise is quoted the price it opened at, and pays at it.
    CountingChain.lookups = 0
    wg_key, terms = _setup(agent, deployed, client, old_signer, old_channel)
    assert terms.price_per_gib == FLOOR and CountingChain.lookups == 1
    assert node.store.channel(old_channel).terms.price_per_gib == FLOOR
    signer = ReceiptSigner(agent.core.sessions[wg_key].ledger.terms, old_signer.key)
    agent.core.update_billed(wg_key, 1 << 20, time.monotonic())
    receipt, signature = signer.sign(1 << 20)
    assert agent.core.on_receipt(wg_key, receipt, signature, time.monotonic())[0].accepted

    # A channel opened after the rise is quoted the new price.
    new_signer, new_channel = _open(deployed, node, client)
    _, terms = _setup(agent, deployed, client, new_signer, new_channel)
    assert terms.price_per_gib == risen

    # A restarted node (a new runtime on the same store) quotes the old channel from its stored terms:
    # no second log query.
    restarted = _agent(node, deployed, risen)
    CountingChain.lookups = 0
    _, terms = _setup(restarted, deployed, client, old_signer, old_channel)
    assert terms.price_per_gib == FLOOR and terms.paid_bytes == 1 << 20 and CountingChain.lookups == 0
