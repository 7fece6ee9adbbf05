"""Challenger assignment: which nodes a challenger may report on in an epoch (reputation.vy's rule).

reputation.report accepts a challenger's report on a node only if the challenger is drawn for it:
``keccak256(abi_encode(seed, challenger, node_id)) mod C < reports_per_node``, where ``C`` is the
number of challengers who reported in the previous epoch and ``seed`` the epoch's seed (the hash of
a block drawn by ``draw_seed``, fixed once read). Every challenger is drawn when ``C <=
reports_per_node``. So each node expects ``reports_per_node`` reports an epoch whatever the network's
size, and a challenger reports on a node of its choosing (a competitor, its own under another
identity) only with probability ``reports_per_node / C`` (docs/ECONOMICS.md, "Challenger assignment").

:func:`is_drawn` is the rule (pure; tests check it against the contract's ``assignment_rule`` on
random inputs); :class:`Assignment` is one epoch's draw as read from the chain.
"""

from __future__ import annotations

import dataclasses

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

__all__ = ["SEED_WINDOW", "Assignment", "is_drawn", "read_assignment"]

#: reputation.vy's SEED_WINDOW: blocks the EVM's BLOCKHASH reaches back.
SEED_WINDOW = 256


def is_drawn(seed: bytes, challenger: str, node_id: bytes, active: int, per_node: int) -> bool:
    """reputation.vy's ``_draw``: whether ``challenger`` is drawn for ``node_id``.

    Args:
        seed: the epoch's 32-byte seed.
        challenger: the challenger's address (hex).
        node_id: the node's 32-byte id.
        active: challengers who reported in the previous epoch (C).
        per_node: the contract's ``reports_per_node``.
    """
    if active <= per_node:
        return True
    digest = keccak(encode(["bytes32", "address", "bytes32"], [bytes(seed), to_checksum_address(challenger),
                                                                  bytes(node_id)]))
    return int.from_bytes(digest, "big") % active < per_node


@dataclasses.dataclass(frozen=True)
class Assignment:
    """One epoch's draw.

    Attributes:
        epoch: the epoch.
        seed: its seed, or b"" while it is not drawn or not readable yet.
        active: challengers who reported in the epoch before (C).
        per_node: reports_per_node.
    """

    epoch: int
    seed: bytes
    active: int
    per_node: int

    @property
    def everyone(self) -> bool:
        """Whether every challenger is drawn for every node (no seed needed)."""
        return self.active <= self.per_node

    @property
    def ready(self) -> bool:
        """Whether reports can be checked against the draw now."""
        return self.everyone or bool(self.seed)

    def drawn(self, challenger: str, node_id: bytes) -> bool:
        """Whether ``challenger`` may report on ``node_id`` (False while the seed is unknown)."""
        if self.everyone:
            return True
        return bool(self.seed) and is_drawn(self.seed, challenger, node_id, self.active, self.per_node)


def read_assignment(reputation, epoch: int, *, head: int | None = None, block_hash=None) -> Assignment:
    """The epoch's draw as a report sent now would meet it.

    The contract's ``assignment`` view runs in the latest block, so right after ``draw_seed`` it
    cannot read the drawn block's hash yet; given ``head`` (the latest block number) and
    ``block_hash`` (number -> 32 bytes), the seed is then taken from the drawn block itself, as
    the next report will fix it (if that block is still within the 256 BLOCKHASH gives)."""
    seed, drawn, active = reputation.assignment(epoch)
    seed, drawn = bytes(seed), int(drawn)
    if seed == bytes(32):
        seed = b""
        if drawn and head is not None and block_hash is not None and drawn < head + 1 <= drawn + SEED_WINDOW:
            seed = bytes(block_hash(drawn))
    return Assignment(epoch=epoch, seed=seed, active=int(active), per_node=int(reputation.reports_per_node()))
