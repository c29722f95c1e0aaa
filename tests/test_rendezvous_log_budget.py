"""The log lines of accepted registrations are bounded: L{LineBudget} and the server's use of it.

A restart brings every host back at once and each accepted C{RegisterPk}
is worth a line; the first lines of each second are written, the rest are
counted and the count goes out with the next line, so an operator still
sees that they happened and the disk and the reactor are spared.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.log_budget import LineBudget
from litedesk.rendezvous.registry import Registry
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.server import RendezvousServer
from litedesk.wire.keys import ServerKey


class LineBudgetTests(SynchronousTestCase):
    def test_first_lines_of_a_second_then_counted(self) -> None:
        """Three lines a second: the fourth and fifth are counted, reported by the next line."""
        budget = LineBudget(per_second=3)
        got = [budget.take(10.0 + i * 0.1) for i in range(5)]
        self.assertEqual(got, [0, 0, 0, None, None])
        self.assertEqual(budget.take(11.0), 2)
        self.assertEqual(budget.take(11.1), 0)

    def test_clock_stepped_back(self) -> None:
        """A clock set back starts a new window rather than silencing the log."""
        budget = LineBudget(per_second=1)
        self.assertEqual(budget.take(100.0), 0)
        self.assertIsNone(budget.take(100.5))
        self.assertEqual(budget.take(50.0), 1)

    @given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=200))
    def test_every_event_accounted_for(self, times: list[float]) -> None:
        """Lines written plus the counts they report add up to every event but the
        tail not yet reported: no registration goes unaccounted for."""
        budget = LineBudget(per_second=4)
        lines = reported = dropped_tail = 0
        for now in sorted(times):
            skipped = budget.take(now)
            if skipped is None:
                dropped_tail += 1
            else:
                lines += 1
                reported += skipped
                dropped_tail = 0
        self.assertEqual(lines + reported + dropped_tail, len(times))


def _register_pk(i: int) -> bytes:
    msg = rz.RegisterPk(id=f"{100_000_000 + i}", uuid=b"u%035d" % i, pk=bytes([i % 256]) * 32)
    return rz.RendezvousMessage(register_pk=msg).SerializeToString()


class RegistrationLinesTests(SynchronousTestCase):
    def test_a_wave_of_registrations(self) -> None:
        """100 hosts registering within a second: 20 lines, then one saying 80 were not logged."""
        clock = Clock()
        clock.advance(1000)
        server = RendezvousServer(
            clock=clock,
            registry=Registry(),
            key=ServerKey("licence", None),
            relays=RelayList([]),
        )
        with capturedLogs() as events:
            for i in range(100):
                data = _register_pk(i)
                server.handle_datagram(data, (f"198.51.100.{i % 200 + 1}", 40000 + i))
            clock.advance(1.0)
            server.handle_datagram(_register_pk(100), ("198.51.100.201", 41000))
        lines = [e for e in events if "peer_id" in e and e.get("reason") == "registered"]
        self.assertEqual(len(lines), 21)
        self.assertEqual(lines[-1]["unlogged"], 80)
        self.assertEqual(lines[-1]["peer_id"], "100000100")
        self.assertEqual(server.counters["register_pk_ok"], 101)
        # Every registration took effect, logged or not.
        self.assertEqual(len(server.registry), 101)
