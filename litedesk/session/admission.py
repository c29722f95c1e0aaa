# -*- test-case-name: tests.test_session_admission -*-
"""How many unauthenticated connections the host holds, per source and in total.

Every session the host accepts or opens (C{--listen}, hole punched, LAN, the
UPnP listener, relay legs) costs a file descriptor and some memory before
anyone has proven anything.  L{Admission} bounds that: a session registers
when its connection is made and leaves when it logs in or closes.

- Per source (L{litedesk.session.failure_limit.source_key}: an IPv4 address, an
  IPv6 /64): a newcomer beyond C{per_source} is refused.  One address can
  then hold at most C{per_source} slots, and a viewer from any other address
  is not affected.  A I{shared} source (the relay, through which every
  relayed viewer appears) evicts its own oldest session instead: there a
  newcomer is as likely to be the legitimate viewer as any earlier one, and
  refusing would let whoever came first hold the door shut.
- In total: at C{total}, the oldest session of the source holding the most
  slots is evicted to make room, so an attacker spread over a few addresses
  cannot keep a viewer from another one out; only a newcomer whose own
  source already holds the most slots is refused.

Refusals and evictions are logged with their reason and the counts, at most
once per C{log_interval} seconds per reason (with how many were not logged),
so a flood does not become a flood of log lines.

The object is sans-IO: it never touches a transport, only calls
L{Member.evict}, and takes time from an injected clock.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from litedesk.session.failure_limit import source_key

__all__ = ["DEFAULT_PER_SOURCE", "DEFAULT_TOTAL", "Admission", "Member"]

# A viewer needs one connection; a few more cover retries and several viewers
# behind one NAT.  An attacker on one address gets no more than this.
DEFAULT_PER_SOURCE = 16
# Each unauthenticated session holds at most ~64 KiB of frame, ~64 KiB of
# unsent replies and OpenSSL's buffers: 256 of them stay well under 64 MiB
# and a quarter of a 1,024-descriptor limit.
DEFAULT_TOTAL = 256


class Member(Protocol):
    """A session as the admission sees it."""

    def evict(self, reason: str) -> None:
        """Drop the connection at once (the admission has already let go of it)."""


class Admission:
    """Unauthenticated sessions per source and in total.

    @ivar per_source: the most sessions one source may hold.
    @ivar total: the most sessions in all.
    @ivar refused: how many newcomers were refused so far.
    @ivar evicted: how many sessions were evicted so far.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        per_source: int = DEFAULT_PER_SOURCE,
        total: int = DEFAULT_TOTAL,
        log_interval: float = 10.0,
    ) -> None:
        if per_source < 1 or total < 1:
            raise ValueError("the limits must be at least 1")
        self.clock = clock
        self.per_source = per_source
        self.total = total
        self.log_interval = log_interval
        self.refused = 0
        self.evicted = 0
        # Insertion order is admission order: the first member is the oldest.
        self._by_source: dict[str, OrderedDict[Member, float]] = {}
        self._source_of: dict[Member, str] = {}
        self._last_logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    # -- queries -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._source_of)

    def count(self, source: str) -> int:
        """Sessions held by C{source} (an address or a key from L{key})."""
        members = self._by_source.get(source_key(source))
        return len(members) if members is not None else 0

    def __contains__(self, member: object) -> bool:
        return member in self._source_of

    @staticmethod
    def key(host: str, shared: bool = False) -> str:
        """The accounting key for a peer address: its L{source_key}, with a
        C{"shared "} prefix for a shared source (so a relay's address and a
        direct viewer on the same machine are counted apart)."""
        key = source_key(host)
        return f"shared {key}" if shared else key

    # -- changes -------------------------------------------------------------

    def admit(self, member: Member, host: str, shared: bool = False) -> bool:
        """Register C{member}, connected from C{host}; False if it is refused.

        May evict older members (their L{Member.evict} is called before this
        returns).  A refused member is not registered: the caller drops it.
        """
        if member in self._source_of:
            return True
        key = self.key(host, shared)
        held = self._by_source.get(key)
        held_count = len(held) if held is not None else 0
        if held_count >= self.per_source:
            if not shared:
                self._refuse(key, "too many unauthenticated connections from this source")
                return False
            assert held is not None
            self._evict(next(iter(held)), key, "shared source at its limit")
        if len(self._source_of) >= self.total:
            victim_key = max(self._by_source, key=lambda k: len(self._by_source[k]))
            victim_count = len(self._by_source[victim_key])
            mine = len(self._by_source.get(key, ()))
            if victim_key == key or mine >= victim_count:
                # The newcomer's own source is (one of) the biggest: evicting
                # elsewhere would let it push others out with its own flood.
                self._refuse(key, "too many unauthenticated connections in total")
                return False
            self._evict(next(iter(self._by_source[victim_key])), victim_key, "total limit reached")
        self._by_source.setdefault(key, OrderedDict())[member] = self.clock.seconds()
        self._source_of[member] = key
        return True

    def leave(self, member: Member) -> None:
        """C{member} logged in or closed: it no longer counts (idempotent)."""
        key = self._source_of.pop(member, None)
        if key is None:
            return
        held = self._by_source[key]
        del held[member]
        if not held:
            del self._by_source[key]

    def _evict(self, member: Member, key: str, reason: str) -> None:
        self.leave(member)
        self.evicted += 1
        self._log_limited(
            f"evict {reason}",
            "Evicting the oldest unauthenticated connection from {source} ({reason}): "
            "{source_count} left from that source, {total_count} in all "
            "({evicted} evicted so far, {unlogged} not logged since the last line)",
            source=key,
            reason=reason,
            source_count=len(self._by_source.get(key, ())),
        )
        member.evict(reason)

    def _refuse(self, key: str, reason: str) -> None:
        self.refused += 1
        self._log_limited(
            f"refuse {reason}",
            "Refusing a connection from {source}: {reason} ({source_count} from that source, "
            "{total_count} in all; {refused} refused so far, {unlogged} not logged since the "
            "last line)",
            source=key,
            reason=reason,
            source_count=len(self._by_source.get(key, ())),
        )

    def _log_limited(self, what: str, fmt: str, **fields: object) -> None:
        now = self.clock.seconds()
        last = self._last_logged.get(what)
        if last is not None and now - last < self.log_interval:
            self._unlogged[what] = self._unlogged.get(what, 0) + 1
            return
        self._last_logged[what] = now
        self._log.warn(
            fmt,
            total_count=len(self._source_of),
            per_source=self.per_source,
            total=self.total,
            refused=self.refused,
            evicted=self.evicted,
            unlogged=self._unlogged.pop(what, 0),
            admission_refusal=True,
            **fields,
        )
