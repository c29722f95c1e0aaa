"""How punch requests end, and how long a viewer waited for its answer.

The rendezvous server counts into L{PunchStats};
L{litedesk.ops.metrics.ServerCollector} reads it at scrape time
(C{litedesk_punch_results_total}, C{litedesk_punch_seconds}).  It lives in
the rendezvous package so that the server needs nothing from L{litedesk.ops}.
Fixed tables (every key exists from the start, an unknown key raises): what
a peer sends can never add a series or grow memory.  Sans-IO: callers pass
durations.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["PUNCH_BUCKETS", "PUNCH_RESULTS", "PunchStats"]

#: The C{result} label of C{litedesk_punch_results_total}: how a viewer's
#: C{PunchHoleRequest} ended.  The first four are answers delivered (the
#: host's C{PunchHoleSent} by TCP, its C{LocalAddr}, its C{RelayResponse},
#: its C{PunchHoleSent} by UDP); the others are refusals the server answers
#: itself, and C{abandoned}: the viewer left before any answer.
PUNCH_RESULTS: tuple[str, ...] = (
    "punch",
    "local",
    "relay",
    "udp_punch",
    "offline",
    "id_not_exist",
    "licence_mismatch",
    "login_required",
    "abandoned",
)

#: Upper bounds (seconds) of the punch latency histogram: 0.5 ms (a host on
#: the same machine) to 10 s (a client gives up on the rendezvous at about
#: 12 s), roughly three per decade.
PUNCH_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class PunchStats:
    """How punch requests ended, and the latency of those answered.

    @ivar results: count by L{PUNCH_RESULTS} value.
    @ivar buckets: cumulative-free counts per bucket of L{PUNCH_BUCKETS}
        (the last entry is above the largest bound).
    @ivar total: sum of the observed latencies, seconds.
    """

    def __init__(self) -> None:
        self.results: dict[str, int] = dict.fromkeys(PUNCH_RESULTS, 0)
        self.buckets: list[int] = [0] * (len(PUNCH_BUCKETS) + 1)
        self.total = 0.0

    def result(self, result: str) -> None:
        """Count a request that ended as C{result} (one of L{PUNCH_RESULTS})."""
        self.results[result] += 1

    def answered(self, result: str, seconds: float) -> None:
        """Count an answer delivered C{seconds} after its request."""
        self.results[result] += 1
        seconds = max(seconds, 0.0)  # a clock stepped back must not make a negative sum
        self.buckets[bisect_left(PUNCH_BUCKETS, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        """Latencies observed."""
        return sum(self.buckets)

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (upper bound as text, observations <= it), C{+Inf} last."""
        out = []
        running = 0
        for bound, n in zip(PUNCH_BUCKETS, self.buckets, strict=False):
            running += n
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.buckets[-1]))
        return out
