"""Fuzzing the device's input: malformed or forged datagrams are dropped, counted and never answered.

Two fuzzers share the harness below: hypothesis (structured mutations of real captured messages plus
random bytes) runs inside pytest, and atheris (coverage-guided, libFuzzer) runs this file as a script
in a subprocess for a bounded number of inputs: ``python tests/wireguard/test_fuzz.py -runs=20000``.
"""

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.wireguard.noise import hash_, mac
from agents.wireguard.perf import ALICE_IP, BOB_IP, LoopbackPair, ip_packet
from agents.wireguard.timers import REKEY_TIMEOUT


def build_world() -> tuple[LoopbackPair, list[bytes]]:
    """A live Alice/Bob session and one real, already delivered, message of every type."""
    pair = LoopbackPair()
    alice, bob = pair.alice, pair.bob
    bob.under_load = True
    alice.initiate_handshake(bob.public_key, pair.now)
    ((first_initiation, _),) = alice.drain_outbox()
    pair.carry(alice, first_initiation, pair.bob_endpoint)
    ((cookie_reply, _),) = bob.drain_outbox()
    pair.carry(bob, cookie_reply, pair.alice_endpoint)
    bob.under_load = False
    pair.now += REKEY_TIMEOUT + 1
    alice.tick(pair.now)
    ((initiation, _),) = alice.drain_outbox()
    pair.carry(alice, initiation, pair.bob_endpoint)
    ((response, _),) = bob.drain_outbox()
    pair.carry(bob, response, pair.alice_endpoint)
    ((keepalive, _),) = alice.drain_outbox()
    pair.carry(alice, keepalive, pair.bob_endpoint)
    data_ab, _ = alice.encapsulate(ip_packet(ALICE_IP, BOB_IP, b"a" * 100), pair.now)
    data_ba, _ = bob.encapsulate(ip_packet(BOB_IP, ALICE_IP, b"b" * 1300), pair.now)
    pair.carry(alice, data_ab, pair.bob_endpoint)
    pair.carry(bob, data_ba, pair.alice_endpoint)
    assert len(pair.alice_received) == len(pair.bob_received) == 1
    for device in (alice, bob):
        device.drain_events()
        assert device.drop_counters == {} and device.drain_outbox() == []
    return pair, [first_initiation, cookie_reply, initiation, response, keepalive, data_ab, data_ba]


def feed(pair: LoopbackPair, datagram: bytes) -> None:
    """Give ``datagram`` to both devices; assert each drops it silently and counts it."""
    for device, source in ((pair.bob, pair.alice_endpoint), (pair.alice, pair.bob_endpoint)):
        before = sum(device.drop_counters.values())
        assert device.decapsulate(datagram, source, pair.now) is None
        assert device.drain_outbox() == []
        assert device.drain_events() == []
        assert sum(device.drop_counters.values()) == before + 1


def with_valid_mac1(pair: LoopbackPair, body: bytes, kind: int) -> bytes:
    """A forged handshake message of ``kind`` with a correct mac1 for Bob (anyone knowing his key can)."""
    size = 148 if kind == 1 else 92
    message = bytes([kind, 0, 0, 0]) + body.ljust(size - 36, b"\0")[: size - 36]
    return message + mac(hash_(b"mac1----" + pair.bob.public_key), message) + bytes(16)


_WORLD: list = []


def world() -> tuple[LoopbackPair, list[bytes]]:
    if not _WORLD:
        _WORLD.extend(build_world())
    return _WORLD[0], _WORLD[1]


def _mutations(captured: list[bytes]):
    message = st.sampled_from(captured)
    truncated = message.flatmap(lambda m: st.integers(0, len(m) - 1).map(lambda n: m[:n]))
    oversized = st.tuples(message.filter(lambda m: m[0] != 4), st.binary(min_size=1, max_size=64)).map(
        lambda t: t[0] + t[1])
    wrong_type = st.tuples(message, st.integers(0, 255).filter(lambda b: b not in (1, 2, 3, 4))).map(
        lambda t: bytes([t[1]]) + t[0][1:])
    reserved = st.tuples(message, st.integers(1, 3), st.integers(1, 255)).map(
        lambda t: t[0][: t[1]] + bytes([t[2]]) + t[0][t[1] + 1:])
    flipped = message.flatmap(lambda m: st.tuples(st.just(m), st.integers(0, len(m) - 1), st.integers(1, 255))).map(
        lambda t: t[0][: t[1]] + bytes([t[0][t[1]] ^ t[2]]) + t[0][t[1] + 1:])
    bad_mac1 = st.tuples(message.filter(lambda m: m[0] in (1, 2)), st.integers(0, 15), st.integers(1, 255)).map(
        lambda t: t[0][: len(t[0]) - 32 + t[1]] + bytes([t[0][len(t[0]) - 32 + t[1]] ^ t[2]]) + t[0][len(t[0]) - 31 + t[1]:])
    return st.one_of(st.binary(max_size=2000), truncated, oversized, wrong_type, reserved, flipped, bad_mac1)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_decapsulate__mutated_or_random_input__dropped_counted_never_answered(data):
    pair, captured = world()
    feed(pair, data.draw(_mutations(captured)))


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from([1, 2]), body=st.binary(min_size=0, max_size=200))
def test_decapsulate__forged_handshake_with_valid_mac1__dropped_without_answer(kind, body):
    pair, _ = world()
    forged = with_valid_mac1(pair, body, kind)
    before = sum(pair.bob.drop_counters.values())
    assert pair.bob.decapsulate(forged, pair.alice_endpoint, pair.now) is None
    assert pair.bob.drain_outbox() == [] and pair.bob.drain_events() == []
    assert sum(pair.bob.drop_counters.values()) == before + 1


def test_decapsulate__oversized_transport__dropped_as_oversized():
    pair, captured = world()
    before = pair.bob.drop_counters.get("oversized", 0)
    feed(pair, captured[5] + bytes(70_000))
    assert pair.bob.drop_counters["oversized"] == before + 1


def test_fuzzing__leaves_the_session_working():
    pair, _ = world()
    packet = ip_packet(ALICE_IP, BOB_IP, b"still here")
    assert pair.carry(pair.alice, *pair.alice.encapsulate(packet, pair.now)) == packet


@pytest.mark.slow
def test_atheris__coverage_guided_fuzz__finds_no_crash_or_answer():
    pytest.importorskip("atheris")
    result = subprocess.run([sys.executable, __file__, "-runs=20000", "-max_len=1500", "-seed=1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 20000 runs" in result.stderr


def _atheris_main() -> None:  # pragma: no cover - runs in the subprocess above
    import atheris

    import inspect

    from agents.wireguard import allowed_ips, cookie, core, messages, noise, replay

    # Coverage feedback from the core's own functions only (instrument_all would also slow down
    # hypothesis, pytest and the standard library for no benefit).
    for module in (allowed_ips, cookie, core, messages, noise, replay):
        for name, obj in vars(module).items():
            if inspect.isfunction(obj) and obj.__module__ == module.__name__:
                atheris.instrument_func(obj)
            elif inspect.isclass(obj) and obj.__module__ == module.__name__:
                for member in vars(obj).values():
                    if inspect.isfunction(member):
                        atheris.instrument_func(member)
    pair, captured = build_world()

    def one_input(data: bytes) -> None:
        if data and data[0] & 0x80 and len(data) > 2:
            # Half the inputs mutate a real message: choose it, then XOR the fuzz bytes over it.
            base = bytearray(captured[data[1] % len(captured)])
            for i, byte in enumerate(data[2:]):
                base[i % len(base)] ^= byte
            if bytes(base) in captured:
                return
            data = bytes(base)
        feed(pair, data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":  # pragma: no cover
    _atheris_main()
