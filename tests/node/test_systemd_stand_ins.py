"""tests/systemd_boot.py's stand-ins: which closed folders on the way to a path get one, and with what."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from systemd_boot import stand_ins  # noqa: E402


def test_stand_ins__closed_folders_deepest_first__only_entries_on_the_way(tmp_path):
    top = tmp_path / "top"  # closed, like `mktemp -d`
    inner = top / "open" / "closed"
    (inner / "bin").mkdir(parents=True)
    (top / "other").mkdir()
    program = inner / "bin" / "warren"
    program.write_text("")
    python = tmp_path / "py" / "python3"  # reached through a symlink in the closed folder
    python.parent.mkdir()
    python.write_text("")
    (inner / "bin" / "python3").symlink_to(python)
    for folder, mode in ((tmp_path, 0o755), (top, 0o700), (top / "open", 0o755), (inner, 0o700),
                         (tmp_path / "py", 0o755)):
        folder.chmod(mode)
    open_parents = all(os.stat(p).st_mode & 0o001 for p in tmp_path.parents if p != Path("/"))
    found = stand_ins([program, inner / "bin" / "python3"])
    ours = [(f, e) for f, e in found if f.is_relative_to(tmp_path)]
    assert ours == [(inner.resolve(), ["bin"]), (top.resolve(), ["open"])]  # not "other"
    if open_parents:
        assert found == ours
