"""What the hypothesis state machines of payment_channels and voucher_pool share: the channel rules.

Both contracts settle cumulative receipts under the same rules (docs/CONTRACTS.md), so the model of
"which revert should this settle or cooperative close give" is one function, and so is the way a
machine sends a step it expects to succeed or to revert with an exact reason. It also holds the
model of payment_channels' channel id, which commits to the node.
"""

import pytest
from eth_abi import encode
from eth_utils import keccak
from web3.exceptions import ContractLogicError

__all__ = ["CLOSING", "FINAL", "OPEN", "STEP_OFFSETS", "channel_id", "pick", "send_expecting", "settle_error"]

OPEN, CLOSING, FINAL = 1, 2, 3
#: Landing one second before, at, or after the end of a challenge period.
STEP_OFFSETS = (-1, 0, 1)


def channel_id(chain_id: int, contract: str, node_id: bytes, client: str, signer: str) -> bytes:
    """payment_channels' id of the channel of (node, client, payment signer):
    keccak256(abi_encode(chain.id, contract, node_id, client, signer)), as docs/CONTRACTS.md says."""
    return keccak(encode(["uint256", "address", "bytes32", "address", "address"],
                         [chain_id, contract, node_id, client, signer]))


def settle_error(ch, nbytes: int, amount: int, *, strict: bool, now: int, node_revoked: bool) -> str | None:
    """The revert reason a settle (``strict``: both figures must grow) or a cooperative close
    (figures may stay) of (``nbytes``, ``amount``) should give at block time ``now + 1``, or None.

    ``ch`` is a model channel with ``state``, ``close_at``, ``settled``, ``settled_bytes`` and
    ``deposit``.
    """
    if ch.state == FINAL:
        return "channel finalised"
    # Settling and closing cooperatively share one window: before close_at.
    if ch.state == CLOSING and now + 1 >= ch.close_at:
        return "challenge period over"
    if node_revoked:
        return "node revoked"
    if amount < ch.settled or (strict and amount == ch.settled):
        return "stale amount"
    if nbytes < ch.settled_bytes or (strict and nbytes == ch.settled_bytes):
        return "stale bytes"
    if amount > ch.deposit:
        return "amount exceeds deposit"
    return None


def pick(channels: list, index: int):
    """Mostly a channel that is still live (so sequences go deep); sometimes any channel."""
    live = [ch for ch in channels if ch.state != FINAL]
    if live and index < 85:
        return live[index % len(live)]
    return channels[index % len(channels)]


def send_expecting(web3, contract, expected_error: str | None, call, *args, sender):
    """Send ``call(*args)``, or, when ``expected_error`` is given, check that it reverts with exactly
    "<contract name>: <expected_error>".

    A step expected to revert is an eth_call against the pending block (same state, same timestamp
    the transaction would be mined at): ape-foundry fetches and prints a full call trace for every
    reverted transaction, which makes one ~30 times slower than the call.

    Returns:
        The transaction receipt, or None for an expected revert.
    """
    if expected_error:
        address = getattr(sender, "address", sender)
        probe = {"from": address, "to": contract.address, "data": call.encode_input(*args)}
        with pytest.raises(ContractLogicError) as reverted:
            web3.eth.call(probe, "pending")
        name = contract.contract_type.name
        assert reverted.value.message == f"execution reverted: {name}: {expected_error}"
        return None
    return call(*args, sender=sender)
