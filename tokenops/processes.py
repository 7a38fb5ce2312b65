"""Processes by pid: whether one still runs (lock and owner files name their pid), and the CPU
time some have used (the benchmarks report CPU per call, which a busy machine disturbs less than
wall-clock rates)."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def children(pid: int) -> list[int]:
    """The direct children of a running process (Linux)."""
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) the running processes `pids` have used so far (Linux)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")
