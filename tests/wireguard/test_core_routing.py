"""Cryptokey routing inside the device: destination lookup, source filtering, roaming."""

import pytest

from agents.wireguard import EndpointChanged, HandshakeFailed, WireGuardDevice, generate_private_key, public_key_of
from agents.wireguard.messages import INITIATION_SIZE
from agents.wireguard.perf import ALICE_IP, BOB_IP, LoopbackPair, ip_packet


WIDE = generate_private_key()
NARROW = generate_private_key()


@pytest.mark.parametrize("destination,endpoint", [
    ("10.1.2.3", ("192.0.2.20", 2)),
    ("10.2.2.3", ("192.0.2.10", 1)),
    ("fd00:1::9", ("192.0.2.20", 2)),
    ("fd00:2::9", ("192.0.2.10", 1)),
])
def test_encapsulate__longest_prefix_picks_the_peer(destination, endpoint):
    device = WireGuardDevice(generate_private_key())
    device.add_peer(public_key_of(WIDE), allowed_ips=["10.0.0.0/8", "fd00::/8"], endpoint=("192.0.2.10", 1))
    device.add_peer(public_key_of(NARROW), allowed_ips=["10.1.0.0/16", "fd00:1::/32"], endpoint=("192.0.2.20", 2))
    source = "10.0.0.1" if "." in destination else "fd00::1"
    assert device.encapsulate(ip_packet(source, destination), 100.0) is None  # no session yet: handshake
    ((initiation, to),) = device.drain_outbox()
    assert len(initiation) == INITIATION_SIZE and to == endpoint


def test_encapsulate__no_route_or_garbage__counted(pair):
    assert pair.alice.encapsulate(ip_packet(ALICE_IP, "8.8.8.8"), pair.now) is None
    assert pair.alice.encapsulate(b"\x45\x00", pair.now) is None
    assert pair.alice.encapsulate(b"", pair.now) is None
    assert pair.alice.drop_counters == {"no_route": 1, "bad_ip_header": 2}
    assert pair.alice.drain_outbox() == []


def test_encapsulate__peer_without_endpoint__queued_until_it_handshakes():
    """wireguard-go stages packets for a peer it cannot reach yet; they leave after key confirmation."""
    pair = LoopbackPair()  # Bob does not know where Alice is until she speaks
    early = ip_packet(BOB_IP, ALICE_IP, b"sent before alice spoke")
    assert pair.bob.encapsulate(early, pair.now) is None
    assert pair.bob.drop_counters == {} and pair.bob.drain_outbox() == []
    pair.handshake()
    assert pair.alice_received == [early]


def test_encapsulate__endpoint_configured_later__next_packet_initiates_at_once():
    """Nothing was sent while the endpoint was unknown, so the once-per-REKEY_TIMEOUT limit is not spent."""
    pair = LoopbackPair()
    queued, later = ip_packet(BOB_IP, ALICE_IP, b"queued"), ip_packet(BOB_IP, ALICE_IP, b"later")
    pair.bob.encapsulate(queued, pair.now)
    pair.bob.add_peer(pair.alice.public_key, allowed_ips=[ALICE_IP + "/32"], endpoint=pair.alice_endpoint)
    pair.now += 0.5
    pair.bob.encapsulate(later, pair.now)
    outbox = pair.bob.drain_outbox()
    assert [len(datagram) for datagram, _ in outbox] == [INITIATION_SIZE]
    pair.carry(pair.bob, *outbox[0])
    pair.deliver()
    assert pair.alice_received == [queued, later]


def test_encapsulate__peer_without_endpoint__queue_dropped_when_no_handshake_comes():
    pair = LoopbackPair()
    pair.bob.encapsulate(ip_packet(BOB_IP, ALICE_IP, b"stale"), pair.now)
    for _ in range(100):  # jump from deadline to deadline until the handshake gives up
        pair.now = pair.bob.next_deadline()
        pair.bob.tick(pair.now)
        if any(isinstance(e, HandshakeFailed) for e in pair.bob.drain_events()):
            break
    assert pair.bob.drain_outbox() == []  # nowhere to send initiations to
    pair.handshake()
    assert pair.alice_received == []


def test_decapsulate__inner_source_outside_allowed_ips__dropped(pair):
    spoofed = ip_packet("10.9.0.99", BOB_IP, b"spoofed")  # Alice may not send as 10.9.0.99
    assert pair.carry(pair.alice, *pair.alice.encapsulate(spoofed, pair.now)) is None
    as_bob = ip_packet(BOB_IP, BOB_IP, b"claims to be bob")
    pair.bob.add_peer(pair.alice.public_key, allowed_ips=[ALICE_IP + "/32"])
    pair.alice.add_peer(pair.bob.public_key, allowed_ips=["0.0.0.0/0"], endpoint=pair.bob_endpoint)
    assert pair.carry(pair.alice, *pair.alice.encapsulate(as_bob, pair.now)) is None
    assert pair.bob.drop_counters == {"allowed_ips": 2}


def test_decapsulate__bad_inner_header__dropped(pair):
    liar = bytearray(ip_packet(ALICE_IP, BOB_IP, b"x"))
    liar[2:4] = (500).to_bytes(2, "big")  # claims more bytes than it carries
    pair.alice.add_peer(pair.bob.public_key, allowed_ips=["0.0.0.0/0"], endpoint=pair.bob_endpoint)
    assert pair.carry(pair.alice, *pair.alice.encapsulate(bytes(liar), pair.now)) is None
    assert pair.bob.drop_counters == {"bad_ip_header": 1}


def test_roaming__endpoint_follows_latest_authenticated_packet(pair):
    pair.alice_endpoint = ("198.51.100.7", 40000)  # Alice's NAT mapping changed
    pair.carry(pair.alice, *pair.alice.encapsulate(ip_packet(ALICE_IP, BOB_IP, b"moved"), pair.now))
    assert pair.bob.drain_events() == [EndpointChanged(pair.alice.public_key, pair.now, ("198.51.100.7", 40000))]
    reply, to = pair.bob.encapsulate(ip_packet(BOB_IP, ALICE_IP, b"found you"), pair.now)
    assert to == ("198.51.100.7", 40000)
    assert pair.carry(pair.bob, reply, to) is not None


def test_roaming__unauthenticated_packet__does_not_move_endpoint(pair):
    datagram, endpoint = pair.alice.encapsulate(ip_packet(ALICE_IP, BOB_IP, b"x"), pair.now)
    pair.carry(pair.alice, datagram, endpoint)
    attacker = ("203.0.113.66", 6666)
    assert pair.bob.decapsulate(datagram, attacker, pair.now) is None  # replayed from elsewhere
    tampered = datagram[:-1] + bytes([datagram[-1] ^ 1])
    assert pair.bob.decapsulate(tampered, attacker, pair.now) is None
    assert pair.bob.peers()[0].endpoint == pair.alice_endpoint
    assert pair.bob.drop_counters == {"replay": 1, "decrypt_failed": 1}
