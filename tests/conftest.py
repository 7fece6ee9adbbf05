"""Session-wide test setup shared by every part of Warren's suite."""

import os
import sys
from pathlib import Path

# The contract fixtures (tests/contract_fixtures.py), defined once for the whole suite.
pytest_plugins = ["contract_fixtures"]

# ape-foundry finds anvil on PATH; the Makefile links it into the virtual environment's bin folder,
# which is not on PATH when someone runs `.venv/bin/ape test` without activating the venv.
_VENV_BIN = str(Path(sys.executable).parent)
if _VENV_BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _VENV_BIN + os.pathsep + os.environ.get("PATH", "")
