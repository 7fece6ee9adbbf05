# pragma version ~=0.4.3
"""
@title Warren reputation: challenger reports, node scores, majority slashing
@custom:contract-name reputation
@license AGPL-3.0-or-later
@author Warren contributors
@notice Challengers staked in node_registry post one report per node per epoch (measured
        throughput, latency, pass/fail). A report adds to the epoch's tally of reports and failures
        and keeps its measurement as one of the epoch's samples. When the epoch is over, its
        medians over the challengers are folded into the node's score (the pass/fail median, as 0
        or 10,000 basis points) and its throughput and latency figures, moving averages over
        epochs: one lying challenger among honest ones moves nothing (FlashFlow's answer to one
        measurer being fooled). Once an epoch is over, anyone may call `slash_epoch` during the
        next epoch: if at least `quorum` distinct challengers reported the node failed *and*
        failures are at least half of that epoch's reports (its lower median is a failure), the
        node loses `slash_bps` of its remaining stake, shared by the first `quorum` failure
        reporters.
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
                 Why medians per epoch (issue 14): a moving average over single reports let each
                 challenger move the score by an eighth of the distance to its own claim, so one
                 liar reporting every epoch dragged an honest node down. The median of an epoch's
                 reports lies within the honest reports' range while liars are a minority. Its
                 cost: the first MAX_SAMPLES reports of an epoch keep their measurement, four to a
                 storage word (a new word every fourth report), and the epoch is folded lazily by
                 the node's first report of a later epoch (reading the samples and selecting each
                 figure's median in memory, quickselect); the views fold a closed epoch on the fly,
                 so readers never see a stale score. Reports beyond MAX_SAMPLES in one epoch still
                 count in the tally (so in the pass/fail median and the slashing) but not in the
                 throughput and latency medians. Until its epoch closes a report moves no score.
"""


from ethereum.ercs import IERC20

from interfaces import reputation as IReputation

# @dev node_registry holds stakes and roles and does the slashing (docs/CONTRACTS.md).
from interfaces import node_registry as INodeRegistry

implements: IReputation


# ---------------------------------------------------------------------------------------------
# EVENTS
# ---------------------------------------------------------------------------------------------

# @dev A challenger's report was accepted; `score` is the node's score over its closed epochs
# (basis points): the report itself counts once its epoch is over and folded.
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


# @dev The block whose hash will be the epoch's assignment seed was chosen (draw_seed): the block
# of that call, whose hash its sender cannot know when sending it.
event SeedDrawn:
    epoch: indexed(uint256)
    drawn_block: uint256


# @dev The epoch's assignment seed was fixed (read from the drawn block's hash; never changes again).
event SeedFixed:
    epoch: indexed(uint256)
    drawn_block: uint256
    seed: bytes32


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

# @dev A node's moving averages over closed epochs, how many reports built them, and the epoch
# whose reports are not folded in yet (in memory; stored packed).
struct NodeStats:
    score: uint256
    throughput_kbps: uint256
    latency_ms: uint256
    reports: uint256
    open_epoch: uint256  # that epoch plus one; 0: none


# @dev The medians of one epoch's reports.
struct EpochMedian:
    passed: bool
    throughput_kbps: uint256
    latency_ms: uint256


# ---------------------------------------------------------------------------------------------
# CONSTANTS
# ---------------------------------------------------------------------------------------------

# @dev Basis-point denominator (10,000 = 100 %); scores and the slash fraction use it.
BPS: constant(uint256) = 10_000

# @dev Largest quorum (bounds the reporter list and the bounty loop).
MAX_QUORUM: constant(uint256) = 16

# @dev Moving-average weight 1/8 for a new epoch's median: the alpha RFC 6298 (section 2) uses
# for TCP's smoothed RTT. As there, the first sample seeds the average directly.
EMA_WEIGHT_DIVISOR: constant(uint256) = 8

# @dev Largest throughput a report may carry: 40 bits of kbit/s, about 1.1 Pbit/s.
MAX_THROUGHPUT_KBPS: constant(uint256) = 2**40 - 1

# @dev Largest latency a report may carry: 24 bits of milliseconds, about 4.7 hours.
MAX_LATENCY_MS: constant(uint256) = 2**24 - 1

# @dev Reports of one epoch whose measurements are kept for its medians (the tally counts all).
# Twice the ~18 reports per node and epoch of bench_trust's 30 challengers; bounds the fold's gas.
MAX_SAMPLES: constant(uint256) = 32

# @dev Blocks whose hash the EVM still gives (BLOCKHASH): the drawn block's hash must be read, and
# the seed fixed, within this many blocks of it, or the draw is void and must be made again.
SEED_WINDOW: constant(uint256) = 256

# @dev A sample is 64 bits: throughput (40) above latency (24); four share a storage word.
_SAMPLES_PER_WORD: constant(uint256) = 4
_SAMPLE_WORDS: constant(uint256) = MAX_SAMPLES // _SAMPLES_PER_WORD
_SAMPLE_BITS: constant(uint256) = 64
_LATENCY_BITS: constant(uint256) = 24

# @dev A node's stats live in one word, from the low bits: score (16 bits), reports (40),
# throughput_kbps (40), latency_ms (24), open epoch plus one (64). One slot per node makes a
# report read one word and write it once per epoch, not four words each time.
_MASK_16: constant(uint256) = 2**16 - 1
_MASK_24: constant(uint256) = 2**24 - 1
_MASK_40: constant(uint256) = 2**40 - 1
_MASK_64: constant(uint256) = 2**64 - 1
_REPORTS_SHIFT: constant(uint256) = 16
_THROUGHPUT_SHIFT: constant(uint256) = 56
_LATENCY_SHIFT: constant(uint256) = 96
_OPEN_SHIFT: constant(uint256) = 120

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

# @dev Reports each node is drawn for per epoch, in expectation (challenger assignment): a
# challenger may report on a node only if keccak256(seed, challenger, node) mod C < this, C being
# the challengers who reported in the previous epoch (see `is_assigned`).
reports_per_node: public(immutable(uint256))

# @dev epoch -> distinct challengers who reported in it (the next epoch's C).
_challengers_reporting: HashMap[uint256, uint256]

# @dev challenger -> last epoch it reported in, plus one (0: never); counts it once per epoch.
_challenger_epoch: HashMap[address, uint256]

# @dev epoch -> the block whose hash becomes its seed (0: not drawn; see draw_seed).
_seed_block: HashMap[uint256, uint256]

# @dev epoch -> its assignment seed once fixed (0: not yet); never written twice.
_seed: HashMap[uint256, bytes32]

# @dev registration index -> moving averages and open epoch, packed (see _OPEN_SHIFT and neighbours).
_stats: HashMap[uint256, uint256]

# @dev registration index -> epoch -> the first MAX_SAMPLES reports' measurements, four per word.
_samples: HashMap[uint256, HashMap[uint256, uint256[_SAMPLE_WORDS]]]

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
def __init__(
    registry_: address, epoch_length_: uint256, quorum_: uint256, slash_bps_: uint256, reports_per_node_: uint256
):
    """
    @notice Deploy the reputation contract; node_registry's owner must then make it a slasher.
    @param registry_ The node_registry address (its token pays the bounties).
    @param epoch_length_ Epoch length in seconds (non-zero).
    @param quorum_ Fewest distinct failure reports per epoch that can slash (1 to 16).
    @param slash_bps_ Fraction of the remaining stake slashed, in basis points (1 to 10,000).
    @param reports_per_node_ Challengers drawn per node and epoch, in expectation (at least quorum_).
    """
    assert registry_ != empty(address), "reputation: zero address"
    assert epoch_length_ != 0, "reputation: zero epoch length"
    assert quorum_ != 0 and quorum_ <= MAX_QUORUM, "reputation: quorum out of range"
    assert slash_bps_ != 0 and slash_bps_ <= BPS, "reputation: slash fraction out of range"
    # Fewer expected reports than the quorum could never slash a node.
    assert reports_per_node_ >= quorum_, "reputation: reports per node below quorum"
    # A slash comes up to two epochs after the failing epoch began (see @custom:security).
    delay: uint256 = staticcall INodeRegistry(registry_).unbonding_delay()
    assert delay >= 2 * epoch_length_, "reputation: unbonding shorter than two epochs"
    registry = INodeRegistry(registry_)
    token = IERC20(staticcall INodeRegistry(registry_).token())
    epoch_length = epoch_length_
    quorum = quorum_
    slash_bps = slash_bps_
    reports_per_node = reports_per_node_


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
            The challenger must be drawn for the node this epoch (`is_assigned`; the
            epoch's seed must be drawn first, see `draw_seed`, unless every challenger is drawn).
            A report never slashes: it adds to the epoch's tally, which `slash_epoch` judges
            once the epoch is over. With a non-zero `transcript_hash` the report also logs
            ReportTranscript, committing the challenger to the transcript it keeps (the evidence
            of a revocation proposal).
    @param node_id The node's id (keccak256 of its WireGuard public key).
    @param epoch The current epoch number (block timestamp // epoch_length); a report mined in
           another epoch than the one it was written for is refused.
    @param throughput_kbps Measured throughput in kilobits per second (at most 2**40 - 1).
    @param latency_ms Measured round-trip latency in milliseconds (at most 2**24 - 1).
    @param passed Whether the node passed the challenge.
    @param transcript_hash SHA-256 of the challenger's canonical transcript (optional; 0 for none).
    """
    assert epoch == block.timestamp // epoch_length, "reputation: wrong epoch"
    assert throughput_kbps <= MAX_THROUGHPUT_KBPS and latency_ms <= MAX_LATENCY_MS, "reputation: measurement out of range"
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
    assert self._assigned_for_report(msg.sender, node_id, epoch), "reputation: challenger not assigned to this node this epoch"
    self._last_report[index][msg.sender] = epoch + 1
    if self._challenger_epoch[msg.sender] != epoch + 1:
        self._challenger_epoch[msg.sender] = epoch + 1
        self._challengers_reporting[epoch] += 1

    # The node's first report of this epoch folds the last epoch it was reported in (now closed).
    stats: NodeStats = self._load(index)
    if stats.open_epoch != epoch + 1:
        if stats.open_epoch != 0:
            stats = self._fold(index, stats)
        stats.open_epoch = epoch + 1
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

    # The measurement, if among the epoch's first MAX_SAMPLES (a new word needs no read).
    tally: uint256 = self._tally[index][epoch]
    count: uint256 = tally & _MASK_64
    if count < MAX_SAMPLES:
        sample: uint256 = (throughput_kbps << _LATENCY_BITS) | latency_ms
        slot: uint256 = count // _SAMPLES_PER_WORD
        offset: uint256 = _SAMPLE_BITS * (count % _SAMPLES_PER_WORD)
        if offset == 0:
            self._samples[index][epoch][slot] = sample
        else:
            self._samples[index][epoch][slot] |= sample << offset

    # The epoch's tally; the first `quorum` failure reporters are kept for the bounty.
    tally += 1
    if not passed:
        failures: uint256 = (tally >> _FAILURES_SHIFT) & _MASK_64
        if failures < quorum:
            self._reporters[index][epoch][failures] = msg.sender
        tally += 1 << _FAILURES_SHIFT
    self._tally[index][epoch] = tally


# ---------------------------------------------------------------------------------------------
# CHALLENGER ASSIGNMENT
# ---------------------------------------------------------------------------------------------

@external
def draw_seed() -> bytes32:
    """
    @notice Draw or fix the current epoch's assignment seed (anyone; challengers call it until
            `epoch_seed` is set). The first call chooses its own block, whose hash nobody sending
            a transaction can know in advance; a call in a later block (or the epoch's first
            report needing the seed) fixes the seed to that hash for good. A draw not fixed within
            SEED_WINDOW blocks is void (the EVM forgets the hash) and the next call draws again.
    @return bytes32 The seed if this call fixed it, else 0 (it drew the block).
    """
    epoch: uint256 = block.timestamp // epoch_length
    assert self._seed[epoch] == empty(bytes32), "reputation: seed already fixed"
    drawn: uint256 = self._seed_block[epoch]
    if drawn != 0 and block.number <= drawn + SEED_WINDOW:
        assert block.number > drawn, "reputation: seed not ready"
        return self._fix_seed(epoch, drawn)
    self._seed_block[epoch] = block.number
    log SeedDrawn(epoch=epoch, drawn_block=block.number)
    return empty(bytes32)


@internal
def _fix_seed(epoch: uint256, drawn: uint256) -> bytes32:
    """
    @dev Store the drawn block's hash as the epoch's seed (the caller checked it is readable).
    @param epoch The epoch.
    @param drawn The drawn block's number.
    @return bytes32 The seed.
    """
    seed: bytes32 = blockhash(drawn)
    self._seed[epoch] = seed
    log SeedFixed(epoch=epoch, drawn_block=drawn, seed=seed)
    return seed


@internal
def _assigned_for_report(challenger: address, node_id: bytes32, epoch: uint256) -> bool:
    """
    @dev Whether a report in the current epoch is drawn; fixes the seed if it is drawn and
         readable but not stored yet, reverts with a whole string if it cannot be read.
    @param challenger The reporter.
    @param node_id The node.
    @param epoch The current epoch.
    @return bool Whether the challenger is drawn for the node.
    """
    active: uint256 = self._active_challengers(epoch)
    if active <= reports_per_node:
        return True
    seed: bytes32 = self._seed[epoch]
    if seed == empty(bytes32):
        drawn: uint256 = self._seed_block[epoch]
        assert drawn != 0, "reputation: seed not drawn"
        assert block.number > drawn, "reputation: seed not ready"
        assert block.number <= drawn + SEED_WINDOW, "reputation: seed expired, draw it again"
        seed = self._fix_seed(epoch, drawn)
    return self._draw(seed, challenger, node_id, active)


@internal
@view
def _active_challengers(epoch: uint256) -> uint256:
    """
    @dev C for an epoch: the distinct challengers who reported in the epoch before it.
    @param epoch The epoch.
    @return uint256 The count (0 for epoch 0).
    """
    if epoch == 0:
        return 0
    return self._challengers_reporting[epoch - 1]


@internal
@view
def _draw(seed: bytes32, challenger: address, node_id: bytes32, active: uint256) -> bool:
    """
    @dev The assignment rule: keccak256(abi_encode(seed, challenger, node_id)) mod active is below
         reports_per_node (every challenger is drawn when active <= reports_per_node).
    @param seed The epoch's seed.
    @param challenger The challenger.
    @param node_id The node.
    @param active Challengers who reported in the previous epoch.
    @return bool Whether the challenger is drawn for the node.
    """
    if active <= reports_per_node:
        return True
    return convert(keccak256(abi_encode(seed, challenger, node_id)), uint256) % active < reports_per_node


@internal
@view
def _seed_now(epoch: uint256) -> bytes32:
    """
    @dev An epoch's seed as a report mined now would use it: stored, or the drawn block's hash
         while readable; 0 if neither.
    @param epoch The epoch.
    @return bytes32 The seed or 0.
    """
    seed: bytes32 = self._seed[epoch]
    if seed != empty(bytes32):
        return seed
    drawn: uint256 = self._seed_block[epoch]
    if drawn != 0 and drawn < block.number and block.number <= drawn + SEED_WINDOW:
        return blockhash(drawn)
    return empty(bytes32)


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
def _median(index: uint256, epoch: uint256) -> EpochMedian:
    """
    @dev The lower medians of an epoch's reports: pass/fail from the tally (passed when fewer
         than half failed), throughput and latency selected from the samples of its first
         MAX_SAMPLES reports. An epoch without reports has a failed, zero median.
    @param index The node's registration index.
    @param epoch The epoch.
    @return EpochMedian The medians.
    """
    tally: uint256 = self._tally[index][epoch]
    reports: uint256 = tally & _MASK_64
    if reports == 0:
        return empty(EpochMedian)
    n: uint256 = min(reports, MAX_SAMPLES)
    throughputs: uint256[MAX_SAMPLES] = empty(uint256[MAX_SAMPLES])
    latencies: uint256[MAX_SAMPLES] = empty(uint256[MAX_SAMPLES])
    word: uint256 = 0
    for i: uint256 in range(MAX_SAMPLES):
        if i == n:
            break
        if i % _SAMPLES_PER_WORD == 0:
            word = self._samples[index][epoch][i // _SAMPLES_PER_WORD]
        sample: uint256 = (word >> (_SAMPLE_BITS * (i % _SAMPLES_PER_WORD))) & _MASK_64
        throughputs[i] = sample >> _LATENCY_BITS
        latencies[i] = sample & _MASK_24
    failures: uint256 = (tally >> _FAILURES_SHIFT) & _MASK_64
    return EpochMedian(
        passed=2 * failures < reports,
        throughput_kbps=self._lower_median(throughputs, n),
        latency_ms=self._lower_median(latencies, n),
    )


@internal
@pure
def _lower_median(values: uint256[MAX_SAMPLES], n: uint256) -> uint256:
    """
    @dev The ((n - 1) // 2)-th smallest of the first n values: quickselect (Hoare's partition
         around the middle element, in place on this memory copy). Expected O(n) steps, at
         worst O(n**2) for n <= MAX_SAMPLES; scripts/bench_gas.py folds the slowest order of 32
         found (report_fold_max). An insertion sort cost 2.6 times as much on 32 samples in
         descending order (479,339 vs 182,038 gas for that report).
    @param values The values (only the first n are read).
    @param n How many (1 to MAX_SAMPLES).
    @return uint256 The lower median.
    """
    a: uint256[MAX_SAMPLES] = values
    k: uint256 = (n - 1) // 2
    lo: uint256 = 0
    hi: uint256 = n - 1
    # Each round leaves [lo, hi] smaller by at least one, so MAX_SAMPLES rounds always suffice.
    for _round: uint256 in range(MAX_SAMPLES):
        if lo >= hi:
            break
        pivot: uint256 = a[(lo + hi) // 2]
        i: uint256 = lo
        j: uint256 = hi
        for _swap: uint256 in range(MAX_SAMPLES):
            for _step: uint256 in range(MAX_SAMPLES):
                if a[i] >= pivot:
                    break
                i += 1
            for _step: uint256 in range(MAX_SAMPLES):
                if a[j] <= pivot:
                    break
                j -= 1
            if i >= j:
                break
            swapped: uint256 = a[i]
            a[i] = a[j]
            a[j] = swapped
            i += 1
            j -= 1
        # Now a[lo..j] <= pivot <= a[j+1..hi], with lo <= j < hi.
        if k <= j:
            hi = j
        else:
            lo = j + 1
    return a[k]


@internal
@view
def _fold(index: uint256, stats: NodeStats) -> NodeStats:
    """
    @dev Fold the open epoch's medians into a registration's averages (the first epoch seeds them).
    @param index The node's registration index.
    @param stats Its stats, with a non-zero open_epoch.
    @return NodeStats The stats with that epoch folded in and no open epoch.
    """
    epoch: uint256 = stats.open_epoch - 1
    median: EpochMedian = self._median(index, epoch)
    score: uint256 = 0
    if median.passed:
        score = BPS
    folded: NodeStats = stats
    if stats.reports == 0:
        folded.score = score
        folded.throughput_kbps = median.throughput_kbps
        folded.latency_ms = median.latency_ms
    else:
        folded.score = self._average(stats.score, score)
        folded.throughput_kbps = self._average(stats.throughput_kbps, median.throughput_kbps)
        folded.latency_ms = self._average(stats.latency_ms, median.latency_ms)
    folded.reports += self._tally[index][epoch] & _MASK_64
    folded.open_epoch = 0
    return folded


@internal
@view
def _current(index: uint256) -> NodeStats:
    """
    @dev A registration's stats as of now: its open epoch folded in if that epoch is over.
    @param index The node's registration index.
    @return NodeStats The stats.
    """
    stats: NodeStats = self._load(index)
    if stats.open_epoch != 0 and stats.open_epoch <= block.timestamp // epoch_length:
        return self._fold(index, stats)
    return stats


@internal
@view
def _load(index: uint256) -> NodeStats:
    """
    @dev Unpack a registration's stats word.
    @param index The node's registration index.
    @return NodeStats The node's averages, report count and open epoch.
    """
    word: uint256 = self._stats[index]
    return NodeStats(
        score=word & _MASK_16,
        throughput_kbps=(word >> _THROUGHPUT_SHIFT) & _MASK_40,
        latency_ms=(word >> _LATENCY_SHIFT) & _MASK_24,
        reports=(word >> _REPORTS_SHIFT) & _MASK_40,
        open_epoch=word >> _OPEN_SHIFT,
    )


@internal
def _store(index: uint256, stats: NodeStats):
    """
    @dev Pack and store a registration's stats (fields fit: score <= BPS, averages of bounded
         measurements, reports below 2**40, open_epoch below 2**64 for any block timestamp).
    @param index The node's registration index.
    @param stats The node's averages, report count and open epoch.
    """
    self._stats[index] = (
        stats.score
        | (stats.reports << _REPORTS_SHIFT)
        | (stats.throughput_kbps << _THROUGHPUT_SHIFT)
        | (stats.latency_ms << _LATENCY_SHIFT)
        | (stats.open_epoch << _OPEN_SHIFT)
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
    @notice The node's score: the moving average over its closed epochs of each epoch's median
            verdict (10,000 when fewer than half of the epoch's reports failed, else 0), so a
            minority of challengers cannot move it. The current epoch counts once it is over.
    @param node_id The node's id.
    @return uint256 Score in basis points (0 to 10,000); 0 also for a node with no closed epoch
            of reports or not registered (tell them apart with report_count).
    """
    return self._current(self._index(node_id)).score


@external
@view
def throughput_kbps(node_id: bytes32) -> uint256:
    """
    @notice The moving average over the node's closed epochs of each epoch's median throughput.
    @param node_id The node's id.
    @return uint256 Kilobits per second.
    """
    return self._current(self._index(node_id)).throughput_kbps


@external
@view
def latency_ms(node_id: bytes32) -> uint256:
    """
    @notice The moving average over the node's closed epochs of each epoch's median latency.
    @param node_id The node's id.
    @return uint256 Milliseconds.
    """
    return self._current(self._index(node_id)).latency_ms


@external
@view
def report_count(node_id: bytes32) -> uint256:
    """
    @notice How many reports the node's averages are built from (those of its closed epochs).
    @param node_id The node's id.
    @return uint256 Number of reports (0 means unrated).
    """
    return self._current(self._index(node_id)).reports


@external
@view
def epoch_median(node_id: bytes32, epoch: uint256) -> (bool, uint256, uint256, uint256):
    """
    @notice The lower medians of the challengers' reports on a node in one epoch (so far, for the
            current epoch): what the epoch adds to the score once it is over.
    @param node_id The node's id.
    @param epoch The epoch number.
    @return passed Whether fewer than half of the reports failed.
    @return throughput_kbps Median throughput of the first MAX_SAMPLES reports, kilobits per second.
    @return latency_ms Median latency of the first MAX_SAMPLES reports, milliseconds.
    @return reports Reports in the epoch (all of them, also beyond MAX_SAMPLES).
    """
    index: uint256 = self._index(node_id)
    median: EpochMedian = self._median(index, epoch)
    return median.passed, median.throughput_kbps, median.latency_ms, self._tally[index][epoch] & _MASK_64


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
def is_assigned(challenger: address, node_id: bytes32, epoch: uint256) -> bool:
    """
    @notice Whether `challenger` is drawn to report on `node_id` in `epoch`: true for everyone
            when at most `reports_per_node` challengers reported in the epoch before, else when
            keccak256(abi_encode(seed, challenger, node_id)) mod that count is below
            `reports_per_node`. False while the epoch's seed is not drawn or not readable.
    @param challenger The challenger's address.
    @param node_id The node's id.
    @param epoch The epoch.
    @return bool Whether a report would pass the assignment check.
    """
    active: uint256 = self._active_challengers(epoch)
    if active <= reports_per_node:
        return True
    seed: bytes32 = self._seed_now(epoch)
    if seed == empty(bytes32):
        return False
    return self._draw(seed, challenger, node_id, active)


@external
@view
def assignment(epoch: uint256) -> (bytes32, uint256, uint256):
    """
    @notice What an epoch's draw is made of, for challengers that plan off chain.
    @param epoch The epoch.
    @return seed The seed (0 while not drawn or not readable).
    @return seed_block The drawn block (0: not drawn).
    @return active_challengers Challengers who reported in the epoch before (C).
    """
    return self._seed_now(epoch), self._seed_block[epoch], self._active_challengers(epoch)


@external
@view
def assignment_rule(seed: bytes32, challenger: address, node_id: bytes32, active_challengers: uint256) -> bool:
    """
    @notice The assignment rule on given inputs (for checking off-chain copies of it).
    @param seed An epoch's seed.
    @param challenger The challenger.
    @param node_id The node.
    @param active_challengers C, the previous epoch's reporting challengers.
    @return bool Whether the challenger would be drawn for the node.
    """
    return self._draw(seed, challenger, node_id, active_challengers)


@external
@view
def challengers_reporting(epoch: uint256) -> uint256:
    """
    @notice Distinct challengers who reported in an epoch (the next epoch's C).
    @param epoch The epoch.
    @return uint256 The count.
    """
    return self._challengers_reporting[epoch]


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
