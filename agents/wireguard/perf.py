"""An in-memory pair of devices, and the handshake-rate measurement the tunnel benchmark reports.

`LoopbackPair` wires two `WireGuardDevice` objects back to back with a fake clock: what one puts in its
outbox for the other's address is fed to the other's `decapsulate`. The tests use it to drive whole
protocol exchanges, and `handshakes_per_second` uses it to time complete handshakes.
"""

import argparse
import ipaddress
import json
import os
import statistics
import time
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .core import HandshakeCompleted, WireGuardDevice
from .noise import generate_private_key
from .timers import REKEY_TIMEOUT

__all__ = ["ALICE_ENDPOINT", "BOB_ENDPOINT", "ALICE_IP", "BOB_IP", "ip_packet", "LoopbackPair",
           "handshakes_per_second", "responder_handshakes_per_second", "x25519_per_second",
           "transport_microseconds", "main"]

#: Documentation addresses (RFC 5737) for the two ends; nothing is ever sent to them.
ALICE_ENDPOINT = ("192.0.2.1", 51820)
BOB_ENDPOINT = ("192.0.2.2", 51820)
#: Tunnel addresses of the two ends.
ALICE_IP = "10.9.0.1"
BOB_IP = "10.9.0.2"
#: Fake wall-clock offset (2026-01-01) so TAI64N timestamps look like real ones.
_WALL_OFFSET = 1_767_225_600.0


def ip_packet(source: str, destination: str, payload: bytes = b"") -> bytes:
    """A minimal IPv4 or IPv6 packet (protocol 253, "for experimentation", RFC 3692) around ``payload``.

    Only the fields the core reads are meaningful: version, length and addresses.
    """
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    if src.version == 4:
        header = bytes([0x45, 0]) + (20 + len(payload)).to_bytes(2, "big") + bytes(4) + bytes([64, 253, 0, 0])
        return header + src.packed + dst.packed + payload
    header = bytes([0x60, 0, 0, 0]) + len(payload).to_bytes(2, "big") + bytes([253, 64])
    return header + src.packed + dst.packed + payload


class LoopbackPair:
    """Alice and Bob, each the other's only peer, connected by an in-memory "network".

    Args:
        preshared_key: optional PSK for both sides.
        rng: randomness for both devices.
        start: the fake monotonic clock's first value.
        bob_knows_alice_endpoint: when False (default) Bob learns Alice's address from her first
            authenticated packet, as a server does.

    Attributes:
        now: the fake clock; tests advance it.
        alice_received / bob_received: inner packets each side's `decapsulate` returned.
        lost: datagrams addressed to neither end (e.g. to a stale endpoint).
    """

    def __init__(self, *, preshared_key: bytes | None = None, rng: Callable[[int], bytes] = os.urandom,
                 start: float = 1000.0, bob_knows_alice_endpoint: bool = False) -> None:
        self.now = start
        self._alice_private = generate_private_key(rng)
        self.alice = WireGuardDevice(self._alice_private, rng=rng, wall_offset=_WALL_OFFSET)
        self.bob = WireGuardDevice(generate_private_key(rng), rng=rng, wall_offset=_WALL_OFFSET)
        self.alice.add_peer(self.bob.public_key, preshared_key=preshared_key, allowed_ips=[BOB_IP + "/32"],
                            endpoint=BOB_ENDPOINT)
        self.bob.add_peer(self.alice.public_key, preshared_key=preshared_key, allowed_ips=[ALICE_IP + "/32"],
                          endpoint=ALICE_ENDPOINT if bob_knows_alice_endpoint else None)
        self.alice_endpoint = ALICE_ENDPOINT
        self.bob_endpoint = BOB_ENDPOINT
        self.alice_received: list[bytes] = []
        self.bob_received: list[bytes] = []
        self.lost: list[tuple[bytes, tuple[str, int]]] = []

    def deliver(self, max_rounds: int = 16) -> int:
        """Carry outbox datagrams both ways until both outboxes are empty; returns how many moved."""
        moved = 0
        for _ in range(max_rounds):
            batch = [(self.alice, d) for d in self.alice.drain_outbox()] + \
                    [(self.bob, d) for d in self.bob.drain_outbox()]
            if not batch:
                return moved
            for sender, (datagram, endpoint) in batch:
                moved += 1
                self.carry(sender, datagram, endpoint)
        raise AssertionError("the devices kept talking for too many rounds")

    def carry(self, sender: WireGuardDevice, datagram: bytes, endpoint: tuple[str, int]) -> bytes | None:
        """Hand one datagram from ``sender`` to whichever device owns ``endpoint``."""
        source = self.alice_endpoint if sender is self.alice else self.bob_endpoint
        if endpoint == self.bob_endpoint:
            inner = self.bob.decapsulate(datagram, source, self.now)
            if inner is not None:
                self.bob_received.append(inner)
            return inner
        if endpoint == self.alice_endpoint:
            inner = self.alice.decapsulate(datagram, source, self.now)
            if inner is not None:
                self.alice_received.append(inner)
            return inner
        self.lost.append((datagram, endpoint))
        return None

    def handshake(self) -> None:
        """Alice initiates; every message is delivered."""
        self.alice.initiate_handshake(self.bob.public_key, self.now)
        self.deliver()

    def tick(self) -> None:
        """Run both devices' timers at the current fake time."""
        self.alice.tick(self.now)
        self.bob.tick(self.now)


def handshakes_per_second(seconds: float) -> float:
    """Complete handshakes per second on one core, both ends' work included.

    Each round is a full exchange between two in-memory devices: initiation (Alice), response (Bob),
    session install and the confirming keepalive (Alice), key confirmation (Bob); MAC1 on every
    handshake message. One thread does both ends' work, so a responder alone handles about twice
    this rate. The fake clock advances by REKEY_TIMEOUT per round so the protocol's own rate limits
    (one initiation per REKEY_TIMEOUT, 50 per second per peer) do not bound the figure.

    Args:
        seconds: how long to run (wall clock).

    Returns:
        Completed handshakes per second.
    """
    pair = LoopbackPair()
    alice, bob, bob_key = pair.alice, pair.bob, pair.bob.public_key
    completed = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(20):
            pair.now += REKEY_TIMEOUT
            now = pair.now
            alice.initiate_handshake(bob_key, now)
            ((initiation, _),) = alice.drain_outbox()
            bob.decapsulate(initiation, pair.alice_endpoint, now)
            ((response, _),) = bob.drain_outbox()
            alice.decapsulate(response, pair.bob_endpoint, now)
            ((keepalive, _),) = alice.drain_outbox()
            bob.decapsulate(keepalive, pair.alice_endpoint, now)
            completed += 1
        elapsed = time.perf_counter() - started
        if started + elapsed >= deadline:
            break
    for device in (alice, bob):
        if sum(isinstance(e, HandshakeCompleted) for e in device.drain_events()) != completed:
            raise AssertionError("a handshake did not complete")
    return completed / elapsed


def responder_handshakes_per_second(seconds: float, batch: int = 200) -> float:
    """Initiations a responder consumes and answers per second on one core (a server's view).

    Initiations are made beforehand (each from a fresh fake time, so their TAI64N timestamps rise and
    the 50-per-second flood limit is respected); only Bob's `decapsulate` + response is timed.
    """
    pair = LoopbackPair()
    alice, bob, bob_key = pair.alice, pair.bob, pair.bob.public_key
    answered = 0
    busy = 0.0
    while busy < seconds:
        initiations = []
        for _ in range(batch):
            pair.now += REKEY_TIMEOUT
            alice.initiate_handshake(bob_key, pair.now)
            ((initiation, _),) = alice.drain_outbox()
            initiations.append((initiation, pair.now))
        source = pair.alice_endpoint
        started = time.perf_counter()
        for initiation, now in initiations:
            bob.decapsulate(initiation, source, now)
        busy += time.perf_counter() - started
        answered += len(bob.drain_outbox())
    if bob.drop_counters:
        raise AssertionError(f"responder dropped initiations: {bob.drop_counters}")
    return answered / busy


def x25519_per_second(seconds: float) -> float:
    """The anchor: raw X25519 shared-secret computations per second (cryptography/OpenSSL) here, now.

    A full handshake needs eight X25519 scalar multiplications (two key generations, six DH; the
    static-static DH is precomputed), so ``x25519_per_second / 8`` bounds `handshakes_per_second`.
    """
    private, public = X25519PrivateKey.generate(), X25519PrivateKey.generate().public_key()
    done = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(200):
            private.exchange(public)
        done += 200
    return done / elapsed


def transport_microseconds(packets: int = 20000, size: int = 1420) -> tuple[float, float]:
    """Per-packet cost of `encapsulate` and `decapsulate` for ``size``-byte IP packets, in microseconds."""
    pair = LoopbackPair()
    pair.handshake()
    packet = ip_packet(ALICE_IP, BOB_IP, os.urandom(size - 20))
    alice, bob, now, source = pair.alice, pair.bob, pair.now, pair.alice_endpoint
    started = time.perf_counter()
    sealed = [alice.encapsulate(packet, now) for _ in range(packets)]
    middle = time.perf_counter()
    for datagram, _ in sealed:
        bob.decapsulate(datagram, source, now)
    ended = time.perf_counter()
    if bob.drop_counters:
        raise AssertionError(f"transport drops: {bob.drop_counters}")
    return (middle - started) / packets * 1e6, (ended - middle) / packets * 1e6


def main(argv: list[str] | None = None) -> None:
    """``python -m agents.wireguard.perf [--quick]``: print the core's figures, one JSON object last."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    args = parser.parse_args(argv)
    seconds, rounds = (0.3, 1) if args.quick else (2.0, args.rounds)
    full, responder, anchor, encap, decap = [], [], [], [], []
    for _ in range(rounds):  # interleaved so that load from other processes hits all figures alike
        anchor.append(x25519_per_second(seconds / 2))
        full.append(handshakes_per_second(seconds))
        responder.append(responder_handshakes_per_second(seconds))
        e, d = transport_microseconds(2000 if args.quick else 20000)
        encap.append(e)
        decap.append(d)
    result = {
        "handshakes_per_s": round(statistics.median(full)),
        "responder_handshakes_per_s": round(statistics.median(responder)),
        "x25519_per_s": round(statistics.median(anchor)),
        "handshake_fraction_of_x25519_bound": round(statistics.median(f / (a / 8) for f, a in zip(full, anchor)), 3),
        "encapsulate_us_1420B": round(statistics.median(encap), 2),
        "decapsulate_us_1420B": round(statistics.median(decap), 2),
        "rounds": rounds,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
