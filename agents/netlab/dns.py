"""A lab authoritative DNS server for the "internet" namespace (dnslib's server, UDP and TCP).

It answers A and AAAA for its names, NOERROR with no answer for another type of a known name, and
NXDOMAIN for every other name. Run it inside a namespace with ``Namespace.spawn``::

    python -m agents.netlab.dns --bind 198.51.100.2 --port 53 \\
        --record files.example=198.51.100.2 --record files.example=2001:db8::2 --ttl 60

or in-process with :func:`serve` (e.g. inside ``with host.enter():``). dnslib's threaded server is
right for a lab (a handful of queries); the node's own resolver does not use it (see
:mod:`agents.node.dns`).
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading
from collections.abc import Iterable, Sequence

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSLabel
from dnslib.server import BaseResolver, DNSLogger, DNSServer

__all__ = ["ZoneResolver", "parse_record", "serve", "main"]

#: Default record TTL (seconds).
DEFAULT_TTL = 60


def parse_record(text: str) -> tuple[str, str]:
    """``"name=address"`` -> ``(name, address)``.

    Raises:
        ValueError: not of that form, or the address is not an IP address.
    """
    name, sep, address = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"expected NAME=IP, got {text!r}")
    return name.strip().rstrip(".").lower(), str(ipaddress.ip_address(address.strip()))


class ZoneResolver(BaseResolver):
    """A fixed zone: name -> addresses, one TTL for all.

    Args:
        records: (name, address) pairs; a name may have several addresses of either family.
        ttl: TTL of every answer (seconds).
    """

    def __init__(self, records: Iterable[tuple[str, str]], ttl: int = DEFAULT_TTL) -> None:
        self.ttl = ttl
        self.zone: dict[DNSLabel, list[str]] = {}
        for name, address in records:
            self.zone.setdefault(DNSLabel(name), []).append(address)

    def resolve(self, request, handler):
        """dnslib's hook: the reply to one parsed request."""
        reply = request.reply()
        qname, qtype = request.q.qname, request.q.qtype
        addresses = self.zone.get(qname)
        if addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for address in addresses:
            version = ipaddress.ip_address(address).version
            if version == 4 and qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(qname, QTYPE.A, ttl=self.ttl, rdata=A(address)))
            elif version == 6 and qtype in (QTYPE.AAAA, QTYPE.ANY):
                reply.add_answer(RR(qname, QTYPE.AAAA, ttl=self.ttl, rdata=AAAA(address)))
        return reply


def serve(bind: str, port: int, records: Iterable[tuple[str, str]], ttl: int = DEFAULT_TTL,
          ) -> list[DNSServer]:
    """Start UDP and TCP servers on ``bind:port`` in background threads; call ``.stop()`` on each."""
    resolver = ZoneResolver(records, ttl)
    quiet = DNSLogger(log="-request,-reply,-truncated,-error", prefix=False)
    servers = [DNSServer(resolver, address=bind, port=port, tcp=tcp, logger=quiet) for tcp in (False, True)]
    for server in servers:
        server.start_thread()
    return servers


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.netlab.dns``: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m agents.netlab.dns", description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="address to listen on")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--record", action="append", default=[], metavar="NAME=IP",
                        help="an A or AAAA record (repeat for more)")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="TTL of every answer (seconds)")
    args = parser.parse_args(argv)
    try:
        records = [parse_record(r) for r in args.record]
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    servers = serve(args.bind, args.port, records, args.ttl)
    print(f"serving {len(records)} records on {args.bind}:{args.port}", flush=True)
    stop.wait()
    for server in servers:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
