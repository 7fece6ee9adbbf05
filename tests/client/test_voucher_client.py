"""The client's voucher payment without a chain: the config (`pay = "voucher"`, [voucher]) and the
voucher chain port's plain answers (no note: which command to run; a close sends nothing).

The port's chain side (redemption carried into the tunnel, reuse of an open channel) runs in
tests/e2e/test_voucher_e2e.py against anvil and `warren node run`.
"""

from pathlib import Path

import pytest

from agents.chain.bindings import NodeInfo
from agents.client.agent import OpenChannel
from agents.client.chain import VoucherChain
from agents.client.config import ClientConfig, ConfigError, load_config, write_config
from agents.client.selection import Candidate
from agents.errors import UserError
from agents.wallet import AccountSpec

POOL = "0x" + "ab" * 20


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "client.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_config__pay_voucher__needs_no_account(tmp_path):
    config = load_config(_write(tmp_path, f'''
pay = "voucher"
[voucher]
notes = "notes.json"
keys = "keys/voucher-depth20"
relayer_fee = "20000000000000000"
pool = "{POOL}"
'''))
    assert config.pay == "voucher" and config.account is None
    assert config.voucher_notes == tmp_path / "notes.json"
    assert config.voucher_keys == tmp_path / "keys" / "voucher-depth20"
    assert config.relayer_fee == 2 * 10**16 and config.voucher_pool.lower() == POOL
    assert config.voucher_signers is None  # beside the notes, as `warren voucher` keeps them


def test_config__pay_voucher__round_trip(tmp_path):
    config = ClientConfig(pay="voucher", data_dir=tmp_path / "data", voucher_notes=tmp_path / "n.json",
                          relayer_fee=5, voucher_pool=None)
    write_config(tmp_path / "c.toml", config)
    again = load_config(tmp_path / "c.toml")
    assert (again.pay, again.account, again.voucher_notes, again.relayer_fee) == ("voucher", None, tmp_path / "n.json", 5)


@pytest.mark.parametrize("text, message", [
    ('pay = "channel"\n', "missing table [account]"),
    ('', "missing table [account]"),
    ('pay = "cash"\n', 'pay: expected "channel" or "voucher"'),
    ('pay = "voucher"\n[voucher]\nnotse = "n.json"\n', "did you mean 'notes'"),
    ('pay = "voucher"\n[voucher]\npool = "0x1234"\n', "[voucher] pool: expected a voucher pool address"),
    ('pay = "voucher"\n[voucher]\nrelayer_fee = -1\n', "[voucher] relayer_fee"),
])
def test_config__bad_payment_settings__plain_error(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, text))
    assert message in str(error.value)


def test_config__channel_without_account__refused_in_code():
    with pytest.raises(ConfigError, match="needs an \\[account\\]"):
        ClientConfig()
    assert ClientConfig(account=AccountSpec(test_account=6)).pay == "channel"


def _candidate() -> Candidate:
    node = NodeInfo(node_id=b"\x11" * 32, operator="0x" + "22" * 20, wg_public_key=b"\x33" * 32, region="NL",
                    price_per_gib=10**18, stake=100, active=True, revoked=False)
    return Candidate(node)


def test_open_channel__no_note_and_no_channel__says_to_deposit(tmp_path):
    port = VoucherChain(contracts=None, pools={}, notes_path=tmp_path / "notes.json")
    with pytest.raises(UserError) as error:
        port.open_channel(_candidate(), 0)
    text = str(error.value)
    assert "no unspent note" in text and "warren voucher deposit" in text and str(tmp_path / "notes.json") in text
    assert not (tmp_path / "signers.json").exists()  # no signer made for nothing


def test_close__voucher_channel__no_transaction_channel_left_open(tmp_path, caplog):
    # contracts=None: any chain call would fail; closing a voucher channel makes none (the signer has
    # no gas, and funding it would link it to the user).
    port = VoucherChain(contracts=None, pools={}, notes_path=tmp_path / "notes.json")
    channel = OpenChannel(b"\x44" * 32, b"\x11" * 32, b"\x01" * 32, "0x" + "55" * 20, 10, 1, POOL)

    class Receipt:
        cumulative_bytes, cumulative_amount = 1000, 7

    assert port.cooperative_close(channel, Receipt(), b"sig", b"node sig") == "left_open"
    assert port.start_close(channel) is None
    assert port.client_address is None
