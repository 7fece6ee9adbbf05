"""The contracts' rules the simulation mirrors (reputation's histogram and median, its challenger
assignment, rewards' split) and the statistics of its figures: pure functions, each tested against
the contract or on fixed cases (tests/economy, tests/contracts/test_rewards.py).
"""

from __future__ import annotations

import math
import statistics

import numpy as np

__all__ = ["MAX_THROUGHPUT_KBPS", "SERVICE_BASE_KBPS", "SERVICE_BUCKETS", "bucket_floor_kbps", "bucket_floors",
           "draw_probability", "epoch_rewards", "mean_ci95", "median_service"]

#: contracts/reputation.vy: bucket 0 is a failure or < 1 Mbit/s; then half-octaves; 32 buckets.
SERVICE_BASE_KBPS = 1_000
SERVICE_BUCKETS = 32
_SQRT2_E4 = 14_142
#: contracts/reputation.vy's MAX_THROUGHPUT_KBPS: the most a report may claim (2**40 - 1 kbit/s).
MAX_THROUGHPUT_KBPS = 2**40 - 1


def bucket_floor_kbps(kbps: float, passed: bool = True) -> int:
    """What reputation.vy's histogram keeps of one measurement: its half-octave bucket's floor."""
    kbps = int(kbps)
    if not passed or kbps < SERVICE_BASE_KBPS:
        return 0
    octave = min(15, (kbps // SERVICE_BASE_KBPS).bit_length() - 1)
    bucket = 1 + 2 * octave + (kbps * 10_000 >= (SERVICE_BASE_KBPS << octave) * _SQRT2_E4)
    bucket = min(bucket, SERVICE_BUCKETS - 1)
    octave, half = divmod(bucket - 1, 2)
    low = SERVICE_BASE_KBPS << octave
    return low * _SQRT2_E4 // 10_000 if half else low


def bucket_floors(kbps: np.ndarray, passed: np.ndarray) -> np.ndarray:
    """:func:`bucket_floor_kbps` on arrays (int64; the same figures element by element)."""
    kbps = np.floor(np.asarray(kbps, dtype=np.float64)).astype(np.int64)
    ok = np.asarray(passed, dtype=bool) & (kbps >= SERVICE_BASE_KBPS)
    safe = np.where(ok, kbps, SERVICE_BASE_KBPS)
    _, exponent = np.frexp((safe // SERVICE_BASE_KBPS).astype(np.float64))  # exponent = bit_length
    octave = np.minimum(15, exponent - 1).astype(np.int64)
    low = SERVICE_BASE_KBPS * (np.int64(1) << octave)
    bucket = 1 + 2 * octave + (safe * 10_000 >= low * _SQRT2_E4)
    bucket = np.minimum(bucket, SERVICE_BUCKETS - 1)
    octave, half = np.divmod(bucket - 1, 2)
    low = SERVICE_BASE_KBPS * (np.int64(1) << octave)
    floors = np.where(half == 1, low * _SQRT2_E4 // 10_000, low)
    return np.where(ok, floors, 0)


def draw_probability(reports_per_node: int, challengers: int) -> float:
    """reputation's assignment seen from one (challenger, node) pair: drawn when keccak(seed,
    challenger, node) mod C < reports_per_node, C the challengers who reported in the epoch before;
    everyone when C <= reports_per_node."""
    if challengers <= reports_per_node:
        return 1.0
    return reports_per_node / challengers


def median_service(floors: list[int], min_reports: int) -> int:
    """reputation.epoch_service + rewards.submit: the lower median of the bucket floors, or 0 when
    there are fewer than ``min_reports`` reports (the node cannot enter the epoch)."""
    if len(floors) < min_reports:
        return 0
    ordered = sorted(floors)
    return ordered[(len(ordered) + 1) // 2 - 1]


def epoch_rewards(emission: float, fee: float, demand_share: float, fee_rebate: float,
                  services: list[float], regions: list[str], region_paid: dict[str, float]) -> list[float]:
    """rewards.vy's split of one epoch among the nodes that entered it.

    Args:
        emission: the epoch's emission.
        fee, demand_share, fee_rebate: fractions (the contract's basis points / 10,000).
        services: each entered node's median service (> 0).
        regions: each entered node's region.
        region_paid: what clients paid in each region (regions without an entered node do not count).

    Returns:
        Each node's reward, in the unit of ``emission``; they add up to at most ``emission``.
    """
    total_service = sum(services)
    if total_service <= 0:
        return [0.0] * len(services)
    region_service: dict[str, float] = {}
    for service, region in zip(services, regions, strict=True):
        region_service[region] = region_service.get(region, 0.0) + service
    demand = {r: region_paid.get(r, 0.0) for r in region_service}
    total_demand = sum(demand.values())
    pool = min(emission * demand_share, total_demand * fee * fee_rebate)
    out = []
    for service, region in zip(services, regions, strict=True):
        reward = (emission - pool) * service / total_service
        if pool > 0:
            reward += pool * demand[region] / total_demand * service / region_service[region]
        out.append(reward)
    return out


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % confidence interval (Student's t)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.inf
    t = _T975.get(n - 1, 1.96)
    return mean, t * statistics.stdev(values) / math.sqrt(n)


# Student's t 0.975 quantiles for small degrees of freedom (above 30 the normal 1.96 is within 2 %).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093, 20: 2.086, 24: 2.064, 29: 2.045, 30: 2.042}
for _df in range(21, 30):
    _T975.setdefault(_df, 2.08 - (_df - 20) * 0.0035)
