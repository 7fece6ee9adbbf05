"""Noise primitives and the handshake functions, without a device around them."""

import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agents.wireguard import messages, noise
from agents.wireguard.errors import LocalProtocolError, RemoteProtocolError
from agents.wireguard.tai64n import tai64n


def test_initial_values__match_the_constants_every_implementation_hardcodes():
    # HASH(CONSTRUCTION) and HASH(that || IDENTIFIER), as boringtun and others spell them out.
    assert noise.INITIAL_CHAINING_KEY.hex() == "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"
    assert noise.INITIAL_HASH.hex() == "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3"


@pytest.mark.parametrize("key_size,data_size", [(32, 0), (32, 1), (32, 33), (16, 100), (64, 7)])
def test_hmac__equals_standard_library_hmac_blake2s(key_size, data_size):
    key, data = os.urandom(key_size), os.urandom(data_size)
    assert noise.hmac_(key, data) == hmac.digest(key, data, "blake2s")


def test_kdf__outputs_chain_as_the_paper_defines():
    key, data = os.urandom(32), os.urandom(32)
    t0 = hmac.digest(key, data, "blake2s")
    t1 = hmac.digest(t0, b"\x01", "blake2s")
    t2 = hmac.digest(t0, t1 + b"\x02", "blake2s")
    t3 = hmac.digest(t0, t2 + b"\x03", "blake2s")
    assert noise.kdf1(key, data) == t1
    assert noise.kdf2(key, data) == (t1, t2)
    assert noise.kdf3(key, data) == (t1, t2, t3)


def test_mac__is_keyed_blake2s_128():
    key, data = os.urandom(32), os.urandom(50)
    assert noise.mac(key, data) == hashlib.blake2s(data, key=key, digest_size=16).digest()


def test_aead__nonce_is_zero_prefix_then_little_endian_counter():
    assert noise.aead_nonce(0x0102) == bytes(4) + bytes([2, 1]) + bytes(6)
    key = os.urandom(32)
    sealed = noise.aead_seal(key, 7, b"secret", b"ad")
    assert noise.aead_open(key, 7, sealed, b"ad") == b"secret"
    with pytest.raises(RemoteProtocolError) as info:
        noise.aead_open(key, 8, sealed, b"ad")
    assert info.value.reason == "decrypt_failed"


def test_generate_private_key__is_clamped_and_has_matching_public_key():
    private = noise.generate_private_key()
    assert private[0] & 7 == 0 and private[31] & 0x80 == 0 and private[31] & 0x40
    expected = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    assert noise.public_key_of(private) == expected


def test_static_key__wrong_length__raises_local_error():
    with pytest.raises(LocalProtocolError):
        noise.StaticKey(b"short")
    with pytest.raises(LocalProtocolError):
        noise.load_public(bytes(31))


def test_dh__low_order_point__is_a_remote_error():
    with pytest.raises(RemoteProtocolError) as info:
        noise.dh(noise.generate_private_key(), bytes(32))
    assert info.value.reason == "bad_key"


def test_dh__agrees_with_openssl_x25519():
    """libsodium's X25519 (ours) against OpenSSL's (cryptography) on random keys, both ways."""
    for _ in range(20):
        a, b = os.urandom(32), os.urandom(32)  # unclamped: both libraries clamp the scalar
        a_key, b_key = X25519PrivateKey.from_private_bytes(a), X25519PrivateKey.from_private_bytes(b)
        b_public = b_key.public_key().public_bytes_raw()
        assert noise.generate_ephemeral(lambda n: a).public == a_key.public_key().public_bytes_raw()
        assert noise.dh(a, b_public) == a_key.exchange(b_key.public_key())


def test_dh__rfc7748_vector():
    """RFC 7748 section 6.1: Alice's private key with Bob's public key gives the shared secret K."""
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob_public = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert noise.dh(alice, bob_public) == shared
    assert noise.StaticKey(alice).public == bytes.fromhex(
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def _handshake(psk_initiator, psk_responder):
    initiator = noise.StaticKey(noise.generate_private_key())
    responder = noise.StaticKey(noise.generate_private_key())
    responder_pub = noise.load_public(responder.public)
    ss_i = noise.dh(initiator.private, responder.public)
    ss_r = noise.dh(responder.private, initiator.public)
    stamp = tai64n(1_700_000_000.5)
    wire, state = noise.create_initiation(initiator, responder_pub, noise.hash_(noise.INITIAL_HASH + responder.public),
                                          ss_i, 11, stamp, noise.generate_ephemeral())
    assert len(wire) == messages.INITIATION_SIZE
    consumed = noise.consume_initiation(responder, messages.parse_initiation(wire),
                                        lambda key: ss_r if key == initiator.public else None)
    assert consumed.remote_static == initiator.public
    assert consumed.timestamp == stamp
    assert consumed.sender_index == 11
    reply, r_send, r_recv = noise.create_response(consumed, noise.load_public(initiator.public), psk_responder, 22,
                                                  noise.generate_ephemeral())
    assert len(reply) == messages.RESPONSE_SIZE
    parsed = messages.parse_response(reply)
    assert (parsed.sender, parsed.receiver) == (22, 11)
    i_send, i_recv = noise.consume_response(state, initiator, parsed, psk_initiator)
    return (i_send, i_recv), (r_send, r_recv)


@pytest.mark.parametrize("psk", [None, os.urandom(32)])
def test_handshake__both_sides_derive_crossed_transport_keys(psk):
    (i_send, i_recv), (r_send, r_recv) = _handshake(psk, psk)
    assert i_send == r_recv and i_recv == r_send and i_send != i_recv


def test_handshake__psk_mismatch__response_fails_to_authenticate():
    with pytest.raises(RemoteProtocolError) as info:
        _handshake(os.urandom(32), None)
    assert info.value.reason == "decrypt_failed"


def test_consume_initiation__unknown_initiator__is_refused():
    initiator = noise.StaticKey(noise.generate_private_key())
    responder = noise.StaticKey(noise.generate_private_key())
    wire, _ = noise.create_initiation(initiator, noise.load_public(responder.public),
                                      noise.hash_(noise.INITIAL_HASH + responder.public),
                                      noise.dh(initiator.private, responder.public), 1, tai64n(1.0),
                                      noise.generate_ephemeral())
    with pytest.raises(RemoteProtocolError) as info:
        noise.consume_initiation(responder, messages.parse_initiation(wire), lambda key: None)
    assert info.value.reason == "unknown_peer"
