"""Warren's overlay: a self-organising ring of nodes (DESIGN.md, "The wire" and "The parts").

Modules: :mod:`.ids` (ring ids), :mod:`.wire` (overlay datagrams), :mod:`.ring` (routing table,
Chord fingers), :mod:`.core` (the sans-I/O node), :mod:`.broadcast` (ring broadcast),
:mod:`.records` and :mod:`.store` (signed records), :mod:`.sim` (simulator), :mod:`.runtime`
(real UDP sockets).
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
