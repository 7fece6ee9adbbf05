"""`warren connect`, `warren status`, `warren disconnect`, put together.

`connect` runs in the foreground until `warren disconnect` (or SIGTERM/SIGINT, which disconnect the
same way). What it changes on the host is written to a state file first (0600, in the data folder),
so that `warren disconnect` can undo it even after the client process was killed: the kill switch's
nftables table, the full-tunnel routes and rules, and resolv.conf. While the state file says
"connected", the kill switch stays: a crash fails closed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from agents.chain.connect import connect as chain_connect
from agents.chain.connect import load_contracts
from agents.chain.directory import RegistryDirectory
from agents.chain.revocations import ChainRevocationPort, RevocationFollower
from agents.client.agent import ClientAgent, ConnectError, Route
from agents.client.chain import client_port
from agents.client.config import ClientConfig
from agents.client.discovery import ClientDiscovery
from agents.client import metrics as client_metrics
from agents.client.hops import INNER_MTU, TwoHops, exit_endpoint, pair_plans
from agents.client.hostcmd import run as run_host
from agents.client.killswitch import KillSwitch
from agents.client.multipath import MultiPath, PathRouting, SharedEndpoints, reach_from_paths
from agents.client.paths import MAX_PATHS, NFT_TABLE as PATHS_TABLE, choose_exits, own_lookups, path_routes, tun_name
from agents.client.resolvconf import ResolvConf
from agents.client.routes import FullTunnelRoutes
from agents.client.rpc_access import pinned, rpc_endpoints
from agents.client.revocation import ClientRevocations
from agents.overlay.revocation import RevocationList
from agents.client.selection import check_regions, eligible, rank
from agents.errors import UserError
from agents.metrics import serve as serve_metrics
from agents.unixctl import ControlServer, NotRunning, request
from agents.wireguard.child import ChildTunnel
from agents.wireguard.config import InterfaceConfig, generate_private_key
from agents.wireguard.runtime import Tunnel

__all__ = ["disconnect", "run_connect", "status"]

log = logging.getLogger("warren.client")

#: Nodes whose endpoint and latency are looked up before choosing (the best, a standby, spares).
LOOKUPS = 4
#: When no node is reachable through the overlay: keep looking this long, pausing between rounds.
DISCOVERY_PATIENCE_S = 40.0
DISCOVERY_PAUSE_S = 5.0
#: The kill switch's nftables table.
KILLSWITCH_TABLE = "warren_client"
#: The resolver file `connect` points at the node's DNS (restored by `disconnect`).
RESOLV_CONF = "/etc/resolv.conf"
#: Tunnel MTU: WireGuard's usual 1420 (IPv6 inside the tunnel needs at least 1280, RFC 8200).
CLIENT_MTU = 1420
#: Whether `--hops 2` runs the relay's tunnel in a child process (two cores for the two tunnels):
#: off with WARREN_OUTER_PROCESS=0 in the environment (both in this process, as before; for benchmarks).
OUTER_PROCESS = os.environ.get("WARREN_OUTER_PROCESS", "1") != "0"


def _started_tunnel(*args, **kwargs) -> Tunnel:
    return Tunnel(*args, **kwargs).start()


def _state_file(config: ClientConfig) -> Path:
    return Path(config.data_dir) / "connection.json"


def _socket(config: ClientConfig) -> Path:
    return Path(config.data_dir) / "client.sock"


def _write_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


#: The failover reason `warren switch` gives (the node is alive: its channel closes cooperatively).
SWITCH_WHY = "switched by the user"


def run_connect(config: ClientConfig, *, region: str | None = None, max_price: int | None = None,
                budget: int | None = None, node: str | None = None, pay: str | None = None,
                stop: threading.Event | None = None, hops: int = 1, relay_region: str | None = None,
                paths: int = 1) -> int:
    """Connect and stay connected (failing over as needed) until told to disconnect.

    ``hops=2``: through a relay node of another operator (``relay_region``: of that region) to the
    exit (agents.client.hops); ``region`` and ``node`` choose the exit. ``region`` may list several
    regions, most wanted first ("NL,DE": agents.client.selection).
    ``paths=N``: N exits of different operators at once, new flows spread over them
    (agents.client.multipath).
    """
    if hops not in (1, 2):
        raise UserError(f"--hops {hops}: only 1 or 2 hops are supported")
    if not 1 <= paths <= MAX_PATHS or (paths > 1 and (hops != 1 or node)):
        raise UserError(f"--paths {paths}: 1 to {MAX_PATHS} paths, with one hop and without --node")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop.set())
    region = region or config.region
    try:
        regions = check_regions(region) if region else ()
        relay_regions = check_regions(relay_region) if relay_region else ()
    except ValueError as exc:
        raise UserError(f"--region/--relay-region: {exc}") from None
    max_price = max_price if max_price is not None else config.max_price
    budget = budget or config.budget
    pay = pay or config.pay  # "voucher": agents.client.chain.VoucherChain (the account is never loaded)
    state_path = _state_file(config)
    if config.killswitch_exceptions:
        raise UserError("kill switch exceptions are not supported yet: remove [killswitch] exceptions from the "
                        "config (everything goes through the tunnel)")
    # The chain RPC is the kill switch's one exception; its name is resolved now, while DNS works.
    rpc = rpc_endpoints(config.rpc)
    killswitch = KillSwitch(KILLSWITCH_TABLE)
    routes = FullTunnelRoutes(config.interface, bypass=tuple(rpc.pairs) if rpc else ())
    resolv = ResolvConf(RESOLV_CONF, str(Path(config.data_dir) / "resolv-backup"))
    bootstrap = [tuple(b) for b in config.bootstrap]
    allow = [(address, port, "tcp") for address, port in rpc.pairs] if rpc else []
    if rpc:
        log.info("chain RPC %s reached outside the tunnel at %s (the kill switch's one exception)", rpc.host,
                 ", ".join(f"{a}:{p}" for a, p in rpc.pairs))
    # Fail closed from the first moment: nothing leaves but what the kill switch names.
    _write_state(state_path, {"status": "connecting", "pid": os.getpid(), "killswitch": KILLSWITCH_TABLE,
                              "routes": routes.to_dict(), "resolv_conf": RESOLV_CONF,
                              "resolv_backup": str(Path(config.data_dir) / "resolv-backup")})
    killswitch.engage(config.interface, bootstrap, allow)
    tunnel = Tunnel(InterfaceConfig(private_key=generate_private_key(), listen_port=0,
                                    mtu=CLIENT_MTU if hops == 1 else INNER_MTU), config.interface, uapi=False,
                    manage_routes=False).start()
    # Two hops: the relay's tunnel carries the exit's; it alone talks to the uplink (and the overlay).
    # It runs in a child process of its own (agents.wireguard.child), so that the two tunnels'
    # encryption, which holds the GIL, uses two cores; WARREN_OUTER_PROCESS=0 keeps it in this one.
    outer = tunnel if hops == 1 else (ChildTunnel if OUTER_PROCESS else _started_tunnel)(
        InterfaceConfig(private_key=generate_private_key(), listen_port=0, mtu=CLIENT_MTU),
        (config.interface[:14] + "r"), uapi=False, manage_routes=False)
    if outer is not tunnel:
        killswitch.set_tuns([config.interface, outer.tun.name])
    # --paths N: a TUN per later path (the first is the full tunnel's).
    more = [Tunnel(InterfaceConfig(private_key=generate_private_key(), listen_port=0, mtu=CLIENT_MTU),
                   tun_name(config.interface, index), uapi=False, manage_routes=False).start()
            for index in range(1, paths)]
    if more:
        killswitch.set_tuns([config.interface, *(t.tun.name for t in more)])
    routes.install()
    _write_state(state_path, {"status": "connected", "pid": os.getpid(), "killswitch": KILLSWITCH_TABLE,
                              "routes": routes.to_dict(), "resolv_conf": RESOLV_CONF,
                              "resolv_backup": str(Path(config.data_dir) / "resolv-backup")})
    agent = control = discovery = metrics = revocations = None
    try:
        with pinned(rpc), chain_connect(config.rpc, config.network) as project:
            contracts = load_contracts(project, config.deployment)
            chain = client_port(project, contracts, config, pay)
            revocation_port = ChainRevocationPort(contracts)
            first_block = revocation_port.head()  # revocations from here on are followed while connected
            everyone = chain.candidates()
            candidates = eligible(everyone, regions=regions, max_price=max_price)
            if node:
                candidates = [c for c in candidates if c.node.node_id.hex() == node.lower().removeprefix("0x")]
                if not candidates:
                    raise UserError(f"node {node} is not an eligible registered node (revoked, unbonding, "
                                    "inactive, over --max-price or outside --region?)")
            if not candidates:
                raise UserError("no registered node matches (region {}, max price {})".format(",".join(regions) or "any",
                                                                                            max_price))
            killswitch.set_open_ports([outer.listen_port])  # discovery window: punching needs it
            discovery = ClientDiscovery(outer, directory=RegistryDirectory(contracts), bootstrap=bootstrap)
            if hops == 2:
                relays = eligible(everyone, regions=relay_regions, max_price=max_price)
                agent = _two_hops(discovery, candidates, relays, stop, outer=outer, tunnel=tunnel, chain=chain,
                                  killswitch=killswitch, resolv=resolv, budget=budget, config=config)
                discovery = None
                _write_state(state_path, {**json.loads(state_path.read_text()), "ip_rules": agent.ip_rules})
                found = []
            elif paths > 1:
                agent = _multipath(discovery, candidates, stop, tunnels=[tunnel, *more], chain=chain,
                                   killswitch=killswitch, bootstrap=bootstrap, resolv=resolv, budget=budget,
                                   config=config, state_path=state_path)
                found = []
            else:
                found = _find_paths(discovery, rank(candidates, regions)[:LOOKUPS], stop)
            killswitch.set_open_ports([])
            if hops == 1 and paths == 1:
                by_id = {c.node.node_id: e for c, e in found}
                ranked = rank([c for c, _ in found], regions)
                if not ranked:
                    raise UserError("no eligible node could be reached through the overlay")
                plan = [Route(c, by_id[c.node.node_id]) for c in ranked]
                killswitch.set_endpoints(bootstrap + [r.endpoint for r in plan])
                agent = ClientAgent(tunnel=tunnel, chain=chain,
                                    killswitch=_EndpointsWithBootstrap(killswitch, bootstrap),
                                    resolv=resolv, budget=budget, dead_after_s=config.dead_after_s,
                                    max_latency_s=config.max_latency_ms / 1000)
                agent.connect(plan)
            revocations = agent.follow_revocations(revocation_port, first_block) if paths > 1 else ClientRevocations(
                agent if hops == 1 else agent.exit, RevocationFollower(
                    revocation_port, RevocationList(), start_block=first_block)).start()
            control = ControlServer(_socket(config), lambda body: _handle(body, agent, stop))
            metrics = serve_metrics(config.metrics, lambda: client_metrics.families(
                client_metrics.snapshot(agent, tunnel)))
            print(json.dumps({"connected": agent.status()}), flush=True)
            while not stop.wait(0.5):
                pass
            summary = agent.disconnect()
            log.info("disconnected: %s", summary)
    except ConnectError as exc:
        raise UserError(str(exc)) from None
    finally:
        if revocations is not None:
            revocations.close()
        if control is not None:
            control.close()
        if metrics is not None:
            metrics.close()
        if discovery is not None:
            with contextlib.suppress(Exception):
                discovery.close()
        if stop.is_set():  # an explicit disconnect (or SIGTERM): undo everything
            _undo(state_path)
        for each in {id(t): t for t in (tunnel, outer, *more)}.values():
            with contextlib.suppress(Exception):
                each.close()
    return 0


def _two_hops(discovery: ClientDiscovery, exits: list, relays: list, stop: threading.Event, *, outer, tunnel,
              chain, killswitch, resolv, budget: int, config: ClientConfig) -> TwoHops:
    """Choose and connect a relay and an exit of different operators (agents.client.hops).

    Relays are probed through the overlay as single-hop nodes are; exits only resolved (their signed
    PeerRecord): our address never reaches an exit. The overlay is closed before the tunnels come
    up, so from then on the uplink carries nothing but WireGuard to the relays.
    """
    found = _find_paths(discovery, rank(relays)[:LOOKUPS], stop)
    relay_endpoints = {c.node.node_id: e for c, e in found}
    exit_endpoints = {}
    for candidate in rank(exits)[:LOOKUPS]:
        endpoint = exit_endpoint(discovery.resolve(candidate.node.node_id))
        if endpoint is None:
            log.warning("exit %s: no public IPv4 endpoint in its record", candidate.node.node_id.hex()[:12])
        else:
            exit_endpoints[candidate.node.node_id] = endpoint
    exit_plan, relay_plan = pair_plans([c for c in rank(exits) if c.node.node_id in exit_endpoints],
                                       rank([c for c, _ in found]))
    if not exit_plan:
        raise UserError("no relay and exit of different operators could be reached through the overlay "
                        "(two hops need at least two operators; is --relay-region too narrow?)")
    with contextlib.suppress(Exception):
        discovery.close()
    relay_routes = [Route(c, relay_endpoints[c.node.node_id]) for c in relay_plan]
    killswitch.set_endpoints([r.endpoint for r in relay_routes])
    agent = TwoHops(outer_tunnel=outer, inner_tunnel=tunnel, chain=chain,
                    killswitch=_EndpointsWithBootstrap(killswitch, []), resolv=resolv, budget=budget,
                    exit_routes=[Route(c, exit_endpoints[c.node.node_id]) for c in exit_plan],
                    dead_after_s=config.dead_after_s, max_latency_s=config.max_latency_ms / 1000)
    agent.connect(relay_routes)
    return agent


def _multipath(discovery: ClientDiscovery, candidates: list, stop: threading.Event, *, tunnels: list, chain,
               killswitch, bootstrap: list, resolv, budget: int, config: ClientConfig, state_path: Path) -> MultiPath:
    """Choose N exits of different operators and connect a path to each (agents.client.multipath).

    Exits are probed through the overlay from the first tunnel, as for one path. An exit behind a
    NAT (punched or relayed from the first tunnel's socket) is looked up again by each later path
    that has it in its plan, from that path's own socket, by a discovery of its own; the kill switch
    is open to the tunnels' ports only while they look. What the paths add to the host is written to
    the state file before it is added.
    """
    found = _find_paths(discovery, rank(candidates)[:LOOKUPS + 2 * len(tunnels)], stop)
    shared = {c.node.node_id: e for c, e in found}
    public = {nid for nid, (kind, _) in discovery.paths.items() if kind == "public"}
    plans = choose_exits(rank([c for c, _ in found]), len(tunnels))
    if not plans:
        raise UserError(f"--paths {len(tunnels)}: fewer operators than paths could be reached through the overlay "
                        "(each path's exit is of another operator)")
    local = lambda c: int.from_bytes(c.node.node_id, "big") not in public  # noqa: E731
    wanted = own_lookups(plans, local)
    discoveries = {index: discovery.sibling(tunnels[index]) for index in wanted}
    try:
        killswitch.set_open_ports([tunnels[index].listen_port for index in wanted])
        own = reach_from_paths(discoveries, wanted, stop)
        killswitch.set_open_ports([])
        routes = path_routes(plans, shared, local, own)
        if not all(routes):
            raise UserError(f"--paths {len(tunnels)}: path(s) {[i for i, r in enumerate(routes) if not r]} reached "
                            "none of their exits (behind a NAT) from their own socket")
        agent = MultiPath(tunnels=tunnels, chain=chain, endpoints=SharedEndpoints(killswitch, bootstrap), resolv=resolv,
                          budget=budget, routing=PathRouting([t.tun.name for t in tunnels]),
                          dead_after_s=config.dead_after_s, max_latency_s=config.max_latency_ms / 1000,
                          discoveries=discoveries.values())
    except BaseException:
        for each in discoveries.values():
            with contextlib.suppress(Exception):
                each.close()
        raise
    _write_state(state_path, {**json.loads(state_path.read_text()), "ip_rules": agent.ip_rules,
                              "nft_tables": [PATHS_TABLE]})
    agent.connect([[Route(c, endpoint) for c, endpoint in plan] for plan in routes])
    return agent


def _find_paths(discovery: ClientDiscovery, candidates: list, stop: threading.Event) -> list:
    """``(candidate with its latency, endpoint)`` for each candidate the overlay leads to.

    When none is found, looks again for up to :data:`DISCOVERY_PATIENCE_S`: the overlay heals within
    a few stabilisation rounds (a restarted bootstrap node, a node republishing its record).
    """
    deadline = time.monotonic() + DISCOVERY_PATIENCE_S
    while True:
        found = []
        for candidate in candidates:
            endpoint = discovery.path_to(candidate.node.node_id)
            if endpoint is None:
                log.warning("node %s: no path found through the overlay", candidate.node.node_id.hex()[:12])
                continue
            latency = discovery.rtt(candidate.node.node_id)
            found.append((candidate.__class__(**{**candidate.__dict__, "latency_s": latency}), endpoint))
        if found or time.monotonic() + DISCOVERY_PAUSE_S >= deadline:
            return found
        log.warning("no node reachable through the overlay yet: looking again in %.0f s", DISCOVERY_PAUSE_S)
        if stop.wait(DISCOVERY_PAUSE_S):
            return found


class _EndpointsWithBootstrap:
    """The kill switch as the agent sees it: its endpoint list always keeps the overlay bootstrap."""

    def __init__(self, killswitch: KillSwitch, bootstrap: list) -> None:
        self._ks, self._bootstrap = killswitch, list(bootstrap)

    def set_endpoints(self, endpoints) -> None:
        self._ks.set_endpoints(self._bootstrap + [tuple(e) for e in endpoints])


def _handle(body: dict, agent: ClientAgent, stop: threading.Event) -> dict:
    command = body.get("command")
    if command == "status":
        return agent.status()
    if command == "disconnect":
        stop.set()
        return {"disconnecting": True}
    if command == "switch":
        if not isinstance(agent, ClientAgent):
            return {"error": "switch moves a one-hop, one-path connection; with --hops 2 or --paths N "
                             "disconnect and connect again"}
        before = agent.status().get("node_id")
        if before is None:
            return {"error": "not connected to any node yet"}
        agent.failover(SWITCH_WHY, answering=True)
        after = agent.status()
        if after.get("node_id") in (None, before):
            return {"error": "no other node to switch to (the connection stays where it was)", **after}
        return {"switched": True, "from": before, **after}
    return {"error": f"unknown command {command!r}"}


def switch(config: ClientConfig) -> dict:
    """Ask the running client to move to its standby node now (:data:`SWITCH_WHY`).

    Raises:
        UserError: no client is running.
    """
    try:
        return request(_socket(config), {"command": "switch"}, timeout=60)
    except NotRunning:
        raise UserError("no `warren connect` is running for this config") from None


def _undo(state_path: Path) -> dict:
    """Remove what a connection changed on the host, from its state file."""
    try:
        state = json.loads(state_path.read_text())
    except FileNotFoundError:
        return {"undone": False}
    for args in state.get("ip_rules", []):  # --hops 2: the relay hop's control rule; --paths N: its routing
        with contextlib.suppress(Exception):
            run_host(["ip", *args])
    for table in state.get("nft_tables", []):  # --paths N: the flow-spreading table
        with contextlib.suppress(Exception):
            run_host(["nft", "delete", "table", "inet", table])
    ResolvConf(state["resolv_conf"], state["resolv_backup"]).restore()
    FullTunnelRoutes.from_dict(state["routes"]).remove()
    KillSwitch(state["killswitch"]).release()
    state_path.unlink()
    return {"undone": True}


def status(config: ClientConfig) -> dict:
    """The running client's status (or what is left of a dead one)."""
    try:
        return request(_socket(config), {"command": "status"})
    except NotRunning:
        if _state_file(config).exists():
            return {"connected": False, "note": "the client is not running but its kill switch is still up: "
                                                "run `warren disconnect` to restore the network"}
        return {"connected": False}


def disconnect(config: ClientConfig, timeout: float = 30.0) -> dict:
    """Ask the running client to disconnect; clean up after a dead one."""
    try:
        answer = request(_socket(config), {"command": "disconnect"})
    except NotRunning:
        return _undo(_state_file(config))
    deadline = time.monotonic() + timeout
    while _state_file(config).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if _state_file(config).exists():
        return {**_undo(_state_file(config)), "note": "the client did not finish in time; cleaned up"}
    return {**answer, "undone": True}
