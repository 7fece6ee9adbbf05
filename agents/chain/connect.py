"""Attach ape to a chain that is already running, and find Warren's contracts on it.

ape's ``parse_network_choice("ethereum:local:foundry")`` starts an anvil of its own when nothing
answers at the configured host; an agent must never do that (it would sell bandwidth against an
empty chain nobody else sees). :func:`connect` first asks the RPC for its chain id itself and, when
nobody answers within a few seconds, raises :class:`ChainUnavailable` with plain words. Attached to a
running anvil, ape's provider has no process of its own, so leaving the context never stops the chain.

The ape project is always the repository (contracts/, ape-config.yaml), whatever the current folder,
and the virtual environment's bin folder goes on PATH so that ape-vyper finds the pinned compiler.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from agents.chain.bindings import WarrenContracts
from agents.chain.deployment import Deployment, DeploymentError, default_path
from agents.errors import RemoteError, UserError

__all__ = [
    "ChainMismatch",
    "ChainUnavailable",
    "DEFAULT_NETWORK",
    "DEFAULT_RPC",
    "REPO_ROOT",
    "chain_id_at",
    "connect",
    "load_contracts",
    "load_deployment",
    "repo_project",
]

#: The repository: contracts/ and ape-config.yaml live here (agents/chain/connect.py -> ../..).
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_NETWORK = "ethereum:local:foundry"
#: How long to wait for the RPC to answer (seconds): covers an anvil that is still starting.
DEFAULT_WAIT_S = 3.0
#: One probe's socket timeout (seconds): a local node answers eth_chainId in milliseconds.
_PROBE_TIMEOUT_S = 1.0


class ChainUnavailable(RemoteError):
    """Nothing answers JSON-RPC at the configured address."""


class ChainMismatch(UserError):
    """The deployment file was made on another chain than the one we are connected to."""


def chain_id_at(rpc_url: str, timeout_s: float = _PROBE_TIMEOUT_S) -> int:
    """Ask ``rpc_url`` for its chain id (eth_chainId) with a plain HTTP POST.

    Raises:
        OSError: nobody answers (refused, unreachable, timeout).
        ValueError: something answers, but not JSON-RPC.
    """
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(rpc_url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - http(s) URL from config
        answer = json.loads(response.read())
    return int(answer["result"], 16)


def _wait_for_chain(rpc_url: str, wait_s: float) -> int:
    deadline = time.monotonic() + wait_s
    last: Exception | None = None
    while True:
        try:
            return chain_id_at(rpc_url, min(_PROBE_TIMEOUT_S, max(0.1, deadline - time.monotonic())))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    reason = getattr(last, "reason", last)
    raise ChainUnavailable(f"no chain answers at {rpc_url}: is it running? (checked for {wait_s:g} s; {reason})")


def _ensure_venv_on_path() -> None:
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")


def _ape_logs_to_stderr() -> None:
    """ape prints its INFO lines ("Connecting to a 'anvil' node.", "Confirmed 0x...") on stdout, which
    is a command's answer (`warren node status --json`): every level goes to stderr instead."""
    import logging

    import ape.logging  # noqa: F401 - installs ape's handler on the "ape" logger, which we then adjust

    for handler in logging.getLogger("ape").handlers:
        if hasattr(handler, "echo_kwargs"):  # ape.logging.ClickHandler: click.echo(msg, **kwargs[level])
            handler.echo_kwargs = {level: {"err": True} for level in ("error", "warning", "success", "info", "debug")}


def repo_project():
    """The ape project of the repository (contracts compile from here wherever we run)."""
    _ensure_venv_on_path()
    import ape

    local = ape.project
    if Path(local.path).resolve() == REPO_ROOT:
        return local
    return ape.Project(REPO_ROOT)


def _is_local(network: str) -> bool:
    parts = network.split(":")
    return len(parts) > 1 and parts[1] == "local"


def _same_endpoint(provider, rpc_url: str) -> bool:
    uri = getattr(provider, "http_uri", None) or getattr(provider, "uri", None)
    return bool(uri) and str(uri).rstrip("/") == rpc_url.rstrip("/")


@contextlib.contextmanager
def connect(rpc_url: str | None = DEFAULT_RPC, network: str = DEFAULT_NETWORK,
            wait_s: float = DEFAULT_WAIT_S) -> Iterator[object]:
    """Attach ape to the running chain at ``rpc_url`` for the duration of the block; yields the project.

    ape is pointed at ``rpc_url`` (foundry's ``host`` on a local network, the node provider's
    ``uri`` on any other), so the RPC probed is the RPC used; without ``rpc_url`` the network's URI
    comes from ape-config.yaml. If ape is already connected to that same endpoint (inside ``ape
    test``, or a nested call) the existing connection is used.

    Raises:
        ChainUnavailable: nothing answered eth_chainId within ``wait_s`` seconds.
    """
    _ensure_venv_on_path()
    from ape import networks

    _ape_logs_to_stderr()
    if rpc_url:
        _wait_for_chain(rpc_url, wait_s)
    project = repo_project()
    active = networks.active_provider
    if active is not None and active.is_connected and (not rpc_url or _same_endpoint(active, rpc_url)):
        yield project
        return
    settings = ({"host": rpc_url} if _is_local(network) else {"uri": rpc_url}) if rpc_url else {}
    try:
        context = networks.parse_network_choice(network, provider_settings=settings or None)
    except Exception as exc:  # noqa: BLE001 - an unknown ecosystem/network/provider name
        raise UserError(f"ape does not know the network {network!r}: {exc}") from None
    with _contract_caches_kept(active), context:
        provider = networks.active_provider
        if getattr(provider, "process", None) is not None:  # ape started a chain: not what we asked for
            raise ChainUnavailable(f"no chain answers at {rpc_url}: is it running?")
        yield project


@contextlib.contextmanager
def _contract_caches_kept(active) -> Iterator[None]:
    """Give the connection that was active before (if any) its in-memory contract caches back.

    ape keys those caches by network name ("ethereum:local"), not by endpoint, so two local chains
    share one: attaching to a second anvil and binding its contracts (``project.x.at(address)``)
    overwrote the first chain's entries at the same deterministic addresses, and a later trace on
    the first chain decoded its calls with the wrong ABI (CI: ``tx.return_value`` failing with
    "'NoneType' object has no attribute 'outputs'" in node_registry's tests, after an end-to-end
    test had attached to its lab's chain in the same process).
    """
    if active is None or not active.is_connected:
        yield
        return
    from ape import chain

    contracts = chain.contracts
    caches = [contracts.contract_types, contracts.proxy_infos, contracts.contract_creations, contracts.blueprints]
    saved = [dict(cache.memory) for cache in caches]
    try:
        yield
    finally:
        for cache, memory in zip(caches, saved):
            cache.memory = memory


def load_deployment(path: str | os.PathLike) -> Deployment:
    """The deployment file at ``path``, checked against the connected chain's id.

    Raises:
        DeploymentError: the file is missing, not JSON or incomplete (plain message).
        ChainMismatch: the file was written for another chain id.
    """
    from ape import chain

    deployment = Deployment.load(path)
    connected = int(chain.chain_id)
    if deployment.chain_id != connected:
        raise ChainMismatch(f"deployment file {path} is for chain {deployment.chain_id}, but the chain at the "
                            f"RPC is chain {connected}: point --deployment/--rpc at the same chain")
    return deployment


def load_contracts(project, deployment_path: str | os.PathLike | None = None,
                   network: str = DEFAULT_NETWORK) -> WarrenContracts:
    """Warren's contracts as the deployment file names them, on the connected chain.

    Args:
        project: the ape project (from :func:`connect`).
        deployment_path: the file `ape run deploy` wrote (default ``deployments/<ecosystem>-<net>.json``
            in the repository).
        network: the network choice, for the default path.

    Raises:
        DeploymentError: the file is missing, not JSON or incomplete (plain message).
        ChainMismatch: the file was written for another chain id.
    """
    from ape import chain

    path = Path(deployment_path) if deployment_path else default_path(network, REPO_ROOT)
    deployment = load_deployment(path)
    connected = int(chain.chain_id)
    try:
        return WarrenContracts.at(project, deployment, connected)
    except DeploymentError:
        raise
    except Exception as exc:  # noqa: BLE001 - a contract type ape cannot build from this repository
        raise DeploymentError(f"deployment file {path}: cannot attach to its contracts ({exc})") from None
