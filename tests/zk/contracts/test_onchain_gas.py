"""zk/onchain_gas.py runs end to end on the test chain (depth 3) and its figures hang together."""

from zk.onchain_gas import measure_gas

# ecPairing with 4 pairs + 3 ecMul + 3 ecAdd (EIP-1108 prices): the floor of any verification here.
PRECOMPILE_FLOOR = 45_000 + 4 * 34_000 + 3 * 6_000 + 3 * 150


def test_measure_gas__depth3__figures_consistent(keys, depth):
    gas = measure_gas(keys[0], keys[1], depth)
    assert PRECOMPILE_FLOOR < gas["verify_gas"] < PRECOMPILE_FLOOR + 15_000
    assert gas["redeem_gas"] > gas["redeem_gas_top_up"] > gas["verify_gas"] + 21_000
    assert gas["poseidon_gas"] < gas["poseidon_gas_vyper"]
    # depth 3: the "mean" index 0b101 hashes twice, the last index 0b111 three times.
    per_hash = gas["deposit_gas_max"] - gas["deposit_gas"]
    assert gas["poseidon_gas"] < per_hash < gas["poseidon_gas"] + 5_000
