# -*- test-case-name: tests.test_viewer_browse -*-
"""Browse hosts: the server's LiteDesk v1 discovery list and the LAN.

Two ways to find a host to connect to, both optional:

  - B{Server list.}  A host agent started with C{--discoverable} keeps one
    connection to the server's LiteDesk v1 JSON discovery listener (see
    L{litedesk.discovery.protocol}) registered as C{{"peer_id": ID,
    "peer_type": "host"}}; L{DiscoverableService} does that, reconnecting
    with backoff.  The viewer's connect dialog asks the same listener for
    C{list_peers} (L{list_hosts}) and shows the entries whose type is
    C{"host"}.  The server only runs this listener with C{--discovery}; a
    refused connection just means "no list".
  - B{LAN.}  RustDesk's peer-to-peer discovery: a viewer broadcasts a
    C{PeerDiscovery{cmd: "ping"}} (a bare rendezvous protobuf in one UDP
    datagram) to port 21119 and listening hosts answer
    C{PeerDiscovery{cmd: "pong", id, hostname, platform}}
    (L{LanResponder}, L{lan_search}).
"""

from __future__ import annotations

import json
import platform
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from litedesk.proto import rendezvous_pb2 as rz

DISCOVERY_PORT = 8877
LAN_PORT = 21119
PING_INTERVAL = 30.0
HOST_TYPE = "host"

_log = Logger(namespace="litedesk.viewer.browse")


@dataclass(frozen=True)
class FoundHost:
    """One host the dialog can offer; C{source} is "server" or "lan"."""

    peer_id: str
    source: str
    address: str = ""
    name: str = ""
    platform: str = ""


class _JsonClient(Int32StringReceiver):
    """A discovery connection: send JSON objects, hand replies to a callback."""

    MAX_LENGTH = 16 * 1024 * 1024  # a peer_list of many peers is large

    def __init__(self, on_message: Callable[[dict[str, Any]], None]) -> None:
        self.on_message = on_message
        self.on_connect: Callable[[_JsonClient], None] | None = None
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


async def list_hosts(
    reactor: Any, host: str, port: int = DISCOVERY_PORT, timeout: float = 5.0
) -> list[FoundHost]:
    """The hosts registered with the server's discovery listener.

    @raise ConnectionError: when the listener cannot be reached or does not
        answer within C{timeout} seconds.
    """
    answer: Deferred[dict[str, Any]] = Deferred()

    def got(msg: dict[str, Any]) -> None:
        if msg.get("type") in ("peer_list", "error") and not answer.called:
            answer.callback(msg)

    client = _JsonClient(got)
    ep = HostnameEndpoint(reactor, host, port, timeout=timeout)
    from twisted.internet.endpoints import connectProtocol

    try:
        await connectProtocol(ep, client)
    except Exception as e:
        raise ConnectionError(f"discovery server {host}:{port}: {e}") from None

    def lost(reason: Failure) -> None:
        if not answer.called:
            answer.errback(ConnectionError("discovery server closed the connection"))

    client.on_lost = lost
    client.send({"type": "list_peers"})
    answer.addTimeout(timeout, reactor)
    try:
        msg = await answer
    except ConnectionError:
        raise
    except Exception:
        raise ConnectionError(f"discovery server {host}:{port} did not answer") from None
    finally:
        if client.transport is not None:
            client.transport.loseConnection()
    if msg.get("type") == "error":
        raise ConnectionError(f"discovery server: {msg.get('reason', 'error')}")
    found: list[FoundHost] = []
    for p in msg.get("peers", []) or []:
        if not isinstance(p, dict) or p.get("peer_type") != HOST_TYPE:
            continue
        pid = p.get("peer_id")
        if isinstance(pid, str) and pid:
            ip, pport = p.get("public_ip", ""), p.get("public_port", "")
            found.append(FoundHost(pid, "server", f"{ip}:{pport}" if ip else ""))
    return found


class _RegisterFactory(Factory):
    """Builds connections that register the host and keep pinging."""

    def __init__(self, reactor: Any, peer_id: str, name: str) -> None:
        self.reactor = reactor
        self.peer_id = peer_id
        self.name = name
        self.registered = False

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        proto = _JsonClient(self._message)
        pinger = LoopingCall(lambda: proto.send({"type": "ping"}))
        pinger.clock = self.reactor

        def connected(p: _JsonClient) -> None:
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


class _LanSearch(DatagramProtocol):
    def __init__(self) -> None:
        self.found: dict[str, FoundHost] = {}

    def startProtocol(self) -> None:
        assert self.transport is not None
        self.transport.setBroadcastAllowed(True)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        msg = rz.RendezvousMessage()
        try:
            msg.ParseFromString(data)
        except Exception:
            return
        if msg.WhichOneof("union") != "peer_discovery":
            return
        pd = msg.peer_discovery
        if pd.cmd == "pong" and pd.id:
            self.found[pd.id] = FoundHost(pd.id, "lan", addr[0], pd.hostname, pd.platform)


async def lan_search(
    reactor: Any,
    port: int = LAN_PORT,
    wait: float = 1.0,
    targets: tuple[str, ...] = ("255.255.255.255",),
) -> list[FoundHost]:
    """Broadcast a discovery ping and collect the pongs for C{wait} seconds."""
    from twisted.internet.task import deferLater

    proto = _LanSearch()
    udp = reactor.listenUDP(0, proto)
    try:
        ping = rz.RendezvousMessage(
            peer_discovery=rz.PeerDiscovery(cmd="ping", id="", hostname=socket.gethostname())
        ).SerializeToString()
        for t in targets:
            try:
                udp.write(ping, (t, port))
            except OSError as e:
                _log.debug("LAN discovery ping to {target} failed: {error}", target=t, error=e)
        await deferLater(reactor, wait, lambda: None)
    finally:
        udp.stopListening()
    return sorted(proto.found.values(), key=lambda h: h.peer_id)
