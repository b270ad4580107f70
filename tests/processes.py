"""Other processes seen through Linux's /proc: a run's children, whether they still live,
what they hold open (the orphan test and `benchmarks/hostile.py`)."""

from __future__ import annotations

import os
from pathlib import Path


def _state_and_parent(stat: Path) -> tuple[str, int] | None:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def children(pid: int) -> set[int]:
    """Live processes whose parent is `pid` (zombies count as gone)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        seen = _state_and_parent(stat)
        if seen is not None and seen[1] == pid and seen[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (zombies count as gone)."""
    found = set()
    for pid in pids:
        seen = _state_and_parent(Path(f"/proc/{pid}/stat"))
        if seen is not None and seen[0] != "Z":
            found.add(pid)
    return found


def open_files(pid: int) -> list[str]:
    """What a process's descriptors point at (files by path, sockets as socket:[inode])."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            found.append(os.readlink(fd))
        except OSError:
            continue
    return found
