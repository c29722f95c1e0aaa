"""Unit tests of the relay: pairing table, limiter, first frame, options, backpressure.

Everything here runs without sockets: the table and limiter with C{task.Clock},
the protocol over C{StringTransport}.  Socket tests are in C{test_relay_net}.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.usage import UsageError
from twisted.trial import unittest

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.relay.leg import RelayProtocol
from litedesk.relay.limiter import (
    BandwidthSettings,
    EarlyBudget,
    PairLimiter,
    TokenBucket,
    mbps_to_bytes,
)
from litedesk.relay.server import EXHAUSTED_LOG_INTERVAL, Relay
from litedesk.relay.service import (
    RELAY_OPT_FLAGS,
    RELAY_OPT_PARAMETERS,
    read_address_list,
    relay_settings_from_options,
)
from litedesk.relay.settings import RelaySettings
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
from tests.support.relay import request_relay

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
        for name, value in (("relay-early-buffer", "100"), ("relay-early-budget", "1.5")):
            e = self.assertRaises(UsageError, relay_settings_from_options, {name: value}, {})
            self.assertIn(name, str(e))

    def test_early_data_options(self) -> None:
        """Early data is bounded by default (64 KiB a leg, 16 MiB in all) and both bounds
        can be set; the budget can be lifted with 0."""
        s = relay_settings_from_options({}, {})
        self.assertEqual((s.early_buffer, s.early_budget), (64 * 1024, 16 * 1024 * 1024))
        s = relay_settings_from_options(
            {"relay-early-buffer": "32768", "relay-early-budget": "0"}, {}
        )
        self.assertEqual((s.early_buffer, s.early_budget), (32768, 0))

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
        a, ta, _b, tb = self.paired()
        a.dataReceived(b"+more")
        self.assertEqual(tb.value(), b"from-a+more")
        self.assertEqual(ta.value(), b"from-b")

    def test_a_full_pauses_b(self) -> None:
        """When a's write buffer fills, b stops reading until a's buffer drains."""
        _a, ta, b, tb = self.paired()
        b.dataReceived(b"x" * 2000)
        self.assertEqual(tb.producerState, "paused")
        self.assertEqual(ta.producerState, "producing")
        ta.drain()
        self.assertEqual(tb.producerState, "producing")

    def test_b_full_pauses_a(self) -> None:
        """When b's write buffer fills, a stops reading until b's buffer drains."""
        a, ta, _b, tb = self.paired()
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
        a, _ta, b, tb = self.paired()
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


# -- early data: per-leg bound and process-wide budget --------------------------------------


class EarlyBudgetTests(unittest.SynchronousTestCase):
    """The early-data budget on its own."""

    def test_grants_then_queues_in_order(self) -> None:
        """Requests are granted until the budget is spent; later ones wait, keep their place
        and are granted in the order they asked as grants come back."""
        b: EarlyBudget[str] = EarlyBudget(3000)
        self.assertEqual(b.request("a", 1000), 1000)
        self.assertEqual(b.request("b", 1000), 1000)
        self.assertEqual(b.request("c", 1500), 0)
        # d's request would fit, but c asked first: no jumping the queue.
        self.assertEqual(b.request("d", 500), 0)
        self.assertEqual(b.request("c", 1500), 0)
        self.assertEqual((b.granted, b.waiting, b.exhausted), (2000, 2, 2))
        self.assertEqual(b.release("a", 1000), [("c", 1500), ("d", 500)])
        self.assertEqual((b.granted, b.waiting), (3000, 0))
        self.assertEqual(b.release("b", 1000), [])
        self.assertEqual(b.granted, 2000)

    def test_leg_that_leaves_the_queue_is_never_granted(self) -> None:
        """A queued leg that is closed (released) leaves the queue; the next one gets its turn."""
        b: EarlyBudget[str] = EarlyBudget(1000)
        b.request("a", 1000)
        b.request("b", 600)
        b.request("c", 600)
        self.assertEqual(b.release("b", 0), [])
        self.assertEqual(b.release("a", 1000), [("c", 600)])

    def test_oversize_request_and_no_limit(self) -> None:
        """A request larger than the budget is cut to it; a budget of 0 grants everything."""
        b: EarlyBudget[str] = EarlyBudget(1000)
        self.assertEqual(b.request("a", 5000), 1000)
        unlimited: EarlyBudget[str] = EarlyBudget(0)
        self.assertEqual(unlimited.request("a", 10**9), 10**9)
        self.assertEqual(unlimited.waiting, 0)

    @HYP
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["request", "release"]),
                st.integers(0, 5),
                st.integers(1, 1200),
            ),
            max_size=60,
        )
    )
    def test_model(self, ops: list[tuple[str, int, int]]) -> None:
        """Grants never exceed the limit and add up to what legs hold; queued legs are granted
        in the order they asked; nobody waits while the budget could serve the first in line."""
        limit = 1000
        b: EarlyBudget[int] = EarlyBudget(limit)
        held: dict[int, int] = {}
        queue: list[tuple[int, int]] = []
        for kind, leg, n in ops:
            if kind == "request":
                got = b.request(leg, n)
                if got:
                    self.assertEqual(got, min(n, limit))
                    held[leg] = held.get(leg, 0) + got
                elif leg not in [q for q, _ in queue]:
                    queue.append((leg, min(n, limit)))
            else:
                woken = b.release(leg, held.pop(leg, 0))
                queue = [q for q in queue if q[0] != leg]
                self.assertEqual(woken, queue[: len(woken)])
                del queue[: len(woken)]
                for w, g in woken:
                    held[w] = held.get(w, 0) + g
            self.assertLessEqual(b.granted, limit)
            self.assertEqual(b.granted, sum(held.values()))
            self.assertEqual(b.waiting, len(queue))
            if queue:
                self.assertGreater(b.granted + queue[0][1], limit)


class Kernel:
    """The bytes peers sent that the relay has not read yet, handed over as legs read.

    Like a socket, it gives a leg at most what the leg asks for per read
    (L{RelayProtocol.read_allowance}) and nothing while the leg is paused.
    """

    def __init__(self) -> None:
        self.pending: dict[RelayProtocol, bytearray] = {}

    def send(self, proto: RelayProtocol, data: bytes) -> None:
        self.pending.setdefault(proto, bytearray()).extend(data)

    def pump(self) -> None:
        """Round-robin reads until no leg can read any more."""
        for _ in range(100_000):
            progress = False
            for proto, buf in list(self.pending.items()):
                t = proto.transport
                if not buf or t is None or t.disconnecting:  # type: ignore[attr-defined]
                    continue
                n = proto.read_allowance()
                if n:
                    chunk = bytes(buf[:n])
                    del buf[:n]
                    proto.dataReceived(chunk)
                    progress = True
            if not progress:
                return
        raise AssertionError("pump did not settle")

    def unread(self, proto: RelayProtocol) -> int:
        return len(self.pending.get(proto, b""))


def _early(i: int, n: int = 3000) -> bytes:
    return random.Random(i).randbytes(n)


class EarlyDataTests(unittest.SynchronousTestCase):
    """Unpaired legs over StringTransports: per-leg bound, budget, pause and resume order."""

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self._observe)  # type: ignore[arg-type]
        self.addCleanup(globalLogPublisher.removeObserver, self._observe)  # type: ignore[arg-type]
        self.fresh()

    def fresh(self) -> None:
        self.clock = task.Clock()
        # Budget of two grants of 1 KiB, 1 KiB reserve per leg.
        self.relay = Relay(
            self.clock,
            RelaySettings(
                deadlines=Deadlines(60, 60, 60, 60),
                bandwidth=BandwidthSettings(0, 0, 0),
                early_buffer=4096,
                early_reserve=1024,
                unpaired_read=1024,
                early_budget=2048,
            ),
        )
        self.kernel = Kernel()
        self.n = 0

    def _observe(self, event: dict[str, Any]) -> None:
        if event.get("relay_event") == "early_budget_exhausted":
            self.events.append(event)

    def leg(self, first: bytes = b"") -> tuple[RelayProtocol, StringTransport]:
        self.n += 1
        addr = IPv4Address("TCP", "10.0.0.2", 1000 + self.n)
        proto = self.relay.build(addr)
        assert proto is not None
        t = StringTransport(peerAddress=addr)
        proto.makeConnection(t)
        if first:
            self.kernel.send(proto, first)
        return proto, t

    def flood(self, n: int) -> list[tuple[RelayProtocol, StringTransport]]:
        legs = [self.leg(request_relay(f"u{i}") + _early(i)) for i in range(n)]
        self.kernel.pump()
        return legs

    def test_budget_pauses_legs_and_resumes_them_in_order(self) -> None:
        """Five legs each sending 3,000 early bytes into a 2 KiB budget: all stop reading with
        the relay holding at most budget + reserves; each leg's grants, when it goes, let the
        first leg in line read again, then the next."""
        legs = self.flood(5)
        self.assertEqual([t.producerState for _, t in legs], ["paused"] * 5)
        s = self.relay.stats()
        self.assertEqual((s.early_granted, s.early_budget, s.early_paused), (2048, 2048, 5))
        self.assertLessEqual(s.early_bytes, 2048 + 5 * 1024)
        self.assertEqual(s.early_bytes, sum(p.held() for p, _ in legs))
        # Legs 0 and 1 got the two grants; 2, 3 and 4 asked next, then 0 and 1 again:
        # each grant that comes back goes to the first leg in line.
        legs[0][0].connectionLost()
        self.assertEqual([t.producerState for _, t in legs[2:]], ["producing", "paused", "paused"])
        self.kernel.pump()  # leg 2 fills its new grant and queues again, behind 3 and 4
        legs[1][0].connectionLost()
        self.assertEqual([t.producerState for _, t in legs[2:]], ["paused", "producing", "paused"])
        self.kernel.pump()
        self.assertLessEqual(self.relay.stats().early_granted, 2048)

    def test_partner_arrival_resumes_and_nothing_is_lost(self) -> None:
        """A leg stopped by the budget reads again when its partner arrives, and the partner
        gets every early byte, in order, whatever part the relay held and the kernel kept."""
        legs = self.flood(5)
        self.assertTrue(all(self.kernel.unread(p) for p, _ in legs))
        for i in (2, 4, 0, 3, 1):
            t = legs[i][1]
            pt = self.leg(request_relay(f"u{i}"))[1]
            self.kernel.pump()
            self.assertEqual(pt.value(), _early(i), i)
            self.assertEqual(t.producerState, "producing")
        s = self.relay.stats()
        self.assertEqual((s.early_granted, s.early_paused, s.early_bytes), (0, 0, 0))
        self.assertEqual(s.active_pairs, 5)

    def test_per_leg_bound(self) -> None:
        """With the budget to spare, a waiting leg still keeps no more than early-buffer."""
        self.relay = Relay(
            self.clock, replace(self.relay.settings, early_budget=0, early_buffer=2500)
        )
        [(p, t)] = self.flood(1)
        self.assertEqual(t.producerState, "paused")
        self.assertEqual(p.held(), 2500)
        self.assertEqual(self.kernel.unread(p), 500)
        self.assertEqual(self.relay.stats().early_paused, 0)

    def test_exhausted_warning_is_rate_limited(self) -> None:
        """The first pause for the budget is logged with the limit; the next within the interval
        are only counted, and the next warning says how many there were."""
        self.flood(5)
        self.assertEqual(len(self.events), 1)
        self.assertEqual(self.events[0]["limit"], 2048)
        exhausted = self.relay.stats().early_exhausted
        self.assertGreaterEqual(exhausted, 5)
        self.clock.advance(EXHAUSTED_LOG_INTERVAL)
        self.leg(request_relay("late") + _early(9))
        self.kernel.pump()
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.events[1]["suppressed"], exhausted - 1)
        self.assertEqual(self.relay.stats().early_exhausted, exhausted + 1)

    def test_big_first_frame_draws_on_the_budget(self) -> None:
        """A first frame larger than the reserve needs grants too, and still pairs."""
        frame = encode_frame(
            rz.RendezvousMessage(
                request_relay=rz.RequestRelay(uuid="big", licence_key="k" * 3000)
            ).SerializeToString()
        )
        legs = self.flood(5)  # the budget is spent
        p, t = self.leg(frame)
        self.kernel.pump()
        assert p.conn is not None
        self.assertEqual((p.conn.phase, t.producerState), (Phase.HANDSHAKE, "paused"))
        for leg, _ in legs:
            leg.connectionLost()
        self.kernel.pump()
        self.assertEqual(p.conn.phase, Phase.WAITING)

    @HYP
    @given(
        st.lists(
            st.one_of(
                st.tuples(st.just("send"), st.integers(0, 5), st.integers(1, 5000)),
                st.tuples(st.just("partner"), st.integers(0, 5), st.just(0)),
                st.tuples(st.just("close"), st.integers(0, 5), st.just(0)),
            ),
            max_size=25,
        )
    )
    def test_any_order_loses_nothing(self, ops: list[tuple[str, int, int]]) -> None:
        """Whatever legs send, and whenever partners arrive or legs close, grants stay within
        the budget, each leg holds at most early-buffer, and every paired partner receives
        exactly the bytes its leg sent, in order."""
        self.fresh()
        legs = [self.leg(request_relay(f"m{i}")) for i in range(6)]
        sent = [bytearray() for _ in legs]
        partners: dict[int, StringTransport] = {}
        closed: set[int] = set()
        for kind, i, n in ops:
            p, _ = legs[i]
            if i in closed:
                continue
            if kind == "send":
                data = random.Random(n * 7 + i).randbytes(n)
                sent[i] += data
                self.kernel.send(p, data)
            elif kind == "partner" and i not in partners:
                partners[i] = self.leg(request_relay(f"m{i}"))[1]
            elif kind == "close" and i not in partners:
                p.connectionLost()
                self.kernel.pending.pop(p, None)
                closed.add(i)
            self.kernel.pump()
            s = self.relay.stats()
            self.assertLessEqual(s.early_granted, 2048)
            for j, (q, _) in enumerate(legs):
                if j not in closed:
                    self.assertLessEqual(q.held(), 4096)
        for i, pt in partners.items():
            self.assertEqual(pt.value(), bytes(sent[i]))
        for i in range(6):
            if i not in partners and i not in closed:
                partners[i] = self.leg(request_relay(f"m{i}"))[1]
        self.kernel.pump()
        for i, pt in partners.items():
            self.assertEqual(pt.value(), bytes(sent[i]), i)
        self.assertEqual(self.relay.stats().early_granted, 0)
