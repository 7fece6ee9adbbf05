"""The system-WireGuard backend: wireguard-go driven through its UAPI socket."""

import subprocess

import pytest

from agents.wireguard.backend import PeerStats, TunnelBackend
from agents.wireguard.config import (
    InterfaceConfig,
    PeerConfig,
    encode_key,
    generate_private_key,
    public_key,
)
from agents.wireguard.errors import RemoteProtocolError
from agents.wireguard.uapi import format_get, parse_get, socket_path, start_wireguard_go


def _peer(**overrides):
    values = dict(public_key=public_key(generate_private_key()), allowed_ips=["10.9.0.2/32"],
                  endpoint=("198.51.100.3", 51820), persistent_keepalive=25)
    values.update(overrides)
    return PeerConfig(**values)


@pytest.fixture
def wg_go(lab):
    host = lab.add_host("node")
    name = lab.unique_ifname("wgu")
    lab.track_file(socket_path(name))
    config = InterfaceConfig(private_key=generate_private_key(), listen_port=51820, peers=[_peer()])
    backend = start_wireguard_go(name, config, popen=host.spawn)
    yield backend, config
    backend.close()


def test_start__configures_interface_and_peer(wg_go):
    backend, config = wg_go
    assert isinstance(backend, TunnelBackend)
    assert backend.public_key == config.public_key
    assert backend.listen_port == 51820
    (stats,) = backend.peers()
    peer = config.peers[0]
    assert stats.public_key == peer.public_key
    assert stats.endpoint == peer.endpoint
    assert stats.allowed_ips == ("10.9.0.2/32",)
    assert stats.persistent_keepalive == 25
    assert stats.last_handshake is None and stats.rx_bytes == stats.tx_bytes == 0


def test_add_and_remove_peer__seen_by_wg_show(wg_go):
    backend, _ = wg_go
    extra = _peer(allowed_ips=["10.9.0.3/32", "fd00::3/128"], preshared_key=bytes(range(32)))
    backend.add_peer(extra)
    shown = subprocess.run(["wg", "show", backend.ifname, "allowed-ips"], capture_output=True,
                           text=True, check=True).stdout
    assert f"{encode_key(extra.public_key)}\t10.9.0.3/32 fd00::3/128" in shown
    backend.remove_peer(extra.public_key)
    assert backend.peer(extra.public_key) is None
    assert len(backend.peers()) == 1


def test_set__bad_key__remote_error(wg_go):
    backend, _ = wg_go
    with pytest.raises(RemoteProtocolError):
        backend.client.set(["private_key=zz"])


def test_format_get__parse_get__round_trip():
    key = generate_private_key()
    stats = _peer()
    peer = PeerStats(stats.public_key, ("192.0.2.7", 9), ("10.0.0.0/8",), 1700000000.5, 11, 22, 25)
    text = format_get(key, 4242, [peer]) + "errno=0\n\n"
    info = parse_get(text)
    assert info.private_key == key and info.listen_port == 4242
    assert info.peers == [peer]
