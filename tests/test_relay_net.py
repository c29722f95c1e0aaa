"""Relay integration tests over real sockets on 127.0.0.1 (relay and peers in one reactor)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

from twisted.internet import reactor, task
from twisted.trial import unittest

from litedesk.relay.leg import RelayProtocol
from litedesk.relay.limiter import BandwidthSettings
from litedesk.relay.settings import MODES, RelaySettings
from litedesk.relay.table import ConnectionLimits, Deadlines
from litedesk.relay.transport import RelayServerTransport
from tests.support.polling import until
from tests.support.relay import Peer, RelayFixture, Source, request_relay

UNLIMITED = BandwidthSettings(0, 0, 0)
SHORT = Deadlines(first_frame=0.4, partner=0.4, idle=0.4, drain=0.4)
LONG = Deadlines(first_frame=60, partner=60, idle=60, drain=60)


class RelayNetTestCase(unittest.TestCase):
    """Base: a fresh relay per test, stopped and drained in tearDown."""

    settings = RelaySettings(deadlines=LONG, bandwidth=UNLIMITED)
    licence = ""

    async def start(self, settings: RelaySettings | None = None, licence: str = "") -> RelayFixture:
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()
        fx = RelayFixture(settings or self.settings, self.data_dir, licence or self.licence)
        await fx.start()
        self.addCleanup(fx.stop)
        return fx

    async def pair(self, fx: RelayFixture, uuid: str = "U", keep: bool = True) -> tuple[Peer, Peer]:
        a = await fx.connect(request_relay(uuid), keep)
        await until(lambda: uuid in fx.service.relay.table.waiting)
        b = await fx.connect(request_relay(uuid), keep)
        await until(lambda: fx.service.stats().active_pairs >= 1)
        return a, b


class PipeTests(RelayNetTestCase):
    """Pairing and byte piping."""

    async def test_64mib_each_way(self) -> None:
        """64 MiB each way at once arrive complete and unchanged (SHA-256 on both ends)."""
        fx = await self.start()
        a, b = await self.pair(fx, keep=False)
        total = 64 * 1024 * 1024
        block_a = os.urandom(256 * 1024)
        block_b = os.urandom(256 * 1024)
        sa = Source(a.transport, block_a, total)
        sb = Source(b.transport, block_b, total)
        await until(lambda: a.count >= total and b.count >= total, timeout=120)
        self.assertEqual((b.count, a.count), (total, total))
        self.assertEqual(b.sha.hexdigest(), sa.sha.hexdigest())
        self.assertEqual(a.sha.hexdigest(), sb.sha.hexdigest())
        self.assertEqual(fx.service.stats().bytes_relayed, 2 * total)

    async def test_read_mode_in_use(self) -> None:
        """Paired legs read through the configured path, on the relay's own transport class."""
        fx = await self.start()
        await self.pair(fx, "M")
        [pair] = fx.service.relay.table.pairs
        expected = MODES[self.settings.read_mode] if self.settings.fast_write else 0
        for conn in (pair.a, pair.b):
            self.assertIsInstance(conn.handle.transport, RelayServerTransport)
            self.assertEqual(conn.handle._mode, expected)

    async def test_early_bytes_kept(self) -> None:
        """Bytes sent right behind the first frame, before the partner exists, arrive first."""
        fx = await self.start()
        a = await fx.connect(request_relay("E") + b"a-early-1")
        await until(lambda: "E" in fx.service.relay.table.waiting)
        assert a.transport is not None
        a.transport.write(b"a-early-2")
        await task.deferLater(reactor, 0.05)
        b = await fx.connect(request_relay("E") + b"b-early")
        await until(lambda: len(b.received) >= 18 and len(a.received) >= 7)
        a.transport.write(b"a-late")
        await until(lambda: len(b.received) >= 24)
        self.assertEqual(bytes(b.received), b"a-early-1a-early-2a-late")
        self.assertEqual(bytes(a.received), b"b-early")

    async def test_first_frame_split_and_coalesced(self) -> None:
        """A first frame split across writes, with the peer's own frames behind it, passes."""
        fx = await self.start()
        a = await fx.connect()
        frame = request_relay("S")
        assert a.transport is not None
        a.transport.write(frame[:3])
        await task.deferLater(reactor, 0.05)
        a.transport.write(frame[3:] + b"\x08ABCD")
        b = await fx.connect(request_relay("S"))
        await until(lambda: len(b.received) >= 5)
        self.assertEqual(bytes(b.received), b"\x08ABCD")

    async def test_close_flushes_then_closes_partner(self) -> None:
        """A peer that writes then closes: its partner gets every byte, then is closed."""
        fx = await self.start()
        a, b = await self.pair(fx)
        assert a.transport is not None
        payload = os.urandom(3 * 1024 * 1024)
        a.transport.write(payload)
        a.transport.loseConnection()
        await b.lost
        self.assertEqual(hashlib.sha256(b.received).digest(), hashlib.sha256(payload).digest())
        await until(lambda: bool(fx.named("pair_finished")))
        rec = fx.named("pair_finished")[0]
        self.assertEqual((rec["uuid"], rec["a_to_b"], rec["b_to_a"]), ("U", len(payload), 0))
        self.assertIn("closed by peer", rec["reason"])
        self.assertTrue(rec["a_peer"].startswith("127.0.0.1:"))
        self.assertGreaterEqual(rec["duration"], 0)

    async def test_reset_closes_partner(self) -> None:
        """A peer that resets mid-stream: the partner is closed and other pairs go on."""
        fx = await self.start()
        a, b = await self.pair(fx, "R1")
        c, d = await self.pair(fx, "R2")
        assert a.transport is not None and c.transport is not None
        a.transport.write(b"x" * 100000)
        await until(lambda: b.count >= 100000)
        a.transport.abortConnection()  # type: ignore[attr-defined]
        await b.lost
        c.transport.write(b"still here")
        await until(lambda: d.count >= 10)
        self.assertEqual(bytes(d.received), b"still here")
        self.assertEqual(fx.service.stats().active_pairs, 1)

    async def test_third_connection_waits(self) -> None:
        """A third connection with an already paired uuid waits and pairs with a fourth."""
        fx = await self.start()
        a, b = await self.pair(fx, "T")
        c = await fx.connect(request_relay("T") + b"from-c")
        await until(lambda: fx.service.stats().waiting == 1)
        d = await fx.connect(request_relay("T") + b"from-d")
        await until(lambda: len(c.received) >= 6 and len(d.received) >= 6)
        self.assertEqual((bytes(c.received), bytes(d.received)), (b"from-d", b"from-c"))
        self.assertEqual((a.count, b.count), (0, 0))


class BackpressureTests(RelayNetTestCase):
    """A receiver that stops reading throttles its sender; the relay buffers little."""

    async def test_stalled_receiver_bounded(self) -> None:
        """With the receiver not reading, the sender stalls and the relay holds < 1 MiB."""
        settings = replace(self.settings, read_size=256 * 1024)
        fx = await self.start(settings)
        a, b = await self.pair(fx, keep=False)
        assert b.transport is not None
        b.transport.pauseProducing()  # type: ignore[attr-defined]
        total = 96 * 1024 * 1024
        src = Source(a.transport, os.urandom(256 * 1024), total)
        worst = 0
        last, still = -1, 0
        for _ in range(2000):
            await task.deferLater(reactor, 0.01)
            worst = max(worst, fx.service.relay.max_buffered())
            if src.sent == last:
                still += 1
                if still >= 30:
                    break
            else:
                last, still = src.sent, 0
        stalled_at = src.sent
        # The sender stopped far short of the total: kernel buffers plus the relay's.
        self.assertLess(stalled_at, 64 * 1024 * 1024)
        self.assertLessEqual(worst, 2 * settings.read_size)
        # The receiver resumes: everything arrives, unchanged.
        b.transport.resumeProducing()  # type: ignore[attr-defined]
        await until(lambda: b.count >= src.total, timeout=120)
        self.assertEqual(b.sha.hexdigest(), src.sha.hexdigest())


class EarlyDataNetTests(RelayNetTestCase):
    """Early data over real sockets: small reads until paired, the budget, nothing lost."""

    settings = RelaySettings(
        deadlines=LONG,
        bandwidth=UNLIMITED,
        early_buffer=32 * 1024,
        early_budget=64 * 1024,
    )

    def waiting_legs(self, fx: RelayFixture) -> list[RelayProtocol]:
        return [c.handle for c in fx.service.relay.table.waiting.values()]

    async def test_small_reads_until_paired(self) -> None:
        """A waiting leg keeps early-buffer bytes read in small pieces and stops; once paired
        both legs read read_size at a time and all early bytes arrive intact."""
        fx = await self.start()
        early = os.urandom(200 * 1024)
        await fx.connect(request_relay("E") + early)
        await until(lambda: any(p._paused for p in self.waiting_legs(fx)))
        [leg] = self.waiting_legs(fx)
        assert leg._tcp is not None
        self.assertEqual(leg.held(), self.settings.early_buffer)
        self.assertLessEqual(leg._tcp.bufferSize, self.settings.unpaired_read)
        self.assertEqual(fx.service.stats().early_bytes, self.settings.early_buffer)
        b = await fx.connect(request_relay("E"), keep=False)
        await until(lambda: b.count >= len(early))
        self.assertEqual(b.sha.digest(), hashlib.sha256(early).digest())
        [pair] = fx.service.relay.table.pairs
        sizes = [c.handle._tcp.bufferSize for c in (pair.a, pair.b) if c.handle._tcp is not None]
        self.assertEqual(sizes, [self.settings.read_size] * 2)
        self.assertEqual(fx.service.stats().early_bytes, 0)

    async def test_budget_exhausted_nothing_lost(self) -> None:
        """Twelve legs each sending 100 KiB early into a 64 KiB budget: the relay stops reading
        them with at most budget + reserves held and says so once; when partners arrive, in
        any order, each gets its leg's bytes complete and in order."""
        fx = await self.start()
        early = [os.urandom(100 * 1024) for _ in range(12)]
        for i, data in enumerate(early):
            await fx.connect(request_relay(f"B{i}") + data)
        await until(
            lambda: (
                len(self.waiting_legs(fx)) == 12 and all(p._paused for p in self.waiting_legs(fx))
            )
        )
        s = fx.service.stats()
        # Spent, up to less than one grant that no request fits into.
        self.assertLessEqual(s.early_granted, s.early_budget)
        self.assertGreater(s.early_granted, s.early_budget - self.settings.unpaired_read)
        self.assertGreater(s.early_paused, 0)
        self.assertLessEqual(s.early_bytes, s.early_budget + 12 * self.settings.early_reserve)
        [warning] = fx.named("early_budget_exhausted")
        self.assertEqual(warning["limit"], self.settings.early_budget)
        partners = {}
        for i in (11, 0, 5, 3, 9, 1, 2, 4, 6, 7, 8, 10):
            partners[i] = await fx.connect(request_relay(f"B{i}"), keep=False)
        await until(lambda: all(p.count >= 100 * 1024 for p in partners.values()))
        for i, p in partners.items():
            self.assertEqual(p.sha.digest(), hashlib.sha256(early[i]).digest(), i)
        s = fx.service.stats()
        self.assertEqual((s.early_granted, s.early_paused, s.active_pairs), (0, 0, 12))


class DeadlineTests(RelayNetTestCase):
    """Configurable deadlines close what they should, with the reason logged."""

    settings = RelaySettings(deadlines=SHORT, bandwidth=UNLIMITED)

    def reasons(self, fx: RelayFixture) -> list[str]:
        return [e["reason"] for e in fx.named("closed")]

    async def test_silent_connection(self) -> None:
        """A connection that never sends its first frame is closed; reason logged."""
        fx = await self.start()
        a = await fx.connect()
        await a.lost
        self.assertEqual(self.reasons(fx), ["first-frame timeout"])
        self.assertEqual(fx.service.stats().connections, 0)

    async def test_lonely_connection(self) -> None:
        """A connection whose partner never comes is closed; reason logged."""
        fx = await self.start()
        a = await fx.connect(request_relay("L"))
        await a.lost
        self.assertEqual(self.reasons(fx), ["partner timeout"])

    async def test_idle_pair(self) -> None:
        """A pair that moves no data is closed on both sides; the pair record says idle."""
        fx = await self.start()
        a, b = await self.pair(fx)
        await a.lost
        await b.lost
        await until(lambda: bool(fx.named("pair_finished")))
        self.assertEqual(fx.named("pair_finished")[0]["reason"], "idle timeout")

    async def test_busy_pair_not_idle(self) -> None:
        """A pair that keeps moving data outlives the idle deadline."""
        fx = await self.start()
        a, b = await self.pair(fx)
        assert a.transport is not None
        for _ in range(12):
            a.transport.write(b"tick")
            await task.deferLater(reactor, 0.1)
        self.assertFalse(a.closed or b.closed)
        self.assertEqual(b.count, 48)


class BadInputTests(RelayNetTestCase):
    """Bad first frames and keys are closed without a reply, with the reason logged."""

    licence = "SECRET"

    async def closed_with(self, fx: RelayFixture, data: bytes) -> tuple[Peer, str]:
        p = await fx.connect(data)
        await p.lost
        self.assertEqual(bytes(p.received), b"")
        await until(lambda: bool(fx.named("closed")))
        reason: str = fx.named("closed")[-1]["reason"]
        return p, reason

    async def test_wrong_key(self) -> None:
        """A licence_key different from the relay's key is closed; nothing is sent back."""
        fx = await self.start()
        _, reason = await self.closed_with(fx, request_relay("K", "nope"))
        self.assertEqual(reason, "wrong licence key")

    async def test_right_key(self) -> None:
        """The right licence_key pairs as usual."""
        fx = await self.start()
        a = await fx.connect(request_relay("K", "SECRET"))
        await fx.connect(request_relay("K", "SECRET") + b"hi")
        await until(lambda: a.count == 2)

    async def test_garbage_and_oversize(self) -> None:
        """Garbage, a non-RequestRelay message, an empty uuid and a huge header are closed."""
        fx = await self.start()
        _, r1 = await self.closed_with(fx, b"\x10GET / HTTP/1.1\r\n\r\n")
        _, r2 = await self.closed_with(fx, request_relay("", "SECRET"))
        _, r3 = await self.closed_with(fx, b"\xff\xff\xff\xff")
        self.assertIn("not", r1)
        self.assertEqual(r2, "empty uuid")
        self.assertIn("exceeds max-first-frame", r3)


class LimitTests(RelayNetTestCase):
    """Accept-time limits and bandwidth limits."""

    async def test_per_ip_limit(self) -> None:
        """Connections beyond max-connections-per-ip are refused and the limit is logged."""
        settings = RelaySettings(
            deadlines=LONG, bandwidth=UNLIMITED, limits=ConnectionLimits(max_per_ip=3)
        )
        fx = await self.start(settings)
        peers = [await fx.connect() for _ in range(3)]
        extra = await fx.connect()
        await extra.lost
        ev = fx.named("refused")[0]
        self.assertEqual((ev["limit"], ev["value"], ev["count"]), ("max-connections-per-ip", 3, 3))
        self.assertFalse(any(p.closed for p in peers))

    async def test_max_unpaired(self) -> None:
        """Connections beyond max-unpaired are refused; a pairing frees room."""
        settings = RelaySettings(
            deadlines=LONG, bandwidth=UNLIMITED, limits=ConnectionLimits(max_unpaired=2)
        )
        fx = await self.start(settings)
        await fx.connect(request_relay("M"))
        await fx.connect()
        extra = await fx.connect()
        await extra.lost
        self.assertEqual(fx.named("refused")[0]["limit"], "max-unpaired")

    async def test_blocklist_file(self) -> None:
        """Addresses in blocklist.txt are refused at accept; removing the line lets them in."""
        fx = await self.start()
        p = await fx.connect(request_relay("B"))
        (self.data_dir / "blocklist.txt").write_text("127.0.0.1 test\n")
        fx.service.reload_lists()
        await p.lost
        q = await fx.connect()
        await q.lost
        self.assertEqual(fx.named("refused")[0]["limit"], "blocklist")
        (self.data_dir / "blocklist.txt").write_text("")
        fx.service.reload_lists()
        r = await fx.connect(request_relay("B"))
        await until(lambda: "B" in fx.service.relay.table.waiting)
        self.assertFalse(r.closed)

    async def rate(self, fx: RelayFixture, nbytes: int) -> float:
        a, b = await self.pair(fx, keep=False)
        Source(a.transport, os.urandom(64 * 1024), nbytes)
        await until(lambda: b.count >= nbytes, timeout=60)
        assert b.first_at is not None and b.last_at is not None
        # the first chunk rides the bucket's burst; measure from it
        return (nbytes - 65536) / (b.last_at - b.first_at)

    async def test_single_bandwidth(self) -> None:
        """single-bandwidth 8 Mb/s (1 MiB/s): a pair moves data within 20 % of that."""
        settings = RelaySettings(deadlines=LONG, bandwidth=BandwidthSettings(8, 0, 0))
        fx = await self.start(settings)
        rate = await self.rate(fx, 2 * 1024 * 1024)
        self.assertLess(abs(rate / (1024 * 1024) - 1.0), 0.2, rate)

    async def test_blacklist_throttles(self) -> None:
        """A pair from a blacklisted address runs at limit-speed (8 Mb/s); the log says why."""
        settings = RelaySettings(deadlines=LONG, bandwidth=BandwidthSettings(0, 0, 8))
        fx = await self.start(settings)
        (self.data_dir / "blacklist.txt").write_text("127.0.0.1\n")
        fx.service.reload_lists()
        rate = await self.rate(fx, 2 * 1024 * 1024)
        self.assertLess(abs(rate / (1024 * 1024) - 1.0), 0.2, rate)
        ev = fx.named("throttled")[0]
        self.assertEqual((ev["limit"], ev["limit_speed"]), ("blacklist", 8))

    async def test_total_bandwidth(self) -> None:
        """total-bandwidth 16 Mb/s shared by two busy pairs: together within 20 % of 2 MiB/s."""
        settings = RelaySettings(deadlines=LONG, bandwidth=BandwidthSettings(0, 16, 0))
        fx = await self.start(settings)
        pairs = [await self.pair(fx, u, keep=False) for u in ("P1", "P2")]
        n = 2 * 1024 * 1024
        for a, _ in pairs:
            Source(a.transport, os.urandom(64 * 1024), n)
        await until(lambda: all(b.count >= n for _, b in pairs), timeout=60)
        firsts = [b.first_at for _, b in pairs]
        lasts = [b.last_at for _, b in pairs]
        start = min(x for x in firsts if x is not None)
        end = max(x for x in lasts if x is not None)
        rate = (2 * n - 65536) / (end - start)
        self.assertLess(abs(rate / (2 * 1024 * 1024) - 1.0), 0.2, rate)


# The same pipe and backpressure tests with each way of reading a paired leg.


class PipeTestsRecvInto(PipeTests):
    """L{PipeTests} with C{read_mode="recv_into"}."""

    settings = replace(PipeTests.settings, read_mode="recv_into")


class PipeTestsSplice(PipeTests):
    """L{PipeTests} with C{read_mode="splice"}."""

    settings = replace(PipeTests.settings, read_mode="splice")


class PipeTestsTwisted(PipeTests):
    """L{PipeTests} with C{read_mode="twisted"} and no direct writes."""

    settings = replace(PipeTests.settings, read_mode="twisted", fast_write=False)


class BackpressureTestsRecvInto(BackpressureTests):
    """L{BackpressureTests} with C{read_mode="recv_into"}."""

    settings = replace(BackpressureTests.settings, read_mode="recv_into")


class BackpressureTestsSplice(BackpressureTests):
    """L{BackpressureTests} with C{read_mode="splice"}."""

    settings = replace(BackpressureTests.settings, read_mode="splice")


class PipeTestsSpliceBurst(PipeTests):
    """L{PipeTests} with C{read_mode="splice"} moving up to 4 reads per reactor turn."""

    settings = replace(PipeTests.settings, read_mode="splice", reads_per_turn=4)


class PipeTestsSpliceReadSized(PipeTests):
    """L{PipeTests} with splices of one read size each (C{splice_max=0}; the
    default moves up to 1 MiB when the partner has room)."""

    settings = replace(PipeTests.settings, read_mode="splice", splice_max=0)


class BackpressureTestsSpliceReadSized(BackpressureTests):
    """L{BackpressureTests} with splices of one read size each (C{splice_max=0})."""

    settings = replace(BackpressureTests.settings, read_mode="splice", splice_max=0)
