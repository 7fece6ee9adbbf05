"""The client's config file (TOML, 0600): which chain and account pay, and how `warren connect` chooses.

::

    data_dir = "~/.warren/client"      # channel signers, control socket (relative paths: from this file)
    interface = "warrenc0"             # TUN name
    region = "DE"                      # default --region (omit: any; "NL,DE": NL first, then DE)
    max_price = 2000000000000000       # default --max-price, token wei per GiB (omit: any)
    budget = "10000000000000000000"    # default --budget: a channel's deposit, token wei
    bootstrap = ["198.51.100.1:51820"] # overlay peers to resolve nodes through

    [failover]
    keepalive_s = 1                    # how often the tunnel shows it is alive
    dead_after_s = 1.5                 # silence after which the node is dead and we move
    max_latency_ms = 2000              # a node slower than this (3 probes in a row) is left too

    [killswitch]
    exceptions = ["192.168.1.0/24"]    # destinations allowed outside the tunnel (the LAN printer)

    [metrics]                          # Prometheus endpoint (agents.metrics), loopback by default
    enabled = true
    listen = "127.0.0.1:9471"

    [chain]
    rpc = "http://127.0.0.1:8545"
    network = "ethereum:local:foundry"
    deployment = "deployments/ethereum-local.json"

    [account]                          # funds the channel deposits: as the node's [operator]
    keystore = "client.json"           # (not needed with pay = "voucher": that never uses it)
    passphrase_env = "WARREN_PASSPHRASE"

Paying anonymously (README, "Pay anonymously")::

    pay = "voucher"                    # default "channel": a payment channel from [account]
    [voucher]
    notes = "~/.warren/notes.json"     # `warren voucher deposit`'s notes (0600); signers.json beside it
    keys = "keys/voucher-depth20"      # proving key of the pool's circuit (`warren voucher setup`)
    relayer_fee = "10000000000000000"  # paid from the voucher to the node that submits its redemption
    pool = "0x..."                     # which of the deployment's pools (omit: the one we hold notes of)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from eth_utils import is_address, to_checksum_address

from agents.chain.connect import DEFAULT_NETWORK, DEFAULT_RPC, REPO_ROOT
from agents.chain.deployment import default_path
from agents.client.selection import check_regions
from agents.metrics import DEFAULT_CLIENT_PORT, ListenSettings, read_listen
from agents.node.config import endpoint_text, read_ifname, operator_spec, read_chain
from agents.tomlconfig import ConfigError, Table, read_toml, wei_to_toml, write_toml
from agents.wallet import AccountSpec

__all__ = ["PAY_CHOICES", "ClientConfig", "ConfigError", "load_config", "write_config"]

TOKEN = 10**18
DEFAULT_DATA_DIR = Path("~/.warren/client").expanduser()
#: How `warren connect` pays: a payment channel funded from [account], or a voucher note.
PAY_CHOICES = ("channel", "voucher")
#: `warren voucher`'s default notes file (agents.prover.cli.DEFAULT_NOTES).
DEFAULT_NOTES = Path("~/.warren/notes.json").expanduser()


@dataclass(frozen=True)
class ClientConfig:
    """Everything `warren connect` needs (amounts in token wei, times in seconds).

    ``[chain]``, ``[failover]`` and ``[killswitch]`` are flattened: :attr:`rpc`, :attr:`dead_after_s`,
    :attr:`killswitch_exceptions`; ``[account]`` is :attr:`account`.
    """

    account: AccountSpec | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    interface: str = "warrenc0"
    region: str | None = None
    max_price: int | None = None
    #: One channel's deposit: 10 tokens buys 10 GiB at 1 token/GiB; the rest comes back on close.
    budget: int = 10 * TOKEN
    bootstrap: tuple[tuple[str, int], ...] = ()
    keepalive_s: float = 1.0
    #: agents.client.agent.ClientAgent's default: ~1.5 keepalives missed.
    dead_after_s: float = 1.5
    #: agents.client.agent.DEFAULT_MAX_LATENCY_S: the control channel's round trip, queueing included.
    max_latency_ms: float = 2000.0
    killswitch_exceptions: tuple[str, ...] = ()
    rpc: str = DEFAULT_RPC
    network: str = DEFAULT_NETWORK
    deployment: Path | None = None
    pay: str = "channel"
    voucher_notes: Path = DEFAULT_NOTES
    #: None: beside the notes file (as `warren voucher` keeps them).
    voucher_signers: Path | None = None
    #: None: keys/voucher-depth<pool depth> in the repository (where `warren voucher setup` writes).
    voucher_keys: Path | None = None
    #: 0.01 token: what the node earns for paying the redemption's gas (~270,000).
    relayer_fee: int = TOKEN // 100
    voucher_pool: str | None = None
    metrics: ListenSettings = ListenSettings(True, ("127.0.0.1", DEFAULT_CLIENT_PORT))

    def __post_init__(self) -> None:
        if self.pay not in PAY_CHOICES:
            raise ConfigError(f"pay must be one of {', '.join(PAY_CHOICES)}, not {self.pay!r}")
        if self.account is None and self.pay != "voucher":
            raise ConfigError("a client that pays by channel needs an [account] (or pay = \"voucher\")")
        object.__setattr__(self, "voucher_notes", Path(self.voucher_notes))
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.deployment is None:
            object.__setattr__(self, "deployment", default_path(self.network, REPO_ROOT))
        object.__setattr__(self, "bootstrap", tuple(tuple(b) for b in self.bootstrap))
        object.__setattr__(self, "killswitch_exceptions", tuple(self.killswitch_exceptions))

    def replace(self, **changes) -> ClientConfig:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The TOML document (None values left out)."""
        top = {
            "data_dir": str(self.data_dir),
            "interface": self.interface,
            "region": self.region,
            "max_price": None if self.max_price is None else wei_to_toml(self.max_price),
            "budget": wei_to_toml(self.budget),
            "bootstrap": [endpoint_text(b) for b in self.bootstrap],
            "failover": {"keepalive_s": self.keepalive_s, "dead_after_s": self.dead_after_s,
                         "max_latency_ms": self.max_latency_ms},
            "killswitch": {"exceptions": list(self.killswitch_exceptions)},
            "metrics": self.metrics.to_dict(),
            "chain": {"rpc": self.rpc, "network": self.network, "deployment": str(self.deployment)},
            "account": None if self.account is None else self.account.to_dict(),
            "pay": self.pay,
            "voucher": {k: v for k, v in {
                "notes": str(self.voucher_notes),
                "signers": None if self.voucher_signers is None else str(self.voucher_signers),
                "keys": None if self.voucher_keys is None else str(self.voucher_keys),
                "relayer_fee": wei_to_toml(self.relayer_fee), "pool": self.voucher_pool}.items() if v is not None},
        }
        return {k: v for k, v in top.items() if v is not None}


def load_config(path: str | os.PathLike) -> ClientConfig:
    """Read and check a client config file (relative paths from its folder).

    Raises:
        ConfigError: missing file, malformed TOML, unknown key or bad value (named in the message).
    """
    path = Path(path)
    top = Table(path, read_toml(path))
    base = path.resolve().parent
    d = ClientConfig.__dataclass_fields__
    wanted = 'an ISO 3166-1 alpha-2 region such as "DE", or several most wanted first: "NL,DE"'
    region = top.string("region", None, wanted)
    if region is not None:
        try:
            region = ",".join(check_regions(region))
        except ValueError:
            raise top.fail("region", wanted, region) from None
    values: dict[str, object] = {
        "data_dir": top.path_("data_dir", DEFAULT_DATA_DIR, base),
        "interface": read_ifname(top, "interface", d["interface"].default),
        "region": region,
        "max_price": top.wei("max_price", None, "a whole number of token wei per GiB >= 0"),
        "budget": top.wei("budget", d["budget"].default),
        "bootstrap": top.endpoints("bootstrap", ()),
    }
    failover = top.table("failover")
    values["keepalive_s"] = failover.number("keepalive_s", d["keepalive_s"].default)
    values["dead_after_s"] = failover.number("dead_after_s", d["dead_after_s"].default)
    values["max_latency_ms"] = failover.number("max_latency_ms", d["max_latency_ms"].default)
    failover.finish()
    if values["dead_after_s"] < values["keepalive_s"]:
        raise failover.fail("dead_after_s", f"at least keepalive_s ({values['keepalive_s']:g})",
                            values["dead_after_s"])
    killswitch = top.table("killswitch")
    values["killswitch_exceptions"] = killswitch.networks("exceptions", ())
    killswitch.finish()
    values["metrics"] = read_listen(top, "metrics", DEFAULT_CLIENT_PORT)
    values.update(read_chain(top, base))
    values["pay"] = top.string("pay", "channel", " or ".join(f'"{c}"' for c in PAY_CHOICES))
    if values["pay"] not in PAY_CHOICES:
        raise top.fail("pay", " or ".join(f'"{c}"' for c in PAY_CHOICES), values["pay"])
    voucher = top.table("voucher")
    values["voucher_notes"] = voucher.path_("notes", DEFAULT_NOTES, base)
    values["voucher_signers"] = voucher.path_("signers", None, base)
    values["voucher_keys"] = voucher.path_("keys", None, base)
    values["relayer_fee"] = voucher.wei("relayer_fee", d["relayer_fee"].default)
    pool = voucher.string("pool", None, "a voucher pool address (0x + 40 hex digits)")
    if pool is not None and not is_address(pool):
        raise voucher.fail("pool", "a voucher pool address (0x + 40 hex digits)", pool)
    values["voucher_pool"] = None if pool is None else to_checksum_address(pool)
    voucher.finish()
    account = top.raw_table("account")
    top.finish()
    if account or values["pay"] != "voucher":  # a voucher client needs no account: it never sends a transaction
        values["account"] = operator_spec(path, account, base, values["network"], section="account")
    return ClientConfig(**values)


def write_config(path: str | os.PathLike, config: ClientConfig, force: bool = False) -> None:
    """Write ``config`` atomically with mode 0600; refuses to overwrite without ``force``."""
    write_toml(path, config.to_dict(), force=force)
