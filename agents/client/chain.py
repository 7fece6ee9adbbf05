"""The client's chain ports: candidates, channels (opened, reused, closed).

:class:`ClientChain` pays by payment channel: each channel gets a fresh payment signer (a key that
never sends a transaction), kept with mode 0600 next to the channel list, so a restarted client can
keep paying, reuse an open channel to the same node, or close it.

:class:`VoucherChain` pays anonymously (``warren connect --pay voucher``): a note deposited earlier
with ``warren voucher deposit`` is redeemed into a channel to the chosen node, with a fresh payment
signer kept in the signers file (0600). The client proves, and the redemption goes to the node inside
the tunnel with the session request; the node submits it as relayer (agents/node/chain.py says why).
The client sends no transaction at all, so the user's account is never used: it appears on chain
only in the deposit, made long before and mixed with everyone else's. A channel left with room is
reused by the next session to the same node; what is left is refunded to the signer by
``warren voucher close``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from eth_account import Account
from eth_utils import to_checksum_address

from agents.chain.bindings import ChannelStatus, VoucherChannels, WarrenContracts
from agents.client.agent import OpenChannel
from agents.client.selection import Candidate, list_candidates
from agents.errors import UserError, preflight, preflight_tokens

__all__ = ["ClientChain", "OneCallAtATime", "VoucherChain", "client_port"]

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
                                   state.deposit, self.contracts.chain_id, str(self.contracts.channels.address),
                                   price_per_gib=entry.get("price_per_gib"))
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
        tx = channels.open_channel(node_id, client, signer.address, deposit, sender=self.account)
        channel_id = self.contracts.channel_id_of(node_id, client, signer.address)
        # The price the contract bound the channel to (the listing at open): the most this client
        # will sign for, whatever the node quotes later (agents.client.agent, _bring_up).
        price = int(tx.decode_logs(channels.ChannelOpened)[0].price_per_gib)
        key_file = self.data_dir / "signers" / f"{channel_id.hex()}.key"
        key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(bytes(signer.key).hex())
        channels_list = self._load()
        channels_list.append({"channel_id": channel_id.hex(), "node_id": node_id.hex(), "signer": signer.address,
                              "signer_key_file": str(key_file), "deposit": deposit, "price_per_gib": price})
        self._save(channels_list)
        log.info("opened channel %s to node %s with %d token wei", channel_id.hex()[:16], node_id.hex()[:12], deposit)
        return OpenChannel(channel_id, node_id, bytes(signer.key), signer.address, deposit,
                           self.contracts.chain_id, str(channels.address), price_per_gib=price)

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


def client_port(project, contracts: WarrenContracts, config, pay: str = "channel"):
    """The chain port `warren connect` pays through: a :class:`VoucherChain` for ``pay="voucher"``
    (the config's account is not even loaded), else a :class:`ClientChain` on the config's account."""
    if pay == "voucher":
        from agents.chain.deployment import Deployment
        from agents.prover.chain import deployment_pools

        pools = deployment_pools(project, config.deployment, contracts.chain_id)
        if config.voucher_pool is not None:
            if config.voucher_pool not in pools:
                raise UserError(f"[voucher] pool {config.voucher_pool} is not one of the deployment's voucher pools "
                                f"({', '.join(pools) or 'none'})")
            pools = {config.voucher_pool: pools[config.voucher_pool]}
        return VoucherChain(contracts, pools, notes_path=config.voucher_notes, signers_path=config.voucher_signers,
                            keys_dir=config.voucher_keys, relayer_fee=config.relayer_fee,
                            start_block=Deployment.load(config.deployment).block)
    if config.account is None:
        raise UserError("paying by channel needs an [account] in the client config (or connect with --pay voucher)")
    from agents.wallet import load_account

    return ClientChain(contracts, load_account(config.account, config.network), Path(config.data_dir) / "channels")


class VoucherChain:
    """The client's chain port when it pays by voucher (see the module docstring).

    Args:
        contracts: the deployment (node candidates).
        pools: the deployment's voucher pools the client may use, by address.
        notes_path / signers_path: the files of `warren voucher` (signers default: beside the notes).
        keys_dir: the proving key's folder (default keys/voucher-depth<depth> in the repository).
        relayer_fee: offered to the node that submits a redemption, token wei.
        start_block: where event scans start (the deployment's first block).
    """

    #: A reused channel must keep at least this share of its deposit (1/100) to be worth a session.
    MIN_ROOM_DIVISOR = 100

    def __init__(self, contracts: WarrenContracts, pools: dict[str, VoucherChannels], *, notes_path: Path,
                 signers_path: Path | None = None, keys_dir: Path | None = None, relayer_fee: int = 0,
                 start_block: int = 0) -> None:
        from agents.prover.cli import SIGNERS_NAME

        self.contracts = contracts
        self.pools = dict(pools)
        self.notes_path = Path(notes_path)
        self.signers_path = Path(signers_path) if signers_path else self.notes_path.with_name(SIGNERS_NAME)
        self.keys_dir = Path(keys_dir) if keys_dir else None
        self.relayer_fee = relayer_fee
        self.start_block = start_block
        self._keys: dict[int, tuple] = {}
        #: Notes whose redemption this process has handed out (a standby's): not used twice.
        self._reserved: set[int] = set()

    #: Never asked for: a voucher session request names the pool and signer (OpenChannel.session_names).
    client_address = None

    def candidates(self) -> list[Candidate]:
        return list_candidates(self.contracts)

    def _stores(self):
        from agents.prover.notes import NoteStore
        from agents.prover.signers import SignerStore

        return NoteStore(self.notes_path), SignerStore(self.signers_path)

    def _sync(self, notes, signers) -> None:
        """Notes the pool saw spent are marked; signers whose redemption a node submitted get their
        channel (read from the pool's Redeemed event, checked against the pool): the chain is the
        authority on which redemptions went through."""
        from agents.prover.chain import find_channel, sync_spent

        for binding in self.pools.values():
            sync_spent(notes, binding.pool)
            for stored in signers.signers:
                if stored.channel is not None or stored.nullifier_hash is None:
                    continue
                channel = find_channel(binding.pool, stored.nullifier_hash, self.start_block)
                if channel is not None and channel.signer == stored.address:
                    signers.set_channel(channel)
                    for note in notes.notes:
                        if note.note.nullifier_hash == stored.nullifier_hash:
                            note.spent, note.channel_id = True, "0x" + channel.channel_id.hex()
                            note.redeemed_to = "0x" + channel.node_id.hex()
                    notes.save()

    def _open(self, signer, binding: VoucherChannels, channel, redemption: dict | None = None) -> OpenChannel:
        return OpenChannel(channel.channel_id, channel.node_id, bytes.fromhex(signer.private_key.removeprefix("0x")),
                           signer.address, channel.deposit, self.contracts.chain_id, binding.address,
                           session_names={"signer": signer.address, "pool": binding.address,
                                          "voucher_deposit": channel.deposit},
                           redemption=redemption)

    def _proving_key(self, depth: int):
        from zk.keys import default_keys_dir, load_keys

        from agents.chain.connect import REPO_ROOT

        if depth not in self._keys:
            folder = self.keys_dir or (REPO_ROOT / default_keys_dir(depth))
            try:
                self._keys[depth] = load_keys(folder)
            except (FileNotFoundError, ValueError) as exc:
                raise UserError(f"no proving key for the pool's depth-{depth} circuit in {folder} ({exc}): run "
                                f"`warren voucher setup --depth {depth} --out {folder}` with the pool's key seed "
                                "(development) or copy the ceremony's key there ([voucher] keys)") from None
        return self._keys[depth]

    def open_channel(self, candidate: Candidate, deposit: int) -> OpenChannel:
        """A voucher channel to this node: one already open with room, or a note's redemption for it.

        ``deposit`` (the channel budget) does not apply: a voucher's deposit is its denomination less
        the relayer fee. A redemption is only prepared here (a proof, a few seconds); the note is
        spent when the node submits it during setup, so a standby prepared and never used keeps it.

        Raises:
            UserError: no note and no channel to this node (says which command to run), or no key.
        """
        from agents.chain.bindings import VoucherChannel
        from agents.node.session import voucher_channel_id
        from agents.prover.chain import pool_tree
        from agents.prover.redemption import make_redemption

        node_id = candidate.node.node_id
        notes, signers = self._stores()
        self._sync(notes, signers)
        for stored in reversed(signers.signers):
            channel = stored.channel
            if channel is None or channel.node_id != node_id or channel.pool not in self.pools:
                continue
            binding = self.pools[channel.pool]
            state = binding.channel(channel)
            if state.status is ChannelStatus.OPEN and state.remaining >= max(1, channel.deposit // self.MIN_ROOM_DIVISOR):
                log.info("reusing voucher channel %s to node %s (%d token wei left)", channel.channel_id.hex()[:16],
                         node_id.hex()[:12], state.remaining)
                return self._open(stored, binding, channel)
        for address, binding in self.pools.items():
            for note in notes.unspent(address):
                nullifier_hash = note.note.nullifier_hash
                if nullifier_hash in self._reserved:
                    continue
                denomination = int(binding.pool.denomination())
                if self.relayer_fee >= denomination:
                    raise UserError(f"[voucher] relayer_fee {self.relayer_fee} is not below the pool's denomination "
                                    f"{denomination}")
                depth = int(binding.pool.max_depth())
                pk, _ = self._proving_key(depth)
                signer = signers.new(nullifier_hash)  # saved (0600) before its address goes anywhere
                redemption = make_redemption(note, pool_tree(binding.pool, self.start_block), pk, depth, node_id,
                                             signer.address, self.relayer_fee)
                self._reserved.add(nullifier_hash)
                channel = VoucherChannel(pool=address, chain_id=self.contracts.chain_id,
                                         channel_id=voucher_channel_id(self.contracts.chain_id, address, nullifier_hash),
                                         node_id=node_id, signer=signer.address, deposit=denomination - self.relayer_fee)
                log.info("voucher note (leaf %d) proved for node %s: channel %s once the node submits it",
                         note.leaf_index, node_id.hex()[:12], channel.channel_id.hex()[:16])
                return self._open(signer, binding, channel, json.loads(redemption.to_json()))
        raise UserError(f"no voucher to pay node {node_id.hex()[:16]} with: no unspent note in {self.notes_path} and no "
                        f"open voucher channel to that node. Deposit one first with `warren voucher deposit --amount "
                        f"<denomination> --notes {self.notes_path}` (from any account; best some time before "
                        "connecting), then connect again")

    def cooperative_close(self, channel: OpenChannel, receipt, signature: bytes, node_signature: bytes) -> str:
        """Nothing is sent: submitting needs gas, and the signer has none (funding it from the user's
        account would link the two). The node holds the final receipt and settles it on the pool; the
        channel stays open for the next session to this node."""
        log.info("voucher channel %s stays open at %d bytes, %d token wei paid: the node settles it; the next "
                 "`warren connect --pay voucher` to this node reuses it, `warren voucher close` refunds the rest",
                 channel.channel_id.hex()[:16], receipt.cumulative_bytes, receipt.cumulative_amount)
        return "left_open"

    def start_close(self, channel: OpenChannel) -> None:
        """Nothing is sent (no gas, as above): the channel to a node left behind stays open; the node
        settles what it holds when it is back, and ``warren voucher close`` refunds the rest."""
        log.info("voucher channel %s left open (no transaction from the client)", channel.channel_id.hex()[:16])


class OneCallAtATime:
    """The chain port shared by several agents (`--paths N`, a challenger's concurrent challenges), one call at a time: ape takes the account's nonce when it
    signs, so two agents opening or closing channels at once would race for it."""

    def __init__(self, chain) -> None:
        self._chain = chain
        self._lock = threading.RLock()

    def __getattr__(self, name: str):
        value = getattr(self._chain, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            with self._lock:
                return value(*args, **kwargs)

        return call
