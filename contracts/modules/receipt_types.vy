# pragma version ~=0.4.3
"""
@title EIP-712 struct hashes of Warren's channel messages
@license AGPL-3.0-or-later
@author Warren contributors
@notice The two messages a channel contract checks (DESIGN.md, "Money";
        agents/chain/eip712.py builds the same types):
        `Receipt(bytes32 channel_id,uint256 cumulative_bytes,uint256 cumulative_amount)`,
        signed by the channel's payment signer, and
        `CooperativeClose(bytes32 channel_id,uint256 cumulative_bytes,uint256 cumulative_amount)`,
        signed by the node operator, and (voucher channels, whose signer
        holds no gas money) `CloseRequest(bytes32 channel_id)`, signed by the
        payment signer so that anyone may start a unilateral close. Stateless: each contract hashes these
        with its own EIP-712 domain (payment_channels and every voucher_pool
        are verifying contracts of their own channels), so a message never
        passes at another contract.
"""

RECEIPT_TYPEHASH: constant(bytes32) = keccak256(
    "Receipt(bytes32 channel_id,uint256 cumulative_bytes,uint256 cumulative_amount)"
)
CLOSE_TYPEHASH: constant(bytes32) = keccak256(
    "CooperativeClose(bytes32 channel_id,uint256 cumulative_bytes,uint256 cumulative_amount)"
)
CLOSE_REQUEST_TYPEHASH: constant(bytes32) = keccak256("CloseRequest(bytes32 channel_id)")


@internal
@pure
def _receipt_hash(channel_id: bytes32, cumulative_bytes: uint256, cumulative_amount: uint256) -> bytes32:
    """
    @notice hashStruct of a Receipt.
    """
    return keccak256(abi_encode(RECEIPT_TYPEHASH, channel_id, cumulative_bytes, cumulative_amount))


@internal
@pure
def _close_hash(channel_id: bytes32, cumulative_bytes: uint256, cumulative_amount: uint256) -> bytes32:
    """
    @notice hashStruct of a CooperativeClose.
    """
    return keccak256(abi_encode(CLOSE_TYPEHASH, channel_id, cumulative_bytes, cumulative_amount))


@internal
@pure
def _close_request_hash(channel_id: bytes32) -> bytes32:
    """
    @notice hashStruct of a CloseRequest.
    """
    return keccak256(abi_encode(CLOSE_REQUEST_TYPEHASH, channel_id))
