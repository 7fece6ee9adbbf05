"""Whole handshakes and transport between two devices on a fake clock."""

import os

import pytest

from agents.wireguard import (
    EndpointChanged,
    HandshakeCompleted,
    LocalProtocolError,
    WireGuardDevice,
    generate_private_key,
)
from agents.wireguard.messages import INITIATION_SIZE, RESPONSE_SIZE, TRANSPORT_MIN_SIZE
from agents.wireguard.perf import ALICE_ENDPOINT, ALICE_IP, BOB_IP, LoopbackPair, ip_packet


@pytest.fixture(params=[None, "psk"], ids=["no_psk", "psk"])
def pair(request):
    return LoopbackPair(preshared_key=os.urandom(32) if request.param else None)


def test_handshake__completes_on_both_sides(pair):
    pair.alice.initiate_handshake(pair.bob.public_key, pair.now)
    ((initiation, endpoint),) = pair.alice.drain_outbox()
    assert len(initiation) == INITIATION_SIZE and endpoint == pair.bob_endpoint
    pair.carry(pair.alice, initiation, endpoint)
    ((response, endpoint),) = pair.bob.drain_outbox()
    assert len(response) == RESPONSE_SIZE and endpoint == ALICE_ENDPOINT
    pair.carry(pair.bob, response, endpoint)
    ((keepalive, _),) = pair.alice.drain_outbox()
    assert len(keepalive) == TRANSPORT_MIN_SIZE
    assert pair.carry(pair.alice, keepalive, pair.bob_endpoint) is None
    assert pair.alice.drain_events() == [HandshakeCompleted(pair.bob.public_key, pair.now, True)]
    assert pair.bob.drain_events() == [EndpointChanged(pair.alice.public_key, pair.now, ALICE_ENDPOINT),
                                       HandshakeCompleted(pair.alice.public_key, pair.now, False)]
    assert pair.alice.drop_counters == {} and pair.bob.drop_counters == {}


def test_transport__both_ways__returns_exact_inner_packets(pair):
    pair.handshake()
    to_bob = ip_packet(ALICE_IP, BOB_IP, b"hello bob")
    datagram, endpoint = pair.alice.encapsulate(to_bob, pair.now)
    assert endpoint == pair.bob_endpoint
    assert len(datagram) == 16 + 32 + 16  # 29-byte packet padded to 32, plus the tag
    assert pair.carry(pair.alice, datagram, endpoint) == to_bob
    to_alice = ip_packet(BOB_IP, ALICE_IP, os.urandom(1000))
    assert pair.carry(pair.bob, *pair.bob.encapsulate(to_alice, pair.now)) == to_alice
    alice_view, = pair.alice.peers()
    bob_view, = pair.bob.peers()
    assert alice_view.tx_bytes == bob_view.rx_bytes > 0
    assert bob_view.tx_bytes == alice_view.rx_bytes > 0
    assert alice_view.last_handshake == bob_view.last_handshake == pair.now + 1_767_225_600.0


def test_encapsulate__no_session__queues_packet_and_sends_it_after_handshake(pair):
    packets = [ip_packet(ALICE_IP, BOB_IP, bytes([i])) for i in range(3)]
    assert all(pair.alice.encapsulate(p, pair.now) is None for p in packets)
    (initiation, _), = pair.alice.drain_outbox()  # one initiation, not three
    assert len(initiation) == INITIATION_SIZE
    pair.carry(pair.alice, initiation, pair.bob_endpoint)
    pair.deliver()
    assert pair.bob_received == packets


def test_handshake__psk_mismatch__never_completes():
    pair = LoopbackPair()
    pair.alice.add_peer(pair.bob.public_key, preshared_key=os.urandom(32), allowed_ips=[BOB_IP + "/32"],
                        endpoint=pair.bob_endpoint)
    pair.handshake()
    assert not any(isinstance(e, HandshakeCompleted) for e in pair.alice.drain_events() + pair.bob.drain_events())
    assert pair.alice.drop_counters == {"decrypt_failed": 1}


def test_initiation__replayed__refused_without_answer(pair):
    pair.alice.initiate_handshake(pair.bob.public_key, pair.now)
    ((initiation, endpoint),) = pair.alice.drain_outbox()
    pair.carry(pair.alice, initiation, endpoint)
    assert len(pair.bob.drain_outbox()) == 1
    pair.now += 60
    pair.carry(pair.alice, initiation, endpoint)
    assert pair.bob.drain_outbox() == []
    assert pair.bob.drop_counters == {"replayed_initiation": 1}


def test_initiation__more_than_50_per_second__flood_refused():
    pair = LoopbackPair()
    answered = []
    for now in [1000.0, 1000.019, 1000.041]:
        # Alice's key on a fresh device each time: her own once-per-REKEY_TIMEOUT limit does not apply.
        alice = WireGuardDevice(pair._alice_private, wall_offset=1_767_225_600.0)
        alice.add_peer(pair.bob.public_key, allowed_ips=[BOB_IP + "/32"], endpoint=pair.bob_endpoint)
        alice.initiate_handshake(pair.bob.public_key, now)
        ((initiation, _),) = alice.drain_outbox()
        pair.bob.decapsulate(initiation, ALICE_ENDPOINT, now)
        answered.append(len(pair.bob.drain_outbox()))
    assert answered == [1, 0, 1]  # 19 ms after the first: refused; 41 ms after: accepted
    assert pair.bob.drop_counters == {"initiation_flood": 1}


def test_initiation__from_unknown_key__dropped_silently():
    pair = LoopbackPair()
    stranger = WireGuardDevice(generate_private_key(), wall_offset=0.0)
    stranger.add_peer(pair.bob.public_key, allowed_ips=["0.0.0.0/0"], endpoint=pair.bob_endpoint)
    stranger.initiate_handshake(pair.bob.public_key, pair.now)
    ((initiation, _),) = stranger.drain_outbox()
    assert pair.bob.decapsulate(initiation, ("198.51.100.1", 1), pair.now) is None
    assert pair.bob.drain_outbox() == [] and pair.bob.drop_counters == {"unknown_peer": 1}


def test_transport__replayed_packet__dropped(pair):
    pair.handshake()
    datagram, endpoint = pair.alice.encapsulate(ip_packet(ALICE_IP, BOB_IP, b"once"), pair.now)
    assert pair.carry(pair.alice, datagram, endpoint) is not None
    assert pair.carry(pair.alice, datagram, endpoint) is None
    assert pair.bob.drop_counters == {"replay": 1}


def test_add_peer__again__reconfigures_and_keeps_session(pair):
    pair.handshake()
    pair.alice.add_peer(pair.bob.public_key, allowed_ips=[BOB_IP + "/32", "fd00::2/128"],
                        endpoint=pair.bob_endpoint, persistent_keepalive=0)
    pair.bob.add_peer(pair.alice.public_key, allowed_ips=[ALICE_IP + "/32", "fd00::1/128"])
    six = ip_packet("fd00::1", "fd00::2", b"over v6")
    assert pair.carry(pair.alice, *pair.alice.encapsulate(six, pair.now)) == six
    assert pair.alice.peers()[0].allowed_ips == ["10.9.0.2/32", "fd00::2/128"]


def test_add_peer__bad_arguments__raise_local_errors():
    device = WireGuardDevice(generate_private_key())
    with pytest.raises(LocalProtocolError):
        device.add_peer(bytes(31))
    with pytest.raises(LocalProtocolError):
        device.add_peer(device.public_key)
    with pytest.raises(LocalProtocolError):
        device.add_peer(os.urandom(32), preshared_key=b"short")
    with pytest.raises(LocalProtocolError):
        device.add_peer(os.urandom(32), allowed_ips=["not-an-ip"])
    with pytest.raises(LocalProtocolError):
        device.remove_peer(os.urandom(32))


def test_remove_peer__forgets_routes_and_sessions(pair):
    pair.handshake()
    datagram, endpoint = pair.alice.encapsulate(ip_packet(ALICE_IP, BOB_IP, b"late"), pair.now)
    pair.bob.remove_peer(pair.alice.public_key)
    assert pair.bob.peers() == []
    assert pair.carry(pair.alice, datagram, endpoint) is None
    assert pair.bob.drop_counters == {"unknown_receiver": 1}
    assert pair.bob.encapsulate(ip_packet(BOB_IP, ALICE_IP), pair.now) is None
