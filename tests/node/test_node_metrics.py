"""The node's Prometheus figures: names, labels and sums from a status snapshot; the endpoint itself."""

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.errors import UserError
from agents.metrics import ListenSettings, read_listen, serve
from agents.node.metrics import families
from agents.node.store import CONFIRMED
from agents.tomlconfig import ConfigError, Table


def _snapshot(**changes):
    snap = {
        "live": {"node_id": "ab" * 32, "uptime_s": 12.5, "price_per_gib": 10**18, "pending": 1,
                 "sessions": [{"client": "k1", "channel_id": "c1" * 32, "rx_bytes": 1000, "tx_bytes": 9000,
                               "billed_bytes": 9500, "paid_bytes": 8000, "paid_amount": 77, "suspended": False},
                              {"client": "k2", "channel_id": "c2" * 32, "rx_bytes": 10, "tx_bytes": 20,
                               "billed_bytes": 30, "paid_bytes": 0, "paid_amount": 0, "suspended": False}],
                 "counters": {"receipts_accepted": 5, "receipts_refused": 3, "sessions": 4, "setups_refused": 2},
                 "refusals": {"wrong_channel": 2}, "receipt_refusals": {"wrong_signer": 2, "overclaim": 1}},
        "settlement": {"unsettled_amount": 1234, "unsettled_channels": 1},
        "settlements": [{"status": CONFIRMED, "gas": 61_882}, {"status": CONFIRMED, "gas": 61_900},
                        {"status": "failed", "gas": 0}],
        "settled_amount": 5000,
        "drops": {"10.77.0.2": (3, 180), "fd77:7272::2": (1, 80)},
        "handshakes": 6,
    }
    snap.update(changes)
    return snap


def _samples(fams):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams for s in f.samples}


def test_families__snapshot__figures_equal_the_status():
    got = _samples(families(_snapshot()))
    assert got[("warren_node_sessions", ())] == 2
    assert got[("warren_node_pending_clients", ())] == 1
    assert got[("warren_node_session_bytes_in", (("channel", "c1" * 32), ("client", "k1")))] == 1000
    assert got[("warren_node_session_bytes_out", (("channel", "c1" * 32), ("client", "k1")))] == 9000
    assert got[("warren_node_session_paid_wei", (("channel", "c1" * 32), ("client", "k1")))] == 77
    assert got[("warren_node_receipts_accepted_total", ())] == 5
    assert got[("warren_node_receipts_refused_total", (("reason", "wrong_signer"),))] == 2
    assert got[("warren_node_receipts_refused_total", (("reason", "overclaim"),))] == 1
    assert got[("warren_node_setups_refused_total", (("reason", "wrong_channel"),))] == 2
    assert got[("warren_node_unsettled_wei", ())] == 1234
    assert got[("warren_node_settled_wei", ())] == 5000
    assert got[("warren_node_settlements_total", (("status", CONFIRMED),))] == 2
    assert got[("warren_node_settlements_total", (("status", "failed"),))] == 1
    assert got[("warren_node_settlement_gas_total", ())] == 61_882 + 61_900
    assert got[("warren_node_handshakes_total", ())] == 6
    assert got[("warren_node_policy_dropped_packets_total", ())] == 4
    assert got[("warren_node_policy_dropped_bytes_total", ())] == 260


def test_families__no_sessions__families_present_with_no_samples():
    live = dict(_snapshot()["live"], sessions=[], receipt_refusals={})
    fams = {f.name: f for f in families(_snapshot(live=live, settlements=[], drops={}))}
    assert fams["warren_node_session_bytes_in"].samples == []
    assert fams["warren_node_receipts_refused"].samples == []
    assert _samples(fams.values())[("warren_node_policy_dropped_packets_total", ())] == 0


def test_serve__loopback__scrape_parses_back_to_the_same_figures():
    server = serve(ListenSettings(True, ("127.0.0.1", 0)), lambda: families(_snapshot()))
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.listen[1]}/metrics", timeout=5).read().decode()
    finally:
        server.close()
    parsed = _samples(text_string_to_metric_families(text))
    assert parsed[("warren_node_unsettled_wei", ())] == 1234
    assert parsed[("warren_node_session_bytes_out", (("channel", "c2" * 32), ("client", "k2")))] == 20
    assert "python_gc" not in text and "process_cpu" not in text  # Warren's figures only


def test_serve__disabled__no_endpoint():
    assert serve(ListenSettings(False, ("127.0.0.1", 0)), lambda: []) is None


def test_serve__port_taken__user_error_names_the_config_key():
    first = serve(ListenSettings(True, ("127.0.0.1", 0)), lambda: [])
    try:
        with pytest.raises(UserError, match=r"\[metrics\] listen"):
            serve(ListenSettings(True, first.listen), lambda: [])
    finally:
        first.close()


def test_read_listen__defaults_and_errors(tmp_path):
    assert read_listen(Table(tmp_path / "n.toml", {}), "metrics", 9470) == ListenSettings(True, ("127.0.0.1", 9470))
    table = Table(tmp_path / "n.toml", {"metrics": {"enabled": False, "listen": "[::1]:9000"}})
    assert read_listen(table, "metrics", 9470) == ListenSettings(False, ("::1", 9000))
    with pytest.raises(ConfigError, match="color"):
        read_listen(Table(tmp_path / "n.toml", {"metrics": {"color": "red"}}), "metrics", 9470)
