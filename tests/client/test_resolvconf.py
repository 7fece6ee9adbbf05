"""ResolvConf: backup, symlinks, idempotence, restore by a later process, `ip netns exec` view."""

import json
import os
import shutil
import stat

import pytest

from agents.client.resolvconf import BACKUP_NAME, MARKER, ResolvConf, ResolvConfError
from agents.netlab import Lab, can_build_namespaces

ORIGINAL = b"# from the DHCP client\nnameserver 192.168.1.1\nsearch home.lan\n"


@pytest.fixture
def resolv(tmp_path):
    path = tmp_path / "etc" / "resolv.conf"
    path.parent.mkdir()
    path.write_bytes(ORIGINAL)
    os.chmod(path, 0o644)
    return path


def _servers(path) -> list[str]:
    return [line.split()[1] for line in path.read_text().splitlines()
            if line.startswith("nameserver")]


def test_point_to__regular_file__names_only_tunnel_resolvers(resolv, tmp_path):
    conf = ResolvConf(str(resolv), str(tmp_path / "state"))

    conf.point_to(["10.77.0.1", "fd77::1"])

    text = resolv.read_text()
    assert text.splitlines()[0] == MARKER
    assert _servers(resolv) == ["10.77.0.1", "fd77::1"]
    assert "home.lan" not in text and "192.168.1.1" not in text
    backup = tmp_path / "state" / BACKUP_NAME
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert conf.pointed()


def test_restore__after_point_to__original_bytes_and_mode_back(resolv, tmp_path):
    os.chmod(resolv, 0o640)
    conf = ResolvConf(str(resolv), str(tmp_path / "state"))
    conf.point_to(["10.77.0.1"])

    assert conf.restore() is True

    assert resolv.read_bytes() == ORIGINAL
    assert stat.S_IMODE(resolv.stat().st_mode) == 0o640
    assert not conf.pointed()
    assert conf.restore() is False  # idempotent
    assert resolv.read_bytes() == ORIGINAL


def test_point_to__twice__keeps_first_backup(resolv, tmp_path):
    conf = ResolvConf(str(resolv), str(tmp_path / "state"))
    conf.point_to(["10.77.0.1"])
    conf.point_to(["10.88.0.1"])  # failover to another node's resolver

    assert _servers(resolv) == ["10.88.0.1"]
    conf.restore()
    assert resolv.read_bytes() == ORIGINAL


def test_restore__by_a_new_object__uses_backup_file(resolv, tmp_path):
    ResolvConf(str(resolv), str(tmp_path / "state")).point_to(["10.77.0.1"])  # "crashed"

    later = ResolvConf(str(resolv), str(tmp_path / "state"))
    assert later.pointed()
    assert later.restore() is True
    assert resolv.read_bytes() == ORIGINAL


def test_point_to__symlink__replaced_by_file_and_link_restored(tmp_path):
    target = tmp_path / "run" / "stub-resolv.conf"
    target.parent.mkdir()
    target.write_bytes(b"nameserver 127.0.0.53\n")
    link = tmp_path / "resolv.conf"
    link.symlink_to(target)
    conf = ResolvConf(str(link), str(tmp_path / "state"))

    conf.point_to(["10.77.0.1"])

    assert not link.is_symlink()
    assert _servers(link) == ["10.77.0.1"]
    assert target.read_bytes() == b"nameserver 127.0.0.53\n"  # the other program's file untouched
    conf.restore()
    assert link.is_symlink() and os.readlink(link) == str(target)


def test_point_to__absent_file__restore_removes_it(tmp_path):
    path = tmp_path / "resolv.conf"
    conf = ResolvConf(str(path), str(tmp_path / "state"))

    conf.point_to(["10.77.0.1"])
    assert _servers(path) == ["10.77.0.1"]
    conf.restore()

    assert not path.exists()


def test_restore__file_rewritten_by_another_program__newer_file_kept(resolv, tmp_path):
    conf = ResolvConf(str(resolv), str(tmp_path / "state"))
    conf.point_to(["10.77.0.1"])
    resolv.write_bytes(b"nameserver 192.168.7.1\n")  # NetworkManager wrote a new lease meanwhile

    assert conf.restore() is False

    assert resolv.read_bytes() == b"nameserver 192.168.7.1\n"
    assert not conf.pointed()


@pytest.mark.parametrize("addresses", [[], ["dns.example"], ["10.77.0.1; rm"]])
def test_point_to__bad_addresses__refused_and_nothing_changed(resolv, tmp_path, addresses):
    conf = ResolvConf(str(resolv), str(tmp_path / "state"))

    with pytest.raises(ResolvConfError):
        conf.point_to(addresses)

    assert resolv.read_bytes() == ORIGINAL
    assert not conf.pointed()


def test_point_to__more_than_three__first_three_used(resolv, tmp_path):
    conf = ResolvConf(str(resolv), str(tmp_path / "state"))
    conf.point_to(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"])
    assert _servers(resolv) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_restore__corrupt_backup__clear_error(resolv, tmp_path):
    conf = ResolvConf(str(resolv), str(tmp_path / "state"))
    conf.point_to(["10.77.0.1"])
    with open(conf.backup_path, "w") as f:
        f.write("{not json")
    with pytest.raises(ResolvConfError, match="unreadable backup"):
        conf.restore()


@pytest.mark.netns
@pytest.mark.skipif(not can_build_namespaces(), reason="needs root for network namespaces")
def test_point_to__netns_resolv_conf__seen_inside_ip_netns_exec(tmp_path):
    real = open("/etc/resolv.conf", "rb").read() if os.path.exists("/etc/resolv.conf") else None
    with Lab("h4rc") as lab:
        ns = lab.add_host("client")
        folder = f"/etc/netns/{ns.name}"
        os.makedirs(folder)
        lab.defer(lambda: shutil.rmtree(folder, ignore_errors=True))
        path = os.path.join(folder, "resolv.conf")
        with open(path, "wb") as f:
            f.write(ORIGINAL)
        conf = ResolvConf(path, str(tmp_path / "state"))

        conf.point_to(["10.77.0.1"])
        inside = ns.run(["cat", "/etc/resolv.conf"]).stdout.decode()
        assert "nameserver 10.77.0.1" in inside and "192.168.1.1" not in inside
        conf.restore()
        assert ns.run(["cat", "/etc/resolv.conf"]).stdout == ORIGINAL
        assert json.dumps(os.listdir(folder)) == '["resolv.conf"]'  # no temporary left behind
    assert not os.path.exists(folder)
    now = open("/etc/resolv.conf", "rb").read() if os.path.exists("/etc/resolv.conf") else None
    assert now == real  # the machine's own file was never touched
