# -*- test-case-name: tests.test_websocket_relay -*-
"""The relay on WebSocket (hbbr's relay port + 2, a proxy's C{/ws/relay}).

Each connection carries a relay leg (L{litedesk.relay.leg.RelayProtocol})
of the same L{litedesk.relay.server.Relay} as the TCP port, so legs pair by
uuid across both ports, under the same licence check, limits, deadlines,
bandwidth limits, early-data budget and log events.  As in hbbr
(C{relay_server.rs}: a TCP stream goes raw only when both sides are TCP):

- WebSocket with WebSocket: message for message;
- WebSocket with TCP: each binary message becomes one BytesCodec frame to
  the TCP peer, and each frame from the TCP peer one binary message;
- TCP with TCP: raw bytes, unchanged;
- text messages, pings and empty messages are not forwarded but count as
  activity; before the C{RequestRelay} a text or empty message closes the
  connection (hbbr parses it as a message that is not C{RequestRelay}).

Once paired, a leg reads its binary frames on the fast path
(L{litedesk.websocket.fastpath}), leaving every other frame to autobahn.

docs/websocket.rst §5 has the details.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocol

from litedesk.relay.leg import RelayProtocol
from litedesk.relay.server import Relay
from litedesk.relay.table import Phase
from litedesk.websocket.bridge import HANDSHAKE_TIMEOUT, WebSocketBridge
from litedesk.websocket.bridge_factory import BridgeFactory
from litedesk.websocket.bridge_transport import address
from litedesk.websocket.proxy import TrustedProxies
from litedesk.wire.address import Address

__all__ = ["DEFAULT_MAX_MESSAGE", "RelayBridge", "RelayBridgeFactory"]

#: Largest message on the WebSocket relay: a RustDesk client (tungstenite)
#: takes frames up to 16 MiB.
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024


class RelayBridge(WebSocketBridge):
    """A WebSocket connection to the relay."""

    factory: RelayBridgeFactory
    forward_empty = False

    def _leg(self) -> RelayProtocol | None:
        inner = self.inner
        return inner if isinstance(inner, RelayProtocol) else None

    def onOpen(self) -> None:
        # Small reads until paired, as a TCP leg (the pairing raises it).
        self.raw.bufferSize = self.factory.relay.settings.unpaired_read
        super().onOpen()

    def on_nonbinary(self, binary: bool) -> None:
        leg = self._leg()
        if leg is None:
            return
        if leg.conn is None or leg.conn.phase is Phase.HANDSHAKE:
            what = "an empty binary" if binary else "a text"
            leg.close(f"first message is {what} message, not request_relay", warn=True)
            return
        leg.touch()

    def on_ping(self) -> None:
        leg = self._leg()
        if leg is not None:
            leg.touch()


class RelayBridgeFactory(BridgeFactory):
    """The WebSocket relay listener's factory: legs of C{relay}.

    @param fast_path: once a leg is paired, read its binary frames without
        autobahn (L{litedesk.websocket.fastpath}); off only to measure or
        test autobahn's own path.
    """

    protocol = RelayBridge

    def __init__(
        self,
        relay: Relay,
        *,
        proxies: TrustedProxies,
        max_message: int = DEFAULT_MAX_MESSAGE,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        fast_path: bool = True,
    ) -> None:
        drain = relay.settings.deadlines.drain
        super().__init__(
            proxies=proxies,
            max_per_source=relay.settings.limits.max_per_ip,
            max_message=max_message,
            handshake_timeout=handshake_timeout,
            # A leg closing after its partner flushes first: the peer gets
            # the drain deadline to read the rest and answer the close frame.
            close_timeout=drain if drain > 0 else 30.0,
        )
        self.relay = relay
        self.fast_path = fast_path

    def build_inner(self, client: Address, bridge: WebSocketBridge) -> IProtocol | None:
        return self.relay.build(address(*client))
