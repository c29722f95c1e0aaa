# -*- test-case-name: tests.test_viewer_files_window -*-
"""The Files window's progress figures and status line, without Tk.

L{TransferMeter} turns the file client's progress events into the two
bars' percentages and a status line with the speed; the time comes from an
injected C{IReactorTime}, so the speed is tested on a C{Clock}.
L{RunSummary} counts what a run of several selected items did and says it
in one line ("2 copied, 1 skipped: exists (tick Overwrite existing)").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.interfaces import IReactorTime

from litedesk.viewer.file_listing import fmt_size

#: The speed shown is over about this many seconds, so it neither jumps with
#: every block nor lags a change by long.
RATE_WINDOW = 1.0


class Progress(Protocol):
    """What the file client reports (litedesk.files.client's ProgressEvent)."""

    @property
    def name(self) -> str: ...
    @property
    def file_done(self) -> int: ...
    @property
    def file_size(self) -> int: ...
    @property
    def total_done(self) -> int: ...
    @property
    def total_size(self) -> int: ...


def percent(done: int, size: int) -> float:
    """C{done} of C{size} in percent, 0-100 (an empty file is done at once)."""
    if size <= 0:
        return 100.0 if done >= 0 else 0.0
    return max(0.0, min(100.0, 100.0 * done / size))


def fmt_speed(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e6:.1f} MB/s"


class TransferMeter:
    """The current transfer's bars and speed."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.verb = ""
        self.name = ""
        self.file_done = self.file_size = self.total_done = self.total_size = 0
        self.rate = 0.0
        self._started = 0.0
        self._sample: tuple[float, int] | None = None

    def start(self, upload: bool, name: str) -> None:
        """A new item (file or folder) starts: bars at 0, no speed yet."""
        self.verb = "Uploading" if upload else "Downloading"
        self.name = name
        self.file_done = self.file_size = self.total_done = self.total_size = 0
        self.rate = 0.0
        self._started = self.clock.seconds()
        self._sample = (self._started, 0)

    def update(self, ev: Progress) -> None:
        self.name = ev.name or self.name
        self.file_done, self.file_size = ev.file_done, ev.file_size
        self.total_done, self.total_size = ev.total_done, ev.total_size
        now = self.clock.seconds()
        prev = self._sample
        if prev is None:
            self._sample = (now, ev.total_done)
            return
        dt = now - prev[0]
        if dt >= RATE_WINDOW:
            self.rate = max(0.0, (ev.total_done - prev[1]) / dt)
            self._sample = (now, ev.total_done)
        elif self.rate == 0.0 and now - self._started > 0:
            # Before the first full window: the average so far.
            self.rate = max(0.0, ev.total_done / (now - self._started))

    @property
    def file_percent(self) -> float:
        return percent(self.file_done, self.file_size)

    @property
    def total_percent(self) -> float:
        return percent(self.total_done, self.total_size)

    def status_text(self) -> str:
        """C{"Uploading big.bin: 3.1 MB of 10.0 MB, 12.3 MB/s"}."""
        return (
            f"{self.verb} {self.name}: {fmt_size(self.file_done)} of "
            f"{fmt_size(self.file_size)}, {fmt_speed(self.rate)}"
        )


@dataclass
class RunSummary:
    """What the items of one Upload or Download press came to."""

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    cancelled: bool = False
    resumed: int = 0  # bytes that partial files already held

    def text(self) -> str:
        parts: list[str] = []
        if self.copied:
            resumed = f" (resumed after {fmt_size(self.resumed)})" if self.resumed else ""
            parts.append(f"{len(self.copied)} copied{resumed}")
        if self.skipped:
            names = ", ".join(self.skipped[:3]) + (" …" if len(self.skipped) > 3 else "")
            parts.append(f"{len(self.skipped)} skipped: exists ({names}; tick Overwrite existing)")
        if self.failed:
            name, reason = self.failed[0]
            parts.append(f"{len(self.failed)} failed: {name}: {reason}")
        if self.cancelled:
            parts.append("cancelled (the same action again resumes)")
        return "; ".join(parts) or "nothing to copy"
