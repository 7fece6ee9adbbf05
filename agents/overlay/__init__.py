"""Warren's overlay: a self-organising ring of nodes (DESIGN.md, "The wire" and "The parts").

Modules: :mod:`.ids` (ring ids), :mod:`.wire` (overlay datagrams, types 0x40..0x4f), :mod:`.ring`
(routing table, Chord fingers), :mod:`.core` (the sans-I/O node), :mod:`.broadcast` (ring
broadcast), :mod:`.records` and :mod:`.store` (signed records), :mod:`.sim` (simulator),
:mod:`.runtime` (real UDP sockets, or the WireGuard tunnel's socket), :mod:`.nat` (reflexive
addresses, rendezvous, punching, relay), :mod:`.mesh` (GroupVPN-style mesh mode), :mod:`.wgrelay`
(WireGuard through the volunteer relay), :mod:`.ondemand` (virtual IPs resolved from traffic) and
:mod:`.cli` (``warren mesh``).
"""

from .core import OverlayConfig, OverlayNode
from .errors import LocalProtocolError, OverlayError, RecordRejected, RemoteProtocolError

__all__ = [
    "OverlayConfig",
    "OverlayNode",
    "OverlayError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "RecordRejected",
]
