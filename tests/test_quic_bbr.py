"""The QUIC sessions' loss-tolerant congestion controller (litedesk.quic.bbr).

A small discrete-time link (a bottleneck of a given rate with a bounded
queue, a fixed round trip, random loss) drives the controller through the
calls aioquic makes: random loss at 2 % leaves its window near twice the
bandwidth-delay product where NewReno's collapses, a queue that overflows
cuts it, persistent congestion resets it, and any sequence of calls keeps
its bookkeeping sound (hypothesis).  The end-to-end figure is
bench/quic_goodput.py's.
"""

from __future__ import annotations

import heapq
import random
from typing import Any

from aioquic.quic.congestion.base import create_congestion_control
from aioquic.quic.packet import QuicPacketType
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.tls import Epoch
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litedesk.quic import bbr
from litedesk.quic.tls_config import host_configuration, viewer_configuration

MSS = 1200
RTT = 0.040
RATE = 20e6 / 8  # bytes per second at the bottleneck
BDP = RATE * RTT


def packet(number: int, now: float) -> QuicSentPacket:
    return QuicSentPacket(
        epoch=Epoch.ONE_RTT,
        in_flight=True,
        is_ack_eliciting=True,
        is_crypto_packet=False,
        packet_number=number,
        packet_type=QuicPacketType.ONE_RTT,
        sent_time=now,
        sent_bytes=MSS,
    )


def run_link(cc: Any, seconds: float, loss: float, queue: float = 0.05, seed: int = 1) -> Any:
    """Drive C{cc} as a bulk sender through the simulated link; return it."""
    rng = random.Random(seed)
    events: list[tuple[float, int, str, QuicSentPacket]] = []
    now = 0.0
    link_free = 0.0
    number = 0
    step = 0.0005
    while now < seconds:
        while cc.bytes_in_flight + MSS <= cc.congestion_window:
            p = packet(number, now)
            number += 1
            cc.on_packet_sent(packet=p)
            start = max(now, link_free)
            if start - now > queue or rng.random() < loss:
                # Dropped by a full queue or at random: noticed a round trip later.
                heapq.heappush(events, (now + RTT * 1.25, number, "lost", p))
                continue
            link_free = start + MSS / RATE
            heapq.heappush(events, (link_free + RTT, number, "acked", p))
        now += step
        while events and events[0][0] <= now:
            at, _, what, p = heapq.heappop(events)
            if what == "acked":
                cc.on_packet_acked(now=at, packet=p)
                cc.on_rtt_measurement(now=at, rtt=at - (p.sent_time or 0.0))
            else:
                cc.on_packets_lost(now=at, packets=[p])
    return cc


class LossTests(SynchronousTestCase):
    def test_random_loss_keeps_the_pipe_full(self) -> None:
        """2 % random loss: the window stays at least one bandwidth-delay product
        (NewReno's, on the same link, falls far below it)."""
        ours = run_link(bbr.LossTolerantBbr(max_datagram_size=MSS), 6.0, 0.02)
        self.assertFalse(ours.in_startup)
        self.assertGreater(ours.congestion_window, BDP)
        self.assertGreater(ours.btl_bw, 0.8 * RATE)
        reno = run_link(create_congestion_control("reno", max_datagram_size=MSS), 6.0, 0.02)
        self.assertLess(reno.congestion_window, 0.5 * BDP)

    def test_no_loss_bounds_the_queue(self) -> None:
        """Without loss the window settles near twice the BDP, not unbounded."""
        ours = run_link(bbr.LossTolerantBbr(max_datagram_size=MSS), 4.0, 0.0, queue=1.0)
        self.assertLess(ours.congestion_window, 3 * BDP)
        self.assertGreater(ours.congestion_window, BDP)

    def test_heavy_loss_cuts_the_window(self) -> None:
        """A round that loses more than HEAVY_LOSS of what it sent cuts the window."""
        cc = bbr.LossTolerantBbr(max_datagram_size=MSS)
        sent = [packet(n, 0.0) for n in range(10)]
        for p in sent:
            cc.on_packet_sent(packet=p)
        before = cc.congestion_window
        cc.on_packets_lost(now=0.05, packets=sent[:3])
        self.assertEqual(cc.congestion_window, int(before * bbr.HEAVY_LOSS_CUT))
        self.assertEqual(cc.bytes_in_flight, 7 * MSS)

    def test_persistent_congestion_starts_again(self) -> None:
        cc = run_link(bbr.LossTolerantBbr(max_datagram_size=MSS), 2.0, 0.0)
        cc.on_persistent_congestion()
        self.assertEqual(cc.congestion_window, bbr.MIN_WINDOW_PACKETS * MSS)
        self.assertTrue(cc.in_startup)
        self.assertEqual(cc.btl_bw, 0.0)

    def test_sessions_use_it(self) -> None:
        """Host and viewer configurations both name the controller."""
        from nacl.signing import SigningKey

        self.assertEqual(
            host_configuration(SigningKey.generate(), "1").congestion_control_algorithm, bbr.NAME
        )
        self.assertEqual(viewer_configuration().congestion_control_algorithm, bbr.NAME)


class BookkeepingTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from("sael"), st.integers(0, 40)), max_size=200))
    def test_any_sequence_keeps_sound(self, ops: list[tuple[str, int]]) -> None:
        """Sent, acked, expired and lost in any order: bytes in flight return to zero,
        the window never goes under its minimum, nothing raises."""
        cc = bbr.LossTolerantBbr(max_datagram_size=MSS)
        outstanding: list[QuicSentPacket] = []
        now = 0.0
        for n, (op, k) in enumerate(ops):
            now += k / 1000
            if op == "s" or not outstanding:
                p = packet(n, now)
                cc.on_packet_sent(packet=p)
                outstanding.append(p)
                continue
            p = outstanding.pop(k % len(outstanding))
            if op == "a":
                cc.on_packet_acked(now=now, packet=p)
                cc.on_rtt_measurement(now=now, rtt=max(0.001, now - (p.sent_time or 0)))
            elif op == "e":
                cc.on_packets_expired(packets=[p])
            else:
                cc.on_packets_lost(now=now, packets=[p])
            self.assertGreaterEqual(cc.congestion_window, bbr.MIN_WINDOW_PACKETS * MSS)
        cc.on_packets_expired(packets=outstanding)
        self.assertEqual(cc.bytes_in_flight, 0)
        self.assertEqual(cc._sent, {})
