"""EIP-712 typed data Warren signs: payment receipts, cooperative closes, close requests, revocations.

All share one domain (name "Warren", version "1") and differ only in the verifying contract:
payment_channels (or the voucher pool holding a voucher channel) for receipts, closes and close
requests, revocation_registry for revocations (see DESIGN.md, "Money").
eth-account does the hashing and signing; this module only fixes the types and fields.

A node verifies thousands of receipts a second, and eth-account's generic typed-data encoder costs
about 0.5 ms a receipt; :func:`fast_digest` / :func:`fast_recover` hash these fixed flat types
directly (cached domain separator, keccak of the ABI words) and recover with libsecp256k1 through
coincurve (about 20x faster). A test checks both paths agree on many random messages.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import coincurve
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
    "domain_separator",
    "fast_digest",
    "fast_recover",
    "fast_sign",
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


# -- the fast path (same digests; a test checks them against eth-account's) -----------------------

#: keccak256 of the EIP712Domain type string (EIP-712, "Definition of domainSeparator").
_DOMAIN_TYPEHASH = keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
#: secp256k1 group order n, and n / 2: a higher s is malleable (EIP-2), the contracts refuse it.
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_SECP256K1_HALF_N = _SECP256K1_N // 2


@functools.lru_cache(maxsize=256)
def domain_separator(chain_id: int, verifying_contract: str) -> bytes:
    """The EIP-712 domain separator of Warren's domain on one contract (cached: a node has a few)."""
    return keccak(_DOMAIN_TYPEHASH + keccak(DOMAIN_NAME.encode()) + keccak(DOMAIN_VERSION.encode())
                  + chain_id.to_bytes(32, "big") + bytes(12) + bytes.fromhex(verifying_contract[2:]))


@functools.lru_cache(maxsize=None)
def _type_hash(cls) -> bytes:
    fields = ",".join(f"{field['type']} {field['name']}" for field in cls.FIELDS)
    return keccak(f"{cls.PRIMARY_TYPE}({fields})".encode())


def _word(kind: str, value) -> bytes:
    if kind == "bytes32":
        if len(value) != 32:
            raise ValueError(f"bytes32 field has {len(value)} bytes")
        return bytes(value)
    if kind == "uint256":
        return value.to_bytes(32, "big")  # OverflowError for negative or >= 2**256
    raise TypeError(f"no fast encoding for {kind}")  # pragma: no cover - every Warren type is flat


def fast_digest(message: Message, chain_id: int, verifying_contract: str) -> bytes:
    """:func:`digest`, computed directly: keccak256(0x19 0x01 || domain separator || struct hash).

    Warren's types are flat (bytes32 and uint256 fields only), so the struct hash is keccak256 of the
    type hash followed by each field as one 32-byte word (EIP-712, "Definition of encodeData").
    """
    cls = type(message)
    body = b"".join(_word(field["type"], getattr(message, field["name"])) for field in cls.FIELDS)
    struct_hash = keccak(_type_hash(cls) + body)
    return keccak(b"\x19\x01" + domain_separator(chain_id, verifying_contract) + struct_hash)


def fast_sign(message: Message, private_key: bytes | str, chain_id: int, verifying_contract: str) -> bytes:
    """:func:`sign`, computed directly with libsecp256k1 (coincurve): the same 65 bytes r || s || v.

    Both use RFC 6979 deterministic nonces and low s, so the signatures are identical (a test checks);
    this one skips eth-account's typed-data encoder, which costs most of a receipt's signing time.
    """
    key = bytes.fromhex(private_key[2:] if private_key.startswith("0x") else private_key) \
        if isinstance(private_key, str) else bytes(private_key)
    raw = coincurve.PrivateKey(key).sign_recoverable(fast_digest(message, chain_id, verifying_contract), hasher=None)
    return raw[:64] + bytes([raw[64] + 27])


def fast_recover(message: Message, signature: bytes, chain_id: int, verifying_contract: str) -> str:
    """The checksummed signer of a message, as :func:`recover`, but stricter like the contracts:
    exactly 65 bytes, v in {27, 28}, 0 < r < n and 0 < s <= n / 2 (EIP-2).

    Raises:
        ValueError: the signature is malformed, malleable or unrecoverable.
    """
    if len(signature) != 65:
        raise ValueError(f"a signature has 65 bytes, not {len(signature)}")
    v = signature[64]
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if v not in (27, 28) or not 0 < r < _SECP256K1_N or not 0 < s <= _SECP256K1_HALF_N:
        raise ValueError("malleable or malformed signature")
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            bytes(signature[:64]) + bytes([v - 27]), fast_digest(message, chain_id, verifying_contract),
            hasher=None)
    except Exception as exc:  # coincurve raises plain Exception for an unrecoverable point
        raise ValueError(f"unrecoverable signature: {exc}") from None
    return to_checksum_address(keccak(public.format(compressed=False)[1:])[-20:])
