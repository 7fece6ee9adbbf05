"""Sorting a capture's outgoing frames for leak tests (agents.netlab.capture.outgoing_by_kind)."""

from agents.netlab.capture import CapturedFrame, describe, outgoing_by_kind


def _frame(kind="ipv4", proto="udp", dst="198.51.100.4", dport=51820, outgoing=True, icmp_type=None,
           head=b"\x04\x00\x00\x00"):
    return CapturedFrame("eth0", outgoing, kind, proto, "10.0.0.2", dst, 40000, dport, icmp_type, 100, 0.0, head)


def test_outgoing_by_kind__allowed_counted_housekeeping_apart_incoming_ignored_rest_leaks():
    tcp = _frame(proto="tcp", dst="203.0.113.9", dport=443, head=b"GET ")
    frames = [_frame(), _frame(head=b"\x30\x00\x00\x01"), _frame(kind="arp", proto=None),
              _frame(kind="ipv6", proto="icmpv6", icmp_type=135), _frame(outgoing=False, proto="tcp"), tcp]
    leaks, seen = outgoing_by_kind(frames, lambda f: ("wireguard" if f.wireguard else "overlay")
                                   if f.proto == "udp" and f.dst == "198.51.100.4" else None)
    assert leaks == [tcp]
    assert seen == {"wireguard": 1, "overlay": 1, "arp": 1, "nd": 1, "leak": 1}
    assert describe(leaks) == ["ipv4/tcp 10.0.0.2:40000 -> 203.0.113.9:443 icmp=None head=47455420"]
