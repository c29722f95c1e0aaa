# -*- test-case-name: tests.test_quic_bbr -*-
"""A loss-tolerant congestion controller for the session's QUIC connections.

aioquic ships NewReno and CUBIC, which halve (or cut by 30 %) their window on
every loss event.  On a link that drops 2 % of packets at random (Wi-Fi, a
mobile network, an overloaded hop that is not the bottleneck) that caps
them near the Mathis bound, MSS / RTT * 1.22 / sqrt(p): about 2.5 Mbit/s at
40 ms, whatever the link could carry.  The TCP sessions they are compared
with run Linux's BBR, which does not read random loss as congestion, so
QUIC sessions stalled behind their own window where TCP sessions did not
(bench/connect.py --lossy, docs/protocol.rst §8.5).

L{LossTolerantBbr} follows BBR's model (Cardwell et al., "BBR:
Congestion-Based Congestion Control", ACM Queue 2016) in its simplest form:

- the bottleneck bandwidth is the largest delivery rate measured over the
  last L{BW_WINDOW_ROUNDS} round trips (a rate sample is the bytes
  delivered between a packet's send and its acknowledgement, over that
  time), samples taken while the sender did not fill its window count only
  when they raise the estimate (they say nothing about the path's limit);
- the round-trip propagation time is the smallest RTT of the last
  L{MIN_RTT_WINDOW} seconds;
- the window is L{CWND_GAIN} times their product, never under
  L{MIN_WINDOW_PACKETS} packets; aioquic paces at window / smoothed RTT;
- startup grows the window by what each ACK delivers (as slow start) until
  the bandwidth estimate stops growing by 25 % over three rounds;
- loss is not a congestion signal, unless a round loses more than
  L{HEAVY_LOSS} of what it sent (a queue overflowing: the window is cut to
  0.7) or aioquic declares persistent congestion (the window collapses to
  the minimum and the model starts again).

Everything is driven by the times aioquic passes in: no clock of its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aioquic.quic.congestion.base import QuicCongestionControl, register_congestion_control
from aioquic.quic.packet_builder import QuicSentPacket

__all__ = ["NAME", "LossTolerantBbr"]

#: The name QuicConfiguration.congestion_control_algorithm takes.
NAME = "litedesk-bbr"
CWND_GAIN = 2.0
BW_WINDOW_ROUNDS = 10
MIN_RTT_WINDOW = 10.0
MIN_WINDOW_PACKETS = 4
#: Share of a round's sent bytes lost above which the window is cut.
HEAVY_LOSS = 0.2
HEAVY_LOSS_CUT = 0.7
#: Startup ends after this many rounds without this much bandwidth growth.
FULL_PIPE_ROUNDS = 3
FULL_PIPE_GROWTH = 1.25


@dataclass(slots=True)
class _SendState:
    """What was true when a packet left: for its rate sample."""

    delivered: int
    delivered_time: float
    app_limited: bool


class LossTolerantBbr(QuicCongestionControl):
    """BBR's bandwidth and RTT model, without BBR's probing cycles (see the module)."""

    def __init__(self, *, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._mss = max_datagram_size
        self._sent: dict[int, _SendState] = {}
        self.delivered = 0
        self._delivered_time: float | None = None
        # Round trips: a round ends when a packet sent after its start is acked.
        self.round_count = 0
        self._round_end_delivered = 0
        self._round_sent = 0
        self._round_lost = 0
        #: (round, rate in bytes/s), the window's maximum first in line.
        self._bw_samples: deque[tuple[int, float]] = deque()
        self.btl_bw = 0.0
        self.min_rtt: float | None = None
        self._min_rtt_at = 0.0
        self.in_startup = True
        self._full_bw = 0.0
        self._full_bw_rounds = 0

    # -- aioquic's calls ------------------------------------------------------------

    def on_packet_sent(self, *, packet: QuicSentPacket) -> None:
        sent_time = packet.sent_time or 0.0
        if self._delivered_time is None:
            self._delivered_time = sent_time
        app_limited = self.bytes_in_flight + packet.sent_bytes < self.congestion_window // 2
        self._sent[id(packet)] = _SendState(self.delivered, self._delivered_time, app_limited)
        self.bytes_in_flight += packet.sent_bytes
        self._round_sent += packet.sent_bytes

    def on_packet_acked(self, *, now: float, packet: QuicSentPacket) -> None:
        self.bytes_in_flight -= packet.sent_bytes
        state = self._sent.pop(id(packet), None)
        self.delivered += packet.sent_bytes
        self._delivered_time = now
        if state is None:
            return
        if state.delivered >= self._round_end_delivered:
            self._new_round()
        interval = now - state.delivered_time
        if interval > 0:
            rate = (self.delivered - state.delivered) / interval
            if not state.app_limited or rate > self.btl_bw:
                self._add_bw_sample(rate)
        if self.in_startup:
            self.congestion_window += packet.sent_bytes
        else:
            self.congestion_window = self._model_window()

    def on_packets_expired(self, *, packets: Iterable[QuicSentPacket]) -> None:
        for packet in packets:
            self.bytes_in_flight -= packet.sent_bytes
            self._sent.pop(id(packet), None)

    def on_packets_lost(self, *, now: float, packets: Iterable[QuicSentPacket]) -> None:
        for packet in packets:
            self.bytes_in_flight -= packet.sent_bytes
            self._sent.pop(id(packet), None)
            self._round_lost += packet.sent_bytes
        if self._round_sent and self._round_lost > HEAVY_LOSS * self._round_sent:
            # Not random loss: a queue overflowing.  Once per round.
            self.congestion_window = max(
                int(self.congestion_window * HEAVY_LOSS_CUT), self._min_window()
            )
            self.in_startup = False
            self._round_lost = 0
            self._round_sent = 0

    def on_persistent_congestion(self) -> None:
        self.congestion_window = self._min_window()
        self._bw_samples.clear()
        self.btl_bw = 0.0
        self.in_startup = True
        self._full_bw = 0.0
        self._full_bw_rounds = 0

    def on_rtt_measurement(self, *, now: float, rtt: float) -> None:
        if self.min_rtt is None or rtt <= self.min_rtt or now - self._min_rtt_at > MIN_RTT_WINDOW:
            self.min_rtt = rtt
            self._min_rtt_at = now

    def get_log_data(self) -> dict[str, Any]:
        data = super().get_log_data()
        data.update(btl_bw=int(self.btl_bw), min_rtt=self.min_rtt, startup=self.in_startup)
        return data

    # -- the model ---------------------------------------------------------------------

    def _new_round(self) -> None:
        self.round_count += 1
        self._round_end_delivered = self.delivered
        self._round_sent = 0
        self._round_lost = 0
        while self._bw_samples and self._bw_samples[0][0] < self.round_count - BW_WINDOW_ROUNDS:
            self._bw_samples.popleft()
        self.btl_bw = self._bw_samples[0][1] if self._bw_samples else 0.0
        if self.in_startup:
            self._check_full_pipe()

    def _add_bw_sample(self, rate: float) -> None:
        # A monotone deque: the window's maximum is always first.
        while self._bw_samples and self._bw_samples[-1][1] <= rate:
            self._bw_samples.pop()
        self._bw_samples.append((self.round_count, rate))
        self.btl_bw = self._bw_samples[0][1]

    def _check_full_pipe(self) -> None:
        if self.btl_bw >= self._full_bw * FULL_PIPE_GROWTH:
            self._full_bw = self.btl_bw
            self._full_bw_rounds = 0
            return
        self._full_bw_rounds += 1
        if self._full_bw_rounds >= FULL_PIPE_ROUNDS:
            self.in_startup = False
            self.congestion_window = self._model_window()

    def _model_window(self) -> int:
        if self.min_rtt is None or not self.btl_bw:
            return max(self.congestion_window, self._min_window())
        return max(int(CWND_GAIN * self.btl_bw * self.min_rtt), self._min_window())

    def _min_window(self) -> int:
        return MIN_WINDOW_PACKETS * self._mss


register_congestion_control(NAME, LossTolerantBbr)
