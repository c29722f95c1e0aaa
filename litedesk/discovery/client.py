"""The client side of the LiteDesk v1 JSON discovery protocol.

One connection that sends JSON objects and hands the server's replies to a
callback (see L{litedesk.discovery.protocol} for the wire format).  The host
agent uses it to stay listed (L{litedesk.host.discoverable}) and the viewer to
read the list (L{litedesk.viewer.browse}); it lives with the protocol so that
neither side imports the other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

__all__ = ["DISCOVERY_PORT", "HOST_TYPE", "LAN_PORT", "JsonClient"]

DISCOVERY_PORT = 8877  # the discovery listener's TCP port
LAN_PORT = 21119  # RustDesk's LAN discovery (UDP broadcast) port
HOST_TYPE = "host"  # the peer_type a host agent registers as

_log = Logger(namespace="litedesk.discovery.client")


class JsonClient(Int32StringReceiver):
    """A discovery connection: send JSON objects, hand replies to a callback."""

    MAX_LENGTH = 16 * 1024 * 1024  # a peer_list of many peers is large

    def __init__(self, on_message: Callable[[dict[str, Any]], None]) -> None:
        self.on_message = on_message
        self.on_connect: Callable[[JsonClient], None] | None = None
        self.on_lost: Callable[[Failure], None] | None = None

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode("utf-8")
        self.sendString(data)  # type: ignore[no-untyped-call]

    def connectionMade(self) -> None:
        if self.on_connect is not None:
            self.on_connect(self)

    def stringReceived(self, data: bytes) -> None:
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            _log.warn("Discovery server sent something that is not JSON")
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        if isinstance(obj, dict):
            self.on_message(obj)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.on_lost is not None:
            self.on_lost(reason)
