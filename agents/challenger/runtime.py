"""The challenger's runtime: one epoch's challenges as a customer would buy them, reports, slashes, proposals.

:class:`Challenger` is what both `warren challenger run` (the silverback app, agents.challenger.app)
and `warren challenger once` drive: :meth:`Challenger.tick` reads the epoch's challenger assignment
(drawing and fixing the epoch's seed with ``reputation.draw_seed`` if nobody has yet:
:meth:`Challenger.assignment`), plans the epoch over the nodes it is drawn for
(:func:`agents.challenger.plan.assigned_nodes`, :func:`agents.challenger.plan.plan_epoch`, by chain
time), widens each planned challenge to the nodes co-located with it
(:func:`agents.challenger.plan.colocated_groups`, endpoints from the nodes' PeerRecords) and runs
each group that is due concurrently (:meth:`Challenger.challenge_group`), stores the transcripts of
the nodes it is drawn for, and sends every report still unsent (so a restart, an RPC outage or a
restarted chain only delays reports: they go out at the next tick of the same epoch). A
co-located node it is not drawn for is challenged too, for the load (a split uplink must show as
shared), but not reported: reputation would refuse it.

A challenge (:meth:`Challenger.challenge`) *is* a `warren connect` session: a fresh WireGuard key,
the node found through the overlay (agents.client.discovery), a channel from the client config's
payer (``pay = "voucher"``: opened by the node redeeming a voucher, so the payer on chain is the
pool), the same session setup, receipts and close (agents.client.agent.ClientAgent). Only routing
differs: instead of the whole host, one host route sends the payload endpoint through the tunnel
(the node sees a customer downloading something). The bytes are checked against the seed's payload,
and the latency is the TCP connect round trip through the tunnel and the session's control-channel
ping. Throughput is judged against the capacity the node advertises in its signed PeerRecord (the
config's ``expected_kbps`` only for a node that advertises none), and both ends' byte counts of the
session go into the transcript: the challenger's tunnel counter and the node's last invoice.

Slashing is decided once an epoch is over (reputation.slash_epoch, open during the next epoch only):
:meth:`Challenger.slash_previous` asks the contract to slash each node this challenger reported failed
in the previous epoch, if at least the quorum and at least half of that epoch's reports on it failed.
Both drivers call it before each tick.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from agents.challenger.config import ChallengerConfig
from agents.challenger.payload import payload_path
from agents.challenger.assignment import Assignment, read_assignment
from agents.challenger.plan import NodeInfo, assigned_nodes, colocated_groups, plan_epoch, probe_times
from agents.challenger.proposal import propose
from agents.challenger.store import TranscriptStore
from agents.challenger.verdict import Transcript, Verdict, judge, record
from agents.client.chain import OneCallAtATime

__all__ = ["Challenger", "advertised_kbps", "endpoint_of", "slot_interface"]

log = logging.getLogger("warren.challenger")

#: A challenge's download must finish within this (seconds): a node slower than payload / this fails.
DOWNLOAD_TIMEOUT_S = 60.0
#: How long a co-located group's challenges wait for each other's setup (paid sessions; the payer's
#: chain calls and voucher proofs go one at a time) before downloading (seconds).
GROUP_SETUP_WAIT_S = 120.0
#: Bytes read per recv of the download.
_READ = 256 * 1024
#: How far back a node's traffic is counted (blocks; about a day of 2-second blocks).
TRAFFIC_BLOCKS = 43_200
#: After the download, how long to wait for the node's invoice to count what the challenger's tunnel
#: counted (seconds): the node invoices every 0.25 s (agents.node.agent.METER_PERIOD_S).
COUNT_WAIT_S = 2.0


def advertised_kbps(record, fallback_kbps: int) -> int:
    """The capacity a challenge holds the node to: what its signed PeerRecord advertises (kbit/s),
    or the challenger's ``expected_kbps`` for a node that advertises none (or was not found)."""
    if record is not None and record.capacity_kbps:
        return int(record.capacity_kbps)
    return int(fallback_kbps)


def endpoint_of(record) -> str:
    """A PeerRecord's first endpoint's IP address ("" for none): what co-location is judged on."""
    if record is None or not getattr(record, "endpoints", None):
        return ""
    return str(record.endpoints[0][0])


#: Routing tables of the concurrent slots' routes to the node's control address (slot N: base + N;
#: slot 0 uses the main table). Every node answers at the same control address, so without a table
#: per slot the last slot's route would carry every slot's control connection (and its invoices).
CONTROL_TABLE_BASE = 51860


def slot_interface(base: str, slot: int) -> str:
    """The TUN name of the ``slot``-th concurrent challenge: ``base`` for the first, then ``base``
    cut to 12 characters plus ``c<slot>`` (Linux names hold 15)."""
    return base if slot == 0 else f"{base[:12]}c{slot}"[:15]


class _NoKillSwitch:
    """ClientAgent's kill-switch port, for a challenge: the challenger's host is not hiding anything,
    and only the payload endpoint's host route enters the tunnel."""

    def set_endpoints(self, endpoints) -> None:
        pass


class Challenger:
    """Args:
        config: the challenger config.
        contracts: the deployment (agents.chain.bindings.WarrenContracts).
        payer: the client chain port challenges pay through (agents.client.chain.client_port).
        account: the staked challenger account (reports are sent from it).
        store: the transcript store.
        chain_time: the chain's current time in seconds (default: the latest block's timestamp).
    """

    def __init__(self, config: ChallengerConfig, contracts, payer, account, store: TranscriptStore, *,
                 chain_time=None) -> None:
        self.config = config
        self.contracts = contracts
        self.payer = payer
        self.account = account
        self.store = store
        self.secret = config.secret()
        self.epoch_length = int(contracts.reputation.epoch_length())
        self._chain_time = chain_time or self._head_time
        os.makedirs(config.proposals_dir, exist_ok=True)
        #: node id -> epoch of its registration; the block scanned up to.
        self._registered: dict[bytes, int] = {}
        self._scanned = -1
        #: (epoch, node id -> its PeerRecord or None), resolved once per epoch for the endpoints.
        self._records: tuple[int, dict[bytes, object]] = (-1, {})
        #: The payer as concurrent challenges share it: one call at a time (one account, one nonce).
        self._shared_payer = OneCallAtATime(payer)

    @staticmethod
    def _head_time() -> float:
        from ape import chain

        return float(chain.blocks.head.timestamp)

    # -- planning -----------------------------------------------------------------------------------

    def candidates(self) -> dict[bytes, object]:
        """Registered, active, unrevoked nodes not operated by this challenger, by node id."""
        from agents.client.selection import list_candidates

        mine = str(self.account.address).lower()
        return {c.node.node_id: c for c in list_candidates(self.contracts)
                if c.node.active and not c.node.revoked and c.node.operator.lower() != mine}

    def node_infos(self, candidates: dict, records: dict | None = None) -> list[NodeInfo]:
        """The plan's view of the candidates: the epoch each registered in (NodeRegistered's block
        time) and its traffic (ChannelOpened to it in the last :data:`TRAFFIC_BLOCKS` blocks). When the
        chain cannot say (an RPC error), every node weighs the same this tick."""
        from ape import chain

        try:
            head = int(chain.blocks.head.number)
            for event in self.contracts.registry.NodeRegistered.range(self._scanned + 1, head + 1):
                stamp = int(chain.blocks[event.block_number].timestamp)
                self._registered[bytes(event.node_id)] = stamp // self.epoch_length
            self._scanned = head
            traffic: dict[bytes, int] = {}
            for event in self.contracts.channels.ChannelOpened.range(max(0, head - TRAFFIC_BLOCKS), head + 1):
                node_id = bytes(event.node_id)
                traffic[node_id] = traffic.get(node_id, 0) + 1
        except Exception as exc:  # noqa: BLE001 - plan without weights rather than not at all
            log.warning("node history unavailable (%s): challenges this tick are unweighted", exc)
            return [NodeInfo(node_id, endpoint=endpoint_of((records or {}).get(node_id))) for node_id in candidates]
        return [NodeInfo(node_id, registered_epoch=self._registered.get(node_id, 0), traffic=traffic.get(node_id, 0),
                         endpoint=endpoint_of((records or {}).get(node_id)))
                for node_id in candidates]

    def assignment(self, epoch: int) -> Assignment:
        """The epoch's challenger assignment, the seed drawn and fixed first if the draw applies and
        nobody has: ``draw_seed`` once to draw (its block's hash, unknown to its sender), once more
        in a later block to fix it, so nobody can draw again once the hash is known (a draw left
        unfixed for 256 blocks could be drawn anew). A refusal or an RPC error leaves it for the
        next tick (the plan is then empty)."""
        from ape import chain

        def read() -> Assignment:
            head = int(chain.blocks.head.number)
            return read_assignment(self.contracts.reputation, epoch, head=head,
                                   block_hash=lambda n: bytes(chain.blocks[n].hash))

        draw = read()
        for _ in range(2):
            if draw.everyone or self.store.get(f"seed:{epoch}") is not None:
                return draw
            try:
                fixed = self.contracts.reputation.draw_seed(sender=self.account)
                if any(True for _ in fixed.events.filter(self.contracts.reputation.SeedFixed)):
                    self.store.set(f"seed:{epoch}", "fixed")
            except Exception as exc:  # noqa: BLE001 - fixed by someone else, or RPC: read what is there
                if "seed already fixed" in str(exc):
                    self.store.set(f"seed:{epoch}", "fixed")
                else:
                    log.warning("draw_seed for epoch %d not sent (%s)", epoch, exc)
                    return read()
            draw = read()
        return draw

    def records(self, candidates: dict, epoch: int) -> dict[bytes, object]:
        """The candidates' PeerRecords (None where not found), resolved through the overlay once per
        epoch: their endpoints decide which nodes are co-located. An overlay failure gives none
        (every node is then challenged on its own this tick, and asked again the next)."""
        cached_epoch, cached = self._records
        if cached_epoch == epoch and all(node_id in cached for node_id in candidates):
            return cached
        found: dict[bytes, object] = {}
        try:
            with self._overlay() as (_, discovery):
                for node_id in candidates:
                    found[node_id] = discovery.resolve(node_id, timeout=5.0)
        except Exception as exc:  # noqa: BLE001 - plan without endpoints rather than not at all
            log.warning("PeerRecords unavailable (%s): no co-location this tick", exc)
            return {}
        self._records = (epoch, found)
        return found

    def tick(self, *, now_all: bool = False) -> list[dict]:
        """Run the challenges due now (``now_all``: all of the epoch's plan not yet run), then report.

        Returns one summary per challenge run (the nodes this challenger is drawn for; co-located
        nodes challenged alongside them are logged, not returned)."""
        now = self._chain_time()
        epoch = int(now // self.epoch_length)
        self.store.expire(epoch)
        self.report_pending(epoch)  # backfill first: the reports of a previous run of this epoch
        candidates = self.candidates()
        draw = self.assignment(epoch)
        records = self.records(candidates, epoch) if candidates else {}
        nodes = self.node_infos(candidates, records)
        mine = assigned_nodes(nodes, draw, str(self.account.address))
        if not draw.ready:
            log.warning("epoch %d: the assignment seed is not known yet: no challenges this tick", epoch)
        last_start = (epoch + 1) * self.epoch_length - self.config.plan.margin_s / 2
        self.probe(candidates, epoch, now, now_all=now_all)
        drawn = {n.node_id for n in mine}
        ran = []
        for group in colocated_groups(plan_epoch(mine, epoch, self.epoch_length, self.secret, self.config.plan), nodes):
            if group[0].at > now and not now_all:
                continue
            if all(self.store.challenged(c.node_id, epoch) for c in group if c.node_id in drawn):
                continue
            if self._chain_time() >= last_start:
                log.warning("epoch %d is ending: the rest of its challenges are left out", epoch)
                break
            results = self.challenge_group([candidates[c.node_id] for c in group], epoch)
            for transcript, verdict in results:
                if bytes.fromhex(transcript.node_id) not in drawn:
                    log.info("co-located challenge of %s (not drawn: not reported): passed=%s %d kbit/s",
                             transcript.node_id[:12], verdict.passed, verdict.throughput_kbps)
                    continue
                self.store.save(transcript, verdict)
                ran.append({"node_id": transcript.node_id, "epoch": epoch, "passed": verdict.passed,
                            "throughput_kbps": verdict.throughput_kbps, "latency_ms": verdict.latency_ms,
                            "advertised_kbps": transcript.advertised_kbps, "group": len(group),
                            "payload_bytes": transcript.bytes_received, "tunnel_bytes": verdict.tunnel_bytes,
                            "node_bytes": verdict.node_bytes, "tampered": verdict.tampered,
                            "reasons": list(verdict.reasons), "transcript_hash": verdict.transcript_hash.hex()})
                log.info("challenge of %s: %s", transcript.node_id[:12], ran[-1])
        self.report_pending(epoch)
        return ran

    def challenge_group(self, candidates: list, epoch: int) -> list[tuple[Transcript, Verdict]]:
        """Challenge co-located nodes at the same moment, each in its own thread, tunnel and TUN
        (:func:`slot_interface`), so nodes sharing an uplink share it while measured. The payer's
        chain calls go out one at a time (one account). Every session is set up (and paid: a voucher
        proof takes seconds of this process's CPU) before any download starts, so the downloads
        overlap each other and nothing else: a proof made beside a download slowed this process's
        tunnels and an honest node was judged slow (CI, 2026-12-07)."""
        if len(candidates) == 1:
            return [self.challenge(candidates[0], epoch)]
        start = threading.Barrier(len(candidates))
        with ThreadPoolExecutor(max_workers=len(candidates), thread_name_prefix="challenge") as pool:
            futures = [pool.submit(self.challenge, c, epoch, slot, start) for slot, c in enumerate(candidates)]
            return [f.result() for f in futures]

    # -- uptime probes ------------------------------------------------------------------------------

    def probe(self, candidates: dict, epoch: int, now: float, *, now_all: bool = False) -> int:
        """Run the uptime probes due (:func:`agents.challenger.plan.probe_times`): is the node reachable
        through the overlay and does it answer an overlay ping? Returns how many were sent."""
        due = [p for p in probe_times([NodeInfo(n) for n in candidates], epoch, self.epoch_length, self.secret,
                                      self.config.plan)
               if (p.at <= now or now_all) and not self.store.probed(p.node_id, epoch, p.at)]
        if not due:
            return 0
        with self._overlay() as (_, discovery):
            for planned in due:
                answered = False
                try:
                    answered = (discovery.path_to(planned.node_id, timeout=5.0) is not None
                                and discovery.rtt(planned.node_id) is not None)
                except Exception as exc:  # noqa: BLE001 - an unreachable node is an unanswered probe
                    log.info("probe of %s: %s", planned.node_id.hex()[:12], exc)
                self.store.add_probe(planned.node_id, epoch, planned.at, answered)
        return len(due)

    @contextlib.contextmanager
    def _overlay(self, slot: int = 0):
        """``(tunnel, overlay client)`` with a fresh WireGuard key, as `warren connect` makes them (closed after)."""
        from agents.chain.directory import RegistryDirectory
        from agents.client.discovery import ClientDiscovery
        from agents.client.service import CLIENT_MTU
        from agents.wireguard.config import InterfaceConfig, generate_private_key
        from agents.wireguard.runtime import Tunnel

        tunnel = Tunnel(InterfaceConfig(private_key=generate_private_key(), listen_port=0, mtu=CLIENT_MTU),
                        slot_interface(self.config.interface, slot), uapi=False, manage_routes=False).start()
        discovery = None
        try:
            discovery = ClientDiscovery(tunnel, directory=RegistryDirectory(self.contracts),
                                        bootstrap=[tuple(b) for b in self.config.client.bootstrap])
            yield tunnel, discovery
        finally:
            if discovery is not None:
                with contextlib.suppress(Exception):
                    discovery.close()
            with contextlib.suppress(Exception):
                tunnel.close()

    # -- one challenge ------------------------------------------------------------------------------

    def challenge(self, candidate, epoch: int, slot: int = 0,
                  start: threading.Barrier | None = None) -> tuple[Transcript, Verdict]:
        """One challenge of ``candidate`` (see the module docstring); never raises for the node's faults.
        ``slot``: its place in a concurrent group (its TUN's name; its payer calls serialised);
        ``start``: the group's barrier, passed once this session is set up (or has failed)."""
        from agents.client.agent import ClientAgent, Route

        def arrive() -> None:  # exactly once per challenge, whatever fails
            nonlocal start
            if start is not None:
                with contextlib.suppress(threading.BrokenBarrierError):
                    start.wait(timeout=GROUP_SETUP_WAIT_S)
                start = None

        node_id = candidate.node.node_id
        seed = os.urandom(32)
        size = self.config.payload_bytes
        url = self.config.endpoint + payload_path(seed, size)
        target = urlparse(self.config.endpoint)
        started, received, elapsed, latency, error = time.time(), b"", 0.0, [], ""
        counts: tuple[int | None, int | None] = (None, None)
        advertised = self.config.expected_kbps
        client = self.config.client
        try:
            with self._overlay(slot) as (tunnel, discovery):
                peer_record = discovery.resolve(node_id)
                advertised = advertised_kbps(peer_record, self.config.expected_kbps)
                endpoint = discovery.path_to(node_id, peer_record=peer_record)
                if endpoint is None:
                    raise ConnectionError("the overlay found no path to the node")
                agent = ClientAgent(tunnel=tunnel, chain=self._shared_payer, killswitch=_NoKillSwitch(), budget=client.budget,
                                    dead_after_s=max(client.dead_after_s, 5.0),
                                    max_latency_s=client.max_latency_ms / 1000,
                                    control_table=None if slot == 0 else CONTROL_TABLE_BASE + slot)
                try:
                    try:
                        agent.connect([Route(candidate, endpoint)])
                    finally:
                        arrive()
                    source = agent.session.terms.address_v4
                    tunnel.tun.ip("route", "replace", f"{target.hostname}/32", "dev", tunnel.tun.name, "src", source)
                    received, elapsed, rtt = self._download(target, url, source, tunnel.tun.name)
                    latency.append(rtt * 1000)
                    probe = agent.session.probe.last_rtt_s
                    if probe is not None:
                        latency.append(probe * 1000)
                    counts = self._session_counts(agent)
                finally:
                    with contextlib.suppress(Exception):
                        agent.disconnect()
                    if agent.control_rule is not None:  # the slot's table goes with its TUN, the rule not
                        with contextlib.suppress(Exception):
                            tunnel.tun.ip("-6", "rule", "del", *agent.control_rule)
        except Exception as exc:  # noqa: BLE001 - every failure of the node's is a failed challenge
            error = f"{type(exc).__name__}: {exc}"
            log.warning("challenge of %s failed: %s", node_id.hex()[:12], error)
        finally:
            arrive()  # a challenge that failed before its setup must not hold the others back
        transcript = record(node_id=node_id, epoch=epoch, challenger=str(self.account.address), started_at=started,
                            seed=seed, size=size, url=url, advertised_kbps=advertised,
                            received=received, elapsed_s=elapsed, latency_ms=latency, error=error,
                            tunnel_bytes=counts[0], node_bytes=counts[1])
        return transcript, judge(transcript, self.config.policy, self.store.uptime(node_id, epoch))

    @staticmethod
    def _session_counts(agent, wait_s: float = COUNT_WAIT_S) -> tuple[int, int]:
        """``(challenger's, node's)`` count of the session's tunnel bytes (both directions), once the
        node's invoice has caught up with what the challenger counted at the end of the download (or
        after ``wait_s``: a node whose count stays behind is caught by the verdict)."""
        status = agent.status()
        target = status["rx_bytes"] + status["tx_bytes"]
        deadline = time.monotonic() + wait_s
        while status["invoiced_bytes"] < target and time.monotonic() < deadline:
            time.sleep(0.05)
            status = agent.status()
        return status["rx_bytes"] + status["tx_bytes"], status["invoiced_bytes"]

    @staticmethod
    def _download(target, url: str, source: str, device: str | None = None) -> tuple[bytes, float, float]:
        """``(body, request-to-last-byte seconds, TCP connect seconds)`` of a GET through the tunnel.

        With ``device`` the socket is bound to that TUN (SO_BINDTODEVICE): concurrent challenges of
        a co-located group all fetch from the same payload host, whose one host route can point at
        only one of their TUNs (and two nodes may hand out the same tunnel address); a bound
        socket's route lookup only takes routes through its own device, else sends on-link there."""
        conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10,
                                          source_address=(source, 0))
        t0 = time.monotonic()
        if device:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            sock.settimeout(10)
            sock.bind((source, 0))
            sock.connect((target.hostname, target.port or 80))
            conn.sock = sock
        else:
            conn.connect()
        rtt = time.monotonic() - t0
        conn.request("GET", urlparse(url).path, headers={"User-Agent": "curl/8.5.0", "Accept": "*/*"})
        reply = conn.getresponse()
        chunks, deadline = [], t0 + DOWNLOAD_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                chunk = reply.read(_READ)
                if not chunk:
                    break
                chunks.append(chunk)
        except (OSError, http.client.HTTPException) as exc:
            log.info("download ended early: %s", exc)
        finally:
            conn.close()
        return b"".join(chunks), time.monotonic() - t0, rtt

    # -- slashing -----------------------------------------------------------------------------------

    def slash_previous(self) -> list[dict]:
        """Slash the nodes this challenger reported failed in the previous epoch whose epoch ended with a
        failure majority (reputation.slash_epoch; anyone may send it, the bounty goes to the epoch's
        first failure reporters, whoever sends it).

        The contract decides (``slash_refusal`` first, so no gas is spent on a refusal). Each node is
        decided once per epoch and remembered in the store: slashed, or refused for good (no majority,
        too few failures, slashed by someone else); an RPC error leaves it for the next call.
        Returns what was decided by this call: ``{"node_id", "epoch", "tx" or "refused"}``."""
        previous = int(self._chain_time() // self.epoch_length) - 1
        reputation, decided = self.contracts.reputation, []
        for node_id in self.store.failed_on_chain(previous):
            key = f"slash:{previous}:{node_id.hex()}"
            if self.store.get(key) is not None:
                continue
            outcome = {"node_id": node_id.hex(), "epoch": previous}
            try:
                refusal = str(reputation.slash_refusal(node_id, previous))
                if refusal:
                    outcome["refused"] = refusal
                else:
                    outcome["tx"] = str(reputation.slash_epoch(node_id, previous, sender=self.account).txn_hash)
            except Exception as exc:  # noqa: BLE001 - a refusal mined in between is final; anything else: next tick
                if "reputation: " not in str(exc):
                    log.warning("slash of %s for epoch %d not sent (%s): tried again next tick",
                                node_id.hex()[:12], previous, exc)
                    continue
                outcome["refused"] = str(exc)
            self.store.set(key, outcome.get("tx") or outcome["refused"])
            log.info("slash of %s for epoch %d: %s", node_id.hex()[:12], previous, outcome)
            decided.append(outcome)
        return decided

    # -- reports ------------------------------------------------------------------------------------

    def report_pending(self, epoch: int) -> int:
        """Send the epoch's unsent reports (and write proposals for tampering); returns how many went out.
        A failed send stays pending for the next tick."""
        sent = 0
        for pending in self.store.unreported(epoch):
            try:
                tx = self.contracts.reputation.report(
                    pending.node_id, epoch, pending.throughput_kbps, pending.latency_ms, pending.passed,
                    bytes.fromhex(pending.hash), sender=self.account)
            except Exception as exc:  # noqa: BLE001 - RPC down, chain restarted, a revert: try again next tick
                if "already reported" in str(exc):
                    self.store.mark_reported(pending.hash, "already")
                    continue
                if "not assigned to this node" in str(exc):  # final: the draw did not give it this node
                    log.warning("report on %s refused: not drawn for it this epoch", pending.node_id.hex()[:12])
                    self.store.mark_reported(pending.hash, "unassigned")
                    continue
                log.warning("report on %s not sent (%s): kept for the next tick", pending.node_id.hex()[:12], exc)
                continue
            self.store.mark_reported(pending.hash, str(tx.txn_hash))
            sent += 1
            if pending.tampered:
                self._propose(pending.hash)
        return sent

    def _propose(self, digest: str) -> None:
        transcript = self.store.transcript(digest)
        verdict = judge(transcript, self.config.policy)
        proposal = propose(transcript, verdict, chain_id=self.contracts.chain_id,
                           registry=str(self.contracts.revocations.address), proposer=str(self.account.address))
        path = proposal.save(self.config.proposals_dir / f"{transcript.node_id}.json")
        log.warning("node %s tampered with the payload: revocation proposal %s (send it to the guardians)",
                    transcript.node_id[:12], path)
