"""The pure parts of `warren connect --hops 2` (agents.client.hops): who may be relay and exit, what
the relay's peer may carry, which endpoint of an exit's record is used. The tunnels themselves are
exercised by tests/e2e/test_two_hops_e2e.py."""

from types import SimpleNamespace

from agents.client.hops import INNER_MTU, exit_endpoint, pair_plans, relay_allowed_ips
from agents.client.selection import Candidate
from agents.chain.bindings import NodeInfo


def candidate(name: str, operator: str, region: str = "NL") -> Candidate:
    return Candidate(node=NodeInfo(node_id=name.encode().ljust(32, b"\0"), operator=operator, wg_public_key=bytes(32),
                                   region=region, price_per_gib=1, stake=1, active=True, revoked=False))


def names(plan) -> list[str]:
    return [c.node.node_id.rstrip(b"\0").decode() for c in plan]


def test_pair_plans__first_relay_and_first_exit_of_different_operators():
    a, b, c = candidate("a", "op1"), candidate("b", "op2"), candidate("c", "op3")
    exits, relays = pair_plans([a, b, c], [a, b, c])
    assert names(exits) == ["a", "c"] and names(relays) == ["b"]  # c would share op3 with no one: exit standby


def test_pair_plans__same_operator_is_never_the_first_pair():
    a, a2, b = candidate("a", "op1"), candidate("a2", "op1"), candidate("b", "op2")
    exits, relays = pair_plans([a], [a2, b])
    assert names(exits) == ["a"] and names(relays) == ["b"]


def test_pair_plans__one_operator_only__no_plan():
    assert pair_plans([candidate("a", "op1")], [candidate("a2", "op1")]) == ([], [])


def test_pair_plans__exit_of_the_only_relays_operator_is_passed_over():
    a, b = candidate("a", "op1"), candidate("b", "op2")
    exits, relays = pair_plans([b, a], [b])  # b is the only relay there is: the exit becomes a
    assert names(exits) == ["a"] and names(relays) == ["b"]


def test_relay_allowed_ips__exits_and_the_control_address_only():
    assert relay_allowed_ips([("198.51.100.2", 51820), ("198.51.100.2", 51821), ("198.51.100.3", 51820)]) == (
        "198.51.100.2/32", "198.51.100.3/32", "fd77:7272::1/128")


def test_exit_endpoint__first_ipv4_endpoint_of_the_record():
    record = SimpleNamespace(endpoints=[("2001:db8::1", 51820), ("198.51.100.4", 51820)])
    assert exit_endpoint(record) == ("198.51.100.4", 51820)
    assert exit_endpoint(SimpleNamespace(endpoints=[("2001:db8::1", 51820)])) is None
    assert exit_endpoint(None) is None


def test_inner_mtu__fits_the_outer_tunnel_and_ipv6():
    assert INNER_MTU + 40 + 8 + 32 <= 1420 and INNER_MTU >= 1280
