"""C{--discoverable}: keep this host listed for viewers' Browse dialog.

L{DiscoverableService} keeps one connection to the server's LiteDesk v1
discovery listener registered as C{{"peer_id": ID, "peer_type": "host"}},
reconnecting with backoff, and answers RustDesk's LAN discovery pings
(L{LanResponder}).  The viewer's side, reading the list and broadcasting the
pings, is L{litedesk.viewer.browse}.
"""

from __future__ import annotations

import platform
import socket
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.discovery.client import HOST_TYPE, JsonClient
from litedesk.proto import rendezvous_pb2 as rz

__all__ = ["PING_INTERVAL", "DiscoverableService", "LanResponder"]

PING_INTERVAL = 30.0

_log = Logger(namespace="litedesk.host.discoverable")


class _RegisterFactory(Factory):
    """Builds connections that register the host and keep pinging."""

    def __init__(self, reactor: Any, peer_id: str, name: str) -> None:
        self.reactor = reactor
        self.peer_id = peer_id
        self.name = name
        self.registered = False

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        proto = JsonClient(self._message)
        pinger = LoopingCall(lambda: proto.send({"type": "ping"}))
        pinger.clock = self.reactor

        def connected(p: JsonClient) -> None:
            # "name" is our own field: the server ignores unknown fields.
            p.send(
                {
                    "type": "register",
                    "peer_id": self.peer_id,
                    "peer_type": HOST_TYPE,
                    "name": self.name,
                }
            )
            pinger.start(PING_INTERVAL, now=False)

        def lost(reason: Failure) -> None:
            self.registered = False
            if pinger.running:
                pinger.stop()

        proto.on_connect = connected
        proto.on_lost = lost
        return proto

    def _message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "registered":
            if not self.registered:
                _log.info(
                    "Discoverable: listed by the discovery server as {peer_id}",
                    peer_id=self.peer_id,
                )
            self.registered = True
        elif kind == "error":
            _log.warn("Discovery server refused the listing: {reason}", reason=msg.get("reason"))


class DiscoverableService(MultiService):
    """Keep the host listed with the server's discovery listener (and on the LAN).

    @param lan_port: answer LAN discovery pings on this UDP port; 0 = no.
    """

    def __init__(
        self,
        reactor: Any,
        peer_id: str,
        server: tuple[str, int] | None,
        lan_port: int = 0,
        name: str = "",
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.setName("discoverable")  # type: ignore[no-untyped-call]
        self.reactor = reactor
        self.factory = _RegisterFactory(reactor, peer_id, name or socket.gethostname())
        self.lan_port = lan_port
        self.peer_id = peer_id
        self._udp: Any = None
        if server is not None:
            ep = HostnameEndpoint(reactor, server[0], server[1], timeout=10)
            ClientService(
                ep, self.factory, retryPolicy=backoffPolicy(maxDelay=60.0), clock=reactor
            ).setServiceParent(self)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.lan_port:
            try:
                self._udp = self.reactor.listenUDP(
                    self.lan_port, LanResponder(self.peer_id, self.factory.name)
                )
            except CannotListenError as e:
                _log.warn("LAN discovery is off: {error}", error=e)

    def stopService(self) -> Any:
        if self._udp is not None:
            self._udp.stopListening()
            self._udp = None
        return super().stopService()  # type: ignore[no-untyped-call]


class LanResponder(DatagramProtocol):
    """Answer RustDesk LAN discovery pings with this host's id."""

    def __init__(self, peer_id: str, name: str) -> None:
        self.peer_id = peer_id
        self.name = name

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        msg = rz.RendezvousMessage()
        try:
            msg.ParseFromString(data)
        except Exception:
            return  # not ours; never answer garbage
        if msg.WhichOneof("union") != "peer_discovery" or msg.peer_discovery.cmd != "ping":
            return
        pong = rz.RendezvousMessage(
            peer_discovery=rz.PeerDiscovery(
                cmd="pong", id=self.peer_id, hostname=self.name, platform=platform.system()
            )
        )
        assert self.transport is not None
        self.transport.write(pong.SerializeToString(), addr)
