"""Unit tests of the relay: pairing table, limiter, first frame, options, backpressure.

Everything here runs without sockets: the table and limiter with C{task.Clock},
the protocol over C{StringTransport}.  Socket tests are in C{test_relay_net}.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.usage import UsageError
from twisted.trial import unittest

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.relay.limiter import BandwidthSettings, PairLimiter, TokenBucket, mbps_to_bytes
from litedesk.relay.server import Relay, RelayProtocol, RelaySettings
from litedesk.relay.service import (
    RELAY_OPT_FLAGS,
    RELAY_OPT_PARAMETERS,
    read_address_list,
    relay_settings_from_options,
)
from litedesk.relay.table import (
    REASON_DRAIN,
    REASON_FIRST_FRAME_TIMEOUT,
    REASON_IDLE,
    REASON_PARTNER_TIMEOUT,
    ConnectionLimits,
    Deadlines,
    PairingTable,
    Phase,
    check_first_frame,
)
from litedesk.wire.bytescodec import encode_frame
from tests.test_relay_support import request_relay

HYP = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, max_examples=300
)


class TableTests(unittest.SynchronousTestCase):
    """The pairing table with an injected clock."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.table: PairingTable[str] = PairingTable(
            self.clock, Deadlines(first_frame=5, partner=10, idle=20, drain=3)
        )

    def test_same_uuid_pairs(self) -> None:
        """Two connections announcing the same uuid become one pair, first one as C{a}."""
        a = self.table.accept("a", "1.1.1.1")
        b = self.table.accept("b", "2.2.2.2")
        self.assertIsNone(self.table.first_frame(a, "U"))
        self.assertEqual(self.table.waiting_count, 1)
        pair = self.table.first_frame(b, "U")
        assert pair is not None
        self.assertIs(pair.a, a)
        self.assertIs(pair.b, b)
        self.assertEqual((a.phase, b.phase), (Phase.PAIRED, Phase.PAIRED))
        self.assertEqual((self.table.waiting_count, self.table.unpaired), (0, 0))

    def test_different_uuids_wait(self) -> None:
        """Connections with different uuids are not paired; both wait."""
        a = self.table.accept("a", "1.1.1.1")
        b = self.table.accept("b", "1.1.1.1")
        self.assertIsNone(self.table.first_frame(a, "U"))
        self.assertIsNone(self.table.first_frame(b, "V"))
        self.assertEqual(self.table.waiting_count, 2)

    def test_third_connection_waits_anew(self) -> None:
        """A third connection with an already paired uuid waits for a new partner."""
        conns = [self.table.accept(x, "1.1.1.1") for x in "abcd"]
        self.table.first_frame(conns[0], "U")
        self.assertIsNotNone(self.table.first_frame(conns[1], "U"))
        self.assertIsNone(self.table.first_frame(conns[2], "U"))
        self.assertEqual(conns[2].phase, Phase.WAITING)
        pair = self.table.first_frame(conns[3], "U")
        assert pair is not None
        self.assertEqual((pair.a.handle, pair.b.handle), ("c", "d"))

    def test_first_frame_deadline(self) -> None:
        """A connection that sends no first frame is due for closing at the deadline."""
        self.table.accept("a", "1.1.1.1")
        self.clock.advance(4.9)
        self.assertEqual(self.table.expire(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.table.expire(), [("a", REASON_FIRST_FRAME_TIMEOUT)])
        self.assertEqual(self.table.expire(), [])

    def test_partner_deadline(self) -> None:
        """A waiting connection is due at the partner deadline, counted from its first frame."""
        a = self.table.accept("a", "1.1.1.1")
        self.clock.advance(4)
        self.table.first_frame(a, "U")
        self.clock.advance(9.9)
        self.assertEqual(self.table.expire(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.table.expire(), [("a", REASON_PARTNER_TIMEOUT)])

    def test_paired_cancels_partner_deadline(self) -> None:
        """Once paired, neither leg's handshake or partner deadline fires."""
        a = self.table.accept("a", "1.1.1.1")
        b = self.table.accept("b", "1.1.1.1")
        self.table.first_frame(a, "U")
        self.table.first_frame(b, "U")
        self.clock.advance(15)
        self.assertEqual(self.table.expire(), [])

    def test_idle_deadline_lazy(self) -> None:
        """An idle pair is closed idle seconds after its last activity, not its start."""
        a = self.table.accept("a", "1.1.1.1")
        b = self.table.accept("b", "1.1.1.1")
        self.table.first_frame(a, "U")
        pair = self.table.first_frame(b, "U")
        assert pair is not None
        self.clock.advance(15)
        pair.last_activity = self.clock.seconds()
        self.clock.advance(5)
        self.assertEqual(self.table.expire(), [])
        self.clock.advance(14.9)
        self.assertEqual(self.table.expire(), [])
        self.clock.advance(0.1)
        self.assertEqual(sorted(self.table.expire()), [("a", REASON_IDLE), ("b", REASON_IDLE)])
        self.assertEqual(pair.reason, REASON_IDLE)

    def test_lost_pair_drain_and_record(self) -> None:
        """One leg lost: the other gets a drain deadline; both lost: pair finished once."""
        a = self.table.accept("a", "1.1.1.1")
        b = self.table.accept("b", "2.2.2.2")
        self.table.first_frame(a, "U")
        pair = self.table.first_frame(b, "U")
        assert pair is not None
        pair.a_to_b, pair.b_to_a = 10, 20
        self.assertIs(self.table.lost(a, "a closed"), pair)
        self.assertEqual(pair.alive, 1)
        self.clock.advance(3)
        self.assertEqual(self.table.expire(), [("b", REASON_DRAIN)])
        self.assertIs(self.table.lost(b, "drain"), pair)
        self.assertEqual(pair.alive, 0)
        self.assertEqual(pair.reason, "a closed")
        self.assertIsNone(self.table.lost(b, "again"))
        self.assertEqual(self.table.bytes_finished, 30)
        self.assertEqual((self.table.connections, self.table.per_ip), (0, {}))

    def test_lost_waiting_leaves_uuid_free(self) -> None:
        """A waiting connection that goes away is no longer paired with."""
        a = self.table.accept("a", "1.1.1.1")
        self.table.first_frame(a, "U")
        self.table.lost(a, "gone")
        b = self.table.accept("b", "1.1.1.1")
        self.assertIsNone(self.table.first_frame(b, "U"))

    def test_accept_limits(self) -> None:
        """Blocklist, per-address and unpaired limits refuse at accept, naming the limit."""
        t: PairingTable[str] = PairingTable(
            self.clock, limits=ConnectionLimits(max_per_ip=2, max_unpaired=3)
        )
        t.blocklist = frozenset({"9.9.9.9"})
        refusal = t.check_accept("9.9.9.9")
        assert refusal is not None
        self.assertEqual(refusal.limit, "blocklist")
        t.accept("x", "1.1.1.1")
        t.accept("y", "1.1.1.1")
        refusal = t.check_accept("1.1.1.1")
        assert refusal is not None
        self.assertEqual(
            (refusal.limit, refusal.value, refusal.count), ("max-connections-per-ip", 2, 2)
        )
        t.accept("z", "2.2.2.2")
        refusal = t.check_accept("3.3.3.3")
        assert refusal is not None
        self.assertEqual(refusal.limit, "max-unpaired")


# -- hypothesis: arbitrary orders of connect / first frame / close / time ----------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("connect"), st.integers(0, 2)),
        st.tuples(st.just("frame"), st.integers(0, 9), st.sampled_from(["U", "V", "W"])),
        st.tuples(st.just("close"), st.integers(0, 9)),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 3.0, 7.0])),
    ),
    max_size=60,
)


class TableModelTests(unittest.SynchronousTestCase):
    """The table's invariants hold whatever peers do, in whatever order."""

    @HYP
    @given(_ops)
    def test_invariants(self, ops: list[tuple[Any, ...]]) -> None:
        """Counts match the open connections, pairs share a uuid, deadlines only hit open ones."""
        clock = task.Clock()
        t: PairingTable[int] = PairingTable(
            clock,
            Deadlines(first_frame=2, partner=4, idle=6, drain=1),
            ConnectionLimits(max_per_ip=5, max_unpaired=6),
        )
        conns: list[Any] = []
        for op in ops:
            if op[0] == "connect":
                ip = f"10.0.0.{op[1]}"
                if t.check_accept(ip) is None:
                    conns.append(t.accept(len(conns), ip))
            elif op[0] == "frame" and op[1] < len(conns):
                c = conns[op[1]]
                if c.phase is Phase.HANDSHAKE:
                    pair = t.first_frame(c, op[2])
                    if pair is not None:
                        self.assertIsNot(pair.a, pair.b)
                        self.assertEqual(pair.a.uuid, pair.b.uuid)
            elif op[0] == "close" and op[1] < len(conns):
                t.lost(conns[op[1]], "closed")
            elif op[0] == "advance":
                clock.advance(op[1])
                for handle, _reason in t.expire():
                    self.assertIsNot(conns[handle].phase, Phase.CLOSED)
                    t.lost(conns[handle], _reason)
            self._check(t, conns)
        for c in conns:
            t.lost(c, "end")
        self._check(t, conns)
        self.assertEqual(
            (t.connections, t.unpaired, t.per_ip, t.waiting, t.pairs), (0, 0, {}, {}, set())
        )

    def _check(self, t: PairingTable[int], conns: list[Any]) -> None:
        open_ = [c for c in conns if c.phase is not Phase.CLOSED]
        self.assertEqual(t.connections, len(open_))
        self.assertEqual(
            t.unpaired, sum(1 for c in open_ if c.phase in (Phase.HANDSHAKE, Phase.WAITING))
        )
        self.assertEqual(sum(t.per_ip.values()), len(open_))
        for uuid, c in t.waiting.items():
            self.assertEqual((c.phase, c.uuid), (Phase.WAITING, uuid))
        for pair in t.pairs:
            self.assertGreater(pair.alive, 0)
            self.assertIn(pair.a.phase, (Phase.PAIRED, Phase.CLOSED))


# -- first frame -------------------------------------------------------------------------


class FirstFrameTests(unittest.SynchronousTestCase):
    """hbbr's checks on the first frame."""

    def test_good(self) -> None:
        """A RequestRelay with a uuid (and the right key) is accepted."""
        payload = rz.RendezvousMessage(
            request_relay=rz.RequestRelay(uuid="u", licence_key="K")
        ).SerializeToString()
        self.assertEqual(check_first_frame(payload, "K").uuid, "u")
        self.assertEqual(check_first_frame(payload, "").uuid, "u")

    def test_wrong_key(self) -> None:
        """A licence_key different from the configured key is refused, naming the reason."""
        payload = rz.RendezvousMessage(
            request_relay=rz.RequestRelay(uuid="u", licence_key="X")
        ).SerializeToString()
        self.assertEqual(check_first_frame(payload, "K").reason, "wrong licence key")

    def test_empty_uuid_and_other_messages(self) -> None:
        """Empty uuid, other messages, empty and garbage payloads are all refused."""
        empty = rz.RendezvousMessage(request_relay=rz.RequestRelay()).SerializeToString()
        self.assertEqual(check_first_frame(empty, "").reason, "empty uuid")
        other = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id="x")).SerializeToString()
        self.assertIn("register_peer", check_first_frame(other, "").reason)
        self.assertIn("empty", check_first_frame(b"", "").reason)
        self.assertTrue(check_first_frame(b"\xff\xff\xff", "").reason)

    @HYP
    @given(st.binary(max_size=200))
    def test_arbitrary_payload(self, payload: bytes) -> None:
        """Any payload gives either a uuid or a reason, never an exception."""
        r = check_first_frame(payload, "")
        self.assertTrue(bool(r.uuid) != bool(r.reason))


# -- limiter -------------------------------------------------------------------------------


class LimiterTests(unittest.SynchronousTestCase):
    """Token buckets and hbbr's downgrade rule, with an injected clock."""

    def test_units(self) -> None:
        """One Mb/s is 1024*1024 bits per second, as hbbr counts it."""
        self.assertEqual(mbps_to_bytes(8), 1024 * 1024)

    def test_rate(self) -> None:
        """Consuming at twice the rate for a while means waiting about as long again."""
        clock = task.Clock()
        bucket = TokenBucket(100_000, clock.seconds())
        waited = 0.0
        for _ in range(200):
            delay = bucket.consume(1000, clock.seconds())
            clock.advance(max(delay, 0.005))
            waited += max(delay, 0.005)
        # 200 kB at 100 kB/s: about 2 s minus the initial burst (64 KiB)
        self.assertAlmostEqual(waited, (200_000 - 65536) / 100_000, delta=0.05)

    def test_unlimited(self) -> None:
        """A rate of 0 never asks to wait."""
        bucket = TokenBucket(0, 0.0)
        self.assertEqual(bucket.consume(10**9, 0.0), 0.0)

    def test_pair_and_total(self) -> None:
        """A pair waits for the slower of its own bucket and the shared total bucket."""
        s = BandwidthSettings(single_bandwidth=80, total_bandwidth=8)
        total = TokenBucket(mbps_to_bytes(8), 0.0)
        lim = PairLimiter(s, total, 0.0)
        delay = lim.consume(1024 * 1024 + 65536, 0.0)
        self.assertAlmostEqual(delay, 1.0, places=6)

    def test_downgrade(self) -> None:
        """After the start check, an average above threshold x single throttles the pair."""
        s = BandwidthSettings(
            single_bandwidth=8, limit_speed=1, downgrade_threshold=0.5, downgrade_start_check=10
        )
        lim = PairLimiter(s, TokenBucket(0, 0.0), 0.0)
        lim.total_bytes = 6 * 1024 * 1024  # 0.6 MiB/s over 10 s; threshold is 0.5 MiB/s
        self.assertFalse(lim.should_downgrade(10.0))
        self.assertTrue(lim.should_downgrade(10.5))
        self.assertTrue(lim.throttle("downgrade", 10.5))
        self.assertEqual(lim.bucket.rate, mbps_to_bytes(1))
        self.assertFalse(lim.throttle("blacklist", 11))
        self.assertFalse(lim.should_downgrade(11.0))


# -- options -------------------------------------------------------------------------------


class OptionsTests(unittest.SynchronousTestCase):
    """Command-line options and hbbr's environment variables."""

    def test_defaults_are_hbbr_1_1_17(self) -> None:
        """With nothing given, the limits are hbbr 1.1.17's and deadlines are 30 s."""
        s = relay_settings_from_options({}, {})
        b = s.bandwidth
        self.assertEqual(
            (b.single_bandwidth, b.total_bandwidth, b.limit_speed),
            (128.0, 1024.0, 32.0),
        )
        self.assertEqual((b.downgrade_threshold, b.downgrade_start_check), (0.66, 1800.0))
        self.assertEqual(s.deadlines, Deadlines(30, 30, 30, 30))
        self.assertGreaterEqual(s.limits.max_per_ip, 256)

    def test_env_and_options_win(self) -> None:
        """hbbr's environment variables apply, and options given on the command line win."""
        env = {"SINGLE_BANDWIDTH": "16", "LIMIT_SPEED": "4", "TOTAL_BANDWIDTH": "0"}
        s = relay_settings_from_options({"limit-speed": "2", "relay-idle-timeout": "5"}, env)
        self.assertEqual(s.bandwidth.single_bandwidth, 16)
        self.assertEqual(s.bandwidth.limit_speed, 2)
        self.assertEqual(s.bandwidth.total_bandwidth, 0)
        self.assertEqual(s.deadlines.idle, 5)

    def test_bad_values(self) -> None:
        """Negative or non-numeric values are usage errors naming the option."""
        self.assertRaises(UsageError, relay_settings_from_options, {"single-bandwidth": "-1"}, {})
        e = self.assertRaises(UsageError, relay_settings_from_options, {}, {"LIMIT_SPEED": "x"})
        self.assertIn("LIMIT_SPEED", str(e))
        self.assertRaises(UsageError, relay_settings_from_options, {"max-unpaired": "1.5"}, {})
        self.assertRaises(UsageError, relay_settings_from_options, {"relay-read-mode": "x"}, {})

    def test_usage_options_format(self) -> None:
        """The option lists plug into twisted usage.Options and parse."""
        from twisted.python import usage

        class Opts(usage.Options):
            optParameters = RELAY_OPT_PARAMETERS
            optFlags = RELAY_OPT_FLAGS

        o = Opts()
        o.parseOptions(["--single-bandwidth", "64", "--relay-no-fast-write"])
        s = relay_settings_from_options(o, {"SINGLE_BANDWIDTH": "1"})
        self.assertEqual(s.bandwidth.single_bandwidth, 64)
        self.assertFalse(s.fast_write)
        self.assertEqual(s.read_mode, "auto")
        o = Opts()
        o.parseOptions(["--relay-read-mode", "twisted"])
        self.assertEqual(relay_settings_from_options(o, {}).read_mode, "twisted")
        self.assertIn("--downgrade-start-check", str(o))

    def test_list_format(self) -> None:
        """List files: an address per line, text after a space ignored, v4-mapped normalised."""
        self.assertEqual(
            read_address_list("1.2.3.4 office\n\n::ffff:5.6.7.8\n# comment\n2001:db8::1\n"),
            frozenset({"1.2.3.4", "5.6.7.8", "2001:db8::1"}),
        )


# -- protocol over StringTransport ------------------------------------------------------------


class BoundedTransport(StringTransport):
    """A StringTransport that, like a real one, pauses its producer when its buffer is full."""

    bufferSize = 1000

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and len(self.value()) > self.bufferSize:
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        data: bytes = self.value()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
        return data


class ProtocolTests(unittest.SynchronousTestCase):
    """The protocol over StringTransports: pairing, early bytes, pausing."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.relay = Relay(
            self.clock,
            RelaySettings(
                deadlines=Deadlines(1, 1, 1, 1),
                bandwidth=BandwidthSettings(0, 0, 0),
                early_buffer=500,
            ),
            licence="K",
        )

    def leg(self, n: int) -> tuple[RelayProtocol, BoundedTransport]:
        addr = IPv4Address("TCP", f"10.0.0.{n}", 1000 + n)
        proto = self.relay.build(addr)
        assert proto is not None
        t = BoundedTransport(peerAddress=addr)
        proto.makeConnection(t)
        return proto, t

    def paired(self) -> tuple[RelayProtocol, BoundedTransport, RelayProtocol, BoundedTransport]:
        a, ta = self.leg(1)
        b, tb = self.leg(2)
        a.dataReceived(request_relay("U", "K") + b"from-a")
        b.dataReceived(request_relay("U", "K") + b"from-b")
        return a, ta, b, tb

    def test_pairing_wires_producers(self) -> None:
        """Each leg's transport has the other leg registered as its streaming producer."""
        a, ta, b, tb = self.paired()
        self.assertIs(ta.producer, b)
        self.assertIs(tb.producer, a)
        self.assertTrue(ta.streaming and tb.streaming)

    def test_early_bytes_forwarded_in_order(self) -> None:
        """Bytes behind the first frame, on either side, reach the partner first and intact."""
        a, ta, b, tb = self.paired()
        a.dataReceived(b"+more")
        self.assertEqual(tb.value(), b"from-a+more")
        self.assertEqual(ta.value(), b"from-b")

    def test_a_full_pauses_b(self) -> None:
        """When a's write buffer fills, b stops reading until a's buffer drains."""
        a, ta, b, tb = self.paired()
        b.dataReceived(b"x" * 2000)
        self.assertEqual(tb.producerState, "paused")
        self.assertEqual(ta.producerState, "producing")
        ta.drain()
        self.assertEqual(tb.producerState, "producing")

    def test_b_full_pauses_a(self) -> None:
        """When b's write buffer fills, a stops reading until b's buffer drains."""
        a, ta, b, tb = self.paired()
        a.dataReceived(b"x" * 2000)
        self.assertEqual(ta.producerState, "paused")
        tb.drain()
        self.assertEqual(ta.producerState, "producing")

    def test_waiting_buffer_pauses(self) -> None:
        """A waiting connection keeps early bytes up to a bound, then stops reading."""
        a, ta = self.leg(1)
        a.dataReceived(request_relay("U", "K") + b"e" * 600)
        self.assertEqual(ta.producerState, "paused")
        b, tb = self.leg(2)
        b.dataReceived(request_relay("U", "K"))
        self.assertEqual(tb.value(), b"e" * 600)
        self.assertEqual(ta.producerState, "producing")

    def test_limit_pause_survives_consumer_resume(self) -> None:
        """A leg paused by the bandwidth limit stays paused when its partner drains."""
        self.relay = Relay(
            self.clock,
            RelaySettings(bandwidth=BandwidthSettings(single_bandwidth=8, total_bandwidth=0)),
        )
        a, ta = self.leg(1)
        b, tb = self.leg(2)
        a.dataReceived(request_relay("U"))
        b.dataReceived(request_relay("U"))
        a.dataReceived(b"x" * (2 * 1024 * 1024))
        self.assertEqual(ta.producerState, "paused")
        tb.drain()
        self.assertEqual(ta.producerState, "paused")
        self.clock.advance(0.9)
        self.assertEqual(ta.producerState, "paused")
        self.clock.advance(1.2)
        self.assertEqual(ta.producerState, "producing")

    def test_partner_close_flushes_then_closes(self) -> None:
        """When one leg ends, the other unregisters its producer and closes after flushing."""
        a, ta, b, tb = self.paired()
        a.connectionLost()
        self.assertIsNone(tb.producer)
        self.assertTrue(tb.disconnecting)
        self.assertEqual(tb.value(), b"from-a")
        b.connectionLost()
        self.assertEqual(self.relay.stats().pairs_finished, 1)

    def test_bad_first_frames_closed(self) -> None:
        """Wrong key, wrong message, empty uuid and oversize frames close without a reply."""
        bad = [
            request_relay("U", "wrong"),
            request_relay("", "K"),
            encode_frame(rz.RendezvousMessage(register_peer=rz.RegisterPeer()).SerializeToString()),
            (70000 << 2 | 2).to_bytes(3, "little"),
        ]
        reasons = []
        for i, data in enumerate(bad):
            p, t = self.leg(10 + i)
            p.dataReceived(data)
            self.assertTrue(t.disconnected, data[:10])
            self.assertEqual(t.value(), b"")
            reasons.append(p.reason)
        self.assertEqual(reasons[0], "wrong licence key")
        self.assertEqual(reasons[1], "empty uuid")
        self.assertIn("register_peer", reasons[2])
        self.assertIn("exceeds max-first-frame", reasons[3])
        self.assertEqual(self.relay.stats().connections, 0)

    def test_deadline_closes(self) -> None:
        """A silent connection is aborted by the sweep once its deadline passes."""
        p, t = self.leg(1)
        self.clock.advance(1)
        self.relay.sweep()
        self.assertTrue(t.disconnected)
        self.assertEqual(p.reason, REASON_FIRST_FRAME_TIMEOUT)
        self.assertEqual(self.relay.stats().connections, 0)

    @HYP
    @given(st.lists(st.binary(min_size=1, max_size=40), max_size=8))
    def test_arbitrary_first_bytes(self, chunks: list[bytes]) -> None:
        """Arbitrary bytes in arbitrary chunks never raise; the leg closes, waits or stays open."""
        p, t = self.leg(3)
        for c in chunks:
            p.dataReceived(c)
        assert p.conn is not None
        self.assertIn(p.conn.phase, (Phase.HANDSHAKE, Phase.WAITING, Phase.CLOSED))
        self.assertEqual(t.value(), b"")
        p.connectionLost()
        self.assertEqual(self.relay.stats().connections, 0)
