"""The operator's transactions go out one at a time: the settler and the node's redemptions share a
lock (ape takes the nonce from the chain when it signs: two concurrent senders could take one)."""

from __future__ import annotations

import threading
import types

from agents.chain.eip712 import Receipt
from agents.metering import AcceptedReceipt
from agents.node.settlement import ContractsChainPort

CHANNEL = b"\x11" * 32


class _Channels:
    """payment_channels' settle as ape calls it; records whether the shared lock was held."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock, self.held = lock, []

    def settle(self, channel_id, cumulative_bytes, cumulative_amount, signature, sender):
        self.held.append(self.lock.locked())
        return types.SimpleNamespace(txn_hash="0x" + "ab" * 32, gas_used=61_882, failed=False, block_number=7)  # mined


def _port():
    """(port, its channels contract, the shared lock, a stored channel, a receipt to settle)."""
    lock = threading.Lock()
    channels = _Channels(lock)
    port = ContractsChainPort(types.SimpleNamespace(channels=channels), operator=object(), tx_lock=lock)
    stored = types.SimpleNamespace(kind="channels", channel_id=CHANNEL)
    record = AcceptedReceipt(Receipt(CHANNEL, 1 << 20, 10**15), b"\x00" * 65, 1 << 20)
    return port, channels, lock, stored, record


def test_settle__sent_under_the_shared_lock__released_after():
    port, channels, lock, stored, record = _port()
    tx_hash, gas = port.settle(stored, record)
    assert channels.held == [True] and not lock.locked()
    assert (tx_hash, gas) == (bytes.fromhex("ab" * 32), 61_882)


def test_settle__waits_while_another_sender_holds_the_lock():
    port, channels, lock, stored, record = _port()
    lock.acquire()  # e.g. a redemption being sent from a session setup
    worker = threading.Thread(target=port.settle, args=(stored, record))
    worker.start()
    worker.join(timeout=0.3)
    assert worker.is_alive() and channels.held == []  # not sent while the other sender holds it
    lock.release()
    worker.join(timeout=5)
    assert channels.held == [True]
