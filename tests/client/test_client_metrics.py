"""The client's Prometheus figures: the same numbers `warren status` prints."""

from agents.client.metrics import families


def _samples(fams):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams for s in f.samples}


def test_families__connected__figures_equal_the_status():
    status = {"connected": True, "node_id": "ab" * 32, "own_bytes": 5000, "rx_bytes": 4200, "tx_bytes": 800,
              "invoiced_bytes": 4900,
              "paid_bytes": 4000, "spent": 42, "channel_balance": 958, "latency_ms": 1.5,
              "refusals": {"overclaim": 2}, "failovers": [{"from": "x", "to": "y"}]}
    got = _samples(families({"status": status, "handshakes": 3}))
    node = (("node", "ab" * 32),)
    assert got[("warren_client_connected", ())] == 1
    assert got[("warren_client_session_bytes", node)] == 5000
    assert got[("warren_client_session_bytes_in", node)] == 4200
    assert got[("warren_client_session_bytes_out", node)] == 800
    assert got[("warren_client_paid_bytes", node)] == 4000
    assert got[("warren_client_spent_wei", node)] == 42
    assert got[("warren_client_latency_ms", node)] == 1.5
    assert got[("warren_client_invoices_refused_total", (("reason", "overclaim"),))] == 2
    assert got[("warren_client_failovers_total", ())] == 1
    assert got[("warren_client_handshakes_total", ())] == 3


def test_families__not_connected__zeros():
    got = _samples(families({"status": {"connected": False}, "handshakes": 0}))
    assert got[("warren_client_connected", ())] == 0
    assert got[("warren_client_session_bytes", (("node", ""),))] == 0
    assert got[("warren_client_session_bytes_in", (("node", ""),))] == 0
    assert got[("warren_client_failovers_total", ())] == 0
