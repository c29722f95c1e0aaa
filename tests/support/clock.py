"""Driving a L{twisted.internet.task.Clock} the way a reactor would.

C{Clock.advance(60)} runs every call due within the minute at the end of
it, with the clock already at +60 s, so a call that reschedules itself or
reads the time sees the wrong moment.  L{advance} stops at each scheduled
call on time instead; the login throttle tests need that to see when each
waiting attempt is answered.
"""

from __future__ import annotations

from twisted.internet.task import Clock

__all__ = ["advance"]


def advance(clock: Clock, seconds: float) -> None:
    """Let C{seconds} pass, stopping at each scheduled call on time."""
    end = clock.seconds() + seconds
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls() if c.getTime() <= end]
        if not due:
            clock.advance(max(0.0, end - clock.seconds()))
            return
        # A hair past the call, so that float rounding cannot leave it unrun.
        clock.advance(max(0.0, min(due) - clock.seconds()) + 1e-9)
