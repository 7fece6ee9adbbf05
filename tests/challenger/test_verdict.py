"""agents.challenger.verdict and payload: transcripts, their hashes, verdicts and a guardian's check."""

import dataclasses
import hashlib

import pytest

from agents.challenger.payload import CHUNK_SIZE, parse_payload_path, payload, payload_path
from agents.challenger.verdict import Policy, Transcript, check_transcript, count_reasons, judge, record

SEED = bytes(range(32))
SIZE = 4 * CHUNK_SIZE + 123
NODE = bytes.fromhex("aa" * 32)


def make(received=None, *, elapsed_s=1.0, advertised_kbps=4_000, latency=(20.0, 22.0, 25.0), **kw):
    data = payload(SEED, SIZE) if received is None else received
    return record(node_id=NODE, epoch=9, challenger="0x" + "11" * 20, started_at=1_000.0, seed=SEED, size=SIZE,
                  url="http://198.51.100.7/p", advertised_kbps=advertised_kbps, received=data, elapsed_s=elapsed_s,
                  latency_ms=latency, **kw)


def tampered_bytes(*offsets):
    data = bytearray(payload(SEED, SIZE))
    for offset in offsets:
        data[offset] ^= 0xFF
    return bytes(data)


def test_payload__deterministic_from_seed_and_offsets_agree():
    whole = payload(SEED, 1000)
    assert whole == payload(SEED, 1000)
    assert payload(SEED, 100, offset=900) == whole[900:]
    assert payload(bytes(32), 1000) != whole
    with pytest.raises(ValueError, match="32 bytes"):
        payload(b"short", 10)


def test_payload_path__round_trip_and_bounds():
    assert parse_payload_path(payload_path(SEED, 5000)) == (SEED, 5000)
    with pytest.raises(ValueError):
        parse_payload_path("/etc/passwd")
    with pytest.raises(ValueError):
        parse_payload_path(payload_path(SEED, 10**12))


def test_judge__honest_fast_download__passes():
    t = make(elapsed_s=0.5)  # ~4.2 Mbit/s against 4 Mbit/s advertised
    v = judge(t)
    assert v.passed and not v.tampered and v.reasons == ()
    assert v.throughput_kbps == int(SIZE * 8 / 1000 / 0.5)
    assert v.latency_ms == 22
    assert v.transcript_hash == hashlib.sha256(t.canonical()).digest()


def test_judge__throttled_to_a_tenth__fails_slow_not_tampered():
    t = make(elapsed_s=5.0)  # a tenth of the advertised rate
    v = judge(t)
    assert not v.passed and not v.tampered
    assert v.reasons[0].startswith("slow: ")


def test_judge__rewritten_bytes__tampered_with_the_runs_recorded():
    t = make(tampered_bytes(10, 11, 12, CHUNK_SIZE * 2 + 5), elapsed_s=0.5)
    assert t.diffs == ((10, payload(SEED, 3, 10).translate(bytes(255 - i for i in range(256))).hex()),
                       (CHUNK_SIZE * 2 + 5, bytes([payload(SEED, 1, CHUNK_SIZE * 2 + 5)[0] ^ 0xFF]).hex()))
    assert t.diffs_complete
    v = judge(t)
    assert not v.passed and v.tampered
    assert "tampered: 4 bytes changed" in v.reasons


def test_judge__truncated_or_failed__fails_without_tampering():
    short = make(payload(SEED, SIZE)[:1000], elapsed_s=0.01)
    v = judge(short)
    assert not v.passed and not v.tampered and any(r.startswith("truncated") for r in v.reasons)
    down = make(b"", elapsed_s=0.0, error="no session: handshake timed out", latency=())
    v = judge(down)
    assert not v.passed and not v.tampered and v.throughput_kbps == 0 and v.latency_ms == 0


def test_judge__latency_and_uptime_thresholds():
    assert "latency: 1500 ms above 1000" in judge(make(elapsed_s=0.5, latency=(1500.0,))).reasons
    assert not judge(make(elapsed_s=0.5), uptime=0.25).passed
    assert judge(make(elapsed_s=0.5), uptime=0.75).passed
    # Nothing advertised: the policy's floor applies.
    assert judge(make(elapsed_s=0.5, advertised_kbps=0), Policy(min_kbps=1_000)).passed


def test_transcript__canonical_json_round_trip_keeps_the_hash():
    t = make(tampered_bytes(3), elapsed_s=0.5)
    again = Transcript.from_dict(t.to_dict())
    assert again == t and again.digest() == t.digest()
    assert dataclasses.replace(t, bytes_received=t.bytes_received - 1).digest() != t.digest()
    with pytest.raises(ValueError, match="unknown transcript fields"):
        Transcript.from_dict({**t.to_dict(), "extra": 1})


def test_diffs__capped__incomplete_still_tampered():
    data = bytes(b ^ 0x55 for b in payload(SEED, SIZE))  # every byte rewritten
    t = make(data, elapsed_s=0.5, max_diff_bytes=100)
    assert not t.diffs_complete and sum(len(h) // 2 for _, h in t.diffs) == 100
    assert judge(t).tampered


def test_check_transcript__genuine_evidence__no_problems_and_says_what_changed():
    problems, findings = check_transcript(make(tampered_bytes(7, CHUNK_SIZE + 1), elapsed_s=0.5))
    assert problems == []
    assert any("2 bytes in 2 runs differ" in f for f in findings)
    assert check_transcript(make(elapsed_s=0.5)) == ([], [])


def test_check_transcript__forged_evidence__problems():
    genuine = make(tampered_bytes(7), elapsed_s=0.5)
    # A diff that claims the payload's own bytes (nothing was changed there).
    claims_payload = dataclasses.replace(genuine, diffs=((100, payload(SEED, 2, 100).hex()),))
    assert any("equal the payload" in p for p in check_transcript(claims_payload)[0])
    # Diffs that do not explain the received hashes (an honest download framed as tampered).
    honest = make(elapsed_s=0.5)
    framed = dataclasses.replace(honest, diffs=genuine.diffs)
    assert "the payload with the diffs applied does not hash to received_sha256" in check_transcript(framed)[0]
    outside = dataclasses.replace(genuine, diffs=((SIZE + 5, "00"),))
    assert any("outside" in p for p in check_transcript(outside)[0])


def test_endpoint__serves_the_seeds_payload_over_http():
    import threading
    import urllib.request

    from agents.challenger.endpoint import serve

    server = serve("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{payload_path(SEED, 700_000)}", timeout=10) as reply:
            assert reply.read() == payload(SEED, 700_000)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/etc/passwd", timeout=10)
    finally:
        server.shutdown()
        server.server_close()


# -- both ends count bytes ---------------------------------------------------------------------------

@pytest.mark.parametrize(("payload_bytes", "tunnel", "node", "reasons"), [
    (800_000, 1_000_000, 1_000_000, []),
    (800_000, 1_000_000, 1_300_000, []),   # 300,000 over: within 25 % (250,000) + 65,536 (path loss)
    (800_000, 1_000_000, 1_320_000,
     ["count: the node counted 1320000 bytes, the challenger 1000000 (more than 315536 over)"]),
    (800_000, 1_000_000, 930_000, []),     # 70,000 under: within 1 % (10,000) + 65,536 (a stale invoice)
    (800_000, 1_000_000, 920_000,
     ["count: the node counted 920000 bytes, the challenger 1000000 (more than 75536 under)"]),
    (20_000, 30_000, 5_000, ["count: the node counted 5000 bytes, fewer than the 20000 payload bytes delivered"]),
    (800_000, 1_000_000, None, []),        # no session, no counts: nothing to compare
])
def test_count_reasons__fixed_counts(payload_bytes, tunnel, node, reasons):
    assert count_reasons(payload_bytes, tunnel, node) == reasons


def test_judge__both_counts__in_transcript_and_verdict():
    t = make(elapsed_s=0.5, tunnel_bytes=SIZE + 3_000, node_bytes=SIZE + 3_200)
    v = judge(t)
    assert v.passed and (v.tunnel_bytes, v.node_bytes) == (SIZE + 3_000, SIZE + 3_200)
    assert (t.to_dict()["tunnel_bytes"], t.to_dict()["node_bytes"]) == (SIZE + 3_000, SIZE + 3_200)
    assert Transcript.from_dict(t.to_dict()).digest() == t.digest()


def test_judge__node_inflates_its_count__fails_without_tampering():
    # The payload arrived intact and fast, but the node says it carried three times as much.
    t = make(elapsed_s=0.5, tunnel_bytes=SIZE + 3_000, node_bytes=3 * SIZE + 200_000)
    v = judge(t)
    assert not v.passed and not v.tampered
    assert v.reasons == (f"count: the node counted {3 * SIZE + 200_000} bytes, the challenger {SIZE + 3_000} "
                         f"(more than {int((SIZE + 3_000) * 0.25) + 65_536} over)",)
    problems, findings = check_transcript(t)
    assert problems == [] and findings == list(v.reasons)


def test_transcript__version_1_without_counts__hashes_as_before():
    # A transcript stored before both ends counted has no count fields: parsed again it must keep
    # its hash (the one posted on chain), so absent counts stay out of the canonical form.
    old = dataclasses.replace(make(), version=1).to_dict()
    assert "tunnel_bytes" not in old and "node_bytes" not in old
    assert hashlib.sha256(Transcript.from_dict(old).canonical()).digest() == dataclasses.replace(make(), version=1).digest()
    assert Transcript.from_dict(old).canonical() == dataclasses.replace(make(), version=1).canonical()
