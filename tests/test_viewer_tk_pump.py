"""The viewer window's event loop (litedesk.viewer.tk_pump) on a real Xvfb.

Tk and the reactor share one thread; L{pump_tk} hands Tk its events.  A
person notices two things: the window reacts (X events, Tk timers and
redraws are handled while the reactor runs), and the connection keeps
going while the window is flooded with events (the reactor's own calls get
their turn between pumps, so the network is never starved by Tk).
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from litedesk.viewer.tk_pump import TK_EVENTS_PER_PUMP, TK_FULL_EVERY, pump_tk

from .support.skips import requires
from .support.xvfb import shared_xvfb


@requires("Xvfb", "tkinter")
class TkPumpTests(TestCase):
    def setUp(self) -> None:
        # The process's shared Xvfb, stopped at exit: Tk keeps its display
        # connection after destroy(), so a server stopped earlier would take
        # the test process down with an X I/O error.
        self.root = tk.Tk(screenName=shared_xvfb().display, className="LiteDeskTest")
        self.addCleanup(self.root.destroy)
        self.root.geometry("200x100+0+0")
        self.entry = tk.Entry(self.root)
        self.entry.pack()
        self.pump = pump_tk(reactor, self.root)
        self.addCleanup(self.pump.stop)

    async def test_events_timers_and_redraws_handled(self) -> None:
        """The window gets mapped and resized through the X server (X events and
        Tk's idle callbacks), Tk timers run, and generated events reach their
        bindings, all while the reactor runs."""
        seen: list[str] = []
        widths: list[int] = []
        self.root.bind("<Configure>", lambda e: widths.append(e.width))
        self.entry.bind("<<Poke>>", lambda _e: seen.append("event"))
        self.root.after(20, lambda: seen.append("timer"))
        await self.until(self.root.winfo_ismapped)
        self.root.geometry("300x150")
        await self.until(lambda: 300 in widths)
        self.entry.event_generate("<<Poke>>", when="tail")
        await self.until(lambda: "event" in seen)
        self.assertEqual(sorted(seen), ["event", "timer"])

    async def until(self, check: Callable[[], object], timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.02)):
            if check():
                return
            await deferLater(reactor, 0.02, lambda: None)
        self.fail(f"{check} still false after {timeout} s")

    async def test_flood_does_not_starve_the_reactor(self) -> None:
        """Three turns' worth of queued Tk events: the reactor gets its turn while
        Tk is part-way through them (a pump handles at most
        L{TK_EVENTS_PER_PUMP}), and Tk then handles every one."""
        handled: list[int] = []
        self.entry.bind("<<Poke>>", lambda _e: handled.append(1))
        await self.until(self.root.winfo_ismapped)
        total = 3 * TK_EVENTS_PER_PUMP
        for _ in range(total):
            self.entry.event_generate("<<Poke>>", when="tail")
        # Reactor turns until Tk has started on the flood (events Tk queued
        # itself are looked at every TK_FULL_EVERY turns of the pump): the
        # first one after that sees it part-way through, not finished.
        seen = 0
        deadline = reactor.seconds() + 10
        while reactor.seconds() < deadline:
            await deferLater(reactor, 0, lambda: None)
            if handled:
                seen = len(handled)
                break
        self.assertGreater(seen, 0)
        self.assertLess(seen, total)
        await self.until(lambda: len(handled) == total)

    async def test_idle_window_looks_for_events_only_when_x_sent_some(self) -> None:
        """An idle window enters Tk's event loop (a round trip to Tcl's notifier
        thread each time) only on every L{TK_FULL_EVERY}th turn, for Tk's
        timers; a pointer moved over it by another X client is still handled."""
        await self.until(self.root.winfo_ismapped)
        await deferLater(reactor, 0.1, lambda: None)  # mapping's events done
        full0, idle0 = self.pump.full_turns, self.pump.idle_turns
        await deferLater(reactor, 0.3, lambda: None)
        full, idle = self.pump.full_turns - full0, self.pump.idle_turns - idle0
        self.assertGreater(idle, 0)
        self.assertLessEqual(full, (full + idle) // TK_FULL_EVERY + 2)
        moved: list[tuple[int, int]] = []
        self.root.bind("<Motion>", lambda e: moved.append((e.x_root, e.y_root)))
        from Xlib import X, display
        from Xlib.ext import xtest

        other = display.Display(shared_xvfb().display)
        self.addCleanup(other.close)
        x, y = self.root.winfo_rootx() + 20, self.root.winfo_rooty() + 60
        xtest.fake_input(other, X.MotionNotify, x=x, y=y)
        other.sync()
        await self.until(lambda: (x, y) in moved)
