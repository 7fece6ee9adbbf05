"""`warren node install-service`: the unit text (checked by systemd-analyze verify), refusals."""

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from agents.netlab.world import warren_argv
from agents.node.config import NodeConfig, write_config
from agents.node.systemd import install, unit_text
from agents.wallet import AccountSpec


@pytest.fixture
def node_config(tmp_path):
    data = tmp_path / "data dir"  # a space: ExecStart and ReadWritePaths quote it
    path = tmp_path / "node.toml"
    write_config(path, NodeConfig(region="DE", price_per_gib=1, operator=AccountSpec(test_account=3), data_dir=data))
    return path, data


def _unit(text):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(text)
    return parser


def _install(config, unit_dir, *extra):
    return subprocess.run(warren_argv("node", "install-service", "--config", str(config), "--unit-dir",
                                      str(unit_dir), *extra), capture_output=True, text=True, timeout=60)


def test_install_service__writes_unit__own_user_net_admin_only(node_config, tmp_path):
    config, data = node_config
    result = _install(config, tmp_path / "units")
    assert result.returncode == 0, result.stderr
    unit_path = tmp_path / "units" / "warren-node.service"
    assert f"wrote {unit_path}" in result.stdout
    assert "systemctl enable --now warren-node" in result.stdout and "useradd --system" in result.stdout
    service = _unit(unit_path.read_text())["Service"]
    assert service["User"] == "warren" and service["Restart"] == "on-failure"
    assert service["AmbientCapabilities"] == "CAP_NET_ADMIN CAP_NET_BIND_SERVICE" == service["CapabilityBoundingSet"]
    assert service["Environment"] == f'"HOME={data}"'  # ape and vvm keep folders in $HOME
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == f'"{data}"'
    assert service["ExecStart"].split()[1:4] == ["node", "run", "--config"] and "--log-format json" in service["ExecStart"]
    assert oct(unit_path.stat().st_mode & 0o777) == "0o644"


def test_install_service__existing_unit__refused_without_force(node_config, tmp_path):
    config, _ = node_config
    assert _install(config, tmp_path / "units").returncode == 0
    (tmp_path / "units" / "warren-node.service").write_text("mine\n")
    refused = _install(config, tmp_path / "units")
    assert refused.returncode != 0 and "already exists: pass --force" in refused.stderr
    assert (tmp_path / "units" / "warren-node.service").read_text() == "mine\n"
    assert _install(config, tmp_path / "units", "--force").returncode == 0
    assert "CAP_NET_ADMIN" in (tmp_path / "units" / "warren-node.service").read_text()


def test_unit_text__systemd_analyze_verify__no_complaint(tmp_path):
    program = tmp_path / "bin" / "warren"
    program.parent.mkdir()
    program.write_text(f"#!{sys.executable}\n")
    program.chmod(0o755)
    unit = tmp_path / "warren-node.service"
    unit.write_text(unit_text(program=program, config=tmp_path / "node.toml", data_dir=tmp_path / "data"))
    # systemd-analyze exits 0 on an unknown key or a bad value but names the file and line: any such line fails.
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "warren-node.service" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_install__program_config_or_data_under_tmp__warns_private_tmp_hides_them(tmp_path):
    # the unit's PrivateTmp gives the service an empty /tmp and /var/tmp: nothing there is there for it
    path, steps = install(program=Path("/tmp/tmp.x/w/.venv/bin/warren"), config=Path("/var/tmp/node.toml"),
                          data_dir=Path("/var/lib/warren"), unit_dir=tmp_path / "units")
    assert path == tmp_path / "units" / "warren-node.service" and path.exists()
    warnings = [s for s in steps if s.startswith("# WARNING")]
    assert len(warnings) == 2, steps
    assert "/tmp/tmp.x/w/.venv/bin/warren: the program lives under /tmp, which the service's PrivateTmp hides" \
        in warnings[0] and "install Warren elsewhere" in warnings[0]
    assert "/var/tmp/node.toml: it lives under /var/tmp, which the service's PrivateTmp hides" in warnings[1]
    _, steps = install(program=Path("/opt/warren/bin/warren"), config=Path("/etc/warren/node.toml"),
                       data_dir=Path("/var/lib/warren"), unit_dir=tmp_path / "units", force=True)
    assert not [s for s in steps if "PrivateTmp" in s], steps
