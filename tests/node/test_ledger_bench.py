"""The fast EIP-712 path equals eth-account's on many random messages and stays as strict as the
contracts (high s, bad v); the ledger bench verifies and stores what it counts."""

import random

import pytest
from eth_account import Account

from agents.chain import eip712
from agents.metering import GIB, ChannelTerms, ReceiptLedger, Refusal
from agents.node.ledger_bench import receipts_per_second
from agents.node.store import NodeStore

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _random_message(rng):
    b32 = lambda: rng.randbytes(32)  # noqa: E731
    uint = lambda: rng.getrandbits(rng.choice([8, 64, 96, 256]))  # noqa: E731
    return rng.choice([
        lambda: eip712.Receipt(b32(), uint(), uint()),
        lambda: eip712.CooperativeClose(b32(), uint(), uint()),
        lambda: eip712.CloseRequest(b32()),
        lambda: eip712.Revocation(b32(), b32(), uint()),
    ])()


def test_fast_digest__equals_eth_account_on_random_messages():
    rng = random.Random(9)
    for _ in range(300):
        message = _random_message(rng)
        chain_id, contract = rng.getrandbits(rng.choice([8, 64])) + 1, "0x" + rng.randbytes(20).hex()
        assert eip712.fast_digest(message, chain_id, contract) == eip712.digest(message, chain_id, contract)


def test_fast_recover__equals_eth_account_on_random_receipts():
    rng = random.Random(10)
    for _ in range(150):
        key = rng.randbytes(32)
        message = eip712.Receipt(rng.randbytes(32), rng.getrandbits(64), rng.getrandbits(96))
        chain_id, contract = rng.randrange(1, 10**6), "0x" + rng.randbytes(20).hex()
        signature = eip712.sign(message, key, chain_id, contract)
        expected = Account.from_key(key).address
        assert eip712.fast_recover(message, signature, chain_id, contract) == expected
        assert eip712.recover(message, signature, chain_id, contract) == expected


@pytest.fixture
def signed(tmp_path):
    key = b"\x42" * 32
    terms = ChannelTerms(b"\x01" * 32, Account.from_key(key).address, 10**18, 10**15, GIB, 31337, "0x" + "11" * 20)
    receipt = eip712.Receipt(terms.channel_id, 1000, 10**12)
    return terms, receipt, eip712.sign(receipt, key, terms.chain_id, terms.verifying_contract)


def _malleable(signature: bytes) -> bytes:
    """The same signature with s' = n - s and v flipped: ecrecover still yields the signer (EIP-2)."""
    s = int.from_bytes(signature[32:64], "big")
    return signature[:32] + (N - s).to_bytes(32, "big") + bytes([55 - signature[64]])


def test_fast_recover__high_s_and_bad_v__refused(tmp_path, signed):
    terms, receipt, signature = signed
    args = (terms.chain_id, terms.verifying_contract)
    high_s = _malleable(signature)
    bad_v = [signature[:64] + bytes([v]) for v in (0, 1, 29)]
    for bad in [high_s, *bad_v, signature[:64], b"\x00" * 65]:
        with pytest.raises(ValueError):
            eip712.fast_recover(receipt, bad, *args)
    store = NodeStore(tmp_path / "node.db")
    store.upsert_channel(terms)
    ledger = ReceiptLedger(terms, store.receipt_store(terms.channel_id))
    for bad in [high_s, *bad_v]:
        assert ledger.accept(receipt, bad, 1000).reason is Refusal.BAD_SIGNATURE
    assert ledger.accept(receipt, signature, 1000).accepted
    store.close()


@pytest.mark.parametrize("batch", [1, 25])
def test_bench__counts_verified_and_stored_receipts(tmp_path, batch):
    result = receipts_per_second(count=200, channels=8, batch=batch, path=tmp_path / "bench.db")
    assert result["receipts"] == 200 and result["per_second_cpu"] > 0
    store = NodeStore(tmp_path / "bench.db")
    latest = store.latest_receipts()
    assert len(latest) == 8 and all(r.receipt.cumulative_bytes == 25 << 20 for r in latest.values())
    store.close()


def test_fast_sign__equals_eth_account_signature__for_every_message_type():
    import os

    from eth_account import Account

    from agents.chain import eip712

    for _ in range(30):
        key = Account.create().key
        contract = "0x" + os.urandom(20).hex()
        for message in (eip712.Receipt(os.urandom(32), int.from_bytes(os.urandom(8), "big"),
                                       int.from_bytes(os.urandom(12), "big")),
                        eip712.CooperativeClose(os.urandom(32), 1, 2), eip712.CloseRequest(os.urandom(32))):
            fast = eip712.fast_sign(message, key, 31337, contract)
            assert fast == eip712.sign(message, key, 31337, contract)
            assert eip712.fast_recover(message, fast, 31337, contract) == Account.from_key(key).address
