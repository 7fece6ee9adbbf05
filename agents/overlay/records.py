"""Signed overlay records: PeerRecord, IPRecord, RevocationRecord.

Records live in the DHT under a key on the ring and are accepted only if they pass every check of
:class:`RecordValidator`: size (at most :data:`MAX_RECORD_SIZE` bytes), well-formedness, a signature,
a TTL that has not run out and is not too long, the node id matching the WireGuard key inside
(``node_id = keccak256(wg_key)``), the node not revoked, and the signer being the operator the
directory lists for that node id. Replays (an older sequence number than the one held) are refused by
the store (:mod:`agents.overlay.store`), which remembers sequence numbers.

Signatures: PeerRecord and IPRecord are signed by the node's operator key (an Ethereum account) with
EIP-191 ``personal_sign`` over :data:`SIGN_PREFIX` and the record's bytes up to the signature, using
eth-account. RevocationRecords carry a quorum of guardian signatures over the EIP-712
``Revocation(bytes32 node_id,bytes32 evidence_hash,uint256 nonce)`` of revocation_registry
(DESIGN.md, "Money"; :mod:`agents.chain.eip712`), so the same certificate is valid on chain and in the
overlay.

Layout (big-endian)::

    version u8 (=1) | kind u8 | seq u64 | expires u64 (unix s) | node_id 32 | body_len u16 | body | sig

    PEER (1):       wg_key 32 | region_len u8 | region ascii | price u128 (token wei per GiB, as node_registry) |
                    n u8 | n endpoints (family u8 | ip | port u16) [| capacity_kbps u64]   key = node_id
                    (the capacity the node advertises, what challengers measure it against; absent
                    when the node advertises none, so such records are byte for byte as before)
    IP (2):         wg_key 32 | net_len u8 | network utf-8 | family u8 | ip  key = ip_key(network, ip)
    REVOCATION (3): evidence_hash 32 | nonce u64 | n u8 | n guardian sigs (65 each); no outer sig;
                    key = revocation_key(node_id)
    MEMBER (4):     wg_key 32 | net_len u8 | network | member address 20 | family u8 | virtual ip;
                    signed by the mesh group's owner (GroupVPN's group CA); key = node_id

Mesh groups (:mod:`agents.overlay.mesh`) need no stake: a MEMBER certificate from the group owner
binds a node id to the member's signing address and its virtual IP; the directory learns members
from certificates it validates, and an IPRecord must claim the certified IP.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Protocol

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_checksum_address

from .errors import LocalProtocolError, RecordRejected
from .ids import node_id_from_wg_key
from .wire import decode_address, encode_address

__all__ = [
    "MAX_RECORD_SIZE",
    "MAX_TTL",
    "MAX_CERT_TTL",
    "SIGN_PREFIX",
    "PEER",
    "IP",
    "REVOCATION",
    "MEMBER",
    "Record",
    "OperatorDirectory",
    "InMemoryDirectory",
    "RevocationAuthority",
    "RecordValidator",
    "ip_key",
    "revocation_key",
    "make_peer_record",
    "make_ip_record",
    "make_revocation_record",
    "make_member_certificate",
    "decode_record",
]

PEER, IP, REVOCATION, MEMBER = 1, 2, 3, 4
_VERSION = 1
# 1024 bytes: a record must fit one overlay datagram (wire.MAX_DATAGRAM = 1216) with the 37-byte
# header and the STORE/BROADCAST framing; a revocation with a 10-guardian quorum is 2 + 16 + 32 + 2 +
# 41 + 650 = 743 bytes.
MAX_RECORD_SIZE = 1024
# One day: a record outlives its publisher by at most this long; publishers republish well within it
# (OverlayConfig.republish_interval, 10 minutes).
MAX_TTL = 24 * 3600
MAX_CLOCK_SKEW = 300  # seconds of clock difference tolerated between publisher and holder
# A year: a mesh membership certificate is issued once by the group owner (who may be offline), not
# republished; revocation, not expiry, is how a member is removed early.
MAX_CERT_TTL = 365 * 24 * 3600
SIGN_PREFIX = b"warren overlay record v1\x00"

_HEAD = struct.Struct(">BBQQ32sH")


def ip_key(network: str, ip: str) -> int:
    """DHT key of an IPRecord: keccak256("warren-ip" | network | 0 | packed ip)."""
    packed = ipaddress.ip_address(ip).packed
    return int.from_bytes(keccak(b"warren-ip\x00" + network.encode() + b"\x00" + packed), "big")


def revocation_key(node_id: int) -> int:
    """DHT key under which revocations of ``node_id`` are stored."""
    return int.from_bytes(keccak(b"warren-revocation\x00" + node_id.to_bytes(32, "big")), "big")


@dataclass(frozen=True)
class Record:
    """A decoded record (fields of other kinds are empty).

    Attributes:
        kind: PEER, IP or REVOCATION.
        seq: publisher's sequence number; a higher one replaces a lower one.
        expires: unix time (seconds) after which the record is void.
        node_id: the node the record is about.
        key: its DHT key.
        wg_key: WireGuard public key (PEER, IP).
        region: free-form region label (PEER).
        price: token wei per GiB, as node_registry holds it (PEER).
        endpoints: (ip, port) endpoints (PEER).
        capacity_kbps: the bandwidth the node advertises, kilobits per second; 0: none (PEER).
        network: mesh network name (IP).
        ip: virtual IP address (IP).
        evidence_hash: hash of the evidence bundle (REVOCATION).
        nonce: revocation nonce (REVOCATION).
        guardian_sigs: guardian signatures (REVOCATION).
        member: the member's signing address (MEMBER).
        signature: operator signature (PEER, IP).
        raw: the encoded record.
    """

    kind: int
    seq: int
    expires: int
    node_id: int
    key: int
    wg_key: bytes = b""
    region: str = ""
    price: int = 0
    endpoints: tuple = ()
    capacity_kbps: int = 0
    network: str = ""
    ip: str = ""
    evidence_hash: bytes = b""
    nonce: int = 0
    guardian_sigs: tuple = ()
    member: str = ""
    signature: bytes = b""
    raw: bytes = field(default=b"", repr=False)

    @property
    def signed_part(self) -> bytes:
        """The bytes the operator signs (everything before the signature)."""
        return self.raw[: len(self.raw) - len(self.signature)]


class OperatorDirectory(Protocol):
    """Who may sign for a node id. On chain: agents.chain.directory.RegistryDirectory; in tests: a dict."""

    def operator_of(self, node_id: int) -> str | None:
        """Checksummed operator address registered for ``node_id``, or None if unknown."""

    def is_revoked(self, node_id: int) -> bool:
        """Whether the node id is revoked (revocation_registry, or a revocation heard in the overlay)."""


class InMemoryDirectory:
    """An :class:`OperatorDirectory` backed by a dict (tests, simulations, mesh groups).

    Args:
        operators: node_id -> operator address.
    """

    def __init__(self, operators: dict | None = None) -> None:
        self.operators = {k: to_checksum_address(v) for k, v in (operators or {}).items()}
        self.revoked: set[int] = set()

    def register(self, node_id: int, operator: str) -> None:
        """Bind a node id to an operator address (as node_registry.register does)."""
        self.operators[node_id] = to_checksum_address(operator)

    def operator_of(self, node_id: int) -> str | None:
        return self.operators.get(node_id)

    def is_revoked(self, node_id: int) -> bool:
        return node_id in self.revoked


@dataclass
class RevocationAuthority:
    """Who may revoke: ``quorum`` distinct guardians of revocation_registry (EIP-712 domain fields).

    Attributes:
        guardians: guardian addresses.
        quorum: signatures needed.
        chain_id: EIP-712 domain chain id.
        verifying_contract: revocation_registry address.
    """

    guardians: set
    quorum: int
    chain_id: int
    verifying_contract: str

    def check(self, node_id: int, evidence_hash: bytes, nonce: int, sigs) -> bool:
        """Whether ``sigs`` hold at least ``quorum`` distinct guardian signatures."""
        from agents.chain.eip712 import Revocation, recover

        guardians = {to_checksum_address(g) for g in self.guardians}
        msg = Revocation(node_id.to_bytes(32, "big"), evidence_hash, nonce)
        signers = set()
        for s in sigs:
            try:
                signers.add(recover(msg, s, self.chain_id, self.verifying_contract))
            except Exception:  # eth-account raises several types on a malformed signature
                continue
        return len(signers & guardians) >= self.quorum


# ---------------------------------------------------------------------------------------- encoding


def _pack(kind: int, seq: int, expires: int, node_id: int, body: bytes) -> bytes:
    return _HEAD.pack(_VERSION, kind, seq, expires, node_id.to_bytes(32, "big"), len(body)) + body


def _sign(unsigned: bytes, operator_key) -> bytes:
    return bytes(Account.sign_message(encode_defunct(primitive=SIGN_PREFIX + unsigned), operator_key).signature)


def make_peer_record(
    operator_key, wg_key: bytes, endpoints, *, seq: int, expires: int, region: str = "", price: int = 0,
    capacity_kbps: int = 0,
) -> bytes:
    """Build and sign a PeerRecord (node_id -> WireGuard key, endpoints, region, price, advertised capacity)."""
    reg = region.encode("ascii")
    eps = tuple(endpoints)
    if len(reg) > 32 or len(eps) > 8:
        raise LocalProtocolError("overlay: region too long or too many endpoints")
    if not 0 <= capacity_kbps < 1 << 64:
        raise LocalProtocolError("overlay: capacity does not fit the PeerRecord (8 bytes)")
    body = wg_key + bytes([len(reg)]) + reg + price.to_bytes(16, "big") + bytes([len(eps)])
    body += b"".join(encode_address(e) for e in eps)
    if capacity_kbps:
        body += capacity_kbps.to_bytes(8, "big")
    unsigned = _pack(PEER, seq, expires, node_id_from_wg_key(wg_key), body)
    return unsigned + _sign(unsigned, operator_key)


def make_ip_record(operator_key, wg_key: bytes, network: str, ip: str, *, seq: int, expires: int) -> bytes:
    """Build and sign an IPRecord (virtual IP in a mesh network -> node)."""
    net = network.encode()
    packed = ipaddress.ip_address(ip).packed
    if len(net) > 64:
        raise LocalProtocolError("overlay: network name too long")
    body = wg_key + bytes([len(net)]) + net + bytes([len(packed)]) + packed
    unsigned = _pack(IP, seq, expires, node_id_from_wg_key(wg_key), body)
    return unsigned + _sign(unsigned, operator_key)


def make_revocation_record(
    node_id: int, evidence_hash: bytes, nonce: int, guardian_sigs, *, expires: int
) -> bytes:
    """Build a RevocationRecord from guardian signatures over the EIP-712 Revocation."""
    sigs = tuple(guardian_sigs)
    body = evidence_hash + nonce.to_bytes(8, "big") + bytes([len(sigs)]) + b"".join(sigs)
    return _pack(REVOCATION, nonce, expires, node_id, body)


def make_member_certificate(owner_key, wg_key: bytes, network: str, member_address: str, ip: str, *,
                            seq: int, expires: int) -> bytes:
    """The group owner certifies a mesh member: node (WireGuard key), signing address, virtual IP."""
    net = network.encode()
    packed = ipaddress.ip_address(ip).packed
    if len(net) > 64:
        raise LocalProtocolError("overlay: network name too long")
    body = (wg_key + bytes([len(net)]) + net + bytes.fromhex(to_checksum_address(member_address)[2:])
            + bytes([len(packed)]) + packed)
    unsigned = _pack(MEMBER, seq, expires, node_id_from_wg_key(wg_key), body)
    return unsigned + _sign(unsigned, owner_key)


def decode_record(raw: bytes) -> Record:
    """Parse a record; raises RecordRejected("oversized"/"malformed"/"unsigned")."""
    if len(raw) > MAX_RECORD_SIZE:
        raise RecordRejected("oversized", f"{len(raw)} bytes")
    if len(raw) < _HEAD.size:
        raise RecordRejected("malformed", "too short")
    ver, kind, seq, expires, nid, blen = _HEAD.unpack_from(raw)
    node_id = int.from_bytes(nid, "big")
    if ver != _VERSION:
        raise RecordRejected("malformed", "version")
    end = _HEAD.size + blen
    if end > len(raw):
        raise RecordRejected("malformed", "truncated body")
    body, sig = raw[_HEAD.size : end], raw[end:]
    try:
        if kind == PEER:
            wg = body[:32]
            rl = body[32]
            region = body[33 : 33 + rl].decode("ascii")
            p = 33 + rl
            price = int.from_bytes(body[p : p + 16], "big")
            n = body[p + 16]
            p += 17
            eps = []
            for _ in range(n):
                a, p = decode_address(body, p)
                eps.append(a)
            capacity = 0
            if len(body) == p + 8:
                capacity = int.from_bytes(body[p:], "big")
                if capacity == 0:
                    raise ValueError("an advertised capacity of 0 is written as none")
                p += 8
            if len(wg) != 32 or p != len(body):
                raise ValueError("peer body length")
            rec = Record(PEER, seq, expires, node_id, node_id, wg_key=wg, region=region, price=price,
                         endpoints=tuple(eps), capacity_kbps=capacity, signature=sig, raw=raw)
        elif kind == IP:
            wg = body[:32]
            nl = body[32]
            network = body[33 : 33 + nl].decode()
            il = body[33 + nl]
            packed = body[34 + nl : 34 + nl + il]
            if il not in (4, 16) or len(packed) != il or 34 + nl + il != len(body) or len(wg) != 32:
                raise ValueError("ip body length")
            ip = str(ipaddress.ip_address(packed))
            rec = Record(IP, seq, expires, node_id, ip_key(network, ip), wg_key=wg, network=network, ip=ip,
                         signature=sig, raw=raw)
        elif kind == REVOCATION:
            ev = body[:32]
            nonce = int.from_bytes(body[32:40], "big")
            n = body[40]
            if len(body) != 41 + 65 * n or len(ev) != 32:
                raise ValueError("revocation body length")
            sigs = tuple(body[41 + 65 * i : 106 + 65 * i] for i in range(n))
            if sig:
                raise ValueError("revocation has trailing bytes")
            rec = Record(REVOCATION, seq, expires, node_id, revocation_key(node_id), evidence_hash=ev,
                         nonce=nonce, guardian_sigs=sigs, raw=raw)
        elif kind == MEMBER:
            wg = body[:32]
            nl = body[32]
            network = body[33 : 33 + nl].decode()
            p = 33 + nl
            member = to_checksum_address(body[p : p + 20])
            il = body[p + 20]
            packed = body[p + 21 : p + 21 + il]
            if il not in (4, 16) or len(packed) != il or p + 21 + il != len(body) or len(wg) != 32:
                raise ValueError("member body length")
            rec = Record(MEMBER, seq, expires, node_id, node_id, wg_key=wg, network=network, member=member,
                         ip=str(ipaddress.ip_address(packed)), signature=sig, raw=raw)
        else:
            raise ValueError("unknown kind")
    except RecordRejected:
        raise
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise RecordRejected("malformed", str(exc)) from exc
    return rec


class RecordValidator:
    """Decides whether a record is acceptable now.

    Args:
        directory: maps node ids to operators and knows revocations.
        authority: who may revoke (None: revocation records are refused as ``unsigned``).
        max_ttl: longest allowed remaining lifetime, seconds.
    """

    def __init__(self, directory: OperatorDirectory, authority: RevocationAuthority | None = None,
                 max_ttl: int = MAX_TTL) -> None:
        self.directory = directory
        self.authority = authority
        self.max_ttl = max_ttl
        self.revoked: set[int] = set()  # node ids revoked by certificates heard in the overlay

    def is_revoked(self, node_id: int) -> bool:
        """Revoked on chain (directory) or by a valid certificate seen here."""
        return node_id in self.revoked or self.directory.is_revoked(node_id)

    def validate(self, raw: bytes, now: float) -> Record:
        """The decoded record if acceptable at unix time ``now``; raises RecordRejected otherwise,
        ``unverifiable`` when the directory or the revocation authority cannot answer (the chain is
        away): a record that cannot be checked is not taken, and the receive path goes on."""
        try:
            return self._validate(raw, now)
        except RecordRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - the directory's RPC failures, whatever their type
            raise RecordRejected("unverifiable", f"{type(exc).__name__}: {exc}") from exc

    def _validate(self, raw: bytes, now: float) -> Record:
        rec = decode_record(raw)
        if rec.expires <= now:
            raise RecordRejected("expired")
        if rec.expires > now + (MAX_CERT_TTL if rec.kind == MEMBER else self.max_ttl) + MAX_CLOCK_SKEW:
            raise RecordRejected("ttl-too-long")
        if rec.kind == REVOCATION:
            if not rec.guardian_sigs or self.authority is None:
                raise RecordRejected("unsigned")
            if not self.authority.check(rec.node_id, rec.evidence_hash, rec.nonce, rec.guardian_sigs):
                raise RecordRejected("mis-signed", "no guardian quorum")
            return rec
        if len(rec.signature) == 0 or rec.signature == b"\x00" * 65:
            raise RecordRejected("unsigned")
        if len(rec.signature) != 65:
            raise RecordRejected("mis-signed", "signature length")
        if node_id_from_wg_key(rec.wg_key) != rec.node_id:
            raise RecordRejected("id-mismatch")
        if self.is_revoked(rec.node_id):
            raise RecordRejected("revoked")
        if rec.kind == MEMBER:
            return self._member(rec)
        operator = self.directory.operator_of(rec.node_id)
        if operator is None:
            raise RecordRejected("unknown-node")
        try:
            signer = Account.recover_message(encode_defunct(primitive=SIGN_PREFIX + rec.signed_part),
                                             signature=rec.signature)
        except Exception as exc:  # eth-keys raises BadSignature/ValueError variants
            raise RecordRejected("mis-signed", "unrecoverable") from exc
        if signer != operator:
            raise RecordRejected("mis-signed", f"signed by {signer}")
        may_claim = getattr(self.directory, "may_claim_ip", None)
        if rec.kind == IP and may_claim is not None and not may_claim(rec.node_id, rec.network, rec.ip):
            raise RecordRejected("ip-not-certified")
        return rec

    def _member(self, rec: Record) -> Record:
        owner = getattr(self.directory, "group_owner", None)
        if owner is None:
            raise RecordRejected("unknown-node", "no mesh group here")
        try:
            signer = Account.recover_message(encode_defunct(primitive=SIGN_PREFIX + rec.signed_part),
                                             signature=rec.signature)
        except Exception as exc:  # eth-keys raises BadSignature/ValueError variants
            raise RecordRejected("mis-signed", "unrecoverable") from exc
        if signer != owner or rec.network != self.directory.network:
            raise RecordRejected("mis-signed", "not the group owner's certificate")
        self.directory.admit(rec)
        return rec
