"""Twisted services both daemons build on: named listeners and a cleanup on stop.

The server assembly (L{litedesk.server.assembly}) and the host agent
(L{litedesk.host.agent}) both bind UDP ports (Twisted has no UDP endpoint
strings, hence L{parse_udp_endpoint} and L{UDPListenerService}) and stream
endpoints that must fail twistd's start-up when they cannot bind
(L{EndpointService}); they live here so that neither daemon imports the
other's package for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorUDP,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.python import usage
from zope.interface import implementer

from litedesk.twisted_internals import raise_listen_failures


def parse_udp_endpoint(description: str) -> tuple[int, str]:
    """C{udp:PORT[:interface=ADDR]} (Twisted has no UDP endpoint strings).

    Colons inside the interface are backslash-escaped as in Twisted's
    C{tcp:} strings, e.g. C{udp:21116:interface=\\:\\:}.
    """
    parts: list[str] = []
    cur = ""
    escaped = False
    for ch in description:
        if escaped:
            cur += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    if not parts or parts[0] != "udp" or len(parts) < 2:
        raise usage.UsageError(f"not a UDP endpoint (udp:PORT[:interface=ADDR]): {description}")
    port: int | None = None
    interface = ""
    for p in parts[1:]:
        key, eq, value = p.partition("=")
        if not eq:
            key, value = "port", p
        if key == "port":
            try:
                port = int(value)
            except ValueError:
                raise usage.UsageError(f"bad UDP port in {description!r}") from None
        elif key == "interface":
            interface = value
        else:
            raise usage.UsageError(f"unknown UDP endpoint option {key!r} in {description!r}")
    if port is None or not 0 <= port < 65536:
        raise usage.UsageError(f"bad UDP port in {description!r}")
    return port, interface


class UDPListenerService(Service):
    """Binds a UDP port in C{privilegedStartService}, like StreamServerEndpointService."""

    def __init__(
        self, name: str, reactor: IReactorUDP, description: str, protocol: DatagramProtocol
    ) -> None:
        self.setName(name)
        self.reactor = reactor
        self.port, self.interface = parse_udp_endpoint(description)
        self.protocol = protocol
        self.listening: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        self.listening = self.reactor.listenUDP(self.port, self.protocol, self.interface, 65535)
        super().privilegedStartService()

    def startService(self) -> None:
        if self.listening is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        listening, self.listening = self.listening, None
        if listening is None:
            return Deferred.fromCoroutine(_nothing())
        return maybeDeferred(listening.stopListening)


async def _nothing() -> None:
    return None


@implementer(IStreamServerEndpoint)
class _RecordingEndpoint:
    """Hands the port an endpoint listens on to a callback (public API only)."""

    def __init__(
        self, endpoint: IStreamServerEndpoint, bound: Callable[[IListeningPort], None]
    ) -> None:
        self._endpoint = endpoint
        self._bound = bound

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        d = self._endpoint.listen(factory)

        def record(port: IListeningPort) -> IListeningPort:
            self._bound(port)
            return port

        return d.addCallback(record)


class EndpointService(StreamServerEndpointService):
    """A named stream listener that remembers its listening port once bound."""

    def __init__(self, name: str, endpoint: IStreamServerEndpoint, factory: Factory[Any]) -> None:
        super().__init__(_RecordingEndpoint(endpoint, self._bound), factory)
        self.setName(name)
        # Fail twistd's start-up on a bind error instead of logging and running half-deaf.
        raise_listen_failures(self)
        self.listening: IListeningPort | None = None

    def _bound(self, port: IListeningPort) -> None:
        self.listening = port


class CloseOnStop(Service):
    """Runs a cleanup (closing the peer store) when the application stops."""

    def __init__(self, close: Any) -> None:
        self._close = close

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return maybeDeferred(self._close)
