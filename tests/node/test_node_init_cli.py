"""`warren node init`: keys, operator account and config, refusals in plain words (exit 1, no traceback)."""

import json
import os
import stat

import pytest
from eth_account import Account

from agents import cli
from agents.chain.bindings import node_id_of
from agents.node.config import load_config
from agents.wireguard.config import decode_key, public_key


@pytest.fixture
def passphrase_file(tmp_path):
    path = tmp_path / "passphrase"
    path.write_text("correct horse\n")
    path.chmod(0o600)
    return path


def _init(tmp_path, *extra):
    return ["node", "init", "--config", str(tmp_path / "node.toml"), "--region", "de", "--price-per-gib",
            "1000000000000000", "--data-dir", str(tmp_path / "data"), *extra]


def _run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_init__new_keystore__key_account_config_and_next_step(tmp_path, passphrase_file, capsys):
    keystore = tmp_path / "operator.json"
    code, out, err = _run(_init(tmp_path, "--keystore", str(keystore), "--passphrase-file", str(passphrase_file),
                                "--public-endpoint", "203.0.113.7:51820", "--bootstrap", "198.51.100.1:51820"), capsys)
    assert (code, err) == (0, "")
    for path in (tmp_path / "node.toml", keystore, tmp_path / "data" / "wg.key"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    cfg = load_config(tmp_path / "node.toml")
    assert (cfg.region, cfg.price_per_gib, cfg.public_endpoint) == ("DE", 10**15, ("203.0.113.7", 51820))
    assert cfg.bootstrap == (("198.51.100.1", 51820),)
    assert cfg.operator.keystore == keystore and cfg.operator.passphrase_file == passphrase_file
    address = Account.from_key(Account.decrypt(json.loads(keystore.read_text()), "correct horse")).address
    node_id = node_id_of(public_key(decode_key(cfg.wg_key_file.read_text())))
    assert f"operator  {address}" in out and f"node id   0x{node_id.hex()}" in out
    assert f"warren node run --config {tmp_path / 'node.toml'}" in out
    assert "correct horse" not in (tmp_path / "node.toml").read_text() + out


def test_init__existing_config_without_force__refused_and_unchanged(tmp_path, capsys):
    (tmp_path / "node.toml").write_text("old")
    code, out, err = _run(_init(tmp_path, "--test-account", "1"), capsys)
    assert code == 1 and err == f"warren: config file {tmp_path / 'node.toml'} already exists: pass --force to overwrite it\n"
    assert (tmp_path / "node.toml").read_text() == "old" and not (tmp_path / "data").exists()


def test_init__force__overwrites_config_keeps_key_and_keystore(tmp_path, passphrase_file, capsys):
    keystore = tmp_path / "operator.json"
    args = _init(tmp_path, "--keystore", str(keystore), "--passphrase-file", str(passphrase_file))
    assert _run(args, capsys)[0] == 0
    key, stored = (tmp_path / "data" / "wg.key").read_text(), keystore.read_text()
    code, out, _ = _run(args[:5] + ["US"] + args[6:] + ["--force"], capsys)
    assert code == 0 and "existing WireGuard key" in out and "existing keystore" in out
    assert (tmp_path / "data" / "wg.key").read_text() == key and keystore.read_text() == stored
    assert load_config(tmp_path / "node.toml").region == "US"


def test_init__passphrase_file_readable_by_others__refused_nothing_made(tmp_path, passphrase_file, capsys):
    passphrase_file.chmod(0o644)
    code, _, err = _run(_init(tmp_path, "--keystore", str(tmp_path / "op.json"),
                              "--passphrase-file", str(passphrase_file)), capsys)
    assert code == 1 and "readable by others (mode 0644): run `chmod 600" in err and "Traceback" not in err
    assert not (tmp_path / "op.json").exists() and not (tmp_path / "node.toml").exists()


def test_init__existing_keystore_wrong_passphrase__refused(tmp_path, passphrase_file, capsys, monkeypatch):
    from agents.wallet import create_keystore

    create_keystore(tmp_path / "op.json", "other", kdf="pbkdf2", iterations=2)
    monkeypatch.setenv("WARREN_TEST_PASS", "not it")
    code, _, err = _run(_init(tmp_path, "--keystore", str(tmp_path / "op.json"), "--passphrase-env",
                              "WARREN_TEST_PASS"), capsys)
    assert (code, err) == (1, f"warren: wrong passphrase for keystore {tmp_path / 'op.json'}\n")
    assert not (tmp_path / "node.toml").exists()


def test_init__keystore_without_passphrase_source__refused(tmp_path, capsys):
    code, _, err = _run(_init(tmp_path, "--keystore", str(tmp_path / "op.json")), capsys)
    assert code == 1 and "a keystore needs passphrase_file or passphrase_env (never the command line)" in err


def test_init__passphrase_on_command_line__not_an_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(_init(tmp_path, "--keystore", str(tmp_path / "op.json"), "--passphrase", "hunter2"))
    assert info.value.code == 2 and not (tmp_path / "op.json").exists()


@pytest.mark.parametrize("flag, value, expected", [
    ("--region", "Germany", "a region is an ISO 3166-1 alpha-2 code such as DE or US, not 'Germany'"),
    ("--public-endpoint", "203.0.113.7", "--public-endpoint: expected host:port"),
    ("--bootstrap", "nowhere", "--bootstrap: expected host:port"),
    ("--rpc", "localhost:8545", "--rpc: expected a URL such as http://127.0.0.1:8545"),
    ("--listen-port", "70000", "--listen-port: expected 0-65535, found 70000"),
])
def test_init__bad_flag__plain_error_nothing_written(tmp_path, capsys, flag, value, expected):
    argv = _init(tmp_path, "--test-account", "1")
    if flag == "--region":
        argv[argv.index("--region") + 1] = value
    else:
        argv += [flag, value]
    code, _, err = _run(argv, capsys)
    assert code == 1 and expected in err and err.startswith("warren: ")
    assert not (tmp_path / "node.toml").exists()


def test_init__test_account_on_live_network__refused(tmp_path, capsys):
    code, _, err = _run(_init(tmp_path, "--test-account", "1", "--network", "ethereum:sepolia:node"), capsys)
    assert code == 1 and "--test-account works only on a local network" in err


def test_init__negative_price__argparse_refuses(tmp_path, capsys):
    argv = _init(tmp_path, "--test-account", "1")
    argv[argv.index("--price-per-gib") + 1] = "-1"
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert "argument --price-per-gib: expected a whole number of token wei >= 0 or \"auto\", found '-1'" in \
        capsys.readouterr().err


def _auto(tmp_path, *flags):
    argv = _init(tmp_path, "--test-account", "1", *flags)
    argv[argv.index("--price-per-gib") + 1] = "auto"
    return argv


def test_init__auto_price__writes_price_table_that_loads(tmp_path, capsys):
    from agents.node.pricing import PriceRule

    code, _, err = _run(_auto(tmp_path, "--price-floor", "1000", "--price-ceiling", "5000", "--capacity-mbps", "25"),
                        capsys)
    assert (code, err) == (0, "")
    cfg = load_config(tmp_path / "node.toml")
    assert cfg.price_per_gib == "auto" and cfg.price == PriceRule(1000, 5000, 25.0)
    assert 'price_per_gib = "auto"' in (tmp_path / "node.toml").read_text()


@pytest.mark.parametrize("flags, message", [
    (("--price-floor", "1000"), "warren: --price-per-gib auto needs --price-ceiling, --capacity-mbps (the bounds in "
                                "token wei per GiB and the bandwidth the node sells)\n"),
    (("--price-floor", "9000", "--price-ceiling", "5000", "--capacity-mbps", "25"),
     "warren: the price floor (9000) is above the ceiling (5000)\n"),
])
def test_init__auto_price_bad_flags__refused_in_words_nothing_written(tmp_path, capsys, flags, message):
    code, _, err = _run(_auto(tmp_path, *flags), capsys)
    assert (code, err) == (1, message) and not (tmp_path / "node.toml").exists()


def test_init__auto_flags_with_a_fixed_price__refused(tmp_path, capsys):
    code, _, err = _run(_init(tmp_path, "--test-account", "1", "--capacity-mbps", "25"), capsys)
    assert (code, err) == (1, "warren: --capacity-mbps: only with --price-per-gib auto (the price is fixed at "
                              "1000000000000000)\n")
