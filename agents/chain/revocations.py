"""Revocations as the chain holds them: the events hosts follow, and the check of a certificate.

:class:`ChainRevocationPort` reads revocation_registry's ``NodeRevoked`` events and, from each
event's transaction, the guardian signatures it carried (revoke()'s calldata): the facts a host needs
to make the revocation certificate it broadcasts (:func:`agents.overlay.revocation.certificate`).

:class:`ChainRevocationAuthority` is the overlay's ``RevocationAuthority`` backed by the chain: a
certificate is accepted when at least ``quorum()`` distinct current guardians (``is_guardian``) signed
its EIP-712 Revocation, which is exactly what revoke() requires. The guardian answers are cached
(a broadcast reaches a host once, but a DHT read may bring the same certificate again), so a
certificate costs one signature recovery per signer and no RPC once the guardians are known.

:class:`RevocationFollower` is the pure loop step: poll the port, add new facts to the list, back off
while the chain does not answer.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from agents.chain import eip712
from agents.overlay.revocation import RevocationFacts, RevocationList

__all__ = ["ChainRevocationAuthority", "ChainRevocationPort", "Poller", "RevocationFollower"]


class ChainRevocationAuthority:
    """Guardian quorum check of a revocation certificate against revocation_registry.

    Args:
        contracts: the deployment (``revocations``, ``chain_id``).
        cache_seconds: how long a guardian / quorum answer is reused.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, contracts, *, cache_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._contracts = contracts
        self.chain_id = int(contracts.chain_id)
        self.verifying_contract = str(contracts.revocations.address)
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, object]] = {}

    def _cached(self, key: str, read: Callable[[], object]):
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = read()
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[key] = (now + self._cache_seconds, value)
        return value

    def quorum(self) -> int:
        return int(self._cached("quorum", lambda: int(self._contracts.revocations.quorum())))

    def is_guardian(self, address: str) -> bool:
        return bool(self._cached(address, lambda: bool(self._contracts.revocations.is_guardian(address))))

    def check(self, node_id: int, evidence_hash: bytes, nonce: int, sigs) -> bool:
        """Whether ``sigs`` hold a quorum of distinct current guardians' signatures (as revoke())."""
        message = eip712.Revocation(node_id.to_bytes(32, "big"), bytes(evidence_hash), int(nonce))
        signers = set()
        for signature in sigs:
            try:
                signers.add(eip712.fast_recover(message, bytes(signature), self.chain_id, self.verifying_contract))
            except ValueError:
                continue
        try:
            quorum = self.quorum()
            return quorum > 0 and sum(1 for s in signers if self.is_guardian(s)) >= quorum
        except Exception:  # noqa: BLE001 - no chain now: refused (the receive path must not raise;
            return False  # the host's own chain follower brings the revocation when the chain is back)


class ChainRevocationPort:
    """revocation_registry's ``NodeRevoked`` events, with the signatures of their transactions.

    Args:
        contracts: the deployment.
    """

    def __init__(self, contracts) -> None:
        self.contracts = contracts

    def head(self) -> int:
        import ape

        return int(ape.chain.provider.web3.eth.block_number)  # ape's blocks.head builds a whole block

    def revocations(self, from_block: int, to_block: int, now: float) -> list[RevocationFacts]:
        """Facts of every revocation in blocks ``[from_block, to_block]``.

        Followers ask every second, and nearly always for nothing: one raw ``eth_getLogs`` on the
        registry's address answers that, and ape's event query (tens of milliseconds of Python holding
        the GIL, measured to cost a connected client's download a third of its throughput) runs only
        when the registry logged something in the range.
        """
        import ape

        registry = self.contracts.revocations
        logs = ape.chain.provider.web3.eth.get_logs(
            {"address": str(registry.address), "fromBlock": from_block, "toBlock": to_block})
        if not logs:
            return []
        out = []
        for entry in registry.NodeRevoked.range(from_block, to_block + 1):
            tx_hash = bytes.fromhex(str(entry.transaction_hash).removeprefix("0x"))
            signatures: tuple = ()
            try:
                tx = ape.chain.provider.web3.eth.get_transaction(entry.transaction_hash)
                _, args = registry.decode_input(bytes(tx["input"]))
                signatures = tuple(bytes(s) for s in args.get("signatures", ()))
            except Exception:  # noqa: BLE001 - a revoke() through another contract: the event still counts
                signatures = ()
            out.append(RevocationFacts(int.from_bytes(bytes(entry.node_id), "big"), bytes(entry.evidence_hash),
                                       int(entry.nonce), signatures, "chain", tx_hash, int(entry.block_number),
                                       now))
        return out


class RevocationFollower:
    """One host's reading of the chain's revocations into its :class:`RevocationList`.

    Args:
        port: ``head()`` and ``revocations(from_block, to_block, now)`` (:class:`ChainRevocationPort`).
        revocations: the list to feed (it persists the next block to read).
        max_blocks: most blocks read in one step (a host far behind catches up over several steps).
        backoff_s: wait after a failed read before the next one (seconds).
        start_block: where to begin when the list remembers no block (0: all history, as a node's
            first start must; a client whose candidates were read from the chain just now starts at
            the head).
    """

    def __init__(self, port, revocations: RevocationList, *, max_blocks: int = 5000, backoff_s: float = 5.0,
                 start_block: int = 0) -> None:
        self.port = port
        self.list = revocations
        self.max_blocks = max_blocks
        self.backoff_s = backoff_s
        self.last_error: str | None = None
        self._retry_at = 0.0
        known = revocations.last_block()
        self.next_block = start_block if known is None else known

    def step(self, now: float) -> list[RevocationFacts]:
        """Read new events; returns the facts of node ids this host did not know as revoked."""
        if now < self._retry_at:
            return []
        try:
            head = self.port.head()
            start = self.next_block
            if start > head:
                return []
            end = min(head, start + self.max_blocks - 1)
            found = self.port.revocations(start, end, now)
        except Exception as exc:  # noqa: BLE001 - the chain may be down; the overlay still brings news
            self.last_error = str(exc)
            self._retry_at = now + self.backoff_s
            return []
        self.last_error = None
        fresh = [facts for facts in found if self.list.add(facts)]
        self.next_block = end + 1
        self.list.set_last_block(self.next_block)
        return fresh


class Poller:
    """Runs ``step()`` every ``period_s`` on a daemon thread until :meth:`close` (node and client
    follow revocations this way); a failing step is logged and the next one runs as usual."""

    def __init__(self, step: Callable[[], object], period_s: float, name: str) -> None:
        self._step, self._period, self._name = step, period_s, name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Poller":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self._step()
            except Exception:  # noqa: BLE001 - logged; the next step tries again
                logging.getLogger(__name__).exception("%s: step failed", self._name)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
