"""Stand-ins for the host's collaborators in sans-IO session tests.

L{HostSession} needs a screen streamer only after login; the session tests
(login throttling, pre-login limits) never look at frames, so they share
this recorder instead of each defining a do-nothing class.
L{StreamerReactor} is the reactor a real L{ScreenStreamer} runs on in them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock

__all__ = ["FakeStreamer", "StreamerReactor"]


class StreamerReactor(Clock):
    """A C{task.Clock} with the reactor calls the streamer makes besides timers
    (C{callFromThread} runs at once; system event triggers are ignored)."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)

    def addSystemEventTrigger(self, *args: Any) -> object:
        return object()

    def removeSystemEventTrigger(self, trigger: object) -> None:
        pass


class FakeStreamer:
    """A screen streamer that streams nothing and remembers whether it was started."""

    def __init__(self) -> None:
        self.started = False
        self.tiles = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        pass

    def force_keyframe(self) -> None:
        pass

    def switch_display(self, index: int) -> None:
        pass

    def set_quality(self, quality: int) -> None:
        pass

    def set_custom_fps(self, fps: int | float | None) -> None:
        pass

    def on_rtt(self, rtt: float) -> None:
        pass

    def input_injected(self) -> None:
        pass

    def set_tiles(self, enabled: bool) -> None:
        self.tiles = enabled
