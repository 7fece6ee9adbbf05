"""The benchmark harness runs and reports its figures (no speed is asserted here: see docs/BENCHMARKS.md)."""

import json

from agents.wireguard import perf


def test_main__quick__prints_one_json_object_with_every_figure(capsys):
    perf.main(["--quick"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name in ("handshakes_per_s", "responder_handshakes_per_s", "x25519_per_s", "handshakes_per_wall_s",
                 "x25519_per_wall_s", "encapsulate_us_1420B", "decapsulate_us_1420B",
                 "handshake_fraction_of_x25519_bound"):
        assert result[name] > 0, name


def test_handshakes_per_second__wall_clock_variant__completes_handshakes():
    assert perf.handshakes_per_second(0.05, clock=perf.time.perf_counter) > 0
