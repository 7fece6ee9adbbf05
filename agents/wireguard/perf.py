"""An in-memory pair of devices, and the core's performance figures (handshakes/s, per-packet cost).

`LoopbackPair` wires two `WireGuardDevice` objects back to back with a fake clock: what one puts in its
outbox for the other's address is fed to the other's `decapsulate`. The tests use it to drive whole
protocol exchanges, and `handshakes_per_second` (which the tunnel benchmark reports) uses it to time
complete handshakes.

Rates are "per core" in the literal sense: by default they divide by the CPU time the measuring
thread consumed (``time.thread_time``), so time the operating system gave to other processes on a
shared machine is not counted. Pass ``clock=time.perf_counter`` for wall-clock rates; `main` prints
both, beside an X25519 anchor measured the same way in the same rounds.
"""

import argparse
import ipaddress
import json
import os
import statistics
import time
from typing import Callable

from .core import HandshakeCompleted, WireGuardDevice
from .noise import dh, generate_ephemeral, generate_private_key
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


def _run(step: Callable[[], int], seconds: float, clock: Callable[[], float]) -> float:
    """Call ``step`` (which returns how many operations it did) until ``seconds`` of ``clock`` pass.

    Returns operations per second of ``clock``. A wall-clock cap (20 x ``seconds`` + 5 s) bounds the
    run on a machine so busy that the thread hardly gets the CPU.
    """
    done = 0
    started, wall_started = clock(), time.perf_counter()
    while True:
        done += step()
        elapsed = clock() - started
        if elapsed >= seconds or time.perf_counter() - wall_started > 20 * seconds + 5:
            return done / elapsed


def handshakes_per_second(seconds: float, clock: Callable[[], float] = time.thread_time) -> float:
    """Complete handshakes per second on one core, both ends' work included.

    Each round is a full exchange between two in-memory devices: initiation (Alice), response (Bob),
    session install and the confirming keepalive (Alice), key confirmation (Bob); MAC1 on every
    handshake message. One thread does both ends' work, so a responder alone handles about twice
    this rate (`responder_handshakes_per_second`). The fake clock advances by REKEY_TIMEOUT per round
    so the protocol's own rate limits (one initiation per REKEY_TIMEOUT, 50 per second per peer) do
    not bound the figure.

    Args:
        seconds: how long to run, in ``clock`` seconds.
        clock: thread CPU time by default (per-core rate); ``time.perf_counter`` for wall clock.

    Returns:
        Completed handshakes per second.
    """
    pair = LoopbackPair()
    alice, bob, bob_key = pair.alice, pair.bob, pair.bob.public_key
    alice_source, bob_source = pair.alice_endpoint, pair.bob_endpoint

    def twenty() -> int:
        for _ in range(20):
            pair.now += REKEY_TIMEOUT
            now = pair.now
            alice.initiate_handshake(bob_key, now)
            ((initiation, _),) = alice.drain_outbox()
            bob.decapsulate(initiation, alice_source, now)
            ((response, _),) = bob.drain_outbox()
            alice.decapsulate(response, bob_source, now)
            ((keepalive, _),) = alice.drain_outbox()
            bob.decapsulate(keepalive, alice_source, now)
        return 20

    rate = _run(twenty, seconds, clock)
    for device in (alice, bob):
        completed = sum(isinstance(e, HandshakeCompleted) for e in device.drain_events())
        if device.drop_counters or completed != round(pair.now - 1000.0) // round(REKEY_TIMEOUT):
            raise AssertionError(f"a handshake did not complete: {device.drop_counters}")
    return rate


def responder_handshakes_per_second(seconds: float, clock: Callable[[], float] = time.thread_time) -> float:
    """Initiations a responder consumes and answers per second on one core (a server's view).

    Initiations are made in untimed batches (each at a later fake time, so their TAI64N timestamps
    rise and the 50-per-second flood limit is respected); only Bob's `decapsulate` + response is timed.
    """
    pair = LoopbackPair()
    alice, bob, bob_key, source = pair.alice, pair.bob, pair.bob.public_key, pair.alice_endpoint
    answered = 0
    busy = 0.0
    wall_started = time.perf_counter()
    while busy < seconds and time.perf_counter() - wall_started < 20 * seconds + 5:
        initiations = []
        for _ in range(100):
            pair.now += REKEY_TIMEOUT
            alice.initiate_handshake(bob_key, pair.now)
            ((initiation, _),) = alice.drain_outbox()
            initiations.append((initiation, pair.now))
        started = clock()
        for initiation, now in initiations:
            bob.decapsulate(initiation, source, now)
        busy += clock() - started
        answered += len(bob.drain_outbox())
    if bob.drop_counters:
        raise AssertionError(f"responder dropped initiations: {bob.drop_counters}")
    return answered / busy


def x25519_per_second(seconds: float, clock: Callable[[], float] = time.thread_time) -> float:
    """The anchor: raw X25519 shared-secret computations per second (``noise.dh``: libsodium).

    A full handshake needs eight X25519 scalar multiplications (two key generations, six DH; the
    static-static DH is precomputed), so ``x25519_per_second / 8`` bounds `handshakes_per_second`
    (loosely: the two key generations use libsodium's faster fixed-base multiplication).
    """
    private, public = generate_private_key(), generate_ephemeral().public

    def hundred() -> int:
        for _ in range(100):
            dh(private, public)
        return 100

    return _run(hundred, seconds, clock)


def transport_microseconds(packets: int = 20000, size: int = 1420,
                           clock: Callable[[], float] = time.thread_time) -> tuple[float, float]:
    """Per-packet cost of `encapsulate` and `decapsulate` for ``size``-byte IP packets, in microseconds."""
    pair = LoopbackPair()
    pair.handshake()
    packet = ip_packet(ALICE_IP, BOB_IP, os.urandom(size - 20))
    alice, bob, now, source = pair.alice, pair.bob, pair.now, pair.alice_endpoint
    started = clock()
    sealed = [alice.encapsulate(packet, now) for _ in range(packets)]
    middle = clock()
    for datagram, _ in sealed:
        bob.decapsulate(datagram, source, now)
    ended = clock()
    if bob.drop_counters:
        raise AssertionError(f"transport drops: {bob.drop_counters}")
    return (middle - started) / packets * 1e6, (ended - middle) / packets * 1e6


def main(argv: list[str] | None = None) -> None:
    """``python -m agents.wireguard.perf [--quick]``: print the core's figures, one JSON object last."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    args = parser.parse_args(argv)
    seconds, rounds = (0.3, 1) if args.quick else (2.0, args.rounds)
    wall = time.perf_counter
    figures: dict[str, list[float]] = {}
    for _ in range(rounds):  # interleaved, so load from other processes hits every figure alike
        measured = {
            "handshakes_per_s": handshakes_per_second(seconds),
            "responder_handshakes_per_s": responder_handshakes_per_second(seconds),
            "x25519_per_s": x25519_per_second(seconds / 2),
            "handshakes_per_wall_s": handshakes_per_second(seconds, clock=wall),
            "x25519_per_wall_s": x25519_per_second(seconds / 2, clock=wall),
        }
        encap, decap = transport_microseconds(2000 if args.quick else 20000)
        measured.update(encapsulate_us_1420B=encap, decapsulate_us_1420B=decap)
        measured["handshake_fraction_of_x25519_bound"] = measured["handshakes_per_s"] / (measured["x25519_per_s"] / 8)
        for name, value in measured.items():
            figures.setdefault(name, []).append(value)
    result = {name: round(statistics.median(values), 3 if "fraction" in name else 1) for name, values in figures.items()}
    result["rounds"] = rounds
    result["clock"] = "thread CPU time (per core); *_per_wall_s: wall clock"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
