"""The client's Prometheus figures, read from the same status `warren status` prints.

:func:`families` is pure (a status dict and the tunnel's handshake count in, metric families out).
Amounts are token wei, sizes bytes.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["families", "snapshot"]


def snapshot(agent, tunnel) -> dict:
    """The live status and the tunnel's completed handshakes, read now."""
    return {"status": agent.status() if agent is not None else {"connected": False},
            "handshakes": int(tunnel.event_counts.get("HandshakeCompleted", 0))}


def families(snap: dict) -> list:
    """Metric families of one snapshot (zeros while not connected)."""
    status = snap["status"]
    connected = bool(status.get("connected"))
    node = status.get("node_id", "") if connected else ""
    out = []

    def gauge(name, doc, value, labelled=True):
        metric = GaugeMetricFamily(name, doc, labels=["node"] if labelled else None)
        metric.add_metric([node] if labelled else [], value)
        out.append(metric)

    gauge("warren_client_connected", "1 while a paid session is up.", int(connected), labelled=False)
    gauge("warren_client_session_bytes", "Tunnel bytes both ways, as the client counted them.",
          status.get("own_bytes", 0))
    gauge("warren_client_session_bytes_in", "Tunnel bytes received from the node this session.",
          status.get("rx_bytes", 0))
    gauge("warren_client_session_bytes_out", "Tunnel bytes sent to the node this session.",
          status.get("tx_bytes", 0))
    gauge("warren_client_invoiced_bytes", "Bytes the node last invoiced.", status.get("invoiced_bytes", 0))
    gauge("warren_client_paid_bytes", "Bytes covered by the latest signed receipt.", status.get("paid_bytes", 0))
    gauge("warren_client_spent_wei", "The latest receipt's cumulative amount.", status.get("spent", 0))
    gauge("warren_client_channel_balance_wei", "Channel deposit less what was signed.",
          status.get("channel_balance", 0))
    if status.get("latency_ms") is not None:
        gauge("warren_client_latency_ms", "The control channel's last round trip.", status["latency_ms"])
    refused = CounterMetricFamily("warren_client_invoices_refused", "Invoices the client refused to pay, by reason.",
                                  labels=["reason"])
    for reason, count in sorted((status.get("refusals") or {}).items()):
        refused.add_metric([reason], count)
    out.append(refused)
    failovers = CounterMetricFamily("warren_client_failovers", "Moves to the standby node.")
    failovers.add_metric([], len(status.get("failovers") or []))
    out.append(failovers)
    handshakes = CounterMetricFamily("warren_client_handshakes", "WireGuard handshakes completed.")
    handshakes.add_metric([], snap["handshakes"])
    out.append(handshakes)
    return out
