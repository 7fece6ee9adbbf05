"""The client's choice of nodes (agents.client.selection): regions as a preference list."""

import pytest

from agents.chain.bindings import NodeInfo
from agents.client.selection import Candidate, check_regions, eligible, rank


def node(name: str, region: str, *, score_bps: int = 9_000, latency_s: float = 0.02) -> Candidate:
    info = NodeInfo(node_id=name.encode().ljust(32, b"\0"), operator=name, wg_public_key=bytes(32), region=region,
                    price_per_gib=1, stake=1, active=True, revoked=False)
    return Candidate(node=info, score_bps=score_bps, reports=5, latency_s=latency_s)


def names(plan) -> list[str]:
    return [c.node.node_id.rstrip(b"\0").decode() for c in plan]


def test_check_regions__list_upper_cased_in_order_repeats_dropped():
    assert check_regions("nl, DE,nl") == ("NL", "DE")
    assert check_regions("se") == ("SE",)


@pytest.mark.parametrize("text", ["", "NL,,DE", "NLD", "N1", "NL;DE"])
def test_check_regions__malformed__refused_naming_it(text):
    with pytest.raises(ValueError, match="ISO 3166-1 alpha-2"):
        check_regions(text)


def test_eligible__only_the_named_regions():
    found = eligible([node("a", "NL"), node("b", "DE"), node("c", "FR")], regions=("NL", "DE"))
    assert names(found) == ["a", "b"]
    assert names(eligible([node("a", "NL"), node("c", "FR")])) == ["a", "c"]  # no regions: any


def test_rank__first_region_before_a_better_node_of_the_second():
    slow_nl = node("slow_nl", "NL", score_bps=5_000, latency_s=0.3)
    fast_de, fast_nl = node("fast_de", "DE"), node("fast_nl", "NL")
    assert names(rank([fast_de, slow_nl, fast_nl], ("NL", "DE"))) == ["fast_nl", "slow_nl", "fast_de"]
    assert names(rank([fast_de, slow_nl, fast_nl], ("DE", "NL"))) == ["fast_de", "fast_nl", "slow_nl"]
    # Without regions, value alone: the fast nodes first.
    assert names(rank([slow_nl, fast_de, fast_nl]))[-1] == "slow_nl"
