"""EIP-712 typed data Warren signs: payment receipts, cooperative closes, close requests, revocations.

All share one domain (name "Warren", version "1") and differ only in the verifying contract:
payment_channels (or the voucher pool holding a voucher channel) for receipts, closes and close
requests, revocation_registry for revocations (see DESIGN.md, "Money").
eth-account does the hashing and signing; this module only fixes the types and fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "CloseRequest",
    "CooperativeClose",
    "Receipt",
    "Revocation",
    "digest",
    "recover",
    "sign",
    "typed_data",
]

DOMAIN_NAME = "Warren"
DOMAIN_VERSION = "1"

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


@dataclass(frozen=True)
class Receipt:
    """A cumulative payment receipt: only the latest one for a channel matters.

    Attributes:
        channel_id: 32-byte channel id from payment_channels.
        cumulative_bytes: bytes carried since the channel opened.
        cumulative_amount: token wei owed since the channel opened.
    """

    channel_id: bytes
    cumulative_bytes: int
    cumulative_amount: int

    PRIMARY_TYPE = "Receipt"
    FIELDS = (
        {"name": "channel_id", "type": "bytes32"},
        {"name": "cumulative_bytes", "type": "uint256"},
        {"name": "cumulative_amount", "type": "uint256"},
    )


@dataclass(frozen=True)
class CooperativeClose(Receipt):
    """The node operator's consent to close a channel at a final receipt, at once.

    Same fields as :class:`Receipt`; payment_channels checks it against its
    ``CooperativeClose(bytes32 channel_id,uint256 cumulative_bytes,uint256 cumulative_amount)`` type.
    """

    PRIMARY_TYPE = "CooperativeClose"


@dataclass(frozen=True)
class CloseRequest:
    """A voucher channel's payment signer asking for a unilateral close (voucher_pool's domain).

    The signer of a voucher channel is a fresh key with no gas money: with this signature anyone
    may call ``voucher_pool.start_close_for`` for it (``CloseRequest(bytes32 channel_id)``).

    Attributes:
        channel_id: the voucher channel's 32-byte id.
    """

    channel_id: bytes

    PRIMARY_TYPE = "CloseRequest"
    FIELDS = ({"name": "channel_id", "type": "bytes32"},)


@dataclass(frozen=True)
class Revocation:
    """A guardian's vote to revoke a node id permanently.

    Attributes:
        node_id: keccak256 of the node's WireGuard public key.
        evidence_hash: hash of the off-chain evidence bundle.
        nonce: distinguishes repeated proposals for the same node.
    """

    node_id: bytes
    evidence_hash: bytes
    nonce: int

    PRIMARY_TYPE = "Revocation"
    FIELDS = (
        {"name": "node_id", "type": "bytes32"},
        {"name": "evidence_hash", "type": "bytes32"},
        {"name": "nonce", "type": "uint256"},
    )


Message = Receipt | CooperativeClose | CloseRequest | Revocation


def typed_data(message: Message, chain_id: int, verifying_contract: str) -> dict:
    """The full EIP-712 structure (as eth_signTypedData_v4 takes it) for a message."""
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, message.PRIMARY_TYPE: list(message.FIELDS)},
        "primaryType": message.PRIMARY_TYPE,
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(verifying_contract),
        },
        "message": {field["name"]: getattr(message, field["name"]) for field in message.FIELDS},
    }


def digest(message: Message, chain_id: int, verifying_contract: str) -> bytes:
    """The 32-byte EIP-712 digest a contract recovers the signer from.

    EIP-191 version 0x01: keccak256(0x19 || 0x01 || domain separator || struct hash), from the public
    fields of eth-account's SignableMessage rather than its private hashing helper.
    """
    signable = encode_typed_data(full_message=typed_data(message, chain_id, verifying_contract))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign(message: Message, private_key: bytes | str, chain_id: int, verifying_contract: str) -> bytes:
    """Sign a message; returns the 65-byte signature r || s || v (v in {27, 28}, low s)."""
    signable = encode_typed_data(full_message=typed_data(message, chain_id, verifying_contract))
    return bytes(Account.sign_message(signable, private_key).signature)


def recover(message: Message, signature: bytes, chain_id: int, verifying_contract: str) -> str:
    """The checksummed address that signed a message (raises on a malformed signature)."""
    signable = encode_typed_data(full_message=typed_data(message, chain_id, verifying_contract))
    return Account.recover_message(signable, signature=signature)
