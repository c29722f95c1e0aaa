"""L{RelayServerTransport}: the C{tcp.Server} the relay's port builds for each leg.

Separate from the leg because it is a Twisted transport subclass (what it
overrides is Twisted's, not the relay's), installed on the port by
L{litedesk.relay.service} through L{litedesk.twisted_internals}.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import tcp

from litedesk.relay.fastread import ReadResult
from litedesk.relay.leg import RelayProtocol
from litedesk.twisted_internals import log_prefix, port_number


def _no_fileno() -> int:
    return -1


class RelayServerTransport(tcp.Server):
    """C{tcp.Server} for relay legs, installed on the relay's TCP port.

    - C{doRead} of a paired leg goes to the leg's fast path (no bound method
      stored per connection);
    - C{logstr} and C{repstr}, two strings Twisted builds for every
      connection, and the bound C{fileno} are computed when used instead of
      kept (about 220 bytes per connection).
    """

    # Tells a leg that reads of this transport already reach its fast path.
    routes_fast_reads = True

    def doRead(self) -> ReadResult:  # type: ignore[override]
        p = self.protocol
        if isinstance(p, RelayProtocol) and p._mode and p._partner is not None:
            return p._read_fast()
        return tcp.Server.doRead(self)

    @property
    def fileno(self) -> Callable[[], int]:
        try:
            return self.socket.fileno
        except AttributeError:  # after connectionLost deleted the socket
            return _no_fileno

    @fileno.setter
    def fileno(self, value: Callable[[], int]) -> None:
        pass

    @fileno.deleter
    def fileno(self) -> None:
        pass

    @property
    def logstr(self) -> str:
        return f"{log_prefix(self, self.protocol)},{self.sessionno},{self.hostname}"

    @logstr.setter
    def logstr(self, value: str) -> None:
        pass

    @property
    def repstr(self) -> str:
        port = port_number(self.server) if self.server is not None else "?"
        return f"<{self.protocol.__class__.__name__} #{self.sessionno} on {port}>"

    @repstr.setter
    def repstr(self, value: str) -> None:
        pass
