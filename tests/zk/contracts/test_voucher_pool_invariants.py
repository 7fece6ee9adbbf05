"""Random lives of a voucher pool against a model: deposits, redemptions, settlements, closes, withdrawals.

A hypothesis state machine drives one pool (deployed once per module; every example starts from a
chain snapshot and restores it) through deposits, redemptions with trapdoor proofs (random fee and
relayer, sometimes a spent note), receipts and settlements (sometimes stale or over the deposit),
cooperative and unilateral closes around the edges of the challenge period, revocation of one node,
exits, and relayer withdrawals. Steps the model expects to revert are checked with an eth_call
against the pending block and the exact revert string (a reverted transaction costs ape-foundry a
call trace), steps it expects to succeed are real transactions whose events are decoded.

Invariants after every step, with D the denomination and share(s) = s - s * fee_bps // 10_000:

    pool balance == D * deposits - (node payouts + signer refunds + treasury fees + relayer withdrawals)
                 == D * unredeemed notes
                    + sum over channels not finalised of (deposit - share(settled))
                    + sum over relayers of relayer_balance

and, from the chain's own events, no channel ever pays out more than its deposit: what a channel
paid the node (ReceiptSettled.node_amount, ChannelClosed's share) plus its refund and fee is
share(settled) <= settled <= deposit while open, and exactly its deposit once finalised. The tree
root equals zk.merkle's LeanIMT over the same commitments; every note redeems at most once.
"""

import os
import random
from dataclasses import dataclass, field

import pytest
from channel_model import CLOSING, FINAL, OPEN, STEP_OFFSETS, pick, send_expecting, settle_error
from eth_account import Account
from eth_utils import keccak
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
from trapdoor_keys import DENOMINATION

from agents.chain import eip712
from zk.merkle import LeanIMT
from zk.voucher import Note, ext_data_hash

MIN_NODE_STAKE = 100 * 10**18  # tests/contract_fixtures.py's minimum node stake
#: Relayer fees a redemption may ask: none, one wei, a usual fee, all but one wei of the note.
FEES = (0, 1, 10**17, DENOMINATION - 1)


@dataclass
class Channel:
    """What the model expects of one voucher channel."""

    channel_id: bytes
    node: int
    key: bytes
    signer: str
    deposit: int
    settled: int = 0
    settled_bytes: int = 0
    state: int = OPEN
    close_at: int = 0
    signed: list = field(default_factory=list)  # (cumulative_bytes, cumulative_amount), growing
    paid_node: int = 0  # from ReceiptSettled events and the close
    refund: int = 0  # from ChannelClosed
    fee: int = 0  # from ChannelClosed

    def latest(self):
        return self.signed[-1] if self.signed else (self.settled_bytes, self.settled)


@pytest.fixture(scope="module")
def setup(project, owner, operator, token, registry, channels, verifier, poseidon_bytecode):
    """(pool, [node_id, node_id]) deployed once for the module; `owner` may revoke."""
    pool = owner.deploy(project.voucher_pool, channels, verifier, poseidon_bytecode, DENOMINATION, 5)
    node_ids = []
    for _ in range(2):
        wg_key = os.urandom(32)
        token.approve(registry, MIN_NODE_STAKE, sender=operator)
        registry.register_node(wg_key, "DE", 10**15, MIN_NODE_STAKE, sender=operator)
        node_ids.append(keccak(wg_key))
    registry.set_revoker(owner, sender=owner)
    return pool, node_ids


def test_pool__random_lives__books_balance_and_no_channel_overpays(
    chain, accounts, setup, trapdoor, token, registry, owner, operator, client, treasury, stranger, challenger
):
    pool, node_ids = setup
    web3 = chain.provider.web3
    fee_bps, period = pool.fee_bps(), pool.challenge_period()
    relayers = (stranger, challenger)
    holders = (pool, operator, client, treasury, stranger, challenger)

    def fee(amount):
        return amount * fee_bps // 10_000

    def share(amount):
        return amount - fee(amount)

    class Machine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.snapshot = chain.snapshot()
            self.now = chain.blocks.head.timestamp  # model clock: every block is mined at a chosen second
            self.tree = LeanIMT()
            self.notes: list[Note] = []
            self.spent: set[int] = set()
            self.channels: list[Channel] = []
            self.revoked = [False, False]
            self.credit = {r.address: 0 for r in relayers}
            self.withdrawn = {r.address: 0 for r in relayers}
            self.start = {h.address: token.balanceOf(h) for h in holders}
            token.approve(pool, 2**256 - 1, sender=client)

        def teardown(self):
            chain.restore(self.snapshot)

        # helpers

        def _send(self, expected_error, call, *args, sender):
            """Send at the next model second; expect success (returns the receipt) or exactly this revert."""
            self.now += 1
            chain.pending_timestamp = self.now
            return send_expecting(web3, pool, expected_error, call, *args, sender=sender)

        def _terms(self, ch):
            return (ch.channel_id, node_ids[ch.node], ch.signer, ch.deposit)

        def _pick(self, index):
            return pick(self.channels, index)

        def _closed(self, ch, tx):
            [log] = pool.ChannelClosed.from_receipt(tx)
            ch.refund, ch.fee = log.refund, log.fee
            assert log.settled == ch.settled
            assert token.balanceOf(ch.signer) == ch.refund
            ch.state = FINAL

        def _settled(self, ch, tx):
            for log in pool.ReceiptSettled.from_receipt(tx):
                ch.paid_node += log.node_amount

        # rules

        @initialize(seed=st.integers(0, 2**32), fee_index=st.integers(0, 3))
        def two_notes_one_channel_per_node(self, seed, fee_index):
            # Start with something to settle: two notes, each redeemed to one of the nodes.
            self.deposit(seed)
            self.deposit(seed + 1)
            self.redeem(0, 0, fee_index, 0)
            self.redeem(0, 1, 0, 1)

        @rule(seed=st.integers(0, 2**32))
        def deposit(self, seed):
            rng = random.Random(seed)
            note = Note(rng.getrandbits(248), rng.getrandbits(248))
            if note.commitment in self.tree.leaves or self.tree.size >= 2**5:
                return
            self._send(None, pool.deposit, note.commitment, DENOMINATION, sender=client)
            self.tree.insert(note.commitment)
            self.notes.append(note)
            assert pool.root() == self.tree.root and pool.size() == self.tree.size

        @rule(index=st.integers(0, 99), node=st.integers(0, 1), fee_index=st.integers(0, 3), relayer=st.integers(0, 1))
        def redeem(self, index, node, fee_index, relayer):
            # Mostly an unspent note (index < 80); sometimes any note, so double spends are tried.
            unspent = [n for n in self.notes if n.nullifier_hash not in self.spent]
            note = unspent[index % len(unspent)] if unspent and index < 80 else self.notes[index % len(self.notes)]
            relayer_fee, sender = FEES[fee_index], relayers[relayer]
            key = keccak(b"warren invariant signer %d" % len(self.channels))
            signer = Account.from_key(key).address
            ext = ext_data_hash(node_ids[node], signer, relayer_fee)
            proof = trapdoor.prove([self.tree.root, note.nullifier_hash, ext])
            error = "nullifier spent" if note.nullifier_hash in self.spent else None
            tx = self._send(error, pool.redeem, proof, self.tree.root, note.nullifier_hash, node_ids[node], signer,
                            relayer_fee, sender=sender)
            if tx is None:
                return
            self.spent.add(note.nullifier_hash)
            self.credit[sender.address] += relayer_fee
            self.channels.append(Channel(bytes(tx.return_value), node, key, signer, DENOMINATION - relayer_fee))

        @precondition(lambda self: self.channels)
        @rule(
            index=st.integers(0, 99), back=st.integers(0, 2),
            more_bytes=st.integers(0, 5000), more_permille=st.integers(0, 700),
        )
        def settle(self, index, back, more_bytes, more_permille):
            # The signer signs for more bytes (a share of the deposit, so some receipts overrun it); the
            # node settles that receipt or (back > 0) an older one.
            ch = self._pick(index)
            last_bytes, last_amount = ch.latest()
            ch.signed.append((last_bytes + more_bytes, last_amount + ch.deposit * more_permille // 1000))
            nbytes, amount = ch.signed[max(0, len(ch.signed) - 1 - back)]
            signature = eip712.sign(eip712.Receipt(ch.channel_id, nbytes, amount), ch.key, chain.chain_id, pool.address)
            error = self._settle_error(ch, nbytes, amount, strict=True)
            tx = self._send(error, pool.settle, *self._terms(ch), nbytes, amount, signature, sender=operator)
            if tx is not None:
                ch.settled, ch.settled_bytes = amount, nbytes
                self._settled(ch, tx)

        def _settle_error(self, ch, nbytes, amount, strict):
            return settle_error(ch, nbytes, amount, strict=strict, now=self.now, node_revoked=self.revoked[ch.node])

        @precondition(lambda self: self.channels)
        @rule(index=st.integers(0, 99))
        def cooperative_close(self, index):
            ch = self._pick(index)
            nbytes, amount = ch.latest()
            receipt = eip712.sign(eip712.Receipt(ch.channel_id, nbytes, amount), ch.key, chain.chain_id, pool.address)
            consent = eip712.sign(eip712.CooperativeClose(ch.channel_id, nbytes, amount), operator.private_key,
                                  chain.chain_id, pool.address)
            error = self._settle_error(ch, nbytes, amount, strict=False)
            node_before = token.balanceOf(operator)
            tx = self._send(error, pool.cooperative_close, *self._terms(ch), nbytes, amount, receipt, consent,
                            sender=stranger)
            if tx is not None:
                ch.settled, ch.settled_bytes = amount, nbytes
                ch.paid_node += token.balanceOf(operator) - node_before  # no event names the node's last share
                self._closed(ch, tx)

        @precondition(lambda self: self.channels)
        @rule(index=st.integers(0, 99), offset=st.sampled_from(STEP_OFFSETS), wait=st.booleans())
        def start_close(self, index, offset, wait):
            # The signer (an impersonated fresh key) starts a close; maybe jump next to its end.
            ch = self._pick(index)
            error = {OPEN: None, CLOSING: "channel closing", FINAL: "channel finalised"}[ch.state]
            if error is None:
                chain.set_balance(ch.signer, 10**18)
            tx = self._send(error, pool.start_close, *self._terms(ch), sender=accounts[ch.signer] if error is None
                            else ch.signer)
            if tx is not None:
                [log] = pool.ChannelCloseStarted.from_receipt(tx)
                assert log.close_at == self.now + period
                ch.state, ch.close_at = CLOSING, log.close_at
                if wait:
                    self.now = max(self.now, ch.close_at + offset - 1)

        @rule(small=st.integers(1, 3600))
        def advance_time(self, small):
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
            tx = self._send(error, pool.finalize_close, *self._terms(ch), sender=stranger)
            if tx is not None:
                self._closed(ch, tx)

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
            tx = self._send(error, pool.exit_revoked, *self._terms(ch), sender=client)
            if tx is not None:
                self._closed(ch, tx)

        @precondition(lambda self: not self.revoked[1] and len(self.channels) >= 2)
        @rule()
        def revoke_second_node(self):
            # Only the second node is ever revoked, so channels to the first keep settling.
            self.now += 1
            chain.pending_timestamp = self.now
            registry.revoke(node_ids[1], treasury, sender=owner)  # stake to the treasury: counted below
            self.start[treasury.address] += MIN_NODE_STAKE
            self.revoked[1] = True

        @rule(relayer=st.integers(0, 9))
        def withdraw_relayer_fees(self, relayer):
            # Mostly a relayer with fees to take (relayer < 8); sometimes one without.
            owed = [r for r in relayers if self.credit[r.address]]
            sender = owed[relayer % len(owed)] if owed and relayer < 8 else relayers[relayer % 2]
            amount = self.credit[sender.address]
            tx = self._send(None if amount else "no relayer fees", pool.withdraw_relayer_fees, sender=sender)
            if tx is not None:
                assert tx.return_value == amount
                self.credit[sender.address] = 0
                self.withdrawn[sender.address] += amount

        # invariants

        @invariant()
        def books_balance(self):
            balances = {h.address: token.balanceOf(h) for h in holders}
            delta = {a: balances[a] - self.start[a] for a in balances}
            final = [ch for ch in self.channels if ch.state == FINAL]
            node_paid = sum(ch.paid_node for ch in self.channels)
            refunds = sum(ch.refund for ch in final)
            fees = sum(ch.fee for ch in final)
            withdrawals = sum(self.withdrawn.values())
            deposits = len(self.notes) * DENOMINATION
            # What came in less what went out...
            assert delta[pool.address] == deposits - (node_paid + refunds + fees + withdrawals)
            # ...equals what the pool still owes, item by item.
            unredeemed = len(self.notes) - len(self.spent)
            owed = sum(ch.deposit - share(ch.settled) for ch in self.channels if ch.state != FINAL)
            assert delta[pool.address] == unredeemed * DENOMINATION + owed + sum(self.credit.values())
            for relayer in relayers:
                assert pool.relayer_balance(relayer) == self.credit[relayer.address]
                assert delta[relayer.address] == self.withdrawn[relayer.address]
            assert delta[operator.address] == node_paid
            assert delta[treasury.address] == fees
            assert delta[client.address] == -deposits

        @invariant()
        def no_channel_pays_more_than_its_deposit(self):
            for ch in self.channels:
                assert ch.paid_node == share(ch.settled) <= ch.settled <= ch.deposit
                if ch.state == FINAL:
                    assert ch.paid_node + ch.refund + ch.fee == ch.deposit
                    assert ch.fee == fee(ch.settled)
                else:
                    assert ch.refund == ch.fee == 0
                assert ch.settled <= max((amount for _, amount in ch.signed), default=0)

        @invariant()
        def chain_state_matches_model(self):
            for ch in self.channels[-2:]:
                _, settled, settled_bytes, close_at, state = pool.channel(ch.channel_id)
                assert (settled, settled_bytes, state) == (ch.settled, ch.settled_bytes, ch.state)
                if ch.state == CLOSING:
                    assert close_at == ch.close_at
            for note in self.notes[-2:]:
                assert pool.nullifier_spent(note.nullifier_hash) == (note.nullifier_hash in self.spent)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=8, stateful_step_count=15, deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
