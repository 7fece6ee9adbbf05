"""Deploy Warren's settlement contracts and write their addresses for the agents.

    ape run deploy                                    # local anvil (test accounts as guardians)
    ape run deploy --network ethereum:sepolia:node --account ACCOUNT --guardian 0x.. --guardian 0x..

On a live network give an RPC URL in ape-config.yaml (node: ethereum: sepolia: uri: ...) and an ape
account (`ape accounts import NAME`). The addresses go to deployments/<ecosystem>-<network>.json
unless --out says otherwise.
"""

from pathlib import Path

import click
from ape import accounts, chain, networks, project
from ape.cli import ConnectedProviderCommand

from agents.chain.deploy import TOKEN, DeployParameters, deploy_all
from agents.chain.deployment import default_path


@click.command(cls=ConnectedProviderCommand)
@click.option("--account", "account_alias", default=None, help="ape account alias (default on local networks: test account 0)")
@click.option("--guardian", "guardians", multiple=True, help="revocation guardian address (repeat)")
@click.option("--revocation-quorum", type=int, default=None, help="guardian signatures per revocation")
@click.option("--fee-bps", type=int, default=100, show_default=True, help="protocol fee, basis points")
@click.option("--treasury", default="", help="fee and revoked-stake recipient (default: deployer)")
@click.option("--token", default="", help="use this existing Warren token instead of deploying one")
@click.option("--min-node-stake", type=int, default=100, show_default=True, help="whole tokens")
@click.option("--challenge-period", type=int, default=24 * 3600, show_default=True, help="seconds")
@click.option("--voucher-denomination", "denominations", type=int, multiple=True, default=(10,),
              show_default=True, help="a voucher pool for this many whole tokens (repeat; 0: no pools)")
@click.option("--voucher-depth", type=int, default=20, show_default=True, help="voucher circuit tree depth")
@click.option("--voucher-vk", type=str, default=None,
              help="the circuit's verification_key.json (default, local networks only: the checked-in depth-20 "
                   "development verifier)")
@click.option("--i-know-the-dev-key-is-public", "allow_dev_verifier", is_flag=True,
              help="deploy voucher pools with the development verifier on a network that is not local")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="deployment file to write")
def cli(network, account_alias, guardians, revocation_quorum, fee_bps, treasury, token, min_node_stake,
        challenge_period, denominations, voucher_depth, voucher_vk, allow_dev_verifier, out):
    """Deploy token, node_registry, payment_channels, reputation, revocation_registry, voucher pools."""
    local = networks.provider.network.is_local
    if account_alias:
        account = accounts.load(account_alias)
        # Once, now: from APE_ACCOUNTS_<alias>_PASSPHRASE when set (non-interactive), else a prompt. Each
        # transaction still asks "Sign:" (answer y, or pipe `yes y` after reading what will be sent).
        account.unlock()
    elif local:
        account = accounts.test_accounts[0]
    else:
        raise click.UsageError("give the deploying account with --account on a live network")
    if not guardians:
        if not local:
            raise click.UsageError("give the guardian set with --guardian on a live network")
        guardians = tuple(a.address for a in accounts.test_accounts[7:10])
    if voucher_vk is not None:  # given, even as "": it must name a file (never a silent fallback)
        if not voucher_vk.strip():
            raise click.UsageError("--voucher-vk is empty: give the circuit's verification_key.json, or leave the "
                                   "option out to use the development verifier (local networks only)")
        if not Path(voucher_vk).is_file():
            raise click.UsageError(f"--voucher-vk: no file {voucher_vk}")
    quorum = revocation_quorum or (len(guardians) // 2 + 1)
    params = DeployParameters(
        guardians=list(guardians),
        revocation_quorum=quorum,
        fee_bps=fee_bps,
        treasury=treasury,
        token=token,
        min_node_stake=min_node_stake * TOKEN,
        challenge_period=challenge_period,
        voucher_denominations=[d * TOKEN for d in denominations if d > 0],
        voucher_depth=voucher_depth,
        voucher_vk=voucher_vk or "",
        allow_dev_verifier=allow_dev_verifier,
    )
    click.echo(f"deploying Warren on {networks.provider.network_choice} (chain id {chain.chain_id}) from {account.address}")
    try:
        deployment = deploy_all(project, account, chain, params, log=click.echo, local=local)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    path = out or default_path(networks.provider.network_choice, Path.cwd())
    deployment.save(path)
    click.echo(f"addresses written to {path}")
