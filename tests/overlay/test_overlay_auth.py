"""Overlay sender authentication: ids proven by their keys, tags on every datagram, and what it does
against an eclipse (simulator, 10 % attackers)."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.overlay import wire
from agents.overlay.auth import OverlayAuth
from agents.overlay.core import OverlayNode
from agents.overlay.errors import RemoteProtocolError
from agents.overlay.trust import eclipse, owner_vetter
from agents.overlay.wire import Contact, Msg

A_ADDR, B_ADDR, EVE_ADDR = ("10.0.0.1", 4000), ("10.0.0.2", 4000), ("10.0.0.66", 4000)


def _host(addr):
    auth = OverlayAuth(os.urandom(32))
    node = OverlayNode(auth.id)
    auth.attach(node)
    node.start_alone()
    return node


def _pump(hosts, now, rounds=6):
    """Deliver every queued datagram between ``hosts`` (addr -> node) until quiet."""
    for _ in range(rounds):
        moved = False
        for src, node in hosts.items():
            for item in node.drain_outbox():
                dst, data = item[0], item[1]
                if dst in hosts:
                    hosts[dst].receive_datagram(data, src, now)
                    moved = True
        if not moved:
            return


def test_auth__first_contact__handshake_then_tagged_ping_pong():
    a, b = _host(A_ADDR), _host(B_ADDR)
    learned = []
    a.ping(Contact(0, B_ADDR), 0.0, lambda sender, now: learned.append(sender.node_id))
    _pump({A_ADDR: a, B_ADDR: b}, 0.0)
    assert learned == [b.id]  # the PONG came back, from the id B's key makes
    assert a.auth.peer_at(B_ADDR) == b.id and b.auth.peer_at(A_ADDR) == a.id
    assert a.auth.stats["handshakes"] == 1


def test_auth__spoofed_sender_id__dropped():
    a, b = _host(A_ADDR), _host(B_ADDR)
    a.ping(Contact(0, B_ADDR), 0.0)
    _pump({A_ADDR: a, B_ADDR: b}, 0.0)
    # B's session with A's address is keyed to A's id: a datagram naming another id with A's tag fails
    forged = wire.encode(Msg(wire.PING, 12345, 1))
    tagged = a.auth.seal([(B_ADDR, forged)])[0][1]
    before = b.stats["dropped"]
    b.receive_datagram(tagged, A_ADDR, 1.0)
    assert b.stats["dropped"] == before + 1
    assert not any(item[1][0] == wire.PONG for item in b.drain_outbox())


def test_auth__tampered_or_untagged_or_replayed_elsewhere__dropped_with_one_reset():
    a, b = _host(A_ADDR), _host(B_ADDR)
    a.ping(Contact(0, B_ADDR), 0.0)
    _pump({A_ADDR: a, B_ADDR: b}, 0.0)
    good = a.auth.seal([(B_ADDR, wire.encode(Msg(wire.PING, a.id, 9)))])[0][1]
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    for data, src in ((tampered, A_ADDR), (wire.encode(Msg(wire.PING, a.id, 9)), A_ADDR), (good, EVE_ADDR)):
        with pytest.raises(RemoteProtocolError):
            b.auth.open(data, src, 2.0)
    b.receive_datagram(good, A_ADDR, 2.0)  # the genuine one from A's address passes
    assert any(item[1][0] == wire.PONG for item in b.drain_outbox())


def test_auth__peer_restarted__reset_then_new_handshake():
    a, b = _host(A_ADDR), _host(B_ADDR)
    hosts = {A_ADDR: a, B_ADDR: b}
    a.ping(Contact(0, B_ADDR), 0.0)
    _pump(hosts, 0.0)
    b2 = OverlayNode(b.id)  # B restarts with the same key: its sessions are gone
    OverlayAuth(b.auth._private.private_bytes_raw()).attach(b2)
    b2.start_alone()
    hosts[B_ADDR] = b2
    a.ping(Contact(b.id, B_ADDR), 1.0)
    _pump(hosts, 1.0)  # dropped, RESET
    assert a.auth.stats["resets"] == 1
    got = []
    a.ping(Contact(b.id, B_ADDR), 2.0, lambda s, n: got.append(s.node_id))
    _pump(hosts, 2.0)
    assert got == [b.id]


def test_owner_vetter__claim_past_a_known_node__refused():
    a = _host(A_ADDR)
    key = (a.id + 1000) % (1 << 256)
    a.table.observe(Contact(key + 10, ("10.0.0.9", 1)))
    vet = owner_vetter(a)
    assert vet(key, key + 10) and not vet(key, key + 50)
    assert vet(key + 50, key + 50)  # a node owns its own id: nothing can lie between


def test_eclipse__ten_percent_attackers__unauthenticated_eclipsed__authenticated_all_found():
    today = eclipse(200, seed=2, lookups=120, authenticated=False, strategy="spoof")
    authed = [eclipse(200, seed=2, lookups=120, authenticated=True, strategy=s) for s in ("spoof", "claim")]
    assert today["eclipsed"] > 0.1, today
    assert all(r["success"] >= 0.99 and r["eclipsed"] == 0 for r in authed), authed


def test_auth__first_datagram_long_after_start__handshake_not_expired_by_a_stale_clock():
    # the outbox carries no time: a contact's handshake is timed from the next open/tick, so a tick
    # right after the first send (at a wall-clock time far from the auth layer's last one) keeps it
    a, b = _host(A_ADDR), _host(B_ADDR)
    now = 1_800_000_000.0
    got = []
    a.ping(Contact(0, B_ADDR), now, lambda s, n: got.append(s.node_id))
    hello = a.drain_outbox()
    a.tick(now + 0.1)
    assert a.auth._pending, "the handshake was dropped before its reply could come"
    for dst, data in hello:
        b.receive_datagram(data, A_ADDR, now + 0.2)
    for dst, data in b.drain_outbox():
        a.receive_datagram(data, B_ADDR, now + 0.3)
    _pump({A_ADDR: a, B_ADDR: b}, now + 0.3)
    assert got == [b.id]


def test_auth__hello_with_a_low_order_key__refused_without_raising():
    from eth_utils import keccak

    b = _host(B_ADDR)
    zero = bytes(32)  # X25519 of a low-order point is all zero: cryptography raises ValueError
    hello = bytes([wire.AUTH]) + keccak(zero) + bytes(4) + b"\x01" + zero + bytes(16)
    with pytest.raises(RemoteProtocolError):
        b.auth.open(hello, EVE_ADDR, 1.0)
    assert b.auth.stats["rejected"] == 1 and b.auth.peer_at(EVE_ADDR) is None


@given(st.binary(max_size=200), st.integers(1, 3))
@settings(max_examples=300, deadline=None)
def test_auth__any_bytes__only_remote_protocol_errors(data, sub):
    b = _FUZZ_HOST
    for blob in (data, bytes([wire.AUTH]) + data[:32].ljust(32, b"\0") + bytes(4) + bytes([sub]) + data[32:]):
        try:
            b.auth.open(blob, EVE_ADDR, 1.0)
        except RemoteProtocolError:
            pass


_FUZZ_HOST = _host(B_ADDR)
