"""The deploy function wires the settlement layer, and the deployment file survives a round trip."""

import json

import pytest

from agents.chain.deploy import TOKEN, DeployParameters, deploy_all, voucher_pool_name
from agents.chain.deployment import CONTRACT_NAMES, Deployment, DeploymentError


@pytest.fixture
def guardian_addresses(guardians):
    return [g.address for g in guardians]


def test_deploy_all__wires_slasher_and_revoker(project, accounts, chain, guardian_addresses):
    owner = accounts[0]
    lines = []
    deployment = deploy_all(project, owner, chain, DeployParameters(guardians=guardian_addresses), log=lines.append)

    pool_name = voucher_pool_name(10 * TOKEN)
    assert set(deployment.addresses) == {*CONTRACT_NAMES, "groth16_verifier", "poseidon_t3", pool_name}
    assert deployment.chain_id == chain.chain_id
    assert len(lines) == len(deployment.addresses) + 1
    registry = project.node_registry.at(deployment.address("node_registry"))
    assert registry.is_slasher(deployment.address("reputation"))
    assert registry.revoker() == deployment.address("revocation_registry")
    channels = project.payment_channels.at(deployment.address("payment_channels"))
    assert channels.treasury() == owner.address
    pool = project.voucher_pool.at(deployment.address(pool_name))
    assert pool.denomination() == 10 * TOKEN and pool.channels() == channels.address
    # The recorded first block is the token's: an event scan from it sees every deployment.
    assert chain.blocks[deployment.block].transactions[0].receiver is None


def test_deploy_all__pools_share_verifier_and_poseidon(project, accounts, chain, guardian_addresses):
    params = DeployParameters(guardians=guardian_addresses, voucher_denominations=[TOKEN, 5 * TOKEN])
    deployment = deploy_all(project, accounts[0], chain, params, log=lambda _: None)
    small, large = (project.voucher_pool.at(deployment.address(voucher_pool_name(d))) for d in (TOKEN, 5 * TOKEN))
    assert (small.denomination(), large.denomination()) == (TOKEN, 5 * TOKEN)
    assert small.verifier() == large.verifier() == deployment.address("groth16_verifier")
    assert small.poseidon() == large.poseidon() == deployment.address("poseidon_t3")


def test_deploy_all__reuses_an_existing_token(project, accounts, chain, guardian_addresses):
    token = accounts[0].deploy(project.warren_token)
    deployment = deploy_all(
        project, accounts[0], chain, DeployParameters(guardians=guardian_addresses, token=token.address), log=lambda _: None
    )
    assert deployment.address("warren_token") == token.address


@pytest.mark.parametrize(
    "guardian_count, quorum, message",
    [(0, 1, "at least one guardian"), (3, 4, "not between 1 and"), (3, 0, "not between 1 and")],
)
def test_deploy_all__bad_guardian_quorum__refused(project, accounts, chain, guardian_count, quorum, message):
    addresses = [a.address for a in list(accounts)[:guardian_count]]
    params = DeployParameters(guardians=addresses, revocation_quorum=quorum)
    with pytest.raises(ValueError, match=message):
        deploy_all(project, accounts[0], chain, params, log=lambda _: None)


def test_deployment_file__round_trip(tmp_path):
    original = Deployment(chain_id=31337, addresses={n: f"0x{i:040x}" for i, n in enumerate(CONTRACT_NAMES)}, block=7)
    path = tmp_path / "deployments" / "local.json"
    original.save(path)
    assert Deployment.load(path) == original
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_deployment_file__missing_truncated_incomplete__clear_errors(tmp_path):
    path = tmp_path / "d.json"
    with pytest.raises(DeploymentError, match="run `ape run deploy` first"):
        Deployment.load(path)
    path.write_text('{"chain_id": 1, "addr')
    with pytest.raises(DeploymentError, match="not valid JSON"):
        Deployment.load(path)
    path.write_text(json.dumps({"chain_id": 1, "addresses": {"warren_token": "0x" + "00" * 20}}))
    with pytest.raises(DeploymentError, match="lacks node_registry"):
        Deployment.load(path)
    with pytest.raises(DeploymentError, match="no contract named"):
        Deployment(chain_id=1, addresses={}).address("warren_token")
