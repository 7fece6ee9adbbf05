"""Run the host's network tools (`ip`, `nft`, `sysctl`) for the client, optionally in a namespace.

One place decides how a command reaches a namespace (``ip netns exec NAME``; ``None`` is the
caller's own) and how a refusal is reported, so routes and kill switch fail the same way.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

__all__ = ["HostCommandError", "run", "COMMAND_TIMEOUT_S"]

#: A hung `ip`/`nft` must not hang `warren connect`; each finishes in milliseconds normally.
COMMAND_TIMEOUT_S = 15.0


class HostCommandError(RuntimeError):
    """The host refused a network command (our misuse, missing privilege or a missing tool)."""


def run(argv: Sequence[str], *, netns: str | None = None, input: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run ``argv`` (in network namespace ``netns`` if given); return its text output.

    Raises:
        HostCommandError: ``check`` and it exited non-zero, or the tool is missing.
    """
    full = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    try:
        proc = subprocess.run(full, capture_output=True, text=True, input=input,
                              timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostCommandError(f"{' '.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        raise HostCommandError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc
