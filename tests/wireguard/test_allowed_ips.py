"""Cryptokey routing table: longest-prefix match for IPv4 and IPv6."""

import pytest

from agents.wireguard.allowed_ips import AllowedIPs
from agents.wireguard.errors import LocalProtocolError


@pytest.fixture
def table():
    routes = AllowedIPs()
    routes.insert("0.0.0.0/0", "default")
    routes.insert("10.0.0.0/8", "ten")
    routes.insert("10.1.0.0/16", "ten-one")
    routes.insert("10.1.2.3/32", "host")
    routes.insert("::/0", "default6")
    routes.insert("fd00::/8", "ula")
    routes.insert("fd00:1::/32", "ula-1")
    return routes


@pytest.mark.parametrize("address,expected", [
    ("10.1.2.3", "host"),
    ("10.1.2.4", "ten-one"),
    ("10.2.0.1", "ten"),
    ("192.168.1.1", "default"),
    ("fd00:1::5", "ula-1"),
    ("fd00:2::5", "ula"),
    ("2001:db8::1", "default6"),
])
def test_lookup__longest_prefix_wins(table, address, expected):
    assert table.lookup(address) == expected


def test_lookup__packed_bytes_and_ints_agree(table):
    assert table.lookup(bytes([10, 1, 9, 9])) == "ten-one"
    assert table.lookup_v4(0x0A010203) == "host"


def test_insert__host_bits__are_cleared_like_wg():
    routes = AllowedIPs()
    routes.insert("192.168.7.99/24", "lan")
    assert routes.prefixes("lan") == ["192.168.7.0/24"]
    assert routes.lookup("192.168.7.1") == "lan"


def test_insert__same_prefix_to_other_value__moves_it():
    routes = AllowedIPs()
    routes.insert("10.0.0.0/24", "a")
    routes.insert("10.0.0.0/24", "b")
    assert routes.lookup("10.0.0.1") == "b"
    assert routes.prefixes("a") == []


def test_remove_value__forgets_all_its_prefixes(table):
    table.remove_value("ten-one")
    assert table.lookup("10.1.2.4") == "ten"
    table.remove("10.1.2.3/32")
    assert table.lookup("10.1.2.3") == "ten"


def test_lookup__empty_table__is_none():
    routes = AllowedIPs()
    assert routes.lookup("10.0.0.1") is None and routes.lookup("::1") is None


def test_insert__garbage__raises_local_error():
    with pytest.raises(LocalProtocolError):
        AllowedIPs().insert("10.0.0.300/8", "x")


def test_prefixes_by_value__groups_every_value_sorted():
    routes = AllowedIPs()
    first, second = object(), object()
    routes.insert_many(["fd00::/8", "10.0.0.0/8", "10.1.0.0/16"], first)
    routes.insert("192.168.0.0/16", second)
    assert routes.prefixes_by_value() == {id(first): ["10.0.0.0/8", "10.1.0.0/16", "fd00::/8"],
                                          id(second): ["192.168.0.0/16"]}
