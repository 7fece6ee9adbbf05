"""The chain RPC as the kill switch's one exception: resolved once, then pinned in this process."""

import socket

import pytest

from agents.client.rpc_access import RpcEndpoint, pinned, rpc_endpoints
from agents.errors import UserError


def _resolver(answers):
    def resolve(host, port, type=0):  # noqa: A002 - socket's name
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port) if ":" not in a else (a, port, 0, 0)) for a in answers[host]]
    return resolve


def test_rpc_endpoints__remote_name__every_address_and_the_schemes_port():
    resolve = _resolver({"rpc.example": ["203.0.113.7", "2001:db8::7", "203.0.113.7"]})
    endpoint = rpc_endpoints("https://rpc.example/v1/key", resolve)
    assert endpoint == RpcEndpoint("rpc.example", ("2001:db8::7", "203.0.113.7"), 443)
    assert endpoint.pairs == [("2001:db8::7", 443), ("203.0.113.7", 443)]
    assert rpc_endpoints("http://rpc.example:8545", resolve).port == 8545


@pytest.mark.parametrize("url", ["http://127.0.0.1:8545", "http://localhost:8545", "http://[::1]:8545"])
def test_rpc_endpoints__loopback__no_exception_needed(url):
    assert rpc_endpoints(url, _resolver({"127.0.0.1": ["127.0.0.1"], "localhost": ["127.0.0.1", "::1"],
                                         "::1": ["::1"]})) is None


@pytest.mark.parametrize("url, words", [
    ("ws://rpc.example:8546", "not an http:// or https:// URL"),
    ("rpc.example:8545", "not an http:// or https:// URL"),
    ("http://rpc.example:99999", "bad port"),
    ("http://nowhere.example", "cannot resolve the chain RPC's host 'nowhere.example'.*warren disconnect"),
])
def test_rpc_endpoints__bad_or_unresolvable__plain_words(url, words):
    with pytest.raises(UserError, match=words):
        rpc_endpoints(url, _resolver({"rpc.example": ["203.0.113.7"]}))


def test_pinned__that_name_answers_from_the_pinned_addresses_only_inside_the_block():
    endpoint = RpcEndpoint("chain.warren-test.invalid", ("192.0.2.44", "2001:db8::44"), 8545)
    with pytest.raises(socket.gaierror):  # .invalid never resolves (RFC 6761)
        socket.getaddrinfo(endpoint.host, 8545)
    with pinned(endpoint):
        got = {info[4][0] for info in socket.getaddrinfo("Chain.Warren-Test.invalid", 8545, type=socket.SOCK_STREAM)}
        assert got == {"192.0.2.44", "2001:db8::44"}
        v4 = socket.getaddrinfo(endpoint.host, 8545, socket.AF_INET)
        assert {info[4][0] for info in v4} == {"192.0.2.44"}
        assert socket.getaddrinfo("127.0.0.1", 80)[0][4][0] == "127.0.0.1"  # other names as before
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(endpoint.host, 8545)


def test_pinned__no_endpoint__nothing_changes():
    before = socket.getaddrinfo
    with pinned(None):
        assert socket.getaddrinfo is before
