"""Wallets: keystore accounts send real transactions; passphrases only from safe files or variables."""

import json
import os
import stat

import pytest
from eth_account import Account

from agents.wallet import AccountSpec, WalletError, create_keystore, load_account, private_key_of

#: A cheap KDF for tests that do not send: scrypt at eth-account's default costs ~1 s per call.
FAST = {"kdf": "pbkdf2", "iterations": 2}


@pytest.fixture
def passphrase_file(tmp_path):
    path = tmp_path / "passphrase"
    path.write_text("correct horse\n")
    path.chmod(0o600)
    return path


def test_keystore_account__unlocked_from_file__sends_a_real_transaction(tmp_path, passphrase_file, accounts, chain):
    path = tmp_path / "operator.json"
    address = create_keystore(path, "correct horse")  # eth-account's default scrypt
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["crypto"]["kdf"] == "scrypt"
    accounts[0].transfer(address, 10**18)
    account = load_account(AccountSpec(keystore=path, passphrase_file=passphrase_file))
    assert account.address == address
    before = accounts[9].balance
    tx = account.transfer(accounts[9], 12345)
    assert tx.sender == address and not tx.failed
    assert accounts[9].balance == before + 12345
    assert Account.from_key(private_key_of(account)).address == address


def test_load_account__wrong_passphrase__plain_error(tmp_path, monkeypatch):
    path = tmp_path / "k.json"
    create_keystore(path, "right", **FAST)
    monkeypatch.setenv("WARREN_TEST_PASS", "wrong")
    with pytest.raises(WalletError, match="wrong passphrase .* stays locked"):
        load_account(AccountSpec(keystore=path, passphrase_env="WARREN_TEST_PASS"))


def test_load_account__passphrase_from_environment__unlocks(tmp_path, monkeypatch):
    path = tmp_path / "k.json"
    address = create_keystore(path, "from env", **FAST)
    monkeypatch.setenv("WARREN_TEST_PASS", "from env")
    assert load_account(AccountSpec(keystore=path, passphrase_env="WARREN_TEST_PASS")).address == address


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_account__passphrase_file_open_to_others__refused(tmp_path, passphrase_file, mode):
    path = tmp_path / "k.json"
    create_keystore(path, "correct horse", **FAST)
    passphrase_file.chmod(mode)
    with pytest.raises(WalletError, match=f"readable by others \\(mode {mode:04o}\\): run `chmod 600"):
        load_account(AccountSpec(keystore=path, passphrase_file=passphrase_file))


def test_load_account__unset_variable_missing_file_missing_keystore__plain_errors(tmp_path, passphrase_file, monkeypatch):
    path = tmp_path / "k.json"
    create_keystore(path, "correct horse", **FAST)
    monkeypatch.delenv("WARREN_UNSET_PASS", raising=False)
    with pytest.raises(WalletError, match="WARREN_UNSET_PASS .* not set"):
        load_account(AccountSpec(keystore=path, passphrase_env="WARREN_UNSET_PASS"))
    with pytest.raises(WalletError, match="passphrase file .* does not exist"):
        load_account(AccountSpec(keystore=path, passphrase_file=tmp_path / "nope"))
    with pytest.raises(WalletError, match="no keystore file at"):
        load_account(AccountSpec(keystore=tmp_path / "nope.json", passphrase_file=passphrase_file))
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(WalletError, match="is not an Ethereum keystore"):
        load_account(AccountSpec(keystore=tmp_path / "junk.json", passphrase_file=passphrase_file))


def test_create_keystore__existing_file__never_overwritten(tmp_path):
    path = tmp_path / "k.json"
    create_keystore(path, "one", **FAST)
    before = path.read_bytes()
    with pytest.raises(WalletError, match="already exists"):
        create_keystore(path, "two", **FAST)
    assert path.read_bytes() == before
    with pytest.raises(WalletError, match="empty passphrase"):
        create_keystore(tmp_path / "other.json", "")


def test_load_account__unknown_ape_alias__says_how_to_import():
    with pytest.raises(WalletError, match="no ape account named 'warren-no-such-alias'.*ape accounts import"):
        load_account(AccountSpec(ape_alias="warren-no-such-alias"))


def test_load_account__test_account__only_on_local_networks(accounts):
    assert load_account(AccountSpec(test_account=3)).address == accounts[3].address
    with pytest.raises(WalletError, match="only on local networks"):
        load_account(AccountSpec(test_account=3), network="ethereum:sepolia:node")


def test_account_spec__ambiguous_or_argv_passphrase__refused(tmp_path):
    with pytest.raises(WalletError, match="exactly one of"):
        AccountSpec(keystore=tmp_path / "k", ape_alias="a", passphrase_env="X")
    with pytest.raises(WalletError, match="needs passphrase_file or passphrase_env"):
        AccountSpec(keystore=tmp_path / "k")
    with pytest.raises(WalletError, match="unknown key 'passphrase'"):
        AccountSpec.from_dict({"keystore": "k", "passphrase": "hunter2"})
