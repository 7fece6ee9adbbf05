"""Operator and client accounts, as ape accounts usable as ``sender=``, unlocked without a prompt.

An account is named by an :class:`AccountSpec`, one of:

- ``keystore = PATH`` with ``passphrase_file = PATH`` or ``passphrase_env = VAR``: an Ethereum
  keystore JSON (eth-account's ``Account.encrypt``, scrypt) at any path, the same format ape's own
  accounts use;
- ``ape_alias = NAME``: an account imported with ``ape accounts import NAME`` (its passphrase from
  ``passphrase_file``/``passphrase_env`` if given, else ape's ``APE_ACCOUNTS_<NAME>_PASSPHRASE``);
- ``test_account = N``: ape's N-th test account, on local networks only (their keys are public).

A passphrase never comes from the command line (argv is visible to every user through /proc) and a
passphrase file readable by group or others is refused. Both keystore kinds load as ape's
``KeyfileAccount`` unlocked with autosign on, so nothing prompts (CI and services have no stdin).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account

from agents.errors import UserError

__all__ = ["AccountSpec", "WalletError", "create_keystore", "load_account", "private_key_of", "read_passphrase"]

#: Permission bits a secret file may not have: any access by group or others (as ssh checks keys).
_OTHERS = stat.S_IRWXG | stat.S_IRWXO
#: The spec's keys in a config table; exactly one way of naming the account.
_KINDS = ("keystore", "ape_alias", "test_account")
_KEYS = ("keystore", "passphrase_file", "passphrase_env", "ape_alias", "test_account")


class WalletError(UserError):
    """An account cannot be made or unlocked: missing file, wrong passphrase, unsafe permissions..."""


@dataclass(frozen=True)
class AccountSpec:
    """How to find and unlock one account (see the module docstring).

    Attributes:
        keystore: path of a keystore JSON file.
        passphrase_file: a 0600 file holding the passphrase (one line).
        passphrase_env: an environment variable holding the passphrase.
        ape_alias: an ape account alias.
        test_account: index of an ape test account (local networks only).
    """

    keystore: Path | None = None
    passphrase_file: Path | None = None
    passphrase_env: str | None = None
    ape_alias: str | None = None
    test_account: int | None = None

    def __post_init__(self) -> None:
        kinds = [k for k in _KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise WalletError("an account is named by exactly one of keystore, ape_alias or test_account "
                              f"(found {', '.join(kinds) or 'none'})")
        if self.passphrase_file is not None and self.passphrase_env is not None:
            raise WalletError("give the passphrase in passphrase_file or passphrase_env, not both")
        if self.keystore is not None and self.passphrase_file is None and self.passphrase_env is None:
            raise WalletError("a keystore needs passphrase_file or passphrase_env (never the command line)")
        if self.test_account is not None and (self.passphrase_file or self.passphrase_env):
            raise WalletError("a test account has no passphrase")
        if self.test_account is not None and (isinstance(self.test_account, bool) or
                                              not isinstance(self.test_account, int) or self.test_account < 0):
            raise WalletError(f"test_account is an index >= 0, not {self.test_account!r}")

    @classmethod
    def from_dict(cls, raw: dict, base: Path | None = None) -> AccountSpec:
        """From a config table (``[operator]``); relative paths are taken from ``base``.

        Raises:
            WalletError: unknown key, wrong type or an incomplete/ambiguous spec.
        """
        unknown = sorted(set(raw) - set(_KEYS))
        if unknown:
            raise WalletError(f"unknown key {unknown[0]!r} (expected {', '.join(_KEYS)})")
        values: dict[str, object] = {}
        for key in ("keystore", "passphrase_file"):
            if key in raw:
                if not isinstance(raw[key], str) or not raw[key]:
                    raise WalletError(f"{key}: expected a path, found {raw[key]!r}")
                path = Path(raw[key]).expanduser()
                values[key] = path if path.is_absolute() or base is None else base / path
        for key in ("passphrase_env", "ape_alias"):
            if key in raw:
                if not isinstance(raw[key], str) or not raw[key]:
                    raise WalletError(f"{key}: expected a name, found {raw[key]!r}")
                values[key] = raw[key]
        if "test_account" in raw:
            value = raw["test_account"]
            if isinstance(value, bool) or not isinstance(value, int):
                raise WalletError(f"test_account: expected an index (whole number), found {value!r}")
            values["test_account"] = value
        return cls(**values)

    def to_dict(self) -> dict:
        """The config table form (None fields left out, paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k in _KEYS if (v := getattr(self, k)) is not None}

    def describe(self) -> str:
        """Which account, in words (never the passphrase)."""
        if self.keystore is not None:
            return f"keystore {self.keystore}"
        if self.ape_alias is not None:
            return f"ape account {self.ape_alias!r}"
        return f"test account {self.test_account}"


def _check_private(path: Path, what: str) -> None:
    mode = path.stat().st_mode
    if mode & _OTHERS:
        raise WalletError(f"{what} {path} is readable by others (mode {stat.S_IMODE(mode):04o}): "
                          f"run `chmod 600 {path}` and retry")


def read_passphrase(spec: AccountSpec) -> str | None:
    """The passphrase the spec points at (None if it names none).

    Raises:
        WalletError: the file is missing, empty or open to group/others; the variable is unset or empty.
    """
    if spec.passphrase_file is not None:
        path = Path(spec.passphrase_file)
        try:
            _check_private(path, "passphrase file")
            text = path.read_text()
        except FileNotFoundError:
            raise WalletError(f"passphrase file {path} does not exist") from None
        except OSError as exc:
            raise WalletError(f"cannot read passphrase file {path}: {exc.strerror}") from None
        passphrase = text[:-1] if text.endswith("\n") else text  # one line; only its newline is not part of it
        passphrase = passphrase[:-1] if passphrase.endswith("\r") else passphrase
        if not passphrase:
            raise WalletError(f"passphrase file {path} is empty")
        return passphrase
    if spec.passphrase_env is not None:
        passphrase = os.environ.get(spec.passphrase_env)
        if not passphrase:
            raise WalletError(f"environment variable {spec.passphrase_env} (the passphrase) is not set or empty")
        return passphrase
    return None


def create_keystore(path: str | os.PathLike, passphrase: str, private_key: bytes | None = None, *,
                    kdf: str = "scrypt", iterations: int | None = None) -> str:
    """Write a new account (or ``private_key``) encrypted with ``passphrase`` to ``path`` (mode 0600).

    Args:
        path: where the keystore JSON goes.
        passphrase: encrypts it.
        private_key: an existing key to store (default: a fresh one).
        kdf: ``"scrypt"`` (eth-account's and geth's default) or ``"pbkdf2"``.
        iterations: the KDF's work factor (default: eth-account's, ~1 s of scrypt); lower only in tests.

    Returns:
        The account's checksummed address.

    Raises:
        WalletError: the file exists (it is never overwritten: it may hold the only copy of a key),
            or the passphrase is empty.
    """
    if not passphrase:
        raise WalletError("refusing an empty passphrase for a keystore")
    path = Path(path)
    account = Account.from_key(private_key) if private_key is not None else Account.create()
    keystore = Account.encrypt(account.key, passphrase, kdf=kdf, iterations=iterations)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise WalletError(f"keystore {path} already exists: not overwritten") from None
    with os.fdopen(fd, "w") as handle:
        json.dump(keystore, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return account.address


def _network_name() -> str | None:
    from ape import networks

    provider = networks.active_provider
    return provider.network.name if provider is not None and provider.is_connected else None


def _keyfile_account(path: Path, passphrase: str | None, what: str):
    from ape.exceptions import AccountsError
    from ape_accounts.accounts import InvalidPasswordError, KeyfileAccount

    if not path.is_file():
        raise WalletError(f"{what}: no keystore file at {path}")
    try:
        keystore = json.loads(path.read_text())
        if not isinstance(keystore, dict) or "crypto" not in {k.lower() for k in keystore}:
            raise ValueError("no crypto section")
    except (OSError, ValueError) as exc:
        raise WalletError(f"{what}: {path} is not an Ethereum keystore file ({exc})") from None
    if passphrase is None:
        raise WalletError(f"{what} is locked: give its passphrase with passphrase_file or passphrase_env")
    account = KeyfileAccount(keyfile_path=path)
    try:
        account.set_autosign(True, passphrase=passphrase)
    except InvalidPasswordError:
        raise WalletError(f"{what}: wrong passphrase for {path}; the account stays locked") from None
    except AccountsError as exc:
        raise WalletError(f"{what}: cannot unlock {path} ({exc})") from None
    return account


def load_account(spec: AccountSpec, network: str | None = None):
    """The ape account ``spec`` names, unlocked, signing without prompts.

    Args:
        spec: which account.
        network: the network choice it will be used on (``ethereum:local:foundry``); test accounts
            are refused unless it (or, without it, the connected network) is a local one.

    Raises:
        WalletError: missing or unreadable keystore, wrong passphrase, unsafe passphrase file,
            unknown alias, test account off a local network.
    """
    if spec.test_account is not None:
        name = network.split(":")[1] if network and ":" in network else _network_name()
        if name is not None and name != "local":
            raise WalletError(f"test accounts exist only on local networks, not on {name!r}: use a keystore "
                              f"or an ape account")
        from ape import accounts

        return accounts.test_accounts[spec.test_account]
    if spec.keystore is not None:
        return _keyfile_account(Path(spec.keystore), read_passphrase(spec), spec.describe())
    from ape import accounts

    container = accounts.containers.get("accounts")
    path = Path(container.data_folder) / f"{spec.ape_alias}.json" if container is not None else None
    if path is None or not path.is_file():
        raise WalletError(f"no ape account named {spec.ape_alias!r}: import it with "
                          f"`ape accounts import {spec.ape_alias}` or name a keystore file")
    passphrase = read_passphrase(spec) or os.environ.get(f"APE_ACCOUNTS_{spec.ape_alias}_PASSPHRASE")
    return _keyfile_account(path, passphrase, spec.describe())


def private_key_of(account) -> bytes:
    """The 32-byte private key of an account :func:`load_account` returned (it signs overlay records).

    Raises:
        WalletError: the account does not hold its key here (a hardware or locked account).
    """
    key = getattr(account, "private_key", None)
    if key is None:
        # ape's KeyfileAccount keeps its unlocked signer in a private attribute; read, never changed.
        signer = getattr(account, "_KeyfileAccount__cached_signer", None)
        key = getattr(signer, "private_key", None)
    if key is None:
        raise WalletError(f"account {account.address} does not expose its key here (locked or external)")
    if isinstance(key, str):
        key = bytes.fromhex(key.removeprefix("0x"))
    return bytes(key)
