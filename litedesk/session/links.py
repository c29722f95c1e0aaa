"""Short exchanges with the rendezvous server, and relay legs, over TCP or WebSocket.

Both the host and the viewer open short-lived connections to the rendezvous
server (one request, at most one answer) and connect to the relay with a
framed C{RequestRelay} preamble before the session's TLS starts.  Those two
mechanics live here so the roles share them, and L{ServerLinks} says how:
RustDesk's TCP ports, or WebSocket for a server reachable only as
C{ws(s)://} (docs/websocket.rst §7, L{litedesk.websocket.client}).

A TCP relay leg whose partner came to the relay over WebSocket receives
every chunk of the partner's raw stream inside a BytesCodec frame (hbbr
keeps a TCP leg framed when its partner is WebSocket), and must frame what
it sends.  L{PartnerFraming} notices that from the partner's first bytes and
frames both ways; otherwise it passes the stream through untouched.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredQueue, TimeoutError
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import (
    IConsumer,
    IProtocol,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.session.switching import SwitchingProtocol
from litedesk.websocket.client import WebSocketError, dial
from litedesk.websocket.shapers import (
    CHUNK,
    MAX_CHUNK,
    MAX_RENDEZVOUS_MESSAGE,
    TLS_HANDSHAKE_RECORD,
    FramedShaper,
    RelayLegShaper,
    classify_first_message,
    frame_header,
)
from litedesk.websocket.urls import WebSocketServer, WsUrl, is_ws_url, parse_ws_url
from litedesk.wire.address import Address, parse_host_port
from litedesk.wire.bytescodec import FrameDecoder, FrameError, encode_frame
from litedesk.wire.messages import parse_rendezvous
from litedesk.wire.secretbox import DecryptError, SecretChannel

CONNECT_TIMEOUT = 5.0
MAX_RENDEZVOUS_FRAME = 64 * 1024


class LinkError(Exception):
    """A rendezvous or relay connection failed; the message is user-facing."""


class RendezvousLink(Protocol):
    """Framed C{RendezvousMessage}s in a queue; C{KeyExchange} is set aside.

    Servers that implement RustDesk Pro's "secure TCP" send an unsolicited
    C{KeyExchange} to a client that stays silent.  Like RustDesk clients
    that did not ask for encryption we skip it and talk in plaintext; a
    viewer that sends an API token answers it first (rustdesk
    C{secure_tcp}, L{litedesk.viewer.secure_rendezvous}), then sets
    C{channel} and every frame after is sealed both ways.

    @ivar key_exchange: fires with the server's first C{KeyExchange}.
    """

    def __init__(self) -> None:
        self.messages: DeferredQueue[rz.RendezvousMessage | None] = DeferredQueue()
        self._decoder = FrameDecoder(MAX_RENDEZVOUS_FRAME)
        self.closed: Deferred[None] = Deferred()
        self.key_exchange: Deferred[rz.KeyExchange] = Deferred()
        self.channel: SecretChannel | None = None

    def send(self, msg: rz.RendezvousMessage) -> None:
        if self.transport is not None:
            payload = msg.SerializeToString()
            if self.channel is not None:
                payload = self.channel.seal(payload)
            self.transport.write(encode_frame(payload))

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except FrameError:
            self.close()
            return
        for frame in frames:
            if self.channel is not None:
                try:
                    frame = self.channel.open(frame)
                except DecryptError:
                    self.close()  # tampered or out of order: nothing after it can be read
                    return
            msg = parse_rendezvous(frame)
            kind = msg.WhichOneof("union") if msg is not None else None
            if kind == "key_exchange" and msg is not None and not self.key_exchange.called:
                self.key_exchange.callback(msg.key_exchange)
            if msg is None or kind in (None, "key_exchange"):
                continue
            self.messages.put(msg)

    async def next_message(self, clock: IReactorTime, timeout: float) -> rz.RendezvousMessage:
        """The next message; LinkError on timeout or when the server hangs up."""
        d = self.messages.get()
        d.addTimeout(timeout, clock)
        try:
            msg = await d
        except (CancelledError, TimeoutError):
            raise LinkError("no answer from the rendezvous server") from None
        if msg is None:
            raise LinkError("the rendezvous server closed the connection")
        return msg

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Wake any waiter; later gets see the same end-of-stream marker.
        for _ in range(max(1, len(self.messages.waiting))):
            self.messages.put(None)
        if not self.closed.called:
            self.closed.callback(None)


async def open_rendezvous(
    reactor: Any, host: str, port: int, timeout: float = CONNECT_TIMEOUT
) -> RendezvousLink:
    """Connect to the rendezvous server's TCP port."""
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    try:
        link: RendezvousLink = await connectProtocol(endpoint, RendezvousLink())
    except Exception as e:
        raise LinkError(f"cannot reach rendezvous server {host}:{port} ({e})") from None
    return link


class RelayLeg(SwitchingProtocol):
    """One side of a relayed session: C{RequestRelay}, then the session's TLS.

    hbbr sends nothing back, and buffers what we send until the partner
    arrives, so the session may start right after the preamble.

    @param role: C{"host"} or C{"viewer"}: which end of the session this is
        (L{PartnerFraming} looks for different signs on each).
    @param partner_framing: put L{PartnerFraming} under the session (a TCP
        leg); a WebSocket leg's shaper does that job itself.
    """

    def __init__(
        self,
        uuid: str,
        licence_key: str,
        session: IProtocol,
        role: str = "viewer",
        partner_framing: bool = True,
    ) -> None:
        self.uuid = uuid
        self.licence_key = licence_key
        self.session = session
        self.role = role
        self.partner_framing = partner_framing
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        req = rz.RendezvousMessage(
            request_relay=rz.RequestRelay(uuid=self.uuid, licence_key=self.licence_key)
        )
        assert self.transport is not None
        self.transport.write(encode_frame(req.SerializeToString()))
        if self.partner_framing:
            self.switch_protocol(PartnerFraming(self.session, self.role))
        else:
            self.switch_protocol(self.session)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if not self.lost.called:
            self.lost.callback(None)


def split_relay(relay_server: str, rendezvous_host: str, rendezvous_port: int) -> tuple[str, int]:
    """Where to find the relay: as given, else the rendezvous host on port + 1."""
    if relay_server.strip():
        return parse_host_port(relay_server, rendezvous_port + 1)
    return rendezvous_host, rendezvous_port + 1


async def connect_relay(
    reactor: Any,
    relay: tuple[str, int],
    uuid: str,
    licence_key: str,
    session: IProtocol,
    timeout: float = CONNECT_TIMEOUT,
    role: str = "viewer",
) -> RelayLeg:
    endpoint = HostnameEndpoint(reactor, relay[0], relay[1], timeout=timeout)
    try:
        leg: RelayLeg = await connectProtocol(
            endpoint, RelayLeg(uuid, licence_key, session, role=role)
        )
    except Exception as e:
        raise LinkError(f"cannot reach relay server {relay[0]}:{relay[1]} ({e})") from None
    return leg


# -- a TCP leg whose partner is on WebSocket -------------------------------------------

#: L{PartnerFraming.mode}: the stream passes through as it is.
RAW = "raw"
#: L{PartnerFraming.mode}: the partner's leg is WebSocket; one frame per chunk both ways.
FRAMED = "framed"


@implementer(ITransport, IConsumer, IPushProducer)
class _FramingTransport:
    """The session's transport under L{PartnerFraming}: everything but writes is the TCP
    transport's (C{transport}, so a session's backlog is still measured at the socket)."""

    def __init__(self, owner: PartnerFraming, below: ITransport) -> None:
        self._owner = owner
        self.transport = below

    def write(self, data: bytes) -> None:
        self._owner.send(data)

    def writeSequence(self, data: Any) -> None:
        self._owner.send(b"".join(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class PartnerFraming(Protocol):
    """Between a TCP relay leg and its session: frames the stream when the partner is on
    WebSocket (docs/websocket.rst §7.3).

    The relay frames a WebSocket partner's messages for a TCP leg and reads
    the TCP leg as frames.  LiteDesk peers on WebSocket carry the raw stream
    in messages, so they arrive here each inside a frame.  The first bytes
    tell, before anything is passed on:

    - host: the viewer answers our C{SignedId} with a TLS ClientHello, whose
      first byte is C{0x16}; a frame whose payload starts with C{0x16} is the
      ClientHello from a WebSocket leg (no protobuf C{Message}, which is what
      a RustDesk client sends in a frame, starts with C{0x16}: wire type 6
      does not exist);
    - viewer: the host speaks first with its C{SignedId} frame; a frame
      whose payload is itself that frame (L{classify_first_message}) comes
      from a WebSocket leg.

    It decides on the first byte when it can (a TLS record, an empty frame)
    and holds at most one frame of at most 16 KiB (viewer) or five bytes
    (host) before it does, so a raw stream never waits on it.
    """

    _log = Logger()

    def __init__(self, session: IProtocol, role: str) -> None:
        self.session = session
        self.role = role
        self.mode: str | None = None
        self._buffer = bytearray()
        # A WebSocket partner's chunks are at most MAX_CHUNK: so is what a
        # partner that has not authenticated yet can make us hold.
        self._frames = FrameDecoder(MAX_CHUNK)

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.session.makeConnection(_FramingTransport(self, self.transport))

    def send(self, data: bytes) -> None:
        if self.transport is None or not data:
            return
        if self.mode == FRAMED:
            self.transport.writeSequence(
                [encode_frame(data[i : i + MAX_CHUNK]) for i in range(0, len(data), MAX_CHUNK)]
            )
        else:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        if self.mode == RAW:
            self.session.dataReceived(data)
            return
        if self.mode == FRAMED:
            self._unframe(data)
            return
        if not data:
            return
        self._buffer += data
        self.mode = self._decide_host() if self.role == "host" else self._decide_viewer()
        if self.mode is None:
            return
        held = bytes(self._buffer)
        self._buffer.clear()
        if self.mode == FRAMED:
            self._log.info(
                "Relay partner {peer} is on WebSocket: framing the session stream",
                peer=str(self.transport.getPeer()) if self.transport is not None else "?",
            )
            self._unframe(held)
        else:
            self.session.dataReceived(held)

    def _decide_host(self) -> str | None:
        buf = self._buffer
        if buf[0] == TLS_HANDSHAKE_RECORD:
            return RAW
        head = frame_header(buf)
        if head is None:
            return None
        size, length = head
        if length == 0:
            return RAW
        if len(buf) <= size:
            return None
        return FRAMED if buf[size] == TLS_HANDSHAKE_RECORD else RAW

    def _decide_viewer(self) -> str | None:
        buf = self._buffer
        # The host's SignedId in a frame in a frame: 64 B to 16 KiB, a two-byte header.
        if buf[0] & 0x03 != 1:
            return RAW
        head = frame_header(buf)
        if head is None:
            return None
        size, length = head
        if len(buf) < size + length:
            return None
        inner = bytes(buf[size : size + length])
        return FRAMED if classify_first_message(inner) == CHUNK else RAW

    def _unframe(self, data: bytes) -> None:
        try:
            frames = self._frames.feed(data)
        except FrameError as e:
            self._log.warn("Closing relay leg: bad frame from a WebSocket partner: {e}", e=e)
            if self.transport is not None:
                self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        for frame in frames:
            if frame:
                self.session.dataReceived(frame)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.mode is None and self._buffer:
            self.mode = RAW
            self.session.dataReceived(bytes(self._buffer))
            self._buffer.clear()
        self.session.connectionLost(reason)


# -- TCP or WebSocket -------------------------------------------------------------------


class ServerLinks:
    """How a host or viewer reaches its rendezvous server and relays.

    Over TCP (RustDesk's ports: P for requests, a relay's HOST:PORT); with
    C{ws} over WebSocket (L{WebSocketServer}: the rendezvous URL, the relay
    URL for each relay name), and then never by TCP or UDP.  A relay named
    by a C{ws://} or C{wss://} URL is reached over WebSocket either way, as
    RustDesk's C{connect_tcp} does.

    @ivar server: (host, P) as the option names the server.
    @ivar ws: where the server is on WebSocket; None over TCP.
    @ivar ws_ca: PEM certificates that C{wss://} servers must chain to
        (C{--ws-ca}); None: the system's.
    """

    def __init__(
        self,
        server: Address,
        ws: WebSocketServer | None = None,
        ws_ca: str | None = None,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.server = server
        self.ws = ws
        self.ws_ca = ws_ca
        self.timeout = timeout

    @property
    def websocket(self) -> bool:
        return self.ws is not None

    def describe(self) -> str:
        """The server as logs name it."""
        if self.ws is not None:
            return str(self.ws.rendezvous)
        host, port = self.server
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def open_rendezvous(self, reactor: Any) -> RendezvousLink:
        """A connection to the rendezvous server for one request."""
        if self.ws is None:
            return await open_rendezvous(reactor, *self.server, timeout=self.timeout)
        link = RendezvousLink()
        await self.open_stream(reactor, link)
        return link

    async def open_stream(self, reactor: Any, protocol: IProtocol) -> None:
        """Connect C{protocol} to the rendezvous server: BytesCodec frames both ways
        (on WebSocket, one message per frame).

        @raise LinkError: the server cannot be reached.
        """
        if self.ws is None:
            host, port = self.server
            endpoint = HostnameEndpoint(reactor, host, port, timeout=self.timeout)
            try:
                await connectProtocol(endpoint, protocol)
            except Exception as e:
                raise LinkError(f"cannot reach rendezvous server {self.describe()} ({e})") from None
            return
        try:
            await dial(
                reactor,
                self.ws.rendezvous,
                protocol,
                FramedShaper(MAX_RENDEZVOUS_MESSAGE),
                ca_file=self.ws_ca,
                timeout=max(self.timeout, 10.0),
            )
        except WebSocketError as e:
            raise LinkError(f"cannot reach rendezvous server {e}") from None

    def default_relay_name(self) -> str:
        """How this peer names its default relay to the other (C{RelayResponse})."""
        if self.ws is not None:
            return self.ws.relay_name()
        host, port = split_relay("", *self.server)
        return f"{host}:{port}"

    def relay_url(self, relay_name: str) -> WsUrl | None:
        """The WebSocket URL of the relay C{relay_name} names; None for a TCP relay.

        @raise LinkError: a name that is neither a URL nor C{HOST[:PORT]}.
        """
        name = relay_name.strip()
        try:
            if self.ws is not None:
                return self.ws.relay_for(name)
            if is_ws_url(name):
                return parse_ws_url(name)
        except ValueError as e:
            raise LinkError(f"bad relay server {name[:100]!r}: {e}") from None
        return None

    async def connect_relay(
        self,
        reactor: Any,
        relay_name: str,
        uuid: str,
        licence_key: str,
        session: IProtocol,
        role: str = "viewer",
    ) -> RelayLeg:
        """Join C{uuid} on the relay C{relay_name} names (empty: the default relay)."""
        url = self.relay_url(relay_name)
        if url is None:
            try:
                relay = split_relay(relay_name, *self.server)
            except ValueError as e:
                raise LinkError(f"bad relay server {relay_name[:100]!r}: {e}") from None
            return await connect_relay(
                reactor, relay, uuid, licence_key, session, self.timeout, role=role
            )
        leg = RelayLeg(uuid, licence_key, session, role=role, partner_framing=False)
        try:
            await dial(
                reactor,
                url,
                leg,
                RelayLegShaper(role),
                ca_file=self.ws_ca,
                timeout=max(self.timeout, 10.0),
            )
        except WebSocketError as e:
            raise LinkError(f"cannot reach relay server {e}") from None
        return leg
