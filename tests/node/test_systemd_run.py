"""The unit `warren node install-service` writes, run by a real systemd (PID 1 of its own namespaces).

tests/systemd_boot.py boots Debian's systemd inside a lab network namespace with only this unit;
the node then registers on a plain anvil (reached through the lab's RPC bridge) and serves. The
test sees it run as its own user with only CAP_NET_ADMIN and CAP_NET_BIND_SERVICE, kills it with
SIGKILL and sees systemd start it again (Restart=on-failure), stops it, and removes everything
(systemd and its namespaces, its cgroup, the lab, anvil, the files in /var/lib).
"""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agents.netlab import Lab, RpcBridge
from agents.netlab.warren_net import PRICE_PER_GIB, STAKE, deploy_chain, wait_for
from agents.netlab.world import start_anvil, warren_argv
from agents.node.config import NodeConfig, write_config
from agents.node.systemd import _interpreters, under_private_tmp
from agents.unixctl import NotRunning, request
from agents.wallet import AccountSpec
from agents.wireguard.config import encode_key, generate_private_key

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from systemd_boot import SystemdBoot, cgroup2_root  # noqa: E402

pytestmark = [
    pytest.mark.netns, pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="boots systemd in namespaces: needs root"),
    pytest.mark.skipif(not Path("/lib/systemd/systemd").exists(), reason="systemd is not installed (make install)"),
]

#: CAP_NET_ADMIN (12) and CAP_NET_BIND_SERVICE (10), as /proc/PID/status prints a capability set.
NODE_CAPS = f"{(1 << 12) | (1 << 10):016x}"
UNIT = "warren-node"


def _free_uid() -> int:
    for uid in range(64990, 65500):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise AssertionError("no free uid in 64990-65499")


def _status(data: Path) -> dict | None:
    try:
        return request(data / "node.sock", {"command": "status"}, timeout=5)
    except (NotRunning, OSError, ValueError):
        return None


def _uids_running(uid: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and proc.stat().st_uid == uid:
                pids.append(int(proc.name))
        except FileNotFoundError:
            pass
    return pids


def test_unit__under_systemd__own_user_net_caps_restarts_on_kill(tmp_path):
    program = Path(sys.executable).with_name("warren")
    # Inside systemd's mount namespace every folder on the way that the service user cannot enter
    # (/root's 0700 over pyenv's Python, the 0700 `mktemp -d` folder over a fresh clone) gets a 0755
    # stand-in showing only the entries on the way (see SystemdBoot): the real paths stay.
    reach = (program, *_interpreters(program))
    # PrivateTmp gives the service an empty /tmp: a clone there is not there for it. install-service
    # warns about that (an operator installs elsewhere); the test's drop-in binds the clone's folder
    # into the service's /tmp, read-only at its real path, and leaves the rest of the unit as written.
    hidden = under_private_tmp(list(reach))
    tmp_binds = sorted({str(folder / path.relative_to(folder).parts[0]) for path, folder in hidden})
    uid = _free_uid()
    root = Path(tempfile.mkdtemp(prefix="warren-systemd-test-", dir="/var/lib"))  # not /tmp: PrivateTmp hides it
    root.chmod(0o755)
    cgroups_before = {p.name for p in cgroup2_root().iterdir() if p.is_dir()}
    try:
        with start_anvil() as anvil, Lab(prefix="wsd") as lab:
            internet = lab.add_internet("198.51.100.0/24")
            host = lab.add_host("svc")
            address = internet.attach(host)
            lab.defer(RpcBridge(host.name, ("127.0.0.1", anvil.port)).close)
            chain = deploy_chain(anvil.url, root)
            data = root / "data"
            data.mkdir()
            key = data / "wg.key"
            key.write_text(encode_key(generate_private_key()) + "\n")
            key.chmod(0o600)
            config_path = root / "node.toml"
            write_config(config_path, NodeConfig(
                operator=AccountSpec(test_account=3), region="NL", stake=STAKE, data_dir=data, interface="wrnsd0",
                listen_port=51820, public_endpoint=(address, 51820), bootstrap=((address, 51820),),
                rpc="http://127.0.0.1:8545", deployment=chain.deployment, uplink="eth0", dns_upstream=(address, 53),
                price_per_gib=PRICE_PER_GIB, settlement_threshold=10**30))
            installed = subprocess.run(warren_argv("node", "install-service", "--config", str(config_path),
                                                   "--unit-dir", str(root / "units")),
                                       capture_output=True, text=True, timeout=60)
            assert installed.returncode == 0, installed.stderr
            assert ("which the service's PrivateTmp hides" in installed.stdout) == bool(hidden), installed.stdout
            unit = (root / "units" / f"{UNIT}.service").read_text()
            for path in (root, *root.rglob("*")):  # what the printed `chown -R warren:warren` step does
                os.chown(path, uid, uid)
            log = root / "node.log"
            dropin = f"[Service]\nStandardOutput=append:{log}\nStandardError=inherit\n"  # no journald in here
            dropin += "".join(f'BindReadOnlyPaths="{path}"\n' for path in tmp_binds)
            units = {f"{UNIT}.service": unit, f"{UNIT}.service.d/test-log.conf": dropin}
            with SystemdBoot(host.name, units, users=(("warren", uid),), reach=reach) as systemd:
                def show():
                    return systemd.show(UNIT, "ActiveState", "SubState", "MainPID", "NRestarts", "Result",
                                        "ExecMainStatus")  # 203: the program was not there for it

                def node_log():
                    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"

                systemd.systemctl("start", UNIT)
                try:
                    status = wait_for(lambda: _status(data), 90, 0.5, "the node under systemd to answer")
                except AssertionError:
                    raise AssertionError(f"{show()}\n{node_log()}") from None
                assert len(status["node_id"]) == 64 and status["uptime_s"] >= 0, status
                first = show()
                assert first["ActiveState"] == "active" and first["NRestarts"] == "0", first
                pid = int(first["MainPID"])
                proc = systemd.proc_status(pid)
                assert proc["Uid"].split() == [str(uid)] * 4 and proc["Gid"].split() == [str(uid)] * 4, proc
                caps = {k: proc[k] for k in ("CapEff", "CapPrm", "CapAmb", "CapBnd")}
                assert caps == dict.fromkeys(caps, NODE_CAPS), caps
                assert proc["NoNewPrivs"] == "1", proc
                assert proc["CapInh"] == NODE_CAPS  # an ambient capability is also inheritable
                cmdline = systemd.run("cat", f"/proc/{pid}/cmdline").stdout.split("\0")
                assert str(program) in cmdline, cmdline  # the program at its real path, wherever the clone is

                systemd.run("kill", "-KILL", str(pid))  # a crash: Restart=on-failure, after RestartSec=5
                restarted = wait_for(lambda: (s := show())["NRestarts"] == "1" and s["ActiveState"] == "active"
                                     and s["MainPID"] not in ("0", str(pid)) and s, 60, 0.5, "systemd's restart")
                assert wait_for(lambda: _status(data), 90, 0.5, "the restarted node to answer"), node_log()
                again = systemd.proc_status(int(restarted["MainPID"]))
                assert again["Uid"].split()[0] == str(uid) and again["CapEff"] == NODE_CAPS, again

                systemd.systemctl("stop", UNIT, timeout=120)
                stopped = show()
                assert stopped["ActiveState"] == "inactive" and stopped["MainPID"] == "0", stopped
                assert "stopping: ending sessions" in node_log()
                assert _status(data) is None
            assert _uids_running(uid) == []  # nothing of the service outlives its systemd
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert {p.name for p in cgroup2_root().iterdir() if p.is_dir()} <= cgroups_before
    assert not root.exists()
