"""In-process network simulator that runs the real :class:`~agents.overlay.core.OverlayNode`.

Datagrams are the real encoded bytes; the network adds one-way latency (uniform in a range), random
loss, and churn (nodes vanish without notice; fresh nodes join through a random live peer). Time is a
discrete-event clock: nothing sleeps, so 10,000 nodes run in minutes on one core.

:meth:`SimNetwork.warm_start` builds the routing state a converged ring has (successor lists,
predecessors and fingers computed from the sorted id list), so large runs need not spend simulated
hours joining node by node; joins through the protocol are exercised by :meth:`SimNetwork.join` (used
for churn and by the tests, which grow rings from a single node).
"""

from __future__ import annotations

import bisect
import heapq
import random
from typing import Callable

from .core import Joined, OverlayConfig, OverlayNode
from .wire import Contact

__all__ = ["SimNetwork", "sim_address"]

_DELIVER, _TICK, _CALL = 0, 1, 2


def sim_address(i: int) -> tuple:
    """A distinct fake IPv4 endpoint for simulated host number ``i``."""
    return (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 4000 + (i >> 24))


class SimNetwork:
    """A simulated datagram network of overlay nodes.

    Args:
        seed: seeds latency, loss, churn and every node's rng.
        latency: (min, max) one-way delay in seconds.
        loss: probability that a datagram is dropped.
        config: the OverlayConfig every node gets.
        store_factory: called per node to build its record store (None: routing-only nodes).
        start: initial clock value (unix seconds when records with expiry times are involved).
        authenticate: every node gets an X25519 key, its id is keccak256 of the public key, and it
            proves its sender id on every datagram (:mod:`agents.overlay.auth`).
    """

    def __init__(
        self,
        seed: int = 1,
        latency: tuple = (0.01, 0.1),
        loss: float = 0.0,
        config: OverlayConfig | None = None,
        store_factory: Callable | None = None,
        start: float = 0.0,
        authenticate: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.latency = latency
        self.loss = loss
        self.config = config or OverlayConfig()
        self.store_factory = store_factory
        self.authenticate = authenticate
        self.now = float(start)
        self._live_set: set[int] = set()
        self.nodes: dict[tuple, OverlayNode] = {}
        self.addr_of: dict[int, tuple] = {}
        self.live_ids: list[int] = []  # sorted ids of nodes that have joined the ring
        self.on_event: Callable | None = None  # fn(node, event, now)
        self.delivered = 0
        self._heap: list = []
        self._seq = 0
        self._tick_at: dict[tuple, float] = {}
        self._next_host = 1

    # ------------------------------------------------------------------ scheduling

    def _push(self, t: float, kind: int, item) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, item))

    def call_at(self, t: float, fn: Callable) -> None:
        """Run ``fn(now)`` at simulated time ``t``."""
        self._push(t, _CALL, fn)

    def flush(self, addr: tuple) -> None:
        """Move a node's outbox onto the wire, hand its events out, and schedule its next tick."""
        node = self.nodes.get(addr)
        if node is None:
            return
        lo, hi = self.latency
        rnd = self.rng.random
        for item in node.drain_outbox():
            if len(item) > 2 or (self.loss and rnd() < self.loss):
                continue  # lost; low-TTL datagrams die before any peer (there are no NATs here)
            dst, data = item
            self._push(self.now + lo + (hi - lo) * rnd(), _DELIVER, (dst, addr, data))
        if node.events:
            for ev in node.drain_events():
                if isinstance(ev, Joined) and node.id not in self._live_set:
                    self._live_set.add(node.id)
                    bisect.insort(self.live_ids, node.id)
                if self.on_event is not None:
                    self.on_event(node, ev, self.now)
        nd = node.next_deadline()
        if nd < self._tick_at.get(addr, float("inf")):
            self._tick_at[addr] = nd
            self._push(nd, _TICK, addr)

    def run_until(self, t_end: float, stop: Callable | None = None) -> None:
        """Process events up to simulated time ``t_end`` (or until ``stop()`` is true)."""
        heap = self._heap
        nodes = self.nodes
        while heap and heap[0][0] <= t_end:
            t, _, kind, item = heapq.heappop(heap)
            self.now = t
            if kind == _DELIVER:
                dst, src, data = item
                node = nodes.get(dst)
                if node is None:
                    continue
                self.delivered += 1
                node.receive_datagram(data, src, t)
                self.flush(dst)
            elif kind == _TICK:
                if self._tick_at.get(item) != t:
                    continue
                del self._tick_at[item]
                node = nodes.get(item)
                if node is None:
                    continue
                node.tick(t)
                self.flush(item)
            else:
                item(t)
            if stop is not None and stop():
                return
        self.now = max(self.now, t_end)

    # ------------------------------------------------------------------ membership

    def new_node(self, node_id: int | None = None) -> OverlayNode:
        """Create a node (random id unless given) on a fresh address; it is not in the ring yet."""
        auth = None
        if self.authenticate:
            from .auth import OverlayAuth

            node_rng = random.Random(self.rng.getrandbits(64))
            auth = OverlayAuth(self.rng.getrandbits(256).to_bytes(32, "big"),
                               rng=lambda n, r=node_rng: r.getrandbits(8 * n).to_bytes(n, "big"))
            nid = auth.id
        else:
            nid = node_id if node_id is not None else self.rng.getrandbits(256)
        addr = sim_address(self._next_host)
        self._next_host += 1
        store = self.store_factory() if self.store_factory else None
        node = OverlayNode(nid, self.config, store=store, rng=random.Random(self.rng.getrandbits(64)), now=self.now)
        if auth is not None:
            auth.attach(node)
        self.nodes[addr] = node
        self.addr_of[nid] = addr
        return node

    def join(self, node: OverlayNode, via: OverlayNode | None = None) -> None:
        """Start ``node``'s join through ``via`` (a random live node if None; alone if none)."""
        addr = self.addr_of[node.id]
        if via is None and self.live_ids:
            via = self.nodes[self.addr_of[self.rng.choice(self.live_ids)]]
        if via is None:
            node.start_alone()
            self._live_set.add(node.id)
            bisect.insort(self.live_ids, node.id)
        else:
            node.bootstrap(self.addr_of[via.id], self.now)
        self.flush(addr)

    def kill(self, node: OverlayNode) -> None:
        """Remove a node without notice (a crash); datagrams to it are lost."""
        addr = self.addr_of.pop(node.id, None)
        self.nodes.pop(addr, None)
        self._tick_at.pop(addr, None)
        node.alive = False
        if node.id in self._live_set:
            self._live_set.discard(node.id)
            i = bisect.bisect_left(self.live_ids, node.id)
            if i < len(self.live_ids) and self.live_ids[i] == node.id:
                del self.live_ids[i]

    def true_owner(self, key: int) -> int:
        """The id of the live node responsible for ``key`` (its successor on the ring)."""
        ids = self.live_ids
        i = bisect.bisect_left(ids, key)
        return ids[i % len(ids)]

    def node(self, node_id: int) -> OverlayNode:
        """The node with this id."""
        return self.nodes[self.addr_of[node_id]]

    def warm_start(self, n: int) -> list[OverlayNode]:
        """Create ``n`` nodes with the routing state of a converged ring (see module docstring)."""
        nodes = [self.new_node() for _ in range(n)]
        nodes.sort(key=lambda x: x.id)
        ids = [x.id for x in nodes]
        contacts = [Contact(x.id, self.addr_of[x.id]) for x in nodes]
        r = self.config.successors
        for k, node in enumerate(nodes):
            tb = node.table
            tb.successors = [contacts[(k + j) % n] for j in range(1, min(r, n - 1) + 1)]
            tb.predecessor = contacts[(k - 1) % n] if n > 1 else None
            tb.pred2 = contacts[(k - 2) % n] if n > 2 else None
            for i in tb.finger_indices():
                j = bisect.bisect_left(ids, tb.finger_target(i)) % n
                if j != k:
                    tb.fingers[i] = contacts[j]
            node._joined = True
            self._live_set.add(node.id)
            self.flush(self.addr_of[node.id])
        self.live_ids = sorted(self._live_set)
        return nodes
