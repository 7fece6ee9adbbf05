"""The charting library the dashboard serves from its own static folder (no CDN: the page works offline).

Chartist 1.5.0 (MIT, chartist-js/chartist) draws the earnings-per-day chart. Chosen over the other
small libraries on npm for what this page needs, one stacked bar chart:

* it draws SVG, so every bar is an element of the page (``line.ct-bar``) with its value in an
  attribute: the browser test counts and reads them; uPlot (1.6.32, ~51 KB) draws on a canvas, where
  a test sees pixels only;
* stacked bars are one option (``stackBars``); the UMD build is ~38 KB and its CSS ~9 KB, with no
  dependencies; frappe-charts (1.6.2) is ~69 KB and its maintained line is a 2.0 release candidate.

The built files are committed (CI needs no network for them); ``make vendor-chartist`` (this module
run as ``python -m agents.node.dashboard.vendor``) fetches exactly :data:`VERSION` from npm again
(``npm pack``, which checks the registry's integrity hash), copies :data:`FILES` into the static
folder and checks their SHA-256 against :data:`SHA256` (tests/node/test_dashboard_vendor.py checks
the committed files the same way). A new version means new hashes here, on purpose.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

__all__ = ["FILES", "PACKAGE", "SHA256", "STATIC", "VERSION", "check", "fetch"]

PACKAGE = "chartist"
VERSION = "1.5.0"
STATIC = Path(__file__).with_name("static")
#: Served name -> the file in the npm package.
FILES = {
    "chartist.umd.js": "package/dist/index.umd.js",
    "chartist.css": "package/dist/index.css",
    "chartist.LICENSE-MIT": "package/LICENSE-MIT",
}
#: SHA-256 of each served file, as npm serves chartist 1.5.0.
SHA256 = {
    "chartist.umd.js": "944597015852d8a65defe451a37202e8232938e98ac2215f08bd42a55d573e9d",
    "chartist.css": "43e13edcdf964ec39b10b90b7d9bb34a7bc526705893f76520b540a6b178e28f",
    "chartist.LICENSE-MIT": "2274fb43fd102672a092a0b4eb3c1352279eac633c2f4607de4722a22461a0d2",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(folder: Path = STATIC) -> list[str]:
    """What is wrong with the vendored files in ``folder`` (missing, or another SHA-256); empty if nothing."""
    problems = []
    for name, want in SHA256.items():
        path = folder / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif (got := _sha256(path)) != want:
            problems.append(f"{path}: SHA-256 {got}, expected {want} ({PACKAGE} {VERSION})")
    return problems


def fetch(folder: Path = STATIC) -> None:
    """``npm pack PACKAGE@VERSION``, copy :data:`FILES` into ``folder``, check their hashes.

    Raises:
        RuntimeError: npm failed, or a file's hash is not the pinned one (nothing is replaced then).
    """
    with tempfile.TemporaryDirectory(prefix="warren-vendor-") as tmp:
        packed = subprocess.run(["npm", "pack", "--silent", f"{PACKAGE}@{VERSION}", "--pack-destination", tmp],
                                capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        if packed.returncode != 0:
            raise RuntimeError(f"npm pack {PACKAGE}@{VERSION} failed: {packed.stderr.strip()}")
        with tarfile.open(Path(tmp) / packed.stdout.strip().splitlines()[-1]) as archive:
            archive.extractall(Path(tmp) / "x", members=[archive.getmember(m) for m in FILES.values()],
                               filter="data")
        staged = Path(tmp) / "staged"
        staged.mkdir()
        for name, member in FILES.items():
            shutil.copyfile(Path(tmp) / "x" / member, staged / name)
        problems = check(staged)
        if problems:
            raise RuntimeError("; ".join(problems))
        for name in FILES:
            shutil.copyfile(staged / name, folder / name)


if __name__ == "__main__":
    try:
        fetch()
    except RuntimeError as exc:
        sys.exit(f"vendor: {exc}")
    print(f"{PACKAGE} {VERSION}: {', '.join(FILES)} in {STATIC}, SHA-256 checked")
