"""The client's chain port: candidates, channels (opened, reused, closed), kept in a small file.

Each channel gets a fresh payment signer (a key that never sends a transaction), kept with mode 0600
next to the channel list, so a restarted client can keep paying, reuse an open channel to the same
node, or close it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from eth_account import Account
from eth_utils import to_checksum_address

from agents.chain.bindings import ChannelStatus, WarrenContracts
from agents.client.agent import OpenChannel
from agents.client.selection import Candidate, list_candidates
from agents.errors import preflight, preflight_tokens

__all__ = ["ClientChain"]

log = logging.getLogger("warren.client")

#: Gas of payment_channels.open_channel (docs/BENCHMARKS.md, "Settlement gas": 97,528) and of an
#: ERC-20 approve, rounded up: what the ETH check before opening a channel asks for.
OPEN_GAS = 110_000
APPROVE_GAS = 50_000


class ClientChain:
    """The client's view of its deployment.

    Args:
        contracts: the deployment's contracts.
        account: the ape account paying deposits (and receiving refunds).
        data_dir: where channels and their signer keys are kept.
    """

    def __init__(self, contracts: WarrenContracts, account, data_dir: Path) -> None:
        self.contracts = contracts
        self.account = account
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._file = self.data_dir / "channels.json"

    @property
    def client_address(self) -> str:
        return to_checksum_address(self.account.address)

    def candidates(self) -> list[Candidate]:
        return list_candidates(self.contracts)

    # -- the channel list --------------------------------------------------------------------------

    def _load(self) -> list[dict]:
        try:
            return json.loads(self._file.read_text())
        except FileNotFoundError:
            return []

    def _save(self, channels: list[dict]) -> None:
        tmp = self._file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(channels, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._file)

    def _reusable(self, node_id: bytes, min_room: int) -> OpenChannel | None:
        for entry in reversed(self._load()):
            if entry["node_id"] != node_id.hex():
                continue
            state = self.contracts.channel(bytes.fromhex(entry["channel_id"]))
            spent = max(state.settled, int(entry.get("spent", 0)))
            if state.status is ChannelStatus.OPEN and state.deposit - spent >= min_room:
                key = bytes.fromhex(Path(entry["signer_key_file"]).read_text().strip())
                return OpenChannel(bytes.fromhex(entry["channel_id"]), node_id, key, entry["signer"],
                                   state.deposit, self.contracts.chain_id, str(self.contracts.channels.address))
        return None

    # -- ChannelPort -------------------------------------------------------------------------------

    def open_channel(self, candidate: Candidate, deposit: int) -> OpenChannel:
        """Reuse an open channel to this node with room left, or open one with a fresh signer.

        Raises:
            InsufficientTokens / InsufficientEth: said in plain words, before any gas is spent.
        """
        node_id = candidate.node.node_id
        reused = self._reusable(node_id, max(1, deposit // 10))
        if reused is not None:
            log.info("reusing channel %s to node %s", reused.channel_id.hex()[:16], node_id.hex()[:12])
            return reused
        token, channels = self.contracts.token, self.contracts.channels
        client = self.client_address
        preflight_tokens(token, client, deposit, "a channel with this budget (--budget)")
        needs_approval = int(token.allowance(client, channels.address)) < deposit
        preflight(self.account, OPEN_GAS + (APPROVE_GAS if needs_approval else 0), "opening the channel")
        signer = Account.create()
        if needs_approval:
            token.approve(channels.address, deposit, sender=self.account)
        channels.open_channel(node_id, client, signer.address, deposit, sender=self.account)
        channel_id = self.contracts.channel_id_of(node_id, client, signer.address)
        key_file = self.data_dir / "signers" / f"{channel_id.hex()}.key"
        key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(bytes(signer.key).hex())
        channels_list = self._load()
        channels_list.append({"channel_id": channel_id.hex(), "node_id": node_id.hex(), "signer": signer.address,
                              "signer_key_file": str(key_file), "deposit": deposit})
        self._save(channels_list)
        log.info("opened channel %s to node %s with %d token wei", channel_id.hex()[:16], node_id.hex()[:12], deposit)
        return OpenChannel(channel_id, node_id, bytes(signer.key), signer.address, deposit,
                           self.contracts.chain_id, str(channels.address))

    def cooperative_close(self, channel: OpenChannel, receipt, signature: bytes, node_signature: bytes) -> None:
        self.contracts.channels.cooperative_close(channel.channel_id, receipt.cumulative_bytes,
                                                  receipt.cumulative_amount, signature, node_signature,
                                                  sender=self.account)
        log.info("channel %s closed cooperatively at %d bytes, %d token wei", channel.channel_id.hex()[:16],
                 receipt.cumulative_bytes, receipt.cumulative_amount)

    def start_close(self, channel: OpenChannel) -> None:
        state = self.contracts.channel(channel.channel_id)
        if state.status is ChannelStatus.OPEN:
            self.contracts.channels.start_close(channel.channel_id, sender=self.account)
