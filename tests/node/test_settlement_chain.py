"""The Settler on the real contracts (anvil): stored receipts settle, a restart settles nothing twice
(also after a crash between send and record), a close started on chain settles at once."""

import pytest

from agents.chain.bindings import WarrenContracts
from agents.metering import GIB, ChannelTerms, ReceiptLedger, ReceiptSigner
from agents.node.settlement import ContractsChainPort, SettlementPolicy, Settler
from agents.node.store import NodeStore

PRICE = 10**15  # register_node's default price, token wei per GiB
HIGH = 10**30  # a threshold no test amount reaches


@pytest.fixture
def contracts(token, registry, channels, chain):
    return WarrenContracts(token=token, registry=registry, channels=channels, reputation=None, revocations=None,
                           chain_id=chain.chain_id)


@pytest.fixture
def paid_channel(tmp_path, channels, chain, node_id, open_channel, signer, signer_key):
    """A channel to the operator's node with receipts for `gib` GiB stored in a NodeStore."""

    def _make(gib=3):
        cid = open_channel(node_id)
        terms = ChannelTerms(cid, signer, int(channels.channel(cid)[2]), PRICE, GIB, chain.chain_id,
                             channels.address)
        store = NodeStore(tmp_path / "node.db")
        store.upsert_channel(terms)
        ledger = ReceiptLedger(terms, store.receipt_store(cid))
        payer = ReceiptSigner(terms, signer_key)
        for n in range(1, gib + 1):
            assert ledger.accept(*payer.sign(n * GIB), n * GIB).accepted
        store.close()
        return cid, ledger.latest().receipt

    return _make


def _settler(tmp_path, contracts, operator, chain, threshold=0):
    return Settler(NodeStore(tmp_path / "node.db"), ContractsChainPort(contracts, operator),
                   SettlementPolicy(threshold), clock=lambda: chain.pending_timestamp, sleep=lambda s: None)


def test_recover__stored_receipt_settled_then_restart_settles_nothing(
        tmp_path, contracts, operator, chain, token, channels, paid_channel):
    cid, latest = paid_channel()
    before = int(token.balanceOf(operator))
    settler = _settler(tmp_path, contracts, operator, chain, threshold=HIGH)
    [outcome] = settler.recover()  # a restart settles what is stored, whatever the threshold
    assert outcome.result == "settled" and 50_000 < outcome.gas < 80_000
    state = contracts.channel(cid)
    assert (state.settled, state.settled_bytes) == (latest.cumulative_amount, latest.cumulative_bytes)
    fee = int(channels.fee_of(latest.cumulative_amount))
    assert int(token.balanceOf(operator)) - before == latest.cumulative_amount - fee
    settler.store.close()

    nonce = operator.nonce
    again = _settler(tmp_path, contracts, operator, chain)
    assert again.recover() == [] and again.step() == [] and again.shutdown() == []
    assert operator.nonce == nonce and contracts.channel(cid).settled == latest.cumulative_amount


def test_crash_between_send_and_record__restart_reconciles_without_sending(
        tmp_path, contracts, operator, chain, paid_channel):
    cid, latest = paid_channel()
    store = NodeStore(tmp_path / "node.db")
    [(_, record, _)] = store.unsettled()
    store.settlement_started(cid, latest.cumulative_amount, latest.cumulative_bytes, 0)
    ContractsChainPort(contracts, operator).settle(store.channel(cid), record)  # then the process dies
    store.close()

    nonce = operator.nonce
    settler = _settler(tmp_path, contracts, operator, chain)
    assert settler.recover() == []
    assert operator.nonce == nonce
    [row] = settler.store.settlements(cid)
    assert (row.status, row.amount) == ("confirmed", latest.cumulative_amount)


def test_close_started_on_chain__settled_at_once_below_threshold(
        tmp_path, contracts, operator, client, chain, paid_channel):
    cid, latest = paid_channel(gib=1)
    settler = _settler(tmp_path, contracts, operator, chain, threshold=HIGH)
    assert settler.step() == []  # far below the threshold (and no recover(): not a restart)
    contracts.channels.start_close(cid, sender=client)
    [outcome] = settler.step()
    assert (outcome.channel_id, outcome.result) == (cid, "settled")
    assert cid in settler.closing
    assert contracts.channel(cid).settled == latest.cumulative_amount


def test_rejected_by_contract__recorded_failed(tmp_path, contracts, client, chain, paid_channel):
    cid, _ = paid_channel(gib=1)
    settler = _settler(tmp_path, contracts, client, chain)  # the client is not the node operator
    [outcome] = settler.recover()
    assert (outcome.result, outcome.reason) == ("rejected", "payment_channels: not the node operator")
    assert [r.status for r in settler.store.settlements(cid)] == ["failed"]


def test_settle_transaction_dropped_from_the_mempool__sent_again__settled_once(
        tmp_path, contracts, operator, chain, paid_channel):
    """A node (or a full mempool) drops the settle transaction before any block takes it: the wait for
    its receipt fails, the settler records a retry, and the next step sends it again."""
    import threading

    cid, latest = paid_channel(gib=1)
    settler = _settler(tmp_path, contracts, operator, chain)
    provider = chain.provider
    outcomes: list = []
    provider.make_request("evm_setAutomine", [False])
    try:
        stepping = threading.Thread(target=lambda: outcomes.extend(settler.recover()), daemon=True)
        stepping.start()
        dropped = None
        for _ in range(200):  # until the settle transaction is in the mempool (bounded: 20 s)
            pending = provider.make_request("txpool_content", [])["pending"]
            hashes = [tx["hash"] for by_nonce in pending.values() for tx in by_nonce.values()]
            if hashes:
                dropped = hashes[0]
                provider.make_request("anvil_dropTransaction", [dropped])
                break
            stepping.join(0.1)
        assert dropped is not None, "the settler sent nothing"
    finally:
        provider.make_request("evm_setAutomine", [True])
    stepping.join(120)
    assert not stepping.is_alive()
    # The wait for the dropped one's receipt failed; the settler sent again (the same signed bytes:
    # same nonce, same call) and this time a block took it.
    [outcome] = outcomes
    assert outcome.result == "settled" and outcome.gas > 50_000
    state = contracts.channel(cid)
    assert (state.settled, state.settled_bytes) == (latest.cumulative_amount, latest.cumulative_bytes)
    settled = [e for e in contracts.channels.ReceiptSettled.range(0, chain.blocks.head.number + 1)
               if bytes(e.channel_id) == cid]
    assert len(settled) == 1  # paid once
    assert [r.status for r in settler.store.settlements(cid)][-1] == "confirmed"
