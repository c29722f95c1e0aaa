# -*- test-case-name: tests.test_websocket_relay -*-
"""The server factory of WebSocket connections: admission, proxies, inner protocols.

L{BridgeFactory} builds a L{litedesk.websocket.bridge.WebSocketBridge} per
connection, counts connections per source and in their handshake
(docs/websocket.rst §4), and asks its subclass (rendezvous or relay) for
the inner protocol.
"""

from __future__ import annotations

from typing import cast

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.interfaces import (
    IProtocol,
    IReactorTime,
)

from litedesk.websocket.bridge import HANDSHAKE_TIMEOUT, MAX_HANDSHAKING, WebSocketBridge
from litedesk.websocket.proxy import TrustedProxies
from litedesk.websocket.timing import ExactTimer
from litedesk.wire.address import Address

__all__ = ["BridgeFactory"]


class BridgeFactory(WebSocketServerFactory):
    """Builds L{WebSocketBridge}s and the inner protocols they carry.

    @ivar proxies: whose C{X-Real-IP} / C{X-Forwarded-For} are believed.
    @ivar max_per_source: WebSocket connections one TCP source may have open
        (trusted proxies excepted: the inner protocol counts their clients
        by the address they name); 0 is no limit.
    @ivar handshaking: connections still in their opening handshake.
    """

    protocol = WebSocketBridge  # type: ignore[assignment]
    noisy = False
    #: Whether a connection may read binary frames without autobahn once its
    #: inner protocol asks for it (L{WebSocketBridge.start_fast_path}).
    fast_path = True

    def __init__(
        self,
        *,
        proxies: TrustedProxies,
        max_per_source: int,
        max_message: int,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        close_timeout: float = 1.0,
        max_handshaking: int = MAX_HANDSHAKING,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        super().__init__(server=None)  # type: ignore[no-untyped-call]
        self.proxies = proxies
        self.max_per_source = max_per_source
        self.max_handshaking = max_handshaking
        self.handshaking = 0
        self.connections = 0
        self._per_source: dict[str, int] = {}
        # (A private attribute of autobahn's factory: if it is ever renamed,
        # this assignment is inert and autobahn's own timer is used.)
        self._batched_timer = ExactTimer(clock)
        self.setProtocolOptions(  # type: ignore[no-untyped-call]
            webStatus=False,
            openHandshakeTimeout=handshake_timeout,
            closeHandshakeTimeout=close_timeout,
            maxFramePayloadSize=max_message,
            maxMessagePayloadSize=max_message,
            autoFragmentSize=0,
            failByDrop=True,
            perMessageCompressionAccept=lambda offers: None,
        )

    def build_inner(self, client: Address, bridge: WebSocketBridge) -> IProtocol | None:
        """The protocol to carry for C{client}; None refuses the handshake."""
        raise NotImplementedError

    def admit(self, bridge: WebSocketBridge) -> str | None:
        """Count a new connection; the reason it is refused, if it is."""
        if self.max_handshaking and self.handshaking >= self.max_handshaking:
            return f"more than {self.max_handshaking} connections in their opening handshake"
        ip = bridge.source_ip
        if not self.proxies.trusts(ip):
            n = self._per_source.get(ip, 0) + 1
            if self.max_per_source and n > self.max_per_source:
                return f"more than {self.max_per_source} open connections"
            self._per_source[ip] = n
        self.connections += 1
        self.handshaking += 1
        return None

    def handshake_done(self, bridge: WebSocketBridge) -> None:
        self.handshaking -= 1

    def release(self, bridge: WebSocketBridge) -> None:
        self.connections -= 1
        ip = bridge.source_ip
        n = self._per_source.get(ip)
        if n is None:
            return
        if n > 1:
            self._per_source[ip] = n - 1
        else:
            del self._per_source[ip]
