"""The dashboard's view of a node against the real contracts on anvil: its figures are the chain's,
its controls change the chain, and refusals come back in words (the node's agent and exit are fakes:
they need namespaces, and the e2e test runs the real ones)."""

import dataclasses
import os
import threading
import types

import pytest

from agents.chain.bindings import WarrenContracts
from agents.chain.deploy import TOKEN, DeployParameters, deploy_all
from agents.errors import UserError
from agents.node.chain import NodeChain
from agents.node.config import NodeConfig, load_config, write_config
from agents.node.dashboard.view import NodeView
from agents.node.policy import ExitPolicy
from agents.node.status import chain_facts
from agents.node.store import NodeStore
from agents.wallet import AccountSpec

PRICE, STAKE = 2 * TOKEN, 100 * TOKEN


@dataclasses.dataclass(frozen=True)
class Offer:
    price_per_gib: int


class Agent:
    def __init__(self):
        self.offer = Offer(PRICE)
        self.core = types.SimpleNamespace(offer=self.offer)
        self.lock = threading.RLock()

    def set_price(self, price_per_gib):
        self.offer = dataclasses.replace(self.offer, price_per_gib=price_per_gib)
        self.core.offer = self.offer

    def status(self):
        return {"uptime_s": 1.0, "pending": 0, "price_per_gib": self.offer.price_per_gib, "sessions": [],
                "counters": {}, "refusals": {}, "receipt_refusals": {}}


class Exit:
    def __init__(self):
        self.policy = ExitPolicy.from_dict({})

    def set_policy(self, policy):
        self.policy = policy


@pytest.fixture(scope="module")
def deployed(project, chain, owner, operator, guardians):
    deployment = deploy_all(project, owner, chain, DeployParameters(guardians=[g.address for g in guardians],
                                                                    voucher_denominations=[]), log=lambda _: None)
    contracts = WarrenContracts.at(project, deployment, chain.chain_id)
    contracts.token.mint(operator, 1_000 * TOKEN, sender=owner)
    return contracts


@pytest.fixture
def view(deployed, operator, tmp_path):
    node = NodeChain(deployed, operator, os.urandom(32))
    node.ensure_registered("NL", PRICE, STAKE)
    config_path = tmp_path / "node.toml"
    write_config(config_path, NodeConfig(region="NL", price_per_gib=PRICE, operator=AccountSpec(test_account=3),
                                         data_dir=tmp_path))
    store = NodeStore(tmp_path / "node.db")
    settler = types.SimpleNamespace(status=lambda: {"unsettled_amount": 0, "last_error": None})
    yield NodeView(contracts=deployed, chain=node, agent=Agent(), store=store, settler=settler, exit_table=Exit(),
                   config_path=config_path)
    store.close()


def test_overview__figures_are_the_chain_s(view, deployed):
    shown = view.overview()
    facts = chain_facts(deployed, view.node_id)
    assert shown["chain"]["node_id"] == facts["node_id"] and shown["chain"]["registered"] is True
    assert shown["chain"]["stake"] == str(STAKE) == str(facts["stake"])
    assert shown["chain"]["price_per_gib"] == str(PRICE)
    assert shown["earnings"]["total"] == {"earned": "0", "settled": "0", "unsettled": "0", "fee": "0", "net": "0"}
    assert shown["reports"] == [] and shown["settlements"] == []


def test_set_price__on_chain_in_the_node_and_the_config__then_refused_in_words(view, deployed):
    done = view.set_price(3 * TOKEN)
    assert done["tx_hash"].startswith("0x") and "3000000000000000000 token wei per GiB" in done["message"]
    assert deployed.node(view.node_id).price_per_gib == 3 * TOKEN
    assert view.agent.offer.price_per_gib == 3 * TOKEN == view.agent.core.offer.price_per_gib
    assert load_config(view.config_path).price_per_gib == 3 * TOKEN
    with pytest.raises(UserError, match="already 3000000000000000000"):
        view.set_price(3 * TOKEN)
    # node_registry allows one update per epoch: the chain's refusal reaches the operator in words.
    with pytest.raises(UserError, match=r"changing the price: the chain refused it \(.*updated this epoch"):
        view.set_price(4 * TOKEN)
    assert deployed.node(view.node_id).price_per_gib == 3 * TOKEN


def test_set_price__auto_price__refused_in_words_and_nothing_sent(view, deployed):
    from agents.node.pricing import PriceRule

    view.config = NodeConfig(region="NL", price_per_gib="auto", price=PriceRule(PRICE, 4 * PRICE, 10.0),
                             operator=AccountSpec(test_account=3))
    with pytest.raises(UserError, match=r'^the price is automatic \(price_per_gib = "auto"\): it moves once per '
                                        r'epoch between the \[price\] floor and ceiling'):
        view.set_price(3 * TOKEN)
    assert deployed.node(view.node_id).price_per_gib == PRICE


def test_set_policy__applied_and_saved__bad_policy_refused(view):
    done = view.set_policy({"allow_ports": [443]})
    assert done["policy"]["allow_ports"] == [443] and view.exit.policy.to_dict()["allow_ports"] == [443]
    assert load_config(view.config_path).exit["allow_ports"] == [443]
    with pytest.raises(UserError, match="exit policy not changed"):
        view.set_policy({"allow_ports": ["not a port"]})
    assert view.exit.policy.to_dict()["allow_ports"] == [443]


def test_unbond__starts_the_delay__twice_refused(view, deployed):
    done = view.unbond()
    assert done["unbond_at"] == int(deployed.registry.node_unbond_at(view.node_id)) > 0
    with pytest.raises(UserError, match="already unbonding"):
        view.unbond()
