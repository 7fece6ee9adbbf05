# pragma version ~=0.4.3
"""
@title Warren node registry
@license AGPL-3.0-or-later
@author Warren contributors
@notice Nodes and challengers register here with a token stake. A node is
        identified by `node_id = keccak256(wg_public_key)` (its WireGuard
        X25519 static key), which is also its ring position in the overlay.
        Stake can be increased at any time; withdrawing it needs an
        unbonding request and `unbonding_delay` seconds, during which the
        stake can still be slashed. Only authorised slashers (reputation,
        fraud proofs) may slash, and only the revoker (the revocation
        registry) may revoke a key, which is permanent.
@custom:security Each registration gets a fresh `node_index` and a packed
        "head" word (operator | revoked | unbonding) that payment_channels
        reads with one storage load per settlement; channels refer to the
        index, not the id, so a key that re-registers after withdrawing
        never inherits channels opened to its earlier registration.
        A node or challenger whose stake was slashed below the minimum
        stops being active (no new channels, no reports) until it tops
        its stake up again.
        Registering proves nothing about the WireGuard private key (the
        EVM has no X25519): anyone who has seen a public key can register
        it first and squat that node id. The squatter cannot complete a
        WireGuard handshake with it, so it can serve nobody; the victim
        loses only that key and its stake is never at risk.
"""

from ethereum.ercs import IERC20

# @dev The interface other contracts compile against; checked here so it cannot drift.
from .interfaces import node_registry as INodeRegistry
implements: INodeRegistry

# @dev The owner sets the slashers and the revoker (for now; see
# docs/CONTRACTS.md for the move to stake-weighted governance).
from snekmate.auth import ownable
initializes: ownable

# @dev Expose the owner getter and ownership transfer from snekmate.
exports: (ownable.owner, ownable.transfer_ownership, ownable.renounce_ownership)


# EVENTS

event NodeRegistered:
    node_id: indexed(bytes32)
    operator: indexed(address)
    node_index: uint256
    wg_public_key: bytes32
    region: String[2]
    price_per_gib: uint256
    stake: uint256

event NodeUpdated:
    node_id: indexed(bytes32)
    region: String[2]
    price_per_gib: uint256

event NodeStakeIncreased:
    node_id: indexed(bytes32)
    amount: uint256
    stake: uint256

event NodeUnbondingRequested:
    node_id: indexed(bytes32)
    unbond_at: uint256

event NodeStakeWithdrawn:
    node_id: indexed(bytes32)
    operator: indexed(address)
    amount: uint256

event NodeSlashed:
    node_id: indexed(bytes32)
    slasher: indexed(address)
    recipient: address
    amount: uint256

event NodeRevoked:
    node_id: indexed(bytes32)
    recipient: address
    amount: uint256

event ChallengerRegistered:
    challenger: indexed(address)
    stake: uint256

event ChallengerStakeIncreased:
    challenger: indexed(address)
    amount: uint256
    stake: uint256

event ChallengerUnbondingRequested:
    challenger: indexed(address)
    unbond_at: uint256

event ChallengerStakeWithdrawn:
    challenger: indexed(address)
    amount: uint256

event ChallengerSlashed:
    challenger: indexed(address)
    slasher: indexed(address)
    recipient: address
    amount: uint256

event SlasherSet:
    slasher: indexed(address)
    allowed: bool

event RevokerSet:
    revoker: indexed(address)

event UpdateEpochSet:
    seconds: uint256


# CONSTANTS

# @dev Layout of a node's packed head word (see `node_head`).
_OPERATOR_MASK: constant(uint256) = (1 << 160) - 1
_REVOKED_BIT: constant(uint256) = 1 << 160
_UNBONDING_BIT: constant(uint256) = 1 << 161

# @dev ASCII 'A' and 'Z': regions are ISO 3166-1 alpha-2 codes.
_ASCII_A: constant(uint256) = 65
_ASCII_Z: constant(uint256) = 90

# @dev Layout of a node's packed listing word: price per GiB (bits 0-239) |
# region as its two ASCII bytes (bits 240-255). One slot instead of three
# (a String[2] takes a length slot and a data slot).
_REGION_SHIFT: constant(uint256) = 240
_MAX_PRICE: constant(uint256) = (1 << 240) - 1


# STORAGE

# @dev The staking token (warren_token).
token: public(immutable(IERC20))
# @dev Smallest stake a node may register with, in token wei.
min_node_stake: public(immutable(uint256))
# @dev Smallest stake a challenger may register with, in token wei.
min_challenger_stake: public(immutable(uint256))
# @dev Seconds between an unbonding request and the earliest withdrawal.
unbonding_delay: public(immutable(uint256))

# @dev Number of node registrations ever made; indices start at 1.
node_count: public(uint256)
# @dev node_id -> index of its current registration (0: not registered).
node_index: public(HashMap[bytes32, uint256])
# @dev index -> packed operator (bits 0-159) | revoked (160) | unbonding (161).
node_head: public(HashMap[uint256, uint256])
# @dev index -> stake in token wei (slashable until withdrawn).
_stake: HashMap[uint256, uint256]
# @dev index -> timestamp from which the stake may be withdrawn (0: bonded).
_unbond_at: HashMap[uint256, uint256]
# @dev index -> WireGuard X25519 public key (kept after withdrawal: `node_id_at` hashes it).
_wg_key: HashMap[uint256, bytes32]
# @dev index -> packed price per GiB in token wei | ISO 3166-1 alpha-2 region (see _REGION_SHIFT).
_listing: HashMap[uint256, uint256]
# @dev node_id -> permanently revoked (survives withdrawal; blocks re-registration).
is_revoked: public(HashMap[bytes32, bool])

# @dev challenger -> stake in token wei.
challenger_stake: public(HashMap[address, uint256])
# @dev challenger -> timestamp from which the stake may be withdrawn (0: bonded).
challenger_unbond_at: public(HashMap[address, uint256])

# @dev contract -> may call `slash` / `slash_challenger`.
is_slasher: public(HashMap[address, bool])
# @dev The only contract that may call `revoke` (the revocation registry).
revoker: public(address)
# @dev Seconds per epoch of the once-per-epoch listing rule (the reputation/rewards epoch; 0: no limit).
update_epoch_length: public(uint256)
# @dev index -> epoch of its last `update_node` plus one (0: never updated).
_updated_epoch: HashMap[uint256, uint256]


@deploy
def __init__(
    token_: IERC20, min_node_stake_: uint256, min_challenger_stake_: uint256, unbonding_delay_: uint256
):
    """
    @notice Deploy the registry; the deployer becomes owner.
    @param token_ The staking token.
    @param min_node_stake_ Minimum node stake in token wei (> 0).
    @param min_challenger_stake_ Minimum challenger stake in token wei (> 0).
    @param unbonding_delay_ Unbonding delay in seconds.
    """
    assert token_.address != empty(address), "node_registry: zero token"
    assert min_node_stake_ != 0, "node_registry: zero minimum stake"
    assert min_challenger_stake_ != 0, "node_registry: zero minimum stake"
    ownable.__init__()
    token = token_
    min_node_stake = min_node_stake_
    min_challenger_stake = min_challenger_stake_
    unbonding_delay = unbonding_delay_


# NODES

@external
def register_node(wg_public_key: bytes32, region: String[2], price_per_gib: uint256, stake: uint256) -> bytes32:
    """
    @notice Register a node; msg.sender becomes its operator and the stake
            is pulled from msg.sender with transferFrom (approve first).
    @param wg_public_key The node's WireGuard X25519 public key.
    @param region ISO 3166-1 alpha-2 code, two upper-case letters.
    @param price_per_gib Asking price per GiB in token wei (below 2**240).
    @param stake Stake in token wei, at least `min_node_stake`.
    @return node_id keccak256(wg_public_key).
    """
    assert wg_public_key != empty(bytes32), "node_registry: empty key"
    listing: uint256 = self._listing_word(region, price_per_gib)
    node_id: bytes32 = keccak256(wg_public_key)
    assert not self.is_revoked[node_id], "node_registry: key revoked"
    assert self.node_index[node_id] == 0, "node_registry: already registered"
    assert stake >= min_node_stake, "node_registry: stake below minimum"

    index: uint256 = self.node_count + 1
    self.node_count = index
    self.node_index[node_id] = index
    self.node_head[index] = convert(msg.sender, uint256)
    self._stake[index] = stake
    self._wg_key[index] = wg_public_key
    self._listing[index] = listing
    self._pull(msg.sender, stake)
    log NodeRegistered(
        node_id=node_id, operator=msg.sender, node_index=index, wg_public_key=wg_public_key,
        region=region, price_per_gib=price_per_gib, stake=stake,
    )
    return node_id


@external
def update_node(node_id: bytes32, region: String[2], price_per_gib: uint256):
    """
    @notice Change a node's advertised region and price (operator only;
            not once revoked, so a revoked node cannot advertise again).
            At most once per epoch of `update_epoch_length` seconds, so a
            price follows demand at the pace rewards measure it and clients
            see a price that holds for the rest of the epoch (a channel's
            own price is fixed at open: payment_channels logs it).
    @param node_id The node.
    @param region ISO 3166-1 alpha-2 code.
    @param price_per_gib Price per GiB in token wei (below 2**240).
    """
    index: uint256 = self._operated(node_id)
    assert self.node_head[index] & _REVOKED_BIT == 0, "node_registry: key revoked"
    epoch_length: uint256 = self.update_epoch_length
    if epoch_length != 0:
        mark: uint256 = block.timestamp // epoch_length + 1
        assert self._updated_epoch[index] != mark, "node_registry: updated this epoch"
        self._updated_epoch[index] = mark
    self._listing[index] = self._listing_word(region, price_per_gib)
    log NodeUpdated(node_id=node_id, region=region, price_per_gib=price_per_gib)


@external
def increase_stake(node_id: bytes32, amount: uint256):
    """
    @notice Add stake to a bonded node (operator only), pulled with transferFrom.
    @param node_id The node.
    @param amount Amount in token wei (> 0).
    """
    index: uint256 = self._operated(node_id)
    assert amount != 0, "node_registry: zero amount"
    head: uint256 = self.node_head[index]
    assert head & _REVOKED_BIT == 0, "node_registry: key revoked"
    assert head & _UNBONDING_BIT == 0, "node_registry: unbonding"
    stake: uint256 = self._stake[index] + amount
    self._stake[index] = stake
    self._pull(msg.sender, amount)
    log NodeStakeIncreased(node_id=node_id, amount=amount, stake=stake)


@external
def request_unbonding(node_id: bytes32):
    """
    @notice Start unbonding (operator only): the node stops being active at
            once (no new channels) and the stake may be withdrawn after
            `unbonding_delay` seconds; it stays slashable until then.
    @param node_id The node.
    """
    index: uint256 = self._operated(node_id)
    head: uint256 = self.node_head[index]
    assert head & _REVOKED_BIT == 0, "node_registry: key revoked"
    assert head & _UNBONDING_BIT == 0, "node_registry: unbonding"
    unbond_at: uint256 = block.timestamp + unbonding_delay
    self._unbond_at[index] = unbond_at
    self.node_head[index] = head | _UNBONDING_BIT
    log NodeUnbondingRequested(node_id=node_id, unbond_at=unbond_at)


@external
def withdraw_stake(node_id: bytes32):
    """
    @notice Withdraw the remaining stake after the unbonding delay (operator
            only) and deregister the node; the key may register again later.
    @param node_id The node.
    """
    index: uint256 = self._operated(node_id)
    head: uint256 = self.node_head[index]
    assert head & _REVOKED_BIT == 0, "node_registry: key revoked"
    assert head & _UNBONDING_BIT != 0, "node_registry: not unbonding"
    assert block.timestamp >= self._unbond_at[index], "node_registry: unbonding not over"
    amount: uint256 = self._stake[index]
    self._stake[index] = 0
    self.node_head[index] = 0
    self.node_index[node_id] = 0
    self._push(msg.sender, amount)
    log NodeStakeWithdrawn(node_id=node_id, operator=msg.sender, amount=amount)


# CHALLENGERS

@external
def register_challenger(stake: uint256):
    """
    @notice Register msg.sender as a challenger with a stake pulled by transferFrom.
    @param stake Stake in token wei, at least `min_challenger_stake`.
    """
    assert self.challenger_stake[msg.sender] == 0, "node_registry: already challenger"
    assert stake >= min_challenger_stake, "node_registry: stake below minimum"
    self.challenger_stake[msg.sender] = stake
    self.challenger_unbond_at[msg.sender] = 0
    self._pull(msg.sender, stake)
    log ChallengerRegistered(challenger=msg.sender, stake=stake)


@external
def increase_challenger_stake(amount: uint256):
    """
    @notice Add stake to msg.sender's bonded challenger registration (also
            to bring a slashed stake back up to the minimum).
    @param amount Amount in token wei (> 0).
    """
    assert amount != 0, "node_registry: zero amount"
    stake: uint256 = self.challenger_stake[msg.sender]
    assert stake != 0 and self.challenger_unbond_at[msg.sender] == 0, "node_registry: not a challenger"
    stake += amount
    self.challenger_stake[msg.sender] = stake
    self._pull(msg.sender, amount)
    log ChallengerStakeIncreased(challenger=msg.sender, amount=amount, stake=stake)


@external
def request_challenger_unbonding():
    """
    @notice Start unbonding msg.sender's challenger stake; it stops being a
            challenger at once and stays slashable until withdrawn.
    """
    assert self.challenger_stake[msg.sender] != 0, "node_registry: not a challenger"
    assert self.challenger_unbond_at[msg.sender] == 0, "node_registry: unbonding"
    unbond_at: uint256 = block.timestamp + unbonding_delay
    self.challenger_unbond_at[msg.sender] = unbond_at
    log ChallengerUnbondingRequested(challenger=msg.sender, unbond_at=unbond_at)


@external
def withdraw_challenger_stake():
    """
    @notice Withdraw msg.sender's challenger stake after the unbonding delay.
    """
    unbond_at: uint256 = self.challenger_unbond_at[msg.sender]
    assert self.challenger_stake[msg.sender] != 0 and unbond_at != 0, "node_registry: not unbonding"
    assert block.timestamp >= unbond_at, "node_registry: unbonding not over"
    amount: uint256 = self.challenger_stake[msg.sender]
    self.challenger_stake[msg.sender] = 0
    self.challenger_unbond_at[msg.sender] = 0
    self._push(msg.sender, amount)
    log ChallengerStakeWithdrawn(challenger=msg.sender, amount=amount)


# SLASHING AND REVOCATION

@external
def slash(node_id: bytes32, amount: uint256, recipient: address) -> uint256:
    """
    @notice Take up to `amount` of a node's stake (bonded or unbonding) and
            send it to `recipient`. Authorised slashers only.
    @param node_id The node.
    @param amount Requested amount in token wei; at most the stake is taken.
    @param recipient Receives the slashed tokens.
    @return taken The amount actually taken, in token wei.
    """
    assert self.is_slasher[msg.sender], "node_registry: not a slasher"
    assert recipient != empty(address), "node_registry: zero recipient"
    index: uint256 = self.node_index[node_id]
    assert index != 0, "node_registry: unknown node"
    stake: uint256 = self._stake[index]
    taken: uint256 = min(amount, stake)
    self._stake[index] = stake - taken
    if taken != 0:
        self._push(recipient, taken)
    log NodeSlashed(node_id=node_id, slasher=msg.sender, recipient=recipient, amount=taken)
    return taken


@external
def slash_challenger(challenger: address, amount: uint256, recipient: address) -> uint256:
    """
    @notice Take up to `amount` of a challenger's stake (bonded or
            unbonding) and send it to `recipient`. Authorised slashers only.
    @param challenger The challenger.
    @param amount Requested amount in token wei; at most the stake is taken.
    @param recipient Receives the slashed tokens.
    @return taken The amount actually taken, in token wei.
    """
    assert self.is_slasher[msg.sender], "node_registry: not a slasher"
    assert recipient != empty(address), "node_registry: zero recipient"
    stake: uint256 = self.challenger_stake[challenger]
    assert stake != 0, "node_registry: not a challenger"
    taken: uint256 = min(amount, stake)
    self.challenger_stake[challenger] = stake - taken
    if taken == stake:
        self.challenger_unbond_at[challenger] = 0
    if taken != 0:
        self._push(recipient, taken)
    log ChallengerSlashed(challenger=challenger, slasher=msg.sender, recipient=recipient, amount=taken)
    return taken


@external
def revoke(node_id: bytes32, recipient: address) -> uint256:
    """
    @notice Permanently revoke a node id (the revoker only): the whole
            remaining stake goes to `recipient`, open channels to it can no
            longer be settled, and the key can never register again. A key
            that is not registered can be revoked too (pre-emptively).
    @param node_id keccak256 of the WireGuard public key.
    @param recipient Receives the slashed stake.
    @return taken The stake taken, in token wei.
    """
    assert msg.sender == self.revoker and msg.sender != empty(address), "node_registry: not the revoker"
    assert recipient != empty(address), "node_registry: zero recipient"
    assert not self.is_revoked[node_id], "node_registry: already revoked"
    self.is_revoked[node_id] = True
    taken: uint256 = 0
    index: uint256 = self.node_index[node_id]
    if index != 0:
        taken = self._stake[index]
        self._stake[index] = 0
        self.node_head[index] = self.node_head[index] | _REVOKED_BIT
        if taken != 0:
            self._push(recipient, taken)
    log NodeRevoked(node_id=node_id, recipient=recipient, amount=taken)
    return taken


# ADMINISTRATION

@external
def set_slasher(slasher: address, allowed: bool):
    """
    @notice Allow or forbid a contract to slash (owner only).
    @param slasher The contract (reputation, a fraud-proof verifier).
    @param allowed True to allow.
    """
    ownable._check_owner()
    self.is_slasher[slasher] = allowed
    log SlasherSet(slasher=slasher, allowed=allowed)


@external
def set_revoker(revoker: address):
    """
    @notice Set the one contract allowed to revoke keys (owner only).
    @param revoker The revocation registry.
    """
    ownable._check_owner()
    self.revoker = revoker
    log RevokerSet(revoker=revoker)


@external
def set_update_epoch_length(seconds: uint256):
    """
    @notice Limit `update_node` to once per epoch of `seconds` (owner only;
            deploy_all sets the reputation epoch; 0 lifts the limit).
    @param seconds Epoch length in seconds.
    """
    ownable._check_owner()
    self.update_epoch_length = seconds
    log UpdateEpochSet(seconds=seconds)


# VIEWS

@external
@view
def node_operator(node_id: bytes32) -> address:
    """
    @notice The operator of a node's current registration.
    @param node_id The node.
    @return operator The operator, or the zero address if not registered.
    """
    return convert(self.node_head[self.node_index[node_id]] & _OPERATOR_MASK, address)


@external
@view
def node_stake(node_id: bytes32) -> uint256:
    """
    @notice A node's slashable stake.
    @param node_id The node.
    @return stake Stake in token wei (0 if not registered).
    """
    return self._stake[self.node_index[node_id]]


@external
@view
def node_unbond_at(node_id: bytes32) -> uint256:
    """
    @notice When a node's unbonding ends.
    @param node_id The node.
    @return unbond_at Timestamp in seconds (0 if bonded or not registered).
    """
    return self._unbond_at[self.node_index[node_id]]


@external
@view
def is_active(node_id: bytes32) -> bool:
    """
    @notice Whether a node is registered, bonded (not unbonding), not
            revoked and staked at least `min_node_stake`.
    @param node_id The node.
    @return active True if clients may open channels to it.
    """
    return self._active(self.node_index[node_id])


@external
@view
def node_ref(node_id: bytes32) -> (uint256, bool):
    """
    @notice What payment_channels stores for a channel: the node's current
            registration index and whether it is active, in one call.
    @param node_id The node.
    @return index Registration index (0 if not registered).
    @return active As `is_active`.
    """
    index: uint256 = self.node_index[node_id]
    return index, self._active(index)


@external
@view
def node_id_at(index: uint256) -> bytes32:
    """
    @notice The node id of a registration, also after it withdrew (for
            channel views): keccak256 of its WireGuard key.
    @param index Registration index.
    @return node_id The node id (empty for an index never used).
    """
    key: bytes32 = self._wg_key[index]
    if key == empty(bytes32):
        return empty(bytes32)
    return keccak256(key)


@external
@view
def node_wg_key(node_id: bytes32) -> bytes32:
    """
    @notice A node's WireGuard public key.
    @param node_id The node.
    @return key The X25519 public key (empty if not registered).
    """
    return self._wg_key[self.node_index[node_id]]


@external
@view
def node_region(node_id: bytes32) -> String[2]:
    """
    @notice A node's region.
    @param node_id The node.
    @return region ISO 3166-1 alpha-2 code (empty if not registered).
    """
    code: uint256 = self._listing[self.node_index[node_id]] >> _REGION_SHIFT
    if code == 0:
        return ""
    raw: bytes2 = convert(convert(code, uint16), bytes2)
    return convert(slice(concat(raw, b""), 0, 2), String[2])


@external
@view
def node_price(node_id: bytes32) -> uint256:
    """
    @notice A node's price.
    @param node_id The node.
    @return price Price per GiB in token wei (0 if not registered).
    """
    return self._listing[self.node_index[node_id]] & _MAX_PRICE


@external
@view
def listing_at(index: uint256) -> uint256:
    """
    @notice A registration's packed listing word, for payment_channels
            (the price at open, the region paid at close) and rewards.
    @param index Registration index.
    @return listing Price per GiB in token wei (bits 0-239) | the region's
            two ASCII bytes (bits 240-255), kept after withdrawal; 0 if never used.
    """
    return self._listing[index]


@external
@view
def is_challenger(account: address) -> bool:
    """
    @notice Whether an account is a bonded challenger: staked at least
            `min_challenger_stake` and not unbonding.
    @param account The account.
    @return challenger True if it may report.
    """
    return self._is_challenger(account)


# INTERNAL

@internal
@view
def _operated(node_id: bytes32) -> uint256:
    index: uint256 = self.node_index[node_id]
    assert index != 0, "node_registry: unknown node"
    assert self.node_head[index] & _OPERATOR_MASK == convert(msg.sender, uint256), "node_registry: not the operator"
    return index


@internal
@view
def _active(index: uint256) -> bool:
    head: uint256 = self.node_head[index]
    if head == 0 or head & (_REVOKED_BIT | _UNBONDING_BIT) != 0:
        return False
    return self._stake[index] >= min_node_stake


@internal
@view
def _is_challenger(account: address) -> bool:
    return self.challenger_stake[account] >= min_challenger_stake and self.challenger_unbond_at[account] == 0


@internal
@pure
def _listing_word(region: String[2], price_per_gib: uint256) -> uint256:
    # Checks the region (two upper-case ASCII letters) and the price, and packs them.
    assert len(region) == 2, "node_registry: bad region"
    raw: Bytes[2] = convert(region, Bytes[2])
    for i: uint256 in range(2):
        c: uint256 = convert(slice(raw, i, 1), uint256)
        assert c >= _ASCII_A and c <= _ASCII_Z, "node_registry: bad region"
    assert price_per_gib <= _MAX_PRICE, "node_registry: price too high"
    return price_per_gib | (convert(convert(raw, bytes2), uint256) << _REGION_SHIFT)


@internal
def _pull(owner: address, amount: uint256):
    assert extcall token.transferFrom(owner, self, amount, default_return_value=True), "node_registry: transfer failed"


@internal
def _push(to: address, amount: uint256):
    assert extcall token.transfer(to, amount, default_return_value=True), "node_registry: transfer failed"
