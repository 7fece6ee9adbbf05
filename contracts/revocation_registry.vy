# pragma version ~=0.4.3
"""
@title Warren revocation registry: quorum-signed, permanent revocation of node ids
@custom:contract-name revocation_registry
@license AGPL-3.0-or-later
@author Warren contributors
@notice A node id is revoked when a quorum of the current guardian set has signed the EIP-712
        message Revocation(bytes32 node_id,bytes32 evidence_hash,uint256 nonce) in the domain
        {name "Warren", version "1", chainId, verifyingContract = this contract}. Anyone may
        submit the signatures. node_registry.revoke then marks the node revoked for good, slashes
        its whole remaining stake to the treasury and bars its WireGuard key from registering
        again; NodeRevoked is the event the overlay broadcasts.
@custom:security Signers must be given in strictly ascending address order: one comparison per
                 signature rejects duplicates, with no storage and no quadratic scan. Only
                 65-byte signatures with v in {27, 28} and s in the lower half of the curve order
                 (EIP-2) are accepted, so a signature has exactly one accepted encoding. Replay on
                 another chain or contract is stopped by the domain separator (chain id and this
                 address are in it, recomputed if the chain id changes after a fork); replay here
                 is moot because a node can be revoked once. Slashed stake goes to the owner-set
                 treasury, not to the submitter, so nobody gains by front-running a submission.
                 The guardian set and quorum are owner-managed for now (docs/GOVERNANCE.md).
"""


from snekmate.auth import ownable

# @dev Canonical signature recovery (stateless, so only imported).
from modules import signature_recovery
from snekmate.utils import eip712_domain_separator

from interfaces import revocation_registry as IRevocationRegistry

# @dev node_registry holds stakes and roles and does the slashing (docs/CONTRACTS.md).
from interfaces import node_registry as INodeRegistry

implements: IRevocationRegistry

# @dev ownable holds the owner who manages the guardian set, quorum and treasury.
initializes: ownable

# @dev eip712_domain_separator caches the "Warren"/"1" domain separator and answers EIP-5267.
initializes: eip712_domain_separator

# @dev Owner view and hand-over (to a governance contract later); renouncing is not exported, since
# a frozen guardian set could never drop a compromised guardian.
exports: (ownable.owner, ownable.transfer_ownership, eip712_domain_separator.eip712Domain)


# ---------------------------------------------------------------------------------------------
# EVENTS
# ---------------------------------------------------------------------------------------------

# @dev A node id was revoked; `slashed` (token wei) went to the treasury. The overlay broadcasts it.
event NodeRevoked:
    node_id: indexed(bytes32)
    evidence_hash: bytes32
    nonce: uint256
    slashed: uint256
    submitter: indexed(address)


# @dev A guardian joined the set; `guardian_count` is the new size.
event GuardianAdded:
    guardian: indexed(address)
    guardian_count: uint256


# @dev A guardian left the set; `guardian_count` is the new size.
event GuardianRemoved:
    guardian: indexed(address)
    guardian_count: uint256


# @dev The number of signatures a revocation needs changed.
event QuorumChanged:
    old_quorum: uint256
    new_quorum: uint256


# @dev Revoked stake now goes to `new_treasury`.
event TreasuryChanged:
    old_treasury: indexed(address)
    new_treasury: indexed(address)


# ---------------------------------------------------------------------------------------------
# CONSTANTS
# ---------------------------------------------------------------------------------------------

# @dev Largest guardian set; also the most signatures one revocation may carry.
MAX_GUARDIANS: constant(uint256) = 32

# @dev EIP-712 type hash of the signed message (agents/chain/eip712.py builds the same type).
REVOCATION_TYPEHASH: constant(bytes32) = keccak256(
    "Revocation(bytes32 node_id,bytes32 evidence_hash,uint256 nonce)"
)

# @dev EIP-712 domain name and version, shared with payment_channels (DESIGN.md, "Money").
DOMAIN_NAME: constant(String[50]) = "Warren"
DOMAIN_VERSION: constant(String[20]) = "1"


# ---------------------------------------------------------------------------------------------
# STORAGE
# ---------------------------------------------------------------------------------------------

# @dev The node registry that performs the revocation (this contract must be its revoker).
registry: public(immutable(INodeRegistry))

# @dev Membership of the current guardian set.
is_guardian: public(HashMap[address, bool])

# @dev Size of the current guardian set.
guardian_count: public(uint256)

# @dev Distinct guardian signatures a revocation needs (1 <= quorum <= guardian_count).
quorum: public(uint256)

# @dev Receives the stake slashed by a revocation.
treasury: public(address)


# ---------------------------------------------------------------------------------------------
# CONSTRUCTOR
# ---------------------------------------------------------------------------------------------

@deploy
def __init__(registry_: address, treasury_: address, guardians_: DynArray[address, MAX_GUARDIANS], quorum_: uint256):
    """
    @notice Deploy with an initial guardian set; the deployer becomes the owner. node_registry's
            owner must then call set_revoker(this contract).
    @param registry_ The node_registry address.
    @param treasury_ Receives revoked stake.
    @param guardians_ The initial guardians (distinct, non-zero).
    @param quorum_ Signatures a revocation needs (1 to len(guardians_)).
    """
    assert registry_ != empty(address), "revocation_registry: zero address"
    ownable.__init__()
    eip712_domain_separator.__init__(DOMAIN_NAME, DOMAIN_VERSION)
    registry = INodeRegistry(registry_)
    self._set_treasury(treasury_)
    for guardian: address in guardians_:
        self._add_guardian(guardian)
    self._set_quorum(quorum_)


# ---------------------------------------------------------------------------------------------
# REVOCATION
# ---------------------------------------------------------------------------------------------

@external
@nonreentrant
def revoke(node_id: bytes32, evidence_hash: bytes32, nonce: uint256, signatures: DynArray[Bytes[65], MAX_GUARDIANS]) -> uint256:
    """
    @notice Revoke a node id for good, given a quorum of current-guardian signatures over
            Revocation(node_id, evidence_hash, nonce). Anyone may submit.
    @param node_id The node's id (keccak256 of its WireGuard public key).
    @param evidence_hash Hash of the off-chain evidence bundle.
    @param nonce Distinguishes repeated proposals for the same node.
    @param signatures 65-byte r || s || v signatures (v 27 or 28, low s), ordered by signer
           address strictly ascending; at least `quorum`, every one from a current guardian.
    @return uint256 Stake slashed to the treasury, in token wei.
    """
    assert len(signatures) >= self.quorum, "revocation_registry: too few signatures"
    assert not staticcall registry.is_revoked(node_id), "revocation_registry: already revoked"
    digest: bytes32 = self._revocation_digest(node_id, evidence_hash, nonce)
    previous: uint256 = 0
    for signature: Bytes[65] in signatures:
        signer: address = signature_recovery._recover(digest, signature)
        current: uint256 = convert(signer, uint256)
        assert current != previous, "revocation_registry: duplicate signer"
        assert current > previous, "revocation_registry: signers not ascending"
        assert self.is_guardian[signer], "revocation_registry: not a guardian"
        previous = current
    slashed: uint256 = extcall registry.revoke(node_id, self.treasury)
    log NodeRevoked(node_id=node_id, evidence_hash=evidence_hash, nonce=nonce, slashed=slashed, submitter=msg.sender)
    return slashed


@external
@view
def revocation_digest(node_id: bytes32, evidence_hash: bytes32, nonce: uint256) -> bytes32:
    """
    @notice The EIP-712 digest guardians sign for a revocation.
    @param node_id The node's id.
    @param evidence_hash Hash of the evidence bundle.
    @param nonce Proposal nonce.
    @return bytes32 The digest.
    """
    return self._revocation_digest(node_id, evidence_hash, nonce)


@external
@view
def DOMAIN_SEPARATOR() -> bytes32:
    """
    @notice The EIP-712 domain separator ("Warren", "1", chain id, this contract).
    @return bytes32 The domain separator.
    """
    return eip712_domain_separator._domain_separator_v4()


@internal
@view
def _revocation_digest(node_id: bytes32, evidence_hash: bytes32, nonce: uint256) -> bytes32:
    """
    @dev keccak256("\x19\x01" || domain separator || hashStruct(Revocation)), per EIP-712.
    @param node_id The node's id.
    @param evidence_hash Hash of the evidence bundle.
    @param nonce Proposal nonce.
    @return bytes32 The digest.
    """
    struct_hash: bytes32 = keccak256(abi_encode(REVOCATION_TYPEHASH, node_id, evidence_hash, nonce))
    return eip712_domain_separator._hash_typed_data_v4(struct_hash)


# ---------------------------------------------------------------------------------------------
# GUARDIAN SET (owner)
# ---------------------------------------------------------------------------------------------

@external
def add_guardian(guardian: address):
    """
    @notice Add a guardian (owner only).
    @param guardian The guardian's signing address (non-zero, not already a guardian).
    """
    ownable._check_owner()
    self._add_guardian(guardian)


@external
def remove_guardian(guardian: address):
    """
    @notice Remove a guardian (owner only); refused if fewer guardians than the quorum would
            remain (lower the quorum first).
    @param guardian The guardian's signing address.
    """
    ownable._check_owner()
    assert self.is_guardian[guardian], "revocation_registry: not a guardian"
    assert self.guardian_count > self.quorum, "revocation_registry: quorum above guardian count"
    self.is_guardian[guardian] = False
    self.guardian_count -= 1
    log GuardianRemoved(guardian=guardian, guardian_count=self.guardian_count)


@external
def set_quorum(new_quorum: uint256):
    """
    @notice Set how many guardian signatures a revocation needs (owner only).
    @param new_quorum At least 1 and at most the guardian count.
    """
    ownable._check_owner()
    self._set_quorum(new_quorum)


@external
def set_treasury(new_treasury: address):
    """
    @notice Set where revoked stake goes (owner only).
    @param new_treasury The new treasury address, non-zero.
    """
    ownable._check_owner()
    self._set_treasury(new_treasury)


@internal
def _add_guardian(guardian: address):
    """
    @dev Add a guardian and log it.
    @param guardian The guardian's signing address.
    """
    assert guardian != empty(address), "revocation_registry: zero address"
    assert not self.is_guardian[guardian], "revocation_registry: already a guardian"
    assert self.guardian_count < MAX_GUARDIANS, "revocation_registry: too many guardians"
    self.is_guardian[guardian] = True
    self.guardian_count += 1
    log GuardianAdded(guardian=guardian, guardian_count=self.guardian_count)


@internal
def _set_quorum(new_quorum: uint256):
    """
    @dev Set the quorum and log it.
    @param new_quorum At least 1 and at most the guardian count.
    """
    assert new_quorum != 0, "revocation_registry: zero quorum"
    assert new_quorum <= self.guardian_count, "revocation_registry: quorum above guardian count"
    log QuorumChanged(old_quorum=self.quorum, new_quorum=new_quorum)
    self.quorum = new_quorum


@internal
def _set_treasury(new_treasury: address):
    """
    @dev Set the treasury and log it.
    @param new_treasury Non-zero address.
    """
    assert new_treasury != empty(address), "revocation_registry: zero address"
    log TreasuryChanged(old_treasury=self.treasury, new_treasury=new_treasury)
    self.treasury = new_treasury
