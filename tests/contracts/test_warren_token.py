"""warren_token: snekmate's ERC-20 + EIP-2612 permit with Warren's metadata and minter role."""

import ape


def test_metadata(token, owner):
    assert (token.name(), token.symbol(), token.decimals()) == ("Warren", "WRN", 18)
    assert token.owner() == owner
    assert token.is_minter(owner)


def test_mint__by_minter__credits_and_logs(token, owner, stranger):
    supply, before = token.totalSupply(), token.balanceOf(stranger)
    tx = token.mint(stranger, 5, sender=owner)
    assert token.balanceOf(stranger) == before + 5
    assert token.totalSupply() == supply + 5
    [log] = tx.decode_logs(token.Transfer)
    assert (log.sender, log.receiver, log.value) == (ape.utils.ZERO_ADDRESS, stranger, 5)


def test_mint__not_a_minter__reverts(token, stranger):
    with ape.reverts("erc20: access is denied"):
        token.mint(stranger, 5, sender=stranger)


def test_transfer__moves_balance(token, client, stranger):
    before = token.balanceOf(stranger)
    token.transfer(stranger, 3, sender=client)
    assert token.balanceOf(stranger) == before + 3


def test_transfer__above_balance__reverts(token, client, stranger):
    with ape.reverts("erc20: transfer amount exceeds balance"):
        token.transfer(stranger, token.balanceOf(client) + 1, sender=client)


def test_permit__sets_allowance_and_bumps_nonce(token, chain, client, stranger, sign_permit):
    deadline = chain.pending_timestamp + 60
    nonce = token.nonces(client)
    token.permit(client, stranger, 77, deadline, *sign_permit(client, stranger, 77, deadline), sender=stranger)
    assert token.allowance(client, stranger) == 77
    assert token.nonces(client) == nonce + 1


def test_permit__expired__reverts(token, chain, client, stranger, sign_permit):
    deadline = chain.pending_timestamp - 1
    with ape.reverts("erc20: expired deadline"):
        token.permit(client, stranger, 1, deadline, *sign_permit(client, stranger, 1, deadline), sender=stranger)


def test_permit__replayed__reverts(token, chain, client, stranger, sign_permit):
    deadline = chain.pending_timestamp + 60
    signature = sign_permit(client, stranger, 1, deadline)
    token.permit(client, stranger, 1, deadline, *signature, sender=stranger)
    with ape.reverts("erc20: invalid signature"):
        token.permit(client, stranger, 1, deadline, *signature, sender=stranger)
