"""Tk's events on the reactor's thread: the viewer window's event loop.

The window runs Tk and Twisted in one thread (see L{litedesk.viewer.window}
for why): a LoopingCall hands Tk its pending X events, timers and idle
callbacks every few milliseconds.  C{twisted.internet.tksupport} does the
same with C{root.update()}, which also waits for the X server to process
everything sent so far (an XSync round trip) on every call; at 200 calls a
second that cost the viewer about as much CPU as handling the events
(bench/viewer_window.py, bench/README.rst).  Tk flushes its requests to the
X server whenever it looks for events, so the wait buys the viewer nothing.

Looking for events is not free either: with a threaded Tcl, every
C{Tcl_DoOneEvent} that may handle more than idle callbacks hands a zero-time
C{select} to Tcl's notifier thread and waits for its answer (tclUnixNotfy.c),
two thread switches, ~150 us.  So a turn first asks the X connection
itself (its socket readable, or events already in Xlib's queue): only then,
and every L{TK_FULL_EVERY}th turn for Tk's timers, does Tk look; the other
turns run Tk's idle callbacks (redraws) only, which needs no notifier.  A
click waits no longer than before (one turn); a Tk timer up to
L{TK_FULL_EVERY} turns.
"""

from __future__ import annotations

import _tkinter
import select
import tkinter as tk
from typing import Any

from twisted.internet.task import LoopingCall

from litedesk.viewer.tk_native import XConnection, x_connection

__all__ = ["TK_EVENTS_PER_PUMP", "TK_FULL_EVERY", "TK_INTERVAL", "TkPump", "pump_tk"]

#: How often Tk's events are handled (seconds): the delay a click may wait.
TK_INTERVAL = 0.005
#: At most this many Tk events per turn, so a flood cannot starve the network.
TK_EVENTS_PER_PUMP = 1000
#: Every this many turns Tk looks for events even when the X server sent
#: nothing: its timers, and events Tk queued itself (C{event generate}).
TK_FULL_EVERY = 4

_ALL = _tkinter.ALL_EVENTS | _tkinter.DONT_WAIT
_IDLE = _tkinter.IDLE_EVENTS | _tkinter.DONT_WAIT


class TkPump:
    """Hands Tk its events every C{interval} seconds on the reactor's thread.

    @ivar full_turns: turns on which Tk looked for all events.
    @ivar idle_turns: turns that ran only Tk's idle callbacks.
    """

    def __init__(
        self, reactor: Any, root: tk.Misc, interval: float, full_every: int = TK_FULL_EVERY
    ) -> None:
        self._tk = root.tk
        self._full_every = max(1, full_every)
        self._turn = 0
        self._more = False
        self.full_turns = 0
        self.idle_turns = 0
        self._x: XConnection | None = x_connection(root) if full_every > 1 else None
        self._poll = select.poll()
        if self._x is not None:
            self._poll.register(self._x.fd, select.POLLIN)
        self._loop = LoopingCall(self._pump)
        self._loop.clock = reactor
        self._loop.start(interval, now=False)

    @property
    def running(self) -> bool:
        return self._loop.running

    def stop(self) -> None:
        self._loop.stop()

    def _x_sent_something(self) -> bool:
        x = self._x
        if x is None:
            return True  # cannot tell: look every turn, as tksupport does
        return x.queued() > 0 or bool(self._poll.poll(0))

    def _pump(self) -> None:
        self._turn += 1
        if self._more or self._turn % self._full_every == 0 or self._x_sent_something():
            self.full_turns += 1
            self._more = self._run(_ALL)
        else:
            self.idle_turns += 1
            self._run(_IDLE)

    def _run(self, flags: int) -> bool:
        """Up to L{TK_EVENTS_PER_PUMP} events; whether more may be waiting."""
        return all(self._tk.dooneevent(flags) for _ in range(TK_EVENTS_PER_PUMP))


def pump_tk(
    reactor: Any, root: tk.Misc, interval: float = TK_INTERVAL, full_every: int = TK_FULL_EVERY
) -> TkPump:
    """Run Tk's pending events every C{interval} seconds on the reactor's thread.

    As C{twisted.internet.tksupport}, but without C{root.update()}'s XSync
    round trip, and entering Tk's event loop only when the X server sent
    something or every C{full_every} turns (see the module docstring).  At
    most L{TK_EVENTS_PER_PUMP} events per turn, so a flood of X events
    cannot starve the network; a turn that stopped there is followed by a
    full one.

    @param full_every: 1 looks for events on every turn (as before).
    """
    return TkPump(reactor, root, interval, full_every)
