"""The trust simulator's figures: a revocation reaches every live node, once each, within the goal."""

from agents.overlay.trust_sim import revocation_propagation


def test_revocation__broadcast_only__every_live_node_refuses_within_5_s_with_n_minus_1_messages():
    r = revocation_propagation(300, seed=3, chain_share=0.0)
    assert r["refusing"] == 299 and r["reached"] >= 299, r
    assert r["propagation_s"] is not None and r["propagation_s"] < 5.0, r
    # one certificate, delivered once per node: N - 1 first sends plus the few retransmissions of 1 % loss
    assert 298 <= r["messages"] <= 330, r


def test_revocation__chain_and_broadcast__every_live_node_refuses_within_5_s():
    r = revocation_propagation(300, seed=4, chain_share=1.0)
    assert r["refusing"] == 299 and r["propagation_s"] < 5.0, r
