"""The Python EIP-712 types (agents.chain.eip712) agree with the contracts' own digests."""

import os

from eth_abi import encode
from eth_account import Account
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.chain import eip712

UINT256 = st.integers(min_value=0, max_value=2**256 - 1)
BYTES32 = st.binary(min_size=32, max_size=32)
# Views are cheap, but every example is a round trip to anvil: a few dozen are plenty.
FEW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FEW
@given(channel_id=BYTES32, cumulative_bytes=UINT256, cumulative_amount=UINT256)
def test_receipt_digest__python_equals_contract(channels, chain, channel_id, cumulative_bytes, cumulative_amount):
    message = eip712.Receipt(channel_id, cumulative_bytes, cumulative_amount)
    expected = eip712.digest(message, chain.chain_id, channels.address)
    assert bytes(channels.receipt_digest(channel_id, cumulative_bytes, cumulative_amount)) == expected


def test_close_digest__python_equals_contract(channels, chain, close_message):
    channel_id = os.urandom(32)
    expected = eip712.digest(close_message(channel_id, 5, 6), chain.chain_id, channels.address)
    assert bytes(channels.close_digest(channel_id, 5, 6)) == expected
    assert expected != bytes(channels.receipt_digest(channel_id, 5, 6))


def test_domain__is_warren_1_this_chain_this_contract(channels, chain):
    fields, name, version, chain_id, verifying_contract, salt, extensions = channels.eip712Domain()
    assert (name, version, chain_id, verifying_contract) == ("Warren", "1", chain.chain_id, channels.address)
    assert bytes(salt) == b"\x00" * 32 and list(extensions) == []
    # hashStruct(EIP712Domain) written out from EIP-712 itself, independently of eth-account.
    type_hash = keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    separator = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [type_hash, keccak(b"Warren"), keccak(b"1"), chain.chain_id, channels.address],
        )
    )
    assert bytes(channels.DOMAIN_SEPARATOR()) == separator


def test_digest__differs_by_chain_id_and_contract(channels, registry, chain):
    message = eip712.Receipt(os.urandom(32), 1, 1)
    here = eip712.digest(message, chain.chain_id, channels.address)
    assert here != eip712.digest(message, chain.chain_id + 1, channels.address)
    assert here != eip712.digest(message, chain.chain_id, registry.address)


def test_sign_and_recover__round_trip_to_the_signer(channels, chain, signer_key, signer):
    message = eip712.Receipt(os.urandom(32), 10, 20)
    signature = eip712.sign(message, signer_key, chain.chain_id, channels.address)
    assert len(signature) == 65 and signature[64] in (27, 28)
    assert eip712.recover(message, signature, chain.chain_id, channels.address) == signer
    digest = bytes(channels.receipt_digest(message.channel_id, 10, 20))
    assert Account._recover_hash(digest, signature=signature) == signer
