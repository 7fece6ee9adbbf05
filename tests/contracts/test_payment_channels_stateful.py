"""Random sequences of open / top-up / sign / settle / close / exit / revoke against a model.

Channels are opened with fresh signers and with the signer of an existing channel at the other
node (the id commits to the node, so that is another channel), and receipts are replayed across
channels (preferring one of the same signer at the other node), which must give "wrong signer".

After every step: tokens are conserved across every account and contract involved, the contract
holds exactly what its open channels owe, the node has received exactly its share of what was
settled and never more than the highest amount the signer signed, and every finished channel gave
its client deposit - settled (the fee comes out of the settled amount) and the treasury the fee.

Steps the model expects to succeed are real transactions. Steps it expects to revert are checked with
an eth_call against the pending block (same state, same timestamp the transaction would be mined at)
and the exact revert string: ape-foundry fetches and prints a full call trace for every reverted
transaction, which makes a reverted transaction ~30 times slower than the call.
"""

from dataclasses import dataclass, field

from channel_model import CLOSING, FINAL, OPEN, STEP_OFFSETS, channel_id, pick, send_expecting, settle_error
from eth_account import Account
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from agents.chain import eip712


@dataclass
class Channel:
    """What the model expects one channel to be."""

    channel_id: bytes
    key: bytes
    node: int
    deposit: int
    settled: int = 0
    settled_bytes: int = 0
    state: int = OPEN
    close_at: int = 0
    signed: list = field(default_factory=list)  # (cumulative_bytes, cumulative_amount), growing

    def latest(self):
        return self.signed[-1] if self.signed else (self.settled_bytes, self.settled)


def test_random_channel_lifecycles__conserve_tokens_and_respect_receipts(
    chain, token, registry, channels, owner, operator, client, treasury, stranger, register_node, make_signer,
    sign_close,
):
    registry.set_revoker(owner, sender=owner)
    token.approve(channels, 2**256 - 1, sender=client)
    web3 = chain.provider.web3
    node_ids = [register_node(), register_node()]
    fee_bps, period = channels.fee_bps(), channels.challenge_period()
    holders = (operator, client, treasury, stranger, channels, registry)

    def fee(amount):
        return amount * fee_bps // 10_000

    def share(amount):
        return amount - fee(amount)

    class Machine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.snapshot = chain.snapshot()
            self.now = chain.blocks.head.timestamp  # model clock: every block is mined at a chosen second
            self.channels: list[Channel] = []
            self.revoked = [False, False]
            self.start = {h.address: token.balanceOf(h) for h in holders}
            self.total = sum(self.start.values())

        def teardown(self):
            chain.restore(self.snapshot)

        def _tick(self):
            self.now += 1
            chain.pending_timestamp = self.now

        def _send(self, expected_error, call, *args, sender):
            """Send a transaction at the next model second; expect success or exactly this revert."""
            self._tick()
            return send_expecting(web3, channels, expected_error, call, *args, sender=sender)

        def _pick(self, index):
            return pick(self.channels, index)

        @initialize(deposits=st.tuples(st.integers(1, 10**6), st.integers(1, 10**6)))
        def open_one_channel_per_node(self, deposits):
            for node, deposit in enumerate(deposits):
                self.open_channel(node, deposit)

        @rule(node=st.integers(0, 1), deposit=st.integers(1, 10**6))
        def open_channel(self, node, deposit):
            key, _ = make_signer()
            self._open(node, key, deposit)

        @precondition(lambda self: self.channels)
        @rule(index=st.integers(0, 99), deposit=st.integers(1, 10**6))
        def open_same_signer_at_other_node(self, index, deposit):
            # The id commits to the node: the same (client, signer) opens once at each node.
            ch = self._pick(index)
            self._open(1 - ch.node, ch.key, deposit)

        def _open(self, node, key, deposit):
            signer = Account.from_key(key).address
            expected = channel_id(chain.chain_id, channels.address, node_ids[node], client.address, signer)
            if self.revoked[node]:
                error = "node not active"
            elif any(ch.channel_id == expected for ch in self.channels):
                error = "channel exists"
            else:
                error = None
            tx = self._send(error, channels.open_channel, node_ids[node], client, signer, deposit, sender=client)
            if tx is not None:
                assert bytes(tx.return_value) == expected
                self.channels.append(Channel(expected, key, node, deposit))

        @precondition(lambda self: self.channels)
        @rule(index=st.integers(0, 99), amount=st.integers(1, 10**5))
        def top_up(self, index, amount):
            ch = self._pick(index)
            error = {OPEN: None, CLOSING: "channel closing", FINAL: "channel finalised"}[ch.state]
            if self._send(error, channels.top_up, ch.channel_id, amount, sender=client) is not None:
                ch.deposit += amount

        @precondition(lambda self: self.channels)
        @rule(index=st.integers(0, 99), more_bytes=st.integers(0, 5000), more_permille=st.integers(0, 700))
        def sign_receipt(self, index, more_bytes, more_permille):
            # The signer pays for more bytes: a share of the deposit, so a few receipts overrun it.
            ch = self._pick(index)
            last_bytes, last_amount = ch.latest()
            ch.signed.append((last_bytes + more_bytes, last_amount + ch.deposit * more_permille // 1000))

        @precondition(lambda self: self.channels)
        @rule(
            index=st.integers(0, 99), back=st.integers(0, 2),
            more_bytes=st.integers(0, 5000), more_permille=st.integers(0, 700),
        )
        def settle(self, index, back, more_bytes, more_permille):
            # Sign a fresh receipt, then settle it or (back > 0) one of the older ones.
            self.sign_receipt(index, more_bytes, more_permille)
            ch = self._pick(index)
            nbytes, amount = ch.signed[max(0, len(ch.signed) - 1 - back)]
            signature = eip712.sign(eip712.Receipt(ch.channel_id, nbytes, amount), ch.key, chain.chain_id, channels.address)
            error = self._settle_error(ch, nbytes, amount, strict=True)
            if self._send(error, channels.settle, ch.channel_id, nbytes, amount, signature, sender=operator) is not None:
                ch.settled, ch.settled_bytes = amount, nbytes

        @precondition(lambda self: self.channels)
        @rule(index=st.integers(0, 99), more_bytes=st.integers(1, 5000), more_permille=st.integers(1, 300))
        def settle_latest(self, index, more_bytes, more_permille):
            # The common case, as its own rule so swarm testing rarely switches every settle off.
            self.settle(index, 0, more_bytes, more_permille)

        @precondition(lambda self: len(self.channels) >= 2)
        @rule(index=st.integers(0, 99), other=st.integers(0, 99))
        def replay_receipt_on_other_channel(self, index, other):
            # A receipt signed for one channel, sent to settle another (of the same signer at the
            # other node when there is one): never pays, whatever the figures.
            source = self._pick(index)
            same_signer = [ch for ch in self.channels if ch is not source and ch.key == source.key]
            target = same_signer[0] if same_signer else self._pick(other)
            if target is source:
                return
            nbytes, amount = target.settled_bytes + 1, target.settled + 1
            signature = eip712.sign(eip712.Receipt(source.channel_id, nbytes, amount), source.key,
                                    chain.chain_id, channels.address)
            error = self._settle_error(target, nbytes, amount, strict=True) or "wrong signer"
            self._send(error, channels.settle, target.channel_id, nbytes, amount, signature, sender=operator)

        def _settle_error(self, ch, nbytes, amount, strict):
            return settle_error(ch, nbytes, amount, strict=strict, now=self.now, node_revoked=self.revoked[ch.node])

        @precondition(lambda self: self.channels)
        @rule(index=st.integers(0, 99))
        def cooperative_close(self, index):
            ch = self._pick(index)
            nbytes, amount = ch.latest()
            signature = eip712.sign(eip712.Receipt(ch.channel_id, nbytes, amount), ch.key, chain.chain_id, channels.address)
            error = self._settle_error(ch, nbytes, amount, strict=False)
            node_signature = sign_close(ch.channel_id, nbytes, amount)
            if self._send(error, channels.cooperative_close, ch.channel_id, nbytes, amount, signature, node_signature,
                          sender=client) is not None:
                ch.settled, ch.settled_bytes, ch.state = amount, nbytes, FINAL

        @precondition(lambda self: self.channels)
        @rule(index=st.integers(0, 99))
        def start_close(self, index):
            ch = self._pick(index)
            error = {OPEN: None, CLOSING: "channel closing", FINAL: "channel finalised"}[ch.state]
            if self._send(error, channels.start_close, ch.channel_id, sender=client) is not None:
                ch.state, ch.close_at = CLOSING, self.now + period

        @precondition(lambda self: self.channels)
        @rule(index=st.integers(0, 99), offset=st.sampled_from(STEP_OFFSETS))
        def start_close_and_wait(self, index, offset):
            # Start a close and jump to one second before, at or after its end, so the next settle or
            # finalize lands on an edge of the challenge period.
            ch = self._pick(index)
            self.start_close(index)
            if ch.state == CLOSING:
                self.now = max(self.now, ch.close_at + offset - 1)

        @rule(offset=st.sampled_from(STEP_OFFSETS), whole=st.booleans(), small=st.integers(1, 3600))
        def advance_time(self, offset, whole, small):
            # Either land next to the end of a challenge period or move a little.
            closing = [ch.close_at for ch in self.channels if ch.state == CLOSING and ch.close_at > self.now + 1]
            if whole and closing:
                self.now = max(self.now, min(closing) + offset - 1)
            else:
                self.now += small

        @precondition(lambda self: self.channels)
        @rule(index=st.integers(0, 99))
        def finalize_close(self, index):
            ch = self._pick(index)
            if ch.state == FINAL:
                error = "channel finalised"
            elif ch.state == OPEN:
                error = "channel not closing"
            elif self.now + 1 < ch.close_at:
                error = "challenge period not over"
            else:
                error = None
            if self._send(error, channels.finalize_close, ch.channel_id, sender=stranger) is not None:
                ch.state = FINAL

        @precondition(lambda self: self.channels)
        @rule(index=st.integers(0, 99))
        def exit_revoked(self, index):
            ch = self._pick(index)
            if ch.state == FINAL:
                error = "channel finalised"
            elif not self.revoked[ch.node]:
                error = "node not revoked"
            else:
                error = None
            if self._send(error, channels.exit_revoked, ch.channel_id, sender=client) is not None:
                ch.state = FINAL

        @precondition(lambda self: not self.revoked[1] and len(self.channels) >= 3)
        @rule()
        def revoke_second_node(self):
            # Only the second node is ever revoked, so channels to the first keep settling.
            self._tick()
            registry.revoke(node_ids[1], stranger, sender=owner)
            self.revoked[1] = True

        @invariant()
        def tokens_are_conserved_and_every_party_got_its_due(self):
            balances = {h.address: token.balanceOf(h) for h in holders}
            assert sum(balances.values()) == self.total
            owed = sum(ch.deposit - share(ch.settled) for ch in self.channels if ch.state != FINAL)
            assert balances[channels.address] == owed
            node_paid = sum(share(ch.settled) for ch in self.channels)
            assert balances[operator.address] == self.start[operator.address] + node_paid
            for ch in self.channels:
                highest = max((amount for _, amount in ch.signed), default=0)
                assert share(ch.settled) <= ch.settled <= highest
            deposits = sum(ch.deposit for ch in self.channels)
            refunds = sum(ch.deposit - ch.settled for ch in self.channels if ch.state == FINAL)
            assert balances[client.address] == self.start[client.address] - deposits + refunds
            fees = sum(fee(ch.settled) for ch in self.channels if ch.state == FINAL)
            assert balances[treasury.address] == self.start[treasury.address] + fees

        @invariant()
        def chain_state_matches_model(self):
            for ch in self.channels[-2:]:
                _, refund_to, deposit, settled, settled_bytes, _, state = channels.channel(ch.channel_id)
                assert (refund_to, deposit, settled, settled_bytes, state) == (
                    client.address, ch.deposit, ch.settled, ch.settled_bytes, ch.state
                )

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=25, stateful_step_count=12, deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )

