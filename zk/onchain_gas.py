"""Gas of the voucher pool on a local anvil chain: one Poseidon hash, deposit, redeem, verification.

For scripts/bench_zk.py (``deposit_gas``, ``redeem_gas``, ``poseidon_gas``) and runnable alone::

    python -m zk.onchain_gas --depth 20 [--keys keys/voucher-depth20]

Everything is measured from transaction receipts (``gas_used``) on the real contracts (token,
registry, payment_channels, generated verifier and Poseidon, voucher_pool) with a real proof from
zk.groth16 for the circuit of ``depth``, except:

- ``poseidon_gas`` and ``verify_gas`` are the execution gas of one call: the call sent as a
  transaction, its gas used minus the 21,000 transaction base and the call data (EIP-2028), i.e.
  what a contract pays when it calls them (plus the cold-account surcharge of EIP-2929 on its
  first call).
- A LeanIMT deposit hashes once per 1-bit of its leaf index, so its gas depends on the tree's
  size. ``deposit_gas`` is a deposit at a depth-20 index with 10 one-bits (the mean over all 2^20
  indices), ``deposit_gas_max`` at index 2^20 - 1 (20 hashes). To reach those indices without a
  million deposits, the pool's ``size`` and ``side_nodes`` slots are preloaded with
  ``anvil_setStorageAt`` with non-zero words, as a long-lived tree has them, and the pool is given
  the token balance earlier deposits would have left (so its balance slot is non-zero): the gas is
  the same as in a real tree of that size (same hashes, same storage transitions); the root is
  not meaningful and is not used. ``deposit_gas_first`` is the very first deposit of a fresh pool.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import ape
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak

from zk.export import proof_calldata, vk_to_json
from zk.field import R
from zk.groth16 import VerifyingKey as GrothVK
from zk.groth16 import prove
from zk.merkle import LeanIMT
from zk.onchain import calldata_gas, deploy_poseidon_bytecode, deploy_verifier, deploy_voucher_pool
from zk.voucher import Note, ext_data_hash, voucher_circuit, voucher_inputs
from zk.vyper_verifier import VerifyingKey as TemplateVK
from zk.vyper_verifier import vk_from_snarkjs

__all__ = ["ChainDataError", "DEFAULTS", "measure_gas"]

ROOT = Path(__file__).resolve().parent.parent
TOKEN = 10**18
#: Deployment parameters (the same as tests/contract_fixtures.py).
DEFAULTS = {
    "min_node_stake": 100 * TOKEN,
    "min_challenger_stake": 10 * TOKEN,
    "unbonding_delay": 7 * 24 * 3600,
    "fee_bps": 100,
    "challenge_period": 24 * 3600,
    "denomination": 10 * TOKEN,
    "relayer_fee": TOKEN // 10,
}
#: Base gas of a transaction (Yellow Paper G_transaction).
TX_BASE_GAS = 21_000


class ChainDataError(RuntimeError):
    """The chain disagrees with the Python reference (a root, the storage layout): a remote fault."""


# voucher_pool storage slots (vyper -f layout contracts/voucher_pool.vy): size, root, side_nodes.
_SLOT_SIZE, _SLOT_ROOT, _SLOT_SIDE_NODES = 0, 1, 2


def _map_slot(slot: int, key: int) -> int:
    """Storage slot of HashMap[uint256, ...] entry ``key`` at ``slot`` (Vyper: keccak256(slot . key))."""
    return int.from_bytes(keccak(abi_encode(["uint256", "uint256"], [slot, key])), "big")


def _call_gas(contract_method, *args, sender) -> int:
    """Execution gas of a call: sent as a transaction, gas used minus the base and its call data.

    (Not ``eth_estimateGas``: with a sub-call it returns the gas *limit* needed, which the 63/64
    rule of EIP-150 puts ~2,700 above what the verifier's pairing call actually uses.)
    """
    tx = contract_method.as_transaction(*args, sender=sender)
    receipt = sender.call(tx)
    return int(receipt.gas_used) - TX_BASE_GAS - calldata_gas(bytes(tx.data))


def _set_word(provider, address: str, slot: int, value: int) -> None:
    provider.make_request("anvil_setStorageAt", [address, hex(slot), "0x" + value.to_bytes(32, "big").hex()])


def _read_word(provider, address: str, slot: int) -> int:
    return int(provider.make_request("eth_getStorageAt", [address, hex(slot), "latest"]), 16)


def measure_gas(pk: Any, vk: Any, depth: int, network: str = "ethereum:local:foundry") -> dict[str, int]:
    """Deploy everything on a fresh chain and measure the voucher pool's gas.

    Args:
        pk: zk.groth16.ProvingKey of the voucher circuit of ``depth`` (to make the redeem proofs).
        vk: its verification key: a zk.groth16.VerifyingKey, a snarkjs JSON dict, or a
            zk.vyper_verifier.VerifyingKey.
        depth: the circuit's maximum tree depth (the pool is deployed with it).
        network: ape network choice, used when no provider is connected yet.

    Returns:
        Gas figures: ``poseidon_gas``, ``poseidon_gas_vyper``, ``verify_gas``, ``deposit_gas``,
        ``deposit_gas_max``, ``deposit_gas_first``, ``redeem_gas`` (opens a channel),
        ``redeem_gas_top_up`` (second note into the same channel).
    """
    if isinstance(vk, GrothVK):
        vk = vk_from_snarkjs(vk_to_json(vk))
    elif isinstance(vk, dict):
        vk = vk_from_snarkjs(vk)
    if not isinstance(vk, TemplateVK):
        raise TypeError(f"not a verification key: {type(vk).__name__}")

    os.chdir(ROOT)  # ape reads the project from the working directory
    connected = ape.networks.active_provider is not None and ape.networks.active_provider.is_connected
    with nullcontext() if connected else ape.networks.parse_network_choice(network):
        return _measure(pk, vk, depth)


def _measure(pk: Any, vk: TemplateVK, depth: int) -> dict[str, int]:
    d = DEFAULTS
    project, provider = ape.project, ape.chain.provider
    acct = ape.accounts.test_accounts
    owner, operator, client, treasury = acct[0], acct[1], acct[2], acct[3]
    gas: dict[str, int] = {}

    token = owner.deploy(project.warren_token)
    registry = owner.deploy(project.node_registry, token, d["min_node_stake"], d["min_challenger_stake"],
                            d["unbonding_delay"])
    channels = owner.deploy(project.payment_channels, token, registry, d["fee_bps"], treasury,
                            d["challenge_period"])
    for account in (operator, client):
        token.mint(account, 10**6 * TOKEN, sender=owner)
    token.approve(registry, d["min_node_stake"], sender=operator)
    wg_key = keccak(b"onchain_gas node")
    registry.register_node(wg_key, "DE", 10**15, d["min_node_stake"], sender=operator)
    node_id = keccak(wg_key)

    poseidon = deploy_poseidon_bytecode(owner)
    poseidon_vyper = owner.deploy(project.poseidon_t3)
    a, b = 0x1234 * 2**200 % R, 0x5678 * 2**180 % R  # typical full-width field elements
    gas["poseidon_gas"] = _call_gas(poseidon.hash, a, b, sender=owner)
    gas["poseidon_gas_vyper"] = _call_gas(poseidon_vyper.hash, a, b, sender=owner)

    verifier = deploy_verifier(vk, owner)

    def new_pool():
        return deploy_voucher_pool(project, owner, channels, d["denomination"], depth,
                                   verifier=verifier, poseidon=poseidon).pool

    pool = new_pool()
    token.approve(pool, 2**256 - 1, sender=client)
    notes = [Note(nullifier=1000 + i, secret=2000 + i) for i in range(4)]
    tree = LeanIMT()
    for i, note in enumerate(notes):
        receipt = pool.deposit(note.commitment, d["denomination"], sender=client)
        tree.insert(note.commitment)
        if i == 0:
            gas["deposit_gas_first"] = int(receipt.gas_used)
    if pool.root() != tree.root:
        raise ChainDataError("pool root differs from zk.merkle's")
    # The layout assumption behind the preloading below, checked on the real tree of 4 leaves.
    if _read_word(provider, pool.address, _map_slot(_SLOT_SIDE_NODES, 2)) != tree.root:
        raise ChainDataError("voucher_pool storage layout changed: update _SLOT_* in zk/onchain_gas.py")

    # Redeem with real proofs: the first opens a channel, the second tops it up.
    circuit = voucher_circuit(depth)
    signer = Account.from_key(keccak(b"onchain_gas signer")).address
    fee = d["relayer_fee"]
    ext = ext_data_hash(node_id, signer, fee)
    for i, name in ((1, "redeem_gas"), (2, "redeem_gas_top_up")):
        witness = circuit.witness(voucher_inputs(notes[i], tree.proof(i), ext, depth))
        public = circuit.public_values(witness)
        data = proof_calldata(prove(pk, circuit, witness))
        if name == "redeem_gas":
            gas["verify_gas"] = _call_gas(verifier.verify_proof, data, public, sender=owner)
        receipt = pool.redeem(data, tree.root, notes[i].nullifier_hash, node_id, signer, fee, sender=operator)
        gas[name] = int(receipt.gas_used)

    # Deposits deep in a depth-`depth` tree, on preloaded storage (see the module docstring).
    mean_index = int("10" * (depth // 2) + "1" * (depth % 2), 2)  # depth/2 one-bits
    for name, index in (("deposit_gas", mean_index), ("deposit_gas_max", 2**depth - 1)):
        deep = new_pool()
        token.approve(deep, 2**256 - 1, sender=client)
        # A pool this deep holds the tokens of its earlier deposits: its balance slot is non-zero.
        token.transfer(deep, d["denomination"], sender=client)
        _set_word(provider, deep.address, _SLOT_SIZE, index)
        _set_word(provider, deep.address, _SLOT_ROOT, 1)
        for level in range(depth + 1):
            _set_word(provider, deep.address, _map_slot(_SLOT_SIDE_NODES, level), 7 + level)
        if deep.size() != index:
            raise ChainDataError("preloading the tree size failed")
        receipt = deep.deposit(Note(nullifier=3000 + index, secret=7).commitment, d["denomination"], sender=client)
        gas[name] = int(receipt.gas_used)
    return gas


def main(argv: list[str] | None = None) -> int:
    """``python -m zk.onchain_gas --depth D [--keys DIR]``: print the gas figures as JSON (last line)."""
    parser = argparse.ArgumentParser(prog="python -m zk.onchain_gas", description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20, help="circuit depth (default 20)")
    parser.add_argument("--keys", type=Path, help="key folder (zk.keys); default: a fresh development setup")
    args = parser.parse_args(argv)
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    if args.keys:
        from zk.keys import load_keys

        pk, vk = load_keys(args.keys)
    else:
        from zk.groth16 import setup_dev
        from zk.voucher import voucher_circuit

        pk, vk = setup_dev(voucher_circuit(args.depth))
    gas = measure_gas(pk, vk, args.depth)
    print(json.dumps({"depth": args.depth, **gas}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
