"""Wrong-password accounting per source address, RustDesk's limits.

Viewers that reach the host directly (punched, LAN, C{--listen}, UPnP) are
seen with their own address, so RustDesk's per-source lock applies to them.
L{source_key} says what counts as one source; the admission of
unauthenticated connections (L{litedesk.session.admission}) counts per the
same unit.  Relayed viewers are paced instead (L{litedesk.session.relayed_throttle}).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from litedesk.session.login_errors import ERROR_TOO_MANY_ATTEMPTS, ERROR_TRY_LATER

__all__ = ["FailureLimiter", "source_key"]

# Every login event, whichever piece logs it, is under one namespace so that
# an operator follows logins by one name.
_log = Logger(namespace="litedesk.session.login")


def source_key(host: str) -> str:
    """The unit that failures are counted per, for a peer address.

    IPv4 addresses count alone (IPv4-mapped IPv6 ones as IPv4); IPv6
    addresses count per /64, the block one subscriber usually gets, so an
    attacker cannot reset the limit by hopping addresses inside it.
    Anything else (a host name, a test label) counts as itself.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class _Record:
    recent: deque[float] = field(default_factory=deque)
    total: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class FailureLimiter:
    """Wrong-password accounting per source, RustDesk's limits.

    - C{per_minute} (6) wrong passwords within C{window} (60 s) from one
      source lock it for C{lockout} (60 s): "Please try 1 minute later";
    - C{total_limit} (30) wrong passwords from one source without a success
      lock it until it has been quiet for C{total_quiet} (an hour): "Too many
      wrong attempts".  (RustDesk keeps that lock until a restart; forgetting
      after an hour of quiet keeps a shared NAT address from being locked
      out forever.)

    A successful login clears the source's record.  The table holds at most
    C{max_sources} records; beyond that the stalest are forgotten.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        per_minute: int = 6,
        window: float = 60.0,
        lockout: float = 60.0,
        total_limit: int = 30,
        total_quiet: float = 3600.0,
        max_sources: int = 10_000,
    ) -> None:
        self.clock = clock
        self.per_minute = per_minute
        self.window = window
        self.lockout = lockout
        self.total_limit = total_limit
        self.total_quiet = total_quiet
        self.max_sources = max_sources
        self._records: dict[str, _Record] = {}

    def _record(self, source: str, now: float) -> _Record | None:
        record = self._records.get(source)
        if record is not None and now - record.last >= self.total_quiet:
            # Quiet for long enough: forget everything about this source.
            del self._records[source]
            return None
        return record

    def refusal(self, source: str) -> str | None:
        """The error to answer C{source} with, without checking its password."""
        now = self.clock.seconds()
        record = self._record(source_key(source), now)
        if record is None:
            return None
        if record.total >= self.total_limit:
            return ERROR_TOO_MANY_ATTEMPTS
        if now < record.locked_until:
            return ERROR_TRY_LATER
        return None

    def failed(self, source: str) -> None:
        """Count a wrong password from C{source}; lock it when over a limit."""
        now = self.clock.seconds()
        key = source_key(source)
        record = self._record(key, now)
        if record is None:
            self._make_room(now)
            record = self._records[key] = _Record()
        record.last = now
        record.total += 1
        record.recent.append(now)
        while record.recent and now - record.recent[0] >= self.window:
            record.recent.popleft()
        if record.total == self.total_limit:
            _log.warn(
                "{count} wrong passwords from {source} without a success: refusing it "
                "until it has been quiet for {quiet} seconds",
                count=record.total,
                source=key,
                quiet=self.total_quiet,
            )
        elif len(record.recent) >= self.per_minute:
            record.locked_until = now + self.lockout
            record.recent.clear()
            _log.warn(
                "{count} wrong passwords from {source} within {window} seconds: "
                "refusing it for {lockout} seconds",
                count=self.per_minute,
                source=key,
                window=self.window,
                lockout=self.lockout,
            )

    def succeeded(self, source: str) -> None:
        """A right password from C{source}: forget its failures."""
        self._records.pop(source_key(source), None)

    def _make_room(self, now: float) -> None:
        if len(self._records) < self.max_sources:
            return
        for key in [k for k, r in self._records.items() if now - r.last >= self.total_quiet]:
            del self._records[key]
        excess = len(self._records) - self.max_sources + 1
        if excess > 0:
            stalest = sorted(self._records, key=lambda k: self._records[k].last)[:excess]
            for key in stalest:
                del self._records[key]

    def __len__(self) -> int:
        return len(self._records)
