"""The viewer keeps its NAT type for a while (litedesk.viewer.nat_cache).

Unit tests on a real file with an injected clock, and on loopback: a viewer
whose NAT type is kept skips the NAT test (its server sees no NAT-test
connection), and one with C{--nat-ttl 0} tests every time.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor as _reactor
from twisted.internet.defer import ensureDeferred, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from litedesk.nat.nattype import ASYMMETRIC, SYMMETRIC, UNKNOWN
from litedesk.viewer.nat_cache import MAX_ENTRIES, NatCache
from litedesk.viewer.punch_link import open_for_punch

from .test_host_paths import PathFixture

reactor: Any = _reactor
SERVER = ("127.0.0.1", 21116)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class NatCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp()) / "litedesk" / "nat-type.json"
        self.clock = Clock()
        self.cache = NatCache(self.path, 600, self.clock)

    def test_kept_for_its_ttl(self) -> None:
        """A tested type is used for ttl seconds, then tested again."""
        self.assertIsNone(self.cache.get(SERVER))
        self.cache.put(SERVER, SYMMETRIC)
        self.clock.now += 599
        self.assertEqual(self.cache.get(SERVER), SYMMETRIC)
        self.clock.now += 2
        self.assertIsNone(self.cache.get(SERVER))

    def test_per_server(self) -> None:
        """Another server (another rendezvous) has its own entry."""
        self.cache.put(SERVER, SYMMETRIC)
        self.assertIsNone(self.cache.get(("127.0.0.1", 21200)))

    def test_failed_test_and_forget(self) -> None:
        """UNKNOWN (a failed test) is not kept; a forgotten type is tested again."""
        self.cache.put(SERVER, UNKNOWN)
        self.assertIsNone(self.cache.get(SERVER))
        self.cache.put(SERVER, ASYMMETRIC)
        self.cache.forget(SERVER)
        self.assertIsNone(self.cache.get(SERVER))

    def test_ttl_zero_keeps_nothing(self) -> None:
        """--nat-ttl 0: nothing is written or read."""
        cache = NatCache(self.path, 0, self.clock)
        cache.put(SERVER, ASYMMETRIC)
        self.assertFalse(self.path.exists())
        self.assertIsNone(cache.get(SERVER))

    def test_private_and_bounded(self) -> None:
        """The file is the viewer's alone (0600) and holds at most MAX_ENTRIES entries."""
        for port in range(1, MAX_ENTRIES + 10):
            self.cache.put(("127.0.0.1", port), ASYMMETRIC)
        self.assertEqual(stat.S_IMODE(self.path.stat().st_mode), 0o600)
        self.assertEqual(len(json.loads(self.path.read_text())), MAX_ENTRIES)
        self.assertEqual(self.cache.get(("127.0.0.1", MAX_ENTRIES + 9)), ASYMMETRIC)

    def test_a_clock_going_back_is_not_trusted(self) -> None:
        """An entry from the future (the clock was set back) is tested again."""
        self.cache.put(SERVER, ASYMMETRIC)
        self.clock.now -= 3600
        self.assertIsNone(self.cache.get(SERVER))

    @settings(max_examples=50, deadline=None)
    @given(st.binary(max_size=200))
    def test_damaged_file_is_ignored(self, data: bytes) -> None:
        """Whatever the file holds, reading never raises; a valid put repairs it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(data)
        self.cache.get(SERVER)
        self.cache.put(SERVER, SYMMETRIC)
        self.assertEqual(self.cache.get(SERVER), SYMMETRIC)


class KeptTypeTests(PathFixture):
    """On loopback, with the real server: the kept type is the one the request carries."""

    @inlineCallbacks
    def test_kept_type_is_used_and_ttl_zero_tests(self) -> Any:
        """With a kept type no NAT test runs (its answer would be UNKNOWN here: the
        server's NAT-test port is not P-1 of this harness); with ttl 0 it runs."""
        server = ("127.0.0.1", self.tcp)
        path = Path(self.mktemp()) / "nat.json"
        cache = NatCache(path, 600, Clock())
        cache.put(server, SYMMETRIC)
        link, _, own = yield ensureDeferred(
            open_for_punch(reactor, server, False, True, None, cache)
        )
        link.close()
        self.assertEqual(own, SYMMETRIC)
        link, _, own = yield ensureDeferred(
            open_for_punch(reactor, server, False, True, None, NatCache(path, 0, Clock()))
        )
        link.close()
        self.assertEqual(own, UNKNOWN)
