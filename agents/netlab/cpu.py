"""CPU time of a process tree, from /proc: what the benchmarks charge to each side of a transfer."""

from __future__ import annotations

import os

__all__ = ["CPU_PARTS", "tree_cpu_s"]

#: Fields of /proc/<pid>/stat after the command name, counted from its state (man 5 proc): utime,
#: stime, and cutime/cstime (children waited for, e.g. each `nft` the node runs).
_UTIME, _STIME, _CUTIME, _CSTIME = 11, 12, 13, 14
#: The parts a tree's CPU time is split into.
CPU_PARTS = ("user", "sys", "children")


def _stat(pid: int) -> tuple[int, tuple[int, int, int]]:
    """(ppid, (utime, stime, cutime + cstime) ticks) of ``pid`` from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        f = handle.read().rsplit(")", 1)[1].split()
    return int(f[1]), (int(f[_UTIME]), int(f[_STIME]), int(f[_CUTIME]) + int(f[_CSTIME]))


def tree_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid`` and its living descendants (threads included), by :data:`CPU_PARTS`:
    user, sys, and the children they have reaped (short-lived helpers such as `nft`)."""
    parents, ticks = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)], ticks[int(entry)] = _stat(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier += children
    hz = os.sysconf("SC_CLK_TCK")
    return {part: sum(ticks[p][i] for p in tree if p in ticks) / hz for i, part in enumerate(CPU_PARTS)}
