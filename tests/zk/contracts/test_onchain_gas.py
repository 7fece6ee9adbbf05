"""zk/onchain_gas.py runs end to end on the test chain (depth 3) and its figures hang together.

The gas figures themselves are the benchmark's (scripts/bench_zk.py); here only their relations,
which follow from EIP-2929 / EIP-2200 storage prices, are checked.
"""

import pytest

from zk.onchain_gas import measure_gas

# ecPairing with 4 pairs + 3 ecMul + 3 ecAdd (EIP-1108 prices): the floor of any verification here.
PRECOMPILE_FLOOR = 45_000 + 4 * 34_000 + 3 * 6_000 + 3 * 150
# Cold SLOAD (EIP-2929) and SSTORE of a warm slot: zero -> non-zero, non-zero -> other non-zero.
COLD_SLOAD, SSTORE_SET, SSTORE_RESET = 2_100, 20_000, 2_900
# A cold account's first call (EIP-2929).
COLD_ACCOUNT = 2_600
# A call to an account already touched in the transaction (EIP-2929).
WARM_CALL = 100
# Two transactions of the same path still differ in call data (a proof's or signature's zero
# bytes, 12 gas each): the slack of the comparisons below.
CALLDATA_SLACK = 400


@pytest.fixture(scope="module")
def gas(keys, depth):
    return measure_gas(keys[0], keys[1], depth)


def test_measure_gas__verify_and_poseidon__within_precompile_bounds(gas):
    assert PRECOMPILE_FLOOR < gas["verify_gas"] < PRECOMPILE_FLOOR + 15_000
    assert gas["poseidon_gas"] < gas["poseidon_gas_vyper"]


def test_measure_gas__deposits__one_poseidon_call_per_one_bit(gas):
    # depth 3: the "mean" index 0b101 hashes twice, the last index 0b111 three times.
    per_hash = gas["deposit_gas_max"] - gas["deposit_gas"]
    assert gas["poseidon_gas"] < per_hash < gas["poseidon_gas"] + 5_000


def test_measure_gas__first_relay__pays_for_creating_the_ledger_slot(gas):
    # The ledger slot is created once per relayer (0 -> non-zero), then updated.
    extra = gas["redeem_gas_first_relay"] - gas["redeem_gas"]
    assert abs(extra - (SSTORE_SET - SSTORE_RESET)) < CALLDATA_SLACK
    # After a withdrawal the 1-wei sentinel keeps the slot non-zero: no second creation.
    assert abs(gas["redeem_gas_after_withdrawal"] - gas["redeem_gas"]) < CALLDATA_SLACK


def test_measure_gas__redeem_breakdown__one_fresh_slot_and_the_verifier(gas):
    parts = gas["redeem_breakdown"]
    assert parts["total"] == gas["redeem_gas"]
    # One new slot (the channel's terms, which is the nullifier mark) and the ledger update.
    assert parts["sstore"] == SSTORE_SET + SSTORE_RESET
    # Cold reads: root history, size, the channel's terms, the relayer's ledger.
    assert parts["sload"] == 4 * COLD_SLOAD
    # The verifier's call: its execution plus the cold account, a little memory.
    assert COLD_ACCOUNT <= parts["calls"] - gas["verify_gas"] < COLD_ACCOUNT + 1_000


def test_measure_gas__voucher_settle__first_creates_the_progress_word_and_pins(gas):
    # The first settlement creates the progress word and, before it pins the registration, looks
    # the node id up (registry.node_index: a cold slot and one more, warm, call).
    extra = gas["voucher_settle_gas_first"] - gas["voucher_settle_gas"]
    assert abs(extra - (SSTORE_SET - SSTORE_RESET + COLD_SLOAD + WARM_CALL)) < CALLDATA_SLACK
    assert gas["withdraw_relayer_fees_gas"] < gas["voucher_settle_gas"]
