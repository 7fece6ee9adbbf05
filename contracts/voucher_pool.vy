# pragma version ~=0.4.3
"""
@title Warren voucher pool
@license AGPL-3.0-or-later
@author Warren contributors
@notice A shielded pool for one fixed denomination of the Warren token
        (deploy one pool per denomination), and the payment channels its
        vouchers fund. A client deposits the denomination together with a
        commitment Poseidon(Poseidon(nullifier), secret); the commitment is
        appended to an on-chain LeanIMT Merkle tree hashed with Poseidon(2).
        Later anyone (typically the node that is paid) redeems the note with
        a Groth16 proof of membership and the nullifier hash: the pool opens
        a channel to `node_id` whose payment signer (and refund address) is
        `signer`, a fresh key, and credits `relayer_fee` to the submitter. The
        public inputs (zk/PUBLIC_INPUTS.md) are [root, nullifier_hash,
        ext_data_hash] with ext_data_hash = keccak256(abi_encode(node_id,
        signer, relayer_fee)) mod r, so a proof cannot be re-pointed to
        another node, signer or fee.
        A voucher channel follows payment_channels' rules (same Receipt and
        CooperativeClose messages, fee, treasury and challenge period, read
        from payment_channels at deployment) under this pool's EIP-712
        domain: the node settles cumulative receipts, the signer closes
        unilaterally (itself, or through anyone carrying its signed
        `CloseRequest`), both close cooperatively, anyone exits a revoked node.
@custom:security Why the channels live here (docs/CONTRACTS.md, "Voucher
        channels"): a redemption must cost at most 280,000 gas and the
        Groth16 check alone is ~205,000. So a redemption writes one fresh
        storage slot: `_terms[channel_id]`, keyed by the nullifier hash
        (channel_id = keccak256(chain.id, this pool, nullifier_hash)), which
        is at once the spent-nullifier mark and the channel, holding
        keccak256(abi_encode(node_id, signer, deposit)). The tokens stay where
        the deposits put them. Every later call names the terms (node_id,
        signer, deposit) and the pool checks them against that hash; the
        channel's progress (settled amount and bytes, close time, state) is a
        second word written on first use. A voucher channel is never topped
        up: a second voucher funds a second channel with a second signer, so
        no two redemptions are linked on chain.
        The proof names a node id, and a redemption makes no registry call;
        the first settlement pins the registration that made it (its index
        is kept in the progress word), and from then on the channel follows
        that registration, as payment_channels' channels do: if it withdraws,
        someone who registers the same (public) WireGuard key later can
        neither settle nor block the exit. Until then the registry's current
        registration of `node_id` decides. A node that is revoked or not
        registered lets anyone refund the signer at once (`exit_revoked`).
        The tree is a LeanIMT (Semaphore v4, zk-kit): an insert hashes once
        per 1-bit of the leaf index (depth / 2 on average) instead of `depth`
        times for a fixed-depth tree. Roots stay valid for ROOT_HISTORY_SIZE
        deposits after they are replaced, so a proof made against a slightly
        old root still redeems; the history is a mapping root -> deposit
        count (one SLOAD to check, no loop). ext_data_hash is computed here
        from the arguments, never taken from the caller. The channel is
        written before any token moves (checks-effects-interactions). The
        relayer is not bound by the proof: someone who copies a pending
        redemption can take `relayer_fee`, but the channel still goes to the
        same node and signer, so a front-runner can steal at most the fee,
        never the voucher.
"""

from ethereum.ercs import IERC20

from interfaces import groth16_verifier as IGroth16Verifier
from interfaces import node_registry as INodeRegistry
from interfaces import payment_channels as IPaymentChannels
from interfaces import poseidon_t3 as IPoseidonT3
from interfaces import voucher_pool as IVoucherPool

implements: IVoucherPool

# @dev Receipt and CooperativeClose struct hashes, and canonical signature
# recovery: the same rules as payment_channels (both stateless).
from modules import receipt_types
from modules import signature_recovery

# @dev This pool's own EIP-712 domain ("Warren", "1", chainId, this pool):
# voucher channel receipts are signed for it; EIP-5267 `eip712Domain`.
from snekmate.utils import eip712_domain_separator
initializes: eip712_domain_separator
exports: eip712_domain_separator.eip712Domain


# EVENTS

# @notice A commitment was appended to the tree at `leaf_index`; `new_root`
#         is the tree root after it (the prover rebuilds the tree from these).
event Deposit:
    commitment: indexed(uint256)
    leaf_index: uint256
    new_root: uint256

# @notice A note was redeemed into the new channel `channel_id`, whose terms
#         are (node_id, signer, denomination - relayer_fee).
event Redeemed:
    channel_id: indexed(bytes32)
    node_id: indexed(bytes32)
    nullifier_hash: uint256
    signer: address
    relayer: address
    relayer_fee: uint256

# @notice A relayer withdrew its fees.
event RelayerFeesWithdrawn:
    relayer: indexed(address)
    amount: uint256

# @notice As payment_channels' events of the same names.
event ReceiptSettled:
    channel_id: indexed(bytes32)
    cumulative_bytes: uint256
    cumulative_amount: uint256
    node_amount: uint256

event ChannelCloseStarted:
    channel_id: indexed(bytes32)
    close_at: uint256

# @dev `kind`: 1 cooperative, 2 unilateral (finalised), 3 exit from a
# revoked or unregistered node. `settled` includes `fee`.
event ChannelClosed:
    channel_id: indexed(bytes32)
    kind: uint8
    settled: uint256
    refund: uint256
    fee: uint256


# CONSTANTS

# @dev BN254 scalar field modulus r: every public input and leaf is below it.
R: constant(uint256) = 21888242871839275222246405745257275088548364400416034343698204186575808495617
# @dev How many later deposits a root survives (Tornado Cash keeps 30 roots;
# the mapping makes a longer window free for redeem, so proofs go stale less).
ROOT_HISTORY_SIZE: constant(uint256) = 100
# @dev Upper bound of the tree depth any pool may be deployed with (loop bound).
MAX_TREE_DEPTH: constant(uint256) = 32

# @dev Basis points in one whole (fee_bps is out of this).
_BPS: constant(uint256) = 10_000

# @dev Progress word of a channel: settled amount (0-95) | settled bytes
# (96-159) | close_at (160-215) | registration index (216-247, 0 until the
# first settlement pins it) | state (248-255). A redeemed channel that was
# never used has the word 0: open, nothing settled, not pinned.
_AMOUNT_MASK: constant(uint256) = (1 << 96) - 1
_MAX_BYTES: constant(uint256) = (1 << 64) - 1
_SETTLED_MASK: constant(uint256) = (1 << 160) - 1
_TIME_MASK: constant(uint256) = (1 << 56) - 1
_INDEX_SHIFT: constant(uint256) = 216
_INDEX_MASK: constant(uint256) = (1 << 32) - 1

# @dev Channel states, as payment_channels reports them (the progress word
# stores 0 for open).
_NONE: constant(uint256) = 0
_OPEN: constant(uint256) = 1
_CLOSING: constant(uint256) = 2
_FINALISED: constant(uint256) = 3

# @dev ChannelClosed kinds.
_KIND_COOPERATIVE: constant(uint8) = 1
_KIND_UNILATERAL: constant(uint8) = 2
_KIND_EXIT: constant(uint8) = 3

# @dev node_registry head word: operator (0-159) | revoked (160).
_ADDRESS_MASK: constant(uint256) = (1 << 160) - 1
_REVOKED_BIT: constant(uint256) = 1 << 160


# STORAGE

# @notice The Warren token this pool holds.
token: public(immutable(IERC20))
# @notice payment_channels, whose rules (fee, treasury, challenge period,
#         registry) this pool's channels follow.
channels: public(immutable(IPaymentChannels))
# @notice The node registry (operators, revocation).
registry: public(immutable(INodeRegistry))
# @notice The Groth16 verifier of the voucher circuit.
verifier: public(immutable(IGroth16Verifier))
# @notice The Poseidon(2) contract the tree hashes with.
poseidon: public(immutable(IPoseidonT3))
# @notice The one amount every deposit pays, in token wei.
denomination: public(immutable(uint256))
# @notice The circuit's maximum tree depth: the pool holds at most 2**max_depth notes.
max_depth: public(immutable(uint256))
# @notice Protocol fee in basis points of each channel's settled amount.
fee_bps: public(immutable(uint256))
# @notice Receives the protocol fees.
treasury: public(immutable(address))
# @notice Seconds the node has to settle after a signer starts a unilateral close.
challenge_period: public(immutable(uint256))

# @notice Number of leaves in the tree (the next leaf index).
size: public(uint256)
# @notice Current tree root (0 while the tree is empty).
root: public(uint256)
# @notice For each tree level, the root of the last complete subtree of that height.
side_nodes: HashMap[uint256, uint256]
# @notice Root -> tree size right after it was made (0: never a root).
root_created_at: public(HashMap[uint256, uint256])
# @notice Commitments already in the tree (duplicates are refused).
commitment_used: public(HashMap[uint256, bool])
# @dev channel_id -> keccak256(abi_encode(node_id, signer, deposit)); set once,
# at redemption (non-zero: the nullifier is spent).
_terms: HashMap[bytes32, bytes32]
# @dev channel_id -> progress word (see _AMOUNT_MASK).
_progress: HashMap[bytes32, uint256]
# @dev Relayer -> 1 + fees earned and not yet withdrawn, in token wei (0:
# never credited). The 1 stays after a withdrawal so the relayer's next
# credit updates a non-zero slot (5,000 gas) instead of re-creating it
# (22,100), as OpenZeppelin's ReentrancyGuard keeps 1/2 instead of 0/1.
_relayer_credit: HashMap[address, uint256]


# CONSTRUCTOR

@deploy
def __init__(
    channels_: IPaymentChannels,
    verifier_: IGroth16Verifier,
    poseidon_: IPoseidonT3,
    denomination_: uint256,
    max_depth_: uint256,
):
    """
    @notice Deploy a pool for one denomination.
    @param channels_ payment_channels: the pool takes its token, registry,
           fee, treasury and challenge period.
    @param verifier_ Groth16 verifier generated from the voucher circuit's
           verification key for `max_depth_`.
    @param poseidon_ Poseidon(2) contract (poseidon_t3.vy or the generated
           bytecode of zk/evm_poseidon.py).
    @param denomination_ Amount of each deposit, in token wei (< 2**96).
    @param max_depth_ The circuit's maximum tree depth (1..32).
    """
    assert denomination_ > 0, "voucher_pool: zero denomination"
    assert denomination_ <= _AMOUNT_MASK, "voucher_pool: denomination too large"
    assert max_depth_ >= 1 and max_depth_ <= MAX_TREE_DEPTH, "voucher_pool: bad depth"
    eip712_domain_separator.__init__("Warren", "1")
    channels = channels_
    token = IERC20(staticcall channels_.token())
    registry = INodeRegistry(staticcall channels_.registry())
    fee_bps = staticcall channels_.fee_bps()
    treasury = staticcall channels_.treasury()
    challenge_period = staticcall channels_.challenge_period()
    verifier = verifier_
    poseidon = poseidon_
    denomination = denomination_
    max_depth = max_depth_


# DEPOSIT AND REDEMPTION

@external
def deposit(commitment: uint256, amount: uint256) -> uint256:
    """
    @notice Pay `denomination` and append `commitment` to the tree.
    @dev Needs an allowance of `amount` for this pool. `amount` must equal
         the denomination: it states what the depositor means to pay, so
         choosing the wrong pool fails loudly instead of paying another sum.
    @param commitment Poseidon(Poseidon(nullifier), secret), 0 < commitment < r.
    @param amount Amount paid, in token wei (must equal `denomination`).
    @return The leaf index of the commitment.
    """
    assert amount == denomination, "voucher_pool: wrong amount"
    assert commitment != 0, "voucher_pool: zero commitment"
    assert commitment < R, "voucher_pool: commitment not in field"
    assert not self.commitment_used[commitment], "voucher_pool: duplicate commitment"
    index: uint256 = self.size
    assert index < 1 << max_depth, "voucher_pool: tree full"
    self.commitment_used[commitment] = True

    new_root: uint256 = self._insert(commitment, index)
    self.size = index + 1
    self.root = new_root
    self.root_created_at[new_root] = index + 1

    assert extcall token.transferFrom(msg.sender, self, amount, default_return_value=True)
    log Deposit(commitment=commitment, leaf_index=index, new_root=new_root)
    return index


@external
def redeem(
    proof: uint256[8],
    root: uint256,
    nullifier_hash: uint256,
    node_id: bytes32,
    signer: address,
    relayer_fee: uint256,
) -> bytes32:
    """
    @notice Redeem a note into a new channel to `node_id` whose payment
            signer and refund address is `signer`, with a deposit of
            `denomination - relayer_fee`.
    @dev Anyone may submit; `relayer_fee` is credited to the submitter's
         `relayer_balance` (withdraw with `withdraw_relayer_fees`): crediting
         costs ~5,000 gas where a token transfer costs ~15,000. Use a fresh
         signer per voucher: it is the only key that links payments.
    @param proof Groth16 proof, snarkjs call-data order
           [A.x, A.y, B.x.im, B.x.re, B.y.im, B.y.re, C.x, C.y].
    @param root A tree root from the recent history.
    @param nullifier_hash Poseidon(nullifier) of the note (public input).
    @param node_id The node the channel pays.
    @param signer The channel's payment signer and refund address (a fresh key).
    @param relayer_fee Credited to msg.sender, in token wei (below the denomination).
    @return The new channel's id, keccak256(abi_encode(chain.id, this pool, nullifier_hash)).
    """
    assert signer != empty(address), "voucher_pool: zero signer"
    assert relayer_fee < denomination, "voucher_pool: fee too high"
    assert self._is_known_root(root), "voucher_pool: unknown root"
    channel_id: bytes32 = self._channel_id(nullifier_hash)
    assert self._terms[channel_id] == empty(bytes32), "voucher_pool: nullifier spent"
    ext_data_hash: uint256 = convert(keccak256(abi_encode(node_id, signer, relayer_fee)), uint256) % R
    assert staticcall verifier.verify_proof(
        proof, [root, nullifier_hash, ext_data_hash]
    ), "voucher_pool: invalid proof"

    self._terms[channel_id] = self._terms_hash(node_id, signer, denomination - relayer_fee)
    if relayer_fee != 0:
        self._relayer_credit[msg.sender] = max(self._relayer_credit[msg.sender], 1) + relayer_fee
    log Redeemed(
        channel_id=channel_id,
        node_id=node_id,
        nullifier_hash=nullifier_hash,
        signer=signer,
        relayer=msg.sender,
        relayer_fee=relayer_fee,
    )
    return channel_id


@external
def withdraw_relayer_fees() -> uint256:
    """
    @notice Pay msg.sender the relayer fees credited to it.
    @return The amount paid, in token wei.
    """
    amount: uint256 = self._relayer_balance(msg.sender)
    assert amount != 0, "voucher_pool: no relayer fees"
    self._relayer_credit[msg.sender] = 1
    self._push(msg.sender, amount)
    log RelayerFeesWithdrawn(relayer=msg.sender, amount=amount)
    return amount


# SETTLEMENT

@external
def settle(
    channel_id: bytes32, node_id: bytes32, signer: address, deposit: uint256,
    cumulative_bytes: uint256, cumulative_amount: uint256, signature: Bytes[65],
):
    """
    @notice Settle the latest receipt (node operator only), as
            payment_channels.settle: pays the operator the increase over
            the previous settlement less the fee. Allowed while the channel
            is open and, after a unilateral close starts, until `close_at`.
    @param channel_id The channel.
    @param node_id The channel's node (its terms, from `Redeemed`).
    @param signer The channel's payment signer (its terms).
    @param deposit The channel's deposit (its terms: denomination - relayer_fee).
    @param cumulative_bytes Bytes carried since the channel opened (must grow).
    @param cumulative_amount Token wei owed since the channel opened (must grow, <= deposit).
    @param signature The payment signer's 65-byte EIP-712 signature.
    """
    progress: uint256 = self._progress_of(channel_id, node_id, signer, deposit)
    self._check_settleable(progress)
    index: uint256 = 0
    head: uint256 = 0
    index, head = self._registration(node_id, progress)
    operator: address = self._operator(head)
    assert msg.sender == operator, "voucher_pool: not the node operator"

    settled: uint256 = progress & _AMOUNT_MASK
    assert cumulative_amount > settled, "voucher_pool: stale amount"
    assert cumulative_bytes > (progress >> 96) & _MAX_BYTES, "voucher_pool: stale bytes"
    assert cumulative_amount <= deposit, "voucher_pool: amount exceeds deposit"
    assert cumulative_bytes <= _MAX_BYTES, "voucher_pool: bytes too large"
    digest: bytes32 = self._receipt_digest(channel_id, cumulative_bytes, cumulative_amount)
    assert signature_recovery._recover(digest, signature) == signer, "voucher_pool: wrong signer"

    # Pin the registration that settles first: from now on this channel follows it, not node_id.
    self._progress[channel_id] = (
        (progress & ~(_SETTLED_MASK | (_INDEX_MASK << _INDEX_SHIFT)))
        | cumulative_amount | (cumulative_bytes << 96) | (index << _INDEX_SHIFT)
    )
    paid: uint256 = self._node_share(cumulative_amount) - self._node_share(settled)
    self._push(operator, paid)
    log ReceiptSettled(
        channel_id=channel_id, cumulative_bytes=cumulative_bytes,
        cumulative_amount=cumulative_amount, node_amount=paid,
    )


# CLOSING

@external
def cooperative_close(
    channel_id: bytes32, node_id: bytes32, signer: address, deposit: uint256,
    cumulative_bytes: uint256, cumulative_amount: uint256,
    signature: Bytes[65], node_signature: Bytes[65],
):
    """
    @notice Close at once with the final receipt, signed by the payment
            signer, and the node operator's `CooperativeClose` over the
            same figures (this pool's domain). Anyone may submit. The node
            gets the rest of its share, the treasury the fee, the signer the
            remainder.
    @param channel_id The channel (open, or closing before `close_at`).
    @param node_id The channel's node (terms).
    @param signer The channel's payment signer (terms).
    @param deposit The channel's deposit (terms).
    @param cumulative_bytes Final bytes (>= the settled bytes).
    @param cumulative_amount Final amount in token wei (>= settled, <= deposit).
    @param signature The payment signer's Receipt signature.
    @param node_signature The node operator's CooperativeClose signature.
    """
    progress: uint256 = self._progress_of(channel_id, node_id, signer, deposit)
    self._check_settleable(progress)
    index: uint256 = 0
    head: uint256 = 0
    index, head = self._registration(node_id, progress)
    operator: address = self._operator(head)

    settled: uint256 = progress & _AMOUNT_MASK
    assert cumulative_amount >= settled, "voucher_pool: stale amount"
    assert cumulative_bytes >= (progress >> 96) & _MAX_BYTES, "voucher_pool: stale bytes"
    assert cumulative_amount <= deposit, "voucher_pool: amount exceeds deposit"
    assert cumulative_bytes <= _MAX_BYTES, "voucher_pool: bytes too large"
    digest: bytes32 = self._receipt_digest(channel_id, cumulative_bytes, cumulative_amount)
    assert signature_recovery._recover(digest, signature) == signer, "voucher_pool: wrong signer"
    digest = self._close_digest(channel_id, cumulative_bytes, cumulative_amount)
    assert signature_recovery._recover(digest, node_signature) == operator, "voucher_pool: wrong node signature"

    self._progress[channel_id] = cumulative_amount | (cumulative_bytes << 96) | (_FINALISED << 248)
    paid: uint256 = self._node_share(cumulative_amount) - self._node_share(settled)
    self._push(operator, paid)
    self._pay_out(channel_id, signer, _KIND_COOPERATIVE, deposit, cumulative_amount)


@external
def start_close(channel_id: bytes32, node_id: bytes32, signer: address, deposit: uint256):
    """
    @notice Start a unilateral close (the signer only). The node may settle
            until `close_at = now + challenge_period` (exclusive).
    @param channel_id The channel.
    @param node_id The channel's node (terms).
    @param signer The channel's payment signer (terms).
    @param deposit The channel's deposit (terms).
    """
    progress: uint256 = self._closable_progress(channel_id, node_id, signer, deposit)
    assert msg.sender == signer, "voucher_pool: not the signer"
    self._start_close(channel_id, progress)


@external
def start_close_for(
    channel_id: bytes32, node_id: bytes32, signer: address, deposit: uint256, signature: Bytes[65]
):
    """
    @notice Start a unilateral close on the signer's behalf: anyone submits
            the signer's EIP-712 `CloseRequest(bytes32 channel_id)` (this
            pool's domain). A voucher's signer is a fresh key with no gas
            money, and paying it some from the client's wallet would link
            the two; this lets any relayer start the close instead.
    @dev A request cannot be replayed: a channel is closed once.
    @param channel_id The channel.
    @param node_id The channel's node (terms).
    @param signer The channel's payment signer (terms).
    @param deposit The channel's deposit (terms).
    @param signature The signer's 65-byte CloseRequest signature.
    """
    progress: uint256 = self._closable_progress(channel_id, node_id, signer, deposit)
    digest: bytes32 = self._close_request_digest(channel_id)
    assert signature_recovery._recover(digest, signature) == signer, "voucher_pool: wrong signer"
    self._start_close(channel_id, progress)


@external
def finalize_close(channel_id: bytes32, node_id: bytes32, signer: address, deposit: uint256):
    """
    @notice Finish a unilateral close from `close_at` on (anyone may call):
            the signer gets the deposit less the settled amount, the
            treasury the fee.
    @param channel_id The channel.
    @param node_id The channel's node (terms).
    @param signer The channel's payment signer (terms).
    @param deposit The channel's deposit (terms).
    """
    progress: uint256 = self._progress_of(channel_id, node_id, signer, deposit)
    state: uint256 = progress >> 248
    assert state != _FINALISED, "voucher_pool: channel finalised"
    assert state == _CLOSING, "voucher_pool: channel not closing"
    assert block.timestamp >= (progress >> 160) & _TIME_MASK, "voucher_pool: challenge period not over"
    self._finalise(channel_id, signer, deposit, progress, _KIND_UNILATERAL)


@external
def exit_revoked(channel_id: bytes32, node_id: bytes32, signer: address, deposit: uint256):
    """
    @notice Close at once because the node is revoked or not registered
            (it withdrew, or never registered): nobody can settle, so
            nothing is left to wait for. Anyone may call; the signer is
            refunded.
    @param channel_id The channel.
    @param node_id The channel's node (terms).
    @param signer The channel's payment signer (terms).
    @param deposit The channel's deposit (terms).
    """
    progress: uint256 = self._progress_of(channel_id, node_id, signer, deposit)
    assert progress >> 248 != _FINALISED, "voucher_pool: channel finalised"
    index: uint256 = 0
    head: uint256 = 0
    index, head = self._registration(node_id, progress)
    assert head & _REVOKED_BIT != 0 or head & _ADDRESS_MASK == 0, "voucher_pool: node not revoked"
    self._finalise(channel_id, signer, deposit, progress, _KIND_EXIT)


# VIEWS

@external
@view
def is_known_root(root: uint256) -> bool:
    """
    @notice Whether `root` is the current root or one of the recent ones.
    @param root A tree root.
    @return True if a redemption against `root` would be accepted.
    """
    return self._is_known_root(root)


@external
@view
def relayer_balance(relayer: address) -> uint256:
    """
    @notice Relayer fees credited to `relayer` and not yet withdrawn.
    @param relayer The account that submitted redemptions.
    @return The amount in token wei.
    """
    return self._relayer_balance(relayer)


@external
@view
def channel_id_of(nullifier_hash: uint256) -> bytes32:
    """
    @notice The id of the channel a note's redemption opens (or opened).
    @param nullifier_hash The note's nullifier hash.
    @return keccak256(abi_encode(chain.id, this pool, nullifier_hash)).
    """
    return self._channel_id(nullifier_hash)


@external
@view
def nullifier_spent(nullifier_hash: uint256) -> bool:
    """
    @notice Whether a note with this nullifier hash was redeemed.
    @param nullifier_hash Poseidon(nullifier).
    @return True once redeemed.
    """
    return self._terms[self._channel_id(nullifier_hash)] != empty(bytes32)


@external
@pure
def terms_hash(node_id: bytes32, signer: address, deposit: uint256) -> bytes32:
    """
    @notice What a channel stores of its terms.
    @param node_id The node.
    @param signer The payment signer.
    @param deposit The deposit in token wei.
    @return keccak256(abi_encode(node_id, signer, deposit)).
    """
    return self._terms_hash(node_id, signer, deposit)


@external
@view
def channel(channel_id: bytes32) -> (bytes32, uint256, uint256, uint256, uint256):
    """
    @notice A channel's state. Its terms are in `Redeemed` (node_id,
            signer, denomination - relayer_fee); only their hash is stored.
    @param channel_id The channel.
    @return terms_hash keccak256(abi_encode(node_id, signer, deposit)) (empty: no channel).
    @return settled Cumulative settled amount in token wei (fee included).
    @return settled_bytes Cumulative bytes of the last settled receipt.
    @return close_at End of the challenge period (0 unless closing).
    @return state 0 none, 1 open, 2 closing, 3 finalised.
    """
    terms: bytes32 = self._terms[channel_id]
    progress: uint256 = self._progress[channel_id]
    state: uint256 = progress >> 248
    if terms == empty(bytes32):
        state = _NONE
    elif state == 0:
        state = _OPEN
    return terms, progress & _AMOUNT_MASK, (progress >> 96) & _MAX_BYTES, (progress >> 160) & _TIME_MASK, state


@external
@view
def receipt_digest(channel_id: bytes32, cumulative_bytes: uint256, cumulative_amount: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a payment signer signs for a receipt on a
            channel of this pool.
    @param channel_id The channel.
    @param cumulative_bytes Bytes carried since the channel opened.
    @param cumulative_amount Token wei owed since the channel opened.
    @return digest The 32-byte digest.
    """
    return self._receipt_digest(channel_id, cumulative_bytes, cumulative_amount)


@external
@view
def close_digest(channel_id: bytes32, cumulative_bytes: uint256, cumulative_amount: uint256) -> bytes32:
    """
    @notice The EIP-712 digest the node operator signs to close cooperatively.
    @param channel_id The channel.
    @param cumulative_bytes Final bytes.
    @param cumulative_amount Final amount in token wei.
    @return digest The 32-byte digest.
    """
    return self._close_digest(channel_id, cumulative_bytes, cumulative_amount)


@external
@view
def close_request_digest(channel_id: bytes32) -> bytes32:
    """
    @notice The EIP-712 digest a payment signer signs so that anyone may
            start a unilateral close of its channel (`start_close_for`).
    @param channel_id The channel.
    @return digest The 32-byte digest.
    """
    return self._close_request_digest(channel_id)


@external
@view
def DOMAIN_SEPARATOR() -> bytes32:
    """
    @notice The EIP-712 domain separator of this pool's channel messages.
    @return separator The 32-byte domain separator.
    """
    return eip712_domain_separator._domain_separator_v4()


@external
@view
def depth() -> uint256:
    """
    @notice Current LeanIMT depth, ceil(log2(size)) (0 for zero or one leaf).
    @return The depth.
    """
    size: uint256 = self.size
    d: uint256 = 0
    for level: uint256 in range(MAX_TREE_DEPTH):
        if 1 << d >= size:
            break
        d += 1
    return d


# INTERNAL FUNCTIONS

@internal
@view
def _is_known_root(root: uint256) -> bool:
    """
    @notice Root is non-zero, was a root, and at most ROOT_HISTORY_SIZE
            deposits have happened since it was replaced.
    """
    if root == 0:
        return False
    created: uint256 = self.root_created_at[root]
    return created != 0 and self.size - created < ROOT_HISTORY_SIZE


@internal
@view
def _relayer_balance(relayer: address) -> uint256:
    credit: uint256 = self._relayer_credit[relayer]
    if credit == 0:
        return 0
    return credit - 1


@internal
@view
def _channel_id(nullifier_hash: uint256) -> bytes32:
    return keccak256(abi_encode(chain.id, self, nullifier_hash))


@internal
@pure
def _terms_hash(node_id: bytes32, signer: address, deposit: uint256) -> bytes32:
    return keccak256(abi_encode(node_id, signer, deposit))


@internal
@view
def _progress_of(channel_id: bytes32, node_id: bytes32, signer: address, deposit: uint256) -> uint256:
    """
    @notice The channel's progress word, once the caller's terms are its own.
    """
    terms: bytes32 = self._terms[channel_id]
    assert terms != empty(bytes32), "voucher_pool: unknown channel"
    assert terms == self._terms_hash(node_id, signer, deposit), "voucher_pool: wrong terms"
    return self._progress[channel_id]


@internal
@view
def _closable_progress(channel_id: bytes32, node_id: bytes32, signer: address, deposit: uint256) -> uint256:
    """
    @notice The progress word of an open channel whose terms the caller named.
    """
    progress: uint256 = self._progress_of(channel_id, node_id, signer, deposit)
    state: uint256 = progress >> 248
    assert state != _FINALISED, "voucher_pool: channel finalised"
    assert state != _CLOSING, "voucher_pool: channel closing"
    return progress


@internal
def _start_close(channel_id: bytes32, progress: uint256):
    close_at: uint256 = block.timestamp + challenge_period
    # Open means close_at and state are 0: set them, keep the settled figures and the pin.
    self._progress[channel_id] = progress | (close_at << 160) | (_CLOSING << 248)
    log ChannelCloseStarted(channel_id=channel_id, close_at=close_at)


@internal
@view
def _check_settleable(progress: uint256):
    state: uint256 = progress >> 248
    assert state != _FINALISED, "voucher_pool: channel finalised"
    if state == _CLOSING:
        assert block.timestamp < (progress >> 160) & _TIME_MASK, "voucher_pool: challenge period over"


@internal
@view
def _registration(node_id: bytes32, progress: uint256) -> (uint256, uint256):
    """
    @notice The registration a channel follows and its registry head word:
            the one its first settlement pinned or, before that, node_id's
            current one (index 0 and head 0 if it has none).
    """
    index: uint256 = (progress >> _INDEX_SHIFT) & _INDEX_MASK
    if index == 0:
        index = staticcall registry.node_index(node_id)
        assert index <= _INDEX_MASK, "voucher_pool: node index too large"
    return index, staticcall registry.node_head(index)


@internal
@pure
def _operator(head: uint256) -> address:
    """
    @notice The operator of a registration head word; refuses a revoked one.
    """
    assert head & _REVOKED_BIT == 0, "voucher_pool: node revoked"
    return convert(head & _ADDRESS_MASK, address)


@internal
@view
def _node_share(settled: uint256) -> uint256:
    return settled - settled * fee_bps // _BPS


@internal
def _finalise(channel_id: bytes32, signer: address, deposit: uint256, progress: uint256, kind: uint8):
    self._progress[channel_id] = (progress & _SETTLED_MASK) | (_FINALISED << 248)
    self._pay_out(channel_id, signer, kind, deposit, progress & _AMOUNT_MASK)


@internal
def _pay_out(channel_id: bytes32, signer: address, kind: uint8, deposit: uint256, settled: uint256):
    # The channel is already marked finalised: refund the signer, pay the fee.
    refund: uint256 = deposit - settled
    fee: uint256 = settled * fee_bps // _BPS
    self._push(signer, refund)
    self._push(treasury, fee)
    log ChannelClosed(channel_id=channel_id, kind=kind, settled=settled, refund=refund, fee=fee)


@internal
@view
def _receipt_digest(channel_id: bytes32, cumulative_bytes: uint256, cumulative_amount: uint256) -> bytes32:
    return eip712_domain_separator._hash_typed_data_v4(
        receipt_types._receipt_hash(channel_id, cumulative_bytes, cumulative_amount)
    )


@internal
@view
def _close_request_digest(channel_id: bytes32) -> bytes32:
    return eip712_domain_separator._hash_typed_data_v4(receipt_types._close_request_hash(channel_id))


@internal
@view
def _close_digest(channel_id: bytes32, cumulative_bytes: uint256, cumulative_amount: uint256) -> bytes32:
    return eip712_domain_separator._hash_typed_data_v4(
        receipt_types._close_hash(channel_id, cumulative_bytes, cumulative_amount)
    )


@internal
def _push(to: address, amount: uint256):
    # Nothing to move is not an error (a zero fee, a fully spent deposit).
    if amount != 0:
        assert extcall token.transfer(to, amount, default_return_value=True), "voucher_pool: transfer failed"


@internal
def _insert(leaf: uint256, index: uint256) -> uint256:
    """
    @notice Append `leaf` at `index` and return the new root.
    @dev LeanIMT insert (zk-kit InternalLeanIMT._insert) with fewer writes:
         while the index has 1-bits from the bottom, the left sibling is a
         complete subtree kept in side_nodes; hash up through them. The node
         reached is then the root of a new complete subtree of that height,
         the only side node a later insert can need, so it is the only one
         written. Above it, a 1-bit hashes with the side node of that level,
         a 0-bit carries the node up unchanged (it has no right sibling).
         Same roots as writing every level, as zk/merkle.py's LeanIMT does.
    """
    node: uint256 = leaf
    level: uint256 = 0
    for i: uint256 in range(MAX_TREE_DEPTH):
        if (index >> level) & 1 == 0:
            break
        node = staticcall poseidon.hash(self.side_nodes[level], node)
        level += 1
    self.side_nodes[level] = node
    # Levels above: the tree after the insert has depth bit_length(index), i.e.
    # ceil(log2(index + 1)); stop when no higher 1-bit remains.
    rest: uint256 = index >> (level + 1)
    level += 1
    for i: uint256 in range(MAX_TREE_DEPTH):
        if rest == 0:
            break
        if rest & 1 == 1:
            node = staticcall poseidon.hash(self.side_nodes[level], node)
        rest >>= 1
        level += 1
    return node
