"""autobahn's timer interface on plain C{callLater}, for servers and clients alike."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["ExactTimer"]


class ExactTimer:
    """autobahn's timer interface (C{call_later}) on plain C{callLater}.

    autobahn batches its handshake and close timeouts into buckets whose
    reactor call stays behind when every timeout in it was cancelled; plain
    calls go away with the connection, and a deadline is exact.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock

    def call_later(self, delay: float, fn: Any, *args: Any, **kwargs: Any) -> IDelayedCall:
        return self._clock.callLater(delay, fn, *args, **kwargs)
