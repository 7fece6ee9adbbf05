"""Errors a person can read: one family for "you asked for something we cannot do", plain words for
the rest.

Every `warren` command ends in :func:`agents.cli.main`, which prints a :class:`UserError`'s message
as it is (``warren: <message>``, exit 1) and asks :func:`explain` to put the common failures of ape,
web3 and the chain into the same plain words: not enough ETH for gas, too few tokens or no
allowance, a locked or missing account, an RPC that does not answer, a deployment file that is
missing, corrupt or for another chain. Anything else is a bug and keeps its traceback.

Two families, as everywhere in Warren: :class:`UserError` is our user's or our own misuse (a bad
flag, a missing file); :class:`RemoteError` (a UserError too, so it prints the same way) is the chain
or a peer not doing its part.
"""

from __future__ import annotations

__all__ = [
    "InsufficientEth",
    "InsufficientTokens",
    "RemoteError",
    "UserError",
    "explain",
    "format_eth",
    "format_tokens",
    "preflight",
    "preflight_tokens",
]

#: Wei per ether / token wei per token (both 18 decimals).
WEI = 10**18


class UserError(Exception):
    """A failure with a message meant for a person: printed as is, exit status 1, no traceback."""


class RemoteError(UserError):
    """The chain (or a peer) did not do its part: not answering, or answering something impossible."""


class InsufficientEth(UserError):
    """The account cannot pay the gas of what it is about to send."""


class InsufficientTokens(UserError):
    """The account holds too few tokens, or has approved too few to the contract that pulls them."""


def format_eth(wei: int) -> str:
    """``1234500000000000`` -> ``"0.0012 ETH"`` (4 decimals, enough to tell empty from funded)."""
    return f"{wei / WEI:.4f} ETH"


def format_tokens(wei: int) -> str:
    """Token wei as tokens (4 decimals) plus the exact figure: ``"1.5000 tokens (1500000000000000000 token wei)"``."""
    return f"{wei / WEI:.4f} tokens ({wei} token wei)"


def _gas_price() -> int:
    """What one unit of gas costs now (wei): base fee + priority fee (EIP-1559), or the legacy gas price."""
    from ape import chain

    provider = chain.provider
    prices = []
    for read in (lambda: int(provider.base_fee) + int(provider.priority_fee), lambda: int(provider.gas_price)):
        try:
            prices.append(read())
        except Exception:  # noqa: BLE001 - providers know one or the other
            pass
    return max(prices, default=0)


def preflight(account, gas: int, what: str, value: int = 0) -> int:
    """Check that ``account`` can pay ``gas`` units at the current gas price (plus ``value``) before sending.

    Args:
        account: an ape account (or anything with ``address`` and ``balance``).
        gas: gas the transaction needs (an estimate, or a measured figure such as open_channel's).
        what: what the transaction does, in words: ``"opening the channel"``.
        value: ETH sent with it, in wei.

    Returns:
        The estimated cost in wei.

    Raises:
        InsufficientEth: with the balance, the need and what to do.
    """
    need = int(gas) * _gas_price() + int(value)
    balance = int(account.balance)
    if balance < need:
        raise InsufficientEth(
            f"account {account.address} has {format_eth(balance)}; {what} needs about {format_eth(need)} "
            f"at the current gas price: fund it and retry"
        )
    return need


def preflight_tokens(token, account, amount: int, what: str, spender=None) -> None:
    """Check the token balance (and, with ``spender``, the allowance) before a transaction pulls ``amount``.

    Read from the token itself, not from a revert string.

    Raises:
        InsufficientTokens: naming the account, what it holds and what is needed.
    """
    address = getattr(account, "address", account)
    balance = int(token.balanceOf(address))
    if balance < amount:
        raise InsufficientTokens(
            f"account {address} has {format_tokens(balance)}; {what} needs {format_tokens(amount)}: "
            f"get tokens and retry"
        )
    if spender is not None:
        spender_address = getattr(spender, "address", spender)
        allowance = int(token.allowance(address, spender_address))
        if allowance < amount:
            raise InsufficientTokens(
                f"account {address} has approved only {format_tokens(allowance)} to {spender_address}; "
                f"{what} needs {format_tokens(amount)}: approve it and retry"
            )


# -- explain ---------------------------------------------------------------------------------------

#: Substrings of node/ape messages that mean "cannot pay the gas" (geth, anvil, ape's own check).
_NO_GAS_MONEY = ("insufficient funds", "not enough funds", "insufficientfunds",
                 "meets or exceeds account balance")  # the last: ape's own check before it sends
#: snekmate's ERC-20 revert strings (agents read balances first; these catch the rest).
_TOKEN_BALANCE = ("erc20: transfer amount exceeds balance",)
_TOKEN_ALLOWANCE = ("erc20: insufficient allowance",)
#: Messages of a transport that found nobody at the other end.
_NO_ANSWER = ("connection refused", "failed to establish a new connection", "max retries exceeded",
              "not connected", "name or service not known", "timed out")


def _chain_of(exc: BaseException):
    """The exception and its causes/contexts, outermost first (each once)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _sender_of(exc: BaseException):
    txn = getattr(exc, "txn", None)
    return getattr(txn, "sender", None) if txn is not None else None


def _explain_gas(exc: BaseException, action: str | None) -> str:
    import re

    what = action or "this transaction"
    text = " ".join(str(e) for e in _chain_of(exc))
    sender = _sender_of(exc)
    if sender is None:
        found = re.search(r"0x[0-9a-fA-F]{40}", text)
        sender = found.group(0) if found else None
    if sender is None:
        return f"the account cannot pay the gas for {what}: fund it with ETH and retry"
    try:
        from ape import chain

        balance = int(chain.provider.get_balance(sender))
        txn = getattr(exc, "txn", None)
        gas = int(getattr(txn, "gas_limit", None) or 0)
        ape_need = re.search(r"transfer_value=(\d+)", text)  # ape's check: value + max gas cost, in wei
        need = int(ape_need.group(1)) if ape_need else gas * _gas_price()
        needs = f" needs about {format_eth(need)}" if need else " needs more"
        return (f"account {sender} has {format_eth(balance)}; {what}{needs} at the current gas price: "
                f"fund it and retry")
    except Exception:  # noqa: BLE001 - the chain may be gone too; say what we know
        return f"account {sender} cannot pay the gas for {what}: fund it with ETH and retry"


def explain(exc: BaseException, action: str | None = None) -> str | None:
    """Plain words for a failure a person can fix, or None if it is not one we recognise (a bug).

    Args:
        exc: the exception.
        action: what was being done, in words (``"opening the channel"``), used in the message.

    Returns:
        A one-line message without a traceback, or None.
    """
    from agents.chain.deployment import DeploymentError

    for e in _chain_of(exc):
        if isinstance(e, UserError | DeploymentError):
            return str(e)
    text = " ".join(str(e) for e in _chain_of(exc)).lower()
    names = {type(e).__name__ for e in _chain_of(exc)}
    if any(s in text for s in _NO_GAS_MONEY):
        return _explain_gas(exc, action)
    if any(s in text for s in _TOKEN_BALANCE):
        return (f"{action or 'this transaction'} failed: the account holds fewer tokens than it sends: "
                f"get tokens and retry")
    if any(s in text for s in _TOKEN_ALLOWANCE):
        return (f"{action or 'this transaction'} failed: the account has not approved enough tokens to the "
                f"contract: approve them and retry")
    if "InvalidPasswordError" in names:
        return "the account's passphrase is wrong: it stays locked"
    if "Abort" in names or "AccountsError" in names:
        return f"the account is locked or missing ({exc}): give its passphrase in a file or variable, or check its alias"
    if "deployment is for chain" in text:
        return next(str(e) for e in _chain_of(exc) if "deployment is for chain" in str(e).lower())
    if names & {"ProviderNotConnectedError", "ConnectionError", "URLError", "ConnectionRefusedError",
                "NewConnectionError", "MaxRetryError"} or (
            "ProviderError" in names and any(s in text for s in _NO_ANSWER)):
        return f"the chain does not answer ({exc}): is its RPC running and reachable?"
    return None
