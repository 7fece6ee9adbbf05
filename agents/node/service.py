"""`warren node run`, put together: config -> chain, store, exit, tunnel, overlay, settlement, status.

This module only wires parts that live (and are tested) elsewhere; it runs until SIGTERM/SIGINT,
then stops in the safe order: no new sessions, sessions end, everything stored is settled, the exit
table is removed, the tunnel closes.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from agents.chain.bindings import node_id_of
from agents.chain.connect import connect, load_contracts
from agents.chain.deployment import Deployment
from agents.chain.directory import RegistryDirectory
from agents.chain.revocations import ChainRevocationAuthority, ChainRevocationPort, RevocationFollower
from agents import logs
from agents.errors import UserError
from agents.metering import ReceiptLedger
from agents.metrics import serve as serve_metrics
from agents.node import metrics as node_metrics
from agents.node import tamper
from agents.node.agent import NodeAgent
from agents.node.autoprice import AutoPrice
from agents.node.chain import NodeChain
from agents.node.config import NodeConfig
from agents.node.dashboard import start as start_dashboard
from agents.node.dns import NodeResolver
from agents.node.exit import ExitTable
from agents.node.policy import ExitPolicy
from agents.node.presence import NodePresence
from agents.node.pricing import AutoPricer
from agents.node.revocations import NodeRevocations
from agents.node.session import QUARANTINE_PREFIX, AddressPool, NodeOffer
from agents.node.settlement import ContractsChainPort, SettlementPolicy, Settler, default_threshold
from agents.node.store import NodeStore
from agents.overlay.revocation import RevocationList, SqliteRevocations
from agents.prover.chain import deployment_pools
from agents.unixctl import ControlServer
from agents.wallet import load_account, private_key_of
from agents.wireguard.config import decode_key, public_key
from agents.wireguard.runtime import Tunnel
from agents.wireguard.tun import DEFAULT_MTU

__all__ = ["run_node", "status_socket"]

log = logging.getLogger("warren.node")

#: How often the settlement loop looks at the store and the chain (seconds).
SETTLE_PERIOD_S = 2.0
#: Gas of one settle on payment_channels (docs/BENCHMARKS.md, "Settlement gas": 61,882).
SETTLE_GAS = 62_000
#: How long a stopping node keeps retrying settlements while the chain does not answer (seconds):
#: long enough to ride out an RPC restart, short of systemd's 90 s stop timeout.
SHUTDOWN_PATIENCE_S = 30.0


def status_socket(config: NodeConfig) -> Path:
    """Where the running node answers `warren node status`."""
    return Path(config.data_dir) / "node.sock"


def _read_key(path) -> bytes:
    try:
        return decode_key(Path(path).read_text().strip())
    except FileNotFoundError:
        raise UserError(f"no WireGuard key at {path}: make one with `warren node init`") from None
    except Exception as exc:  # noqa: BLE001 - agents.wireguard's ConfigError: not a key
        raise UserError(f"{path} does not hold a WireGuard key ({exc})") from None


def run_node(config: NodeConfig, *, ready: threading.Event | None = None,
             stop: threading.Event | None = None, config_path: Path | None = None) -> int:
    """Run the node until ``stop`` is set or SIGTERM/SIGINT arrives; returns an exit code."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop.set())
        # SIGHUP: read the config file's [exit] policy again and apply it without dropping sessions.
        signal.signal(signal.SIGHUP, lambda signum, frame: reload.set())
    reload = threading.Event()
    private_key = _read_key(config.wg_key_file)
    wg_public = public_key(private_key)
    node_id = node_id_of(wg_public)
    with connect(config.rpc, config.network) as project:
        contracts = load_contracts(project, config.deployment)
        operator = load_account(config.operator, config.network)
        logs.protect(config.operator, private_key, private_key_of(operator))  # never in a log line
        pools = deployment_pools(project, config.deployment, contracts.chain_id)  # voucher channels: these pools
        tx_lock = threading.Lock()  # one sender of the operator's transactions at a time (nonces)
        chain = NodeChain(contracts, operator, wg_public, voucher_pools=pools, tx_lock=tx_lock,
                          start_block=Deployment.load(config.deployment).block)
        # price_per_gib = "auto": start at the floor, or where an earlier run left the listing (within
        # the bounds); the main loop moves it once per epoch.
        price = (chain.auto_start_price(config.price.floor, config.price.ceiling) if config.auto_price
                 else config.price_per_gib)
        done = chain.ensure_registered(config.region, price, config.stake)
        log.info("node %s: %s (region %s, price %d token wei/GiB%s)", node_id.hex(), done, config.region,
                 price, ", auto" if config.auto_price else "")
        store = NodeStore(Path(config.data_dir) / "node.db")
        policy = ExitPolicy.from_dict(config.exit or {})
        pool = AddressPool(config.pool_v4, config.pool_v6)
        offer = NodeOffer(node_id=node_id, chain_id=contracts.chain_id, channels_address=str(contracts.channels.address),
                          price_per_gib=price, credit_bytes=config.credit_bytes,
                          # a receipt at least every half credit: a client paying on its cadence is never cut off
                          receipt_bytes=min(config.receipt_bytes, max(1, config.credit_bytes // 2)),
                          receipt_interval_s=config.receipt_interval_s,
                          max_pending=config.max_pending, setup_timeout_s=config.setup_timeout_s,
                          voucher_pools=tuple(pools), min_relayer_fee=config.min_relayer_fee)

        def ledger_for(terms, voucher=None):
            if voucher is None:
                store.upsert_channel(terms)
            else:  # kind "voucher": the settler settles it on its pool, with these terms
                store.upsert_channel(terms, kind="voucher", pool=voucher.pool, voucher_terms=voucher.to_json())
            return ReceiptLedger(terms, store.receipt_store(terms.channel_id))

        exit_table = ExitTable(config.interface, config.uplink, node_v4=pool.node_v4, node_v6=pool.node_v6,
                               pool_v4=config.pool_v4, pool_v6=config.pool_v6, quarantine_v6=QUARANTINE_PREFIX,
                               control_port=config.control_port, dns_port=53, policy=policy)
        resolver = NodeResolver([pool.node_v4, pool.node_v6], 53, upstream=config.dns_upstream,
                                policy_getter=lambda: exit_table.policy, is_admitted=exit_table.is_admitted,
                                on_resolved=exit_table.allow_resolved)
        relay = bool(config.public_endpoint)
        # IPv6 needs a link MTU of at least 1280 (RFC 8200), so the tunnel keeps WireGuard's 1420;
        # relayed datagrams are bounded by the overlay's 1232 bytes (agents.overlay.wgrelay), which
        # limits relayed exit sessions until relay frames may be larger (see docs: known limits).
        mtu = DEFAULT_MTU

        def tunnel_factory(interface_config, admit):
            # merge_udp=False: the exit's drop counters must see every UDP datagram (see Tunnel).
            tunnel = Tunnel(interface_config, config.interface, admit_unknown=admit, uapi=False,
                            merge_udp=False).start()
            return tamper.install(tunnel)  # TEST ONLY, off unless WARREN_TEST_TAMPER=1 (agents.node.tamper)

        agent = NodeAgent(tunnel_factory=tunnel_factory, chain=chain, offer=offer, pool=pool, ledger_for=ledger_for,
                          exit_table=exit_table, resolver=resolver, store=store, private_key=private_key,
                          listen_port=config.listen_port, mtu=mtu)
        port = ContractsChainPort(contracts, operator, pools, tx_lock=tx_lock)
        threshold = (default_threshold(SETTLE_GAS, int(config.gas_price_gwei * 10**9),
                                       int(config.token_price_eth * 10**18))
                     if config.settlement_threshold == "auto" else int(config.settlement_threshold))
        settler = Settler(store, port, SettlementPolicy(threshold))
        # revoked node ids: refused by the WireGuard admission and the overlay from the first handshake
        # (the list persists: a key revoked before a restart stays refused before any chain read)
        revoked = RevocationList(SqliteRevocations(Path(config.data_dir) / "revocations.db"))
        # first start: every revocation since the deployment's first block (a node revoked earlier)
        follower = RevocationFollower(ChainRevocationPort(contracts), revoked,
                                      start_block=Deployment.load(config.deployment).block)
        revocations = NodeRevocations(revoked, follower, agent=agent)
        presence = None
        control = metrics = dashboard = None
        auto = None
        try:
            agent.start()
            directory = RegistryDirectory(contracts)
            bootstrap = [tuple(b) for b in config.bootstrap]
            public = config.public_endpoint
            presence = NodePresence(agent.tunnel, operator_key=private_key_of(operator), region=config.region,
                                    price_per_gib=price, directory=directory,
                                    bootstrap=bootstrap or ([public] if public else []),
                                    public_endpoint=public, relay=relay,
                                    peers_file=Path(config.data_dir) / "overlay-peers.json",
                                    authority=ChainRevocationAuthority(contracts), revocations=revoked,
                                    capacity_kbps=config.advertised_kbps)
            revocations.attach_presence(presence)
            presence.start()
            revocations.step()  # revocations made while this node was down, before serving
            revocations.start()
            settler.recover()  # a previous run's stored receipts that were never settled
            if config.auto_price:
                auto = AutoPrice(AutoPricer(config.price, chain.price_epoch_s(), time.time()), chain, store,
                                 config.region, apply=lambda listed: _offer_price(agent, presence, listed))
                log.info("auto price: %d token wei/GiB now, within [%d, %d], towards %.0f %% of %g Mbit/s; "
                         "next decision at unix time %.0f", price, config.price.floor, config.price.ceiling,
                         100 * config.price.target_utilisation, config.price.capacity_mbps,
                         auto.pricer.next_decision_at())
            control = ControlServer(status_socket(config), lambda request: _status(agent, presence, settler, auto))
            metrics = serve_metrics(config.metrics, lambda: node_metrics.families(
                node_metrics.snapshot(agent, settler, store)))
            dashboard = start_dashboard(config, config_path, contracts=contracts, chain=chain, agent=agent,
                                        store=store, settler=settler, exit_table=exit_table, presence=presence)
            log.info("node %s ready: %s", node_id.hex()[:16], presence.status().get("endpoints"))
            if ready is not None:
                ready.set()
            while not stop.wait(SETTLE_PERIOD_S):  # a SIGHUP is applied within one period
                if reload.is_set():
                    reload.clear()
                    _reload_policy(config_path, exit_table)
                settler.step(time.time())
                if auto is not None:
                    auto.step(time.time())
        finally:
            log.info("stopping: ending sessions, settling, removing the exit")
            revocations.close()
            if control is not None:
                control.close()
            if metrics is not None:
                metrics.close()
            if dashboard is not None:
                dashboard.close()
            if presence is not None:
                presence.close()
            agent.stop()
            try:
                settler.shutdown(time.time(), patience_s=SHUTDOWN_PATIENCE_S)
            except Exception as exc:  # noqa: BLE001 - logged; stored receipts settle on the next start
                log.error("settlement at shutdown failed (%s): the receipts are stored and settle on the next "
                          "start", exc)
            store.close()
    return 0


def _reload_policy(config_path: Path | None, exit_table: ExitTable) -> None:
    """Apply the config file's current exit policy (a bad file keeps the policy in force)."""
    from agents.node.config import load_config

    if config_path is None:
        log.warning("SIGHUP: no config file to reload the exit policy from")
        return
    try:
        policy = ExitPolicy.from_dict(load_config(config_path).exit or {})
        exit_table.set_policy(policy)
    except Exception as exc:  # noqa: BLE001 - a config error must not stop a serving node
        log.error("SIGHUP: exit policy not changed: %s", exc)
        return
    log.info("SIGHUP: exit policy now %s", policy.to_dict())


def _offer_price(agent: NodeAgent, presence, price_per_gib: int) -> None:
    """Offer the listed price from now on (new channels; open ones keep the price they opened at)."""
    if agent.offer.price_per_gib != price_per_gib:
        agent.set_price(price_per_gib)
    if presence is not None:
        presence.price_per_gib = price_per_gib  # the next PeerRecord carries it


def _status(agent: NodeAgent, presence, settler, auto: AutoPrice | None = None) -> dict:
    status = agent.status()
    status["overlay"] = presence.status() if presence else None
    status["settlement"] = settler.status()
    status["price"] = auto.status() if auto is not None else {"mode": "fixed"}
    revocations = getattr(agent, "revocations", None)
    if revocations is not None:
        status["revocations"] = revocations.status()
    return status
