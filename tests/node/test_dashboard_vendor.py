"""The vendored chart library: the committed files are exactly chartist 1.5.0's (SHA-256), served by the
dashboard's static route, and the page loads nothing from elsewhere (it must work offline)."""

import re
import shutil

from starlette.testclient import TestClient

from agents.node.dashboard import make_app
from agents.node.dashboard.vendor import FILES, SHA256, STATIC, VERSION, check


def test_vendored_files__pinned_version__hashes_match():
    assert VERSION == "1.5.0" and set(FILES) == set(SHA256)
    assert check() == []
    assert "Permission is hereby granted, free of charge" in (STATIC / "chartist.LICENSE-MIT").read_text()  # MIT, beside it


def test_check__changed_or_missing_file__named(tmp_path):
    for name in FILES:
        shutil.copyfile(STATIC / name, tmp_path / name)
    (tmp_path / "chartist.umd.js").write_bytes((STATIC / "chartist.umd.js").read_bytes() + b"\n")
    (tmp_path / "chartist.css").unlink()
    problems = check(tmp_path)
    assert len(problems) == 2
    assert problems[0].startswith(f"{tmp_path / 'chartist.umd.js'}: SHA-256 ") and "chartist 1.5.0" in problems[0]
    assert problems[1] == f"{tmp_path / 'chartist.css'}: missing"


def test_page__loads_chartist_from_the_package__nothing_remote(tmp_path):
    client = TestClient(make_app(view=None, token="t" * 43))
    served = client.get("/static/chartist.umd.js")
    assert served.status_code == 200 and served.content == (STATIC / "chartist.umd.js").read_bytes()
    page = client.get("/", headers={"Authorization": "Bearer " + "t" * 43}).text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/static/chartist.umd.js" in sources and "/static/chartist.css" in sources
    assert all(s.startswith("/static/") for s in sources), sources
