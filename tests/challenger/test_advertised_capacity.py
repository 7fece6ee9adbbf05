"""The capacity a challenge holds a node to is the node's own: advertised in its signed PeerRecord.

The node's side: ``capacity_mbps`` in its config (default: the ``[price]`` table's) becomes the
PeerRecord's ``capacity_kbps``; the challenger's side: :func:`agents.challenger.runtime.advertised_kbps`
takes it from the record it resolved, and the challenger's ``expected_kbps`` only for a node that
advertises none. The netns test (test_challenger_netns.py) runs both through real nodes.
"""

from __future__ import annotations

import pytest
from eth_account import Account

from agents.challenger.runtime import advertised_kbps
from agents.challenger.verdict import judge
from agents.node.config import NodeConfig, load_config, write_config
from agents.node.pricing import PriceRule
from agents.overlay.ids import node_id_from_wg_key
from agents.overlay.records import InMemoryDirectory, RecordValidator, make_peer_record
from agents.wallet import AccountSpec

from test_verdict import SIZE, make

TOKEN = 10**18
WG_KEY = bytes(range(32))


def _record(capacity_kbps: int):
    """A PeerRecord as a node publishes it, validated as a challenger's discovery does."""
    operator = Account.create()
    node_id = node_id_from_wg_key(WG_KEY)
    raw = make_peer_record(operator.key, WG_KEY, [("203.0.113.7", 51820)], seq=1, expires=1_900_000_600,
                           capacity_kbps=capacity_kbps)
    validator = RecordValidator(InMemoryDirectory({node_id: operator.address}))
    return validator.validate(raw, 1_900_000_000)


def test_advertised_kbps__from_the_nodes_record__else_the_fallback():
    assert advertised_kbps(_record(16_000), fallback_kbps=20_000) == 16_000
    assert advertised_kbps(_record(0), fallback_kbps=20_000) == 20_000   # advertises none
    assert advertised_kbps(None, fallback_kbps=20_000) == 20_000         # not found


def test_verdict__judged_against_each_nodes_own_capacity():
    # The same download (~4.2 Mbit/s) passes a node advertising 5 Mbit/s and fails one advertising 50.
    low, high = advertised_kbps(_record(5_000), 0), advertised_kbps(_record(50_000), 0)
    assert judge(make(elapsed_s=0.5, advertised_kbps=low)).passed
    verdict = judge(make(elapsed_s=0.5, advertised_kbps=high))
    assert not verdict.passed
    assert verdict.reasons == (f"slow: {int(SIZE * 8 / 1000 / 0.5)} kbit/s, below 25000",)


@pytest.mark.parametrize(("capacity_mbps", "price", "expected_kbps"), [
    (40, None, 40_000),                                          # said outright
    (None, PriceRule(floor=TOKEN // 1000, ceiling=TOKEN // 100, capacity_mbps=25), 25_000),  # auto price's
    (12.5, PriceRule(floor=TOKEN // 1000, ceiling=TOKEN // 100, capacity_mbps=25), 12_500),  # said wins
    (None, None, 0),                                             # fixed price, nothing said: none
])
def test_node_config__advertised_capacity__round_trips_through_the_file(tmp_path, capacity_mbps, price, expected_kbps):
    config = NodeConfig(region="DE", price_per_gib="auto" if price else TOKEN // 1000, price=price,
                        operator=AccountSpec(test_account=3), capacity_mbps=capacity_mbps)
    write_config(tmp_path / "node.toml", config)
    loaded = load_config(tmp_path / "node.toml")
    assert loaded.capacity_mbps == capacity_mbps
    assert loaded.advertised_kbps == expected_kbps


def test_node_config__capacity_not_a_positive_number__refused(tmp_path):
    from agents.tomlconfig import ConfigError

    config = NodeConfig(region="DE", price_per_gib=TOKEN // 1000, operator=AccountSpec(test_account=3))
    write_config(tmp_path / "node.toml", config)
    text = (tmp_path / "node.toml").read_text()
    (tmp_path / "node.toml").write_text('capacity_mbps = -5\n' + text)
    with pytest.raises(ConfigError, match="capacity_mbps"):
        load_config(tmp_path / "node.toml")
