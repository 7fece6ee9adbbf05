"""Sending an operator's transaction when its nonce is taken: wait for the other one, then send again.

ape signs with the account's *mined* transaction count as the nonce (seen on anvil: with a
transaction of the same account still pending, ape's next one is refused as "replacement transaction
underpriced"). That happens on any live network whenever the operator's account sends from two places:
a `warren node unbond` in a shell while the node settles, a wallet, a second node on the same account.
Within one process the node's transaction lock already orders its own senders.

:func:`send` runs the sending call; when the node answers with a nonce conflict it waits for the
account's pending transactions to be mined (its pending count equals its mined count), up to
``patience_s``, and sends again, so the new transaction takes the next free nonce. Other errors pass
through untouched. When the other transaction does not get mined in time (a gas price far too low, a
node that dropped it), :class:`NonceInUse` says so in words.

:func:`send_as` also waits until the transaction is in a block (:func:`mined`): where ape asks for no
confirmations (a local network) it hands back the receipt of a transaction that is only pending, and
a node may still drop it from its mempool (full, restarted, replaced). Seen on anvil without
automine: the settler recorded a settlement "confirmed" whose transaction never ran. A transaction
gone from the node, or not mined within ``patience_s``, is :class:`TransactionDropped`, a
:class:`RemoteError` its callers retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agents.errors import RemoteError

__all__ = ["NonceInUse", "TransactionDropped", "is_nonce_conflict", "mined", "rpc_nonces", "send", "send_as"]

log = logging.getLogger("warren.chain")

#: How the common nodes word a nonce that is taken or used (geth, anvil, erigon, nethermind).
NONCE_CONFLICTS = ("replacement transaction underpriced", "nonce too low", "already known",
                   "nonce has already been used", "transaction already imported", "known transaction")
#: How long to wait for the other transaction (seconds): a few blocks on a live network.
DEFAULT_PATIENCE_S = 60.0
POLL_S = 1.0
#: How long a sent transaction may stay pending before it counts as lost (seconds).
DEFAULT_MINED_PATIENCE_S = 180.0
#: How often a pending transaction is looked up (seconds).
MINED_POLL_S = 0.5


class NonceInUse(RemoteError):
    """The account's nonce stayed taken by another transaction for longer than we waited."""


class TransactionDropped(RemoteError):
    """A sent transaction left the node's mempool unmined, or stayed pending past our patience."""


def is_nonce_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is the node refusing a transaction because its nonce is taken."""
    text = f"{getattr(exc, 'message', '')} {exc}".lower()
    return any(words in text for words in NONCE_CONFLICTS)


def send(call: Callable[[], object], *, nonces: Callable[[], tuple[int, int]], what: str, address: str,
         patience_s: float = DEFAULT_PATIENCE_S, attempts: int = 3, sleep=time.sleep, clock=time.monotonic):
    """``call()`` (which signs and sends), sent again after a nonce conflict once the nonce is free.

    Args:
        call: sends the transaction and returns its receipt (an ape contract call).
        nonces: the account's (mined, pending) transaction counts, read from the node now.
        what: what the transaction does, for the messages ("settling channel 0x..").
        address: the sending account, for the messages.
        patience_s: longest wait for the other transaction to be mined, per conflict.
        attempts: sends in all.

    Raises:
        NonceInUse: the nonce stayed taken (``patience_s`` passed, or ``attempts`` conflicts).
        Exception: whatever ``call`` raised for any other reason.
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if not is_nonce_conflict(exc):
                raise
            mined, pending = nonces()
            log.warning("%s: the nonce of %s is taken by a pending transaction (%d mined, %d pending): waiting "
                        "for it before sending again (try %d of %d)", what, address, mined, pending, attempt, attempts)
            deadline = clock() + patience_s
            while pending > mined and clock() < deadline:
                sleep(POLL_S)
                mined, pending = nonces()
            if pending > mined:
                raise NonceInUse(f"{what}: account {address} has {pending - mined} transaction(s) pending from "
                                 f"elsewhere (another warren process or a wallet?) that were not mined within "
                                 f"{patience_s:g} s; speed them up or wait, then retry") from None
    raise NonceInUse(f"{what}: account {address} kept losing its nonce to other transactions ({attempts} tries); "
                     f"send from one place at a time")


def rpc_nonces(address: str) -> tuple[int, int]:
    """(mined, pending) transaction counts of ``address`` on ape's connected chain."""
    from ape import chain

    web3 = chain.provider.web3
    return int(web3.eth.get_transaction_count(address, "latest")), int(web3.eth.get_transaction_count(address, "pending"))


def send_as(account, call: Callable[[], object], what: str, *, mined_patience_s: float = DEFAULT_MINED_PATIENCE_S,
            **kwargs):
    """:func:`send` for an ape account on ape's connected chain; returns the receipt once mined."""
    address = str(getattr(account, "address", account))  # read only for a conflict's messages and counts
    receipt = send(call, nonces=lambda: rpc_nonces(address), what=what, address=address, **kwargs)
    return mined(receipt, what, patience_s=mined_patience_s)


def mined(receipt, what: str, *, patience_s: float = DEFAULT_MINED_PATIENCE_S, sleep=time.sleep,
          clock=time.monotonic):
    """ape's ``receipt`` once its transaction is in a block (at once if it is already).

    Raises:
        TransactionDropped: the node no longer knows the transaction, or it stayed pending ``patience_s``.
    """
    block = getattr(receipt, "block_number", None)
    if block is not None and block > 0:  # ape gives a pending transaction's receipt block -1
        return receipt
    from ape import chain
    from web3.exceptions import TransactionNotFound

    web3, txn_hash = chain.provider.web3, str(receipt.txn_hash)
    deadline = clock() + patience_s
    while True:
        try:
            if web3.eth.get_transaction_receipt(txn_hash)["blockNumber"] is not None:
                return chain.provider.get_receipt(txn_hash)
        except TransactionNotFound:
            pass
        try:
            web3.eth.get_transaction(txn_hash)
        except TransactionNotFound:
            raise TransactionDropped(f"{what}: transaction {txn_hash} was dropped by the node before any block "
                                     "took it; it will be sent again") from None
        if clock() >= deadline:
            raise TransactionDropped(f"{what}: transaction {txn_hash} was not mined within {patience_s:g} s "
                                     "(gas price too low?); it will be sent again") from None
        sleep(MINED_POLL_S)
