"""Which nodes a challenger tests in an epoch, and when (pure: a secret, an epoch, a node list in).

A node must not be able to tell a challenge from a customer, nor know when one comes, or it would
serve challenges well and customers badly. So:

* the choice is random but weighted: nodes carrying traffic matter most to users, and new nodes have
  no track record yet (weights below); every other node still has a fair chance each epoch;
* the time is uniform inside the epoch, away from its edges (a report must be mined in the epoch it
  was written for: reputation.vy refuses any other);
* both come from an HMAC of the challenger's own secret and the epoch number: nobody else can
  predict them, and the challenger, restarted, finds the same plan again (so it knows which
  challenges it missed while it was offline and can still run them in time).

Sampling without replacement by weight is Efraimidis and Spirakis' A-Res (Information Processing
Letters 97(5), 2006): each node draws ``u ** (1 / w)`` and the largest keys win.

Which nodes a challenger may report on is not its choice: reputation.vy accepts a report only from a
challenger drawn for the node in the epoch (:mod:`agents.challenger.assignment`), so the plan is
drawn from :func:`assigned_nodes`, the candidates the chain's draw gives this challenger.

Co-located nodes are challenged together (:func:`colocated_groups`). One uplink registered as k
nodes (a Sybil split) shows its whole capacity to a challenger that tests one part alone, so k
parts tested one by one would be paid k uplinks. Tested at the same moment, they share the uplink
and each shows about 1/k of it: their rewards add up to one node's (docs/ECONOMICS.md, Sybil
splitting). Nodes count as co-located when their endpoints share an IPv4 /24 or an IPv6 /64 (one
home line, one provider's customer block: :func:`colocation_key`); a split spread over different
blocks needs different lines, which is no longer one uplink.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import random

__all__ = ["NodeInfo", "PlanPolicy", "PlannedChallenge", "assigned_nodes", "colocated_groups", "colocation_key",
           "plan_epoch", "probe_times", "weight"]

#: Prefix lengths that make endpoints co-located: an IPv4 /24 (a provider's smallest routed block,
#: RFC 7454's longest accepted IPv4 prefix) and an IPv6 /64 (one subnet, RFC 4291's interface-id split).
COLOCATION_PREFIX_V4 = 24
COLOCATION_PREFIX_V6 = 64


@dataclasses.dataclass(frozen=True)
class NodeInfo:
    """What the plan knows of a node.

    Attributes:
        node_id: the node's id (32 bytes).
        registered_epoch: the epoch it registered in (from NodeRegistered's block time).
        traffic: recent traffic it carried, in any unit shared by all nodes (channels opened to it,
            token wei settled): only ratios between nodes matter.
        endpoint: its public IP address (from its PeerRecord), "" when unknown.
    """

    node_id: bytes
    registered_epoch: int = 0
    traffic: int = 0
    endpoint: str = ""


@dataclasses.dataclass(frozen=True)
class PlanPolicy:
    """How a challenger spreads its work (times in seconds).

    Attributes:
        per_epoch: challenges per epoch (each costs a session and a payload's bytes).
        new_epochs: a node registered fewer than this many epochs ago counts as new...
        new_weight: ...and weighs this much more than an idle old node (weight 1).
        traffic_weight: extra weight of the busiest node; others get their traffic's share of it.
        margin_s: no challenge this close to the epoch's start or end (the report must be mined
            in the same epoch; a challenge takes a few seconds and a transaction one more block).
        probes_per_epoch: uptime probes per node per epoch, between challenges.
    """

    per_epoch: int = 8
    new_epochs: int = 3
    new_weight: float = 3.0
    traffic_weight: float = 3.0
    margin_s: float = 60.0
    probes_per_epoch: int = 4


@dataclasses.dataclass(frozen=True, order=True)
class PlannedChallenge:
    """One challenge: when (unix seconds), which node, in which epoch."""

    at: float
    node_id: bytes
    epoch: int


def _rng(secret: bytes, epoch: int, purpose: bytes) -> random.Random:
    """A generator only the holder of ``secret`` can predict, fixed per epoch and purpose."""
    seed = hmac.new(secret, b"warren challenger " + purpose + b" %d" % epoch, hashlib.sha256).digest()
    return random.Random(seed)


def weight(node: NodeInfo, epoch: int, busiest: int, policy: PlanPolicy) -> float:
    """A node's chance weight: 1, plus its share of the busiest node's traffic times
    ``traffic_weight``, plus ``new_weight`` while it is new."""
    value = 1.0
    if busiest > 0:
        value += policy.traffic_weight * max(0, node.traffic) / busiest
    if epoch - node.registered_epoch < policy.new_epochs:
        value += policy.new_weight
    return value


def _window(epoch: int, epoch_length: float, policy: PlanPolicy) -> tuple[float, float]:
    start, end = epoch * epoch_length + policy.margin_s, (epoch + 1) * epoch_length - policy.margin_s
    if end <= start:
        raise ValueError(f"an epoch of {epoch_length} s leaves no room inside margins of {policy.margin_s} s")
    return start, end


def plan_epoch(nodes: list[NodeInfo], epoch: int, epoch_length: float, secret: bytes,
               policy: PlanPolicy = PlanPolicy()) -> list[PlannedChallenge]:
    """The epoch's challenges, in time order.

    Args:
        nodes: the nodes that may be challenged (registered, not revoked, not the challenger's own).
        epoch: the epoch (block time // epoch_length).
        epoch_length: seconds.
        secret: the challenger's plan secret (32 random bytes kept in its data folder, 0600).
        policy: how many and how weighted.
    """
    if not nodes:
        return []
    rng = _rng(secret, epoch, b"plan")
    busiest = max(max(0, n.traffic) for n in nodes)
    ordered = sorted(nodes, key=lambda n: n.node_id)  # the draw must not depend on the input order
    keys = [(rng.random() ** (1.0 / weight(n, epoch, busiest, policy)), n) for n in ordered]
    chosen = [n for _, n in sorted(keys, key=lambda kn: kn[0], reverse=True)[:policy.per_epoch]]
    start, end = _window(epoch, epoch_length, policy)
    return sorted(PlannedChallenge(rng.uniform(start, end), n.node_id, epoch) for n in chosen)


def assigned_nodes(nodes: list[NodeInfo], assignment, challenger: str) -> list[NodeInfo]:
    """The nodes ``challenger`` is drawn for in the epoch of ``assignment``
    (:class:`agents.challenger.assignment.Assignment`): the only ones whose reports reputation
    accepts. None while the epoch's seed is unknown (unless every challenger is drawn)."""
    return [n for n in nodes if assignment.drawn(challenger, n.node_id)]


def probe_times(nodes: list[NodeInfo], epoch: int, epoch_length: float, secret: bytes,
                policy: PlanPolicy = PlanPolicy()) -> list[PlannedChallenge]:
    """Uptime probes of every node in the epoch: ``probes_per_epoch`` each, one in each equal slice
    of the epoch at a random time within it (spread out, yet not predictable)."""
    rng = _rng(secret, epoch, b"probe")
    start, end = _window(epoch, epoch_length, policy)
    count = max(0, policy.probes_per_epoch)
    if count == 0:
        return []
    slice_s = (end - start) / count
    out = []
    for node in sorted(nodes, key=lambda n: n.node_id):
        for k in range(count):
            out.append(PlannedChallenge(start + slice_s * (k + rng.random()), node.node_id, epoch))
    return sorted(out)


def colocation_key(endpoint: str) -> str | None:
    """The block an endpoint's address belongs to (``"198.51.100.0/24"``, ``"2001:db8:1:2::/64"``);
    None for an unknown or malformed address (such a node is challenged on its own). An
    IPv4-mapped IPv6 address counts as its IPv4 address."""
    try:
        address = ipaddress.ip_address(endpoint.strip().strip("[]"))
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = COLOCATION_PREFIX_V4 if address.version == 4 else COLOCATION_PREFIX_V6
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def colocated_groups(plan: list[PlannedChallenge], nodes: list[NodeInfo]) -> list[list[PlannedChallenge]]:
    """The plan with each challenge widened to every node co-located with its node, all at its time.

    A node drawn for a challenge brings every other listed node of its block along: the runtime
    starts their challenges at the same moment, so a shared uplink shows as shared. A node in the
    block of several drawn nodes is challenged once, with the earliest of them; two drawn nodes of
    one block make one group. Nodes without a known endpoint stay alone.

    Args:
        plan: :func:`plan_epoch`'s challenges.
        nodes: the nodes the plan was drawn from, with their endpoints.

    Returns:
        Groups in time order, each challenges at one time (node ids in byte order), together
        covering each planned node once.
    """
    blocks: dict[str, list[bytes]] = {}
    key_of: dict[bytes, str | None] = {}
    for node in sorted(nodes, key=lambda n: n.node_id):
        key = colocation_key(node.endpoint) if node.endpoint else None
        key_of[node.node_id] = key
        if key is not None:
            blocks.setdefault(key, []).append(node.node_id)
    groups: list[list[PlannedChallenge]] = []
    taken: set[bytes] = set()
    for challenge in sorted(plan):
        if challenge.node_id in taken:
            continue
        key = key_of.get(challenge.node_id)
        members = blocks[key] if key is not None else [challenge.node_id]
        group = [PlannedChallenge(challenge.at, node_id, challenge.epoch) for node_id in members
                 if node_id not in taken]
        taken.update(c.node_id for c in group)
        groups.append(group)
    return groups
