"""The client's standby choice around failovers (agents.client.agent.ClientAgent), with fake ports.

The real tunnel, control connection and chain are exercised by tests/e2e/test_failover_e2e.py; here
only the choice of which node gets a channel opened ahead of need, which the e2e runs cannot force.
"""

import threading
from types import SimpleNamespace

import pytest

from agents.client import agent as agent_module
from agents.client.agent import ClientAgent, ConnectError, Route


class FakeChain:
    def __init__(self):
        self.opened: list[str] = []
        self.closing: list[str] = []
        self.closed = threading.Event()

    def open_channel(self, candidate, deposit):
        self.opened.append(candidate.node.node_id.decode())
        return SimpleNamespace(channel_id=candidate.node.node_id, deposit=deposit)

    def start_close(self, channel):
        self.closing.append(channel.channel_id.decode())
        self.closed.set()


class FakeKillSwitch:
    def __init__(self):
        self.endpoints = []

    def set_endpoints(self, endpoints):
        self.endpoints = list(endpoints)


class FakeConn:
    def close(self):
        pass


class ScriptedAgent(ClientAgent):
    """_bring_up succeeds for the nodes in ``alive`` (a session record only), fails for the rest."""

    def __init__(self, alive: set[str], **kwargs):
        super().__init__(tunnel=None, chain=FakeChain(), killswitch=FakeKillSwitch(), budget=100, **kwargs)
        self.alive = alive

    def _bring_up(self, route):
        name = route.candidate.node.node_id.decode()
        if name not in self.alive:
            raise ConnectError(f"{name} does not answer")
        if route.channel is None:
            route.channel = self.chain.open_channel(route.candidate, self.budget)
        self.session = SimpleNamespace(route=route, conn=FakeConn())

    def _session_summary(self, session):
        return {"node_id": session.route.candidate.node.node_id.decode()}


def _route(name: str) -> Route:
    node = SimpleNamespace(node_id=name.encode(), wg_public_key=name.encode())
    return Route(SimpleNamespace(node=node), (f"192.0.2.{ord(name[-1])}", 51820))


def _connected(alive, names=("a", "b", "c")):
    """Connected through the first of ``names``, which then dies unless it is in ``alive``."""
    agent = ScriptedAgent({names[0]})
    routes = [_route(n) for n in names]
    agent._bring_up(routes[0])
    agent.alive = set(alive)
    agent.plan, agent.spare = list(routes), routes[1:]
    agent._prepare_standby()
    return agent


def _fail_over(agent):
    agent.chain.closed.clear()
    agent.failover("silent")
    assert agent.chain.closed.wait(5)
    # _after_failover refills the standby right after the close; wait for that thread's lock.
    with agent.lock:
        pass


def test_connect__next_route_is_the_standby_with_its_channel_open():
    agent = _connected({"a", "b", "c"})
    assert agent.standby.candidate.node.node_id == b"b"
    assert agent.chain.opened == ["a", "b"]
    assert agent.killswitch.endpoints == [agent.session.route.endpoint, agent.standby.endpoint]


def test_failover__the_node_just_left_gets_no_new_channel():
    agent = _connected({"b", "c"})
    _fail_over(agent)
    assert agent.session.route.candidate.node.node_id == b"b"
    assert agent.chain.closing == ["a"]
    # The refill takes c; a, just seen dead, gets no channel (it would lock a deposit for nothing).
    assert agent.standby.candidate.node.node_id == b"c"
    assert agent.chain.opened == ["a", "b", "c"]


def test_failover__only_the_dead_node_left__no_standby_until_the_pause_passes(monkeypatch):
    agent = _connected({"b"}, names=("a", "b"))
    _fail_over(agent)
    assert agent.session.route.candidate.node.node_id == b"b"
    assert agent.standby is None and agent.chain.opened == ["a", "b"]
    assert agent.killswitch.endpoints == [agent.session.route.endpoint]
    # Once RECENTLY_LEFT_S has passed, a is a standby candidate again (it may have come back).
    monkeypatch.setattr(agent_module, "RECENTLY_LEFT_S", 0.0)
    agent._prepare_standby()
    assert agent.standby.candidate.node.node_id == b"a"
    assert agent.chain.opened == ["a", "b", "a"]


def test_failover__nothing_else_left__the_node_just_left_is_tried_again():
    agent = _connected({"a", "b"}, names=("a", "b"))
    _fail_over(agent)  # a -> b; a is "recently left"
    agent.alive = {"a"}  # b dies, a came back: the only way out is the node left a moment ago
    agent.standby = None
    agent.spare = []
    _fail_over(agent)
    assert agent.session.route.candidate.node.node_id == b"a"
    assert [f["to"] for f in agent.failovers] == [b"b".hex(), b"a".hex()]


def test_failover__the_only_node_came_back__same_channel_kept_not_closed():
    """A client pinned to one node (`--node`) whose node went silent and answers again: the channel
    it had is still open, so no new deposit is locked and no close is started."""
    agent = _connected({"a"}, names=("a",))
    channel = agent.session.route.channel
    agent.failover("silent")
    assert agent.session.route.candidate.node.node_id == b"a"
    assert agent.session.route.channel is channel and agent.chain.opened == ["a"]
    for _ in range(100):  # _after_failover runs in its own thread
        if "closed" in agent.history[-1]:
            break
        threading.Event().wait(0.01)
    assert agent.history[-1]["closed"] == "kept" and agent.chain.closing == []


class CountingTunnel:
    """peer_counters: what the tunnel's receive thread has counted by the second look."""

    def __init__(self, rx: int):
        self.rx = rx

    def peer_counters(self, key):
        return self.rx, 0


class QuietConn:
    def recv(self, n):
        raise BlockingIOError


@pytest.mark.parametrize("late_rx, dead", [(500, False), (100, True)])
def test_dead_node__looked_at_again_before_failing_over(late_rx, dead):
    """A node found silent is looked at once more a moment later: on a loaded machine the client
    itself may have stalled, with the node's bytes not yet counted by the tunnel's receive thread."""
    agent = ScriptedAgent(set())
    agent.tunnel = CountingTunnel(late_rx)
    live = agent_module.Liveness(dead_after_s=1.5)
    live.heard(100, agent_module.time.monotonic() - 2.0)  # last heard 2 s ago: dead at first look
    session = SimpleNamespace(liveness=live, conn=QuietConn(), route=_route("a"))
    assert live.dead(agent_module.time.monotonic()) is not None
    assert (agent._dead_after_all(session) is not None) is dead


def test_failover__every_node_dead__stalls_then_waits_before_trying_again():
    agent = _connected({"a"}, names=("a", "b"))
    agent.alive = set()
    agent.failover("silent")
    assert agent.failovers == []
    assert agent._retry_at > 0
    tried = list(agent.chain.opened)
    agent.failover("silent")  # inside the pause: nothing is tried
    assert agent.chain.opened == tried


@pytest.fixture(autouse=True)
def _no_real_sleeps(monkeypatch):
    monkeypatch.setattr(agent_module, "SETUP_TIMEOUT_S", 0.1)
