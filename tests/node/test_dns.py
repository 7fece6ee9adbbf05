"""The node's in-tunnel resolver: the sans-I/O core, then the runtime on loopback against the lab zone."""

from __future__ import annotations

import socket
import struct

import pytest
from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSRecord, EDNS0

from agents.netlab.dns import ZoneResolver, parse_record, serve
from agents.node.dns import (
    MAX_QUERY_BYTES,
    Answer,
    Drop,
    Forward,
    NodeResolver,
    Reply,
    ResolverCore,
    system_upstream,
)
from agents.node.exit import MAX_RESOLVED_TTL_S
from agents.node.policy import ExitPolicy

CLIENT = "10.77.0.2"
POLICY = ExitPolicy(allow_domains=("example.com",))


def make_core(policy: ExitPolicy = POLICY, **kwargs) -> ResolverCore:
    return ResolverCore(lambda: policy, **kwargs)


def query(name: str, qtype: str = "A", qid: int = 0x1234) -> bytes:
    record = DNSRecord.question(name, qtype)
    record.header.id = qid
    return record.pack()


def upstream_answer(forward: Forward, *records: RR, tc: bool = False, rcode: int = RCODE.NOERROR) -> bytes:
    """What a real upstream would send for the forwarded query (same id and question)."""
    request = DNSRecord.parse(forward.data)
    reply = request.reply()
    reply.header.rcode = rcode
    reply.header.tc = int(tc)
    for rr in records:
        reply.add_answer(rr)
    return reply.pack()


# -- the core -------------------------------------------------------------------------------------


def test_query__allowed_name__forwarded_with_a_fresh_id():
    core = make_core()
    data = query("example.com")
    action = core.on_query(data, CLIENT, 0.0)
    assert isinstance(action, Forward)
    assert action.data[2:] == data[2:]
    assert struct.unpack("!H", action.data[:2])[0] == action.upstream_id
    assert core.pending[action.upstream_id].client == CLIENT


def test_answer__allowed_name__client_id_restored_and_addresses_with_ttl():
    core = make_core()
    forward = core.on_query(query("example.com", qid=0xBEEF), CLIENT, 0.0, reply_to="handle")
    answer = core.on_upstream(upstream_answer(forward, RR("example.com", QTYPE.A, rdata=A("93.184.216.34"), ttl=300)), 0.1)
    assert isinstance(answer, Answer)
    assert answer.reply_to == "handle" and answer.client == CLIENT
    reply = DNSRecord.parse(answer.data)
    assert reply.header.id == 0xBEEF
    assert [(str(rr.rdata), rr.ttl) for rr in reply.rr] == [("93.184.216.34", 300)]
    assert answer.resolved == [("93.184.216.34", 300)]
    assert core.pending == {}


def test_answer__subdomain_aaaa__resolved():
    core = make_core()
    forward = core.on_query(query("www.Example.com.", "AAAA"), CLIENT, 0.0)
    assert isinstance(forward, Forward)
    answer = core.on_upstream(upstream_answer(
        forward, RR("www.example.com", QTYPE.AAAA, rdata=AAAA("2606:2800:220:1::1"), ttl=42)), 0.1)
    assert answer.resolved == [("2606:2800:220:1::1", 42)]


def test_answer__cname_chain__target_addresses_resolved_strangers_not():
    core = make_core()
    forward = core.on_query(query("www.example.com"), CLIENT, 0.0)
    answer = core.on_upstream(upstream_answer(
        forward,
        RR("www.example.com", QTYPE.CNAME, rdata=CNAME("edge.cdn.net"), ttl=600),
        RR("edge.cdn.net", QTYPE.A, rdata=A("203.0.113.10"), ttl=20),
        RR("unrelated.net", QTYPE.A, rdata=A("203.0.113.66"), ttl=20),
    ), 0.1)
    assert answer.resolved == [("203.0.113.10", 20)]


def test_query__name_not_allowed__refused_and_counted_per_client():
    core = make_core()
    for client in (CLIENT, CLIENT, "10.77.0.3"):
        action = core.on_query(query("evil.net", qid=7), client, 0.0, reply_to=client)
        assert isinstance(action, Reply)
        reply = DNSRecord.parse(action.data)
        assert reply.header.rcode == RCODE.REFUSED and reply.header.id == 7 and reply.header.qr
        assert str(reply.q.qname) == "evil.net."
    assert core.refused == {CLIENT: 2, "10.77.0.3": 1}
    assert core.pending == {}


def test_query__lookalike_name__refused():
    action = make_core().on_query(query("notexample.com"), CLIENT, 0.0)
    assert isinstance(action, Reply) and DNSRecord.parse(action.data).header.rcode == RCODE.REFUSED


def test_query__no_domain_list__forwarded_but_nothing_resolved_into_the_exit():
    core = make_core(ExitPolicy(allow_cidrs=("203.0.113.0/24",)))
    forward = core.on_query(query("anything.test"), CLIENT, 0.0)
    answer = core.on_upstream(upstream_answer(forward, RR("anything.test", QTYPE.A, rdata=A("203.0.113.5"))), 0.1)
    assert isinstance(answer, Answer) and answer.resolved == []


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "malformed"),
    (b"\x12\x34\x01", "malformed"),
    (query("example.com")[:-3], "malformed"),               # truncated mid-question
    (query("example.com")[:12], "malformed"),               # header promises a question, none follows
    (query("example.com")[:4] + b"\x00" * 8, "not_a_query"),  # a header with no question
    (b"\x00" * (MAX_QUERY_BYTES + 1), "oversized"),
])
def test_query__malformed_truncated_oversized__dropped(data, reason):
    core = make_core()
    action = core.on_query(data, CLIENT, 0.0)
    assert action == Drop(reason)
    assert core.drops[reason] == 1 and core.pending == {}


def test_query__a_response__dropped():
    response = DNSRecord.parse(query("example.com")).reply().pack()
    assert make_core().on_query(response, CLIENT, 0.0) == Drop("not_a_query")


def test_query__two_questions__dropped():
    record = DNSRecord.question("example.com")
    record.add_question(DNSRecord.question("www.example.com").q)
    assert make_core().on_query(record.pack(), CLIENT, 0.0) == Drop("not_a_query")


def test_query__not_admitted__dropped_without_reply():
    assert make_core().on_query(query("example.com"), CLIENT, 0.0, admitted=False) == Drop("not_admitted")


def test_query__edns__passed_upstream_unchanged():
    record = DNSRecord.question("example.com")
    record.add_ar(EDNS0(udp_len=1232))
    data = record.pack()
    forward = make_core().on_query(data, CLIENT, 0.0)
    assert isinstance(forward, Forward) and forward.data[2:] == data[2:]


def test_answer__ttl_above_cap__capped_for_client_and_exit():
    core = make_core()
    forward = core.on_query(query("example.com"), CLIENT, 0.0)
    answer = core.on_upstream(upstream_answer(
        forward, RR("example.com", QTYPE.A, rdata=A("93.184.216.34"), ttl=7 * 86_400)), 0.1)
    assert DNSRecord.parse(answer.data).rr[0].ttl == MAX_RESOLVED_TTL_S
    assert answer.resolved == [("93.184.216.34", MAX_RESOLVED_TTL_S)]


def test_answer__truncated_upstream__passed_on_truncated():
    core = make_core()
    forward = core.on_query(query("example.com"), CLIENT, 0.0)
    answer = core.on_upstream(upstream_answer(forward, tc=True), 0.1)
    assert DNSRecord.parse(answer.data).header.tc == 1


def test_answer__nxdomain__passed_on_nothing_resolved():
    core = make_core()
    forward = core.on_query(query("nope.example.com"), CLIENT, 0.0)
    answer = core.on_upstream(upstream_answer(forward, rcode=RCODE.NXDOMAIN), 0.1)
    assert DNSRecord.parse(answer.data).header.rcode == RCODE.NXDOMAIN and answer.resolved == []


def test_answer__unknown_id__dropped():
    core = make_core()
    forward = core.on_query(query("example.com"), CLIENT, 0.0)
    forged = struct.pack("!H", (forward.upstream_id + 1) % 65536) + upstream_answer(forward)[2:]
    assert core.on_upstream(forged, 0.1) == Drop("upstream_unexpected")
    assert forward.upstream_id in core.pending


def test_answer__other_question__dropped_and_still_pending():
    core = make_core()
    forward = core.on_query(query("example.com"), CLIENT, 0.0)
    spoof = DNSRecord.question("example.com", "AAAA").reply()
    spoof.header.id = forward.upstream_id
    spoof.add_answer(RR("example.com", QTYPE.AAAA, rdata=AAAA("2001:db8::66")))
    assert core.on_upstream(spoof.pack(), 0.1) == Drop("upstream_mismatched")
    assert isinstance(core.on_upstream(upstream_answer(forward), 0.2), Answer)


def test_answer__garbage__dropped():
    assert make_core().on_upstream(b"\x01\x02garbage", 0.0) == Drop("upstream_malformed")


def test_answer__policy_changed_meanwhile__address_not_allowed():
    policies = [POLICY]
    core = ResolverCore(lambda: policies[0])
    forward = core.on_query(query("example.com"), CLIENT, 0.0)
    policies[0] = ExitPolicy(allow_domains=("other.org",))
    answer = core.on_upstream(upstream_answer(forward, RR("example.com", QTYPE.A, rdata=A("93.184.216.34"))), 0.1)
    assert answer.resolved == []


def test_expire__upstream_silent__servfail_after_timeout():
    core = make_core(timeout_s=3.0)
    core.on_query(query("example.com", qid=99), CLIENT, 10.0, reply_to="h")
    assert core.expire(12.9) == []
    [reply] = core.expire(13.0)
    parsed = DNSRecord.parse(reply.data)
    assert reply.reply_to == "h" and parsed.header.rcode == RCODE.SERVFAIL and parsed.header.id == 99
    assert core.pending == {}


def test_query__too_many_pending__servfail():
    core = make_core(max_pending=2)
    assert isinstance(core.on_query(query("a.example.com"), CLIENT, 0.0), Forward)
    assert isinstance(core.on_query(query("b.example.com"), CLIENT, 0.0), Forward)
    busy = core.on_query(query("c.example.com"), CLIENT, 0.0)
    assert isinstance(busy, Reply) and DNSRecord.parse(busy.data).header.rcode == RCODE.SERVFAIL


def test_system_upstream__first_nameserver(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch lan\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n")
    assert system_upstream(str(conf)) == ("192.0.2.53", 53)


def test_system_upstream__none__error(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("search lan\n")
    with pytest.raises(Exception, match="names no nameserver"):
        system_upstream(str(conf))


# -- the lab zone -------------------------------------------------------------------------------------


def test_zone__known_and_unknown_names():
    zone = ZoneResolver([parse_record("files.example=198.51.100.2"), parse_record("files.example=2001:db8::2")], 30)
    a = zone.resolve(DNSRecord.question("FILES.example"), None)
    assert [(str(rr.rdata), rr.ttl) for rr in a.rr] == [("198.51.100.2", 30)]
    aaaa = zone.resolve(DNSRecord.question("files.example", "AAAA"), None)
    assert [str(rr.rdata) for rr in aaaa.rr] == ["2001:db8::2"]
    mx = zone.resolve(DNSRecord.question("files.example", "MX"), None)
    assert mx.header.rcode == RCODE.NOERROR and not mx.rr
    assert zone.resolve(DNSRecord.question("other.example"), None).header.rcode == RCODE.NXDOMAIN
    with pytest.raises(ValueError):
        parse_record("files.example=not-an-ip")


# -- the runtime on loopback ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp.bind(("127.0.0.1", port))
        return port


@pytest.fixture
def zone():
    servers = serve("127.0.0.1", 0, [("www.example.com", "93.184.216.34"), ("evil.net", "203.0.113.66")], ttl=120)
    yield servers[0].server.server_address
    for server in servers:
        server.stop()
        server.server.server_close()


def test_node_resolver__udp_and_tcp__allowed_resolves_refused_and_stranger_silent(zone):
    resolved: list = []
    admitted = {"127.0.0.1"}
    port = _free_port()
    with NodeResolver(["127.0.0.1"], port, upstream=zone, policy_getter=lambda: POLICY,
                      is_admitted=lambda ip: ip in admitted, on_resolved=resolved.extend) as resolver:
        reply = DNSRecord.parse(DNSRecord.question("www.example.com").send("127.0.0.1", port, timeout=3))
        assert [str(rr.rdata) for rr in reply.rr] == ["93.184.216.34"]
        assert resolved == [("93.184.216.34", 120)]
        tcp_reply = DNSRecord.parse(DNSRecord.question("www.example.com").send("127.0.0.1", port, tcp=True, timeout=3))
        assert [str(rr.rdata) for rr in tcp_reply.rr] == ["93.184.216.34"]
        refused = DNSRecord.parse(DNSRecord.question("evil.net").send("127.0.0.1", port, timeout=3))
        assert refused.header.rcode == RCODE.REFUSED
        assert resolver.core.refused["127.0.0.1"] == 1
        admitted.clear()
        with pytest.raises(socket.timeout):
            DNSRecord.question("www.example.com").send("127.0.0.1", port, timeout=0.5)
        assert resolver.core.drops["not_admitted"] == 1


def test_node_resolver__close__port_free_again(zone):
    port = _free_port()
    NodeResolver(["127.0.0.1"], port, upstream=zone, policy_getter=lambda: POLICY, is_admitted=lambda ip: True,
                 on_resolved=lambda answers: None).start().close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
