"""Stopping the real processes the end-to-end and lab tests start."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from typing import Any


def stop_all(procs: Iterable[subprocess.Popen[Any]], timeout: float = 10.0) -> None:
    """SIGTERM every live process first (so they stop in parallel), then wait,
    killing any that does not exit within C{timeout}."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
