"""Deploy Warren's settlement layer and wire the contracts to each other.

One function does it, for `ape run deploy`, the demo and the benchmarks alike: deploy the token
(local networks only, or reuse an existing one), the node registry, payment channels, reputation and
the revocation registry and rewards, then authorise reputation as a slasher and the revocation
registry as the revoker on node_registry, make rewards a minter of the token and limit node updates to
one per reputation epoch; finally one voucher pool per denomination, sharing the Groth16 verifier
(contracts/groth16_verifier.vy, the checked-in development key) and the Poseidon bytecode contract.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

from agents.chain.deployment import Deployment

__all__ = ["DeployParameters", "check_verifier", "deploy_all", "voucher_pool_name"]

TOKEN = 10**18  # token wei per token (18 decimals, as ERC-20 tokens usually have)
#: The tree depth of the key contracts/groth16_verifier.vy was generated from (zk/vk/voucher-depth20.json).
CHECKED_IN_DEPTH = 20


@dataclass
class DeployParameters:
    """Constructor parameters; defaults suit a local network and short demos.

    Attributes:
        min_node_stake: smallest node stake, token wei.
        min_challenger_stake: smallest challenger stake, token wei.
        unbonding_delay: seconds between an unbonding request and withdrawal.
        fee_bps: protocol fee on settlements, basis points (0 to 1,000).
        challenge_period: seconds a node may still settle after a client starts a unilateral close.
        epoch_length: seconds per reputation epoch.
        report_quorum: distinct failure reports in one epoch that slash a node.
        slash_bps: fraction of the remaining stake a failure quorum slashes, basis points.
        reports_per_node: challengers drawn to report on each node per epoch, in expectation
            (reputation's challenger assignment; at least report_quorum). 12 leaves a node fewer
            than 3 reports (rewards' minimum, the quorum) in about 0.05 % of epochs (Poisson:
            e**-12 x (1 + 12 + 72)); docs/ECONOMICS.md, "Challenger assignment".
        guardians: addresses of the revocation guardians.
        revocation_quorum: guardian signatures a revocation needs.
        treasury: receives protocol fees and revoked stake (the deployer if empty).
        token: an existing Warren token to use instead of deploying one.
        voucher_denominations: one voucher pool per amount, token wei (none: no pools).
        voucher_depth: the voucher circuit's tree depth the pools are made for.
        emission_per_epoch: rewards minted per epoch before the first halving, token wei.
        halving_epochs: epochs between halvings of the emission.
        demand_share_bps: largest share of an epoch's emission paid by regional demand, basis points.
        fee_rebate_bps: cap of that demand pool as a share of the epoch's protocol fees, basis
            points (below 10,000: docs/ECONOMICS.md, wash traffic).
        min_reports: challenger reports a node needs in an epoch to earn rewards for it.
        limit_updates: allow one region/price update per node and epoch (node_registry).
        voucher_vk: the circuit's verification key (snarkjs ``verification_key.json``) to generate
            the pools' verifier from; empty: the checked-in contracts/groth16_verifier.vy, whose
            key is the depth-20 development key, so ``voucher_depth`` must then be 20.
        allow_dev_verifier: deploy pools with that development key on a network that is not local
            (refused otherwise: its setup is public, so anyone can forge proofs against it).
    """

    min_node_stake: int = 100 * TOKEN
    # Outweighs what a self-dealing challenger identity can lift (docs/ECONOMICS.md: the carrying cost
    # of 230 tokens covers its whole gain; at 10 tokens self-dealing broke even in sim_economy).
    min_challenger_stake: int = 500 * TOKEN
    unbonding_delay: int = 7 * 24 * 3600
    fee_bps: int = 100
    challenge_period: int = 24 * 3600
    epoch_length: int = 24 * 3600
    report_quorum: int = 3
    slash_bps: int = 1_000
    reports_per_node: int = 12
    guardians: list[str] = field(default_factory=list)
    revocation_quorum: int = 2
    treasury: str = ""
    token: str = ""
    emission_per_epoch: int = 1_000 * TOKEN
    halving_epochs: int = 365
    demand_share_bps: int = 5_000
    fee_rebate_bps: int = 8_000
    min_reports: int = 3
    limit_updates: bool = True
    voucher_denominations: list[int] = field(default_factory=lambda: [10 * TOKEN])
    voucher_depth: int = 20
    voucher_vk: str = ""
    allow_dev_verifier: bool = False


def check_verifier(params: DeployParameters, local: bool) -> None:
    """Refuse voucher pools on the development verifier outside a local network (unless allowed).

    Raises:
        ValueError: the pools would use the checked-in key on a network that is not local.
    """
    if params.voucher_denominations and not params.voucher_vk and not local and not params.allow_dev_verifier:
        raise ValueError(
            "deploy: the checked-in voucher verifier uses the development key, whose setup is public: anyone "
            "can forge voucher proofs against it. On a network that is not local give --voucher-vk with your "
            "circuit's verification_key.json (from a ceremony), or --voucher-denomination 0 for no pools; "
            "--i-know-the-dev-key-is-public deploys it anyway (a rehearsal)")


def voucher_pool_name(denomination: int) -> str:
    """The deployment-file name of the pool for ``denomination`` token wei."""
    return f"voucher_pool_{denomination}"


def deploy_all(
    project, deployer, chain, params: DeployParameters, log: Callable[[str], None] = print,
    local: bool | None = None,
) -> Deployment:
    """Deploy and wire every settlement contract.

    Args:
        project: the ape project (``ape.project``) holding the compiled contracts.
        deployer: the ape account that deploys and becomes owner of every contract.
        chain: the ape chain manager (``ape.chain``) of the connected network.
        params: constructor parameters.
        log: receives one progress line per step.
        local: whether the network is a local one (None: ask ape's connected provider).

    Returns:
        The addresses, parameters and first block of the deployment.

    Raises:
        ValueError: when the parameters cannot produce a working deployment.
    """
    if not params.guardians:
        raise ValueError("deploy: at least one guardian address is needed")
    if not 1 <= params.revocation_quorum <= len(params.guardians):
        raise ValueError(
            f"deploy: revocation quorum {params.revocation_quorum} is not between 1 and "
            f"the {len(params.guardians)} guardians"
        )
    if params.voucher_denominations and not params.voucher_vk and params.voucher_depth != CHECKED_IN_DEPTH:
        raise ValueError(
            f"deploy: the checked-in verifier is for depth {CHECKED_IN_DEPTH}; a depth-"
            f"{params.voucher_depth} pool needs that circuit's verification key (voucher_vk)"
        )
    if local is None:
        from ape import networks

        local = bool(networks.provider.network.is_local)
    check_verifier(params, local)
    treasury = params.treasury or deployer.address
    first_block = chain.blocks.height + 1  # event scans start at the first deployment transaction
    addresses: dict[str, str] = {}

    def step(name: str, contract) -> object:
        addresses[name] = contract.address
        log(f"  {name:34s} {contract.address}")
        return contract

    if params.token:
        token = step("warren_token", project.warren_token.at(params.token))
    else:
        token = step("warren_token", deployer.deploy(project.warren_token))
    registry = step(
        "node_registry",
        deployer.deploy(
            project.node_registry,
            token,
            params.min_node_stake,
            params.min_challenger_stake,
            params.unbonding_delay,
        ),
    )
    channels = step(
        "payment_channels",
        deployer.deploy(
            project.payment_channels, token, registry, params.fee_bps, treasury, params.challenge_period
        ),
    )
    reputation = step(
        "reputation",
        deployer.deploy(
            project.reputation, registry, params.epoch_length, params.report_quorum, params.slash_bps,
            params.reports_per_node,
        ),
    )
    revocations = step(
        "revocation_registry",
        deployer.deploy(
            project.revocation_registry, registry, treasury, params.guardians, params.revocation_quorum
        ),
    )
    rewards = step(
        "rewards",
        deployer.deploy(
            project.rewards, token, channels, reputation, params.emission_per_epoch, params.halving_epochs,
            params.demand_share_bps, params.fee_rebate_bps, params.min_reports,
        ),
    )
    registry.set_slasher(reputation, True, sender=deployer)
    registry.set_revoker(revocations, sender=deployer)
    if params.limit_updates:
        registry.set_update_epoch_length(params.epoch_length, sender=deployer)
    if str(token.owner()) == deployer.address:
        token.set_minter(rewards, True, sender=deployer)
        log("  wired: reputation may slash, revocation_registry may revoke, rewards may mint")
    else:
        log(f"  wired: reputation may slash, revocation_registry may revoke; the token's owner "
            f"{token.owner()} must still call set_minter({rewards.address}, true) for rewards")
    _deploy_voucher_pools(project, deployer, addresses["payment_channels"], params, step)
    recorded = asdict(params) | {"treasury": treasury}
    return Deployment(chain_id=chain.chain_id, addresses=addresses, parameters=recorded, block=first_block)


def _deploy_voucher_pools(project, deployer, channels: str, params: DeployParameters, step) -> None:
    """One pool per denomination; the first pool's verifier and Poseidon serve the others."""
    from zk.onchain import deploy_voucher_pool  # the zk stack loads only when pools are wanted

    verifier = poseidon = None
    for denomination in params.voucher_denominations:
        deployed = deploy_voucher_pool(
            project, deployer, channels, denomination, params.voucher_depth,
            vk=params.voucher_vk or None, verifier=verifier, poseidon=poseidon,
        )
        if verifier is None:
            verifier = step("groth16_verifier", deployed.verifier)
            poseidon = step("poseidon_t3", deployed.poseidon)
        step(voucher_pool_name(denomination), deployed.pool)
