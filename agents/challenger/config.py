"""The challenger's config file (TOML, 0600): whom to pay as, where payloads come from, how to judge.

::

    client = "client.toml"             # a `warren connect` client config: how challenges pay (pay =
                                       # "voucher": the payer on chain is the voucher pool), chain, bootstrap
    data_dir = "~/.warren/challenger"  # transcripts.sqlite, plan secret, proposals/ (relative: from this file)
    interface = "warrench0"            # the challenge tunnel's TUN name
    endpoint = "http://203.0.113.7:8080"  # your payload endpoint (`warren challenger endpoint`)
    payload_bytes = 4194304            # per challenge

    [challenge]
    per_epoch = 8                      # challenges per epoch (agents.challenger.plan.PlanPolicy)
    margin_s = 60                      # none this close to an epoch's edges
    min_throughput_fraction = 0.5      # of the capacity the node advertises...
    expected_kbps = 0                  # ...or of this, for nodes that advertise none (0: min_kbps)
    min_kbps = 1000
    max_latency_ms = 1000

    [account]                          # the staked challenger account that signs reports
    keystore = "challenger.json"       # (never the client's: that one must not be linkable to you)
    passphrase_env = "WARREN_CHALLENGER_PASSPHRASE"
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from agents.challenger.plan import PlanPolicy
from agents.challenger.verdict import Policy
from agents.client.config import ClientConfig
from agents.client.config import load_config as load_client_config
from agents.node.config import operator_spec, read_ifname
from agents.tomlconfig import ConfigError, Table, read_toml
from agents.wallet import AccountSpec

__all__ = ["ChallengerConfig", "load_config"]

DEFAULT_DATA_DIR = Path("~/.warren/challenger").expanduser()


@dataclasses.dataclass(frozen=True)
class ChallengerConfig:
    """Everything `warren challenger run` needs (see the module docstring)."""

    client: ClientConfig
    account: AccountSpec
    endpoint: str
    data_dir: Path = DEFAULT_DATA_DIR
    interface: str = "warrench0"
    payload_bytes: int = 4 << 20
    plan: PlanPolicy = PlanPolicy()
    policy: Policy = Policy()
    expected_kbps: int = 0
    config_path: Path | None = None

    @property
    def store_path(self) -> Path:
        return self.data_dir / "transcripts.sqlite"

    @property
    def proposals_dir(self) -> Path:
        return self.data_dir / "proposals"

    def secret(self) -> bytes:
        """The plan secret (32 bytes, made once, 0600): only this challenger can predict its plan."""
        path = self.data_dir / "plan.secret"
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            secret = path.read_bytes()
            if len(secret) != 32:
                raise ConfigError(f"{path} is not a 32-byte plan secret: remove it to make a new one") from None
            return secret
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(32))
        return path.read_bytes()


def load_config(path: str | os.PathLike) -> ChallengerConfig:
    """Read and check a challenger config (relative paths from its folder).

    Raises:
        ConfigError: missing file, malformed TOML, unknown key or bad value (named in the message).
    """
    path = Path(path)
    top = Table(path, read_toml(path))
    base = path.resolve().parent
    d = ChallengerConfig.__dataclass_fields__
    client_path = top.path_("client", None, base)
    if client_path is None:
        raise top.fail("client", "the path of a `warren connect` client config (how challenges pay)")
    endpoint = top.string("endpoint", None, 'your payload endpoint, e.g. "http://203.0.113.7:8080"')
    if endpoint is None or not endpoint.startswith("http://"):
        raise top.fail("endpoint", 'an http:// URL of your payload endpoint (`warren challenger endpoint`)', endpoint)
    values = {
        "data_dir": top.path_("data_dir", DEFAULT_DATA_DIR, base),
        "interface": read_ifname(top, "interface", d["interface"].default),
        "payload_bytes": top.integer("payload_bytes", d["payload_bytes"].default, low=64 * 1024, high=256 << 20),
    }
    challenge = top.table("challenge")
    plan = PlanPolicy(per_epoch=challenge.integer("per_epoch", PlanPolicy.per_epoch, low=1),
                      margin_s=challenge.number("margin_s", PlanPolicy.margin_s, positive=False))
    policy = Policy(min_throughput_fraction=challenge.number("min_throughput_fraction", Policy.min_throughput_fraction),
                    min_kbps=challenge.integer("min_kbps", Policy.min_kbps),
                    max_latency_ms=challenge.number("max_latency_ms", Policy.max_latency_ms))
    expected = challenge.integer("expected_kbps", 0)
    challenge.finish()
    account_raw = top.raw_table("account")
    top.finish()
    client = load_client_config(client_path)
    account = operator_spec(path, account_raw, base, client.network, section="account")
    return ChallengerConfig(client=client, account=account, endpoint=endpoint.rstrip("/"), plan=plan, policy=policy,
                            expected_kbps=expected, config_path=path, **values)
