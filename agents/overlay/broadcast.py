"""Ring broadcast by recursive partitioning of the id space.

El-Ansary, Alima, Brand, Haridi, "Efficient Broadcast in Structured P2P Networks" (IPTPS 2003): a node
responsible for the range ``(self, limit)`` sends the message to each of its long-range links that lies
in that range, handing link ``k`` the sub-range ``[link_k, link_{k+1})`` (the last one gets
``[link_last, limit)``). The sub-ranges are disjoint and cover the range, so with correct links every
node receives the message exactly once: N-1 messages. With Chord fingers each hop at least halves the
range, so the depth is about log2(N) rounds.

Failures: every BROADCAST is acknowledged; when a link does not acknowledge, its sender hands that
link's sub-range to the next live node it knows in it (its successors), or looks up the range's first
node, so the gap is repaired (:meth:`agents.overlay.core.OverlayNode._bcast_send`). Duplicate ids are
suppressed with a bounded memory of seen ids.

This module holds the pure part: the plan and the seen-id memory.
"""

from __future__ import annotations

from collections import OrderedDict

from .ids import in_open

__all__ = ["BroadcastState", "plan"]


def plan(self_id: int, limit: int, links) -> list[tuple]:
    """Split ``(self_id, limit)`` among ``links`` (sorted clockwise from ``self_id``).

    Args:
        self_id: the forwarding node's id.
        limit: end (exclusive) of the range this node is responsible for; ``self_id`` means the whole ring.
        links: known contacts in clockwise order from ``self_id``.

    Returns:
        ``(contact, sub_limit)`` pairs: the contact covers ``[contact, sub_limit)``.
    """
    inside = [c for c in links if in_open(c.node_id, self_id, limit)]
    out = []
    for k, c in enumerate(inside):
        sub = inside[k + 1].node_id if k + 1 < len(inside) else limit
        out.append((c, sub))
    return out


class BroadcastState:
    """Seen broadcast ids (bounded, oldest forgotten first) and counters.

    Args:
        capacity: how many ids to remember.
    """

    __slots__ = ("_seen", "capacity", "duplicates")

    def __init__(self, capacity: int = 4096) -> None:
        self._seen: OrderedDict | None = None
        self.capacity = capacity
        self.duplicates = 0

    def seen(self, bid: bytes) -> bool:
        """Whether this id was already delivered here."""
        return self._seen is not None and bid in self._seen

    def seen_add(self, bid: bytes) -> None:
        """Remember an id, forgetting the oldest beyond capacity."""
        if self._seen is None:
            self._seen = OrderedDict()
        self._seen[bid] = None
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    plan = staticmethod(plan)
