"""voucher_pool.vy's relayer ledger: redemptions credit the submitter, who withdraws later.

Crediting replaced a token transfer per redemption (gas); the ledger keeps 1 + balance in storage so
the slot stays warm after a withdrawal, which must never show in `relayer_balance` or be paid out.
"""

import ape
from trapdoor_keys import DENOMINATION

FEE = 10**17  # relayer fee: 0.1 token


def test_relayer_fees__accumulate_withdraw_exactly_and_resume(vouchers, token, node_id, operator, stranger):
    pool = vouchers.pool
    assert pool.relayer_balance(operator) == 0
    vouchers.open(node_id, fee=FEE, sender=operator)
    vouchers.open(node_id, fee=3, sender=operator)
    vouchers.open(node_id, fee=0, sender=operator)
    vouchers.open(node_id, fee=FEE, sender=stranger)  # another relayer's credit is its own
    assert pool.relayer_balance(operator) == FEE + 3
    assert pool.relayer_balance(stranger) == FEE

    before, pool_before = token.balanceOf(operator), token.balanceOf(pool)
    tx = pool.withdraw_relayer_fees(sender=operator)
    assert tx.return_value == FEE + 3
    assert token.balanceOf(operator) == before + FEE + 3
    assert token.balanceOf(pool) == pool_before - FEE - 3
    [log] = pool.RelayerFeesWithdrawn.from_receipt(tx)
    assert (log.relayer, log.amount) == (operator.address, FEE + 3)
    assert pool.relayer_balance(operator) == 0  # the 1-wei sentinel is not a balance
    assert pool.relayer_balance(stranger) == FEE

    with ape.reverts("voucher_pool: no relayer fees"):
        pool.withdraw_relayer_fees(sender=operator)

    vouchers.open(node_id, fee=7, sender=operator)  # a later credit after the withdrawal
    assert pool.relayer_balance(operator) == 7
    before = token.balanceOf(operator)
    assert pool.withdraw_relayer_fees(sender=operator).return_value == 7
    assert token.balanceOf(operator) == before + 7


def test_relayer_fees__never_credited__reverts(pool, client):
    with ape.reverts("voucher_pool: no relayer fees"):
        pool.withdraw_relayer_fees(sender=client)


def test_relayer_fees__only_zero_fee_redemptions__nothing_to_withdraw(vouchers, node_id, stranger):
    vouchers.open(node_id, fee=0, sender=stranger)
    assert vouchers.pool.relayer_balance(stranger) == 0
    with ape.reverts("voucher_pool: no relayer fees"):
        vouchers.pool.withdraw_relayer_fees(sender=stranger)


def test_relayer_fees__one_wei__withdrawn_exactly(vouchers, token, node_id, stranger):
    vouchers.open(node_id, fee=1, sender=stranger)
    before = token.balanceOf(stranger)
    vouchers.pool.withdraw_relayer_fees(sender=stranger)
    assert token.balanceOf(stranger) == before + 1


def test_relayer_fees__conservation_after_everyone_is_paid(vouchers, token, node_id, operator, stranger, treasury):
    # Two channels closed cooperatively, one left open; relayers withdraw: what stays in the pool is
    # exactly the open channel's deposit and the unredeemed note.
    pool = vouchers.pool
    holders = [operator, stranger, treasury, vouchers.client, pool]
    total = sum(token.balanceOf(h) for h in holders)
    closed = [vouchers.open(node_id, fee=FEE, sender=stranger) for _ in range(2)]
    still_open = vouchers.open(node_id, fee=2 * FEE, sender=operator)
    vouchers.deposit()  # never redeemed
    for ch, amount in zip(closed, (10**18, DENOMINATION - FEE)):
        pool.cooperative_close(*ch.terms, 1, amount, ch.receipt(1, amount), ch.close(1, amount, operator.private_key),
                               sender=stranger)
    pool.withdraw_relayer_fees(sender=stranger)
    pool.withdraw_relayer_fees(sender=operator)
    assert token.balanceOf(pool) == still_open.deposit + DENOMINATION
    assert (pool.relayer_balance(stranger), pool.relayer_balance(operator)) == (0, 0)
    refunds = sum(token.balanceOf(ch.signer) for ch in closed)
    assert refunds == (DENOMINATION - FEE - 10**18) + 0
    assert sum(token.balanceOf(h) for h in holders) + refunds == total  # no wei made or lost
