# pragma version ~=0.4.3
"""
@title Warren reputation: challenger reports, node scores, majority slashing
@custom:contract-name reputation
@license AGPL-3.0-or-later
@author Warren contributors
@notice Challengers staked in node_registry post one report per node per epoch (measured
        throughput, latency, pass/fail). Each report moves the node's on-chain averages (score =
        pass rate in basis points, throughput, latency) and the epoch's tally of reports and
        failures. Once an epoch is over, anyone may call `slash_epoch` during the next epoch: if at
        least `quorum` distinct challengers reported the node failed *and* failures are at least
        half of that epoch's reports (its lower median is a failure), the node loses `slash_bps`
        of its remaining stake, shared by the first `quorum` failure reporters.
@custom:security Why a majority and not a count (issue 14, docs/BENCHMARKS.md "Trust:
                 challengers"): with ~18 reports per node and epoch, measurement noise alone reached
                 a fixed quorum of 3 failures for 39 % of honest nodes within 100 epochs, and any 3
                 lying challengers reaching a node slashed it. Requiring half the epoch's reports to
                 be failures makes a lying minority unable to slash on its own, and the decision
                 has to wait until the epoch's reports are in: hence `slash_epoch`, one epoch later.
                 The stake must still be there then: the constructor requires node_registry's
                 unbonding delay to be at least two epochs, so a node that requests unbonding in
                 (or after) its failing epoch cannot withdraw before the window closes.
                 Bounties are pushed to the reporters in the slashing transaction, not pulled
                 later: the token is Warren's own ERC-20 (no transfer hooks, no blocklist), so a
                 reporter cannot block or re-enter the payout, and the list is bounded by
                 MAX_QUORUM, so the gas is bounded too. A hook-bearing token would need pull payment.
                 The slashed stake goes entirely to the reporters, so colluding challengers who are
                 a majority of a node's reports in an epoch (and at least `quorum`) could slash an
                 honest node for profit; the defence is the challenger stake and enough
                 challengers per node that such a majority costs more than `slash_bps` of a node's
                 stake. Reports on one's own node are refused, but one person can hold both an
                 operator and a challenger account: Sybil resistance comes only from stake.
                 Everything here is keyed by the node's registration (node_registry's
                 `node_index`), not by its node id: a key that withdraws and registers again (by
                 anyone, even in the same epoch) starts with a clean score, no reports and no
                 failure reports, so an earlier registration's failures never slash the new one.
"""


from ethereum.ercs import IERC20

from interfaces import reputation as IReputation

# @dev node_registry holds stakes and roles and does the slashing (docs/CONTRACTS.md).
from interfaces import node_registry as INodeRegistry

implements: IReputation


# ---------------------------------------------------------------------------------------------
# EVENTS
# ---------------------------------------------------------------------------------------------

# @dev A challenger's report was accepted; `score` is the node's score after it (basis points).
event ReportPosted:
    node_id: indexed(bytes32)
    epoch: indexed(uint256)
    challenger: indexed(address)
    throughput_kbps: uint256
    latency_ms: uint256
    passed: bool
    score: uint256


# @dev The hash of the challenger's transcript behind a report (kept off chain by the challenger;
# guardians check a tampering node's evidence against it).
event ReportTranscript:
    node_id: indexed(bytes32)
    epoch: indexed(uint256)
    challenger: indexed(address)
    transcript_hash: bytes32


# @dev A finished epoch's failure majority was slashed: `amount` (token wei) was taken from the
# node's stake and shared by `reporters` (the first `quorum` failure reporters); `failures` of the
# epoch's `reports` failed.
event QuorumSlashed:
    node_id: indexed(bytes32)
    epoch: indexed(uint256)
    amount: uint256
    reporters: DynArray[address, MAX_QUORUM]
    reports: uint256
    failures: uint256


# @dev One reporter's share of a slash (token wei), pushed to it.
event BountyPaid:
    node_id: indexed(bytes32)
    epoch: indexed(uint256)
    challenger: indexed(address)
    amount: uint256


# ---------------------------------------------------------------------------------------------
# STRUCTS
# ---------------------------------------------------------------------------------------------

# @dev A node's moving averages and how many reports built them (in memory; stored packed).
struct NodeStats:
    score: uint256
    throughput_kbps: uint256
    latency_ms: uint256
    reports: uint256


# ---------------------------------------------------------------------------------------------
# CONSTANTS
# ---------------------------------------------------------------------------------------------

# @dev Basis-point denominator (10,000 = 100 %); scores and the slash fraction use it.
BPS: constant(uint256) = 10_000

# @dev Largest quorum (bounds the reporter list and the bounty loop).
MAX_QUORUM: constant(uint256) = 16

# @dev Moving-average weight 1/8 for a new sample: the alpha RFC 6298 (section 2) uses for TCP's
# smoothed RTT. As there, the first sample seeds the average directly.
EMA_WEIGHT_DIVISOR: constant(uint256) = 8

# @dev Largest throughput or latency a report may carry; bounds the averages to 64 bits.
MAX_MEASUREMENT: constant(uint256) = 2**64 - 1

# @dev A node's stats live in one word, from the low bits: score (16 bits), reports (64),
# throughput_kbps (88), latency_ms (88). One slot per node makes a report write one word, not four.
_MASK_16: constant(uint256) = 2**16 - 1
_MASK_64: constant(uint256) = 2**64 - 1
_MASK_88: constant(uint256) = 2**88 - 1
_REPORTS_SHIFT: constant(uint256) = 16
_THROUGHPUT_SHIFT: constant(uint256) = 80
_LATENCY_SHIFT: constant(uint256) = 168

# @dev An epoch's tally in one word, from the low bits: reports (64 bits), failures (64), and the
# slashed flag on top. A report writes it whatever its verdict; slash_epoch reads it once.
_FAILURES_SHIFT: constant(uint256) = 64
_SLASHED_BIT: constant(uint256) = 1 << 255

# @dev node_registry's head word: operator (bits 0-159) | revoked (bit 160), see node_registry.vy.
_OPERATOR_MASK: constant(uint256) = 2**160 - 1
_REVOKED_BIT: constant(uint256) = 1 << 160

# @dev Per-epoch service histogram, for the median rewards.vy pays on: 32 buckets of 8-bit counts
# in one word (bucket b's count in bits 8b..8b+7), so a report writes one word and a median reads
# one, whatever the number of challengers. Bucket 0: failed, or below 1 Mbit/s. Bucket b >= 1:
# throughput from SERVICE_BASE_KBPS * 2**((b - 1) / 2), half-octave steps (x1.414), b = 31 from
# 32 Gbit/s up. A count stops at 255 (more reports in that bucket in one epoch are not counted).
SERVICE_BUCKETS: constant(uint256) = 32
SERVICE_BASE_KBPS: constant(uint256) = 1_000
_MASK_8: constant(uint256) = 2**8 - 1
# @dev sqrt(2) in units of 1/10,000, for the half-octave bucket edges (rounded down).
_SQRT2_E4: constant(uint256) = 14_142


# ---------------------------------------------------------------------------------------------
# STORAGE
# ---------------------------------------------------------------------------------------------

# @dev The node and challenger registry (reads stakes and roles, slashes).
registry: public(immutable(INodeRegistry))

# @dev The stake token, in which bounties are paid.
token: public(immutable(IERC20))

# @dev Epoch length in seconds; epoch = block.timestamp // epoch_length.
epoch_length: public(immutable(uint256))

# @dev Fewest distinct failure reports in one epoch that can slash (and reporters paid).
quorum: public(immutable(uint256))

# @dev Fraction of the remaining stake a slash takes, in basis points.
slash_bps: public(immutable(uint256))

# @dev registration index -> moving averages, packed (see _LATENCY_SHIFT and neighbours).
_stats: HashMap[uint256, uint256]

# @dev registration index -> challenger -> last epoch reported plus one (0 = never); one per epoch.
_last_report: HashMap[uint256, HashMap[address, uint256]]

# @dev registration index -> epoch -> reports | failures | slashed, packed (see _FAILURES_SHIFT).
_tally: HashMap[uint256, HashMap[uint256, uint256]]

# @dev registration index -> epoch -> first challengers (up to quorum) who reported a failure; how
# many are set is min(failures, quorum) from the tally.
_reporters: HashMap[uint256, HashMap[uint256, address[MAX_QUORUM]]]

# @dev registration index -> epoch -> service histogram of that epoch's reports (see SERVICE_BUCKETS).
_service: HashMap[uint256, HashMap[uint256, uint256]]


# ---------------------------------------------------------------------------------------------
# CONSTRUCTOR
# ---------------------------------------------------------------------------------------------

@deploy
def __init__(registry_: address, epoch_length_: uint256, quorum_: uint256, slash_bps_: uint256):
    """
    @notice Deploy the reputation contract; node_registry's owner must then make it a slasher.
    @param registry_ The node_registry address (its token pays the bounties).
    @param epoch_length_ Epoch length in seconds (non-zero).
    @param quorum_ Fewest distinct failure reports per epoch that can slash (1 to 16).
    @param slash_bps_ Fraction of the remaining stake slashed, in basis points (1 to 10,000).
    """
    assert registry_ != empty(address), "reputation: zero address"
    assert epoch_length_ != 0, "reputation: zero epoch length"
    assert quorum_ != 0 and quorum_ <= MAX_QUORUM, "reputation: quorum out of range"
    assert slash_bps_ != 0 and slash_bps_ <= BPS, "reputation: slash fraction out of range"
    # A slash comes up to two epochs after the failing epoch began (see @custom:security).
    delay: uint256 = staticcall INodeRegistry(registry_).unbonding_delay()
    assert delay >= 2 * epoch_length_, "reputation: unbonding shorter than two epochs"
    registry = INodeRegistry(registry_)
    token = IERC20(staticcall INodeRegistry(registry_).token())
    epoch_length = epoch_length_
    quorum = quorum_
    slash_bps = slash_bps_


# ---------------------------------------------------------------------------------------------
# REPORTS
# ---------------------------------------------------------------------------------------------

@external
@nonreentrant
def report(
    node_id: bytes32, epoch: uint256, throughput_kbps: uint256, latency_ms: uint256, passed: bool,
    transcript_hash: bytes32 = empty(bytes32),
):
    """
    @notice Post the caller's measurement of a node for the current epoch. The caller must be a
            staked challenger, not the node's operator, and may report once per node per epoch.
            A report never slashes: it adds to the epoch's tally, which `slash_epoch` judges
            once the epoch is over. With a non-zero `transcript_hash` the report also logs
            ReportTranscript, committing the challenger to the transcript it keeps (the evidence
            of a revocation proposal).
    @param node_id The node's id (keccak256 of its WireGuard public key).
    @param epoch The current epoch number (block timestamp // epoch_length); a report mined in
           another epoch than the one it was written for is refused.
    @param throughput_kbps Measured throughput in kilobits per second (at most 2**64 - 1).
    @param latency_ms Measured round-trip latency in milliseconds (at most 2**64 - 1).
    @param passed Whether the node passed the challenge.
    @param transcript_hash SHA-256 of the challenger's canonical transcript (optional; 0 for none).
    """
    assert epoch == block.timestamp // epoch_length, "reputation: wrong epoch"
    assert throughput_kbps <= MAX_MEASUREMENT and latency_ms <= MAX_MEASUREMENT, "reputation: measurement out of range"
    assert staticcall registry.is_challenger(msg.sender), "reputation: not a challenger"
    # The node's current registration and its head word (operator | revoked) in two reads: the
    # same cost as node_operator + is_revoked, and every record below is keyed by the index.
    index: uint256 = staticcall registry.node_index(node_id)
    head: uint256 = staticcall registry.node_head(index)
    operator: address = convert(head & _OPERATOR_MASK, address)
    assert operator != empty(address), "reputation: unknown node"
    assert operator != msg.sender, "reputation: own node"
    assert head & _REVOKED_BIT == 0, "reputation: node revoked"
    assert self._last_report[index][msg.sender] <= epoch, "reputation: already reported"
    self._last_report[index][msg.sender] = epoch + 1

    sample: uint256 = 0
    if passed:
        sample = BPS
    stats: NodeStats = self._load(index)
    if stats.reports == 0:
        stats.score = sample
        stats.throughput_kbps = throughput_kbps
        stats.latency_ms = latency_ms
    else:
        stats.score = self._average(stats.score, sample)
        stats.throughput_kbps = self._average(stats.throughput_kbps, throughput_kbps)
        stats.latency_ms = self._average(stats.latency_ms, latency_ms)
    stats.reports += 1
    self._store(index, stats)
    self._count_service(index, epoch, throughput_kbps, passed)
    log ReportPosted(
        node_id=node_id,
        epoch=epoch,
        challenger=msg.sender,
        throughput_kbps=throughput_kbps,
        latency_ms=latency_ms,
        passed=passed,
        score=stats.score,
    )
    if transcript_hash != empty(bytes32):
        log ReportTranscript(node_id=node_id, epoch=epoch, challenger=msg.sender, transcript_hash=transcript_hash)

    # The epoch's tally; the first `quorum` failure reporters are kept for the bounty.
    tally: uint256 = self._tally[index][epoch] + 1
    if not passed:
        failures: uint256 = (tally >> _FAILURES_SHIFT) & _MASK_64
        if failures < quorum:
            self._reporters[index][epoch][failures] = msg.sender
        tally += 1 << _FAILURES_SHIFT
    self._tally[index][epoch] = tally


# ---------------------------------------------------------------------------------------------
# SLASHING
# ---------------------------------------------------------------------------------------------

@external
@nonreentrant
def slash_epoch(node_id: bytes32, epoch: uint256):
    """
    @notice Slash a node for a finished epoch in which at least half of its reports were
            failures: at least `quorum` distinct failure reports, and failures at least half of
            the epoch's reports on the node's current registration (its lower median failed).
            Anyone may call, during epoch `epoch + 1` only, once per registration and epoch.
            Takes `slash_bps` of the remaining stake and splits it equally among the epoch's
            first `quorum` failure reporters (the rounding remainder to the last of them).
    @param node_id The node's id.
    @param epoch The epoch just finished.
    """
    index: uint256 = self._index(node_id)
    refusal: String[48] = self._refusal(index, epoch)
    assert refusal == "", refusal
    tally: uint256 = self._tally[index][epoch]
    self._tally[index][epoch] = tally | _SLASHED_BIT
    self._slash(node_id, index, epoch, tally & _MASK_64, (tally >> _FAILURES_SHIFT) & _MASK_64)


@internal
@view
def _refusal(index: uint256, epoch: uint256) -> String[48]:
    """
    @dev Why slash_epoch would refuse a registration's epoch now ("" if it would slash).
    @param index The node's registration index (0: not registered).
    @param epoch The epoch.
    @return String[48] The revert string, or "".
    """
    current: uint256 = block.timestamp // epoch_length
    if epoch >= current:
        return "reputation: epoch not finished"
    if epoch + 1 != current:
        return "reputation: slash window closed"
    if index == 0:
        return "reputation: unknown node"
    tally: uint256 = self._tally[index][epoch]
    if tally & _SLASHED_BIT != 0:
        return "reputation: already slashed"
    failures: uint256 = (tally >> _FAILURES_SHIFT) & _MASK_64
    if failures < quorum:
        return "reputation: failure quorum not reached"
    if 2 * failures < tally & _MASK_64:
        return "reputation: no failure majority"
    return ""


@internal
def _count_service(index: uint256, epoch: uint256, throughput_kbps: uint256, passed: bool):
    """
    @dev Add one report to the node's service histogram of the epoch (saturating at 255).
    @param index The node's registration index.
    @param epoch The report's epoch.
    @param throughput_kbps The measured throughput.
    @param passed Whether the challenge passed (a failure counts in bucket 0).
    """
    bucket: uint256 = 0
    if passed:
        bucket = self._bucket_of(throughput_kbps)
    word: uint256 = self._service[index][epoch]
    if (word >> (8 * bucket)) & _MASK_8 != _MASK_8:
        self._service[index][epoch] = word + (1 << (8 * bucket))


@internal
@pure
def _bucket_of(throughput_kbps: uint256) -> uint256:
    """
    @dev The histogram bucket of a passing measurement.
    @param throughput_kbps Kilobits per second.
    @return uint256 0 below SERVICE_BASE_KBPS, else 1 + 2k + h for SERVICE_BASE_KBPS * 2**k * (1 or
            sqrt 2) <= x, at most SERVICE_BUCKETS - 1.
    """
    if throughput_kbps < SERVICE_BASE_KBPS:
        return 0
    octave: uint256 = 0
    for k: uint256 in range(1, 16):
        if throughput_kbps < SERVICE_BASE_KBPS << k:
            break
        octave = k
    bucket: uint256 = 1 + 2 * octave
    if throughput_kbps * 10_000 >= (SERVICE_BASE_KBPS << octave) * _SQRT2_E4:
        bucket += 1
    return min(bucket, SERVICE_BUCKETS - 1)


@internal
@pure
def _bucket_floor(bucket: uint256) -> uint256:
    """
    @dev The lowest throughput a bucket holds (0 for bucket 0): what a median in it is worth.
    @param bucket 0 to SERVICE_BUCKETS - 1.
    @return uint256 Kilobits per second.
    """
    if bucket == 0:
        return 0
    low: uint256 = SERVICE_BASE_KBPS << ((bucket - 1) // 2)
    if (bucket - 1) % 2 == 1:
        low = low * _SQRT2_E4 // 10_000
    return low


@internal
@pure
def _average(old: uint256, sample: uint256) -> uint256:
    """
    @dev Exponential moving average with weight 1/EMA_WEIGHT_DIVISOR for the new sample.
    @param old The current average.
    @param sample The new sample.
    @return uint256 The new average (rounded down).
    """
    return (old * (EMA_WEIGHT_DIVISOR - 1) + sample) // EMA_WEIGHT_DIVISOR


@internal
@view
def _load(index: uint256) -> NodeStats:
    """
    @dev Unpack a registration's stats word.
    @param index The node's registration index.
    @return NodeStats The node's averages and report count.
    """
    word: uint256 = self._stats[index]
    return NodeStats(
        score=word & _MASK_16,
        throughput_kbps=(word >> _THROUGHPUT_SHIFT) & _MASK_88,
        latency_ms=(word >> _LATENCY_SHIFT) & _MASK_88,
        reports=(word >> _REPORTS_SHIFT) & _MASK_64,
    )


@internal
def _store(index: uint256, stats: NodeStats):
    """
    @dev Pack and store a registration's stats (fields fit: score <= BPS, averages <= MAX_MEASUREMENT).
    @param index The node's registration index.
    @param stats The node's averages and report count.
    """
    self._stats[index] = (
        stats.score
        | (stats.reports << _REPORTS_SHIFT)
        | (stats.throughput_kbps << _THROUGHPUT_SHIFT)
        | (stats.latency_ms << _LATENCY_SHIFT)
    )


@internal
def _slash(node_id: bytes32, index: uint256, epoch: uint256, reports: uint256, failures: uint256):
    """
    @dev Take `slash_bps` of the node's remaining stake and split it equally among the epoch's
         first `quorum` failure reporters; the rounding remainder goes to the last one.
    @param node_id The node's id (node_registry slashes its current registration, `index`).
    @param index The registration being slashed.
    @param epoch The epoch it is slashed for.
    @param reports The epoch's reports on the registration.
    @param failures How many of them failed (at least `quorum`).
    """
    reporters: DynArray[address, MAX_QUORUM] = self._reporters_of(index, epoch)
    amount: uint256 = staticcall registry.node_stake(node_id) * slash_bps // BPS
    taken: uint256 = 0
    if amount != 0:
        taken = extcall registry.slash(node_id, amount, self)
    log QuorumSlashed(
        node_id=node_id, epoch=epoch, amount=taken, reporters=reporters, reports=reports, failures=failures
    )
    if taken == 0:
        return
    share: uint256 = taken // quorum
    paid: uint256 = 0
    for i: uint256 in range(MAX_QUORUM):
        if i == quorum:
            break
        bounty: uint256 = share
        if i == quorum - 1:
            bounty = taken - paid
        paid += bounty
        assert extcall token.transfer(reporters[i], bounty, default_return_value=True), "reputation: transfer failed"
        log BountyPaid(node_id=node_id, epoch=epoch, challenger=reporters[i], amount=bounty)


@internal
@view
def _reporters_of(index: uint256, epoch: uint256) -> DynArray[address, MAX_QUORUM]:
    """
    @dev The first min(failures, quorum) failure reporters of a registration's epoch, in report order.
    @param index The node's registration index.
    @param epoch The epoch.
    @return DynArray The reporters.
    """
    count: uint256 = min((self._tally[index][epoch] >> _FAILURES_SHIFT) & _MASK_64, quorum)
    reporters: DynArray[address, MAX_QUORUM] = []
    for i: uint256 in range(MAX_QUORUM):
        if i == count:
            break
        reporters.append(self._reporters[index][epoch][i])
    return reporters


# ---------------------------------------------------------------------------------------------
# VIEWS
# ---------------------------------------------------------------------------------------------

@external
@view
def score(node_id: bytes32) -> uint256:
    """
    @notice The pass-rate moving average of the node's current registration.
    @param node_id The node's id.
    @return uint256 Score in basis points (0 to 10,000); 0 also for a node never reported on
            or not registered (tell them apart with report_count).
    """
    return self._load(self._index(node_id)).score


@external
@view
def throughput_kbps(node_id: bytes32) -> uint256:
    """
    @notice The node's throughput moving average.
    @param node_id The node's id.
    @return uint256 Kilobits per second.
    """
    return self._load(self._index(node_id)).throughput_kbps


@external
@view
def latency_ms(node_id: bytes32) -> uint256:
    """
    @notice The node's latency moving average.
    @param node_id The node's id.
    @return uint256 Milliseconds.
    """
    return self._load(self._index(node_id)).latency_ms


@external
@view
def report_count(node_id: bytes32) -> uint256:
    """
    @notice How many reports the node's averages are built from.
    @param node_id The node's id.
    @return uint256 Number of reports (0 means unrated).
    """
    return self._load(self._index(node_id)).reports


@external
@view
def epoch_service(node_id: bytes32, epoch: uint256) -> (uint256, uint256):
    """
    @notice The median of the challengers' measurements of a node in one epoch, a failed challenge
            counting as zero: what rewards.vy pays for. A minority of challengers (lying, or the
            node's own second identities) cannot move it outside the honest reports' range, and a
            node that fails half its challenges or more has a zero median (uptime).
    @param node_id The node's id.
    @param epoch The epoch number.
    @return median_kbps The lower median, as the floor of its half-octave bucket, kilobits per second.
    @return reports Reports counted (at most 255 per bucket).
    """
    word: uint256 = self._service[self._index(node_id)][epoch]
    reports: uint256 = 0
    for b: uint256 in range(SERVICE_BUCKETS):
        reports += (word >> (8 * b)) & _MASK_8
    if reports == 0:
        return 0, 0
    target: uint256 = (reports + 1) // 2
    seen: uint256 = 0
    for b: uint256 in range(SERVICE_BUCKETS):
        seen += (word >> (8 * b)) & _MASK_8
        if seen >= target:
            return self._bucket_floor(b), reports
    return 0, reports  # unreachable: seen ends at reports >= target


@external
@view
def current_epoch() -> uint256:
    """
    @notice The epoch reports are accepted for now.
    @return uint256 block.timestamp // epoch_length.
    """
    return block.timestamp // epoch_length


@external
@view
def failure_reporters(node_id: bytes32, epoch: uint256) -> DynArray[address, MAX_QUORUM]:
    """
    @notice The first distinct challengers (up to the quorum) who reported a node failed in an epoch.
    @param node_id The node's id.
    @param epoch The epoch number.
    @return DynArray The reporters, in report order.
    """
    return self._reporters_of(self._index(node_id), epoch)


@external
@view
def epoch_tally(node_id: bytes32, epoch: uint256) -> (uint256, uint256, bool):
    """
    @notice A node's reports and failures in one epoch (its current registration), and whether
            slash_epoch has slashed it for that epoch.
    @param node_id The node's id.
    @param epoch The epoch number.
    @return reports Reports on the node in the epoch.
    @return failures How many of them reported a failed challenge.
    @return slashed Whether the epoch was slashed.
    """
    tally: uint256 = self._tally[self._index(node_id)][epoch]
    return tally & _MASK_64, (tally >> _FAILURES_SHIFT) & _MASK_64, tally & _SLASHED_BIT != 0


@external
@view
def slash_refusal(node_id: bytes32, epoch: uint256) -> String[48]:
    """
    @notice Why `slash_epoch(node_id, epoch)` would revert now, or "" if it would slash: agents
            ask before they pay gas.
    @param node_id The node's id.
    @param epoch The epoch number.
    @return String The revert string slash_epoch would give ("" if none).
    """
    return self._refusal(self._index(node_id), epoch)


@external
@view
def service_histogram(node_id: bytes32, epoch: uint256) -> uint256:
    """
    @notice The packed service histogram of a node's current registration in one epoch.
    @param node_id The node's id.
    @param epoch The epoch number.
    @return uint256 32 buckets of 8-bit counts (see SERVICE_BUCKETS).
    """
    return self._service[self._index(node_id)][epoch]


@internal
@view
def _index(node_id: bytes32) -> uint256:
    """
    @dev The node's current registration index (0, whose records are all empty, if not registered).
    @param node_id The node's id.
    @return uint256 node_registry's node_index.
    """
    return staticcall registry.node_index(node_id)
