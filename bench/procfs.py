"""A process's CPU time and memory from /proc, for the benchmarks that run
real processes (session.py, transfer.py, pg_store.py, cluster_bus.py,
viewer_window.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["cpu_seconds", "family_cpu_seconds", "rss_bytes"]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of C{pid} (all its threads), in seconds; 0 once gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def family_cpu_seconds(parent: int) -> float:
    """CPU time of C{parent} and of its direct children (a PostgreSQL
    postmaster and its backends), in seconds."""
    total = cpu_seconds(parent)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent:
                total += cpu_seconds(int(entry.name))
    return total


def rss_bytes(pid: int) -> int | None:
    """VmRSS of C{pid}, or None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) * 1024 if m else None
