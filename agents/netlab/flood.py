"""A handshake flood, as an attacker who knows a node's public key (it is on chain) would send it.

MAC1 needs only the responder's public key, so anyone can make initiations that pass it. The flood
is a set of such initiations from random static keys the responder does not know, built once
(:func:`initiations`) and sent over and over, as fast as one process can, from a namespace of the
lab (:data:`FLOODER`, run with ``python -c``), which counts what comes back by message type.
Used by tests/wireguard/test_netns_flood.py and scripts/bench_tunnel.py.
"""

from __future__ import annotations

__all__ = ["FLOODER", "initiations"]

#: argv: target host, port, seconds, file of initiations (each 148 bytes, concatenated). Prints one
#: JSON line: datagrams sent, replies received by first byte, reply sizes seen.
FLOODER = r"""
import json, socket, sys, time
host, port, seconds, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
blob = open(path, "rb").read()
messages = [blob[i:i + 148] for i in range(0, len(blob), 148)]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setblocking(False)
target, sent, replies, sizes = (host, port), 0, {}, set()
end = time.monotonic() + seconds
while time.monotonic() < end:
    for message in messages:
        try:
            sock.sendto(message, target)
            sent += 1
        except BlockingIOError:
            pass
    while True:
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            break
        replies[data[0]] = replies.get(data[0], 0) + 1
        sizes.add(len(data))
time.sleep(0.5)
while True:
    try:
        data = sock.recv(2048)
    except BlockingIOError:
        break
    replies[data[0]] = replies.get(data[0], 0) + 1
    sizes.add(len(data))
print(json.dumps({"sent": sent, "replies": {str(k): v for k, v in replies.items()}, "sizes": sorted(sizes)}))
"""


def initiations(responder_public: bytes, endpoint: tuple[str, int], count: int = 64) -> bytes:
    """``count`` handshake initiations to ``responder_public`` with valid MAC1 and no MAC2, each from
    a fresh static key, concatenated."""
    from agents.wireguard import WireGuardDevice
    from agents.wireguard.config import generate_private_key

    out = []
    for i in range(count):
        stranger = WireGuardDevice(generate_private_key())
        stranger.add_peer(responder_public, allowed_ips=["10.255.255.255/32"], endpoint=endpoint)
        stranger.initiate_handshake(responder_public, 1000.0 + i)
        out += [datagram for datagram, _ in stranger.drain_outbox()]
    if any(len(d) != 148 or d[0] != 1 for d in out):
        raise ValueError("an initiation is not 148 bytes of type 1")
    return b"".join(out)
