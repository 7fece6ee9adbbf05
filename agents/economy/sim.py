"""Agent-based model of Warren's rewards and prices, to show which strategies pay (docs/ECONOMICS.md).

A pure core: no chain, no clock, no I/O. ``scripts/sim_economy.py`` measures the contracts' gas on
anvil and feeds it in as :class:`Gas`; everything else is a parameter of :class:`Params`.

One run is ``Params.epochs`` epochs (days) of a network of nodes in several regions:

* clients' demand (GiB per epoch) moves between regions by a random walk, and rises by
  ``shock_factor`` in ``shock_region`` at ``shock_epoch``;
* clients split a region's demand among its nodes by the service they get, cheaper nodes first
  (weight ``service x cheapest / price``), never above a node's capacity;
* nodes price automatically (``price = "auto"``): once per epoch towards a target utilisation,
  between a floor and a ceiling, paying the gas of an update when the price moves by more than 1 %
  (:mod:`agents.node.pricing`: the rule a node runs);
* each channel pays ``channel_usd`` on average and is closed by the node with one cooperative close;
  the node pays the protocol fee, that gas, and the gas of entering and claiming each epoch;
* challengers report on the nodes reputation's assignment draws them for (each pair with
  probability ``min(1, reports_per_node / C)``, C every challenger identity, the cheat's
  included: :func:`draw_probability`) and measure what a customer would get, with lognormal noise;
  reputation keeps the half-octave histogram, rewards pays on its lower median
  (:func:`median_service`, the contract's rule to the bucket);
* rewards follow contracts/rewards.vy: a service pool by median service and a demand pool
  ``min(E x demand_share, fees x fee_rebate)`` split by region payments over region service
  (:func:`epoch_rewards`);
* supply follows pay: each epoch a share ``migration`` of every other operator's supply reconsiders
  its region and moves where a unit of capacity earned more (:func:`migration_matrix`). Supply is an
  expected quantity: ``mass[i, r]`` is how much of node ``i``'s kind is listed in region ``r`` (one
  whole node in one region at the start), and what moves is the expected share, not a node chosen
  by a draw. A network of thousands moves like this; in the 40 nodes of the model a single draw
  moved an eighth of a region, and a cheat that changed one such draw changed the whole run after it
  (docs/ECONOMICS.md, "Supply as an expected quantity").

Node 0 (region ``tracked_region``) is the one whose strategy changes; :func:`run` returns its profit
and the network's figures, and :func:`compare` runs every strategy against the honest run with the
same seed, so ``profit_vs_honest`` isolates the strategy.

Common random numbers. Every random quantity is a function of the seed, its purpose and the ids it
belongs to (:func:`agents.economy.draws.uniforms`: a counter-based hash, as reputation draws with keccak(seed, challenger,
node)), never the next number of a shared generator. A cheat that adds nodes or challenger
identities therefore changes no other draw: the demand walk, gas prices, capacities and, for every (challenger, node) pair that exists in both runs, its assignment uniform, uptime and noise
are those of the honest run. Adding identities raises C and so lowers the threshold the pair's
uniform is compared with (``u < reports_per_node / C``): the cheating run's drawn pairs are a subset
of the honest run's.
"""

from __future__ import annotations

import enum
import math
import statistics
from dataclasses import dataclass, field, replace

import numpy as np

from agents.challenger.plan import colocation_key
from agents.economy.draws import normals, uniforms
from agents.economy.rules import (
    MAX_THROUGHPUT_KBPS,
    bucket_floor_kbps,
    bucket_floors,
    draw_probability,
    epoch_rewards,
    mean_ci95,
    median_service,
)
from agents.node import pricing

__all__ = [
    "Gas",
    "Params",
    "RunResult",
    "Strategy",
    "bucket_floor_kbps",
    "bucket_floors",
    "compare",
    "draw_probability",
    "epoch_rewards",
    "mean_ci95",
    "median_service",
    "migration_matrix",
    "next_price",
    "next_prices",
    "normals",
    "run",
    "uniforms",
]

#: Kilobits per second in one Mbit/s.
KBPS_PER_MBPS = 1_000
#: GiB one Mbit/s carries in a day: 1e6 / 8 bytes/s x 86,400 s / 2**30.
GIB_PER_MBPS_DAY = 1e6 / 8 * 86_400 / 2**30
#: Ids of the cheat's challenger identities (honest challengers are 0 .. challengers - 1) and of a Sybil
#: split's extra registrations (its first part keeps node 0's id): apart from every honest id.
CHEAT_CHALLENGER_ID = 1_000_000
SYBIL_NODE_ID = 1_000_000


class Strategy(enum.Enum):
    """What node 0's operator does (docs/ECONOMICS.md explains why each one loses)."""

    HONEST = "honest"
    WASH = "wash_traffic"                    # pays its own node to inflate its region's demand
    SYBIL = "sybil_split"                    # one uplink registered as several nodes
    THROTTLE = "throttling"                  # serves everyone at a fraction of its capacity
    OVERCLAIM = "overclaiming_receipts"      # tries to settle more bytes than clients counted
    FAVOR_CHALLENGERS = "serve_challengers_only"  # guesses which flows are probes, throttles the rest
    LYING_MINORITY = "lying_challenger_minority"  # runs challengers that fail its competitors
    SELF_DEALING = "self_dealing_challengers"     # runs challengers that praise its own node


@dataclass(frozen=True)
class Gas:
    """Gas of the transactions a node pays for (measured on anvil by scripts/sim_economy.py)."""

    open_channel: int = 100_330
    cooperative_close: int = 95_000
    settle: int = 61_882
    submit: int = 90_000
    claim: int = 60_000
    update_price: int = 35_000
    # A challenger's first report of an epoch (it counts the challenger in the epoch's C) and each
    # later one, both on a node others have reported on (its histogram word exists). Being the node's
    # first reporter costs more (a fresh word); a cheat's identity rarely is, and the model leaves
    # that out, in the cheat's favour.
    report: int = 110_000
    report_more: int = 86_000
    register: int = 197_162


@dataclass(frozen=True)
class Params:
    """Everything a run depends on. Money in US dollars, traffic in GiB, time in epochs (days)."""

    regions: tuple[str, ...] = ("DE", "US", "BR", "TR", "JP")
    nodes_per_region: int = 8
    epochs: int = 90
    tracked_region: str = "DE"
    # Demand: GiB per region and epoch, a lognormal random walk, and a shock.
    demand_gib: float = 1_500.0
    demand_walk: float = 0.05
    shock_region: str = "TR"
    shock_epoch: int = 30
    shock_factor: float = 3.0
    # Supply: uplink in Mbit/s (lognormal), the share of a day's capacity a home node sells.
    capacity_mbps: float = 100.0
    capacity_sigma: float = 0.4
    duty: float = 0.25
    uptime: float = 0.98
    migration: float = 0.03          # share of a node's supply that reconsiders its region each epoch
    migration_gain: float = 1.25     # it moves if another region paid this much more per capacity
    # How alike operators are in that threshold (migration_matrix: a logit on log pay): the middle
    # half need between 1.25 x 3**(-1/20) = 1.18 and 1.25 x 3**(1/20) = 1.32; infinite: all alike.
    migration_sharpness: float = 20.0
    # Prices: price = "auto" (floor, ceiling, step towards a target utilisation).
    price_start: float = 0.05
    price_floor: float = 0.01
    price_ceiling: float = 0.20
    price_step: float = pricing.DEFAULT_STEP
    target_utilisation: float = pricing.DEFAULT_TARGET_UTILISATION
    # Costs of running a node.
    bandwidth_cost: float = 0.002    # $ per GiB carried (ISP / electricity margin)
    fixed_cost: float = 0.05         # $ per node and epoch (a small always-on box)
    capital_rate: float = 0.10       # yearly opportunity cost of staked tokens
    # Token and rewards (contracts/rewards.vy, agents/chain/deploy.py defaults).
    token_usd: float = 0.10
    emission_tokens: float = 1_000.0
    demand_share: float = 0.5
    fee_rebate: float = 0.8
    fee: float = 0.01
    min_reports: int = 3
    node_stake_tokens: float = 100.0
    # A challenger's stake: what a self-dealing operator must lock per extra identity; deploy_all's
    # default (agents/chain/deploy.py: 500 tokens; docs/ECONOMICS.md: 230 covers the gain of
    # self-dealing, which broke even at the earlier 10).
    challenger_stake_tokens: float = 500.0
    # Challengers: honest ones, and reputation's assignment (agents/chain/deploy.py's
    # reports_per_node): each challenger is drawn for each node with probability
    # min(1, reports_per_node / challenger identities), so a node expects reports_per_node reports.
    # With 5 challengers and 12 reports per node everyone is drawn (the draw changes nothing);
    # 30 is bench_trust's network (docs/ECONOMICS.md, "Challenger assignment").
    challengers: int = 30
    reports_per_node: int = 12
    noise: float = 0.15
    # Gas: a rollup's gas price (gwei, lognormal per epoch) and ETH's price.
    gas_gwei: float = 0.05
    gas_sigma: float = 0.5
    eth_usd: float = 3_000.0
    channel_usd: float = 2.0          # what one channel pays on average: the "settle size"
    gas: Gas = field(default_factory=Gas)
    # Strategy knobs.
    wash_multiple: float = 5.0        # wash volume per epoch, as a multiple of the node's own revenue
    sybil_nodes: int = 4
    # Challengers test co-located nodes (one IPv4 /24 or IPv6 /64: agents.challenger.plan's
    # colocated_groups) at the same moment, so nodes sharing an uplink share it in the measurement.
    colocated_probes: bool = True
    throttle: float = 0.5
    overclaim: float = 0.2
    overclaim_churn: float = 0.3      # share of its clients that notice wrong receipts and leave
    favor_accuracy: float = 0.5       # chance of telling a probe from a customer (0.5: indistinguishable)
    favor_customer_share: float = 0.3
    cheat_challengers: int = 2

    @property
    def gas_usd(self) -> float:
        """Median dollars per unit of gas."""
        return self.gas_gwei * 1e-9 * self.eth_usd

    def stake_cost(self, tokens: float) -> float:
        """Dollars per epoch that holding ``tokens`` of stake costs."""
        return tokens * self.token_usd * self.capital_rate / 365


def next_prices(prices: np.ndarray, utilisation: np.ndarray, p: Params) -> np.ndarray:
    """:func:`next_price` on arrays (float prices: the same figures element by element)."""
    moved = prices * (1 + p.price_step * (utilisation - p.target_utilisation))
    return np.minimum(p.price_ceiling, np.maximum(p.price_floor, moved))


def migration_matrix(per_capacity: np.ndarray, gain: float, sharpness: float) -> np.ndarray:
    """Where supply that reconsiders its region goes: ``out[r, s]`` is the share of region ``r``'s
    reconsidering supply that lists in ``s`` (``out[r, r]``: stays), rows adding up to one.

    Operators differ in what a move is worth to them, so a choice among regions is a logit on
    ``log(pay per unit of capacity)``, a move costing ``log(gain)``: between staying in ``r`` and
    going to ``s`` alone, the share that goes is ``1 / (1 + (gain x pay_r / pay_s) ** sharpness)``,
    half at a gain of exactly ``gain``; the middle half of operators need between ``gain x 3 **
    (-1 / sharpness)`` and ``gain x 3 ** (1 / sharpness)`` (1.18 .. 1.32 at 1.25 and 20). As
    ``sharpness`` grows this becomes the all-or-nothing rule "move to the best region if it paid
    ``gain`` times more"; a finite one makes the flow a smooth function of pay, so a small change of
    pay moves a small amount of supply. A region without supply (pay ``inf``) takes everyone who
    reconsiders.
    """
    pay = np.asarray(per_capacity, dtype=np.float64)
    regions = len(pay)
    if np.isinf(pay).any():
        utility = np.where(np.isinf(pay), 0.0, -np.inf)[None, :].repeat(regions, axis=0)
    else:
        log_pay = np.log(np.maximum(pay, 1e-300))
        utility = sharpness * (log_pay[None, :] - math.log(gain) * (1 - np.eye(regions)))
    utility = utility - utility.max(axis=1, keepdims=True)
    weights = np.exp(utility)
    return weights / weights.sum(axis=1, keepdims=True)


def next_price(price: float, utilisation: float, p: Params) -> float:
    """``price = "auto"``: one step towards the target utilisation, within the floor and ceiling (the
    node's own rule, :func:`agents.node.pricing.next_price`, with this run's parameters)."""
    return pricing.next_price(price, utilisation, floor=p.price_floor, ceiling=p.price_ceiling,
                              step=p.price_step, target=p.target_utilisation)


# -- the model ------------------------------------------------------------------------------------------

@dataclass
class _Node:
    region: str
    mbps: float              # uplink, Mbit/s (a Sybil part: its share)
    price: float
    owner: int               # operator id; node 0's operator is 0
    key: int = 0             # its id in the random streams (its registration: the same in every run)
    endpoint: str = ""       # public IP address (its PeerRecord's)
    uplink: int = 0          # the line it rides: nodes with one uplink share its capacity when probed together
    customer_quality: float = 1.0    # share of its capacity customers get
    probe_quality: float = 1.0       # share challengers measure
    pinned: bool = False

    @property
    def capacity_gib(self) -> float:
        return self.mbps * GIB_PER_MBPS_DAY


@dataclass(frozen=True)
class RunResult:
    """One run's figures.

    Attributes:
        profit: node 0's operator's profit over the run ($), after every cost.
        income: its revenue plus rewards ($).
        fees_and_gas: its protocol fees and gas ($).
        supply_response_epochs: epochs after the shock until the shocked region's demand per
            unit of capacity came within 25 % of the other regions' median (``epochs - shock``
            if never).
        honest_fee_share: fees and gas over income of all honest nodes together.
        trace: with ``run(..., trace=True)``, what the run drew (to check the paired design):
            ``reports`` maps (epoch, challenger id, node key) to the bucket floor an honest
            challenger reported, ``demand`` and ``gas_usd`` the per-epoch demand and gas price.
    """

    profit: float
    income: float
    fees_and_gas: float
    supply_response_epochs: int
    honest_fee_share: float
    trace: dict | None = field(default=None, compare=False, repr=False)


def _make_nodes(p: Params, seed: int) -> list[_Node]:
    count = len(p.regions) * p.nodes_per_region
    sizes = p.capacity_mbps * np.exp(p.capacity_sigma * normals(seed, "capacity", np.arange(count)))
    nodes = []
    owner = 1
    for region in p.regions:
        for _ in range(p.nodes_per_region):
            nodes.append(_Node(region=region, mbps=float(sizes[owner - 1]), price=p.price_start, owner=owner,
                               key=owner - 1, endpoint=f"10.{owner // 256}.{owner % 256}.1", uplink=owner))
            owner += 1
    nodes[0].owner, nodes[0].pinned = 0, True
    nodes[0].region = p.tracked_region
    nodes[0].mbps = p.capacity_mbps  # the tracked operator has a median uplink in every run
    return nodes


def _apply_strategy(nodes: list[_Node], strategy: Strategy, p: Params) -> list[_Node]:
    tracked = nodes[0]
    if strategy is Strategy.SYBIL:
        # One line (one uplink, one /24), k registrations: each sells 1/k of it to customers.
        base = tracked.endpoint.rsplit(".", 1)[0]
        parts = [replace(tracked, mbps=tracked.mbps / p.sybil_nodes, endpoint=f"{base}.{1 + j}",
                         key=tracked.key if j == 0 else SYBIL_NODE_ID + j)
                 for j in range(p.sybil_nodes)]
        return parts + nodes[1:]
    if strategy is Strategy.THROTTLE:
        tracked.customer_quality = tracked.probe_quality = p.throttle
    elif strategy is Strategy.FAVOR_CHALLENGERS:
        # Flows it takes for probes get full service, the rest `favor_customer_share`; with
        # indistinguishable probes (accuracy 0.5) both see the same average.
        a, low = p.favor_accuracy, p.favor_customer_share
        tracked.customer_quality = a * low + (1 - a)
        tracked.probe_quality = a + (1 - a) * low
    return nodes


def _probed_together(nodes: list[_Node], colocated: bool) -> list[int]:
    """For each node, how many nodes of its own line a challenger tests at the same moment: those of
    its co-location block (:func:`agents.challenger.plan.colocation_key`) when ``colocated``, else
    only itself."""
    if not colocated:
        return [1] * len(nodes)
    count: dict[tuple, int] = {}
    keys = [(colocation_key(n.endpoint) or f"alone {i}", n.uplink) for i, n in enumerate(nodes)]
    for key in keys:
        count[key] = count.get(key, 0) + 1
    return [count[key] for key in keys]


def run(p: Params, strategy: Strategy, seed: int, trace: bool = False) -> RunResult:
    """One run of ``p.epochs`` epochs with node 0's operator playing ``strategy``.

    Common random numbers: every draw is :func:`uniforms` of (seed, purpose, ids), so the honest run
    and a cheating run of one seed share the demand walk, gas prices, capacities and, per
    (challenger, node) pair present in both, its assignment uniform, uptime and noise. Supply moves as
    an expected quantity (:func:`migration_matrix`), so no draw decides a migration and a small
    change of incomes moves a small amount of supply: (cheat - honest) with the same seed measures
    the strategy and what it sets off, not which coin flipped differently.
    """
    nodes = _apply_strategy(_make_nodes(p, seed), strategy, p)
    demand = {r: p.demand_gib for r in p.regions}
    ours = [i for i, n in enumerate(nodes) if n.owner == 0]
    epochs = np.arange(p.epochs)
    gas_draws = np.exp(p.gas_sigma * normals(seed, "gas", epochs) - p.gas_sigma**2 / 2)
    demand_draws = np.exp(p.demand_walk * normals(seed, "demand", epochs[:, None],
                                                  np.arange(len(p.regions))[None, :]))
    keys = np.array([n.key for n in nodes], dtype=np.int64)

    # Challengers' reports, drawn for the whole run at once (a probe sees the node's line, fixed for
    # the run; nodes probed at the same moment on one line share it). floors[e, c, i]: what honest
    # challenger c reports on node i in epoch e, -1 where it is not drawn.
    line_mbps: dict[int, float] = {}
    for n in nodes:
        line_mbps[n.uplink] = line_mbps.get(n.uplink, 0.0) + n.mbps
    probed_together = _probed_together(nodes, p.colocated_probes)
    probe_mbps = np.array([line_mbps[n.uplink] * n.probe_quality / probed_together[i]
                           for i, n in enumerate(nodes)])
    liars = p.cheat_challengers if strategy in (Strategy.LYING_MINORITY, Strategy.SELF_DEALING) else 0
    # The cheat's identities report too, so they count in C and lower every pair's threshold a little;
    # each pair keeps its own uniform, so the cheating run's drawn pairs are a subset of the honest one's.
    drawn_p = draw_probability(p.reports_per_node, p.challengers + liars)
    pair = (epochs[:, None, None], np.arange(p.challengers)[None, :, None], keys[None, None, :])
    drawn = uniforms(seed, "assign", *pair) < drawn_p
    up = uniforms(seed, "uptime", *pair) < p.uptime
    kbps = probe_mbps[None, None, :] * KBPS_PER_MBPS * np.exp(p.noise * normals(seed, "noise", *pair))
    floors = np.where(drawn, bucket_floors(kbps, up), -1)
    # The liars' identities: pairs of their own (ids apart from the honest challengers').
    liar_ids = CHEAT_CHALLENGER_ID + np.arange(liars)
    liar_drawn = uniforms(seed, "assign", epochs[:, None, None], liar_ids[None, :, None],
                          keys[None, None, :]) < drawn_p
    top = bucket_floor_kbps(MAX_THROUGHPUT_KBPS)
    missing = np.int64(2**62)
    columns = np.arange(len(nodes))
    is_ours = np.array([n.owner == 0 for n in nodes])
    # What a liar reports when drawn: the top bucket on its own nodes; a failure on competitors
    # (lying minority: those of its region, so on the share of a node's supply that is there).
    lie_own = np.where(is_ours, top, -1).astype(np.int64)
    lie_all = np.where(is_ours, top, 0 if strategy is Strategy.LYING_MINORITY else -1).astype(np.int64)
    traced = {"reports": {}, "demand": [], "gas_usd": [], "mass": []} if trace else None
    if trace:
        for e, c, i in zip(*np.nonzero(drawn), strict=True):
            traced["reports"][(int(e), int(c), int(keys[i]))] = int(floors[e, c, i])

    # Supply as (node, region) arrays: mass[i, r] is how much of node i's supply is listed in region r
    # (node i stands for operators of its kind: its expected presence there), price[i, r] what it asks
    # there. Node 0's operator's nodes are pinned, one whole node in one region, as every node starts.
    regions = list(p.regions)
    home = regions.index(p.tracked_region)
    mass = np.zeros((len(nodes), len(regions)))
    mass[columns, [regions.index(n.region) for n in nodes]] = 1.0
    price = np.array([[n.price] * len(regions) for n in nodes])
    capacity = np.array([n.capacity_gib for n in nodes])
    quality = np.array([n.customer_quality for n in nodes])
    pull = capacity * quality  # clients' weight at a given price
    if strategy is Strategy.OVERCLAIM:
        pull = np.where(is_ours, pull * (1 - p.overclaim_churn), pull)
    sellable_per_mass = capacity * p.duty * quality
    movers = np.array([n.owner != 0 and not n.pinned for n in nodes])
    # Stake and the box are per node (a node's masses add up to one); Sybil parts share one box.
    per_node_cost = p.stake_cost(p.node_stake_tokens) + np.array(
        [p.fixed_cost if (n.owner != 0 or i == ours[0]) else 0.0 for i, n in enumerate(nodes)])

    profit = income = fees_gas = 0.0
    honest_income = honest_fees_gas = 0.0
    response = None
    emission = p.emission_tokens * p.token_usd
    for epoch in range(p.epochs):
        gas_usd = p.gas_usd * float(gas_draws[epoch])
        for k, r in enumerate(p.regions):
            demand[r] *= float(demand_draws[epoch, k])
        if epoch == p.shock_epoch:
            demand[p.shock_region] *= p.shock_factor
        wanted = np.array([demand[r] for r in regions])
        if trace:
            traced["demand"].append(tuple(demand[r] for r in p.regions))
            traced["gas_usd"].append(gas_usd)
            traced["mass"].append(mass.copy())

        # Clients split each region's demand by service and price (weight capacity x service / price);
        # nobody is given more than it can carry.
        weights = mass * pull[:, None] / price
        total = weights.sum(axis=0)
        sellable = mass * sellable_per_mass[:, None]
        served = np.minimum(wanted * np.divide(weights, total, out=np.zeros_like(weights), where=total > 0),
                            sellable)
        revenue = served * price
        paid = dict(zip(regions, revenue.sum(axis=0).tolist(), strict=True))

        # Node 0's extra moves this epoch.
        extra_cost = 0.0
        own_revenue = float(revenue[is_ours].sum())
        if strategy is Strategy.WASH:
            wash = p.wash_multiple * max(own_revenue, 1.0)
            paid[p.tracked_region] += wash
            extra_cost += wash * p.fee + (p.gas.open_channel + p.gas.cooperative_close) * gas_usd
        elif strategy is Strategy.OVERCLAIM:
            # Each inflated settlement is refused on chain (the client signed less): gas for nothing.
            extra_cost += own_revenue / p.channel_usd * p.gas.settle * gas_usd

        # Reports -> median service per node (median_service's rule on every column at once). A liar
        # reports only where the draw sends it.
        def medians(lie: np.ndarray) -> np.ndarray:
            reports = floors[epoch]
            if liars:
                reports = np.concatenate([reports, np.where(liar_drawn[epoch] & (lie >= 0)[None, :],
                                                            lie[None, :], -1)])
            counts = (reports >= 0).sum(axis=0)
            ordered = np.sort(np.where(reports >= 0, reports, missing), axis=0)
            lower = ordered[np.maximum((counts + 1) // 2 - 1, 0), columns]
            return np.where(counts >= p.min_reports, lower, 0)

        service = np.repeat(medians(lie_own)[:, None], len(regions), axis=1)
        if strategy is Strategy.LYING_MINORITY:
            service[:, home] = medians(lie_all)
        if liars:
            # Reports sent: one per drawn own node, and (lying minority) one per drawn competitor's
            # operator listed in the region: node i's share there.
            targets = is_ours + (0.0 if strategy is not Strategy.LYING_MINORITY else mass[:, home] * ~is_ours)
            sent = (liar_drawn[epoch] * targets[None, :]).sum(axis=1)  # per identity
            report_gas = np.minimum(sent, 1.0) * p.gas.report + np.maximum(sent - 1.0, 0.0) * p.gas.report_more
            extra_cost += float(report_gas.sum()) * gas_usd + liars * p.stake_cost(p.challenger_stake_tokens)

        # rewards.vy: every listed node with a non-zero median enters; a share m of a node in a region
        # enters as m nodes of its median (the split is linear in service, so it gets m node shares).
        where = np.nonzero((mass > 0) & (service > 0))
        shares = epoch_rewards(emission, p.fee, p.demand_share, p.fee_rebate,
                               (service[where] * mass[where]).tolist(), [regions[k] for k in where[1]], paid)
        reward = np.zeros_like(mass)
        reward[where] = shares

        # Each node's books for the epoch; auto prices for the next one.
        gas = revenue / p.channel_usd * p.gas.cooperative_close * gas_usd
        gas += np.where(reward > 0, (p.gas.submit + p.gas.claim) * gas_usd * mass, 0.0)
        utilisation = np.divide(served, sellable, out=np.zeros_like(served), where=sellable > 0)
        moved = next_prices(price, utilisation, p)
        update = np.abs(moved - price) > pricing.MIN_CHANGE * price  # pricing.worth_updating
        gas += np.where(update, p.gas.update_price * gas_usd * mass, 0.0)
        price = np.where(update, moved, price)
        fee = revenue * p.fee
        cost = served * p.bandwidth_cost + per_node_cost[:, None] * mass
        earned = revenue + reward
        profit += float((earned - fee - gas - cost)[is_ours].sum()) - extra_cost
        income += float(earned[is_ours].sum())
        fees_gas += float((fee + gas)[is_ours].sum()) + extra_cost
        honest_income += float(earned[~is_ours].sum())
        honest_fees_gas += float((fee + gas)[~is_ours].sum())

        # Supply follows pay: a share `migration` of every other operator's supply reconsiders its
        # region each epoch and goes where a unit of capacity earned most (read from the other
        # operators' books, so node 0's own strategy moves no one through its own income).
        if p.migration > 0:
            capacity_r = (mass[~is_ours] * capacity[~is_ours, None]).sum(axis=0)
            earned_r = earned[~is_ours].sum(axis=0)
            per_capacity = np.divide(earned_r, capacity_r, out=np.full(len(regions), np.inf), where=capacity_r > 0)
            choice = migration_matrix(per_capacity, p.migration_gain, p.migration_sharpness)
            listed = mass.sum(axis=0)
            region_price = np.divide((mass * price).sum(axis=0), listed, out=np.full(len(regions), p.price_start),
                                     where=listed > 0)
            m = mass[movers]
            going = m * p.migration
            staying = np.diag(choice)
            keep = m - going + going * staying      # keeps its price
            arriving = going @ choice - going * staying  # lists at the region's average price
            after = keep + arriving
            price[movers] = np.divide(keep * price[movers] + arriving * region_price, after,
                                      out=np.broadcast_to(region_price, after.shape).copy(), where=after > 0)
            mass[movers] = after

        if epoch > p.shock_epoch and response is None:
            supply = (mass * capacity[:, None]).sum(axis=0) * p.duty
            ratio = dict(zip(regions, (wanted / np.maximum(supply, 1e-9)).tolist(), strict=True))
            others = statistics.median([ratio[r] for r in p.regions if r != p.shock_region])
            if ratio[p.shock_region] <= 1.25 * others:
                response = epoch - p.shock_epoch

    return RunResult(
        profit=profit, income=income, fees_and_gas=fees_gas,
        supply_response_epochs=response if response is not None else p.epochs - p.shock_epoch,
        honest_fee_share=honest_fees_gas / honest_income if honest_income else 0.0,
        trace=traced,
    )


def compare(p: Params, seeds: list[int], strategies: list[Strategy] | None = None) -> dict:
    """Every strategy against the honest run of the same seed.

    Returns:
        ``{"strategies": {name: {"profit_vs_honest", "ci95", "profit_usd"}}, "honest_profit_usd",
        "honest_fee_share", "honest_fee_share_ci95", "supply_response_epochs",
        "supply_response_epochs_ci95"}``; ``profit_vs_honest`` is (cheat - honest) / |honest| of
        node 0's operator's profit over the run, averaged over seeds.
    """
    if strategies is None:
        strategies = [s for s in Strategy if s is not Strategy.HONEST]
    honest = {seed: run(p, Strategy.HONEST, seed) for seed in seeds}
    out: dict = {"strategies": {}}
    for strategy in strategies:
        rel, usd, base_usd = [], [], []
        for seed in seeds:
            cheat = run(p, strategy, seed)
            base = honest[seed].profit
            rel.append((cheat.profit - base) / abs(base))
            usd.append(cheat.profit - base)
            base_usd.append(base)
        mean, half = mean_ci95(rel)
        out["strategies"][strategy.value] = {
            "profit_vs_honest": round(mean, 4),
            "ci95": [round(mean - half, 4), round(mean + half, 4)],
            "profit_delta_usd": round(statistics.fmean(usd), 2),
            # Seeds where the cheat reshuffles who migrates swing by +-$1,000: the median seed and the
            # ratio of summed profits say whether a mean comes from a few of them.
            "median_profit_delta_usd": round(statistics.median(usd), 2),
            "total_profit_ratio": round(sum(usd) / abs(sum(base_usd)), 4),
        }
    profit, _ = mean_ci95([r.profit for r in honest.values()])
    share, share_half = mean_ci95([r.honest_fee_share for r in honest.values()])
    response, response_half = mean_ci95([float(r.supply_response_epochs) for r in honest.values()])
    out.update(
        honest_profit_usd=round(profit, 2),
        honest_fee_share=round(share, 5),
        honest_fee_share_ci95=[round(share - share_half, 5), round(share + share_half, 5)],
        supply_response_epochs=round(response, 1),
        supply_response_epochs_ci95=[round(response - response_half, 1), round(response + response_half, 1)],
    )
    return out
