"""Routing state of one node: predecessor, successor list and long-range links.

Long-range links are **Chord fingers** (Stoica et al., "Chord", SIGCOMM 2001): finger ``i`` is the
first live node at or after ``self + 2**i``. Why fingers rather than Symphony's harmonic links:

* hops: greedy routing over fingers halves the remaining distance per hop, giving ~0.5*log2(N)
  mean hops (Chord paper, section 6.4), which is the issue's goal; Symphony with k links needs
  O(log^2(N)/k) hops and would need ~log N links to match it anyway;
* broadcast: fingers partition the ring into disjoint, exponentially growing ranges, which is exactly
  what the recursive-partitioning broadcast of El-Ansary et al. ("Efficient broadcast in structured P2P
  networks", IPTPS 2003) needs for N-1 messages in ~log2(N) rounds; random harmonic links do not give a
  depth bound;
* determinism: a finger's correct value is checkable (the successor of a fixed point), so stale links
  are detected and repaired by lookups, and a finger can be learned from any node we hear from.

Fingers below the successor list's span equal successors and are not stored, so a node keeps about
``log2(N / SUCCESSORS)`` fingers plus ``SUCCESSORS`` successors: compact enough for a 10,000-node
in-process simulation.
"""

from __future__ import annotations

from .ids import ID_BITS, RING, in_half_open, in_open
from .wire import Contact

__all__ = ["SUCCESSORS", "RoutingTable"]

# Successor list length. With a fraction p of nodes failing between two stabilisations, the ring
# breaks only if all r successors fail: p**r. r=16 gives 1e-16 at p=10% (the churn rate);
# 16 contacts also fit one NEIGHBOURS datagram (wire.MAX_CONTACTS).
SUCCESSORS = 16


class RoutingTable:
    """Predecessor, successors and fingers of one node; pure data, no I/O.

    Args:
        self_id: this node's ring id.
        successors: successor list length.
    """

    __slots__ = ("self_id", "successors", "predecessor", "pred2", "pred_lost", "fingers", "r", "admit")

    def __init__(self, self_id: int, successors: int = SUCCESSORS) -> None:
        self.self_id = self_id
        self.r = successors
        self.successors: list[Contact] = []
        self.predecessor: Contact | None = None
        # the predecessor's predecessor (sent with NOTIFY): when the predecessor dies, this node
        # becomes responsible for (pred2, self] at once, without waiting for stabilisation
        self.pred2: Contact | None = None
        self.pred_lost = False  # our predecessor stopped answering and no other has notified us yet
        self.fingers: dict[int, Contact] = {}
        # ids allowed into the table: ``admit(node_id) -> bool`` (not revoked; registered with stake or a
        # certified mesh member when the overlay authenticates senders); None admits every id
        self.admit = None

    def admits(self, node_id: int) -> bool:
        """Whether ``node_id`` may be a successor, predecessor or finger (see :attr:`admit`)."""
        return self.admit is None or self.admit(node_id)

    # ------------------------------------------------------------------ queries

    def contacts(self):
        """Every distinct known contact (successors, fingers, predecessor)."""
        seen = {}
        for c in self.successors:
            seen[c.node_id] = c
        for c in self.fingers.values():
            seen.setdefault(c.node_id, c)
        if self.predecessor is not None:
            seen.setdefault(self.predecessor.node_id, self.predecessor)
        return seen.values()

    def find(self, node_id: int) -> Contact | None:
        """The contact with this id, if known."""
        for c in self.contacts():
            if c.node_id == node_id:
                return c
        return None

    def effective_predecessor(self, exclude=(), bound: int | None = None) -> Contact | int | None:
        """Lower end of this node's range.

        The predecessor; if it is unknown or excluded (the asker found it dead), the predecessor's
        predecessor; if that is excluded too or unknown, ``bound``: the id of a live node the asker
        was referred by, which believes the key lies between itself and us (a claim by bound is
        tentative: see :meth:`ownership`). Returns a Contact, an int (bound) or None.
        """
        p = self.predecessor
        if p is not None and p.node_id not in exclude:
            return p
        p2 = self.pred2
        if p2 is not None and p2.node_id not in exclude and p2.node_id != self.self_id:
            return p2
        return bound

    def owns(self, key: int, exclude=(), bound: int | None = None) -> bool:
        """Whether ``key`` is in ``(predecessor, self]``, i.e. this node is responsible for it.

        A node that knows nobody owns the whole ring; one that knows others but no live predecessor
        claims nothing (the asker tries elsewhere) rather than guess.
        """
        return self.ownership(key, exclude, bound) > 0

    def ownership(self, key: int, exclude=(), bound: int | None = None) -> int:
        """0: not ours; 1: ours (by a known live predecessor); 2: probably ours, going only by the
        asker's ``bound`` because our predecessors are dead (a node that joined since may own it)."""
        p = self.effective_predecessor(exclude, bound)
        if p is None:
            return 0 if self.successors else 1
        if isinstance(p, int):
            return 2 if in_half_open(key, p, self.self_id) else 0
        return 1 if in_half_open(key, p.node_id, self.self_id) else 0

    def predecessor_guess(self, key: int, exclude=()) -> list[Contact]:
        """Point *back* at our predecessor (or, if it is dead, its predecessor) when it lies between
        the key and us."""
        p = self.predecessor
        if p is None or p.node_id in exclude:
            p = self.pred2
        if p is None or p.node_id in exclude or not in_open(p.node_id, key, self.self_id):
            return []
        me = self.self_id
        if (me - key) % RING > (key - me) % RING:  # the key is ahead of us, not behind
            return []
        return [p]

    def owner_guess(self, key: int, exclude=(), n: int = 3) -> list[Contact]:
        """If ``key`` falls within the successor list's span, the successors likely to own it."""
        s = [c for c in self.successors if c.node_id not in exclude]
        for i, c in enumerate(s):
            if in_half_open(key, self.self_id, c.node_id):
                return s[i : i + n]
        return []

    def closest_preceding(self, key: int, exclude=(), n: int = 3) -> list[Contact]:
        """Up to ``n`` known contacts in ``(self, key)``, closest to ``key`` first."""
        cands = [
            c for c in self.contacts() if c.node_id not in exclude and in_open(c.node_id, self.self_id, key)
        ]
        cands.sort(key=lambda c: (key - c.node_id) % RING)
        return cands[:n]

    def links(self) -> list[Contact]:
        """Distinct successors and fingers in clockwise order from this node (broadcast fan-out)."""
        seen = {}
        for c in self.successors:
            seen[c.node_id] = c
        for c in self.fingers.values():
            seen.setdefault(c.node_id, c)
        me = self.self_id
        return sorted(seen.values(), key=lambda c: (c.node_id - me) % RING)

    def finger_indices(self) -> list[int]:
        """Finger indices worth maintaining: those whose target lies beyond the successor list."""
        if not self.successors:
            return []
        span = (self.successors[-1].node_id - self.self_id) % RING
        return list(range(max(span.bit_length() - 1, 0), ID_BITS))

    def finger_target(self, i: int) -> int:
        """The point ``self + 2**i`` whose successor finger ``i`` should be."""
        return (self.self_id + (1 << i)) % RING

    # ------------------------------------------------------------------ updates

    def observe(self, c: Contact) -> None:
        """Learn from a node we just heard from directly (so it is alive)."""
        me = self.self_id
        if c.node_id == me or not self.admits(c.node_id):
            return
        d = (c.node_id - me) % RING
        p = self.predecessor
        if p is not None and p.node_id == c.node_id and p.addr != c.addr:
            self.predecessor = c
        # successor list: insert only inside the list's span (appending a far node to a short list
        # would claim that nothing lies in between); stabilisation extends the list
        s = self.successors
        for i, x in enumerate(s):
            if x.node_id == c.node_id:
                if x.addr != c.addr:
                    s[i] = c
                break
        else:
            if not s or d < (s[-1].node_id - me) % RING:
                s.append(c)
                s.sort(key=lambda x: (x.node_id - me) % RING)
                del s[self.r :]
        # finger: c lies in [self + 2**i, self + 2**(i+1)); it is the best finger i if closer to the target.
        # Fingers inside a full successor list's span are the successors themselves: not stored.
        if len(s) >= self.r and d <= (s[-1].node_id - me) % RING:
            return
        i = d.bit_length() - 1
        cur = self.fingers.get(i)
        if cur is None or cur.node_id == c.node_id or (c.node_id - me - (1 << i)) % RING < (
            cur.node_id - me - (1 << i)
        ) % RING:
            self.fingers[i] = c

    def set_finger(self, i: int, c: Contact) -> None:
        """Set finger ``i`` to the result of a lookup for its target."""
        if c.node_id == self.self_id or not self.admits(c.node_id):
            self.fingers.pop(i, None)
        else:
            self.fingers[i] = c

    def merge_successors(self, first: Contact, theirs) -> None:
        """Stabilisation: our successor list becomes ``first`` followed by its successor list."""
        me = self.self_id
        out, seen = ([first] if self.admits(first.node_id) else []), {first.node_id, me}
        for c in theirs:
            if c.node_id not in seen and self.admits(c.node_id):
                seen.add(c.node_id)
                out.append(c)
        out.sort(key=lambda x: (x.node_id - me) % RING)
        self.successors = out[: self.r]

    def notified(self, c: Contact, its_pred: Contact | None = None) -> bool:
        """Chord's notify: adopt ``c`` as predecessor if it is closer than the current one."""
        p = self.predecessor
        if c.node_id == self.self_id or not self.admits(c.node_id):
            return False
        if its_pred is not None and not self.admits(its_pred.node_id):
            its_pred = None
        p2 = self.pred2
        if p is None and p2 is not None and p2.node_id != c.node_id and not in_open(c.node_id, p2.node_id, self.self_id):
            # Our predecessor died; its own predecessor is closer than the notifier, which has not
            # heard of it. Take it back (the caller pings it: if it is dead too, it is dropped) and
            # let the notifier learn it from us at its next stabilisation. The notifier is alive and
            # lies before it: it becomes the fallback lower end, so that if the ping finds p2 dead too
            # we claim (notifier, self] at once instead of waiting a stabilisation period for the
            # notifier to notify us again.
            self.predecessor = p2
            self.pred2 = c
            return False
        if p is None or p.node_id == c.node_id or in_open(c.node_id, p.node_id, self.self_id):
            self.predecessor = c
            self.pred_lost = False
            if its_pred is not None and its_pred.node_id not in (self.self_id, c.node_id):
                self.pred2 = its_pred
            elif p is not None and p.node_id != c.node_id:
                self.pred2 = p
            return True
        return False

    def remove(self, node_id: int) -> None:
        """Forget a node that failed to answer."""
        self.successors = [c for c in self.successors if c.node_id != node_id]
        for i in [i for i, c in self.fingers.items() if c.node_id == node_id]:
            del self.fingers[i]
        if self.predecessor is not None and self.predecessor.node_id == node_id:
            self.predecessor = None
            self.pred_lost = True
        if self.pred2 is not None and self.pred2.node_id == node_id:
            self.pred2 = None
