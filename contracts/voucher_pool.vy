# pragma version ~=0.4.3
"""
@title Warren voucher pool
@license AGPL-3.0-or-later
@author Warren contributors
@notice A shielded pool for one fixed denomination of the Warren token
        (deploy one pool per denomination). A client deposits the
        denomination together with a commitment Poseidon(Poseidon(nullifier),
        secret); the commitment is appended to an on-chain LeanIMT Merkle
        tree hashed with Poseidon(2). Later anyone (typically the node that
        is paid) redeems the note with a Groth16 proof of membership and the
        nullifier hash: the pool opens (or tops up) a payment channel to
        `node_id` whose client and payment signer is `signer`, a fresh key,
        and pays `relayer_fee` to the submitter. The public inputs
        (zk/PUBLIC_INPUTS.md) are [root, nullifier_hash, ext_data_hash] with
        ext_data_hash = keccak256(abi_encode(node_id, signer, relayer_fee))
        mod r, so a proof cannot be re-pointed to another node, signer or fee.
@custom:security The tree is a LeanIMT (Semaphore v4, zk-kit): an insert
        hashes once per 1-bit of the leaf index (depth / 2 on average)
        instead of `depth` times for a fixed-depth tree. Roots stay valid
        for ROOT_HISTORY_SIZE deposits after they are replaced, so a proof
        made against a slightly old root still redeems; the history is a
        mapping root -> deposit count (one SLOAD to check, no loop).
        ext_data_hash is computed here from the arguments, never taken from
        the caller. The nullifier is marked spent before any external call
        that moves tokens (checks-effects-interactions). The relayer is not
        bound by the proof (zk/PUBLIC_INPUTS.md binds node, signer and fee):
        someone who copies a pending redemption can take `relayer_fee`, but
        the channel still goes to the same node and signer, so a front-runner
        can steal at most the fee, never the voucher.
"""

from ethereum.ercs import IERC20

from interfaces import groth16_verifier as IGroth16Verifier
from interfaces import payment_channels as IPaymentChannels
from interfaces import poseidon_t3 as IPoseidonT3
from interfaces import voucher_pool as IVoucherPool

implements: IVoucherPool


# EVENTS

# @notice A commitment was appended to the tree at `leaf_index`; `new_root`
#         is the tree root after it (the prover rebuilds the tree from these).
event Deposit:
    commitment: indexed(uint256)
    leaf_index: uint256
    new_root: uint256

# @notice A note was redeemed into `channel_id` (opened or topped up).
event Redeemed:
    nullifier_hash: indexed(uint256)
    node_id: indexed(bytes32)
    channel_id: indexed(bytes32)
    signer: address
    relayer: address
    relayer_fee: uint256


# CONSTANTS

# @dev BN254 scalar field modulus r: every public input and leaf is below it.
R: constant(uint256) = 21888242871839275222246405745257275088548364400416034343698204186575808495617
# @dev How many later deposits a root survives (Tornado Cash keeps 30 roots;
# the mapping makes a longer window free for redeem, so proofs go stale less).
ROOT_HISTORY_SIZE: constant(uint256) = 100
# @dev Upper bound of the tree depth any pool may be deployed with (loop bound).
MAX_TREE_DEPTH: constant(uint256) = 32


# STORAGE

# @notice The Warren token this pool holds.
token: public(immutable(IERC20))
# @notice payment_channels, which redemptions fund.
channels: public(immutable(IPaymentChannels))
# @notice The Groth16 verifier of the voucher circuit.
verifier: public(immutable(IGroth16Verifier))
# @notice The Poseidon(2) contract the tree hashes with.
poseidon: public(immutable(IPoseidonT3))
# @notice The one amount every deposit pays, in token wei.
denomination: public(immutable(uint256))
# @notice The circuit's maximum tree depth: the pool holds at most 2**max_depth notes.
max_depth: public(immutable(uint256))

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
# @notice Spent nullifier hashes.
nullifier_spent: public(HashMap[uint256, bool])


# CONSTRUCTOR

@deploy
def __init__(
    token_: IERC20,
    channels_: IPaymentChannels,
    verifier_: IGroth16Verifier,
    poseidon_: IPoseidonT3,
    denomination_: uint256,
    max_depth_: uint256,
):
    """
    @notice Deploy a pool for one denomination.
    @param token_ The Warren token.
    @param channels_ payment_channels, funded on redemption.
    @param verifier_ Groth16 verifier generated from the voucher circuit's
           verification key for `max_depth_`.
    @param poseidon_ Poseidon(2) contract (poseidon_t3.vy or the generated
           bytecode of zk/evm_poseidon.py).
    @param denomination_ Amount of each deposit, in token wei.
    @param max_depth_ The circuit's maximum tree depth (1..32).
    """
    assert denomination_ > 0, "voucher_pool: zero denomination"
    assert max_depth_ >= 1 and max_depth_ <= MAX_TREE_DEPTH, "voucher_pool: bad depth"
    token = token_
    channels = channels_
    verifier = verifier_
    poseidon = poseidon_
    denomination = denomination_
    max_depth = max_depth_
    # payment_channels pulls each redemption with transferFrom; an unlimited
    # allowance is never decremented by snekmate's erc20 (saves gas per redeem).
    # It only ever pulls from msg.sender, so only this pool's own calls move
    # the pool's tokens.
    extcall token_.approve(channels_.address, max_value(uint256))


# EXTERNAL FUNCTIONS

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
    @notice Redeem a note into a payment channel to `node_id` signed by `signer`.
    @dev Anyone may submit; the submitter receives `relayer_fee`. The rest of
         the denomination opens a channel (client = signer = `signer`) or, if
         payment_channels already has the (signer, signer) channel and it pays
         `node_id`, tops it up. payment_channels allows one channel per
         (client, signer), so a signer whose channel pays another node is
         refused: use a fresh signer per node (and per voucher, for privacy).
         The pool keeps no channel records of its own: payment_channels'
         state decides, which saves a storage slot (22,100 gas) per redeem.
    @param proof Groth16 proof, snarkjs call-data order
           [A.x, A.y, B.x.im, B.x.re, B.y.im, B.y.re, C.x, C.y].
    @param root A tree root from the recent history.
    @param nullifier_hash Poseidon(nullifier) of the note (public input).
    @param node_id The node the channel pays.
    @param signer The channel's client and payment signer (a fresh key).
    @param relayer_fee Paid to msg.sender, in token wei (below the denomination).
    @return The channel id funded.
    """
    assert signer != empty(address), "voucher_pool: zero signer"
    assert relayer_fee < denomination, "voucher_pool: fee too high"
    assert self._is_known_root(root), "voucher_pool: unknown root"
    assert not self.nullifier_spent[nullifier_hash], "voucher_pool: nullifier spent"
    ext_data_hash: uint256 = convert(keccak256(abi_encode(node_id, signer, relayer_fee)), uint256) % R
    assert staticcall verifier.verify_proof(
        proof, [root, nullifier_hash, ext_data_hash]
    ), "voucher_pool: invalid proof"
    self.nullifier_spent[nullifier_hash] = True

    amount: uint256 = denomination - relayer_fee
    channel_id: bytes32 = staticcall channels.channel_id_of(signer, signer)
    channel_node: bytes32 = empty(bytes32)
    state: uint256 = 0
    channel_node, state = self._channel_node_and_state(channel_id)
    if state == 0:
        opened: bytes32 = extcall channels.open_channel(node_id, signer, signer, amount)
        assert opened == channel_id, "voucher_pool: unexpected channel id"
    else:
        assert channel_node == node_id, "voucher_pool: signer has a channel to another node"
        extcall channels.top_up(channel_id, amount)
    if relayer_fee != 0:
        assert extcall token.transfer(msg.sender, relayer_fee, default_return_value=True)
    log Redeemed(
        nullifier_hash=nullifier_hash,
        node_id=node_id,
        channel_id=channel_id,
        signer=signer,
        relayer=msg.sender,
        relayer_fee=relayer_fee,
    )
    return channel_id


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
def channel_of(node_id: bytes32, signer: address) -> bytes32:
    """
    @notice The channel a redemption to (`node_id`, `signer`) funds, if it
            exists: payment_channels' (signer, signer) channel paying `node_id`.
    @param node_id The node.
    @param signer The payment signer (also the channel's client).
    @return The channel id, or empty(bytes32) if there is no such channel yet.
    """
    channel_id: bytes32 = staticcall channels.channel_id_of(signer, signer)
    channel_node: bytes32 = empty(bytes32)
    state: uint256 = 0
    channel_node, state = self._channel_node_and_state(channel_id)
    if state == 0 or channel_node != node_id:
        return empty(bytes32)
    return channel_id


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
def _channel_node_and_state(channel_id: bytes32) -> (bytes32, uint256):
    """
    @notice payment_channels' node id and state (0 none, 1 open, 2 closing,
            3 finalised) of `channel_id`.
    """
    node: bytes32 = empty(bytes32)
    client: address = empty(address)
    deposit: uint256 = 0
    settled: uint256 = 0
    settled_bytes: uint256 = 0
    close_at: uint256 = 0
    state: uint256 = 0
    node, client, deposit, settled, settled_bytes, close_at, state = staticcall channels.channel(channel_id)
    return node, state


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
