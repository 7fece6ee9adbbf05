"""wg-quick configuration files: parse, write, round-trip, reject malformed input."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.wireguard.config import (
    ConfigError,
    InterfaceConfig,
    PeerConfig,
    decode_key,
    dump,
    dumps,
    encode_key,
    generate_private_key,
    load,
    loads,
    parse_endpoint,
    public_key,
)

#: RFC 7748 section 6.1: Alice's X25519 private and public keys.
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")

EXAMPLE = f"""
# a comment line
[Interface]
PrivateKey = {encode_key(ALICE_PRIVATE)}
ListenPort = 51820
Address = 10.0.0.1/24, fd00::1/64
DNS = 1.1.1.1

[Peer]
PublicKey = {encode_key(ALICE_PUBLIC)}
PresharedKey = {encode_key(bytes(range(32)))}
AllowedIPs = 10.0.0.2/32, 192.168.7.0/24   # trailing comment
AllowedIPs = fd00::2/128
Endpoint = [2001:db8::1]:51820
PersistentKeepalive = 25

[peer]
publickey = {encode_key(bytes(32))}
endpoint = vpn.example.org:4500
"""


def test_public_key__rfc7748_vector():
    assert public_key(ALICE_PRIVATE) == ALICE_PUBLIC


def test_loads__example__every_field():
    config = loads(EXAMPLE)
    assert config.private_key == ALICE_PRIVATE
    assert config.public_key == ALICE_PUBLIC
    assert config.listen_port == 51820
    assert config.addresses == ["10.0.0.1/24", "fd00::1/64"]
    assert config.extra == [("DNS", "1.1.1.1")]
    first, second = config.peers
    assert first.public_key == ALICE_PUBLIC
    assert first.preshared_key == bytes(range(32))
    assert first.allowed_ips == ["10.0.0.2/32", "192.168.7.0/24", "fd00::2/128"]
    assert first.endpoint == ("2001:db8::1", 51820)
    assert first.persistent_keepalive == 25
    assert second.endpoint == ("vpn.example.org", 4500)
    assert second.preshared_key is None and second.persistent_keepalive is None


def test_dumps__round_trip(tmp_path):
    config = loads(EXAMPLE)
    path = tmp_path / "wg0.conf"
    dump(config, path)
    assert load(path) == config
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("text, match", [
    ("[Interface]\nListenPort = 1\n", "no PrivateKey"),
    (f"[Interface]\nPrivateKey = {encode_key(bytes(31))}\n", "32 bytes"),
    ("[Interface]\nPrivateKey = not base64!\n", "not base64"),
    (f"[Interface]\nPrivateKey = {encode_key(bytes(32))}\nListenPort = 70000\n", "ListenPort"),
    (f"[Interface]\nPrivateKey = {encode_key(bytes(32))}\n[Peer]\nAllowedIPs = 10.0.0.0/8\n",
     "no PublicKey"),
    (f"[Interface]\nPrivateKey = {encode_key(bytes(32))}\n[Peer]\nPublicKey = "
     f"{encode_key(bytes(32))}\nEndpoint = nohost\n", "bad endpoint"),
    (f"[Interface]\nPrivateKey = {encode_key(bytes(32))}\n[Peer]\nPublicKey = "
     f"{encode_key(bytes(32))}\nAllowedIPs = 10.0.0.300/32\n", "bad address"),
    ("[Wat]\n", "unknown section"),
    ("PrivateKey = x\n", "inside a section"),
])
def test_loads__malformed__raises(text, match):
    with pytest.raises(ConfigError, match=match):
        loads(text)


def test_parse_endpoint__forms():
    assert parse_endpoint("1.2.3.4:5") == ("1.2.3.4", 5)
    assert parse_endpoint("[::1]:51820") == ("::1", 51820)
    with pytest.raises(ConfigError):
        parse_endpoint("1.2.3.4:0")


_keys = st.binary(min_size=32, max_size=32)
_peers = st.builds(
    PeerConfig,
    public_key=_keys,
    preshared_key=st.none() | _keys,
    allowed_ips=st.lists(st.sampled_from(["10.0.0.0/8", "10.1.2.3/32", "::/0", "fd00::/64"]),
                         max_size=3),
    endpoint=st.none() | st.tuples(st.sampled_from(["192.0.2.1", "2001:db8::5", "h.example"]),
                                   st.integers(1, 65535)),
    persistent_keepalive=st.none() | st.integers(1, 65535),
)


@settings(max_examples=60, deadline=None)
@given(private_key=_keys, port=st.none() | st.integers(0, 65535), peers=st.lists(_peers, max_size=3),
       mtu=st.none() | st.integers(1280, 9000))
def test_dumps__any_config__loads_back_equal(private_key, port, peers, mtu):
    config = InterfaceConfig(private_key=private_key, listen_port=port, mtu=mtu,
                             addresses=["10.0.0.1/24"], peers=peers)
    assert loads(dumps(config)) == config


def test_generate_private_key__is_random_32_bytes():
    keys = {generate_private_key() for _ in range(4)}
    assert len(keys) == 4 and all(len(k) == 32 for k in keys)
    assert decode_key(encode_key(next(iter(keys)))) in keys
