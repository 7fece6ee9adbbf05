"""NAT traversal through real Linux NAT (nftables masquerade) in network namespaces.

Each case builds two "internet" bridges joined by a transit router; a public overlay node ``relay``
(rendezvous and volunteer relay); hosts ``a`` and ``b`` each behind its own NAT router of the given
flavour, one on each side of the transit router. The
overlay nodes' UDP sockets are opened inside their namespaces and driven by one reactor thread in
this process. The test asserts which path the pair ends up on, and moves data both ways over it.
"""

from __future__ import annotations

import random

import pytest

from agents.netlab import NatType, can_build_namespaces
from agents.overlay.core import OverlayConfig, OverlayNode
from agents.overlay.nat import PUNCH_TIMEOUT_S, DataReceived, NatAgent, PathUp, Registered, RelayLimits

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not can_build_namespaces(), reason="network namespaces need root (CI runs as root)"),
]

PORT = 51900
WAIT_S = PUNCH_TIMEOUT_S + 10.0  # punching, then asking the relay, on a loaded machine

FC, PR, SYM = NatType.FULL_CONE, NatType.PORT_RESTRICTED, NatType.SYMMETRIC


def _agent(reactor, ns, rng, **kw):
    node = OverlayNode(rng.getrandbits(256), OverlayConfig(stabilize_interval=3600), rng=rng)
    agent = NatAgent(node, **kw)
    with ns.enter():  # the socket lives in the host's namespace
        rt = reactor.add_udp(node, bind=("0.0.0.0", PORT))
    return rt, agent


@pytest.mark.parametrize(
    "nat_a, nat_b, expected",
    [
        (FC, PR, "direct"),
        (PR, PR, "direct"),
        (SYM, FC, "direct"),  # the cone side answers the symmetric side's fresh mapping
        (SYM, PR, "relay"),
        (SYM, SYM, "relay"),
    ],
    ids=["fullcone-portrestricted", "portrestricted-both", "symmetric-fullcone", "symmetric-portrestricted",
         "symmetric-both"],
)
def test_nat_pair__chooses_expected_path_and_moves_data(internet, reactor, nat_a, nat_b, expected):
    rng = random.Random(7)
    public_host, nat_host = internet
    relay_ns, relay_ip = public_host("relay")
    hosts = {"a": nat_host("a", nat_a, "west"), "b": nat_host("b", nat_b, "east")}

    relay_rt, relay = _agent(reactor, relay_ns, rng, relay_volunteer=True, limits=RelayLimits(max_bytes=1 << 20))
    a_rt, a = _agent(reactor, hosts["a"][0], rng)
    b_rt, b = _agent(reactor, hosts["b"][0], rng)
    for rt, agent in ((a_rt, a), (b_rt, b)):
        rt.call(lambda node, now, agent=agent: agent.register((relay_ip, PORT), now))

    # reflexive address discovery: each learns its NAT's public address from the overlay peer
    for rt, name in ((a_rt, "a"), (b_rt, "b")):
        ev = rt.wait_for(lambda e: isinstance(e, Registered), 10.0)
        assert ev is not None and ev.addr[0] == hosts[name][1].public_address

    b_id = b_rt.node.id
    a_rt.call(lambda node, now: a.connect(b_id, now))
    up = a_rt.wait_for(lambda e: isinstance(e, PathUp) and e.peer == b_id, WAIT_S)
    assert up is not None, "no path at all"
    assert up.kind == expected
    if expected == "direct":
        assert up.addr[0] == hosts["b"][1].public_address  # b's NAT, not the relay
    else:
        assert up.addr == (relay_ip, PORT)

    a_id = a_rt.node.id
    assert b_rt.wait_for(lambda e: isinstance(e, PathUp) and e.peer == a_id, WAIT_S) is not None
    assert a_rt.call(lambda node, now: a.send(b_id, b"ping from a", now)) == expected
    got = b_rt.wait_for(lambda e: isinstance(e, DataReceived) and e.data == b"ping from a", 5.0)
    assert got is not None and got.via == expected
    assert b_rt.call(lambda node, now: b.send(a_id, b"pong from b", now)) == expected
    got = a_rt.wait_for(lambda e: isinstance(e, DataReceived) and e.data == b"pong from b", 5.0)
    assert got is not None and got.via == expected
    if expected == "relay":
        assert relay.stats["relayed_bytes"] == len(b"ping from a") + len(b"pong from b")
    else:
        assert relay.stats["relayed_bytes"] == 0
