"""`warren voucher` commands that need no chain: setup and list (deposit/redeem: test_prover_agent).

`agents.cli.main` gathers these through `add_commands`; they are mounted on a bare parser here.
"""

import os

import argparse

from agents.prover.cli import add_commands
from agents.prover.notes import NoteStore
from zk.keys import load_keys


def main(argv):
    """`warren` with only the voucher commands (other parts' modules are not needed here)."""
    parser = argparse.ArgumentParser(prog="warren")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_setup__writes_loadable_dev_keys(tmp_path, capsys):
    assert main(["voucher", "setup", "--depth", "1", "--out", str(tmp_path / "k")]) == 0
    pk, vk = load_keys(tmp_path / "k")
    assert pk.vk == vk and len(vk.ic) == 4
    assert "depth 1" in capsys.readouterr().out


def test_setup__seed__reproducible_keys(tmp_path):
    for name in ("a", "b"):
        assert main(["voucher", "setup", "--depth", "1", "--seed", "warren-dev", "--out", str(tmp_path / name)]) == 0
    assert load_keys(tmp_path / "a")[1] == load_keys(tmp_path / "b")[1]
    assert main(["voucher", "setup", "--depth", "1", "--out", str(tmp_path / "c")]) == 0
    assert load_keys(tmp_path / "c")[1] != load_keys(tmp_path / "a")[1]


def test_list__shows_notes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich sizes tables to the terminal
    store = NoteStore(tmp_path / "notes.json")
    store.add("0x" + "ab" * 20, 10**19)
    assert main(["voucher", "list", "--notes", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert "not deposited" in out and "10000000000000000000" in out


def test_list__world_readable_notes__refused_with_exit_1(tmp_path, capsys):
    store = NoteStore(tmp_path / "notes.json")
    store.add("0x" + "ab" * 20, 10**19)
    os.chmod(store.path, 0o640)
    assert main(["voucher", "list", "--notes", str(store.path)]) == 1
    assert "readable by others" in capsys.readouterr().err
