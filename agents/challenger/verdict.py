"""From what a challenge saw to what the challenger reports (pure).

A :class:`Transcript` is everything a challenge measured, in a canonical JSON form whose SHA-256 is
the transcript hash (posted with the report on chain, and the evidence hash of a revocation
proposal). It holds the payload's seed, so anyone can regenerate the bytes the node should have
delivered, the received bytes' hashes per chunk, and every run of bytes that differed (up to a cap):
a guardian can rebuild the received download from the seed and the differences and check it against
the received hashes (:func:`check_transcript`), without trusting the challenger's arithmetic.

:func:`judge` turns a transcript (and the epoch's uptime probes) into a :class:`Verdict`: passed or
not, throughput and latency for reputation.vy, and whether the node *tampered* (changed bytes it
delivered, as opposed to being slow, truncating, or down: only tampering is proposed for revocation;
the rest is for the failure quorum to slash).

Both ends count bytes: the transcript also holds the session's tunnel bytes as the challenger counted
them and as the node counted them (its last invoice, the figure it bills by). The two count the same
thing (WireGuard traffic of the session, both directions). The node counts a packet when it sends
it, the challenger when it arrives, so loss on the path (and TCP sending it again) puts the node's
count ahead: 5-10 % through the netns test's tc-shaped node. Never behind, beyond an invoice's
staleness. :func:`count_reasons` fails a node whose count runs ahead by more than loss explains (it
inflates what it bills), falls behind (it under-reports what it carried), or is below the payload
delivered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics

from agents.challenger.payload import CHUNK_SIZE, chunk_hashes, payload

__all__ = ["Policy", "Transcript", "Verdict", "check_transcript", "count_reasons", "judge", "record",
           "service_reasons"]

#: Transcript format version (in the canonical JSON, so a changed format changes the hash). 2 adds
#: ``tunnel_bytes`` and ``node_bytes``; a version 1 transcript has neither and hashes as it did.
VERSION = 2
#: Fields a transcript leaves out of its canonical form while they are None (added after version 1).
_OPTIONAL = ("tunnel_bytes", "node_bytes")
#: Differing bytes kept in a transcript at most (64 KiB): enough to show any tampering, bounded
#: when a node rewrites everything (then ``diffs_complete`` is false and the chunk hashes remain).
MAX_DIFF_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Transcript:
    """One challenge as it happened (hex strings for bytes; seconds; milliseconds for latency).

    Attributes:
        node_id: the node challenged (hex).
        epoch: the reputation epoch.
        challenger: the challenger's address.
        started_at: unix time the download was requested.
        seed: the payload seed (hex; revealed only after the download).
        size: payload bytes asked for.
        url: where it was pulled from (the challenger's endpoint, through the node).
        advertised_kbps: the capacity the node offers (kilobits per second; 0: unknown).
        bytes_received: bytes that arrived.
        elapsed_s: request to last byte.
        latency_ms: round-trip samples through the tunnel (the session's control-channel pings).
        received_sha256: hash of the received bytes.
        received_chunks: their per-chunk hashes (:data:`agents.challenger.payload.CHUNK_SIZE`).
        diffs: ``[offset, hex]`` runs where received bytes differ from the payload.
        diffs_complete: every differing byte is in ``diffs`` (False once the cap is reached).
        error: why the challenge could not finish (no session, timeout...), or "".
        tunnel_bytes: the session's tunnel bytes (both directions) by the challenger's count, or None.
        node_bytes: the same by the node's count (its last invoice after the download), or None.
    """

    node_id: str
    epoch: int
    challenger: str
    started_at: float
    seed: str
    size: int
    url: str
    advertised_kbps: int
    bytes_received: int
    elapsed_s: float
    latency_ms: tuple[float, ...]
    received_sha256: str
    received_chunks: tuple[str, ...]
    diffs: tuple[tuple[int, str], ...]
    diffs_complete: bool
    error: str = ""
    chunk_size: int = CHUNK_SIZE
    version: int = VERSION
    tunnel_bytes: int | None = None
    node_bytes: int | None = None

    def to_dict(self) -> dict:
        value = dataclasses.asdict(self)
        for name in _OPTIONAL:
            if value[name] is None:
                del value[name]
        value["latency_ms"] = list(self.latency_ms)
        value["received_chunks"] = list(self.received_chunks)
        value["diffs"] = [list(d) for d in self.diffs]
        return value

    def canonical(self) -> bytes:
        """The bytes the hash is over: sorted keys, no spaces, floats as JSON writes them."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> bytes:
        """The transcript hash: SHA-256 of :meth:`canonical`."""
        return hashlib.sha256(self.canonical()).digest()

    @classmethod
    def from_dict(cls, value: dict) -> Transcript:
        """Parse a transcript (raises ValueError when fields are missing or of the wrong type)."""
        try:
            fields = dict(value)
            fields["latency_ms"] = tuple(float(x) for x in fields["latency_ms"])
            fields["received_chunks"] = tuple(str(x) for x in fields["received_chunks"])
            fields["diffs"] = tuple((int(o), str(h)) for o, h in fields["diffs"])
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = set(fields) - names
            if unknown:
                raise ValueError(f"unknown transcript fields {sorted(unknown)}")
            return cls(**fields)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a challenge transcript: {exc}") from None

    @property
    def throughput_kbps(self) -> int:
        """Received bits per millisecond (kilobits per second), rounded down."""
        if self.elapsed_s <= 0:
            return 0
        return int(self.bytes_received * 8 / 1000 / self.elapsed_s)

    @property
    def median_latency_ms(self) -> float | None:
        return statistics.median(self.latency_ms) if self.latency_ms else None


def _diff_runs(expected: bytes, received: bytes, cap: int) -> tuple[list[tuple[int, str]], bool]:
    """Runs ``(offset, received bytes hex)`` where ``received`` differs from ``expected`` over their
    common length, chunk by chunk (equal chunks are skipped at C speed); stops at ``cap`` bytes."""
    runs: list[tuple[int, str]] = []
    kept = 0
    common = min(len(expected), len(received))
    for base in range(0, common, CHUNK_SIZE):
        a, b = expected[base:min(base + CHUNK_SIZE, common)], received[base:min(base + CHUNK_SIZE, common)]
        if a == b:
            continue
        i = 0
        while i < len(a):
            if a[i] == b[i]:
                i += 1
                continue
            j = i
            while j < len(a) and a[j] != b[j]:
                j += 1
            take = min(j - i, cap - kept)
            if take <= 0:
                return runs, False
            runs.append((base + i, b[i:i + take].hex()))
            kept += take
            if take < j - i:
                return runs, False
            i = j
    return runs, True


def record(*, node_id: bytes, epoch: int, challenger: str, started_at: float, seed: bytes, size: int, url: str,
           advertised_kbps: int, received: bytes, elapsed_s: float, latency_ms=(), error: str = "",
           tunnel_bytes: int | None = None, node_bytes: int | None = None,
           max_diff_bytes: int = MAX_DIFF_BYTES) -> Transcript:
    """The transcript of a finished (or failed) download of the payload of ``seed`` (with both ends'
    byte counts of the session, when it got that far)."""
    expected = payload(seed, size)
    diffs, complete = _diff_runs(expected, received, max_diff_bytes)
    return Transcript(
        node_id=node_id.hex(), epoch=epoch, challenger=challenger, started_at=round(started_at, 3), seed=seed.hex(),
        size=size, url=url, advertised_kbps=int(advertised_kbps), bytes_received=len(received),
        elapsed_s=round(elapsed_s, 6), latency_ms=tuple(round(x, 3) for x in latency_ms),
        received_sha256=hashlib.sha256(received).hexdigest(), received_chunks=tuple(chunk_hashes(received)),
        diffs=tuple(diffs), diffs_complete=complete, error=error, tunnel_bytes=tunnel_bytes, node_bytes=node_bytes)


@dataclasses.dataclass(frozen=True)
class Policy:
    """When a challenge passes.

    Attributes:
        min_throughput_fraction: of the advertised capacity (FlashFlow's measurement treats a
            relay within its capacity's error as honest; half is a generous floor for noise).
        min_kbps: floor when the node advertises nothing (kilobits per second).
        max_latency_ms: median round trip above which the node fails.
        min_uptime: share of the epoch's uptime probes that must have been answered.
        max_count_excess: how far the node's byte count may run ahead of the challenger's, as a share
            of the challenger's (packets lost on the path were counted by the node when sent).
        max_count_shortfall: how far it may fall behind (nothing explains it but a stale invoice).
        count_slack_bytes: in bytes, on top of either (a short download's few frames in flight).
    """

    min_throughput_fraction: float = 0.5
    min_kbps: int = 1_000
    max_latency_ms: float = 1_000.0
    min_uptime: float = 0.5
    max_count_excess: float = 0.25
    max_count_shortfall: float = 0.01
    count_slack_bytes: int = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What goes on chain (``passed``, ``throughput_kbps``, ``latency_ms``, ``transcript_hash``) and
    what stays local (``tampered``: propose a revocation; ``reasons``: why it failed; both ends' byte
    counts of the session, None where unknown)."""

    passed: bool
    throughput_kbps: int
    latency_ms: int
    tampered: bool
    reasons: tuple[str, ...]
    transcript_hash: bytes
    tunnel_bytes: int | None = None
    node_bytes: int | None = None


def service_reasons(throughput_kbps: float, advertised_kbps: int, latency_ms: float | None, uptime: float | None,
                    policy: Policy = Policy()) -> list[str]:
    """Why measured service fails the policy (empty: it passes); the figures' half of :func:`judge`,
    also what the trust simulator applies to its simulated measurements."""
    reasons = []
    floor = int(advertised_kbps * policy.min_throughput_fraction) if advertised_kbps else policy.min_kbps
    if throughput_kbps < floor:
        reasons.append(f"slow: {int(throughput_kbps)} kbit/s, below {floor}")
    if latency_ms is not None and latency_ms > policy.max_latency_ms:
        reasons.append(f"latency: {latency_ms:.0f} ms above {policy.max_latency_ms:.0f}")
    if uptime is not None and uptime < policy.min_uptime:
        reasons.append(f"uptime: {uptime:.0%} of probes answered")
    return reasons


def count_reasons(payload_bytes: int, tunnel_bytes: int | None, node_bytes: int | None,
                  policy: Policy = Policy()) -> list[str]:
    """Why the two ends' byte counts of a session disagree (empty: they agree, or were not taken).

    Args:
        payload_bytes: payload bytes the challenger received.
        tunnel_bytes: the session's tunnel bytes by the challenger's count (None: no session).
        node_bytes: the same by the node's count (None: no session).
    """
    if tunnel_bytes is None or node_bytes is None:
        return []
    reasons = []
    excess = int(tunnel_bytes * policy.max_count_excess) + policy.count_slack_bytes
    shortfall = int(tunnel_bytes * policy.max_count_shortfall) + policy.count_slack_bytes
    if node_bytes - tunnel_bytes > excess:
        reasons.append(f"count: the node counted {node_bytes} bytes, the challenger {tunnel_bytes} "
                       f"(more than {excess} over)")
    elif tunnel_bytes - node_bytes > shortfall:
        reasons.append(f"count: the node counted {node_bytes} bytes, the challenger {tunnel_bytes} "
                       f"(more than {shortfall} under)")
    if node_bytes < payload_bytes:
        reasons.append(f"count: the node counted {node_bytes} bytes, fewer than the {payload_bytes} payload bytes "
                       f"delivered")
    return reasons


def judge(transcript: Transcript, policy: Policy = Policy(), uptime: float | None = None) -> Verdict:
    """The verdict on one challenge (``uptime``: answered share of the epoch's probes, if any)."""
    reasons = []
    tampered = bool(transcript.diffs) or (
        not transcript.diffs_complete and transcript.bytes_received > 0)
    if transcript.error:
        reasons.append(f"error: {transcript.error}")
    if tampered:
        reasons.append(f"tampered: {sum(len(h) // 2 for _, h in transcript.diffs)} bytes changed")
    if transcript.bytes_received < transcript.size:
        reasons.append(f"truncated: {transcript.bytes_received} of {transcript.size} bytes")
    elif transcript.bytes_received > transcript.size:
        reasons.append(f"overlong: {transcript.bytes_received} of {transcript.size} bytes")
    latency = transcript.median_latency_ms
    reasons.extend(service_reasons(transcript.throughput_kbps, transcript.advertised_kbps, latency, uptime, policy))
    reasons.extend(count_reasons(transcript.bytes_received, transcript.tunnel_bytes, transcript.node_bytes, policy))
    return Verdict(passed=not reasons, throughput_kbps=transcript.throughput_kbps,
                   latency_ms=int(round(latency or 0)), tampered=tampered, reasons=tuple(reasons),
                   transcript_hash=transcript.digest(), tunnel_bytes=transcript.tunnel_bytes,
                   node_bytes=transcript.node_bytes)


def check_transcript(transcript: Transcript) -> tuple[list[str], list[str]]:
    """A guardian's check of a transcript's evidence: ``(problems, findings)``.

    ``problems`` say where the transcript contradicts itself (then it proves nothing); ``findings``
    say what it shows. Checked: every diff really differs from the payload regenerated from the seed
    and lies inside the received range; with complete diffs, the payload with the diffs applied
    hashes to ``received_sha256`` and to every received chunk hash; without (capped), the chunks
    that differ from the payload are counted.
    """
    problems: list[str] = []
    findings: list[str] = []
    try:
        seed = bytes.fromhex(transcript.seed)
        expected = payload(seed, transcript.size)
    except ValueError as exc:
        return [f"bad seed: {exc}"], findings
    if transcript.chunk_size != CHUNK_SIZE:
        return [f"chunk size {transcript.chunk_size} is not {CHUNK_SIZE}"], findings
    received = bytearray(expected[:transcript.bytes_received])
    if transcript.bytes_received > transcript.size:
        received.extend(bytes(transcript.bytes_received - transcript.size))  # unknown extra bytes
    changed = 0
    for offset, data_hex in transcript.diffs:
        data = bytes.fromhex(data_hex)
        if offset < 0 or offset + len(data) > min(transcript.bytes_received, transcript.size):
            problems.append(f"diff at {offset} lies outside the received bytes")
            continue
        if any(data[i] == expected[offset + i] for i in range(len(data))):
            problems.append(f"diff at {offset} claims bytes that equal the payload's")
        received[offset:offset + len(data)] = data
        changed += len(data)
    mine = chunk_hashes(bytes(received))
    if len(mine) != len(transcript.received_chunks):
        problems.append(f"{len(transcript.received_chunks)} chunk hashes for {transcript.bytes_received} bytes")
    elif transcript.diffs_complete and transcript.bytes_received <= transcript.size:
        if hashlib.sha256(bytes(received)).hexdigest() != transcript.received_sha256:
            problems.append("the payload with the diffs applied does not hash to received_sha256")
        bad = [i for i, (a, b) in enumerate(zip(mine, transcript.received_chunks)) if a != b]
        if bad:
            problems.append(f"chunks {bad[:8]} do not hash as the payload with the diffs applied")
    else:
        payload_chunks = chunk_hashes(expected[:transcript.bytes_received])
        differing = [i for i, (a, b) in enumerate(zip(payload_chunks, transcript.received_chunks)) if a != b]
        findings.append(f"{len(differing)} of {len(payload_chunks)} received chunks differ from the payload")
        if not differing and transcript.diffs:
            problems.append("diffs are listed but every received chunk hashes as the payload")
    if changed:
        findings.append(f"{changed} bytes in {len(transcript.diffs)} runs differ from the payload regenerated "
                        f"from its seed (first at offset {transcript.diffs[0][0]})")
    if transcript.bytes_received < transcript.size:
        findings.append(f"truncated: {transcript.bytes_received} of {transcript.size} bytes")
    findings.extend(count_reasons(transcript.bytes_received, transcript.tunnel_bytes, transcript.node_bytes))
    return problems, findings
