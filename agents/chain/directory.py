"""The chain as the overlay's authority on who may sign a node's records.

The overlay (agents/overlay/records.py) accepts a PeerRecord or IPRecord only when it is signed by the
operator node_registry binds to that node id, and refuses records of revoked nodes. This adapter
answers both questions from node_registry, caching each answer briefly: a record flood must not
become an RPC flood, and a registration or revocation is seen within ``cache_seconds``. When the RPC
fails, the last answer is kept (a registration seen once stays valid while the chain is away; the
node's own revocation list refuses revoked keys meanwhile); with no answer at all the error is
:class:`DirectoryUnavailable`, which the overlay treats as "cannot be checked now": refused.
"""

from __future__ import annotations

import time
from typing import Callable

from agents.chain.bindings import WarrenContracts

__all__ = ["DirectoryUnavailable", "RegistryDirectory"]


class DirectoryUnavailable(RuntimeError):
    """The chain could not be read and nothing is known from before."""


class RegistryDirectory:
    """An overlay ``OperatorDirectory`` backed by node_registry.

    Args:
        contracts: the deployment to read.
        cache_seconds: how long an answer is reused (seconds of ``clock``).
        clock: monotonic time source (injectable for tests).
    """

    def __init__(
        self, contracts: WarrenContracts, *, cache_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._contracts = contracts
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[tuple[str, int], tuple[float, object]] = {}

    def operator_of(self, node_id: int) -> str | None:
        """The operator registered for ``node_id`` (overlay ids are ints), or None if unregistered."""
        operator = self._cached("operator", node_id, lambda key: str(self._contracts.registry.node_operator(key)))
        return None if int(operator, 16) == 0 else operator

    def is_revoked(self, node_id: int) -> bool:
        """Whether revocation_registry has revoked ``node_id`` (as node_registry records it)."""
        return self._cached("revoked", node_id, lambda key: bool(self._contracts.registry.is_revoked(key)))

    def _cached(self, what: str, node_id: int, read: Callable[[bytes], object]):
        now = self._clock()
        hit = self._cache.get((what, node_id))
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            value = read(node_id.to_bytes(32, "big"))
        except Exception as exc:  # noqa: BLE001 - any RPC failure: web3, ape, a socket
            if hit is not None:
                return hit[1]  # stale, but the best answer there is until the chain is back
            raise DirectoryUnavailable(f"node_registry could not be read ({type(exc).__name__}: {exc})") from exc
        if len(self._cache) > 10_000:  # bounded: drop everything rather than track ages
            self._cache.clear()
        self._cache[(what, node_id)] = (now + self._cache_seconds, value)
        return value
