"""Short TCP exchanges with the rendezvous server, and relay legs.

Both the host and the viewer open short-lived TCP connections to the
rendezvous server (one request, at most one answer) and connect to the relay
with a framed C{RequestRelay} preamble before the session's TLS starts.
Those two mechanics live here so the roles share them.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredQueue, TimeoutError
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IProtocol, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.session.switching import SwitchingProtocol
from litedesk.wire.address import parse_host_port
from litedesk.wire.bytescodec import FrameDecoder, FrameError, encode_frame
from litedesk.wire.messages import parse_rendezvous

CONNECT_TIMEOUT = 5.0
MAX_RENDEZVOUS_FRAME = 64 * 1024


class LinkError(Exception):
    """A rendezvous or relay connection failed; the message is user-facing."""


class RendezvousLink(Protocol):
    """Framed C{RendezvousMessage}s in a queue; C{KeyExchange} is skipped.

    Servers that implement RustDesk Pro's "secure TCP" send an unsolicited
    C{KeyExchange} first; like RustDesk clients that did not ask for
    encryption we skip it and talk in plaintext.
    """

    def __init__(self) -> None:
        self.messages: DeferredQueue[rz.RendezvousMessage | None] = DeferredQueue()
        self._decoder = FrameDecoder(MAX_RENDEZVOUS_FRAME)
        self.closed: Deferred[None] = Deferred()

    def send(self, msg: rz.RendezvousMessage) -> None:
        if self.transport is not None:
            self.transport.write(encode_frame(msg.SerializeToString()))

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except FrameError:
            self.close()
            return
        for frame in frames:
            msg = parse_rendezvous(frame)
            if msg is None or msg.WhichOneof("union") in (None, "key_exchange"):
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
    """

    def __init__(self, uuid: str, licence_key: str, session: IProtocol) -> None:
        self.uuid = uuid
        self.licence_key = licence_key
        self.session = session
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        req = rz.RendezvousMessage(
            request_relay=rz.RequestRelay(uuid=self.uuid, licence_key=self.licence_key)
        )
        assert self.transport is not None
        self.transport.write(encode_frame(req.SerializeToString()))
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
) -> RelayLeg:
    endpoint = HostnameEndpoint(reactor, relay[0], relay[1], timeout=timeout)
    try:
        leg: RelayLeg = await connectProtocol(endpoint, RelayLeg(uuid, licence_key, session))
    except Exception as e:
        raise LinkError(f"cannot reach relay server {relay[0]}:{relay[1]} ({e})") from None
    return leg
