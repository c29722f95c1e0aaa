# -*- test-case-name: tests.test_discovery -*-
"""The LiteDesk v1 JSON discovery protocol: wire parsing and the factory.

Every message, in both directions, is a 4-byte big-endian length followed by
that many bytes of UTF-8 JSON: one object with a string C{"type"}.  Fields
not listed below are ignored, so clients may add their own.

Client to server ("->"), and the server's answer ("<-")::

    -> register {peer_id, peer_type}
    <- registered {peer_id, public_ip, public_port}
    -> list_peers
    <- peer_list {peers: [{peer_id, peer_type, public_ip, public_port}, ...]}
    -> get_peer_info {target_id}
    <- peer_info {peer_id, peer_type, public_ip, public_port}
       and the target is sent
       connection_request {from_peer_id, from_peer_type,
                           from_public_ip, from_public_port}
    -> ping
    <- pong

C{public_ip}/C{public_port} are the TCP source address as the server sees it,
with v4-mapped IPv6 (C{::ffff:1.2.3.4}) turned into IPv4.  Peer ids are 1 to
64 characters, peer types at most 64; both must be valid Unicode text.

Errors are C{{"type": "error", "reason": "..."}}.  Two kinds:

  - I{Protocol violations} close the connection once the error is written:
    a length over 64 KiB, a body that is not UTF-8, not JSON, or not an
    object, a missing or non-string C{type}, an unknown C{type}, a missing or
    wrongly typed field, an empty or oversize id.  So does the idle timeout.
  - I{Request failures} keep the connection open: C{get_peer_info} before
    C{register}, an unknown target, a full registry.

Registering on the same connection again replaces that connection's entry.
Registering an id another live connection holds evicts that connection (it
is sent an error and closed): the newer connection wins.  A peer leaves the
list when its connection closes.

Timeouts: a connection that has not registered is closed after
C{idle_timeout} seconds (60 by default) without a complete message.  Once
registered it gets C{registered_idle_timeout}, which by default is C{None}:
registered peers may stay connected indefinitely (TCP keepalive is turned on
where the transport supports it); with a number, clients keep the connection
alive with C{ping}.

Server-to-client frames are not capped at 64 KiB: a C{peer_list} with many
peers is larger.  The server stops reading from a client whose replies pile
up unread, and drops a client whose unread C{connection_request}s exceed
64 KiB.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.discovery.state import (
    DiscoveryRegistry,
    IDiscoveryPeer,
    Message,
    error,
    peer_id_problem,
    peer_type_problem,
)
from litedesk.wire.addrmangle import normalize_host

#: Longest accepted client message body, in bytes.
MAX_MESSAGE_LENGTH = 65536

#: Default seconds an unregistered connection may stay silent.
DEFAULT_IDLE_TIMEOUT = 60.0

#: Default seconds a closing connection gets to flush before it is aborted.
DEFAULT_CLOSE_GRACE = 10.0

#: Bytes of pushed messages (C{connection_request}, eviction notices) that may
#: queue for a client that is not reading before it is dropped.
MAX_UNREAD_PUSH = 65536


class ProtocolViolation(Exception):
    """A client message that is not valid discovery protocol.

    @ivar reason: the text sent back in the C{error} message.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Register:
    """C{register}: claim C{peer_id}."""

    peer_id: str
    peer_type: str


@dataclass(frozen=True)
class ListPeers:
    """C{list_peers}."""


@dataclass(frozen=True)
class GetPeerInfo:
    """C{get_peer_info}: look up C{target_id} and ask it to connect."""

    target_id: str


@dataclass(frozen=True)
class Ping:
    """C{ping}: keepalive."""


Request = Register | ListPeers | GetPeerInfo | Ping


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _string_field(obj: Mapping[str, object], name: str) -> str:
    value = obj.get(name)
    if value is None and name not in obj:
        raise ProtocolViolation(f"missing field {name!r}")
    if not isinstance(value, str):
        raise ProtocolViolation(f"field {name!r} must be a string")
    return value


def _peer_id_field(obj: Mapping[str, object], name: str) -> str:
    value = _string_field(obj, name)
    problem = peer_id_problem(value, name)
    if problem is not None:
        raise ProtocolViolation(problem)
    return value


def decode_request(data: bytes) -> Request:
    """Parse one client message body.

    @raise ProtocolViolation: if C{data} is not a valid request.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation("message is not UTF-8") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ProtocolViolation("message is nested too deeply") from None
    except ValueError:
        raise ProtocolViolation("message is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolViolation("message is not a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolViolation("message has no string 'type'")
    if kind == "register":
        peer_id = _peer_id_field(obj, "peer_id")
        peer_type = _string_field(obj, "peer_type")
        problem = peer_type_problem(peer_type)
        if problem is not None:
            raise ProtocolViolation(problem)
        return Register(peer_id, peer_type)
    if kind == "list_peers":
        return ListPeers()
    if kind == "get_peer_info":
        return GetPeerInfo(_peer_id_field(obj, "target_id"))
    if kind == "ping":
        return Ping()
    raise ProtocolViolation("unknown message type")


def encode_message(message: Mapping[str, object]) -> bytes:
    """The JSON body of one server message (ASCII, so also UTF-8)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("ascii")


@implementer(IDiscoveryPeer)
class DiscoveryProtocol(Int32StringReceiver, TimeoutMixin):
    """One discovery client connection.

    The protocol registers itself as a streaming producer on its own
    transport: while the transport's write buffer is full (the client is not
    reading its replies), no further requests are read from it.

    @param registry: the shared peer registry.
    @param clock: time source for the timeouts.
    @param idle_timeout: seconds an unregistered connection may go without
        a complete message.
    @param registered_idle_timeout: the same once registered; C{None} for
        no limit.
    @param close_grace: seconds a closing connection has to flush before it
        is aborted.
    @param connections: a set this protocol adds itself to while connected.
    """

    MAX_LENGTH = MAX_MESSAGE_LENGTH
    _log = Logger()

    def __init__(
        self,
        registry: DiscoveryRegistry,
        clock: IReactorTime,
        *,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        registered_idle_timeout: float | None = None,
        close_grace: float = DEFAULT_CLOSE_GRACE,
        connections: set[DiscoveryProtocol] | None = None,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._registered_idle_timeout = registered_idle_timeout
        self._close_grace = close_grace
        self._connections = connections
        self._public_ip = ""
        self._public_port = 0
        self._closing = False
        self._abort_call: IDelayedCall | None = None
        self._unread_push = 0

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """TimeoutMixin's scheduler, on the injected clock."""
        return self._clock.callLater(period, func)

    def _set_timeout(self, period: float | None) -> None:
        self.setTimeout(period)  # type: ignore[no-untyped-call]

    # -- connection life cycle

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        if isinstance(peer, IPv4Address | IPv6Address):
            self._public_ip = normalize_host(peer.host)
            self._public_port = peer.port
        # Other transports (UNIX sockets) have no address to report: "" and 0.
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpKeepAlive(True)
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        if self._connections is not None:
            self._connections.add(self)
        self._set_timeout(self._idle_timeout)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._set_timeout(None)
        self._closing = True
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        record = self._registry.unregister(self)
        if record is not None:
            self._log.debug("Discovery peer {peer_id!r} left", peer_id=record.peer_id)
        if self._connections is not None:
            self._connections.discard(self)

    def timeoutConnection(self) -> None:
        self._log.info(
            "Closing idle discovery connection (peer {peer_id!r})", peer_id=self._peer_id()
        )
        self._write(error("idle timeout"))
        self._close()

    # -- producer (backpressure from our own transport)

    def resumeProducing(self) -> None:
        self._unread_push = 0
        super().resumeProducing()  # type: ignore[no-untyped-call]

    # -- input

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def lengthLimitExceeded(self, length: int) -> None:
        if self._closing:
            return
        self._violation(f"message length {length} exceeds {self.MAX_LENGTH}")

    def stringReceived(self, string: bytes) -> None:
        if self._closing:
            return
        try:
            request = decode_request(string)
        except ProtocolViolation as e:
            self._violation(e.reason)
            return
        self.resetTimeout()  # type: ignore[no-untyped-call]
        self._write(self._handle(request))

    def _handle(self, request: Request) -> Message:
        match request:
            case Register(peer_id, peer_type):
                reply = self._registry.register(
                    self, peer_id, peer_type, self._public_ip, self._public_port
                )
                if reply["type"] == "registered":
                    self._set_timeout(self._registered_idle_timeout)
                return reply
            case ListPeers():
                return self._registry.list_peers()
            case GetPeerInfo(target_id):
                return self._registry.get_peer_info(self, target_id)
            case Ping():
                return {"type": "pong"}

    # -- output

    def send_message(self, message: Mapping[str, object]) -> None:
        """Push a message the client did not ask for (L{IDiscoveryPeer})."""
        if self._closing:
            return
        body = encode_message(message)
        if self.paused:
            self._unread_push += len(body)
            if self._unread_push > MAX_UNREAD_PUSH:
                self._log.warn(
                    "Dropping discovery peer {peer_id!r}: it is not reading its messages",
                    peer_id=self._peer_id(),
                )
                self._closing = True
                self.transport.abortConnection()  # type: ignore[union-attr]
                return
        self.sendString(body)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Close once what was written is flushed (L{IDiscoveryPeer})."""
        self._close()

    def _write(self, message: Mapping[str, object]) -> None:
        self.sendString(encode_message(message))  # type: ignore[no-untyped-call]

    def _violation(self, reason: str) -> None:
        self._log.warn(
            "Closing discovery connection (peer {peer_id!r}): {reason}",
            reason=reason,
            peer_id=self._peer_id(),
        )
        self._write(error(reason))
        self._close()

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._set_timeout(None)
        transport = self.transport
        assert transport is not None
        # A registered producer keeps the connection open after the write
        # buffer drains; let go of it first.
        transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.loseConnection()
        self._abort_call = self._clock.callLater(
            self._close_grace,
            transport.abortConnection,  # type: ignore[attr-defined]
        )

    def _peer_id(self) -> str | None:
        record = self._registry.peer_for(self)
        return None if record is None else record.peer_id


class DiscoveryFactory(ServerFactory[DiscoveryProtocol]):
    """Builds L{DiscoveryProtocol}s that share one registry and clock.

    @param registry: the peer registry.
    @param clock: time source for the timeouts (the reactor in production).
    @param idle_timeout: seconds an unregistered connection may go without a
        complete message; C{None} for no limit.
    @param registered_idle_timeout: the same for registered peers; C{None}
        (the default) lets them stay connected.
    @param close_grace: seconds a closing connection has to flush its last
        message before it is aborted.
    """

    noisy = False

    def __init__(
        self,
        registry: DiscoveryRegistry,
        clock: IReactorTime,
        *,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        registered_idle_timeout: float | None = None,
        close_grace: float = DEFAULT_CLOSE_GRACE,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.registered_idle_timeout = registered_idle_timeout
        self.close_grace = close_grace
        self._connections: set[DiscoveryProtocol] = set()

    @property
    def connection_count(self) -> int:
        """How many connections are open now."""
        return len(self._connections)

    def buildProtocol(self, addr: IAddress | None) -> DiscoveryProtocol:
        protocol = DiscoveryProtocol(
            self.registry,
            self.clock,
            idle_timeout=self.idle_timeout,
            registered_idle_timeout=self.registered_idle_timeout,
            close_grace=self.close_grace,
            connections=self._connections,
        )
        protocol.factory = self
        return protocol
