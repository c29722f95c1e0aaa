# -*- test-case-name: tests.test_websocket_rendezvous -*-
"""The rendezvous server on WebSocket (hbbs' port P+2, a proxy's C{/ws/id}).

Each connection carries the TCP port's own protocol
(L{litedesk.rendezvous.protocols.RendezvousStreamProtocol}) with its own
connection counts, so requests, answers, licence checks, request limits,
the 30 s message deadline and the log lines are those of TCP port P
(docs/websocket.rst §2).  What differs:

- a text message, an empty message or a ping counts as a keep-alive, as an
  empty frame does on TCP (hbbs ignores text messages and pings, but they
  restart its read deadline);
- an C{OnlineRequest} is answered as on port P-1 (RustDesk clients in
  WebSocket mode send it here: hb_common's C{check_ws} maps P-1 to P+2;
  hbbs leaves them unanswered, so they show every peer offline);
- the server never offers secure TCP here: a RustDesk client in WebSocket
  mode never runs it (C{secure_tcp} returns at once when C{use_ws()}), it
  relies on WSS instead.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocol, IReactorTime

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.protocols import RendezvousStreamFactory, RendezvousStreamProtocol
from litedesk.rendezvous.server import RendezvousServer
from litedesk.websocket.bridge import HANDSHAKE_TIMEOUT, WebSocketBridge
from litedesk.websocket.bridge_factory import BridgeFactory
from litedesk.websocket.bridge_transport import address
from litedesk.websocket.proxy import TrustedProxies
from litedesk.wire.address import Address

__all__ = ["RendezvousBridge", "RendezvousBridgeFactory", "WebSocketRendezvousProtocol"]

# An empty BytesCodec frame: the TCP keep-alive.
_KEEP_ALIVE = b"\x00"


class WebSocketRendezvousProtocol(RendezvousStreamProtocol):
    """Port P's protocol as a WebSocket connection carries it."""

    # A RustDesk client never answers a KeyExchange on WebSocket.
    offers_key_exchange = False
    #: hbbs never sends FetchLocalAddr for a WebSocket viewer (it cannot take
    #: the LAN path); the controller does not read this yet.
    websocket = True

    def handle(self, msg: rz.RendezvousMessage) -> bool:
        if msg.WhichOneof("union") == "online_request":
            self.factory.server.handle_nat_port_message(self, msg)
            return False
        return super().handle(msg)


class RendezvousBridge(WebSocketBridge):
    """A WebSocket connection to the rendezvous server."""

    forward_empty = True

    def on_nonbinary(self, binary: bool) -> None:
        self._to_inner(_KEEP_ALIVE)

    def on_ping(self) -> None:
        self._to_inner(_KEEP_ALIVE)


class RendezvousBridgeFactory(BridgeFactory):
    """The WebSocket rendezvous listener's factory.

    @ivar inner_factory: builds the carried protocols and counts them per
        client address (C{--max-connections-per-ip}), apart from TCP port P.
    """

    protocol = RendezvousBridge

    def __init__(
        self,
        server: RendezvousServer,
        *,
        clock: IReactorTime,
        proxies: TrustedProxies,
        max_frame: int,
        max_per_ip: int,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(
            proxies=proxies,
            max_per_source=max_per_ip,
            max_message=max_frame,
            handshake_timeout=handshake_timeout,
            clock=clock,
        )
        self.inner_factory = RendezvousStreamFactory(
            server,
            WebSocketRendezvousProtocol,
            clock=clock,
            max_frame=max_frame,
            max_per_ip=max_per_ip,
        )

    def build_inner(self, client: Address, bridge: WebSocketBridge) -> IProtocol | None:
        return self.inner_factory.buildProtocol(address(*client))
