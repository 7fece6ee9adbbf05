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


def test_deploy_all__pool_depth_without_its_key__refused(project, accounts, chain, guardian_addresses):
    """The checked-in verifier is the depth-20 key: a pool of another depth would refuse every proof."""
    params = DeployParameters(guardians=guardian_addresses, voucher_depth=4)
    with pytest.raises(ValueError, match="needs that circuit's verification key"):
        deploy_all(project, accounts[0], chain, params, log=lambda _: None)


def test_deploy_all__pool_with_its_own_key__redeems_a_real_proof(project, accounts, chain, guardian_addresses, tmp_path):
    from eth_account import Account

    from zk.export import proof_calldata, vk_to_json, write_json
    from zk.groth16 import prove, setup_dev
    from zk.merkle import LeanIMT
    from zk.voucher import Note, ext_data_hash, voucher_circuit, voucher_inputs

    depth = 2
    circuit = voucher_circuit(depth)
    pk, vk = setup_dev(circuit)
    write_json(tmp_path / "vk.json", vk_to_json(vk))
    params = DeployParameters(guardians=guardian_addresses, voucher_depth=depth,
                              voucher_vk=str(tmp_path / "vk.json"), voucher_denominations=[TOKEN])
    deployer, client = accounts[0], accounts[5]
    deployment = deploy_all(project, deployer, chain, params, log=lambda _: None)
    wtoken = project.warren_token.at(deployment.address("warren_token"))
    pool = project.voucher_pool.at(deployment.address(voucher_pool_name(TOKEN)))
    assert pool.max_depth() == depth
    wtoken.mint(client, TOKEN, sender=deployer)
    wtoken.approve(pool, TOKEN, sender=client)
    note = Note(nullifier=11, secret=12)
    pool.deposit(note.commitment, TOKEN, sender=client)
    tree = LeanIMT()
    tree.insert(note.commitment)
    node_id, signer = b"\x07" * 32, Account.create().address
    witness = circuit.witness(voucher_inputs(note, tree.proof(0), ext_data_hash(node_id, signer, 0), depth))
    proof = proof_calldata(prove(pk, circuit, witness))
    pool.redeem(proof, tree.root, note.nullifier_hash, node_id, signer, 0, sender=deployer)
    assert pool.nullifier_spent(note.nullifier_hash)


def test_check_verifier__dev_key_outside_a_local_network__refused_unless_acknowledged():
    from agents.chain.deploy import check_verifier

    pools = DeployParameters(voucher_denominations=[TOKEN])
    check_verifier(pools, local=True)  # a local chain: the development key is fine
    with pytest.raises(ValueError, match="development key, whose setup is public"):
        check_verifier(pools, local=False)
    check_verifier(DeployParameters(voucher_denominations=[TOKEN], allow_dev_verifier=True), local=False)
    check_verifier(DeployParameters(voucher_denominations=[TOKEN], voucher_vk="vk.json"), local=False)
    check_verifier(DeployParameters(voucher_denominations=[]), local=False)  # no pools, no verifier


def test_deploy_all__not_local__dev_verifier_refused_before_any_transaction(project, accounts, chain,
                                                                            guardian_addresses):
    before = chain.blocks.height
    with pytest.raises(ValueError, match="--i-know-the-dev-key-is-public"):
        deploy_all(project, accounts[0], chain, DeployParameters(guardians=guardian_addresses,
                                                                 voucher_denominations=[TOKEN]),
                   log=lambda _: None, local=False)
    assert chain.blocks.height == before
