"""`warren mesh ...`: certificates from the command line, and the whole mesh as processes in netns."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest
from eth_account import Account

from agents.netlab import NatType, can_build_namespaces
from agents.overlay.mesh import GroupDirectory
from agents.overlay.records import MEMBER, RecordValidator
from agents.wireguard.config import encode_key, generate_private_key, public_key
from agents.wireguard.uapi import socket_path

WARREN = [sys.executable, "-m", "agents.cli"]


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _cert(tmp_path, owner, wg_priv, member, ip):
    out = subprocess.run(
        WARREN + ["mesh", "cert", "--owner-key", _write(tmp_path, "owner.key", owner.key.hex()),
                  "--network", "lab", "--wg-public-key", encode_key(public_key(wg_priv)),
                  "--member", member.address, "--ip", ip],
        capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def test_mesh_cert__owner_signed__validates_and_admits_member(tmp_path):
    owner, member = Account.create(), Account.create()
    wg_priv = generate_private_key()
    raw = bytes.fromhex(_cert(tmp_path, owner, wg_priv, member, "10.77.0.9"))
    directory = GroupDirectory(owner.address, "lab")
    rec = RecordValidator(directory).validate(raw, time.time())
    assert (rec.kind, rec.ip, rec.member, rec.wg_key) == (MEMBER, "10.77.0.9", member.address, public_key(wg_priv))
    assert directory.operator_of(rec.node_id) == member.address
    other = GroupDirectory(Account.create().address, "lab")  # another group's owner: refused
    with pytest.raises(Exception, match="mis-signed"):
        RecordValidator(other).validate(raw, time.time())


def _read_line(proc, needle: str, timeout: float) -> str:
    """Read the process's stdout until a line contains ``needle`` (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if needle in line:
                    return line
    raise AssertionError(f"no {needle!r} in output: {buf.decode(errors='replace')!r}")


@pytest.mark.netns
@pytest.mark.skipif(not can_build_namespaces(), reason="network namespaces need root (CI runs as root)")
def test_mesh_up__processes_behind_nats__ping_by_virtual_ip(lab, internet, tmp_path):
    public_host, nat_host = internet
    gw, gw_ip = public_host("gw")
    a_ns, _ = nat_host("a", NatType.PORT_RESTRICTED, "west")
    b_ns, _ = nat_host("b", NatType.FULL_CONE, "east")
    owner = Account.create()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    gw_proc = gw.spawn(WARREN + ["mesh", "gateway", "--network", "lab", "--owner", owner.address,
                                 "--listen", "0.0.0.0:51820", "--relay"], stdout=subprocess.PIPE, env=env)
    _read_line(gw_proc, "mesh gateway", 30)
    procs = {}
    for name, ns, ip, peers in (("b", b_ns, "10.77.0.2", []), ("a", a_ns, "10.77.0.1", ["10.77.0.2"])):
        wg_priv, member = generate_private_key(), Account.create()
        cert = _cert(tmp_path, owner, wg_priv, member, ip)
        args = ["mesh", "up", "--network", "lab", "--owner", owner.address, "--gateway", f"{gw_ip}:51820",
                "--wg-key", _write(tmp_path, f"{name}.wg", encode_key(wg_priv)),
                "--member-key", _write(tmp_path, f"{name}.member", member.key.hex()),
                "--cert", _write(tmp_path, f"{name}.cert", cert), "--ifname", lab.unique_ifname(f"wm{name}")]
        lab.track_file(socket_path(args[-1]))  # its UAPI socket, should the process die uncleanly
        for vip in peers:
            args += ["--peer", vip]
        procs[name] = ns.spawn(WARREN + args, stdout=subprocess.PIPE, env=env)
        assert "publish failed" not in _read_line(procs[name], "public address", 30)
    assert _read_line(procs["a"], "10.77.0.2:", 60).endswith("direct")
    assert a_ns.ping("10.77.0.2")
    assert lab.wait_for(lambda: b_ns.ping("10.77.0.1", count=1), 15.0)
