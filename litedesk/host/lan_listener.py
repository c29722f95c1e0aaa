"""The pieces of the host's LAN offer (its answer to C{FetchLocalAddr}) that
need no host state: which local address faces the server, and a listener
factory that takes one connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Factory, Protocol


class OneShotFactory(Factory):
    """Hands the first accepted connection to the session, then stops listening."""

    def __init__(self, make_session: Callable[[], IProtocol], done: Callable[[], None]) -> None:
        self.make_session = make_session
        self.done = done
        self.used = False

    def buildProtocol(self, addr: Any) -> Protocol | None:
        if self.used:
            return None
        self.used = True
        self.done()
        proto: Any = self.make_session()
        return proto  # type: ignore[no-any-return]
