"""Per-source-IP token buckets for datagram floods, bounded in memory."""

from __future__ import annotations


class FloodGuard:
    """Allow C{rate} events per second per key with bursts of C{burst}.

    Sans-IO: callers pass the time.  A C{rate} of 0 disables the guard.  At
    most C{max_keys} buckets are kept; when full, idle (refilled) buckets are
    dropped, and if none is idle the table is cleared: forgetting some
    offenders is better than unbounded memory under a spoofed-source flood.
    """

    __slots__ = ("_buckets", "burst", "dropped", "max_keys", "rate")

    def __init__(self, rate: float, burst: float | None = None, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate * 2, 1.0)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self.dropped = 0

    def allow(self, key: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now)
            tokens = self.burst
        else:
            tokens, last = bucket
            tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            self.dropped += 1
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def _evict(self, now: float) -> None:
        full = [
            k
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)
