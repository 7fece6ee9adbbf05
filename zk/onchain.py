"""Deploy the zk contracts that are generated per key (verifier) or as raw bytecode (Poseidon) with ape.

contracts/ holds the verifier for the checked-in verification key; a pool for another circuit depth
(the benchmark's depth 20, a test's small depth) needs a verifier generated from that depth's key,
compiled here with the vyper package and deployed through ape like any project contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import vyper
from ape.contracts import ContractContainer, ContractInstance
from ethpm_types import ContractType

from zk.evm_poseidon import build_poseidon_t3
from zk.export import proof_calldata as _proof_calldata
from zk.export import proof_from_json
from zk.groth16 import Proof
from zk.vyper_verifier import render_verifier

__all__ = [
    "VoucherDeployment",
    "calldata_gas",
    "compile_vyper",
    "deploy_poseidon_bytecode",
    "deploy_verifier",
    "deploy_voucher_pool",
    "proof_calldata",
]

#: Gas per zero / non-zero call-data byte (EIP-2028).
_ZERO_BYTE_GAS, _NONZERO_BYTE_GAS = 4, 16


def _container(name: str, abi: list, initcode_hex: str) -> ContractContainer:
    return ContractContainer(
        ContractType.model_validate(
            {"contractName": name, "abi": abi, "deploymentBytecode": {"bytecode": initcode_hex}}
        )
    )


def compile_vyper(source: str, name: str) -> ContractContainer:
    """Compile a self-contained Vyper source (no project imports) into an ape contract container."""
    out = vyper.compile_code(source, output_formats=["abi", "bytecode"])
    return _container(name, out["abi"], out["bytecode"])


def deploy_verifier(vk: Any, sender: Any) -> ContractInstance:
    """Generate, compile and deploy the Groth16 verifier for ``vk``.

    Args:
        vk: the verification key: a zk.groth16.VerifyingKey (as the prover and zk.keys hold it), a
            snarkjs JSON dict, or a zk.vyper_verifier.VerifyingKey (``zk.vyper_verifier.verifier_key``).
        sender: the deploying account.

    Returns:
        The deployed verifier.
    """
    source = render_verifier(vk, implements=False)
    return compile_vyper(source, "groth16_verifier").deploy(sender=sender)


def deploy_poseidon_bytecode(sender: Any) -> ContractInstance:
    """Deploy the generated Poseidon(2) bytecode contract (zk/evm_poseidon.py)."""
    code = build_poseidon_t3()
    return _container("poseidon_t3_bytecode", code.abi, "0x" + code.initcode.hex()).deploy(sender=sender)


def proof_calldata(proof: Proof | dict[str, Sequence[Any]]) -> list[int]:
    """A proof (a zk.groth16.Proof or a snarkjs ``proof.json`` object) as the verifier's ``uint256[8]``.

    G2 coordinates are reordered imaginary part first (EIP-197), as snarkjs's Solidity call data
    does; the one implementation is ``zk.export.proof_calldata``.

    Raises:
        zk.export.ExportError: a malformed snarkjs proof.
    """
    return _proof_calldata(proof if isinstance(proof, Proof) else proof_from_json(proof))


def calldata_gas(data: bytes) -> int:
    """Intrinsic gas of transaction call data (EIP-2028)."""
    return sum(_NONZERO_BYTE_GAS if byte else _ZERO_BYTE_GAS for byte in data)


@dataclass(frozen=True)
class VoucherDeployment:
    """The three contracts of one voucher pool."""

    pool: ContractInstance
    verifier: ContractInstance
    poseidon: ContractInstance


def deploy_voucher_pool(
    project: Any,
    sender: Any,
    channels: Any,
    denomination: int,
    depth: int,
    vk: Any = None,
    verifier: Any = None,
    poseidon: Any = None,
) -> VoucherDeployment:
    """Deploy a voucher pool with its verifier and the bytecode Poseidon (for deploy scripts).

    Args:
        project: the ape project (``ape.project``).
        sender: the deploying account.
        channels: payment_channels (contract or address): the pool takes its token, registry and
            channel rules.
        denomination: amount of each deposit, in token wei.
        depth: the voucher circuit's maximum tree depth the keys were made for.
        vk: verification key of the circuit's keys (any form ``deploy_verifier`` takes); None
            deploys the checked-in contracts/groth16_verifier.vy (the depth-20 development key of
            zk/vk/).
        verifier: an already deployed verifier to reuse (several denominations, one circuit).
        poseidon: an already deployed Poseidon contract to reuse.

    Returns:
        The pool, its verifier and its Poseidon contract.
    """
    if verifier is None:
        verifier = deploy_verifier(vk, sender) if vk is not None else sender.deploy(project.groth16_verifier)
    if poseidon is None:
        poseidon = deploy_poseidon_bytecode(sender)
    pool = sender.deploy(project.voucher_pool, channels, verifier, poseidon, denomination, depth)
    return VoucherDeployment(pool=pool, verifier=verifier, poseidon=poseidon)
