"""Attaching to a running chain, and failures in plain words (no chain, no deployment, no gas money)."""

import json
import socket

import pytest
import rlp
from eth_utils import keccak, to_checksum_address

from agents import cli
from agents.chain.connect import ChainMismatch, ChainUnavailable, connect, load_contracts
from agents.chain.deployment import CONTRACT_NAMES, DeploymentError
from agents.errors import InsufficientEth, InsufficientTokens, explain, preflight, preflight_tokens
from agents.netlab.world import _rpc, start_anvil
from agents.wallet import AccountSpec, create_keystore, load_account


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rpc(chain):
    """The URL of the anvil ape test runs."""
    return chain.provider.http_uri


def test_connect__nothing_listening__chain_unavailable_and_no_chain_started():
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ChainUnavailable, match=f"no chain answers at {url}: is it running\\? \\(checked for 0.5 s"):
        with connect(url, wait_s=0.5):
            pass
    with socket.socket() as s:  # nobody took the port meanwhile (ape did not start an anvil there)
        assert s.connect_ex(("127.0.0.1", int(url.rsplit(":", 1)[1]))) != 0


def test_connect__running_chain__attaches_and_yields_the_repository(rpc, chain):
    from agents.chain.connect import REPO_ROOT

    with connect(rpc) as project:
        assert project.path.resolve() == REPO_ROOT
        assert chain.provider.is_connected and chain.provider.process is not None  # ape test's own, untouched


def _deployment(tmp_path, chain_id, addresses=None):
    path = tmp_path / "dep.json"
    addresses = addresses or {name: "0x" + "11" * 20 for name in CONTRACT_NAMES}
    path.write_text(json.dumps({"chain_id": chain_id, "addresses": addresses}))
    return path


def test_load_contracts__missing_corrupt_or_foreign_deployment__plain_errors(tmp_path, rpc, chain):
    with connect(rpc) as project:
        with pytest.raises(DeploymentError, match="no deployment file at .*run `ape run deploy` first"):
            load_contracts(project, tmp_path / "absent.json")
        (tmp_path / "bad.json").write_text("{not json")
        with pytest.raises(DeploymentError, match="is not valid JSON"):
            load_contracts(project, tmp_path / "bad.json")
        with pytest.raises(ChainMismatch, match=f"is for chain 5, but the chain at the RPC is chain {chain.chain_id}"):
            load_contracts(project, _deployment(tmp_path, 5))


def test_load_contracts__deployment_of_this_chain__binds_the_contracts(tmp_path, rpc, chain, token, registry, channels):
    addresses = {"warren_token": token.address, "node_registry": registry.address,
                 "payment_channels": channels.address, "reputation": channels.address,  # unused here
                 "revocation_registry": channels.address}
    with connect(rpc) as repo:
        contracts = load_contracts(repo, _deployment(tmp_path, chain.chain_id, addresses))
    assert contracts.chain_id == chain.chain_id
    assert contracts.token.address == token.address and int(contracts.registry.min_node_stake()) > 0


def test_preflight__empty_account__says_balance_need_and_what_to_do(tmp_path, monkeypatch):
    path = tmp_path / "k.json"
    address = create_keystore(path, "pw", kdf="pbkdf2", iterations=2)
    monkeypatch.setenv("WARREN_TEST_PASS", "pw")
    account = load_account(AccountSpec(keystore=path, passphrase_env="WARREN_TEST_PASS"))
    with pytest.raises(InsufficientEth) as info:
        preflight(account, 97_528, "opening the channel")
    message = str(info.value)
    assert message.startswith(f"account {address} has 0.0000 ETH; opening the channel needs about 0.0")
    assert message.endswith(" ETH at the current gas price: fund it and retry")
    assert explain(info.value) == message


def test_preflight__funded_account__returns_cost(accounts):
    assert 0 < preflight(accounts[0], 21_000, "a transfer") < accounts[0].balance


def test_explain__node_refuses_unfunded_sender__plain_gas_message(tmp_path, monkeypatch, accounts):
    path = tmp_path / "k.json"
    address = create_keystore(path, "pw", kdf="pbkdf2", iterations=2)
    monkeypatch.setenv("WARREN_TEST_PASS", "pw")
    account = load_account(AccountSpec(keystore=path, passphrase_env="WARREN_TEST_PASS"))
    with pytest.raises(Exception) as info:
        account.transfer(accounts[1], 1, gas_limit=21_000)
    message = explain(info.value, "sending the payment")
    assert message is not None and message.startswith(f"account {address} has 0.0000 ETH; sending the payment")


def test_preflight_tokens__balance_and_allowance_read_from_the_token(token, stranger, channels, accounts):
    empty = accounts[9]
    with pytest.raises(InsufficientTokens, match=f"account {empty.address} has 0.0000 tokens .*opening the channel"):
        preflight_tokens(token, empty, 10**18, "opening the channel")
    token.approve(channels, 0, sender=stranger)
    with pytest.raises(InsufficientTokens, match="has approved only 0.0000 tokens .*approve it and retry"):
        preflight_tokens(token, stranger, 10**18, "opening the channel", spender=channels)
    token.approve(channels, 10**18, sender=stranger)
    preflight_tokens(token, stranger, 10**18, "opening the channel", spender=channels)


def test_explain__unrecognised_error__none():
    assert explain(ZeroDivisionError("bug")) is None


def test_warren_voucher__missing_deployment_file__plain_error_no_traceback(tmp_path, rpc, capsys):
    code = cli.main(["voucher", "deposit", "--amount", "1", "--rpc", rpc, "--notes", str(tmp_path / "n.json"),
                     "--deployment", str(tmp_path / "absent.json")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("warren: no deployment file at ") and "Traceback" not in err


def test_warren_voucher__no_chain__plain_error(tmp_path, capsys):
    url = f"http://127.0.0.1:{_free_port()}"
    code = cli.main(["voucher", "deposit", "--amount", "1", "--rpc", url, "--notes", str(tmp_path / "n.json")])
    assert code == 1
    assert capsys.readouterr().err.startswith(f"warren: no chain answers at {url}: is it running?")


def test_cli__lists_only_parts_that_exist():
    import importlib.util

    assert "agents.chain.cli" not in cli._PARTS
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert "node" in commands and "voucher" in commands
    missing = [p for p in cli._PARTS if importlib.util.find_spec(p) is None]
    assert set(missing) <= {"agents.client.cli"}  # written in parallel; every other part exists


def test_voucher_command__foreign_deployment__refused_in_words_before_any_transaction(tmp_path, rpc, chain, capsys):
    from ape import accounts

    from agents.cli import main

    nonce = accounts.test_accounts[0].nonce
    code = main(["voucher", "deposit", "--amount", "1", "--notes", str(tmp_path / "notes.json"), "--account", "0",
                 "--rpc", rpc, "--deployment", str(_deployment(tmp_path, 5))])
    assert code == 1
    assert f"is for chain 5, but the chain at the RPC is chain {chain.chain_id}" in capsys.readouterr().err
    assert accounts.test_accounts[0].nonce == nonce



def test_connect__second_local_chain__leaves_this_chains_contract_types_alone(registry, owner, chain):
    """ape keys its contract cache by network name, and every anvil is "ethereum:local": a deployment
    at the same address on another local chain must not change what this chain's traces decode with
    (node_registry's `tx.return_value` failed in CI after an end-to-end test had deployed a lab chain
    in the same process)."""
    nonce = next(n for n in range(10_000) if to_checksum_address(
        keccak(rlp.encode([bytes.fromhex(owner.address[2:]), n]))[12:]) == registry.address)
    before = chain.contracts[registry.address]
    with start_anvil() as other, connect(other.url) as project:
        _rpc(other.url, "anvil_setNonce", [owner.address, hex(nonce)])
        token = owner.deploy(project.warren_token)  # the other chain's token at this chain's registry address
        assert token.address == registry.address
        assert chain.contracts[registry.address].name == "warren_token"
    assert chain.contracts[registry.address] == before
