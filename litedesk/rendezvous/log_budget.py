"""A budget of log lines a second for events that can come by the thousand.

An accepted C{RegisterPk} is worth a line in the log ("Peer 123456789
registered from 203.0.113.7"): an operator looks for it when a host says it
registered and a viewer says it is not there.  But formatting and writing a
line costs more than the whole registration (twistd's file observer formats
and writes every event unbuffered): a restart that brings 10,000 hosts back
in a second would spend the reactor's time on the log, and a flood of
registrations from many addresses could fill the disk.  So the first
L{LineBudget.per_second} events of each second get their own line and the
rest are counted, the count going out with the next line that is written.
Every registration is still counted in the metrics and stored.

Sans-IO: callers pass the time.
"""

from __future__ import annotations

__all__ = ["LineBudget"]


class LineBudget:
    """At most C{per_second} log lines in any one-second window; the rest counted.

    @ivar per_second: lines allowed in one window.
    """

    __slots__ = ("_left", "_skipped", "_window_start", "per_second")

    def __init__(self, per_second: int = 20) -> None:
        self.per_second = per_second
        self._window_start = float("-inf")
        self._left = 0
        self._skipped = 0

    def take(self, now: float) -> int | None:
        """Spend one line at C{now}, if one is left.

        @return: None when this event gets no line (it is counted); else the
            number of events left without a line since the last one written,
            for the line to report.
        """
        if now - self._window_start >= 1.0 or now < self._window_start:
            # A new window (or a clock stepped back: start one from here).
            self._window_start = now
            self._left = self.per_second
        if self._left <= 0:
            self._skipped += 1
            return None
        self._left -= 1
        skipped, self._skipped = self._skipped, 0
        return skipped
