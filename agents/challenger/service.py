"""Putting a challenger together from its config: chain, payer, account, store (used by the CLI and the app)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from agents.challenger.config import ChallengerConfig
from agents.challenger.runtime import Challenger
from agents.challenger.store import TranscriptStore

__all__ = ["build", "open_challenger"]


def build(config: ChallengerConfig, project) -> Challenger:
    """A :class:`Challenger` on the connected chain (ape already attached to the config's RPC)."""
    from agents.chain.connect import load_contracts
    from agents.client.chain import client_port
    from agents.errors import UserError
    from agents.wallet import load_account

    client = config.client
    contracts = load_contracts(project, client.deployment, client.network)
    account = load_account(config.account, client.network)
    if not contracts.registry.is_challenger(account.address):
        raise UserError(f"{account.address} is not a staked challenger: register it with node_registry."
                        "register_challenger (at least min_challenger_stake) before running challenges")
    payer = client_port(project, contracts, client, client.pay)
    return Challenger(config, contracts, payer, account, TranscriptStore(config.store_path))


@contextlib.contextmanager
def open_challenger(config: ChallengerConfig) -> Iterator[Challenger]:
    """Connect to the config's chain and yield a ready challenger (its store closed at the end)."""
    from agents.chain.connect import connect

    with connect(config.client.rpc, config.client.network) as project:
        challenger = build(config, project)
        try:
            yield challenger
        finally:
            challenger.store.close()
