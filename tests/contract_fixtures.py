"""Contract fixtures for every test that touches the chain: role-named accounts, deployed contracts, factories.

A pytest plugin (tests/conftest.py names it in ``pytest_plugins``), so that tests/contracts,
tests/zk and tests/agents share ONE definition of each fixture: ape's chain isolation tracks
session fixtures by name, and a second definition of ``token`` or ``registry`` elsewhere would be
deployed inside a module snapshot and vanish when that module's snapshot is reverted.
"""

import itertools
import os

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from agents.chain import eip712

# Deployment parameters of the test chain (token wei use 18 decimals, like the real token).
TOKEN = 10**18
MIN_NODE_STAKE = 100 * TOKEN
MIN_CHALLENGER_STAKE = 10 * TOKEN
UNBONDING_DELAY = 7 * 24 * 3600  # seconds: a week, long enough to catch a misbehaving node
CHALLENGE_PERIOD = 24 * 3600  # seconds: a day for the node to settle after a client starts to close
FEE_BPS = 100  # 1 % protocol fee, so fee rounding is exercised
INITIAL_BALANCE = 1_000_000 * TOKEN
DEFAULT_DEPOSIT = 50 * TOKEN


@pytest.fixture(scope="session")
def owner(accounts):
    """Deployer of every contract; owner and minter of the token."""
    return accounts[0]


@pytest.fixture(scope="session")
def operator(accounts):
    """A node operator."""
    return accounts[1]


@pytest.fixture(scope="session")
def client(accounts):
    """A client that funds channels and receives refunds."""
    return accounts[2]


@pytest.fixture(scope="session")
def challenger(accounts):
    """A challenger (reports on nodes)."""
    return accounts[3]


@pytest.fixture(scope="session")
def guardians(accounts):
    """Three revocation guardians."""
    return [accounts[4], accounts[5], accounts[6]]


@pytest.fixture(scope="session")
def treasury(accounts):
    """Receives protocol fees and revoked stake."""
    return accounts[7]


@pytest.fixture(scope="session")
def stranger(accounts):
    """An account with no role anywhere."""
    return accounts[8]


@pytest.fixture(scope="session")
def signer_key():
    """Private key of a channel's payment signer (a fresh key, not an ape account, as a client uses)."""
    return keccak(b"warren test payment signer")


@pytest.fixture(scope="session")
def signer(signer_key):
    """Address of the payment signer."""
    return Account.from_key(signer_key).address


@pytest.fixture(scope="session")
def make_signer():
    """Factory: a fresh payment signer (private key, address); a channel id commits to its signer."""
    counter = itertools.count()

    def _make():
        key = keccak(b"warren test signer %d" % next(counter))
        return key, Account.from_key(key).address

    return _make


@pytest.fixture(scope="session")
def token(project, owner, operator, client, challenger, stranger):
    """The Warren token, with INITIAL_BALANCE minted to each funded role."""
    contract = owner.deploy(project.warren_token)
    for account in (operator, client, challenger, stranger):
        contract.mint(account, INITIAL_BALANCE, sender=owner)
    return contract


@pytest.fixture(scope="session")
def registry(project, owner, token):
    """node_registry over `token` with the test stakes and unbonding delay."""
    return owner.deploy(project.node_registry, token, MIN_NODE_STAKE, MIN_CHALLENGER_STAKE, UNBONDING_DELAY)


@pytest.fixture(scope="session")
def channels(project, owner, token, registry, treasury):
    """payment_channels over `token` and `registry` (FEE_BPS fee to `treasury`)."""
    return owner.deploy(project.payment_channels, token, registry, FEE_BPS, treasury, CHALLENGE_PERIOD)


@pytest.fixture
def register_node(registry, token, operator):
    """Factory: register a node (approving its stake first); returns its node_id as bytes.

    Each call without `wg_key` uses a fresh random WireGuard key.
    """

    def _register(sender=None, wg_key=None, region="DE", price_per_gib=10**15, stake=MIN_NODE_STAKE):
        sender = sender or operator
        wg_key = wg_key if wg_key is not None else os.urandom(32)
        token.approve(registry, stake, sender=sender)
        registry.register_node(wg_key, region, price_per_gib, stake, sender=sender)
        return keccak(wg_key)

    return _register


@pytest.fixture
def node_id(register_node):
    """A node registered by `operator` with the minimum stake (node_id as bytes)."""
    return register_node()


@pytest.fixture
def slasher(registry, owner, stranger):
    """`stranger` authorised as a slasher (stands in for reputation or a fraud proof)."""
    registry.set_slasher(stranger, True, sender=owner)
    return stranger


@pytest.fixture
def revoker(registry, owner, guardians):
    """A guardian account made the registry's revoker (stands in for revocation_registry)."""
    registry.set_revoker(guardians[0], sender=owner)
    return guardians[0]


# EIP-2612 Permit type (the token's own domain is "Warren Token", "1": docs/CONTRACTS.md).
PERMIT_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "Permit": [
        {"name": "owner", "type": "address"},
        {"name": "spender", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ],
}


@pytest.fixture
def sign_permit(token, chain):
    """Factory: `owner_account`'s EIP-2612 permit for `spender` as (v, r, s), at its current nonce."""

    def _sign(owner_account, spender, value, deadline):
        message = {
            "types": PERMIT_TYPES,
            "primaryType": "Permit",
            "domain": {"name": "Warren Token", "version": "1", "chainId": chain.chain_id, "verifyingContract": token.address},
            "message": {
                "owner": owner_account.address,
                "spender": getattr(spender, "address", spender),
                "value": value,
                "nonce": token.nonces(owner_account),
                "deadline": deadline,
            },
        }
        signed = Account.sign_message(encode_typed_data(full_message=message), owner_account.private_key)
        return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")

    return _sign


@pytest.fixture
def open_channel(channels, token, client, signer):
    """Factory: open a channel funded by `funder` (default client); returns the channel id as bytes."""

    def _open(node_id, deposit=DEFAULT_DEPOSIT, funder=None, client_address=None, signer_address=None):
        funder = funder or client
        token.approve(channels, deposit, sender=funder)
        receipt = channels.open_channel(
            node_id, client_address or client, signer_address or signer, deposit, sender=funder
        )
        return bytes(receipt.return_value)

    return _open


@pytest.fixture
def sign_receipt(channels, chain, signer_key):
    """Factory: sign a Receipt with the payment signer (or `key`) for `channels` on this chain."""

    def _sign(channel_id, cumulative_bytes, cumulative_amount, key=None, chain_id=None, contract=None):
        message = eip712.Receipt(bytes(channel_id), cumulative_bytes, cumulative_amount)
        return eip712.sign(
            message,
            key or signer_key,
            chain_id if chain_id is not None else chain.chain_id,
            contract if contract is not None else channels.address,
        )

    return _sign


@pytest.fixture(scope="session")
def close_message():
    """The CooperativeClose message type (agents.chain.eip712)."""
    return eip712.CooperativeClose


@pytest.fixture
def sign_close(channels, chain, operator):
    """Factory: the node operator's CooperativeClose signature (or `key`'s) for `channels`."""

    def _sign(channel_id, cumulative_bytes, cumulative_amount, key=None):
        message = eip712.CooperativeClose(bytes(channel_id), cumulative_bytes, cumulative_amount)
        return eip712.sign(message, key or operator.private_key, chain.chain_id, channels.address)

    return _sign
