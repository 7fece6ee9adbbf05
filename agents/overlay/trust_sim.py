"""Trust-layer figures of the overlay, measured in the simulator with the real protocol core.

:func:`measure` is what ``scripts/bench_trust.py`` calls (issue 14): how fast a revocation reaches
every live node, what its broadcast costs, and how lookups fare when a tenth of the nodes attack,
without and with sender authentication (:mod:`agents.overlay.auth`, :mod:`agents.overlay.trust`).

Revocation model (:func:`revocation_propagation`): the revocation transaction is sent at t = 0 and is
in a block after ``U(0, block_s)``; every node reads the chain every ``poll_s`` (random phase), each
read taking ``U(rpc_s)``; the owner of ``revocation_key(node_id)`` broadcasts the certificate when
its read sees the event (as :class:`agents.node.revocations.NodeRevocations` does). A node refuses the
key from the first of: its own chain read, the certificate reaching it (checked: guardian quorum).
Nodes that do not read the chain (``chain_share < 1``: light hosts, a lagging RPC) depend on the
broadcast alone; the figure is taken with ``chain_share = 0`` too, so the broadcast's own speed shows.
"""

from __future__ import annotations

import random
import time

from eth_account import Account

from agents.chain import eip712

from .core import BroadcastDelivered, OverlayConfig
from .records import InMemoryDirectory, RecordValidator, RevocationAuthority, decode_record, revocation_key
from .revocation import RevocationFacts, RevocationList, certificate, facts_from_record
from .sim import SimNetwork
from .store import RecordStore
from .trust import guard

__all__ = ["measure", "revocation_propagation"]

#: Simulated start (unix seconds): records carry unix expiries.
START = 1_800_000_000.0
#: One-way latency between hosts (seconds): 10-150 ms, continental to intercontinental paths.
LATENCY_S = (0.01, 0.15)
#: An EVM chain with 2 s blocks (Base, Optimism); the node's poll period (agents.node.revocations.POLL_S).
BLOCK_S, POLL_S = 2.0, 1.0
#: One JSON-RPC read round trip (eth_getLogs to a public endpoint), seconds.
RPC_S = (0.05, 0.3)
#: Test chain id and registry address for the EIP-712 domain of the guardian signatures.
_CHAIN_ID, _REGISTRY = 1337, "0x" + "5e" * 20


def _authority_and_signers(rng: random.Random, guardians: int = 3, quorum: int = 2):
    keys = [Account.from_key(rng.getrandbits(256).to_bytes(32, "big")) for _ in range(guardians)]
    auth = RevocationAuthority({k.address for k in keys}, quorum, _CHAIN_ID, _REGISTRY)
    return auth, keys[:quorum]


def revocation_propagation(nodes: int = 1000, seed: int = 1, *, chain_share: float = 1.0, loss: float = 0.01,
                           latency: tuple = LATENCY_S, block_s: float = BLOCK_S, poll_s: float = POLL_S,
                           rpc_s: tuple = RPC_S, horizon_s: float = 30.0) -> dict:
    """One revocation in a converged ring of ``nodes``; see the module docstring.

    Returns:
        ``propagation_s`` (tx -> last live node refusing), ``broadcast_s`` (announcement -> last
        delivery), ``messages`` (BROADCAST datagrams sent, retransmissions and repairs included),
        ``reached`` (nodes that got the certificate by broadcast) and ``refusing`` (nodes refusing by
        the horizon), ``nodes``.
    """
    rng = random.Random(seed)
    authority, signers = _authority_and_signers(rng)
    directory = InMemoryDirectory()
    net = SimNetwork(seed=seed, latency=latency, loss=loss, start=START,
                     config=OverlayConfig(stabilize_interval=30.0, republish_interval=1e9),
                     store_factory=lambda: RecordStore(RecordValidator(directory, authority)))
    ring = net.warm_start(nodes)
    victim = rng.choice(ring)
    facts = RevocationFacts(victim.id, b"\x0e" * 32, 1, tuple(
        eip712.fast_sign(eip712.Revocation(victim.id.to_bytes(32, "big"), b"\x0e" * 32, 1), k.key, _CHAIN_ID, _REGISTRY)
        for k in signers))
    t0 = net.now
    refused: dict[int, float] = {}
    lists: dict[int, RevocationList] = {}
    for node in ring:
        rl = lists[node.id] = RevocationList()
        guard(node, revocations=rl)
        rl.listeners.append(lambda f, nid=node.id: refused.setdefault(nid, net.now - t0))
    delivered: dict[int, float] = {}
    announced = {}

    def on_event(node, ev, now):
        if isinstance(ev, BroadcastDelivered) and node.id in lists and decode_record(ev.payload).node_id == victim.id:
            delivered.setdefault(node.id, now - t0)
            lists[node.id].add(facts_from_record(ev.payload, now))

    net.on_event = on_event
    mined = t0 + rng.uniform(0, block_s)
    announcer = net.true_owner(revocation_key(victim.id))
    for node in ring:
        if node is victim:
            continue
        follows = rng.random() < chain_share or node.id == announcer
        if not follows:
            continue
        phase = rng.uniform(0, poll_s)
        # first read that starts after the block: k-th poll at phase + k * poll_s, answered after an RPC trip
        k = max(0, int((mined - t0 - phase) // poll_s) + 1)
        seen = t0 + phase + k * poll_s + rng.uniform(*rpc_s)

        def read(now, node=node):
            if lists[node.id].add(facts):
                pass
            if node.id == announcer and not announced:
                announced["at"] = now - t0
                node.broadcast(certificate(facts, now), now)
                net.flush(net.addr_of[node.id])

        net.call_at(seen, read)
    sent0 = sum(n.stats["bcast_sent"] for n in ring)
    live = [n for n in ring if n is not victim]
    net.run_until(t0 + horizon_s, stop=lambda: len(refused) >= len(live) and len(delivered) >= len(live) - 1)
    net.run_until(net.now + 3.0)  # acknowledgements and repairs still in flight
    messages = sum(n.stats["bcast_sent"] for n in ring) - sent0
    times = [refused.get(n.id) for n in live]
    complete = all(t is not None for t in times)
    return {
        "nodes": nodes,
        "propagation_s": round(max(times), 3) if complete else None,
        "broadcast_s": round(max(delivered.values()) - announced["at"], 3) if delivered and announced else None,
        "announced_s": round(announced.get("at", float("nan")), 3),
        "messages": messages,
        "reached": len(delivered),
        "refusing": sum(t is not None for t in times),
    }


def measure(nodes: int = 1000, seed: int = 1, lookups: int = 500) -> dict:
    """The overlay's trust figures for scripts/bench_trust.py (see the module docstring).

    Returns:
        ``revocation_propagation_s`` (every node follows the chain and hears the broadcast),
        ``revocation_broadcast_only_s`` (no node reads the chain but the announcer: the broadcast's own
        reach), ``revocation_broadcast_messages``, ``revocation_reached``; the eclipse figures of
        :func:`agents.overlay.trust.eclipse` with 10 % attackers, authenticated and (``_unauthenticated``)
        as today, each for the attacker's better strategy: ``eclipse_lookup_success``, ``eclipse_rate``,
        ``lookup_median_s``; ``sim_wall_s``.
    """
    started = time.monotonic()
    both = revocation_propagation(nodes, seed)
    alone = revocation_propagation(nodes, seed, chain_share=0.0)
    out = {
        "nodes": nodes,
        "revocation_propagation_s": both["propagation_s"],
        "revocation_broadcast_only_s": alone["propagation_s"],
        "revocation_broadcast_s": alone["broadcast_s"],
        "revocation_broadcast_messages": alone["messages"],
        "revocation_reached": alone["reached"],
    }
    from .trust import eclipse

    for authenticated in (False, True):
        runs = [eclipse(nodes, seed, lookups=lookups, authenticated=authenticated, strategy=st)
                for st in ("spoof", "claim")]
        worst = min(runs, key=lambda r: r["success"])  # the attacker picks the better strategy
        tag = "" if authenticated else "_unauthenticated"
        out[f"eclipse_lookup_success{tag}"] = worst["success"]
        out[f"eclipse_rate{tag}"] = worst["eclipsed"]
        out[f"eclipse_strategy{tag}"] = worst["strategy"]
        out[f"lookup_median_s{tag}"] = worst["median_s"]
    out["eclipse_attackers"] = 0.10
    out["eclipse_lookups"] = lookups
    out["sim_wall_s"] = round(time.monotonic() - started, 1)
    return out
