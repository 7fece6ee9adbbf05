"""Gas of the voucher pool on a local anvil chain: Poseidon, deposit, redeem, voucher channels, verification.

For scripts/bench_zk.py (``deposit_gas``, ``redeem_gas``, ``poseidon_gas`` and the details) and
runnable alone::

    python -m zk.onchain_gas --depth 20 [--keys keys/voucher-depth20]

The settlement layer is deployed as ``ape run deploy`` deploys it (``agents.chain.deploy.deploy_all``,
without pools), then one voucher pool (``zk.onchain.deploy_voucher_pool``) with the verifier generated
from the measured key. Everything is measured from transaction receipts (``gas_used``) on the real
contracts with real proofs from zk.groth16 for the circuit of ``depth``, except:

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

Redemptions are submitted by the node's operator, the usual relayer, with a non-zero fee, each to a
fresh signer (one voucher, one channel):

- ``redeem_gas_first_relay``: the relayer's very first redemption: its fee-ledger slot is created
  (0 -> non-zero, 22,100 gas with the cold read);
- ``redeem_gas``: a later one (the steady state of a node that relays many vouchers): the ledger slot
  is updated (non-zero -> non-zero, 5,000);
- ``redeem_gas_after_withdrawal``: one after ``withdraw_relayer_fees``, which leaves a 1-wei sentinel
  so this costs what ``redeem_gas`` costs;
- ``voucher_settle_gas_first`` / ``voucher_settle_gas``: the node settles a receipt on a voucher
  channel, the first time (the channel's progress word is created) and again (it is updated);
- ``withdraw_relayer_fees_gas``: the relayer takes its fees.

``redeem_breakdown`` (:func:`gas_breakdown`) splits ``redeem_gas`` by where it goes, from anvil's
opcode trace of that transaction.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ape
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak

from agents.chain import eip712
from agents.chain.deploy import TOKEN, DeployParameters, deploy_all
from zk.export import proof_calldata
from zk.field import R
from zk.groth16 import prove
from zk.merkle import LeanIMT
from zk.onchain import calldata_gas, deploy_poseidon_bytecode, deploy_verifier, deploy_voucher_pool
from zk.voucher import Note, ext_data_hash, voucher_circuit, voucher_inputs

__all__ = [
    "ChainDataError",
    "DENOMINATION",
    "RELAYER_FEE",
    "TX_BASE_GAS",
    "SettlementWithNode",
    "gas_breakdown",
    "measure_gas",
    "settlement_with_node",
]

ROOT = Path(__file__).resolve().parent.parent
#: The pool measured: the denomination ``ape run deploy`` deploys by default (10 tokens).
DENOMINATION = DeployParameters().voucher_denominations[0]
#: Relayer fee of every measured redemption: 1 % of the denomination, what a node might charge for
#: submitting. Any non-zero fee costs the same gas (it makes the pool credit the relayer's ledger);
#: a zero fee skips that write and would understate what a relayed redemption costs.
RELAYER_FEE = TOKEN // 10
#: Base gas of a transaction (Yellow Paper G_transaction).
TX_BASE_GAS = 21_000


class ChainDataError(RuntimeError):
    """The chain disagrees with the Python reference (a root, a digest, the storage layout).

    A remote fault: the contracts or the chain are not what this module measures.
    """


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


#: Opcode groups of :func:`gas_breakdown`.
_GROUPS = {
    "SSTORE": "sstore", "SLOAD": "sload", "KECCAK256": "keccak", "SHA3": "keccak",
    "CALL": "calls", "STATICCALL": "calls", "DELEGATECALL": "calls", "CALLCODE": "calls",
    **{f"LOG{i}": "log" for i in range(5)},
}


def gas_breakdown(provider, receipt) -> dict[str, int]:
    """Split a transaction's gas by where it goes, from anvil's opcode trace (``debug_traceTransaction``).

    Each top-level step costs the drop in remaining gas to the next top-level step, so a call's
    entry includes everything its callee spent.

    Returns:
        ``tx_base``, ``calldata``, then execution gas grouped: ``calls`` (sub-calls, callee included),
        ``sstore``, ``sload``, ``log``, ``keccak``, ``other`` (ABI decoding, memory, arithmetic,
        jumps); they add up to ``total`` = the receipt's gas used (refund-free transactions).

    Raises:
        ChainDataError: the trace does not add up to the receipt.
    """
    trace = provider.make_request(
        "debug_traceTransaction",
        [receipt.txn_hash, {"disableStorage": True, "disableMemory": True, "disableStack": True}],
    )
    top = [log for log in trace["structLogs"] if log["depth"] == 1]
    out = {"tx_base": TX_BASE_GAS, "calldata": calldata_gas(bytes(receipt.transaction.data))}
    for group in ("calls", "sstore", "sload", "log", "keccak", "other"):
        out[group] = 0
    for step, after in zip(top, top[1:] + [None]):
        cost = step["gas"] - after["gas"] if after is not None else step["gasCost"]
        out[_GROUPS.get(step["op"], "other")] += cost
    out["total"] = sum(out.values())
    if out["total"] != int(receipt.gas_used):
        raise ChainDataError(f"trace adds up to {out['total']}, receipt says {receipt.gas_used}")
    return out


def measure_gas(
    pk: Any, vk: Any, depth: int, network: str = "ethereum:local:foundry",
    prover: Callable[[list[int]], Any] | None = None,
) -> dict[str, Any]:
    """Deploy everything on a fresh chain and measure the voucher pool's gas.

    Args:
        pk: zk.groth16.ProvingKey of the voucher circuit of ``depth`` (to make the redeem proofs).
        vk: its verification key, in any form ``zk.vyper_verifier.verifier_key`` reads (a
            zk.groth16.VerifyingKey, a snarkjs JSON dict, a zk.vyper_verifier.VerifyingKey).
        depth: the circuit's maximum tree depth (the pool is deployed with it).
        network: ape network choice, used when no provider is connected yet.
        prover: witness -> zk.groth16.Proof (e.g. a ``zk.groth16.Prover``'s ``prove``); default a
            one-off ``zk.groth16.prove`` per proof.

    Returns:
        Gas figures (ints): ``poseidon_gas``, ``poseidon_gas_vyper``, ``verify_gas``, ``deposit_gas``,
        ``deposit_gas_max``, ``deposit_gas_first``, ``redeem_gas``, ``redeem_gas_first_relay``,
        ``redeem_gas_after_withdrawal``, ``voucher_settle_gas_first``, ``voucher_settle_gas``,
        ``withdraw_relayer_fees_gas``, and ``redeem_breakdown`` (a dict, :func:`gas_breakdown`).
    """
    os.chdir(ROOT)  # ape reads the project from the working directory
    connected = ape.networks.active_provider is not None and ape.networks.active_provider.is_connected
    with nullcontext() if connected else ape.networks.parse_network_choice(network):
        return _measure(pk, vk, depth, prover)


@dataclass(frozen=True)
class SettlementWithNode:
    """A settlement layer deployed for measuring, with one registered node."""

    token: Any
    channels: Any
    node_id: bytes


def settlement_with_node(label: bytes, treasury: Any = None) -> SettlementWithNode:
    """Deploy the settlement layer with ``deploy_all`` (no voucher pools) from test account 0, give
    accounts 1 (the node's operator) and 2 (the client) a million tokens each, and register the
    operator's node, whose WireGuard key is keccak256(``label``). Test account 4 is the guardian.
    """
    project, chain, acct = ape.project, ape.chain, ape.accounts.test_accounts
    owner, operator, client, guardian = acct[0], acct[1], acct[2], acct[4]
    params = DeployParameters(guardians=[guardian.address], revocation_quorum=1,
                              treasury=treasury.address if treasury else "", voucher_denominations=[])
    deployment = deploy_all(project, owner, chain, params, log=lambda _: None)
    token = project.warren_token.at(deployment.address("warren_token"))
    registry = project.node_registry.at(deployment.address("node_registry"))
    for account in (operator, client):
        token.mint(account, 10**6 * TOKEN, sender=owner)
    token.approve(registry, params.min_node_stake, sender=operator)
    wg_key = keccak(label)
    registry.register_node(wg_key, "DE", 10**15, params.min_node_stake, sender=operator)
    channels = project.payment_channels.at(deployment.address("payment_channels"))
    return SettlementWithNode(token, channels, keccak(wg_key))


def _measure(pk: Any, vk: Any, depth: int, prover: Callable[[list[int]], Any] | None) -> dict[str, Any]:
    project, chain = ape.project, ape.chain
    provider = chain.provider
    acct = ape.accounts.test_accounts
    owner, operator, client, treasury = acct[0], acct[1], acct[2], acct[3]
    gas: dict[str, Any] = {}

    settlement = settlement_with_node(b"onchain_gas node", treasury)
    token, channels, node_id = settlement.token, settlement.channels, settlement.node_id

    poseidon = deploy_poseidon_bytecode(owner)
    poseidon_vyper = owner.deploy(project.poseidon_t3)
    a, b = 0x1234 * 2**200 % R, 0x5678 * 2**180 % R  # typical full-width field elements
    gas["poseidon_gas"] = _call_gas(poseidon.hash, a, b, sender=owner)
    gas["poseidon_gas_vyper"] = _call_gas(poseidon_vyper.hash, a, b, sender=owner)

    verifier = deploy_verifier(vk, owner)

    def new_pool():
        return deploy_voucher_pool(project, owner, channels, DENOMINATION, depth,
                                   verifier=verifier, poseidon=poseidon).pool

    pool = new_pool()
    token.approve(pool, 2**256 - 1, sender=client)
    notes = [Note(nullifier=1000 + i, secret=2000 + i) for i in range(4)]
    tree = LeanIMT()
    for i, note in enumerate(notes):
        receipt = pool.deposit(note.commitment, DENOMINATION, sender=client)
        tree.insert(note.commitment)
        if i == 0:
            gas["deposit_gas_first"] = int(receipt.gas_used)
    if pool.root() != tree.root:
        raise ChainDataError("pool root differs from zk.merkle's")
    # The layout assumption behind the preloading below, checked on the real tree of 4 leaves.
    if _read_word(provider, pool.address, _map_slot(_SLOT_SIDE_NODES, 2)) != tree.root:
        raise ChainDataError("voucher_pool storage layout changed: update _SLOT_* in zk/onchain_gas.py")

    # Redeem with real proofs, the node's operator relaying, each voucher to a fresh signer.
    circuit = voucher_circuit(depth)
    make_proof = prover or (lambda witness: prove(pk, circuit, witness))
    signer_keys = [keccak(b"onchain_gas signer %d" % i) for i in range(len(notes))]
    deposit = DENOMINATION - RELAYER_FEE
    redeemed: dict[str, tuple[bytes, str]] = {}  # figure -> (channel_id, signer key)

    def redeem(i: int, name: str, measure_verify: bool = False):
        signer = Account.from_key(signer_keys[i]).address
        ext = ext_data_hash(node_id, signer, RELAYER_FEE)
        witness = circuit.witness(voucher_inputs(notes[i], tree.proof(i), ext, depth))
        public = circuit.public_values(witness)
        data = proof_calldata(make_proof(witness))
        if measure_verify:
            gas["verify_gas"] = _call_gas(verifier.verify_proof, data, public, sender=owner)
        receipt = pool.redeem(data, tree.root, notes[i].nullifier_hash, node_id, signer, RELAYER_FEE,
                              sender=operator)
        channel_id = bytes(pool.channel_id_of(notes[i].nullifier_hash))
        if bytes(pool.channel(channel_id)[0]) != keccak(abi_encode(["bytes32", "address", "uint256"],
                                                                     [node_id, signer, deposit])):
            raise ChainDataError("redeemed channel's terms hash is not keccak256(node, signer, deposit)")
        gas[name] = int(receipt.gas_used)
        redeemed[name] = (channel_id, signer_keys[i])
        return receipt

    redeem(0, "redeem_gas_first_relay", measure_verify=True)
    steady = redeem(1, "redeem_gas")
    gas["redeem_breakdown"] = gas_breakdown(provider, steady)
    if pool.relayer_balance(operator) != 2 * RELAYER_FEE:
        raise ChainDataError("relayer ledger does not hold the two fees")
    gas["withdraw_relayer_fees_gas"] = int(pool.withdraw_relayer_fees(sender=operator).gas_used)
    redeem(2, "redeem_gas_after_withdrawal")

    # The node settles receipts on a voucher channel, signed by its signer for the pool's domain.
    channel_id, signer_key = redeemed["redeem_gas"]
    signer = Account.from_key(signer_key).address
    for name, gib in (("voucher_settle_gas_first", 1), ("voucher_settle_gas", 2)):
        receipt_msg = eip712.Receipt(channel_id, gib * 2**30, gib * TOKEN)  # 1 token per GiB
        if bytes(pool.receipt_digest(channel_id, gib * 2**30, gib * TOKEN)) != eip712.digest(
            receipt_msg, chain.chain_id, pool.address
        ):
            raise ChainDataError("pool.receipt_digest differs from agents.chain.eip712.digest")
        signature = eip712.sign(receipt_msg, signer_key, chain.chain_id, pool.address)
        receipt = pool.settle(channel_id, node_id, signer, deposit, receipt_msg.cumulative_bytes,
                              receipt_msg.cumulative_amount, signature, sender=operator)
        gas[name] = int(receipt.gas_used)

    # Deposits deep in a depth-`depth` tree, on preloaded storage (see the module docstring).
    mean_index = int("10" * (depth // 2) + "1" * (depth % 2), 2)  # depth/2 one-bits
    for name, index in (("deposit_gas", mean_index), ("deposit_gas_max", 2**depth - 1)):
        deep = new_pool()
        token.approve(deep, 2**256 - 1, sender=client)
        # A pool this deep holds the tokens of its earlier deposits: its balance slot is non-zero.
        token.transfer(deep, DENOMINATION, sender=client)
        _set_word(provider, deep.address, _SLOT_SIZE, index)
        _set_word(provider, deep.address, _SLOT_ROOT, 1)
        for level in range(depth + 1):
            _set_word(provider, deep.address, _map_slot(_SLOT_SIDE_NODES, level), 7 + level)
        if deep.size() != index:
            raise ChainDataError("preloading the tree size failed")
        receipt = deep.deposit(Note(nullifier=3000 + index, secret=7).commitment, DENOMINATION, sender=client)
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

        pk, vk = setup_dev(voucher_circuit(args.depth))
    gas = measure_gas(pk, vk, args.depth)
    print(json.dumps({"depth": args.depth, **gas}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
