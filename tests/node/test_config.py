"""Node and client config files: round trips, and one clear error per kind of bad input."""

import os
import stat

import pytest

from agents.client import config as client_config
from agents.errors import UserError
from agents.node.config import NodeConfig, load_config, write_config
from agents.tomlconfig import ConfigError
from agents.wallet import AccountSpec

GOOD = """
region = "de"
price_per_gib = 1000000000000000
stake = "250000000000000000000"
data_dir = "data"
public_endpoint = "203.0.113.7:51820"
bootstrap = ["198.51.100.1:51820", "[2001:db8::1]:51820"]

[settlement]
threshold = 5000000000000000000

[exit]
allow_ports = [80, 443]

[chain]
rpc = "http://127.0.0.1:9545"
deployment = "dep.json"

[operator]
keystore = "operator.json"
passphrase_file = "passphrase"
"""


def _write(tmp_path, text, name="node.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(tmp_path, text) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    return str(info.value)


def test_load__good_file__values_defaults_and_paths_from_its_folder(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.region == "DE"
    assert cfg.price_per_gib == 10**15 and cfg.stake == 250 * 10**18
    assert cfg.settlement_threshold == 5 * 10**18
    assert cfg.data_dir == tmp_path / "data" and cfg.wg_key_file == tmp_path / "data" / "wg.key"
    assert cfg.public_endpoint == ("203.0.113.7", 51820)
    assert cfg.bootstrap == (("198.51.100.1", 51820), ("2001:db8::1", 51820))
    assert cfg.exit == {"allow_ports": [80, 443]}
    assert cfg.rpc == "http://127.0.0.1:9545" and cfg.deployment == tmp_path / "dep.json"
    assert cfg.operator == AccountSpec(keystore=tmp_path / "operator.json", passphrase_file=tmp_path / "passphrase")
    assert (cfg.credit_bytes, cfg.receipt_bytes, cfg.receipt_interval_s) == (16 << 20, 1 << 20, 5.0)
    assert (cfg.listen_port, cfg.control_port, cfg.max_pending, cfg.setup_timeout_s) == (51820, 7700, 32, 20.0)
    assert (cfg.pool_v4, cfg.pool_v6) == ("10.77.0.0/16", "fd77:7272::/64")
    assert cfg.min_relayer_fee == 10**16  # the client's default offer: default node and client agree


def test_write__then_load__same_config_file_mode_0600(tmp_path):
    cfg = NodeConfig(region="US", price_per_gib=3, operator=AccountSpec(ape_alias="op"), stake=10**21,
                     dns_upstream=("9.9.9.9", 53), uplink="eth0", bootstrap=[("10.0.0.1", 1)], data_dir=tmp_path,
                     min_relayer_fee=10**20)
    path = tmp_path / "node.toml"
    write_config(path, cfg)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_config(path) == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["node.toml"]  # no temporary file left behind


def test_write__existing_file_without_force__refused_and_unchanged(tmp_path):
    path = _write(tmp_path, "old")
    cfg = NodeConfig(region="US", price_per_gib=3, operator=AccountSpec(test_account=1))
    with pytest.raises(ConfigError, match="already exists: pass --force"):
        write_config(path, cfg)
    assert path.read_text() == "old"
    write_config(path, cfg, force=True)
    assert load_config(path) == cfg


def test_load__malformed_toml__names_file_and_line(tmp_path):
    message = _error(tmp_path, 'region = "DE"\nprice_per_gib = = 3\n')
    assert "node.toml is not valid TOML" in message and "line 2" in message


def test_load__missing_file__plain_error(tmp_path):
    with pytest.raises(ConfigError, match="no config file at"):
        load_config(tmp_path / "absent.toml")


def test_load__unknown_key__refused_with_suggestion(tmp_path):
    message = _error(tmp_path, GOOD.replace("stake =", "stak ="))
    assert message.endswith("unknown key stak; did you mean 'stake'?")


def test_load__unknown_key_in_table__names_table(tmp_path):
    message = _error(tmp_path, GOOD.replace("threshold =", "treshold ="))
    assert "unknown key [settlement] treshold; did you mean 'threshold'?" in message


@pytest.mark.parametrize("line, expected", [
    ('price_per_gib = -5', "price_per_gib: expected a whole number of token wei per GiB >= 0, or \"auto\", found -5"),
    ('price_per_gib = "cheap"', "price_per_gib: expected a whole number of token wei per GiB >= 0, or \"auto\", found 'cheap'"),
    ('price_per_gib = 1.5', "price_per_gib: expected a whole number of token wei per GiB >= 0, or \"auto\", found 1.5"),
    ('region = "Germany"', "region: expected an ISO 3166-1 alpha-2 region such as \"DE\", found 'Germany'"),
    ('region = 49', "region: expected an ISO 3166-1 alpha-2 region such as \"DE\", found 49"),
    ('listen_port = 70000', "listen_port: expected a whole number >= 0 and <= 65535, found 70000"),
    ('listen_port = true', "listen_port: expected a whole number >= 0 and <= 65535, found True"),
    ('pool_v4 = "10.77.0.0/33"', "pool_v4: expected an IPv4 CIDR such as 10.77.0.0/16, found '10.77.0.0/33'"),
    ('pool_v4 = "fd00::/64"', "pool_v4: expected an IPv4 CIDR such as 10.77.0.0/16, found 'fd00::/64'"),
    ('pool_v6 = "10.0.0.0/8"', "pool_v6: expected an IPv6 CIDR such as fd77:7272::/64, found '10.0.0.0/8'"),
    ('public_endpoint = "203.0.113.7"', "public_endpoint: expected an endpoint \"host:port\""),
    ('bootstrap = "1.2.3.4:5"', "bootstrap: expected a list of endpoints \"host:port\", found '1.2.3.4:5'"),
    ('uplink = "eth0; drop"', "uplink: expected an interface name (1-15 of A-Za-z0-9_.-), found 'eth0; drop'"),
    ('receipt_interval_s = 0', "receipt_interval_s: expected a number > 0, found 0"),
    ('min_relayer_fee = -1', "min_relayer_fee: expected a whole number of token wei >= 0, found -1"),
])
def test_load__bad_value__names_key_expected_and_found(tmp_path, line, expected):
    key = line.split(" =")[0]
    lines = [ln for ln in GOOD.splitlines() if not ln.startswith(key + " =")]
    first_table = lines.index("[settlement]")
    text = "\n".join(lines[:first_table] + [line] + lines[first_table:])
    message = _error(tmp_path, text)
    assert message.startswith(str(tmp_path / "node.toml") + ": ")
    assert expected in message


def test_load__table_given_as_value__refused(tmp_path):
    text = 'chain = "x"\n' + GOOD.replace("[chain]\n", "").replace('rpc = "http://127.0.0.1:9545"\ndeployment = "dep.json"\n', "")
    assert "chain: expected a table [chain], found 'x'" in _error(tmp_path, text)


def test_load__bad_threshold__says_auto_or_wei(tmp_path):
    message = _error(tmp_path, GOOD.replace("threshold = 5000000000000000000", 'threshold = "soon"'))
    assert "[settlement] threshold: expected \"auto\" or a whole number of token wei >= 0, found 'soon'" in message


def test_load__missing_required_key__says_which(tmp_path):
    message = _error(tmp_path, GOOD.replace("price_per_gib = 1000000000000000\n", ""))
    assert "missing key price_per_gib" in message


AUTO = GOOD.replace("price_per_gib = 1000000000000000\n", 'price_per_gib = "auto"\n').replace(
    "[settlement]\n", "[price]\nfloor = 500000000000000\nceiling = \"50000000000000000000\"\ncapacity_mbps = 25\n\n"
    "[settlement]\n")


def test_load__auto_price__rule_with_sim_defaults_and_round_trip(tmp_path):
    from agents.economy.sim import Params
    from agents.node.pricing import PriceRule

    cfg = load_config(_write(tmp_path, AUTO))
    assert cfg.auto_price and cfg.price_per_gib == "auto"
    assert cfg.price == PriceRule(floor=5 * 10**14, ceiling=50 * 10**18, capacity_mbps=25.0,
                                  target_utilisation=Params().target_utilisation, step=Params().price_step)
    write_config(tmp_path / "again.toml", cfg)
    assert load_config(tmp_path / "again.toml") == cfg
    tuned = load_config(_write(tmp_path, AUTO.replace("capacity_mbps = 25\n",
                                                      "capacity_mbps = 25\ntarget_utilisation = 0.5\nstep = 1.5\n")))
    assert (tuned.price.target_utilisation, tuned.price.step) == (0.5, 1.5)


@pytest.mark.parametrize("change, expected", [
    (("[price]\n", "[pricing]\n"), 'price_per_gib = "auto" needs a [price] table with floor, ceiling (token wei per '
                                   'GiB) and capacity_mbps (the bandwidth the node sells)'),
    (("capacity_mbps = 25\n", ""), "missing key [price] capacity_mbps (the bandwidth the node sells in Mbit/s: auto "
                                   "prices measure utilisation against it)"),
    (("floor = 500000000000000\n", ""), "missing key [price] floor (the lowest price, a whole number of token wei "
                                        "per GiB >= 1)"),
    (("floor = 500000000000000", "floor = \"60000000000000000000\""),
     "[price]: the price floor (60000000000000000000) is above the ceiling (50000000000000000000)"),
    (("floor = 500000000000000", "floor = 0"),
     "[price]: the price floor must be at least 1 token wei per GiB (a price of 0 cannot grow by a factor), not 0"),
    (("ceiling = \"50000000000000000000\"", "ceiling = \"%d\"" % (1 << 128)),
     "[price]: the price ceiling must be below 2**128 token wei per GiB (the overlay record holds 16 bytes)"),
    (("capacity_mbps = 25", "capacity_mbps = 0"), "[price] capacity_mbps: expected a number > 0, found 0"),
    (("capacity_mbps = 25", "capacity_mbps = \"fast\""), "[price] capacity_mbps: expected a number > 0, found 'fast'"),
    (("capacity_mbps = 25", "capacity_mbps = 25\ntarget_utilisation = 1.5"),
     "[price]: target_utilisation is a share of the capacity, above 0 and at most 1, not 1.5"),
    (("capacity_mbps = 25", "capacity_mbps = 25\nstep = 2"),
     "[price]: step must be above 0 and below 1 / target_utilisation (1.42857), or an idle epoch would take the "
     "price to zero or below; found 2.0"),
    (("capacity_mbps = 25", "capacity_mbps = 25\nceilng = 3"), "unknown key [price] ceilng; did you mean 'ceiling'?"),
    (('price_per_gib = "auto"', "price_per_gib = 1000"),
     '[price] applies only with price_per_gib = "auto" (this file sets a fixed price, 1000): remove the table or '
     'set price_per_gib = "auto"'),
])
def test_load__bad_auto_price__refused_in_words(tmp_path, change, expected):
    message = _error(tmp_path, AUTO.replace(*change))
    assert message.startswith(str(tmp_path / "node.toml") + ": ")
    assert expected in message


def test_load__operator_missing_or_ambiguous__refused(tmp_path):
    no_operator = GOOD[:GOOD.index("[operator]")]
    assert "missing table [operator]" in _error(tmp_path, no_operator)
    both = GOOD + 'ape_alias = "op"\n'
    assert "exactly one of keystore, ape_alias or test_account" in _error(tmp_path, both)
    no_secret = GOOD.replace('passphrase_file = "passphrase"\n', "")
    assert "a keystore needs passphrase_file or passphrase_env" in _error(tmp_path, no_secret)
    argv_style = GOOD + 'passphrase = "hunter2"\n'
    assert "[operator]: unknown key 'passphrase'" in _error(tmp_path, argv_style)


def test_load__test_account_on_live_network__refused(tmp_path):
    text = GOOD[:GOOD.index("[operator]")] + "[operator]\ntest_account = 1\n"
    assert load_config(_write(tmp_path, text)).operator.test_account == 1
    live = text.replace('deployment = "dep.json"', 'deployment = "dep.json"\nnetwork = "ethereum:sepolia:node"')
    assert "test_account: only on a local network" in _error(tmp_path, live)


def test_config_error__is_a_user_error():
    assert issubclass(ConfigError, UserError)


CLIENT = """
region = "nl"
budget = "20000000000000000000"
[failover]
dead_after_s = 2.5
[killswitch]
exceptions = ["192.168.1.0/24"]
[account]
keystore = "client.json"
passphrase_env = "WARREN_PASSPHRASE"
"""


def test_client_config__round_trip_and_defaults(tmp_path):
    path = _write(tmp_path, CLIENT, "client.toml")
    cfg = client_config.load_config(path)
    assert (cfg.region, cfg.budget, cfg.max_price) == ("NL", 20 * 10**18, None)
    assert (cfg.keepalive_s, cfg.dead_after_s, cfg.max_latency_ms) == (1.0, 2.5, 2000.0)
    assert cfg.killswitch_exceptions == ("192.168.1.0/24",)
    assert cfg.account == AccountSpec(keystore=tmp_path / "client.json", passphrase_env="WARREN_PASSPHRASE")
    out = tmp_path / "again.toml"
    client_config.write_config(out, cfg)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert client_config.load_config(out) == cfg
    with pytest.raises(ConfigError, match="already exists"):
        client_config.write_config(out, cfg)


@pytest.mark.parametrize("change, expected", [
    (("dead_after_s = 2.5", "dead_after_s = 0.5"), "[failover] dead_after_s: expected at least keepalive_s (1), found 0.5"),
    (('exceptions = ["192.168.1.0/24"]', 'exceptions = ["lan"]'), "[killswitch] exceptions: expected a list of CIDRs, found 'lan'"),
    (('budget = "20000000000000000000"', "budget = -1"), "budget: expected a whole number of token wei >= 0, found -1"),
    (("[failover]", "[fail_over]"), "unknown key fail_over; did you mean 'failover'?"),
])
def test_client_config__bad_value__plain_error(tmp_path, change, expected):
    path = _write(tmp_path, CLIENT.replace(*change), "client.toml")
    with pytest.raises(ConfigError) as info:
        client_config.load_config(path)
    assert expected in str(info.value)
