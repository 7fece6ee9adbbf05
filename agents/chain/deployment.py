"""Where Warren's contracts live on a chain: the file `ape run deploy` writes and the agents read.

The file is JSON, one per network (``deployments/<ecosystem>-<network>.json`` by default), written
atomically so that an agent never reads half a file after a crash mid-deploy.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["CONTRACT_NAMES", "Deployment", "DeploymentError", "default_path"]

# Every contract the agents talk to, in deployment order (later ones take earlier addresses).
CONTRACT_NAMES = (
    "warren_token",
    "node_registry",
    "payment_channels",
    "reputation",
    "revocation_registry",
    "rewards",
)
# Contracts a deployment file may lack: files written before rewards.vy existed still load (the
# bindings then have no rewards contract).
OPTIONAL_CONTRACT_NAMES = frozenset({"rewards"})


class DeploymentError(Exception):
    """The deployment file is missing, unreadable, or does not describe a complete deployment."""


def default_path(network: str, root: Path | None = None) -> Path:
    """The default deployment file for a network choice such as ``ethereum:local:foundry``."""
    ecosystem, net = (network.split(":") + ["local"])[:2]
    return (root or Path.cwd()) / "deployments" / f"{ecosystem}-{net or 'local'}.json"


@dataclass
class Deployment:
    """Addresses of one deployment of Warren's contracts.

    Attributes:
        chain_id: the chain the addresses belong to; agents refuse a mismatch.
        addresses: contract name -> checksummed address.
        parameters: the constructor parameters used (stakes, delays, fees), for the record.
        block: the block number of the first deployment transaction (event scans start here).
    """

    chain_id: int
    addresses: dict[str, str]
    parameters: dict[str, object] = field(default_factory=dict)
    block: int = 0

    def address(self, name: str) -> str:
        """The address of contract ``name``; raises DeploymentError if it was not deployed."""
        try:
            return self.addresses[name]
        except KeyError:
            raise DeploymentError(f"deployment has no contract named {name!r}") from None

    def save(self, path: Path) -> None:
        """Write the file atomically (temporary file in the same folder, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        """Read a deployment file, with a clear error when it is missing or malformed."""
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise DeploymentError(f"no deployment file at {path}: run `ape run deploy` first") from None
        except json.JSONDecodeError as exc:
            raise DeploymentError(f"deployment file {path} is not valid JSON: {exc}") from None
        try:
            deployment = cls(
                chain_id=int(raw["chain_id"]),
                addresses=dict(raw["addresses"]),
                parameters=dict(raw.get("parameters", {})),
                block=int(raw.get("block", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeploymentError(f"deployment file {path} is incomplete: {exc}") from None
        missing = [name for name in CONTRACT_NAMES
                   if name not in deployment.addresses and name not in OPTIONAL_CONTRACT_NAMES]
        if missing:
            raise DeploymentError(f"deployment file {path} lacks {', '.join(missing)}")
        return deployment
