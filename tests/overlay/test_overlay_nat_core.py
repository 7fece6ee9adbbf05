"""NAT traversal logic without sockets: hand-driven nodes, a fake clock, and a filter standing in
for NATs that drop the direct datagrams between the two ends."""

from __future__ import annotations

import random

from agents.overlay import wire
from agents.overlay.core import OverlayConfig, OverlayNode
from agents.overlay.nat import (
    KEEPALIVE_S,
    PUNCH_SYNC_S,
    PUNCH_TIMEOUT_S,
    RETRY_DIRECT_S,
    DataReceived,
    NatAgent,
    PathDown,
    PathUp,
    Registered,
    RelayLimits,
)

R_ADDR, A_ADDR, B_ADDR = ("192.0.2.1", 1000), ("203.0.113.10", 2000), ("198.51.100.20", 3000)


class Net:
    """Hand-driven delivery between three agents; ``blocked`` drops datagrams between a and b."""

    def __init__(self, limits: RelayLimits | None = None, volunteer: bool = True) -> None:
        cfg = OverlayConfig(stabilize_interval=1e9)
        mk = lambda seed: OverlayNode(random.Random(seed).getrandbits(256), cfg, rng=random.Random(seed))
        self.relay = NatAgent(mk(1), relay_volunteer=volunteer, limits=limits or RelayLimits())
        self.a, self.b = NatAgent(mk(2)), NatAgent(mk(3))
        self.addr = {R_ADDR: self.relay, A_ADDR: self.a, B_ADDR: self.b}
        self.blocked = False
        self.low_ttl_sent = 0
        self.now = 0.0

    def pump(self) -> None:
        for _ in range(50):
            moved = False
            for src, agent in self.addr.items():
                for item in agent.node.drain_outbox():
                    dst, data = item[0], item[1]
                    if len(item) > 2:  # a low-TTL punch: opens the sender's NAT, reaches nobody
                        self.low_ttl_sent += 1
                        continue
                    if self.blocked and {src, dst} == {A_ADDR, B_ADDR}:
                        continue
                    self.addr[dst].node.receive_datagram(data, src, self.now)
                    moved = True
            if not moved:
                return

    def run(self, until: float) -> None:
        while True:
            t = min(ag.node.next_deadline() for ag in self.addr.values())
            if t > until:
                self.now = until
                return
            self.now = max(self.now, t)
            for ag in self.addr.values():
                if ag.node.next_deadline() <= self.now:
                    ag.node.tick(self.now)
            self.pump()

    def events(self, agent, kind):
        return [e for e in agent.node.events if isinstance(e, kind)]

    def setup(self) -> None:
        self.a.register(R_ADDR, 0.0)
        self.b.register(R_ADDR, 0.0)
        self.pump()
        self.a.connect(self.b.node.id, 0.0)
        self.pump()


def test_register__reports_reflexive_address():
    net = Net()
    net.setup()
    assert [e.addr for e in net.events(net.a, Registered)] == [A_ADDR]
    assert net.relay.registry[net.b.node.id][0] == B_ADDR


def test_open_path__punches_succeed__direct_both_ways_with_a_low_ttl_first():
    net = Net()
    net.setup()
    net.run(PUNCH_SYNC_S + 0.01)
    assert net.low_ttl_sent == 2  # one per end, before the real punches
    assert [(e.kind, e.addr) for e in net.events(net.a, PathUp)] == [("direct", B_ADDR)]
    assert [(e.kind, e.addr) for e in net.events(net.b, PathUp)] == [("direct", A_ADDR)]
    assert net.a.send(net.b.node.id, b"hi", net.now) == "direct"
    net.pump()
    assert [(e.data, e.via) for e in net.events(net.b, DataReceived)] == [(b"hi", "direct")]


def test_blocked_path__falls_back_to_relay__then_upgrades_when_direct_works():
    net = Net()
    net.blocked = True
    net.setup()
    net.run(PUNCH_SYNC_S + PUNCH_TIMEOUT_S + 0.5)
    assert [e.kind for e in net.events(net.a, PathUp)] == ["relay"]
    assert net.a.send(net.b.node.id, b"via relay", net.now) == "relay"
    net.pump()
    assert [(e.data, e.via) for e in net.events(net.b, DataReceived)] == [(b"via relay", "relay")]
    assert net.relay.stats["relayed_bytes"] == len(b"via relay")
    net.blocked = False  # e.g. a NAT rebooted into a friendlier mode: the retry finds it
    net.run(net.now + RETRY_DIRECT_S + PUNCH_SYNC_S + 0.5)
    assert [e.kind for e in net.events(net.a, PathUp)] == ["relay", "direct"]
    assert net.a.path(net.b.node.id) == "direct"


def test_relay__byte_budget__ends_session():
    net = Net(limits=RelayLimits(max_bytes=10))
    net.blocked = True
    net.setup()
    net.run(PUNCH_SYNC_S + PUNCH_TIMEOUT_S + 0.5)
    net.a.send(net.b.node.id, b"12345678", net.now)
    net.pump()
    net.a.send(net.b.node.id, b"12345678", net.now)  # over budget: dropped, session ended
    net.pump()
    assert [e.data for e in net.events(net.b, DataReceived)] == [b"12345678"]
    assert net.relay.sessions == {}
    assert net.events(net.a, PathDown) and net.a.path(net.b.node.id) is None


def test_relay__time_budget__ends_session():
    net = Net(limits=RelayLimits(max_seconds=5.0))
    net.blocked = True
    net.setup()
    net.run(PUNCH_SYNC_S + PUNCH_TIMEOUT_S + 0.5)
    assert net.relay.sessions
    net.run(net.now + 5.0)
    assert net.relay.sessions == {} and net.events(net.b, PathDown)


def test_relay__not_a_volunteer__refuses():
    net = Net(volunteer=False)
    net.blocked = True
    net.setup()
    net.run(PUNCH_SYNC_S + PUNCH_TIMEOUT_S + 0.5)
    assert net.events(net.a, PathDown) and net.relay.stats["relay_refused"] == 1


def test_unintroduced_punch__ignored():
    net = Net()
    stranger = wire.encode(wire.Msg(wire.NAT, 99, sub=6))  # PUNCH from someone never introduced
    net.a.node.receive_datagram(stranger, ("10.9.9.9", 9), 0.0)
    assert net.a.node.drain_outbox() == []


def test_keepalive__registration_refreshed():
    net = Net()
    net.setup()
    net.run(PUNCH_SYNC_S + 0.01)
    seen = net.relay.registry[net.a.node.id][1]
    net.run(KEEPALIVE_S + 1)
    assert net.relay.registry[net.a.node.id][1] > seen
