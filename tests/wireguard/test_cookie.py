"""MAC1/MAC2 and cookie replies: under load a responder answers with a cookie, then accepts mac2."""

import os

import pytest

from agents.wireguard import HandshakeCompleted
from agents.wireguard.cookie import (
    COOKIE_SECRET_MAX_AGE,
    HANDSHAKE_BURST_PER_SOURCE,
    HANDSHAKES_PER_SECOND_PER_SOURCE,
    CookieChecker,
    CookieGenerator,
    SourceRateLimiter,
    endpoint_bytes,
    xaead_open,
    xaead_seal,
)
from agents.wireguard.errors import RemoteProtocolError
from agents.wireguard.messages import COOKIE_REPLY_SIZE, INITIATION_SIZE, parse_cookie_reply
from agents.wireguard.perf import ALICE_ENDPOINT, LoopbackPair
from agents.wireguard.timers import REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX

RETRANSMIT = REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX


def test_xaead__round_trip_and_tamper():
    key, nonce = os.urandom(32), os.urandom(24)
    sealed = xaead_seal(key, nonce, b"cookie-bytes-16!", b"mac1")
    assert len(sealed) == 32
    assert xaead_open(key, nonce, sealed, b"mac1") == b"cookie-bytes-16!"
    with pytest.raises(RemoteProtocolError):
        xaead_open(key, nonce, sealed, b"other")


def test_xaead__matches_the_draft_irtf_cfrg_xchacha_test_vector():
    # draft-irtf-cfrg-xchacha-03, appendix A.3.1 (AEAD_XChaCha20_Poly1305).
    plaintext = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
                 b"sunscreen would be it.")
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    key = bytes(range(0x80, 0xA0))
    nonce = bytes.fromhex("404142434445464748494a4b4c4d4e4f5051525354555657")
    sealed = xaead_seal(key, nonce, plaintext, aad)
    assert sealed[-16:].hex() == "c0875924c1c7987947deafd8780acf49"
    assert sealed[:16].hex() == "bd6d179d3e83d43b9576579493c0e939"


def test_endpoint_bytes__ip_then_big_endian_port():
    assert endpoint_bytes(("192.0.2.1", 0x1234)) == bytes([192, 0, 2, 1, 0x12, 0x34])
    assert len(endpoint_bytes(("2001:db8::1", 1))) == 18


def test_mac2__valid_only_for_same_source_and_fresh_secret():
    responder_key = os.urandom(32)
    checker = CookieChecker(responder_key)
    generator = CookieGenerator(responder_key)
    message = generator.add_macs(b"\x01\x00\x00\x00" + os.urandom(112) + bytes(32), 100.0)
    assert checker.mac1_valid(message) and not checker.mac2_valid(message, ALICE_ENDPOINT, 100.0)
    reply = checker.create_reply(message, 7, ALICE_ENDPOINT, 100.0)
    generator.consume_reply(parse_cookie_reply(reply), 100.0)
    with pytest.raises(RemoteProtocolError):  # one reply per message sent
        generator.consume_reply(parse_cookie_reply(reply), 100.0)
    again = generator.add_macs(message, 101.0)
    assert checker.mac2_valid(again, ALICE_ENDPOINT, 101.0)
    assert not checker.mac2_valid(again, ("192.0.2.99", ALICE_ENDPOINT[1]), 101.0)
    assert not checker.mac2_valid(again, ALICE_ENDPOINT, 100.0 + COOKIE_SECRET_MAX_AGE)  # secret rotated out


def loaded_pair_after_first_initiation() -> LoopbackPair:
    """Bob under load has just received Alice's first initiation (without mac2)."""
    pair = LoopbackPair()
    pair.bob.under_load = True
    pair.alice.initiate_handshake(pair.bob.public_key, pair.now)
    ((initiation, endpoint),) = pair.alice.drain_outbox()
    pair.carry(pair.alice, initiation, endpoint)
    return pair


def test_under_load__initiation_without_mac2__gets_cookie_then_mac2_handshake_succeeds():
    pair = loaded_pair_after_first_initiation()
    ((reply, to),) = pair.bob.drain_outbox()
    assert len(reply) == COOKIE_REPLY_SIZE and to == ALICE_ENDPOINT
    assert pair.bob.drain_events() == []  # nothing was computed for the handshake itself
    pair.carry(pair.bob, reply, to)
    assert pair.alice.drop_counters == {}
    pair.now += RETRANSMIT
    pair.alice.tick(pair.now)
    ((retry, _),) = pair.alice.drain_outbox()
    assert len(retry) == INITIATION_SIZE and retry[-16:] != bytes(16)  # now with mac2
    pair.carry(pair.alice, retry, pair.bob_endpoint)
    pair.deliver()
    assert [type(e) for e in pair.alice.drain_events()] == [HandshakeCompleted]


def test_under_load__bad_mac1__no_cookie_no_answer():
    pair = LoopbackPair()
    pair.bob.under_load = True
    pair.alice.initiate_handshake(pair.bob.public_key, pair.now)
    ((initiation, endpoint),) = pair.alice.drain_outbox()
    forged = initiation[:-32] + bytes([initiation[-32] ^ 1]) + initiation[-31:]
    pair.carry(pair.alice, forged, endpoint)
    assert pair.bob.drain_outbox() == [] and pair.bob.drop_counters == {"bad_mac1": 1}


def test_cookie_reply__forged_or_unsolicited__dropped():
    pair = LoopbackPair()
    pair.alice.initiate_handshake(pair.bob.public_key, pair.now)
    ((initiation, _),) = pair.alice.drain_outbox()
    index = int.from_bytes(initiation[4:8], "little")
    forged = CookieChecker(os.urandom(32)).create_reply(initiation, index, ALICE_ENDPOINT, pair.now)
    assert pair.alice.decapsulate(forged, pair.bob_endpoint, pair.now) is None
    unknown = CookieChecker(pair.bob.public_key).create_reply(initiation, index ^ 1, ALICE_ENDPOINT, pair.now)
    assert pair.alice.decapsulate(unknown, pair.bob_endpoint, pair.now) is None
    assert pair.alice.drop_counters == {"bad_cookie_reply": 1, "unknown_receiver": 1}
    assert pair.alice.drain_outbox() == []


def test_source_rate_limiter__burst_then_steady_rate_per_address():
    limiter = SourceRateLimiter()
    burst = [limiter.allow("192.0.2.1", 10.0) for _ in range(HANDSHAKE_BURST_PER_SOURCE + 1)]
    assert burst == [True] * HANDSHAKE_BURST_PER_SOURCE + [False]
    assert limiter.allow("192.0.2.2", 10.0)  # other addresses have their own bucket
    assert limiter.allow("192.0.2.1", 10.0 + 1 / HANDSHAKES_PER_SECOND_PER_SOURCE)
    assert not limiter.allow("192.0.2.1", 10.0 + 1 / HANDSHAKES_PER_SECOND_PER_SOURCE)


def test_under_load__valid_mac2_floods__rate_limited_per_source():
    pair = loaded_pair_after_first_initiation()
    pair.deliver()  # the cookie reaches Alice
    bob_now, answered = pair.now, []
    for _ in range(8):
        pair.now += RETRANSMIT  # Alice retransmits, with mac2...
        pair.alice.tick(pair.now)
        ((retry, _),) = pair.alice.drain_outbox()
        bob_now += 0.021  # ...and Bob sees them 21 ms apart: above the per-peer 50/s limit
        pair.bob.decapsulate(retry, pair.alice_endpoint, bob_now)
        answered.append(len(pair.bob.drain_outbox()))
    # A burst of 5 tokens refilled at 20/s (0.42 per 21 ms) runs dry at the 8th message.
    assert answered == [1] * 7 + [0]
    assert pair.bob.drop_counters == {"rate_limited": 1}
