# pragma version ~=0.4.3
"""
@title Warren rewards: per-epoch emission for challenger-measured service, weighted by regional demand
@custom:contract-name rewards
@license AGPL-3.0-or-later
@author Warren contributors
@notice Each epoch (reputation's epochs) emits `emission(epoch)` new tokens, a fixed schedule set at
        deployment (`emission_per_epoch`, halved every `halving_epochs`), minted through the token's
        minter role. It is split among the active, staked, non-revoked nodes that enter the epoch:
          - the demand pool `B = min(E * demand_share_bps, D * fee_bps * fee_rebate_bps)` (in
            basis points) goes to regions in proportion to what clients paid there (`d_r / D`,
            payment_channels' `region_paid`), and inside a region to nodes in proportion to their
            measured service (`q / Q_r`): demand over supply;
          - the service pool `E - B` goes to every node in proportion to its measured service
            (`q / Q`), where `q` is the median of the challengers' measurements of the node in the
            epoch (reputation's `epoch_service`, a failed challenge counting as zero).
        Two pull steps per node and epoch: `submit(node_id, e)` during epoch e + 1 enters the node
        (it adds its service and, for the first node of its region, the region's demand to the
        epoch's totals), and `claim(node_id, e)` from epoch e + 2 on mints its share to the operator.
        Each can be done once per node and epoch.
@custom:security Why cheats lose (docs/ECONOMICS.md has the argument and the simulation):
        wash traffic raises `d_r` by what the cheater pays itself, which costs it `fee_bps` of that
        amount plus gas, while the demand pool can move at most `fee_rebate_bps` (< 100 %) of that
        fee towards its region (the cap above), shared with every other node there. Sybil nodes on
        one uplink share its measured capacity; rewards follow service, not node count, and each
        Sybil pays its own stake and gas. A minority of challengers, lying or self-dealing through a
        second identity, cannot move a median. Demand is read from payment_channels' cumulative
        per-region counter when a region's first node submits, so an epoch's demand is what was
        paid between two such snapshots (about one epoch apart); voucher-pool channels do not count.
        Claims are paid to the operator at claim time; a node revoked or unstaked before it claims
        forfeits the epoch (its share stays unminted).
"""

from interfaces import warren_token as IWarrenToken
from interfaces import node_registry as INodeRegistry
from interfaces import payment_channels as IPaymentChannels
from interfaces import reputation as IReputation


# ---------------------------------------------------------------------------------------------
# EVENTS
# ---------------------------------------------------------------------------------------------

# @dev A node entered an epoch with its median service; `region_demand` is the region's demand
# for the epoch (token wei), fixed by the region's first entry.
event EpochEntered:
    node_id: indexed(bytes32)
    epoch: indexed(uint256)
    region: String[2]
    service_kbps: uint256
    region_demand: uint256


# @dev A node's reward for an epoch was minted to its operator (token wei).
event RewardClaimed:
    node_id: indexed(bytes32)
    epoch: indexed(uint256)
    operator: indexed(address)
    amount: uint256


# ---------------------------------------------------------------------------------------------
# CONSTANTS
# ---------------------------------------------------------------------------------------------

# @dev Basis-point denominator (10,000 = 100 %).
BPS: constant(uint256) = 10_000

# @dev Halvings after which the emission is zero (a right shift by 256 or more is zero anyway).
_MAX_HALVINGS: constant(uint256) = 255

# @dev Low and high halves of a packed word (service | demand, or service | region | flags).
_MASK_128: constant(uint256) = 2**128 - 1
_MASK_16: constant(uint256) = 2**16 - 1
_REGION_SHIFT: constant(uint256) = 128
_CLAIMED_BIT: constant(uint256) = 1 << 255

# @dev node_registry listing word: region's two ASCII bytes in bits 240-255.
_LISTING_REGION_SHIFT: constant(uint256) = 240


# ---------------------------------------------------------------------------------------------
# STORAGE
# ---------------------------------------------------------------------------------------------

# @dev The token minted (this contract must hold its minter role).
token: public(immutable(IWarrenToken))
# @dev The node registry (activity, revocation, region, operator).
registry: public(immutable(INodeRegistry))
# @dev payment_channels (per-region payments, protocol fee).
channels: public(immutable(IPaymentChannels))
# @dev reputation (epochs, per-epoch median service).
reputation: public(immutable(IReputation))
# @dev Seconds per epoch (reputation's).
epoch_length: public(immutable(uint256))
# @dev The first epoch that emits: the one the contract was deployed in.
genesis_epoch: public(immutable(uint256))
# @dev Emission of each epoch before the first halving, token wei.
emission_per_epoch: public(immutable(uint256))
# @dev Epochs between halvings of the emission.
halving_epochs: public(immutable(uint256))
# @dev Largest share of an epoch's emission the demand pool may take, basis points.
demand_share_bps: public(immutable(uint256))
# @dev The demand pool is at most this share of the protocol fees paid in the epoch, basis points
# (below 10,000, so wash traffic always pays more fee than it can move: see @custom:security).
fee_rebate_bps: public(immutable(uint256))
# @dev payment_channels' protocol fee, basis points (copied at deployment).
fee_bps: public(immutable(uint256))
# @dev Fewest challenger reports a node needs in an epoch to enter it.
min_reports: public(immutable(uint256))

# @dev node_id -> epoch -> service kbps (bits 0-127) | region code (128-143) | claimed (255); 0: not entered.
_entries: HashMap[bytes32, HashMap[uint256, uint256]]
# @dev epoch -> total service of entered nodes (bits 0-127) | total demand of their regions (128-255).
_totals: HashMap[uint256, uint256]
# @dev region code -> epoch -> service of its entered nodes (0-127) | the region's demand (128-255).
_regions: HashMap[uint256, HashMap[uint256, uint256]]
# @dev region code -> payment_channels' region_paid at the region's last snapshot.
region_snapshot: public(HashMap[uint256, uint256])
# @dev epoch -> token wei minted so far for it (never above `emission(epoch)`).
claimed: public(HashMap[uint256, uint256])


# ---------------------------------------------------------------------------------------------
# CONSTRUCTOR
# ---------------------------------------------------------------------------------------------

@deploy
def __init__(
    token_: IWarrenToken,
    channels_: IPaymentChannels,
    reputation_: IReputation,
    emission_per_epoch_: uint256,
    halving_epochs_: uint256,
    demand_share_bps_: uint256,
    fee_rebate_bps_: uint256,
    min_reports_: uint256,
):
    """
    @notice Deploy the rewards contract; the token's owner must then make it a minter.
    @param token_ The Warren token.
    @param channels_ payment_channels (its registry and fee are used).
    @param reputation_ reputation (its epochs and medians are used).
    @param emission_per_epoch_ Emission per epoch before the first halving, token wei (below 2**128).
    @param halving_epochs_ Epochs between halvings (non-zero).
    @param demand_share_bps_ Largest share of an epoch's emission paid by demand, basis points (at most 10,000).
    @param fee_rebate_bps_ Demand pool cap as a share of the epoch's protocol fees, basis points (below 10,000).
    @param min_reports_ Fewest challenger reports per node and epoch (non-zero).
    """
    assert token_.address != empty(address), "rewards: zero address"
    assert channels_.address != empty(address), "rewards: zero address"
    assert reputation_.address != empty(address), "rewards: zero address"
    assert emission_per_epoch_ <= _MASK_128, "rewards: emission too large"
    assert halving_epochs_ != 0, "rewards: zero halving period"
    assert demand_share_bps_ <= BPS, "rewards: demand share above 100 %"
    assert fee_rebate_bps_ < BPS, "rewards: rebate must be below the fee"
    assert min_reports_ != 0, "rewards: zero minimum reports"
    registry_: address = staticcall channels_.registry()
    assert staticcall reputation_.registry() == registry_, "rewards: contracts of different deployments"
    token = token_
    registry = INodeRegistry(registry_)
    channels = channels_
    reputation = reputation_
    epoch_length = staticcall reputation_.epoch_length()
    genesis_epoch = block.timestamp // epoch_length
    emission_per_epoch = emission_per_epoch_
    halving_epochs = halving_epochs_
    demand_share_bps = demand_share_bps_
    fee_rebate_bps = fee_rebate_bps_
    fee_bps = staticcall channels_.fee_bps()
    min_reports = min_reports_


# ---------------------------------------------------------------------------------------------
# ENTERING AN EPOCH
# ---------------------------------------------------------------------------------------------

@external
def submit(node_id: bytes32, epoch: uint256):
    """
    @notice Enter a node into a finished epoch with its challenger-measured service (anyone may
            call; during epoch `epoch + 1` only). The node must be registered, bonded, staked at
            least the minimum and not revoked, and have at least `min_reports` reports in `epoch`
            with a non-zero median. Its region is its listing now.
    @param node_id The node.
    @param epoch The epoch just finished.
    """
    current: uint256 = block.timestamp // epoch_length
    assert epoch < current, "rewards: epoch not finished"
    assert epoch + 1 == current, "rewards: submission window closed"
    assert epoch >= genesis_epoch, "rewards: before genesis"
    self._check_node(node_id)
    assert self._entries[node_id][epoch] == 0, "rewards: already submitted"

    service: uint256 = 0
    reports: uint256 = 0
    service, reports = staticcall reputation.epoch_service(node_id, epoch)
    assert reports >= min_reports, "rewards: too few reports"
    assert service != 0, "rewards: no measured service"

    index: uint256 = staticcall registry.node_index(node_id)
    region: uint256 = (staticcall registry.listing_at(index)) >> _LISTING_REGION_SHIFT
    word: uint256 = self._regions[region][epoch]
    demand: uint256 = word >> 128
    totals: uint256 = self._totals[epoch]
    if word == 0:
        # The region's first entry this window: its demand is what was paid there since its last snapshot.
        paid: uint256 = staticcall channels.region_paid(region)
        demand = min(paid - self.region_snapshot[region], _MASK_128)
        self.region_snapshot[region] = paid
        totals += demand << 128
    assert (word & _MASK_128) + service <= _MASK_128 and (totals & _MASK_128) + service <= _MASK_128, "rewards: service too large"
    self._regions[region][epoch] = (demand << 128) | ((word & _MASK_128) + service)
    self._totals[epoch] = totals + service
    self._entries[node_id][epoch] = service | (region << _REGION_SHIFT)
    log EpochEntered(
        node_id=node_id, epoch=epoch, region=self._region_string(region), service_kbps=service,
        region_demand=demand,
    )


# ---------------------------------------------------------------------------------------------
# CLAIMING
# ---------------------------------------------------------------------------------------------

@external
def claim(node_id: bytes32, epoch: uint256) -> uint256:
    """
    @notice Mint a node's reward for an epoch it entered to its operator (anyone may call; from
            epoch `epoch + 2` on, once). A node revoked or no longer staked cannot claim.
    @param node_id The node.
    @param epoch The epoch.
    @return amount Token wei minted.
    """
    current: uint256 = block.timestamp // epoch_length
    assert epoch < current, "rewards: epoch not finished"
    assert epoch + 1 < current, "rewards: submission window open"
    self._check_node(node_id)
    record: uint256 = self._entries[node_id][epoch]
    assert record != 0, "rewards: not submitted"
    assert record & _CLAIMED_BIT == 0, "rewards: already claimed"
    self._entries[node_id][epoch] = record | _CLAIMED_BIT

    amount: uint256 = self._share(record, epoch)
    total: uint256 = self.claimed[epoch] + amount
    assert total <= self._emission(epoch), "rewards: emission above schedule"
    self.claimed[epoch] = total
    operator: address = staticcall registry.node_operator(node_id)
    if amount != 0:
        extcall token.mint(operator, amount)
    log RewardClaimed(node_id=node_id, epoch=epoch, operator=operator, amount=amount)
    return amount


# ---------------------------------------------------------------------------------------------
# VIEWS
# ---------------------------------------------------------------------------------------------

@external
@view
def emission(epoch: uint256) -> uint256:
    """
    @notice The schedule: what an epoch emits at most.
    @param epoch The epoch number.
    @return uint256 Token wei (0 before genesis).
    """
    return self._emission(epoch)


@external
@view
def current_epoch() -> uint256:
    """
    @notice The current epoch (reputation's).
    @return uint256 block.timestamp // epoch_length.
    """
    return block.timestamp // epoch_length


@external
@view
def pending(node_id: bytes32, epoch: uint256) -> uint256:
    """
    @notice What `claim(node_id, epoch)` would mint once the epoch's window is over (0 if the
            node did not enter it or has claimed). Before then, entries may still dilute it.
    @param node_id The node.
    @param epoch The epoch.
    @return uint256 Token wei.
    """
    record: uint256 = self._entries[node_id][epoch]
    if record == 0 or record & _CLAIMED_BIT != 0:
        return 0
    return self._share(record, epoch)


@external
@view
def entry(node_id: bytes32, epoch: uint256) -> (uint256, String[2], bool):
    """
    @notice A node's entry in an epoch.
    @param node_id The node.
    @param epoch The epoch.
    @return service_kbps Its median service (0: not entered).
    @return region Its region at entry ("" if not entered).
    @return claimed Whether it was claimed.
    """
    record: uint256 = self._entries[node_id][epoch]
    if record == 0:
        return 0, "", False
    return record & _MASK_128, self._region_string((record >> _REGION_SHIFT) & _MASK_16), record & _CLAIMED_BIT != 0


@external
@view
def epoch_totals(epoch: uint256) -> (uint256, uint256, uint256):
    """
    @notice An epoch's entered service and demand, and its demand pool.
    @param epoch The epoch.
    @return service_kbps Sum of the entered nodes' median service.
    @return demand Sum of their regions' demand, token wei.
    @return demand_pool The part of the emission paid by demand, token wei.
    """
    totals: uint256 = self._totals[epoch]
    return totals & _MASK_128, totals >> 128, self._demand_pool(epoch, totals >> 128)


@external
@view
def region_totals(region: String[2], epoch: uint256) -> (uint256, uint256):
    """
    @notice A region's entered service and demand in an epoch.
    @param region ISO 3166-1 alpha-2 code.
    @param epoch The epoch.
    @return service_kbps Sum of its entered nodes' median service.
    @return demand What clients paid there (the snapshot difference), token wei.
    """
    assert len(region) == 2, "rewards: bad region"
    code: uint256 = convert(convert(convert(region, Bytes[2]), bytes2), uint256)
    word: uint256 = self._regions[code][epoch]
    return word & _MASK_128, word >> 128


# ---------------------------------------------------------------------------------------------
# INTERNAL
# ---------------------------------------------------------------------------------------------

@internal
@view
def _check_node(node_id: bytes32):
    # Revoked first (a revoked node is also inactive), then the other ways of not being staked.
    assert not staticcall registry.is_revoked(node_id), "rewards: node revoked"
    assert staticcall registry.is_active(node_id), "rewards: node not staked"


@internal
@view
def _emission(epoch: uint256) -> uint256:
    if epoch < genesis_epoch:
        return 0
    halvings: uint256 = (epoch - genesis_epoch) // halving_epochs
    if halvings > _MAX_HALVINGS:
        return 0
    return emission_per_epoch >> halvings


@internal
@view
def _demand_pool(epoch: uint256, demand: uint256) -> uint256:
    # min(E * share, fees * rebate): each token of demand moves at most fee * rebate < fee of reward.
    return min(self._emission(epoch) * demand_share_bps // BPS, demand * fee_bps * fee_rebate_bps // (BPS * BPS))


@internal
@view
def _share(record: uint256, epoch: uint256) -> uint256:
    # service pool * q / Q  +  demand pool * (d_r / D) * (q / Q_r); every term rounds down, so the
    # shares of an epoch add up to at most its emission.
    service: uint256 = record & _MASK_128
    region: uint256 = (record >> _REGION_SHIFT) & _MASK_16
    totals: uint256 = self._totals[epoch]
    total_service: uint256 = totals & _MASK_128
    total_demand: uint256 = totals >> 128
    pool: uint256 = self._demand_pool(epoch, total_demand)
    amount: uint256 = (self._emission(epoch) - pool) * service // total_service
    if pool != 0:
        word: uint256 = self._regions[region][epoch]
        amount += pool * (word >> 128) // total_demand * service // (word & _MASK_128)
    return amount


@internal
@pure
def _region_string(code: uint256) -> String[2]:
    if code == 0:
        return ""
    raw: bytes2 = convert(convert(code, uint16), bytes2)
    return convert(slice(concat(raw, b""), 0, 2), String[2])
