"""Whom the overlay believes: admission of ids into routing state, and plausibility of ownership claims.

With sender authentication (:mod:`agents.overlay.auth`) a host can speak only as the id its key
makes, and with :func:`admit_registered` only ids registered with stake on chain (or certified mesh
members) enter successor lists, fingers and lookups. Registered attackers can still lie in their
answers; the one lie that ends a lookup is "I own this key". :func:`owner_vetter` refuses a claim
when the asker knows a live node between the key and the claimer: the true owner is the first node at
or after the key, and since nobody can choose its id (keccak256 of a key) or speak as another, any
false claimer lies further on. The lookup then treats the liar as dead and asks on
(:meth:`agents.overlay.core.OverlayNode._lookup_step`).

:func:`eclipse` measures it in the simulator: a tenth of the nodes attack every lookup they are
asked to help with, unauthenticated (today's overlay) vs authenticated.
"""

from __future__ import annotations

import random
from typing import Callable

from .core import LookupDone, OverlayConfig
from .ids import in_open
from .sim import SimNetwork
from .wire import FOUND, Contact, Msg

__all__ = ["admit_registered", "eclipse", "guard", "owner_vetter"]


def owner_vetter(node) -> Callable[[int, int], bool]:
    """``vet(key, claimer) -> bool`` for ``node``: False when ``node``'s own table holds an admitted
    contact (or ``node`` itself, once in the ring) strictly between ``key`` and ``claimer``, or the
    claimer is not admitted."""
    tb = node.table

    def vet(key: int, claimer: int) -> bool:
        if not tb.admits(claimer):
            return False
        if claimer == key:
            return True  # nothing lies between (a PeerRecord's key is its node's own id)
        if node._joined and in_open(node.id, key, claimer):
            return False  # (a client outside the ring is no ring position: its own id proves nothing)
        return not any(in_open(c.node_id, key, claimer) for c in tb.contacts())

    return vet


def admit_registered(directory, revoked=frozenset()) -> Callable[[int], bool]:
    """Admission through an OperatorDirectory: registered (an operator, so staked) and not revoked.

    The directory caches its answers (RegistryDirectory: 30 s), so this is a dict look-up for known
    ids; an id the chain cannot be asked about now is refused, and asked about again on its next
    contact (a chain outage keeps the routing state as it is, it does not let strangers in)."""
    def admit(nid: int) -> bool:
        if nid in revoked:
            return False
        try:
            return not directory.is_revoked(nid) and directory.operator_of(nid) is not None
        except Exception:  # noqa: BLE001 - RPC errors of every kind
            return False

    return admit


def guard(node, *, revocations=None, directory=None, auth_key: bytes | None = None,
          admit: Callable[[int], bool] | None = None) -> None:
    """Put ``node`` (with a record store) under the trust rules, as every Warren host runs it.

    Args:
        revocations: an :class:`agents.overlay.revocation.RevocationList`: its ids are refused
            everywhere (datagrams, records, routing entries); the store's validator shares its set.
        directory: who is registered (routing admission with ``auth_key``).
        auth_key: the X25519 key ``node.id`` is made of: senders are authenticated
            (:mod:`agents.overlay.auth`), only admitted ids enter routing state, ownership claims
            are vetted.
        admit: admission to use instead of the directory's (the simulator's set of registered ids).
    """
    revoked = revocations.ids if revocations is not None else set()
    if revocations is not None:
        if node.store is not None:
            node.store.validator.revoked = revoked  # one set: a certificate the store applies counts too
        node.refuse = revoked.__contains__
        node.table.admit = lambda nid: nid not in revoked
    if auth_key is not None:
        from .auth import OverlayAuth

        OverlayAuth(auth_key).attach(node)  # raises if node.id is not this key's
        if admit is None:
            admit = admit_registered(directory, revoked)
    if admit is not None:
        node.table.admit = lambda nid: nid not in revoked and admit(nid)
        node.vet_owner = owner_vetter(node)


# ---------------------------------------------------------------------------------------- the attack


def _attack(node, strategy: str) -> None:
    """Make ``node`` answer every FIND as an eclipse attacker would.

    ``spoof``: claim the key's own id at our address ("the owner is (key, me)"), answering both as
    ourselves (a referral) and as the key (an ownership claim): whichever the asker expects.
    ``claim``: answer "I own it" as ourselves.
    """
    def on_find(m: Msg, sender: Contact) -> None:
        me = Contact(node.id, ("0.0.0.0", 0))
        if strategy == "spoof":
            fake = Contact(m.key, node.addr)
            node._send(sender.addr, Msg(FOUND, node.id, m.txid, flag=2, contacts=(fake,)))
            node._send(sender.addr, Msg(FOUND, m.key, m.txid, flag=1, contacts=(fake,)))
        else:
            node._send(sender.addr, Msg(FOUND, node.id, m.txid, flag=1, contacts=(me,)))

    node._on_find = on_find


def eclipse(nodes: int = 1000, seed: int = 1, *, attackers: float = 0.10, lookups: int = 500,
            authenticated: bool = True, strategy: str = "spoof", vet: bool = True) -> dict:
    """Lookups by honest nodes for random keys with an honest owner, with ``attackers`` of the nodes
    attacking (:func:`_attack`); returns ``success`` (the live owner found: its id and address),
    ``eclipsed`` (the lookup ended at an attacker), ``failed`` (no owner), ``lookups``,
    ``median_s``. ``vet=False`` leaves out the ownership check (authentication and admission only)."""
    net = SimNetwork(seed=seed, latency=(0.01, 0.15), authenticate=authenticated,
                     config=OverlayConfig(stabilize_interval=30.0, republish_interval=1e9))
    ring = net.warm_start(nodes)
    rng = random.Random(seed + 7)
    bad = set(n.id for n in rng.sample(ring, int(nodes * attackers)))
    registered = {n.id for n in ring}  # attackers bought their stake too: they are registered
    bad_addrs = {net.addr_of[i] for i in bad}
    for n in ring:
        n.addr = net.addr_of[n.id]
        if n.id in bad:
            _attack(n, strategy)
        elif authenticated:
            guard(n, admit=registered.__contains__)  # (the sim attached the auth layer itself)
            if not vet:
                n.vet_owner = None
    honest = [n for n in ring if n.id not in bad]
    done: dict = {}
    net.on_event = lambda node, ev, now: isinstance(ev, LookupDone) and done.setdefault((node.id, ev.lookup_id),
                                                                                         (ev, now))
    asks = []
    while len(asks) < lookups:
        key = rng.getrandbits(256)
        if net.true_owner(key) in bad:
            continue  # an attacker's own range: finding it is correct, not an eclipse
        n = rng.choice(honest)
        asks.append(((n.id, n.lookup(key, net.now)), key, net.now))
        net.flush(net.addr_of[n.id])
    net.run_until(net.now + 60.0)
    ok = ecl = 0
    times = []
    for ref, key, t0 in asks:
        ev, at = done.get(ref, (None, None))
        owner = ev.owner if ev else None
        if owner is None:
            continue
        times.append(at - t0)
        true = net.true_owner(key)
        if owner.node_id == true and tuple(owner.addr) in (net.addr_of[true], ("0.0.0.0", 0)):
            ok += 1
        elif tuple(owner.addr) in bad_addrs or owner.node_id in bad:
            ecl += 1
    times.sort()
    return {"lookups": lookups, "success": ok / lookups, "eclipsed": ecl / lookups,
            "failed": (lookups - ok - ecl) / lookups, "median_s": round(times[len(times) // 2], 3) if times else None,
            "authenticated": authenticated, "strategy": strategy, "vet": vet}
