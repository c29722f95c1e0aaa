"""The status bar: connection state, reconnect buttons, VIEW ONLY, live figures.

The text about the connection comes from the controller
(L{ConnectionController.status_line}); this module adds passing notices
("Quality: best", three seconds), the received/shown frame rates and bit
rate measured once a second, and the widgets.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from litedesk.viewer.controller import ConnectionController
from litedesk.viewer.frame_view import FrameView

_log = Logger(namespace="litedesk.viewer.window")

FLASH_SECONDS = 3.0


def fmt_rate(bits_per_s: float) -> str:
    if bits_per_s >= 1e6:
        return f"{bits_per_s / 1e6:.1f} Mbit/s"
    return f"{bits_per_s / 1e3:.0f} kbit/s"


class RateMeter:
    """Frames received and shown, and bits, per second over about a second."""

    def __init__(self) -> None:
        self.rates = (0.0, 0.0, 0.0)  # fps received, fps shown, bits/s
        self._sample: tuple[float, int, int, int] | None = None

    def reset(self) -> None:
        self._sample = None

    def sample(self, now: float, received: int, shown: int, nbytes: int) -> None:
        sample = (now, received, shown, nbytes)
        prev = self._sample
        if prev is None or now - prev[0] >= 1.0:
            if prev is not None:
                dt = now - prev[0]
                self.rates = (
                    (sample[1] - prev[1]) / dt,
                    (sample[2] - prev[2]) / dt,
                    (sample[3] - prev[3]) * 8 / dt,
                )
            self._sample = sample


class StatusBar:
    """The bottom line of the window."""

    def __init__(
        self,
        reactor: Any,
        parent: tk.Misc,
        conn: ConnectionController,
        frames: FrameView,
        reconnect: Callable[[], None],
        cancel: Callable[[], None],
    ) -> None:
        self.reactor = reactor
        self.conn = conn
        self.frames = frames
        self.meter = RateMeter()
        self._flash: tuple[str, float] | None = None
        self._key_frames_seen = 0
        bar = tk.Frame(parent, relief="sunken", borderwidth=1)
        bar.pack(side="bottom", fill="x")
        self.label = tk.Label(bar, text="", anchor="w")
        self.label.pack(side="left", fill="x", expand=True)
        self.reconnect_button = tk.Button(bar, text="Reconnect now", command=reconnect, pady=0)
        self.cancel_button = tk.Button(bar, text="Cancel", command=cancel, pady=0)
        self.view_only_label = tk.Label(bar, text="VIEW ONLY", fg="white", bg="#b03030")
        self.stats_label = tk.Label(bar, text="", anchor="e")
        self.stats_label.pack(side="right")

    def text(self) -> str:
        return str(self.label.cget("text"))

    def set(self, text: str) -> None:
        self.label.configure(text=text)
        self.frames.place_overlay()

    def flash(self, text: str) -> None:
        self._flash = (text, self.reactor.seconds() + FLASH_SECONDS)
        self.update()

    def show_reconnect(self, pending: bool) -> None:
        if pending:
            self.reconnect_button.pack(side="left", padx=2)
            self.cancel_button.pack(side="left", padx=2)
        else:
            self.reconnect_button.pack_forget()
            self.cancel_button.pack_forget()

    def show_view_only(self, on: bool) -> None:
        if on:
            self.view_only_label.pack(side="right", padx=4)
        else:
            self.view_only_label.pack_forget()

    def new_session(self) -> None:
        self._key_frames_seen = 0
        self.meter.reset()

    def update_rates(self) -> None:
        s = self.conn.session
        if s is None or not self.conn.connected:
            return
        if s.stats.key_frames != self._key_frames_seen:
            # Worth a log line: a key frame follows every quality change
            # and key-frame request, so it shows the host acted on them.
            self._key_frames_seen = s.stats.key_frames
            _log.info("Key frames received: {n}", n=s.stats.key_frames)
        c = self.frames.counters
        self.meter.sample(self.reactor.seconds(), c.received, c.shown, s.stats.bytes)

    def update(self) -> None:
        now = self.reactor.seconds()
        s = self.conn.session
        text, flashable = self.conn.status_line(now)
        if text is None:
            text = self.text()
        if flashable and self._flash is not None and now < self._flash[1]:
            text = self._flash[0]
        self.label.configure(text=text)
        if s is not None and self.conn.connected:
            rtt = f"{s.stats.rtt_ms:.0f} ms" if s.stats.rtt_ms is not None else "–"
            rx, shown, bits = self.meter.rates
            size = ""
            if self.frames.shown is not None:
                size = f" · {self.frames.shown.width}×{self.frames.shown.height}"
            self.stats_label.configure(
                text=f"{self.conn.path} · RTT {rtt} · {shown:.0f}/{rx:.0f} fps · "
                f"{fmt_rate(bits)}{size}"
            )
        else:
            self.stats_label.configure(text="")
        self.frames.place_overlay()
