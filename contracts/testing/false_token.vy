# pragma version ~=0.4.3
"""
@title Token whose transfers can return false (test only)
@license AGPL-3.0-or-later
@author Warren contributors
@notice A minimal ERC-20 for tests: once `set_failing(True)` is called,
        `transfer` and `transferFrom` move nothing and return False
        instead of reverting, as some real tokens do. Warren's contracts
        must then revert with "<contract>: transfer failed". Never deploy
        this outside tests.
"""

# @dev Anyone may mint: this token exists only on a test chain.
balanceOf: public(HashMap[address, uint256])
# @dev owner -> spender -> allowance.
allowance: public(HashMap[address, HashMap[address, uint256]])
# @dev When true, transfers return False and move nothing.
failing: public(bool)


@external
def mint(owner: address, amount: uint256):
    """
    @notice Mint test tokens.
    @param owner Receiver.
    @param amount Amount in token wei.
    """
    self.balanceOf[owner] += amount


@external
def set_failing(failing: bool):
    """
    @notice Make transfers return False (True) or work normally (False).
    @param failing The new mode.
    """
    self.failing = failing


@external
def approve(spender: address, amount: uint256) -> bool:
    """
    @notice Standard ERC-20 approve.
    @param spender Spender.
    @param amount Allowance in token wei.
    @return success Always true.
    """
    self.allowance[msg.sender][spender] = amount
    return True


@external
def transfer(to: address, amount: uint256) -> bool:
    """
    @notice ERC-20 transfer, or False without effect when failing.
    @param to Receiver.
    @param amount Amount in token wei.
    @return success False when failing.
    """
    if self.failing:
        return False
    self.balanceOf[msg.sender] -= amount
    self.balanceOf[to] += amount
    return True


@external
def transferFrom(owner: address, to: address, amount: uint256) -> bool:
    """
    @notice ERC-20 transferFrom, or False without effect when failing.
    @param owner Payer.
    @param to Receiver.
    @param amount Amount in token wei.
    @return success False when failing.
    """
    if self.failing:
        return False
    self.allowance[owner][msg.sender] -= amount
    self.balanceOf[owner] -= amount
    self.balanceOf[to] += amount
    return True
