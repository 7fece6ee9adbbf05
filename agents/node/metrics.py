"""The node's Prometheus figures, read from the same places as `warren node status`.

:func:`snapshot` is the I/O edge (the agent's live status, the settler's status, the store's
settlement rows, the exit's drop counters, the tunnel's event counts); :func:`families` turns a
snapshot into metric families and is pure, so the names, labels and sums are tested without a node.
Amounts are token wei, sizes bytes.
"""

from __future__ import annotations

import logging

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from agents.node.store import CONFIRMED

__all__ = ["families", "snapshot"]

log = logging.getLogger("warren.node.metrics")


def snapshot(agent, settler, store) -> dict:
    """Everything :func:`families` needs, read now (the node's own figures, nothing recomputed)."""
    rows = store.settlements()
    try:
        drops = agent.exit.dropped()
    except Exception as exc:  # noqa: BLE001 - the exit table may be gone while stopping; show no drops
        log.debug("metrics: exit drop counters unavailable: %s", exc)
        drops = {}
    tunnel = agent.tunnel
    return {
        "live": agent.status(),
        "settlement": settler.status(),
        "settlements": [{"status": r.status, "gas": r.gas or 0} for r in rows],
        "settled_amount": sum(store.settled_amounts().values()),
        "drops": drops,
        "handshakes": int(tunnel.event_counts.get("HandshakeCompleted", 0)) if tunnel is not None else 0,
    }


def families(snap: dict) -> list:
    """Metric families of one snapshot (see the README's "Run a node" for what each means)."""
    live, settlement = snap["live"], snap["settlement"]
    out = []

    def gauge(name, doc, value, labels=None):
        metric = GaugeMetricFamily(name, doc, labels=list(labels or {}))
        metric.add_metric(list((labels or {}).values()), value)
        out.append(metric)

    def counter(name, doc, values: dict[str, int] | int, label: str | None = None):
        metric = CounterMetricFamily(name, doc, labels=[label] if label else None)
        if label is None:
            metric.add_metric([], values)
        else:
            for key, value in sorted(values.items()):
                metric.add_metric([key], value)
        out.append(metric)

    gauge("warren_node_sessions", "Live paid sessions.", len(live["sessions"]))
    gauge("warren_node_pending_clients", "Clients in quarantine (handshaken, not yet set up).", live["pending"])
    gauge("warren_node_price_per_gib_wei", "The node's price, token wei per GiB.", live["price_per_gib"])
    gauge("warren_node_uptime_seconds", "Seconds since the node started.", live["uptime_s"])
    counter("warren_node_sessions_started", "Sessions set up since start.", live["counters"]["sessions"])
    per_session = {name: GaugeMetricFamily(name, doc, labels=["client", "channel"]) for name, doc in (
        ("warren_node_session_bytes_in", "Tunnel bytes received from the client, per live session."),
        ("warren_node_session_bytes_out", "Tunnel bytes sent to the client, per live session."),
        ("warren_node_session_billed_bytes", "Bytes billed (tunnel bytes less policy drops), per live session."),
        ("warren_node_session_paid_bytes", "Bytes covered by the latest receipt, per live session."),
        ("warren_node_session_paid_wei", "The latest receipt's cumulative amount, per live session."),
    )}
    for s in live["sessions"]:
        labels = [s["client"], s["channel_id"]]
        for name, key in (("warren_node_session_bytes_in", "rx_bytes"), ("warren_node_session_bytes_out", "tx_bytes"),
                          ("warren_node_session_billed_bytes", "billed_bytes"),
                          ("warren_node_session_paid_bytes", "paid_bytes"), ("warren_node_session_paid_wei", "paid_amount")):
            per_session[name].add_metric(labels, s[key])
    out.extend(per_session.values())
    counter("warren_node_receipts_accepted", "Receipts accepted and stored.", live["counters"]["receipts_accepted"])
    counter("warren_node_receipts_refused", "Receipts refused, by reason.", live.get("receipt_refusals", {}), "reason")
    counter("warren_node_setups_refused", "Session setups refused, by reason.", live["refusals"], "reason")
    gauge("warren_node_unsettled_wei", "Stored receipts' amount not yet settled on chain.",
          settlement["unsettled_amount"])
    gauge("warren_node_unsettled_channels", "Channels with an unsettled stored receipt.",
          settlement["unsettled_channels"])
    gauge("warren_node_settled_wei", "Settled amount per the store's confirmed settlements, all channels.",
          snap["settled_amount"])
    by_status: dict[str, int] = {}
    for row in snap["settlements"]:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    counter("warren_node_settlements", "Settlement attempts, by status.", by_status, "status")
    counter("warren_node_settlement_gas", "Gas used by confirmed settlements.",
            sum(r["gas"] for r in snap["settlements"] if r["status"] == CONFIRMED))
    counter("warren_node_handshakes", "WireGuard handshakes completed.", snap["handshakes"])
    packets = sum(p for p, _ in snap["drops"].values())
    nbytes = sum(b for _, b in snap["drops"].values())
    counter("warren_node_policy_dropped_packets", "Packets the exit dropped (policy, private ranges).", packets)
    counter("warren_node_policy_dropped_bytes", "Bytes the exit dropped (policy, private ranges).", nbytes)
    return out
