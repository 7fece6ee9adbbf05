"""Which node to buy from: the chain's list, filtered, then ranked by reputation, latency and price.

The chain is the authority on identity and money (DESIGN.md, "Sessions" step 1): the candidates come
from node_registry (every current registration), with reputation's score. Revoked, unbonding and
inactive nodes, nodes outside the asked regions and nodes above the price cap are dropped; the rest
are ranked. Latency comes from the overlay (the runtime measures it and fills it in).

Regions are a preference list (``--region NL,DE``): every node of the first region ranks above every
node of the second, and so on, so the client fails over inside the region it asked first while one
is left there, then to the next region, never to a region it did not name.

Ranking, highest first: ``score = reputation x latency_factor x price_factor`` where
``reputation`` is the pass rate in [0, 1] (a node nobody has reported on yet gets
``UNREPORTED_PRIOR``, so new nodes get traffic and can earn a record), ``latency_factor =
1 / (1 + latency / LATENCY_SCALE_S)`` (unmeasured nodes rank as if slow), and ``price_factor =
cheapest / price`` among the candidates. Multiplying keeps each term's effect proportional; no term
can be bought out by another completely (a free but unreliable node still ranks below a reliable
one at a fair price).
"""

from __future__ import annotations

import dataclasses

from agents.chain.bindings import NodeInfo
from agents.node.config import check_region

__all__ = ["Candidate", "check_regions", "eligible", "list_candidates", "rank"]

#: Pass rate assumed for a node with no challenger report yet (basis points / 10,000).
UNREPORTED_PRIOR = 0.5
#: Latency at which a node's latency factor halves (seconds).
LATENCY_SCALE_S = 0.1
#: Latency assumed for a node whose latency could not be measured (seconds).
UNMEASURED_LATENCY_S = 1.0


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A node the client might buy from.

    Attributes:
        node: the registry's view.
        score_bps: reputation's pass-rate average (basis points).
        reports: how many challenger reports it has.
        unbonding: whether it asked to unbond (it takes no new channels).
        latency_s: measured round trip, if any.
    """

    node: NodeInfo
    score_bps: int = 0
    reports: int = 0
    unbonding: bool = False
    latency_s: float | None = None

    @property
    def reputation(self) -> float:
        """Pass rate in [0, 1], with the prior for unreported nodes."""
        return self.score_bps / 10_000 if self.reports else UNREPORTED_PRIOR


def check_regions(text: str) -> tuple[str, ...]:
    """``"nl, DE"`` -> ``("NL", "DE")``: the regions a user accepts, most wanted first (each an ISO
    3166-1 alpha-2 code; repeats dropped); raises ValueError naming a malformed one."""
    return tuple(dict.fromkeys(check_region(part) for part in text.split(",")))


def eligible(candidates: list[Candidate], *, regions: tuple[str, ...] = (), max_price: int | None = None,
             exclude: set[bytes] = frozenset()) -> list[Candidate]:
    """Drop revoked, unbonding, inactive, out-of-region (``regions``: upper case, empty: any),
    over-priced and excluded nodes."""
    kept = []
    for c in candidates:
        if c.node.revoked or c.unbonding or not c.node.active or c.node.node_id in exclude:
            continue
        if regions and c.node.region.upper() not in regions:
            continue
        if max_price is not None and c.node.price_per_gib > max_price:
            continue
        kept.append(c)
    return kept


def rank(candidates: list[Candidate], regions: tuple[str, ...] = ()) -> list[Candidate]:
    """Best first (see the module docstring): by the region's place in ``regions`` (when given),
    then by value; ties broken by node id for determinism."""
    if not candidates:
        return []
    cheapest = min(c.node.price_per_gib for c in candidates)

    def value(c: Candidate) -> float:
        latency = UNMEASURED_LATENCY_S if c.latency_s is None else c.latency_s
        price_factor = 1.0 if c.node.price_per_gib == 0 else max(cheapest, 1) / c.node.price_per_gib
        return c.reputation * (1 / (1 + latency / LATENCY_SCALE_S)) * min(price_factor, 1.0)

    def preference(c: Candidate) -> int:
        region = c.node.region.upper()
        return regions.index(region) if region in regions else len(regions)

    return sorted(candidates, key=lambda c: (preference(c), -value(c), c.node.node_id))


def list_candidates(contracts) -> list[Candidate]:
    """Every node's current registration, read from the chain (registry + reputation).

    Args:
        contracts: an :class:`agents.chain.bindings.WarrenContracts`.
    """
    registry, reputation = contracts.registry, contracts.reputation
    found = []
    for index in range(1, int(registry.node_count()) + 1):
        node_id = bytes(registry.node_id_at(index))
        if node_id == bytes(32) or int(registry.node_index(node_id)) != index:
            continue  # a registration that was withdrawn and replaced
        info = contracts.node(node_id)
        found.append(Candidate(node=info, score_bps=int(reputation.score(node_id)),
                               reports=int(reputation.report_count(node_id)),
                               unbonding=int(registry.node_unbond_at(node_id)) != 0))
    return found
