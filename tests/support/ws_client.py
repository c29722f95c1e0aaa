"""A small WebSocket client for the tests: what a RustDesk client in WebSocket mode
sends (one binary message per protobuf message), on autobahn's Twisted client.

L{ws_connect} fires with an open L{WSClient} (or fails with L{HandshakeRefused});
L{WSClient.recv} and L{WSClient.recv_msg} wait for the next binary message.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.websocket.timing import ExactTimer

reactor: Any = _reactor
TIMEOUT = 5.0


class HandshakeRefused(Exception):
    """The connection closed before the WebSocket handshake completed."""


class WSClient(WebSocketClientProtocol):
    """Binary messages go to C{queue}; text messages to C{texts}; C{closed} fires
    with (was_clean, code, reason) when the connection ends."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: DeferredQueue[bytes] = DeferredQueue()
        self.texts: list[str] = []
        self.opened: Deferred[WSClient] = Deferred()
        self.closed: Deferred[tuple[bool, Any, Any]] = Deferred()
        self.received = 0

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.received += len(payload)
            self.queue.put(payload)
        else:
            self.texts.append(payload.decode("utf-8", "replace"))

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if not self.opened.called:
            self.opened.errback(HandshakeRefused(f"{code} {reason}"))
        if not self.closed.called:
            self.closed.callback((wasClean, code, reason))

    def local(self) -> tuple[str, int]:
        """This end's address (as the server sees it without a proxy)."""
        h: Any = self.transport.getHost()  # type: ignore[union-attr]
        return (h.host, h.port)

    def send(self, payload: bytes) -> None:
        self.sendMessage(payload, isBinary=True)

    def send_msg(self, msg: rz.RendezvousMessage) -> None:
        self.send(msg.SerializeToString())

    def recv(self, timeout: float = TIMEOUT) -> Deferred[bytes]:
        return self.queue.get().addTimeout(timeout, reactor)

    async def recv_msg(self, timeout: float = TIMEOUT) -> rz.RendezvousMessage:
        data = await self.recv(timeout)
        msg = rz.RendezvousMessage()
        msg.ParseFromString(data)
        return msg

    def close(self) -> Deferred[tuple[bool, Any, Any]]:
        if not self.closed.called:
            self.sendClose(code=1000)
        return self.closed

    def abort(self) -> Deferred[tuple[bool, Any, Any]]:
        t: Any = self.transport
        if not self.closed.called and t is not None:
            t.abortConnection()
        return self.closed


def ws_connect(
    port: int,
    *,
    host: str = "127.0.0.1",
    path: str = "/",
    headers: dict[str, str] | None = None,
    bind: str | None = None,
    tls: IOpenSSLClientConnectionCreator | None = None,
    server_name: str | None = None,
    timeout: float = TIMEOUT,
) -> Deferred[WSClient]:
    """Open a WebSocket to C{host:port}C{path}; fires once it is open.

    @param bind: the local address to connect from (C{127.0.0.2} stands for
        another client machine on loopback).
    @param tls: connect with TLS (WSS) using these client options.
    """
    scheme = "wss" if tls is not None else "ws"
    name = server_name or (f"[{host}]" if ":" in host else host)
    factory = WebSocketClientFactory(f"{scheme}://{name}:{port}{path}", headers=headers or {})
    factory.protocol = WSClient
    factory.noisy = False
    # The Deferred's own timeout bounds the handshake; exact timers leave no
    # reactor call behind when the test ends.
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=1)
    factory._batched_timer = ExactTimer(reactor)
    bind_address = (bind, 0) if bind is not None else None
    kind = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
    endpoint: Any = kind(reactor, host, port, timeout=timeout, bindAddress=bind_address)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    d = endpoint.connect(factory)

    def opened(proto: WSClient) -> Deferred[WSClient]:
        return proto.opened

    result: Deferred[WSClient] = d.addCallback(opened).addTimeout(timeout, reactor)
    return result
