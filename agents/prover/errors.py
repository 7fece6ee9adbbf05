"""The prover agent's two error families."""

from __future__ import annotations

__all__ = ["ProverError", "ChainDataError"]


class ProverError(Exception):
    """We were asked to do something we cannot (unknown note, spent note, bad key file...)."""


class ChainDataError(Exception):
    """The chain (or whoever serves its events) told us something inconsistent (remote fault)."""
