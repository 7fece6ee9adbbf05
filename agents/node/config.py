"""The node's config file (TOML, 0600): what `warren node init` writes and `warren node run` reads.

::

    region = "DE"                      # ISO 3166-1 alpha-2, as registered on chain
    price_per_gib = 1000000000000000   # token wei per GiB carried, or "auto" with a [price] table
    capacity_mbps = 25                 # optional: the bandwidth advertised in the PeerRecord (challengers
                                       # measure against it); default the [price] table's, else none
    stake = "100000000000000000000"    # token wei (strings of digits past TOML's 2**63)
    credit_bytes = 16777216            # unpaid bytes the node carries before a cut-off (16 MiB)
    receipt_bytes = 1048576            # a receipt every 1 MiB (at most half the credit) ...
    receipt_interval_s = 5             # ... or every 5 s, whichever first
    data_dir = "/var/lib/warren/node"  # SQLite store, control socket (relative paths: from this file)
    wg_key_file = "wg.key"             # default <data_dir>/wg.key (0600)
    interface = "warren0"              # TUN name (unique per host: wireguard's UAPI folder is shared)
    listen_port = 51820
    public_endpoint = "203.0.113.7:51820"  # omit behind a NAT
    uplink = "eth0"                    # omit: the default route's interface
    pool_v4 = "10.77.0.0/16"
    pool_v6 = "fd77:7272::/64"
    control_port = 7700
    dns_upstream = "9.9.9.9:53"        # omit: the host's resolver
    max_pending = 32
    setup_timeout_s = 20
    min_relayer_fee = "10000000000000000"  # token wei a voucher client pays for the redemption's gas
    bootstrap = ["198.51.100.1:51820"]

    [price]                            # only with price_per_gib = "auto" (agents.node.pricing)
    floor = 500000000000000            # token wei per GiB: never below ...
    ceiling = 5000000000000000         # ... nor above
    capacity_mbps = 25                 # the bandwidth sold (utilisation is measured against it)
    target_utilisation = 0.7           # optional: the share of capacity the price aims to sell
    step = 0.5                         # optional: price x step x (utilisation - target) per epoch

    [settlement]
    threshold = "auto"                 # or token wei
    gas_price_gwei = 10
    token_price_eth = 0.001            # ETH per token, for "auto": gas <= 1 % of the amount settled

    [exit]                             # agents.node.policy.ExitPolicy.from_dict reads this table

    [metrics]                          # Prometheus endpoint (agents.metrics)
    enabled = true
    listen = "127.0.0.1:9470"          # loopback by default

    [dashboard]                        # the operator's page (agents.node.dashboard)
    enabled = true
    listen = "127.0.0.1:9480"          # loopback by default; login token in <data_dir>/dashboard.token

    [chain]
    rpc = "http://127.0.0.1:8545"
    network = "ethereum:local:foundry"
    deployment = "deployments/ethereum-local.json"

    [operator]                         # one of: keystore + passphrase_file | passphrase_env,
    keystore = "operator.json"         #         ape_alias (+ optional passphrase source),
    passphrase_file = "passphrase"     #         test_account = N (local networks only)

:func:`load_config` checks every key and refuses unknown ones, so errors surface at load with the
file, the key, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from agents.chain.connect import DEFAULT_NETWORK, DEFAULT_RPC, REPO_ROOT
from agents.chain.deployment import default_path
from agents.metrics import DEFAULT_NODE_PORT, ListenSettings, read_listen
from agents.node.pricing import DEFAULT_STEP, DEFAULT_TARGET_UTILISATION, PriceRule
from agents.tomlconfig import ConfigError, Table, read_toml, wei_to_toml, write_toml
from agents.wallet import AccountSpec, WalletError

__all__ = ["ConfigError", "NodeConfig", "check_ifname", "check_region", "endpoint_text", "read_ifname", "load_config", "operator_spec", "read_chain", "read_price", "write_config"]

MIB = 1 << 20
TOKEN = 10**18
DEFAULT_DATA_DIR = Path("~/.warren/node").expanduser()
#: The test deployment's minimum node stake (scripts/deploy.py); the chain's own minimum rules.
DEFAULT_STAKE = 100 * TOKEN
#: Linux IFNAMSIZ is 16 with the NUL; names also go into nft scripts, hence the narrow class.
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_REGION = re.compile(r"[A-Z]{2}")
#: The dashboard's default port (agents.node.dashboard), beside the metrics' 9470.
DEFAULT_DASHBOARD_PORT = 9480


def check_region(text: str) -> str:
    """An ISO 3166-1 alpha-2 code, upper case (``"de"`` -> ``"DE"``); raises ValueError otherwise.

    Only the form is checked (two letters): no country list ships with our dependencies.
    """
    region = text.strip().upper() if isinstance(text, str) else ""
    if not _REGION.fullmatch(region):
        raise ValueError(f"a region is an ISO 3166-1 alpha-2 code such as DE or US, not {text!r}")
    return region


def check_ifname(text: str) -> str:
    """A Linux interface name (1-15 of ``A-Za-z0-9_.-``); raises ValueError otherwise."""
    if not isinstance(text, str) or not _IFNAME.fullmatch(text) or text in (".", ".."):
        raise ValueError(f"an interface name has 1-15 letters, digits, '_', '.', '-', not {text!r}")
    return text


@dataclass(frozen=True)
class NodeConfig:
    """Everything `warren node run` needs (amounts in token wei, sizes in bytes, times in seconds).

    The file's tables are flattened: ``[chain] rpc`` is :attr:`rpc`, ``[settlement] threshold`` is
    :attr:`settlement_threshold`, ``[operator]`` is :attr:`operator`, ``[exit]`` is :attr:`exit`.
    ``price_per_gib`` is token wei or ``"auto"``, and then :attr:`price` holds the ``[price]`` table.
    """

    region: str
    price_per_gib: int | str
    operator: AccountSpec
    stake: int = DEFAULT_STAKE
    # What the node carries unpaid: it bills bytes as it sends them, so the credit must cover what is in
    # flight to the client (buffers and queues: ~1 s at tens of Mbit/s). 16 MiB costs 0.016 tokens at
    # 1 token/GiB: a non-paying client costs the node at most that.
    credit_bytes: int = 16 * MIB
    # The cadence. Each receipt costs the node ~0.25 ms of CPU (a verification and an fsync'd
    # commit: bench_e2e's receipts_per_s), ~0.25 CPU-s/GiB at 1 MiB; 4 MiB did not measurably lower
    # the exit's CPU-s/GiB at load 4-6 (bench_e2e --receipt-kib, docs/BENCHMARKS.md). The node clamps
    # it to half the credit, so a client paying on its cadence is never cut off.
    receipt_bytes: int = 1 * MIB
    receipt_interval_s: float = 5.0
    settlement_threshold: int | str = "auto"
    #: For "auto" only; a local anvil's gas price is ~1-2 gwei, mainnet's a few to tens.
    gas_price_gwei: float = 10.0
    #: ETH per token, for "auto" only: a placeholder until the token has a market.
    token_price_eth: float = 0.001
    exit: dict = field(default_factory=dict)
    data_dir: Path = DEFAULT_DATA_DIR
    wg_key_file: Path | None = None  # None: <data_dir>/wg.key
    interface: str = "warren0"
    listen_port: int = 51820  # WireGuard's customary port
    public_endpoint: tuple[str, int] | None = None
    uplink: str | None = None
    pool_v4: str = "10.77.0.0/16"
    pool_v6: str = "fd77:7272::/64"
    control_port: int = 7700
    dns_upstream: tuple[str, int] | None = None
    max_pending: int = 32  # quarantined (handshaken, unpaid) clients at once
    setup_timeout_s: float = 20.0  # a quarantined client that has not set up by then is dropped
    #: A voucher client's redemption is submitted by the node, which pays its gas (~270,000); the
    #: smallest fee the node takes for that, from the voucher. Size it as gas x gas price / token
    #: price (0.01 token covers 270,000 gas at 1 gwei and 0.027 ETH per token); the default is the
    #: client's default offer, so defaults work together.
    min_relayer_fee: int = TOKEN // 100
    bootstrap: tuple[tuple[str, int], ...] = ()
    rpc: str = DEFAULT_RPC
    network: str = DEFAULT_NETWORK
    deployment: Path | None = None  # None: deployments/<ecosystem>-<network>.json in the repository
    metrics: ListenSettings = ListenSettings(True, ("127.0.0.1", DEFAULT_NODE_PORT))
    dashboard: ListenSettings = ListenSettings(True, ("127.0.0.1", DEFAULT_DASHBOARD_PORT))
    #: ``[price]``: the bounds and parameters of ``price_per_gib = "auto"`` (None for a fixed price).
    price: PriceRule | None = None
    #: The bandwidth advertised in the PeerRecord, Mbit/s (None: the ``[price]`` table's, else none).
    capacity_mbps: float | None = None

    @property
    def advertised_kbps(self) -> int:
        """What the PeerRecord advertises, kbit/s (0: nothing): challengers judge throughput against it."""
        mbps = self.capacity_mbps if self.capacity_mbps is not None else (
            self.price.capacity_mbps if self.price is not None else 0)
        return int(mbps * 1000)

    @property
    def auto_price(self) -> bool:
        """Whether the price follows utilisation (``price_per_gib = "auto"``)."""
        return self.price_per_gib == "auto"

    def __post_init__(self) -> None:
        data_dir = Path(self.data_dir)
        object.__setattr__(self, "data_dir", data_dir)
        if self.wg_key_file is None:
            object.__setattr__(self, "wg_key_file", data_dir / "wg.key")
        if self.deployment is None:
            object.__setattr__(self, "deployment", default_path(self.network, REPO_ROOT))
        object.__setattr__(self, "bootstrap", tuple(tuple(b) for b in self.bootstrap))

    def replace(self, **changes) -> NodeConfig:
        """A copy with ``changes`` (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The TOML document (None values left out: TOML has no null)."""
        top = {
            "region": self.region,
            "price_per_gib": "auto" if self.auto_price else wei_to_toml(self.price_per_gib),
            "price": self.price.to_dict() if self.price is not None else None,
            "capacity_mbps": self.capacity_mbps,
            "stake": wei_to_toml(self.stake),
            "credit_bytes": self.credit_bytes,
            "receipt_bytes": self.receipt_bytes,
            "receipt_interval_s": self.receipt_interval_s,
            "data_dir": str(self.data_dir),
            "wg_key_file": str(self.wg_key_file),
            "interface": self.interface,
            "listen_port": self.listen_port,
            "public_endpoint": endpoint_text(self.public_endpoint),
            "uplink": self.uplink,
            "pool_v4": self.pool_v4,
            "pool_v6": self.pool_v6,
            "control_port": self.control_port,
            "dns_upstream": endpoint_text(self.dns_upstream),
            "max_pending": self.max_pending,
            "min_relayer_fee": wei_to_toml(self.min_relayer_fee),
            "setup_timeout_s": self.setup_timeout_s,
            "bootstrap": [endpoint_text(b) for b in self.bootstrap],
            "settlement": {
                "threshold": (self.settlement_threshold if self.settlement_threshold == "auto"
                              else wei_to_toml(int(self.settlement_threshold))),
                "gas_price_gwei": self.gas_price_gwei,
                "token_price_eth": self.token_price_eth,
            },
            "exit": dict(self.exit),
            "metrics": self.metrics.to_dict(),
            "dashboard": self.dashboard.to_dict(),
            "chain": {"rpc": self.rpc, "network": self.network, "deployment": str(self.deployment)},
            "operator": self.operator.to_dict(),
        }
        return {k: v for k, v in top.items() if v is not None}


def endpoint_text(endpoint: tuple[str, int] | None) -> str | None:
    if endpoint is None:
        return None
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def read_ifname(table: Table, key: str, default):
    value = table.string(key, default, "an interface name (1-15 of A-Za-z0-9_.-)")
    if value is None:
        return None
    try:
        return check_ifname(value)
    except ValueError:
        raise table.fail(key, "an interface name (1-15 of A-Za-z0-9_.-)", value) from None


def check_exit_policy(path: Path, raw: dict) -> None:
    """Let agents.node.policy validate ``[exit]`` now (if that module exists), so errors show at load."""
    try:
        if importlib.util.find_spec("agents.node.policy") is None:
            return
    except (ImportError, ValueError):
        return
    from agents.node.policy import ExitPolicy

    try:
        ExitPolicy.from_dict(raw)
    except Exception as exc:  # noqa: BLE001 - whatever the policy refuses, the person must read it
        raise ConfigError(f"{path}: [exit]: {exc}") from None


def load_config(path: str | os.PathLike) -> NodeConfig:
    """Read and check a node config file.

    Relative paths in it are taken from the file's folder.

    Raises:
        ConfigError: the file is missing, not TOML, has an unknown key or a bad value (the message
            names the file, the key, what was expected and what was found).
    """
    path = Path(path)
    top = Table(path, read_toml(path))
    base = path.resolve().parent
    d = NodeConfig.__dataclass_fields__
    region_text = top.string("region", expected='an ISO 3166-1 alpha-2 region such as "DE"')
    try:
        region = check_region(region_text)
    except ValueError:
        raise top.fail("region", 'an ISO 3166-1 alpha-2 region such as "DE"', region_text) from None
    values: dict[str, object] = {
        "region": region,
        **read_price(top),
        "stake": top.wei("stake", DEFAULT_STAKE),
        "credit_bytes": top.integer("credit_bytes", d["credit_bytes"].default, low=0),
        "receipt_bytes": top.integer("receipt_bytes", d["receipt_bytes"].default, low=1),
        "receipt_interval_s": top.number("receipt_interval_s", d["receipt_interval_s"].default),
        "data_dir": top.path_("data_dir", DEFAULT_DATA_DIR, base),
        "wg_key_file": top.path_("wg_key_file", None, base),
        "interface": read_ifname(top, "interface", d["interface"].default),
        "listen_port": top.integer("listen_port", d["listen_port"].default, low=0, high=65535),
        "public_endpoint": top.endpoint("public_endpoint", None),
        "uplink": read_ifname(top, "uplink", None),
        "pool_v4": top.network("pool_v4", d["pool_v4"].default, version=4),
        "pool_v6": top.network("pool_v6", d["pool_v6"].default, version=6),
        "control_port": top.integer("control_port", d["control_port"].default, low=1, high=65535),
        "dns_upstream": top.endpoint("dns_upstream", None),
        "max_pending": top.integer("max_pending", d["max_pending"].default, low=1),
        "setup_timeout_s": top.number("setup_timeout_s", d["setup_timeout_s"].default),
        "min_relayer_fee": top.wei("min_relayer_fee", d["min_relayer_fee"].default),
        "bootstrap": top.endpoints("bootstrap", ()),
        "capacity_mbps": top.number("capacity_mbps", None),
    }
    settlement = top.table("settlement")
    if settlement.has("threshold") and settlement.raw["threshold"] == "auto":
        values["settlement_threshold"] = settlement.string("threshold")
    else:
        values["settlement_threshold"] = settlement.wei("threshold", "auto",
                                                        expected='"auto" or a whole number of token wei >= 0')
    values["gas_price_gwei"] = settlement.number("gas_price_gwei", d["gas_price_gwei"].default)
    values["token_price_eth"] = settlement.number("token_price_eth", d["token_price_eth"].default)
    settlement.finish()
    values["exit"] = top.raw_table("exit")
    values["metrics"] = read_listen(top, "metrics", DEFAULT_NODE_PORT)
    values["dashboard"] = read_listen(top, "dashboard", DEFAULT_DASHBOARD_PORT)
    values.update(read_chain(top, base))
    operator = top.raw_table("operator")
    top.finish()
    values["operator"] = operator_spec(path, operator, base, values["network"])
    check_exit_policy(path, values["exit"])
    return NodeConfig(**values)


def read_price(top: Table) -> dict:
    """``price_per_gib`` (token wei or ``"auto"``) and, for ``"auto"``, the ``[price]`` table, as keyword
    arguments of :class:`NodeConfig`.

    Raises:
        ConfigError: a bad price, ``"auto"`` without ``[price]`` or a bound, or ``[price]`` beside a
            fixed price (it would be ignored), said in words.
    """
    expected = 'a whole number of token wei per GiB >= 0, or "auto"'
    if top.has("price_per_gib") and top.raw["price_per_gib"] == "auto":
        top.string("price_per_gib")
    else:
        price = top.wei("price_per_gib", expected=expected)
        if top.has("price"):
            raise ConfigError(f'{top.path}: [price] applies only with price_per_gib = "auto" (this file sets a '
                              f'fixed price, {price}): remove the table or set price_per_gib = "auto"')
        top.raw_table("price")
        return {"price_per_gib": price}
    if not top.has("price"):
        raise ConfigError(f'{top.path}: price_per_gib = "auto" needs a [price] table with floor, ceiling (token wei '
                          f'per GiB) and capacity_mbps (the bandwidth the node sells)')
    table = top.table("price")
    floor = table.wei("floor", expected="the lowest price, a whole number of token wei per GiB >= 1")
    ceiling = table.wei("ceiling", expected="the highest price, a whole number of token wei per GiB")
    if not table.has("capacity_mbps"):
        raise table.fail("capacity_mbps", "the bandwidth the node sells in Mbit/s: auto prices measure "
                         "utilisation against it")
    capacity = table.number("capacity_mbps")
    target = table.number("target_utilisation", DEFAULT_TARGET_UTILISATION)
    step = table.number("step", DEFAULT_STEP)
    table.finish()
    try:
        rule = PriceRule(floor=floor, ceiling=ceiling, capacity_mbps=capacity, target_utilisation=target, step=step)
    except ValueError as exc:
        raise ConfigError(f"{top.path}: [price]: {exc}") from None
    return {"price_per_gib": "auto", "price": rule}


def read_chain(top: Table, base: Path) -> dict:
    """``[chain]``: rpc, network, deployment (checked), as keyword arguments of the config classes."""
    chain = top.table("chain")
    rpc = chain.string("rpc", DEFAULT_RPC, 'an RPC URL such as "http://127.0.0.1:8545"')
    if not rpc.startswith(("http://", "https://", "ws://", "wss://")):
        raise chain.fail("rpc", 'an RPC URL such as "http://127.0.0.1:8545"', rpc)
    network = chain.string("network", DEFAULT_NETWORK, 'an ape network choice "ecosystem:network[:provider]"')
    if network.count(":") not in (1, 2) or "" in network.split(":")[:2]:
        raise chain.fail("network", 'an ape network choice "ecosystem:network[:provider]"', network)
    values = {"rpc": rpc, "network": network, "deployment": chain.path_("deployment", None, base)}
    chain.finish()
    return values


def operator_spec(path: Path, raw: dict, base: Path, network: str, section: str = "operator") -> AccountSpec:
    """``[operator]`` (or the client's ``[account]``) as an AccountSpec; test accounts on local networks only."""
    if not raw:
        raise ConfigError(f"{path}: missing table [{section}] (keystore + passphrase_file or passphrase_env, "
                          f"ape_alias, or test_account on a local network)")
    try:
        spec = AccountSpec.from_dict(raw, base)
    except WalletError as exc:
        raise ConfigError(f"{path}: [{section}]: {exc}") from None
    if spec.test_account is not None and network.split(":")[1] != "local":
        raise ConfigError(f"{path}: [{section}] test_account: only on a local network, and [chain] network "
                          f"is {network!r}")
    return spec


def write_config(path: str | os.PathLike, config: NodeConfig, force: bool = False) -> None:
    """Write ``config`` to ``path`` atomically with mode 0600.

    Raises:
        ConfigError: the file exists and ``force`` is false.
    """
    write_toml(path, config.to_dict(), force=force)
