# -*- test-case-name: tests.test_websocket_litedesk -*-
"""The peers' side of WebSocket: a host or viewer whose server is reachable only as C{ws(s)://}.

A LiteDesk host or viewer started with C{--websocket} (or given a C{ws://} /
C{wss://} server) opens every connection to the server over WebSocket: the
host's registration stream, the short request connections, and the relay
legs (docs/websocket.rst §7).  This module has what that needs besides the
rendezvous and relay logic, which stays in L{litedesk.session.links}:

- where things are (sans-IO): L{WsUrl}, L{parse_ws_url}, L{check_ws}
  (RustDesk's rule for a C{HOST[:PORT]}) and L{WebSocketServer} (the
  rendezvous URL and the relay URL for each relay name);
- TLS for C{wss://}: the system's CAs, or the certificates of C{--ws-ca};
  there is no way to turn verification off (L{client_tls});
- how a byte stream becomes messages (sans-IO): L{FramedShaper} for
  rendezvous connections (one BytesCodec frame per message, as RustDesk),
  L{RelayLegShaper} for relay legs (below);
- L{dial}: an autobahn client connection carrying any Twisted protocol.

Relay legs.  After its C{RequestRelay} message a LiteDesk leg carries the
session's raw byte stream, each binary message a chunk of it.  The relay
forwards messages unchanged between two WebSocket legs, but frames them for
a TCP partner (hbbr's rule), so the two ends recognise each other's leg from
the first message (docs/websocket.rst §7.3):

- the host's first message is its C{SignedId} frame written so that it is at
  once a chunk of the raw stream (a BytesCodec frame) and a bare C{Message}
  (L{dual_first_message}), which a RustDesk client reads as RustDesk hosts
  send it;
- a viewer that receives a bare C{SignedId} instead (the relay took the
  frame header off a TCP leg) puts the header back; from a RustDesk host it
  then carries one frame per message both ways, as RustDesk peers do;
- a host whose partner answers with a bare C{Message} (a RustDesk client)
  likewise carries one frame per message; one that answers with a TLS record
  is a LiteDesk viewer and stays with chunks.

The TCP side of a mixed pair is in L{litedesk.session.links}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IProtocol,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.websocket.shapers import (
    MAX_CHUNK,
    MAX_CLIENT_MESSAGE,
    MAX_RELAY_MESSAGE,
    MAX_RENDEZVOUS_MESSAGE,
    FramedShaper,
    RelayLegShaper,
    ShapeError,
    Shaper,
    classify_first_message,
    dual_first_message,
    frame_header,
)
from litedesk.websocket.timing import ExactTimer
from litedesk.websocket.urls import (
    DEFAULT_RELAY_PORT,
    WebSocketServer,
    WsUrl,
    check_ws,
    client_tls,
    is_ws_url,
    load_ca_file,
    parse_ws_url,
)

__all__ = [
    "DEFAULT_RELAY_PORT",
    "MAX_CHUNK",
    "MAX_CLIENT_MESSAGE",
    "MAX_RELAY_MESSAGE",
    "MAX_RENDEZVOUS_MESSAGE",
    "FramedShaper",
    "RelayLegShaper",
    "ShapeError",
    "WebSocketError",
    "WebSocketServer",
    "WsUrl",
    "check_ws",
    "classify_first_message",
    "client_tls",
    "dial",
    "dual_first_message",
    "frame_header",
    "is_ws_url",
    "load_ca_file",
    "parse_ws_url",
]

#: Seconds for TCP, TLS and the opening handshake together.
CONNECT_TIMEOUT = 10.0
#: Seconds for the closing handshake before the TCP connection is dropped.
CLOSE_TIMEOUT = 1.0


_log = Logger(namespace="litedesk.websocket.client")


class WebSocketError(Exception):
    """A WebSocket connection could not be opened; the message says why."""


# -- the connection ------------------------------------------------------------------


@implementer(ITransport, IConsumer, IPushProducer)
class WsStreamTransport:
    """The inner protocol's transport: writes become messages through the shaper.

    C{transport} is the connection below (TCP, or TLS over TCP), so code
    that measures a session's send backlog walks down to the socket through
    it; producers register there too.
    """

    def __init__(self, proto: WsClientProtocol) -> None:
        self._proto = proto

    @property
    def transport(self) -> Any:
        return self._proto.transport

    @property
    def disconnecting(self) -> bool:
        return self._proto.closing

    @property
    def connected(self) -> bool:
        return not self._proto.closing

    def write(self, data: bytes) -> None:
        self._proto.send_stream(bytes(data))

    def writeSequence(self, data: Any) -> None:
        self._proto.send_stream(b"".join(data))

    def loseConnection(self) -> None:
        self._proto.close_from_inner()

    def abortConnection(self) -> None:
        self._proto.abort()

    def getPeer(self) -> IAddress:
        return self._proto.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        return self._proto.transport.getHost()  # type: ignore[union-attr]

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._proto.transport.registerProducer(producer, streaming)  # type: ignore[union-attr]

    def unregisterProducer(self) -> None:
        self._proto.transport.unregisterProducer()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self._proto.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self._proto.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        self._proto.abort()


class WsClientProtocol(WebSocketClientProtocol):
    """One client WebSocket connection carrying C{inner} (see L{dial})."""

    _ws_log = Logger()

    def __init__(self, inner: IProtocol, shaper: Shaper, url: WsUrl) -> None:
        super().__init__()
        self.inner = inner
        self.shaper = shaper
        self.url = url
        self.opened: Deferred[WsClientProtocol] = Deferred()
        self.closing = False
        self._inner_connected = False
        self._lost: Failure | None = None

    def onOpen(self) -> None:
        self._inner_connected = True
        self.inner.makeConnection(WsStreamTransport(self))
        if not self.opened.called:
            self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # Text and pings carry nothing for us (autobahn answers pings).
        if not isBinary or self.closing:
            return
        try:
            data = self.shaper.incoming(payload)
        except ShapeError as e:
            self._fail(str(e))
            return
        # autobahn reads its limits per frame: the shaper's takes effect now.
        self.maxMessagePayloadSize = self.maxFramePayloadSize = self.shaper.max_message
        if data:
            self.inner.dataReceived(data)

    def send_stream(self, data: bytes) -> None:
        if self.closing or self.state != WebSocketProtocol.STATE_OPEN:
            return
        try:
            messages = self.shaper.outgoing(data)
        except ShapeError as e:
            self._fail(str(e))
            return
        for m in messages:
            self.sendMessage(m, isBinary=True)  # type: ignore[no-untyped-call]

    def close_from_inner(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendClose(code=1000)
        elif self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        self.closing = True
        t: Any = self.transport
        if t is not None:
            t.abortConnection()

    def _fail(self, reason: str) -> None:
        self._ws_log.warn("Closing WebSocket {url}: {reason}", url=str(self.url), reason=reason)
        self.abort()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # autobahn's onClose only says "closed uncleanly"; keep the real
        # reason (a certificate that does not verify) for the error message.
        self._lost = reason
        super().connectionLost(reason)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.closing = True
        if not self.opened.called:
            self.opened.errback(WebSocketError(self._why(code, reason)))
            return
        if self._inner_connected:
            self._inner_connected = False
            lost = ConnectionDone("WebSocket closed") if wasClean else ConnectionLost(str(reason))
            self.inner.connectionLost(Failure(lost))  # type: ignore[no-untyped-call]

    def _why(self, code: Any, reason: Any) -> str:
        lost = self._lost
        if lost is not None and not lost.check(ConnectionDone):  # type: ignore[no-untyped-call]
            return f"{lost.getErrorMessage()}"
        return str(reason or code or "closed during the opening handshake")


class _ClientFactory(WebSocketClientFactory):
    noisy = False

    def __init__(self, url: WsUrl, make: Callable[[], WsClientProtocol], clock: IReactorTime):
        super().__init__(str(url), useragent="LiteDesk")  # type: ignore[no-untyped-call]
        self._make = make
        # autobahn's private timer slot (if it is ever renamed, autobahn's own
        # batched timer is used and only a lingering reactor call differs).
        self._batched_timer = ExactTimer(clock)

    def buildProtocol(self, addr: IAddress | None) -> WsClientProtocol:
        proto = self._make()
        proto.factory = self
        return proto


async def dial(
    reactor: Any,
    url: WsUrl,
    inner: IProtocol,
    shaper: Shaper,
    *,
    ca_file: str | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> WsClientProtocol:
    """Open C{url} and connect C{inner} to it through C{shaper}.

    A message larger than the shaper's C{max_message} closes the connection.

    Fires once the opening handshake is done (C{inner} is connected by
    then); fails with L{WebSocketError} saying why (refused, the
    certificate, an HTTP answer that is not an upgrade, the timeout).
    """
    factory = _ClientFactory(url, lambda: WsClientProtocol(inner, shaper, url), reactor)
    factory.setProtocolOptions(  # type: ignore[no-untyped-call]
        openHandshakeTimeout=0,  # the whole dial has one deadline, below
        closeHandshakeTimeout=CLOSE_TIMEOUT,
        maxFramePayloadSize=shaper.max_message,
        maxMessagePayloadSize=shaper.max_message,
        autoFragmentSize=0,
        failByDrop=True,
        perMessageCompressionOffers=[],
    )
    endpoint: Any = HostnameEndpoint(reactor, url.host, url.port, timeout=timeout)
    tls = client_tls(url, ca_file)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    deadline = reactor.seconds() + timeout
    connecting: Deferred[WsClientProtocol] = endpoint.connect(factory)
    connecting.addTimeout(timeout, reactor)
    try:
        proto: WsClientProtocol = await connecting
    except (CancelledError, TimeoutError):
        raise WebSocketError(f"{url}: no connection within {timeout:g} s") from None
    except Exception as e:
        raise WebSocketError(f"{url}: {e}") from None
    opened = proto.opened
    opened.addTimeout(max(0.0, deadline - reactor.seconds()), reactor)
    try:
        return await opened
    except (CancelledError, TimeoutError):
        proto.abort()
        raise WebSocketError(f"{url}: no WebSocket handshake within {timeout:g} s") from None
    except WebSocketError as e:
        raise WebSocketError(f"{url}: {e}") from None
