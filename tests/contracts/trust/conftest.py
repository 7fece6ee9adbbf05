"""Fixtures for the trust contracts (reputation, revocation_registry).

Built on the contract fixtures of tests/contract_fixtures.py (`token`, `registry`, `owner`,
`operator`, `challenger`, `guardians`, `register_node`): these deploy the two trust contracts,
authorise them on node_registry, stake a panel of challengers and sign revocations.
"""

import pytest

from agents.chain import eip712
from trust_params import CHALLENGER_STAKE, EPOCH_LENGTH, GUARDIAN_QUORUM, REPORT_QUORUM, REPORTS_PER_NODE, SLASH_BPS


@pytest.fixture
def deploy_reputation(project, owner, registry):
    """Factory: deploy a reputation contract and make it a slasher on the registry."""

    def deploy(epoch_length=EPOCH_LENGTH, quorum=REPORT_QUORUM, slash_bps=SLASH_BPS, reports_per_node=REPORTS_PER_NODE):
        contract = owner.deploy(project.reputation, registry, epoch_length, quorum, slash_bps, reports_per_node)
        registry.set_slasher(contract, True, sender=owner)
        return contract

    return deploy


@pytest.fixture
def reputation(deploy_reputation):
    """reputation.vy with the default epoch, quorum and slash fraction, authorised to slash."""
    return deploy_reputation()


@pytest.fixture
def revocations(project, owner, registry, guardians, treasury):
    """revocation_registry.vy with the `guardians` set and GUARDIAN_QUORUM, made the revoker."""
    contract = owner.deploy(project.revocation_registry, registry, treasury, list(guardians), GUARDIAN_QUORUM)
    registry.set_revoker(contract, sender=owner)
    return contract


@pytest.fixture
def stake_challenger(owner, token, registry):
    """Factory: mint tokens to an account and register it as a challenger with `stake`."""

    def stake(account, amount=CHALLENGER_STAKE):
        token.mint(account, amount, sender=owner)
        token.approve(registry, amount, sender=account)
        registry.register_challenger(amount, sender=account)
        return account

    return stake


@pytest.fixture(scope="session")
def panel_accounts(accounts, chain, challenger):
    """`challenger` plus three freshly generated accounts (beyond the funded ten), given gas money."""
    extra = [accounts.generate_test_account() for _ in range(3)]
    for account in extra:
        chain.set_balance(account, 10**21)
    return [challenger, *extra]


@pytest.fixture
def panel(panel_accounts, stake_challenger):
    """Four staked challengers with no other role (reports need REPORT_QUORUM of them, plus one)."""
    return [stake_challenger(account) for account in panel_accounts]


@pytest.fixture(scope="session")
def crowd_accounts(accounts, chain):
    """Six more freshly generated accounts, given gas money (with `panel_accounts`: ten)."""
    extra = [accounts.generate_test_account() for _ in range(6)]
    for account in extra:
        chain.set_balance(account, 10**21)
    return extra


@pytest.fixture
def crowd(panel, crowd_accounts, stake_challenger):
    """Ten staked challengers, `panel` first: an epoch with as many reports as a node gets in practice."""
    return [*panel, *(stake_challenger(account) for account in crowd_accounts)]


@pytest.fixture
def node(node_id):
    """A registered node (its id) operated by `operator`: the shared `node_id` fixture."""
    return node_id


@pytest.fixture
def start_epoch(chain):
    """Factory: move the chain to one minute into the next epoch of a contract; returns the epoch."""

    def start(contract):
        length = contract.epoch_length()
        epoch = chain.pending_timestamp // length + 1
        chain.pending_timestamp = epoch * length + 60
        chain.mine()
        return epoch

    return start


@pytest.fixture
def sign_revocation(chain, revocations):
    """Factory: guardian signatures over a Revocation, sorted by signer address (as revoke wants).

    `chain_id` and `contract` default to this chain and the `revocations` fixture; tests change them
    to make replayed signatures.
    """

    def sign(signers, node_id, evidence_hash, nonce=0, chain_id=None, contract=None):
        message = eip712.Revocation(node_id=bytes(node_id), evidence_hash=bytes(evidence_hash), nonce=nonce)
        verifying = (contract or revocations).address
        ordered = sorted(signers, key=lambda account: int(account.address, 16))
        return [
            eip712.sign(message, account.private_key, chain_id or chain.chain_id, verifying) for account in ordered
        ]

    return sign
