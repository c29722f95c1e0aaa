"""Undoing what SVT-AV1 does to a process run as root.

The tests make AV1 streams with PyAV's only AV1 encoder here, SVT-AV1.  Run
as root (CI, and this project's test machines), its encoder switches every
thread of the process, the caller's included, to SCHED_FIFO at priority 99
when it opens, and leaves the caller there after it closes: a trial worker
that once encoded AV1 then ran every later test in real time, and on two
cores starved the host agents, Xvfb and the other worker until tests timed
out.  L{drop_realtime} puts every thread back on the normal policy.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["drop_realtime"]


def drop_realtime() -> int:
    """Move every thread of this process that runs SCHED_FIFO/RR back to SCHED_OTHER.

    @return: how many threads were moved.
    """
    moved = 0
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        with contextlib.suppress(OSError):  # the thread may have ended meanwhile
            if os.sched_getscheduler(tid) in (os.SCHED_FIFO, os.SCHED_RR):
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                moved += 1
    return moved
