"""`warren node unbond` and `warren node withdraw` against the real registry on anvil."""

import os

import pytest

from agents import cli
from agents.chain.bindings import WarrenContracts, node_id_of
from agents.chain.deploy import TOKEN, DeployParameters, deploy_all
from agents.node.chain import NodeChain
from agents.node.config import NodeConfig, write_config
from agents.wallet import AccountSpec
from agents.wireguard.config import encode_key, generate_private_key, public_key

STAKE = 100 * TOKEN
UNBONDING_DELAY = 600


@pytest.fixture(scope="module")
def warren(project, chain, owner, operator, guardians, tmp_path_factory):
    deployment = deploy_all(project, owner, chain, DeployParameters(guardians=[g.address for g in guardians],
                                                                    unbonding_delay=UNBONDING_DELAY,
                                                                    epoch_length=UNBONDING_DELAY // 2),
                            log=lambda _: None)
    path = tmp_path_factory.mktemp("deployment") / "deployment.json"
    deployment.save(path)
    contracts = WarrenContracts.at(project, deployment, chain.chain_id)
    contracts.token.mint(operator, 1_000 * TOKEN, sender=owner)
    return contracts, path


@pytest.fixture
def node(warren, operator, accounts, chain, tmp_path):
    contracts, deployment = warren
    key = generate_private_key()
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    (data_dir / "wg.key").write_text(encode_key(key) + "\n")
    (data_dir / "wg.key").chmod(0o600)
    config = NodeConfig(region="NL", price_per_gib=10**15, operator=AccountSpec(test_account=1),
                        stake=STAKE, data_dir=data_dir, rpc=chain.provider.http_uri, deployment=deployment)
    assert accounts[1] == operator
    path = tmp_path / "node.toml"
    write_config(path, config)
    node_id = node_id_of(public_key(key))
    NodeChain(contracts, operator, public_key(key)).ensure_registered("NL", 10**15, STAKE)
    return path, node_id


def _warren(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_unbond_then_withdraw__after_the_delay__stake_back_to_the_operator(warren, node, operator, chain, capsys):
    contracts, _ = warren
    path, node_id = node
    code, out, err = _warren(capsys, "node", "withdraw", "--config", str(path))
    assert (code, err.strip()) == (1, "warren: the node is not unbonding: run `warren node unbond` first")

    code, out, err = _warren(capsys, "node", "unbond", "--config", str(path))
    assert code == 0, err
    unbond_at = int(contracts.registry.node_unbond_at(node_id))
    assert unbond_at > 0 and f"unbonding: withdraw after {unbond_at}" in out
    code, out, err = _warren(capsys, "node", "unbond", "--config", str(path))
    assert (code, err.strip()) == (1, f"warren: the node is already unbonding: its stake can be withdrawn from "
                                      f"unix time {unbond_at}")
    code, out, err = _warren(capsys, "node", "withdraw", "--config", str(path))
    assert (code, err.strip()) == (1, f"warren: the unbonding delay ends at unix time {unbond_at}; withdraw after that")
    assert contracts.node(node_id).stake == STAKE

    chain.mine(timestamp=unbond_at)  # the delay has passed: a block at that time
    before = int(contracts.token.balanceOf(operator))
    code, out, err = _warren(capsys, "node", "withdraw", "--config", str(path))
    assert code == 0, err
    assert f"withdrew {STAKE} token wei of stake to {operator.address}" in out
    assert int(contracts.token.balanceOf(operator)) == before + STAKE
    assert contracts.node(node_id).stake == 0


def test_unbond__unregistered_key__plain_error(warren, node, capsys, tmp_path):
    path, _ = node
    (tmp_path / "node" / "wg.key").write_text(encode_key(generate_private_key()) + "\n")
    code, out, err = _warren(capsys, "node", "unbond", "--config", str(path))
    assert code == 1 and "is not registered" in err
