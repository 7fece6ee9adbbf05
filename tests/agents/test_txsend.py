"""A transaction whose nonce is taken by one sent elsewhere: waited out and sent again (fake clock; anvil)."""

import pytest

from agents.chain.txsend import NonceInUse, is_nonce_conflict, send


class Conflict(Exception):
    pass


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_send__nonce_taken_then_mined__sent_again():
    clock, sent, counts = Clock(), [], iter([(4, 5), (4, 5), (5, 5)])

    def call():
        sent.append(clock.t)
        if len(sent) == 1:
            raise Conflict("{'code': -32003, 'message': 'replacement transaction underpriced'}")
        return "receipt"

    assert send(call, nonces=lambda: next(counts), what="settling", address="0xA", sleep=clock.sleep,
                clock=clock) == "receipt"
    assert sent == [0.0, 2.0]  # sent again once the pending count came down to the mined count


def test_send__other_transaction_never_mined__nonce_in_use_in_words():
    clock = Clock()

    def call():
        raise Conflict("nonce too low")

    with pytest.raises(NonceInUse, match=r"account 0xA has 1 transaction\(s\) pending from elsewhere .* within 10 s"):
        send(call, nonces=lambda: (4, 5), what="settling", address="0xA", patience_s=10, sleep=clock.sleep, clock=clock)
    assert clock.t == pytest.approx(10.0)


def test_send__other_errors__raised_untouched_and_not_retried():
    calls = []

    def call():
        calls.append(1)
        raise ValueError("execution reverted: payment_channels: stale receipt")

    with pytest.raises(ValueError, match="stale receipt"):
        send(call, nonces=lambda: (0, 0), what="settling", address="0xA")
    assert calls == [1] and not is_nonce_conflict(ValueError("out of gas"))


def test_send_as__pending_transaction_of_the_same_account__waits_and_sends(caplog):
    from agents.chain.connect import connect
    from agents.chain.txsend import send_as
    from agents.netlab.world import _rpc, start_anvil

    with start_anvil(None, "--block-time", "2") as anvil, connect(anvil.url) as project:  # noqa: F841
        from ape import accounts

        sender, other = accounts.test_accounts[3], accounts.test_accounts[4]
        # Sent "elsewhere" (anvil's unlocked account, not through ape): pending until the next block.
        _rpc(anvil.url, "eth_sendTransaction", [{"from": str(sender.address), "to": str(other.address), "value": "0x1"}])
        receipt = send_as(sender, lambda: sender.transfer(other, 2), "a transfer", patience_s=20)
        assert receipt.nonce == 1 and not receipt.failed
    assert "is taken by a pending transaction (0 mined, 1 pending)" in caplog.text  # the conflict did happen
