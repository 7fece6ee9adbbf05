"""Admission of initiators the responder has never seen (`WireGuardDevice.admit_unknown`), fake clock.

Seen from the attacker's side: the node answers a stranger only after the initiation is fully
authenticated and the owner's callback said yes; forgeries, replays and floods get nothing.
"""

import os
import types

import pytest

from agents.wireguard import HandshakeCompleted, LocalProtocolError, WireGuardDevice, generate_private_key
from agents.wireguard.cookie import CookieGenerator
from agents.wireguard.messages import INITIATION_SIZE, MESSAGE_COOKIE_REPLY, MESSAGE_RESPONSE
from agents.wireguard.noise import (
    INITIAL_HASH,
    StaticKey,
    create_initiation,
    dh,
    generate_ephemeral,
    hash_,
    load_public,
    public_key_of,
)
from agents.wireguard.perf import ip_packet
from agents.wireguard.timers import REKEY_TIMEOUT

NODE_ENDPOINT = ("192.0.2.2", 51820)
CLIENT_ENDPOINT = ("198.51.100.7", 40000)
NODE_IP = "10.9.0.1"
CLIENT_IP = "10.9.0.7"
WALL = 1_767_225_600.0


class Admissions:
    """An owner-side callback: records calls, admits with ``allowed`` up to ``bound`` distinct keys."""

    def __init__(self, allowed=(CLIENT_IP + "/32",), bound=None, device=None):
        self.allowed = None if allowed is None else list(allowed)
        self.bound = bound
        self.calls = []
        self.admitted = set()
        self.device = device
        self.lock_was_held = []

    def __call__(self, key, source, now):
        self.calls.append((key, source, now))
        if self.device is not None:
            self.lock_was_held.append(self.device._lock.locked())
        if self.allowed is None or (self.bound is not None and len(self.admitted) >= self.bound):
            return None
        self.admitted.add(key)
        return list(self.allowed)


@pytest.fixture
def node():
    return WireGuardDevice(generate_private_key(), wall_offset=WALL)


def make_client(node, private=None):
    client = WireGuardDevice(private or generate_private_key(), wall_offset=WALL)
    client.add_peer(node.public_key, allowed_ips=["0.0.0.0/0"], endpoint=NODE_ENDPOINT)
    return client


def initiation(client, node, now):
    """The client's handshake initiation to the node (asserted to be one datagram to the node)."""
    client.initiate_handshake(node.public_key, now)
    ((datagram, endpoint),) = client.drain_outbox()
    assert endpoint == NODE_ENDPOINT and len(datagram) == INITIATION_SIZE
    return datagram


def exchange(client, node, now, source=CLIENT_ENDPOINT, rounds=8):
    """Carry datagrams between the two until both are quiet; returns what the node sent, in order."""
    from_node = []
    for _ in range(rounds):
        moved = False
        for datagram, endpoint in client.drain_outbox():
            assert endpoint == NODE_ENDPOINT
            node.decapsulate(datagram, source, now)
            moved = True
        for datagram, endpoint in node.drain_outbox():
            assert endpoint == source
            from_node.append(datagram)
            client.decapsulate(datagram, NODE_ENDPOINT, now)
            moved = True
        if not moved:
            return from_node
    raise AssertionError("kept talking")


def test_unknown_initiator__admitted__handshake_and_data_both_ways(node):
    owner = Admissions(device=node)
    node.admit_unknown = owner
    client = make_client(node)
    now = 1000.0
    client.initiate_handshake(node.public_key, now)
    sent = exchange(client, node, now)
    assert sent[0][0] == MESSAGE_RESPONSE
    assert owner.calls == [(client.public_key, CLIENT_ENDPOINT, now)]
    assert owner.lock_was_held == [False]  # called outside the core's lock, as documented
    assert any(isinstance(e, HandshakeCompleted) for e in client.drain_events())
    assert HandshakeCompleted(client.public_key, now, False) in node.drain_events()
    (status,) = node.peers()
    assert status.public_key == client.public_key and status.endpoint == CLIENT_ENDPOINT
    assert status.allowed_ips == [CLIENT_IP + "/32"]

    up = ip_packet(CLIENT_IP, NODE_IP, b"hello node")
    datagram, endpoint = client.encapsulate(up, now)
    assert node.decapsulate(datagram, CLIENT_ENDPOINT, now) == up
    down = ip_packet(NODE_IP, CLIENT_IP, b"hello client")
    datagram, endpoint = node.encapsulate(down, now)
    assert endpoint == CLIENT_ENDPOINT
    assert client.decapsulate(datagram, NODE_ENDPOINT, now) == down
    assert node.peer_counters(client.public_key) == (status.rx_bytes + 64, status.tx_bytes + 64)
    assert node.drop_counters == {} and client.drop_counters == {}


def test_unknown_initiator__admitted_address__only_its_allowed_ips_accepted(node):
    node.admit_unknown = Admissions()
    client = make_client(node)
    client.initiate_handshake(node.public_key, 1000.0)
    exchange(client, node, 1000.0)
    spoofed = ip_packet("10.9.0.8", NODE_IP, b"not my address")
    datagram, _ = client.encapsulate(spoofed, 1000.0)
    assert node.decapsulate(datagram, CLIENT_ENDPOINT, 1000.0) is None
    assert node.drop_counters == {"allowed_ips": 1}


def test_unknown_initiator__refused__no_response_drop_counted(node):
    owner = Admissions(allowed=None)
    node.admit_unknown = owner
    client = make_client(node)
    assert node.decapsulate(initiation(client, node, 1000.0), CLIENT_ENDPOINT, 1000.0) is None
    assert node.drain_outbox() == [] and node.peers() == []
    assert node.drop_counters == {"unknown_peer": 1}
    assert len(owner.calls) == 1


def test_unknown_initiator__no_callback__dropped_as_before(node):
    client = make_client(node)
    node.decapsulate(initiation(client, node, 1000.0), CLIENT_ENDPOINT, 1000.0)
    assert node.drain_outbox() == [] and node.peers() == []
    assert node.drop_counters == {"unknown_peer": 1}


def _forged_initiation(node, claimed_public, mode):
    """An initiation claiming ``claimed_public`` by someone without its private key.

    The encrypted static is valid (it only needs DH(ephemeral, node key), which anyone can compute);
    the timestamp is sealed under a guessed static-static key ("wrong_key"), or is random bytes.
    """
    claimed = types.SimpleNamespace(public=claimed_public)
    ephemeral = generate_ephemeral()
    message, _ = create_initiation(claimed, load_public(node.public_key), hash_(INITIAL_HASH + node.public_key),
                                   os.urandom(32), 7, os.urandom(12), ephemeral)
    if mode == "garbage":
        body = bytearray(message)
        body[88:116] = os.urandom(28)  # encrypted timestamp: 12 bytes + 16-byte tag
        message = bytes(body)
    return CookieGenerator(node.public_key).add_macs(message, 0.0)


@pytest.mark.parametrize("mode", ["wrong_key", "garbage"])
def test_forged_initiation__static_key_without_private_key__never_reaches_callback(node, mode):
    owner = Admissions()
    node.admit_unknown = owner
    victim = public_key_of(generate_private_key())
    node.decapsulate(_forged_initiation(node, victim, mode), CLIENT_ENDPOINT, 1000.0)
    assert owner.calls == [] and node.drain_outbox() == [] and node.peers() == []
    assert node.drop_counters == {"decrypt_failed": 1}


def test_initiation__claims_node_own_key__refused_without_callback():
    owner = Admissions()
    private = generate_private_key()
    node = WireGuardDevice(private, wall_offset=WALL, admit_unknown=owner)
    me = StaticKey(private)
    # Even with the node's own private key (which no attacker has) "itself" is never admitted.
    message, _ = create_initiation(me, me.public, me.responder_hash, dh(me.private, me.public), 1,
                                   bytes(range(12)), generate_ephemeral())
    node.decapsulate(CookieGenerator(node.public_key).add_macs(message, 0.0), CLIENT_ENDPOINT, 1000.0)
    assert owner.calls == [] and node.peers() == [] and node.drop_counters == {"unknown_peer": 1}


def test_initiation__replayed_after_admission__refused(node):
    owner = Admissions()
    node.admit_unknown = owner
    client = make_client(node)
    first = initiation(client, node, 1000.0)
    node.decapsulate(first, CLIENT_ENDPOINT, 1000.0)
    assert len(node.drain_outbox()) == 1
    node.decapsulate(first, ("203.0.113.9", 1), 1060.0)  # the attacker replays it a minute later
    assert node.drain_outbox() == []
    assert node.drop_counters == {"replayed_initiation": 1}
    assert len(owner.calls) == 1
    assert node.peers()[0].endpoint == CLIENT_ENDPOINT  # the replay did not move the peer


def test_flood__beyond_callers_bound__adds_nothing(node):
    owner = Admissions(bound=3)
    node.admit_unknown = owner
    clients = [make_client(node) for _ in range(10)]
    answered = 0
    for i, client in enumerate(clients):
        node.decapsulate(initiation(client, node, 1000.0), ("198.51.100.7", 40000 + i), 1000.0)
        answered += len(node.drain_outbox())
    assert answered == 3 and len(owner.calls) == 10
    assert {s.public_key for s in node.peers()} == {c.public_key for c in clients[:3]}
    assert node.drop_counters == {"unknown_peer": 7}


def test_admitted_peer_removed__returns_only_through_callback(node):
    owner = Admissions()
    node.admit_unknown = owner
    client = make_client(node)
    now = 1000.0
    first = initiation(client, node, now)
    node.decapsulate(first, CLIENT_ENDPOINT, now)
    exchange(client, node, now)
    old_session, _ = client.encapsulate(ip_packet(CLIENT_IP, NODE_IP, b"old"), now)
    node.remove_peer(client.public_key)
    assert node.decapsulate(old_session, CLIENT_ENDPOINT, now) is None
    node.decapsulate(first, CLIENT_ENDPOINT, now + 1)  # replay of the pre-removal initiation
    assert node.drain_outbox() == [] and len(owner.calls) == 1
    assert node.drop_counters == {"unknown_receiver": 1, "replayed_initiation": 1}

    owner.allowed = None  # the owner now says no: the fresh initiation is refused
    now += REKEY_TIMEOUT + 1
    node.decapsulate(initiation(client, node, now), CLIENT_ENDPOINT, now)
    assert node.drain_outbox() == [] and node.peers() == [] and len(owner.calls) == 2

    owner.allowed = [CLIENT_IP + "/32"]
    now += REKEY_TIMEOUT + 1
    client.initiate_handshake(node.public_key, now)
    assert exchange(client, node, now)[0][0] == MESSAGE_RESPONSE
    assert len(owner.calls) == 3 and [s.public_key for s in node.peers()] == [client.public_key]
    datagram, _ = client.encapsulate(ip_packet(CLIENT_IP, NODE_IP, b"new"), now)
    assert node.decapsulate(datagram, CLIENT_ENDPOINT, now) == ip_packet(CLIENT_IP, NODE_IP, b"new")


def test_under_load__unknown_without_mac2__cookie_first_callback_after_mac2(node):
    owner = Admissions()
    node.admit_unknown = owner
    node.under_load = True
    client = make_client(node)
    now = 1000.0
    node.decapsulate(initiation(client, node, now), CLIENT_ENDPOINT, now)
    ((reply, endpoint),) = node.drain_outbox()
    assert reply[0] == MESSAGE_COOKIE_REPLY and endpoint == CLIENT_ENDPOINT
    assert owner.calls == [] and node.peers() == []
    client.decapsulate(reply, NODE_ENDPOINT, now)
    now += REKEY_TIMEOUT + 0.1
    with_mac2 = initiation(client, node, now)
    assert with_mac2[-16:] != bytes(16)
    node.decapsulate(with_mac2, ("198.51.100.99", 40000), now)  # a cookie is bound to its source
    assert node.drain_outbox()[0][0][0] == MESSAGE_COOKIE_REPLY and owner.calls == []
    node.decapsulate(with_mac2, CLIENT_ENDPOINT, now)
    ((response, _),) = node.drain_outbox()
    assert response[0] == MESSAGE_RESPONSE
    assert owner.calls == [(client.public_key, CLIENT_ENDPOINT, now)]


def test_callback__returns_bad_prefix__local_error_and_nothing_added(node):
    node.admit_unknown = Admissions(allowed=["not-a-prefix"])
    client = make_client(node)
    with pytest.raises(LocalProtocolError):
        node.decapsulate(initiation(client, node, 1000.0), CLIENT_ENDPOINT, 1000.0)
    assert node.peers() == [] and node.drain_outbox() == []


def test_constructor_callback__admits():
    owner = Admissions(allowed=["fd00::7/128"])
    responder = WireGuardDevice(generate_private_key(), wall_offset=WALL, admit_unknown=owner)
    client = make_client(responder)
    client.initiate_handshake(responder.public_key, 1000.0)
    assert exchange(client, responder, 1000.0)[0][0] == MESSAGE_RESPONSE
    assert responder.peers()[0].allowed_ips == ["fd00::7/128"]


def test_set_allowed_ips__replaces_prefixes_keeps_session(node):
    node.admit_unknown = Admissions()
    client = make_client(node)
    client.initiate_handshake(node.public_key, 1000.0)
    exchange(client, node, 1000.0)
    node.set_allowed_ips(client.public_key, ["10.20.0.7/32"])
    assert node.peers()[0].allowed_ips == ["10.20.0.7/32"]
    moved = ip_packet("10.20.0.7", NODE_IP, b"new address, same session")
    datagram, _ = client.encapsulate(moved, 1000.0)
    assert node.decapsulate(datagram, CLIENT_ENDPOINT, 1000.0) == moved
    with pytest.raises(LocalProtocolError):
        node.set_allowed_ips(client.public_key, ["10.30.0.1/32", "bad"])
    assert node.peers()[0].allowed_ips == ["10.20.0.7/32"]
    with pytest.raises(LocalProtocolError):
        node.set_allowed_ips(os.urandom(32), [])


def test_peer_counters__unknown_peer__none(node):
    assert node.peer_counters(os.urandom(32)) is None
