"""Bandwidth limits as hbbr 1.1.17 applies them, and the early-data budget, without any I/O.

hbbr gives every pair one limiter shared by both directions (C{SINGLE_BANDWIDTH})
and all pairs one global limiter (C{TOTAL_BANDWIDTH}).  A pair is throttled to
C{LIMIT_SPEED} when a blacklisted address takes part in it, or when, after
C{DOWNGRADE_START_CHECK} seconds, its average rate exceeds
C{SINGLE_BANDWIDTH * DOWNGRADE_THRESHOLD}.  Rates are in "Mb/s" with
Mb = 1024 * 1024 bits, so one Mb/s is 131,072 bytes per second; 0 means no limit.

Everything here takes the current time as an argument (C{now}, seconds as a
float), so tests drive it with C{task.Clock().seconds()} and the relay with
C{reactor.seconds()}.  The relay asks L{PairLimiter.consume} how long the
reading side must pause after it forwarded a chunk; the buckets run into debt
rather than refusing, because a chunk that has been read is always forwarded.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

BYTES_PER_MBIT = 1024 * 1024 // 8

H = TypeVar("H", bound=Hashable)

# A bucket holds at most this many seconds' worth of tokens (and at least
# MIN_BURST bytes), so a quiet pair cannot burst far above its rate.
BURST_SECONDS = 0.05
MIN_BURST = 64 * 1024


def mbps_to_bytes(mbps: float) -> float:
    """Convert hbbr's Mb/s (Mb = 1024*1024 bits) to bytes per second."""
    return mbps * BYTES_PER_MBIT


class TokenBucket:
    """A token bucket that may run into debt.

    @ivar rate: bytes per second; 0 means unlimited.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = 0.0
        self.burst = 0.0
        self._tokens = float("inf")
        self._stamp = now
        self.set_rate(rate, now)

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate, keeping any debt; a new bucket starts full."""
        if rate < 0:
            raise ValueError("negative rate")
        if self.rate:
            self.consume(0, now)
        self.rate = float(rate)
        self.burst = max(self.rate * BURST_SECONDS, MIN_BURST) if rate else 0.0
        self._tokens = min(self._tokens, self.burst)
        self._stamp = now

    def consume(self, nbytes: int, now: float) -> float:
        """Take C{nbytes}; return the seconds to wait before taking more (0 if none)."""
        rate = self.rate
        if not rate:
            return 0.0
        tokens = self._tokens + (now - self._stamp) * rate
        if tokens > self.burst:
            tokens = self.burst
        tokens -= nbytes
        self._tokens = tokens
        self._stamp = now
        return -tokens / rate if tokens < 0 else 0.0


@dataclass(frozen=True)
class BandwidthSettings:
    """hbbr's tunables, in hbbr's units.

    @ivar single_bandwidth: per pair, both directions together, Mb/s.
    @ivar total_bandwidth: all pairs together, Mb/s.
    @ivar limit_speed: throttled pairs, Mb/s.
    @ivar downgrade_threshold: fraction of C{single_bandwidth}.
    @ivar downgrade_start_check: seconds of pair lifetime before the check.
    """

    single_bandwidth: float = 128.0
    total_bandwidth: float = 1024.0
    limit_speed: float = 32.0
    downgrade_threshold: float = 0.66
    downgrade_start_check: float = 1800.0


class PairLimiter:
    """The limits of one pair: its own bucket, the shared total bucket, downgrade.

    @ivar throttled: why the pair runs at C{limit_speed} (C{"blacklist"} or
        C{"downgrade"}), or None.
    @ivar total_bytes: bytes counted in both directions.
    """

    __slots__ = ("bucket", "settings", "started", "throttled", "total", "total_bytes")

    def __init__(self, settings: BandwidthSettings, total: TokenBucket, now: float) -> None:
        self.settings = settings
        self.total = total
        self.bucket = TokenBucket(mbps_to_bytes(settings.single_bandwidth), now)
        self.started = now
        self.total_bytes = 0
        self.throttled: str | None = None

    @property
    def active(self) -> bool:
        """Whether any limit can ever apply (otherwise the relay skips the calls)."""
        s = self.settings
        return bool(s.single_bandwidth or s.total_bandwidth or s.limit_speed)

    def throttle(self, reason: str, now: float) -> bool:
        """Run at C{limit_speed} from now on; True if that changed anything."""
        if self.throttled is not None or not self.settings.limit_speed:
            return False
        self.throttled = reason
        self.bucket.set_rate(mbps_to_bytes(self.settings.limit_speed), now)
        return True

    def should_downgrade(self, now: float) -> bool:
        """hbbr's check: C{total_bits > elapsed_ms * single * threshold / 1000}."""
        s = self.settings
        if self.throttled is not None or not s.single_bandwidth or not s.limit_speed:
            return False
        elapsed = now - self.started
        if elapsed <= s.downgrade_start_check:
            return False
        limit = mbps_to_bytes(s.single_bandwidth) * s.downgrade_threshold
        return self.total_bytes > elapsed * limit

    def consume(self, nbytes: int, now: float) -> float:
        """Count C{nbytes} just forwarded; return how long the reader must pause."""
        self.total_bytes += nbytes
        a = self.bucket.consume(nbytes, now)
        b = self.total.consume(nbytes, now)
        return a if a > b else b


class EarlyBudget(Generic[H]):
    """The process-wide allowance of early bytes that unpaired legs may hold.

    A leg that has not been paired yet holds what its peer sent before the
    partner arrived (and, before that, its first frame).  Each leg may always
    hold a small reserve; beyond that it asks here for grants of a few KiB at
    a time.  Grants never exceed C{limit} in total, so the relay's memory for
    early data is at most C{limit} plus one reserve per unpaired leg, however
    many legs there are.  A leg whose request cannot be granted waits in a
    queue (its reader paused: the bytes stay in the kernel, nothing is lost)
    and is granted, in the order it asked, when another leg gives its grants
    back (paired or closed).

    @ivar limit: bytes that may be granted at once; 0 means no limit.
    @ivar granted: bytes granted now.
    @ivar exhausted: how many requests had to wait so far.
    """

    __slots__ = ("_queue", "exhausted", "granted", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.granted = 0
        self.exhausted = 0
        # Insertion-ordered: the wait queue, with O(1) removal of a leg that
        # is paired or closed while it waits.
        self._queue: dict[H, int] = {}

    def request(self, leg: H, n: int) -> int:
        """Grant up to C{n} more bytes to C{leg} now, or queue the request.

        A request larger than the whole budget is cut to the budget (it could
        never be granted otherwise).  A leg that is already queued stays in
        its place: it never jumps ahead of legs that asked earlier, and
        neither does a new request while others wait.

        @return: the bytes granted, 0 if the request was queued.
        """
        if self.limit:
            n = min(n, self.limit)
        if leg in self._queue:
            return 0
        if not self._queue and self._fits(n):
            self.granted += n
            return n
        self._queue[leg] = n
        self.exhausted += 1
        return 0

    def release(self, leg: H, n: int) -> list[tuple[H, int]]:
        """C{leg} gives back C{n} granted bytes and leaves the queue.

        @return: the queued legs granted now, in the order they asked, each
            with the bytes it was granted.
        """
        self._queue.pop(leg, None)
        self.granted -= n
        if self.granted < 0:
            raise ValueError("released more than was granted")
        woken: list[tuple[H, int]] = []
        while self._queue:
            head = next(iter(self._queue))
            want = self._queue[head]
            if not self._fits(want):
                break
            del self._queue[head]
            self.granted += want
            woken.append((head, want))
        return woken

    def _fits(self, n: int) -> bool:
        return not self.limit or self.granted + n <= self.limit

    @property
    def waiting(self) -> int:
        """Legs paused until the budget frees."""
        return len(self._queue)

    def is_waiting(self, leg: H) -> bool:
        return leg in self._queue
