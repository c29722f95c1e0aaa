"""Tests for litedesk.session.admission: unauthenticated sessions per source and in total."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from litedesk.session.admission import Admission


class Conn:
    """A session stand-in that records its eviction."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.evicted: str | None = None

    def evict(self, reason: str) -> None:
        self.evicted = reason

    def __repr__(self) -> str:
        return f"Conn({self.name})"


def _observe(case: SynchronousTestCase) -> EventLoggingObserver:
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


def _refusals(events: EventLoggingObserver) -> list[dict[str, Any]]:
    return [e for e in events if e.get("admission_refusal")]


class PerSourceTests(SynchronousTestCase):
    def test_source_limit_refuses_newcomers_from_that_source_only(self) -> None:
        """At its limit one address is refused; another address still gets in."""
        adm = Admission(Clock(), per_source=3, total=100)
        attackers = [Conn(f"a{i}") for i in range(5)]
        admitted = [adm.admit(c, "127.0.0.2") for c in attackers]
        self.assertEqual(admitted, [True, True, True, False, False])
        self.assertEqual(adm.count("127.0.0.2"), 3)
        self.assertTrue(adm.admit(Conn("viewer"), "127.0.0.1"))
        self.assertEqual((len(adm), adm.refused, adm.evicted), (4, 2, 0))
        self.assertEqual([c.evicted for c in attackers], [None] * 5)

    def test_leaving_frees_the_slot(self) -> None:
        """A session that logs in or closes no longer counts (leave is idempotent)."""
        adm = Admission(Clock(), per_source=1, total=100)
        first = Conn("first")
        self.assertTrue(adm.admit(first, "10.0.0.1"))
        self.assertFalse(adm.admit(Conn("second"), "10.0.0.1"))
        adm.leave(first)
        adm.leave(first)
        self.assertNotIn(first, adm)
        self.assertTrue(adm.admit(Conn("third"), "10.0.0.1"))
        self.assertEqual(len(adm), 1)

    def test_ipv6_counts_per_64(self) -> None:
        """Addresses inside one IPv6 /64 share a limit; IPv4-mapped ones count as IPv4."""
        adm = Admission(Clock(), per_source=2, total=100)
        self.assertTrue(adm.admit(Conn("1"), "2001:db8:1:2::1"))
        self.assertTrue(adm.admit(Conn("2"), "2001:db8:1:2:ffff::9"))
        self.assertFalse(adm.admit(Conn("3"), "2001:db8:1:2::abcd"))
        self.assertTrue(adm.admit(Conn("4"), "2001:db8:1:3::1"))
        self.assertTrue(adm.admit(Conn("5"), "::ffff:192.0.2.7"))
        self.assertEqual(adm.count("192.0.2.7"), 1)

    def test_shared_source_evicts_its_own_oldest(self) -> None:
        """Relay legs all come from the relay's address: a newcomer there evicts
        the oldest leg instead of being refused, and is counted apart from a
        direct peer on the same address."""
        adm = Admission(Clock(), per_source=2, total=100)
        legs = [Conn(f"leg{i}") for i in range(3)]
        for leg in legs:
            self.assertTrue(adm.admit(leg, "198.51.100.5", shared=True))
        self.assertEqual([leg.evicted for leg in legs], ["shared source at its limit", None, None])
        self.assertNotIn(legs[0], adm)
        self.assertTrue(adm.admit(Conn("direct"), "198.51.100.5"))
        self.assertEqual(adm.count(Admission.key("198.51.100.5", shared=True)), 2)
        self.assertEqual(adm.count("198.51.100.5"), 1)


class TotalTests(SynchronousTestCase):
    def test_total_evicts_oldest_of_the_biggest_source(self) -> None:
        """When all slots are taken, a viewer from a new address gets in by
        evicting the oldest session of the source holding the most."""
        clock = Clock()
        adm = Admission(clock, per_source=4, total=6)
        big = [Conn(f"big{i}") for i in range(4)]
        small = [Conn(f"small{i}") for i in range(2)]
        for c in big:
            clock.advance(1)
            adm.admit(c, "203.0.113.1")
        for c in small:
            adm.admit(c, "203.0.113.2")
        viewer = Conn("viewer")
        self.assertTrue(adm.admit(viewer, "192.0.2.50"))
        self.assertEqual(big[0].evicted, "total limit reached")
        self.assertEqual([c.evicted for c in big[1:] + small], [None] * 5)
        self.assertEqual((len(adm), adm.count("203.0.113.1"), adm.evicted), (6, 3, 1))

    def test_biggest_source_cannot_push_others_out(self) -> None:
        """A newcomer whose own source holds the most slots is refused rather
        than evicting someone else's session."""
        adm = Admission(Clock(), per_source=4, total=5)
        mine = [Conn(f"m{i}") for i in range(3)]
        theirs = [Conn(f"t{i}") for i in range(2)]
        for c in mine:
            adm.admit(c, "203.0.113.1")
        for c in theirs:
            adm.admit(c, "203.0.113.2")
        self.assertFalse(adm.admit(Conn("m3"), "203.0.113.1"))
        self.assertEqual([c.evicted for c in mine + theirs], [None] * 5)
        self.assertEqual(adm.refused, 1)


class LogTests(SynchronousTestCase):
    def test_refusals_are_logged_rate_limited_with_counts(self) -> None:
        """A flood of refusals gives one log line per interval, carrying the
        reason, the counts and how many refusals were not logged."""
        events = _observe(self)
        clock = Clock()
        adm = Admission(clock, per_source=1, total=100, log_interval=10)
        adm.admit(Conn("first"), "127.0.0.2")
        for _ in range(100):
            adm.admit(Conn("x"), "127.0.0.2")
            clock.advance(0.05)
        self.assertEqual(len(_refusals(events)), 1)
        clock.advance(10)
        adm.admit(Conn("y"), "127.0.0.2")
        lines = _refusals(events)
        self.assertEqual(len(lines), 2)
        reason = "too many unauthenticated connections from this source"
        self.assertEqual(lines[1]["reason"], reason)
        self.assertEqual((lines[1]["source"], lines[1]["source_count"]), ("127.0.0.2", 1))
        self.assertEqual((lines[1]["unlogged"], lines[1]["refused"]), (99, 101))


operations = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("leave"), st.integers(0, 40), st.booleans()),
    ),
    max_size=80,
)


class InvariantTests(SynchronousTestCase):
    @given(operations, st.integers(1, 4), st.integers(1, 8))
    def test_limits_hold_for_any_order(
        self, ops: list[tuple[str, int, bool]], per_source: int, total: int
    ) -> None:
        """Whatever the order of connections, logins and closes: no source
        holds more than its limit, the total stays within its limit, every
        evicted or refused session is not counted, and every admitted one that
        was neither evicted nor left still is."""
        adm = Admission(Clock(), per_source=per_source, total=total)
        made: list[Conn] = []
        live: set[Conn] = set()
        for op, n, shared in ops:
            if op == "admit":
                c = Conn(str(len(made)))
                made.append(c)
                if adm.admit(c, f"10.0.0.{n}", shared=shared):
                    live.add(c)
            elif made:
                c = made[n % len(made)]
                adm.leave(c)
                live.discard(c)
            live = {c for c in live if c.evicted is None}
            self.assertLessEqual(len(adm), total)
            for i in range(6):
                for sh in (False, True):
                    self.assertLessEqual(adm.count(Admission.key(f"10.0.0.{i}", sh)), per_source)
            self.assertEqual({c for c in made if c in adm}, live)
