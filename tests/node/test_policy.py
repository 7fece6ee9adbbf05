"""The exit policy: parsing the node config's [exit] table, and the pure checks the exit relies on."""

from __future__ import annotations

import pytest
import tomli_w

from agents.node.policy import (
    DEFAULT_DENY_V4,
    DEFAULT_DENY_V6,
    ExitPolicy,
    PolicyError,
    address_denied,
    domain_allowed,
)

try:  # Python 3.11 has tomllib
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib


def test_from_dict__empty_table__no_restriction():
    policy = ExitPolicy.from_dict({})
    assert policy == ExitPolicy()
    assert not policy.restricted
    assert policy.port_ranges() is None
    assert policy.to_dict() == {}


def test_from_dict__full_table__normalized():
    policy = ExitPolicy.from_dict({
        "allow_cidrs": ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"],
        "allow_ports": [80, "443", "8000-8100", " 22 - 23 "],
        "allow_domains": ["Example.COM.", "files.example", "example.com"],
        "deny_cidrs": ["203.0.113.128/25"],
    })
    assert policy.allow_cidrs == ("203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32")
    assert policy.allow_ports == (80, 443, "8000-8100", "22-23")
    assert policy.allow_domains == ("example.com", "files.example")
    assert policy.deny_cidrs == ("203.0.113.128/25",)
    assert policy.port_ranges() == ((80, 80), (443, 443), (8000, 8100), (22, 23))
    assert policy.allowed_networks(4) == ("203.0.113.0/24", "198.51.100.7/32")
    assert policy.allowed_networks(6) == ("2001:db8::/32",)
    assert policy.denied_networks(4) == DEFAULT_DENY_V4 + ("203.0.113.128/25",)
    assert policy.denied_networks(6) == DEFAULT_DENY_V6
    assert policy.restricted


def test_to_dict__toml_round_trip__same_policy():
    policy = ExitPolicy(allow_cidrs=("203.0.113.0/24",), allow_ports=(443, "8000-8100"),
                        allow_domains=("example.com",), deny_cidrs=("2001:db8:dead::/48",))
    text = tomli_w.dumps({"exit": policy.to_dict()})
    assert ExitPolicy.from_dict(tomllib.loads(text)["exit"]) == policy


def test_from_dict__empty_lists__allow_nothing_of_that_kind():
    policy = ExitPolicy.from_dict({"allow_cidrs": [], "allow_ports": []})
    assert policy.restricted
    assert policy.port_ranges() == ()
    assert policy.to_dict() == {"allow_cidrs": [], "allow_ports": []}


@pytest.mark.parametrize(("table", "message"), [
    ({"allow_ip": ["1.2.3.0/24"]}, "unknown key 'allow_ip'"),
    ({"allow_cidrs": "1.2.3.0/24"}, "allow_cidrs: expected a list"),
    ({"allow_cidrs": ["1.2.3.0/33"]}, "allow_cidrs[0]: '1.2.3.0/33' is not an IPv4 or IPv6 CIDR"),
    ({"allow_cidrs": ["1.2.3.4/24"]}, "allow_cidrs[0]: '1.2.3.4/24' has host bits set (did you mean 1.2.3.0/24?)"),
    ({"allow_cidrs": [24]}, "allow_cidrs[0]: expected a CIDR"),
    ({"allow_cidrs": ["10.1.0.0/16"]}, "allow_cidrs[0]: 10.1.0.0/16 lies inside 10.0.0.0/8, which is always refused"),
    ({"allow_cidrs": ["fd00::/64"]}, "allow_cidrs[0]: fd00::/64 lies inside fc00::/7"),
    ({"allow_cidrs": ["203.0.113.0/25"], "deny_cidrs": ["203.0.113.0/24"]},
     "allow_cidrs[0]: 203.0.113.0/25 lies inside deny_cidrs entry 203.0.113.0/24"),
    ({"allow_ports": [0]}, "allow_ports[0]: expected a port 1-65535"),
    ({"allow_ports": [80, 65536]}, "allow_ports[1]: expected a port 1-65535"),
    ({"allow_ports": ["100-90"]}, "allow_ports[0]: expected a port 1-65535 or a range"),
    ({"allow_ports": ["http"]}, "allow_ports[0]"),
    ({"allow_ports": [True]}, "allow_ports[0]"),
    ({"allow_ports": 80}, "allow_ports: expected a list"),
    ({"allow_domains": ["*.example.com"]}, "allow_domains[0]: '*.example.com' is not a domain name"),
    ({"allow_domains": ["localhost"]}, "allow_domains[0]: 'localhost' is not a domain name"),
    ({"allow_domains": ["a..b"]}, "allow_domains[0]"),
    ({"allow_domains": ["-bad.example"]}, "allow_domains[0]"),
    ({"allow_domains": ["x" * 64 + ".example"]}, "allow_domains[0]"),
    ({"allow_domains": [7]}, "allow_domains[0]: expected a domain name"),
    ({"deny_cidrs": ["nope"]}, "deny_cidrs[0]: 'nope' is not an IPv4 or IPv6 CIDR"),
])
def test_from_dict__bad_value__error_names_key(table, message):
    with pytest.raises(PolicyError) as info:
        ExitPolicy.from_dict(table)
    assert message in str(info.value)


def test_from_dict__not_a_table__error():
    with pytest.raises(PolicyError, match="must be a table"):
        ExitPolicy.from_dict(["allow_cidrs"])


def test_policy_error__is_a_value_error():
    assert issubclass(PolicyError, ValueError)


@pytest.mark.parametrize(("name", "allowed"), [
    ("example.com", True),
    ("EXAMPLE.com.", True),
    ("www.example.com", True),
    ("a.b.example.com", True),
    ("badexample.com", False),
    ("example.com.evil.net", False),
    ("com", False),
    ("files.example", True),
])
def test_domain_allowed__subdomains_and_lookalikes(name, allowed):
    policy = ExitPolicy(allow_domains=("example.com", "files.example"))
    assert domain_allowed(policy, name) is allowed


def test_domain_allowed__no_domain_list__every_name():
    assert domain_allowed(ExitPolicy(allow_cidrs=("203.0.113.0/24",)), "anything.test")


def test_domain_allowed__empty_domain_list__no_name():
    assert not domain_allowed(ExitPolicy(allow_domains=()), "example.com")


@pytest.mark.parametrize(("address", "denied"), [
    ("10.1.2.3", True), ("172.20.0.1", True), ("192.168.1.1", True), ("127.0.0.1", True),
    ("169.254.169.254", True), ("100.64.0.1", True), ("0.1.2.3", True), ("224.0.0.251", True),
    ("255.255.255.255", True), ("240.0.0.1", True),
    ("::1", True), ("fd77:7272::2", True), ("fe80::1", True), ("ff02::1", True),
    ("::ffff:8.8.8.8", True),
    ("8.8.8.8", False), ("198.51.100.2", False), ("2001:4860:4860::8888", False),
    ("203.0.113.200", True),  # the extra denial below
])
def test_address_denied__defaults_and_extras(address, denied):
    policy = ExitPolicy(deny_cidrs=("203.0.113.128/25",))
    assert address_denied(policy, address) is denied


def test_policy__frozen():
    policy = ExitPolicy()
    with pytest.raises(AttributeError):
        policy.allow_ports = (80,)  # type: ignore[misc]
