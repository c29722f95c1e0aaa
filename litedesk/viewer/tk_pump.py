"""Tk's events on the reactor's thread: the viewer window's event loop.

The window runs Tk and Twisted in one thread (see L{litedesk.viewer.window}
for why): a LoopingCall hands Tk its pending X events, timers and idle
callbacks every few milliseconds.  C{twisted.internet.tksupport} does the
same with C{root.update()}, which also waits for the X server to process
everything sent so far (an XSync round trip) on every call; at 200 calls a
second that cost the viewer about as much CPU as handling the events
(bench/viewer_window.py, bench/README.rst).  Tk flushes its requests to the
X server whenever it looks for events, so the wait buys the viewer nothing.
"""

from __future__ import annotations

import _tkinter
import tkinter as tk
from typing import Any

from twisted.internet.task import LoopingCall

__all__ = ["TK_EVENTS_PER_PUMP", "TK_INTERVAL", "pump_tk"]

#: How often Tk's events are handled (seconds): the delay a click may wait.
TK_INTERVAL = 0.005
#: At most this many Tk events per turn, so a flood cannot starve the network.
TK_EVENTS_PER_PUMP = 1000


def pump_tk(reactor: Any, root: tk.Tk, interval: float = TK_INTERVAL) -> LoopingCall:
    """Run Tk's pending events every C{interval} seconds on the reactor's thread.

    As C{twisted.internet.tksupport}, but without C{root.update()}: that
    also waits for the X server to catch up (an XSync round trip) on every
    call, 200 times a second, which cost the viewer about as much CPU as
    handling the events.  Tk flushes its requests to the X server anyway
    when it looks for events.  At most L{TK_EVENTS_PER_PUMP} events per
    call, so a flood of X events cannot starve the network.
    """

    def pump() -> None:
        for _ in range(TK_EVENTS_PER_PUMP):
            if not root.tk.dooneevent(_tkinter.ALL_EVENTS | _tkinter.DONT_WAIT):
                break

    loop = LoopingCall(pump)
    loop.clock = reactor
    loop.start(interval, now=False)
    return loop
