"""What pushes can make the host hold: job slots per requester IP and in all.

Every push (C{PunchHole}, C{RequestRelay}, C{FetchLocalAddr}) is an
unauthenticated request from whoever reached the rendezvous server, and each
makes the host open something (a relay leg, a punch, a LAN listener).  Each
takes a slot until what it opened closes; when the slots are taken the push
is dropped and the drop logged (rate-limited).  Sans-IO apart from the clock,
and apart from L{litedesk.host.paths} as a policy with its own limits.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from litedesk.wire.addrmangle import normalize_host

#: Concurrent outgoing jobs (relay legs until they close, punches, LAN
#: listeners) for one requester IP, and in all.  A viewer needs one; a few
#: more allow retries (a LAN listener a viewer did not use holds its slot for
#: LAN_ACCEPT_WINDOW) and several viewers behind one NAT.  The total stays
#: far below the file limit so that floods cannot exhaust descriptors.
MAX_JOBS_PER_IP = 8
MAX_JOBS = 64
DROP_LOG_INTERVAL = 10.0  # at most one "dropped" line per interval


class Slot:
    """One running job of a requester IP; releasing it twice is harmless."""

    def __init__(self, slots: JobSlots, ip: str) -> None:
        self.slots = slots
        self.ip = ip
        self.held = True

    def release(self, _: object = None) -> object:
        if self.held:
            self.held = False
            self.slots.release(self.ip)
        return _


class JobSlots:
    """Running jobs per requester IP (C{jobs}) and in all (C{total}).

    @ivar dropped: pushes dropped so far because the slots were taken.
    """

    _log = Logger(namespace="litedesk.host.paths.HostPaths")

    def __init__(self, clock: IReactorTime, max_per_ip: int, max_total: int) -> None:
        self.clock = clock
        self.max_per_ip = max_per_ip
        self.max_total = max_total
        self.jobs: dict[str, int] = {}  # requester IP -> running jobs
        self.total = 0
        self.dropped = 0
        # requester IP -> stop() of its LAN listeners nobody connected to yet,
        # oldest first (see acquire).
        self._offers: dict[str, list[Callable[[], None]]] = {}
        self._dropped_unlogged = 0
        self._last_drop_log = float("-inf")

    def offer(self, ip: str, stop: Callable[[], None]) -> None:
        """C{ip} was offered a LAN listener that C{stop} closes (and releases)."""
        self._offers.setdefault(ip, []).append(stop)

    def withdraw_offer(self, ip: str, stop: Callable[[], None]) -> None:
        offers = self._offers.get(ip, [])
        if stop in offers:
            offers.remove(stop)
            if not offers:
                del self._offers[ip]

    def acquire(self, ip: str, what: str) -> Slot | None:
        """Take a job slot for requester C{ip}; None (and a rate-limited log line) if full."""
        ip = normalize_host(ip)
        n = self.jobs.get(ip, 0)
        offers = self._offers.get(ip)
        if offers and (n >= self.max_per_ip or self.total >= self.max_total):
            # A viewer that asks again has given up on the LAN address it was
            # offered (a --force-relay viewer never uses it): its listener
            # would hold a slot for LAN_ACCEPT_WINDOW, so a user retrying from
            # one address would soon be refused.  Close the oldest instead.
            offers[0]()
            n = self.jobs.get(ip, 0)
        if n < self.max_per_ip and self.total < self.max_total:
            self.jobs[ip] = n + 1
            self.total += 1
            return Slot(self, ip)
        self.dropped += 1
        self._dropped_unlogged += 1
        now = self.clock.seconds()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL:
            self._log.warn(
                "Dropped {n} connection request(s) ({what} for {ip} the latest): "
                "{running} running for that IP (limit {per_ip}), {total} in all "
                "(limit {limit})",
                n=self._dropped_unlogged,
                what=what,
                ip=ip,
                running=n,
                per_ip=self.max_per_ip,
                total=self.total,
                limit=self.max_total,
            )
            self._last_drop_log = now
            self._dropped_unlogged = 0
        return None

    def release(self, ip: str) -> None:
        ip = normalize_host(ip)
        n = self.jobs.get(ip, 0) - 1
        if n > 0:
            self.jobs[ip] = n
        else:
            self.jobs.pop(ip, None)
        self.total = max(0, self.total - 1)
