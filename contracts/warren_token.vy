# pragma version ~=0.4.3
"""
@title Warren token
@license AGPL-3.0-or-later
@author Warren contributors
@notice The ERC-20 Warren uses for node and challenger stake and for
        paying bandwidth, with EIP-2612 `permit` so a client can fund a
        payment channel in one transaction. Built entirely from snekmate's
        audited `erc20` module; this file only fixes the metadata.
@custom:security The deployer holds the owner and minter roles: `mint`
        is meant for local and test networks. On a production network
        the owner would hand minting to a distribution contract and
        renounce its roles (`renounce_ownership` also drops the minter
        role in snekmate's implementation).
"""

# @dev snekmate's `erc20` `uses` the `ownable` module, so this contract
# must initialise `ownable` (the deployer becomes owner) before `erc20`.
from snekmate.auth import ownable
initializes: ownable

# @dev The token itself: ERC-20, EIP-2612 permit, EIP-5267 domain,
# minter role. `initializes` because its storage (balances, allowances,
# nonces) lives in this contract.
from snekmate.tokens import erc20
initializes: erc20[ownable := ownable]

# @dev Export the module's whole external interface unchanged: transfer,
# approve, transferFrom, mint, set_minter, burn, burn_from, permit,
# nonces, DOMAIN_SEPARATOR, eip712Domain, owner, transfer_ownership,
# renounce_ownership and the public getters.
exports: erc20.__interface__

# @dev The interface other contracts compile against; checked here so it cannot drift.
from interfaces import warren_token as IWarrenToken
implements: IWarrenToken


# CONSTANTS

# @dev Token metadata (ERC-20 `name`, `symbol`, `decimals`).
_NAME: constant(String[25]) = "Warren"
_SYMBOL: constant(String[5]) = "WRN"
_DECIMALS: constant(uint8) = 18

# @dev EIP-712 domain of the token's own `permit` signatures. It differs
# from the "Warren"/"1" domain of receipts by name as well as by the
# verifying contract, so a permit can never be mistaken for a receipt.
_EIP712_NAME: constant(String[50]) = "Warren Token"
_EIP712_VERSION: constant(String[20]) = "1"


@deploy
def __init__():
    """
    @notice Deploy the token; the deployer becomes owner and minter and
            starts with a zero supply.
    """
    ownable.__init__()
    erc20.__init__(_NAME, _SYMBOL, _DECIMALS, _EIP712_NAME, _EIP712_VERSION)
