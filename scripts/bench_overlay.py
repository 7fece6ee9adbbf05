"""Overlay benchmark: the real OverlayNode core on the in-process simulator.

Measures, at ``--nodes`` N (default 10,000):

* lookups on a converged ring: mean and p99 hops (queries sent) and success; the anchor is the goal
  ``0.5*log2(N) + 1`` and Chord's theoretical ``0.5*log2(N)``;
* ring broadcast from a random node: coverage, messages (anchor N-1) and rounds (anchor
  ``ceil(log2 N) + 2``);
* lookups under churn: for ``--periods`` stabilisation periods, ``--churn`` (10%) of the nodes are
  replaced per period (crash without notice; a fresh node joins through a random live one, via the
  real join protocol), while lookups run from random joined nodes; success = the node returned is the
  live owner of the key when the answer arrives (the answer of a user lookup,
  ``OverlayNode.lookup``, after its bounded retries); failures are split in ``churn_failures`` into
  no owner returned, returned node crashed (while its answer travelled), returned node alive but the
  true owner joined < 1 s before (a join racing the answer), and other wrong owners (``--diag``
  prints details of the last kind);
* memory per simulated node (tracemalloc over building the converged ring).

Last stdout line: one JSON object. ``--quick`` runs 500 nodes.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import statistics
import sys
import time
import tracemalloc

from agents.overlay.core import BroadcastDelivered, Joined, LookupDone, OverlayConfig
from agents.overlay.sim import SimNetwork


def _short(c) -> str | None:
    return f"{c.node_id:x}"[:8] if c is not None else None


def _context(net, key: int, got: int) -> str:
    """Diagnostics of a wrong owner, taken when the answer arrives: the returned node's predecessor
    state, the true owner's neighbours and the true predecessor's first successors."""
    g = net.node(got).table
    want = net.true_owner(key)
    w = net.node(want).table
    i = bisect.bisect_left(net.live_ids, want)
    rp = net.node(net.live_ids[i - 1]).table
    return (f"got.pred={_short(g.predecessor)} got.pred2={_short(g.pred2)} got.pred_lost={g.pred_lost} "
            f"want.pred={_short(w.predecessor)} want.succ={[_short(c) for c in w.successors[:3]]} "
            f"real_pred={net.live_ids[i - 1]:x} real_pred.succ={[_short(c) for c in rp.successors[:3]]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="smoke run: 500 nodes, fewer lookups")
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--churn", type=float, default=0.10, help="fraction replaced per stabilisation period")
    ap.add_argument("--periods", type=int, default=3)
    ap.add_argument("--interval", type=float, default=10.0, help="stabilisation period, simulated seconds")
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--diag", action="store_true", help="print details of unexplained failures to stderr")
    a = ap.parse_args(argv)
    if a.quick:
        a.nodes, a.lookups = 500, 500
    n = a.nodes
    t0 = time.perf_counter()
    cfg = OverlayConfig(stabilize_interval=a.interval, rpc_timeout=0.5)
    net = SimNetwork(seed=a.seed, latency=(0.01, 0.1), loss=a.loss, config=cfg)

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    nodes = net.warm_start(n)
    mem_per_node = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()

    results = {"static": [], "churn": []}
    diag = [] if a.diag else None
    phase = {"name": "static"}
    bcast = {"delivered": set(), "max_depth": 0, "dups": 0}
    # why churn-phase lookups failed: no owner returned / returned node crashed / alive but not the owner
    # (not_owner_join: the true owner joined less than 1 s before the answer arrived)
    failures = {"no_owner": 0, "owner_dead": 0, "not_owner_join": 0, "not_owner": 0}
    joined_at: dict = {}

    def on_event(node, ev, now):
        if isinstance(ev, LookupDone):
            ok = ev.owner is not None and ev.owner.node_id == net.true_owner(ev.key)
            results[phase["name"]].append((ok, ev.hops))
            if not ok and phase["name"] == "churn":
                if ev.owner is None:
                    failures["no_owner"] += 1
                elif ev.owner.node_id not in net.addr_of:
                    failures["owner_dead"] += 1
                elif now - joined_at.get(net.true_owner(ev.key), -1e9) < 1.0:
                    failures["not_owner_join"] += 1
                else:
                    failures["not_owner"] += 1
                    if diag is not None:
                        diag.append((now, ev.key, ev.owner.node_id, net.true_owner(ev.key), node,
                                     _context(net, ev.key, ev.owner.node_id)))
        elif isinstance(ev, Joined):
            joined_at[node.id] = now
        elif isinstance(ev, BroadcastDelivered):
            if node.id in bcast["delivered"]:
                bcast["dups"] += 1
            bcast["delivered"].add(node.id)
            bcast["max_depth"] = max(bcast["max_depth"], ev.depth)

    net.on_event = on_event

    def issue(count: int, start: float, span: float) -> None:
        rng = net.rng
        for i in range(count):
            def go(now):
                if not net.live_ids:
                    return
                src = net.node(rng.choice(net.live_ids))
                src.lookup(rng.getrandbits(256), now)
                net.flush(net.addr_of[src.id])
            net.call_at(start + span * i / count, go)

    # -- phase 1: lookups on the converged ring
    issue(a.lookups, net.now + 0.01, 2.0)
    net.run_until(net.now + 2.0 + 30.0)
    static = results["static"]
    hops = sorted(h for ok, h in static if ok)

    # -- phase 2: one broadcast, no churn
    sent_before = sum(x.stats["bcast_sent"] for x in net.nodes.values())
    origin = net.rng.choice(nodes)
    origin.broadcast(b"revocation certificate", net.now)
    net.flush(net.addr_of[origin.id])
    net.run_until(net.now + 30.0)
    bcast_msgs = sum(x.stats["bcast_sent"] for x in net.nodes.values()) - sent_before
    coverage = len(bcast["delivered"]) / len(net.nodes)

    # -- phase 3: churn. Each period, churn*N crashes and as many joins at random times.
    phase["name"] = "churn"
    t_churn = net.now
    per_period = int(round(a.churn * n))
    rng = net.rng
    for p in range(a.periods):
        for k in range(per_period):
            at = t_churn + (p + rng.random()) * a.interval

            def churn(now):
                victim = net.node(rng.choice(net.live_ids))
                net.kill(victim)
                net.join(net.new_node())
            net.call_at(at, churn)
    issue(a.lookups * a.periods, t_churn + a.interval * 0.5, a.interval * (a.periods - 0.5))
    net.run_until(t_churn + a.interval * a.periods + 30.0)
    churned = results["churn"]

    if diag:
        for now, key, got, want, node, then in diag:
            age = now - joined_at.get(want, -1e9)
            print(f"wrong owner t={now:.2f} key={key:x} got={got:x} want={want:x} want_joined_ago={age:.1f}s "
                  f"src={node.id:x}\n  at answer: {then}", file=sys.stderr)
    goal_hops = 0.5 * math.log2(n) + 1
    out = {
        "nodes": n,
        "mean_hops": round(statistics.mean(hops), 3),
        "p99_hops": hops[int(0.99 * (len(hops) - 1))],
        "lookup_success": round(sum(ok for ok, _ in static) / len(static), 5),
        "lookup_success_under_churn": round(sum(ok for ok, _ in churned) / len(churned), 5),
        "broadcast_coverage": round(coverage, 5),
        "broadcast_messages": bcast_msgs,
        "broadcast_rounds": bcast["max_depth"],
        "broadcast_duplicates": bcast["dups"],
        "goal_mean_hops": round(goal_hops, 3),
        "goal_broadcast_rounds": math.ceil(math.log2(n)) + 2,
        "lookups_static": len(static),
        "lookups_churn": len(churned),
        "churn_failures": failures,
        "churn_per_period": a.churn,
        "periods": a.periods,
        "stabilize_interval_s": a.interval,
        "loss": a.loss,
        "memory_per_node_bytes": int(mem_per_node),
        "datagrams_delivered": net.delivered,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(f"overlay simulation: {n} nodes, {net.delivered} datagrams in {out['wall_s']} s", file=sys.stderr)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
