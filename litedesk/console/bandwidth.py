"""The dashboard's bandwidth: the relay's byte count sampled every 10 s.

The relay table knows only a running total (C{RelayTable.bytes_relayed}:
finished pairs plus live ones), so "now" and "over 24 h" need history:
L{BandwidthSampler} (sans-IO, times passed in) keeps the rate of the last
interval and per-minute totals in a ring of 1440 minutes, a fixed bound
whatever the traffic; L{BandwidthService} feeds it from the reactor and
stops with the server.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from twisted.application.internet import TimerService
from twisted.logger import Logger

if TYPE_CHECKING:
    from litedesk.ops.context import OpsContext

__all__ = ["MINUTES_KEPT", "SAMPLE_SECONDS", "BandwidthSampler", "BandwidthService"]

SAMPLE_SECONDS = 10.0
#: 24 hours of per-minute totals.
MINUTES_KEPT = 24 * 60

_log = Logger()


class BandwidthSampler:
    """Relayed bytes per minute over the last 24 h, and the latest rate."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None
        #: [minute number, bytes in it], oldest first.
        self._minutes: deque[list[int]] = deque(maxlen=MINUTES_KEPT)
        #: Bytes per second over the last interval.
        self.rate = 0.0
        #: When the last sample was taken (None before the first).
        self.sampled_at: float | None = None

    def sample(self, now: float, total: int) -> None:
        """The relay's running byte total at C{now}."""
        last, self._last = self._last, (now, total)
        self.sampled_at = now
        if last is None:
            return
        then, before = last
        # The total only grows; a smaller one (a new relay table) starts over.
        delta = total - before if total >= before else total
        self.rate = delta / (now - then) if now > then else 0.0
        minute = int(now // 60)
        if self._minutes and self._minutes[-1][0] == minute:
            self._minutes[-1][1] += delta
        else:
            self._minutes.append([minute, delta])

    def total(self, now: float, seconds: float = MINUTES_KEPT * 60) -> int:
        """Bytes relayed in the last C{seconds} (at minute resolution)."""
        first = int(now // 60) - int(seconds // 60)
        return sum(b for m, b in self._minutes if m > first)

    def hourly(self, now: float, hours: int = 24) -> list[int]:
        """Bytes per hour, oldest first, the last entry the current hour."""
        out = [0] * hours
        current = int(now // 60)
        for minute, count in self._minutes:
            age = (current - minute) // 60
            if 0 <= age < hours:
                out[hours - 1 - age] += count
        return out


class BandwidthService(TimerService):
    """Samples C{ctx.top.relay}'s table every L{SAMPLE_SECONDS} (none without a relay)."""

    def __init__(self, ctx: OpsContext, sampler: BandwidthSampler | None = None) -> None:
        self.ctx = ctx
        self.sampler = sampler if sampler is not None else BandwidthSampler()
        super().__init__(SAMPLE_SECONDS, self.tick)  # type: ignore[no-untyped-call]
        self.clock = ctx.reactor

    def tick(self) -> None:
        relay = self.ctx.top.relay
        if relay is None:
            return
        try:
            total = relay.relay.table.bytes_relayed()
        except Exception:
            # A failed sample must not stop the timer: the next one may work.
            _log.failure("Could not read the relay's byte count")
            return
        self.sampler.sample(float(self.ctx.reactor.seconds()), total)
