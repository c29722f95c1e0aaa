"""A QUIC host socket and viewer sockets on loopback, for the QUIC session tests.

L{QuicPair} listens with a L{litedesk.quic.host.QuicHost} on
C{127.0.0.1:0} (a real UDP socket, the global reactor), connects
L{litedesk.quic.viewer.QuicViewer}s from their own UDP ports, and tears it
all down without leaving timers or sockets behind (trial checks the reactor
after every test).  L{Wire} carries datagrams between protocols in memory
on a C{Clock}, for tests that need thousands of exchanges or lost
datagrams.  L{RecordingInput} and L{FrameStreamer} are the host's
input injector and screen streamer for a full session: real H.264 frames out,
input events recorded; L{Recorder} is a plain session protocol that
records what it gets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nacl.signing import SigningKey
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IHandshakeListener, IProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from litedesk.quic.host import QuicHost
from litedesk.quic.tls_config import host_configuration
from litedesk.quic.viewer import QuicViewer
from litedesk.screen.codec import EncodedFrame
from litedesk.screen.encode import VideoEncoder
from litedesk.session.pinning import PinnedHostCreator, viewer_context_factory

from .fakes import FakeStreamer

__all__ = [
    "HOST_ADDR",
    "HOST_ID",
    "HOST_MARKER",
    "VIEWER_ADDR",
    "FrameStreamer",
    "MemoryPair",
    "MemoryPort",
    "QuicPair",
    "Recorder",
    "RecordingInput",
    "Wire",
    "reactor",
]

HOST_ID = "123456789"
#: Addresses on the in-memory L{Wire}.
HOST_ADDR = ("10.0.0.1", 4433)
VIEWER_ADDR = ("10.0.0.2", 50000)
#: What a host-side L{Recorder} writes once the handshake is complete.
HOST_MARKER = b"HOST-SAYS-HELLO-OVER-QUIC"
# The global reactor as the UDP/time provider it is (its stubs type it loosely).
reactor: Any = _reactor


@implementer(IHandshakeListener)
class Recorder(Protocol):
    """Records what it receives; the host's writes C{greeting} once the
    handshake is complete, the viewer's answers C{answer} to the first bytes."""

    transport: Any

    def __init__(self, greeting: bytes = b"", answer: bytes = b"") -> None:
        self.greeting = greeting
        self.answer = answer
        self.received = b""
        self.handshake_done = False
        self.reason: Failure | None = None
        self.lost: Deferred[None] = Deferred()

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        first = not self.received
        self.received += data
        if first and self.answer:
            self.transport.write(self.answer)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.reason = reason
        self.lost.callback(None)


class QuicPair:
    """A QUIC host on loopback and the viewers a test connects to it.

    @ivar key: the host's identity key.
    @ivar host: the host's socket protocol.
    @ivar port: the host's UDP port number.
    @ivar viewer_ports: the viewers' listening ports, by viewer.
    """

    def __init__(
        self,
        case: TestCase,
        session_factory: Callable[[IPv4Address | IPv6Address], IProtocol | None],
        key: SigningKey | None = None,
        **host_options: Any,
    ) -> None:
        self.case = case
        self.key = key or SigningKey.generate()
        self.host = QuicHost(
            host_configuration(self.key, HOST_ID), session_factory, reactor, **host_options
        )
        self._port = reactor.listenUDP(0, self.host, interface="127.0.0.1")
        self.port: int = self._port.getHost().port
        self.viewer_ports: dict[QuicViewer, Any] = {}
        case.addCleanup(self._stop_host)

    @property
    def host_pk(self) -> bytes:
        return bytes(self.key.verify_key)

    def connect(self, session: IProtocol, pin: PinnedHostCreator) -> QuicViewer:
        """A viewer on its own UDP port, handshaking with the host."""
        viewer = QuicViewer(reactor)
        self.viewer_ports[viewer] = reactor.listenUDP(0, viewer, interface="127.0.0.1")
        viewer.connect(("127.0.0.1", self.port), session, pin)
        self.case.addCleanup(self._stop_viewer, viewer)
        return viewer

    def viewer_port(self, viewer: QuicViewer) -> int:
        port: int = self.viewer_ports[viewer].getHost().port
        return port

    def rebind(self, viewer: QuicViewer) -> Deferred[int]:
        """Move C{viewer} to a new UDP port (the old one is closed first);
        fires with the new port number."""
        old = self.viewer_ports[viewer]
        d: Deferred[Any] = Deferred()
        stopped = old.stopListening()
        if isinstance(stopped, Deferred):
            stopped.chainDeferred(d)
        else:
            d.callback(None)

        def listen(_: object) -> int:
            new = reactor.listenUDP(0, viewer, interface="127.0.0.1")
            self.viewer_ports[viewer] = new
            port: int = new.getHost().port
            return port

        return d.addCallback(listen)

    def _stop_viewer(self, viewer: QuicViewer) -> Any:
        viewer.close()
        return self.viewer_ports[viewer].stopListening()

    def _stop_host(self) -> Any:
        self.host.close_all()
        return self._port.stopListening()


class MemoryPort:
    """An in-memory UDP port on a L{Wire}: what is written is queued for the
    protocol bound at the destination address."""

    def __init__(self, wire: Wire, addr: tuple[str, int]) -> None:
        self.wire = wire
        self.addr = addr

    def write(self, data: bytes, addr: Any) -> None:
        self.wire.queue.append((tuple(addr), bytes(data), self.addr))

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", *self.addr)


class Wire:
    """Datagrams between in-memory ports, delivered by L{pump}.

    @ivar lose: datagrams to this address are lost (None: none are).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.queue: list[tuple[tuple[Any, ...], bytes, tuple[str, int]]] = []
        self.bound: dict[tuple[Any, ...], Any] = {}
        self.lose: tuple[Any, ...] | None = None

    def bind(self, protocol: Any, addr: tuple[str, int]) -> None:
        self.bound[addr] = protocol
        protocol.makeConnection(MemoryPort(self, addr))

    def pump(self) -> None:
        """Deliver until nothing is queued and no timer is due within 50 ms
        (QUIC paces its packets and delays its acknowledgements)."""
        for _ in range(1000):
            self.clock.advance(0)
            if not self.queue:
                due = [c.getTime() for c in self.clock.getDelayedCalls()]
                step = min(due, default=1.0) - self.clock.seconds()
                if step > 0.05:
                    return
                self.clock.advance(max(0.0, step))
                continue
            to, data, source = self.queue.pop(0)
            protocol = self.bound.get(to) if to != self.lose else None
            if protocol is not None:
                protocol.datagramReceived(data, source)
        raise AssertionError("the wire never went quiet")


class MemoryPair:
    """A host and a viewer connected over an in-memory L{Wire}, with a C{Clock}.

    @ivar hosts: the host-side L{Recorder}s, one per session built.
    @ivar viewer: the viewer-side L{Recorder}, past the host's L{HOST_MARKER}.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.wire = Wire(self.clock)
        key = SigningKey.generate()
        self.hosts: list[Recorder] = []

        def build(addr: object) -> Recorder:
            self.hosts.append(Recorder(greeting=HOST_MARKER))
            return self.hosts[-1]

        self.host = QuicHost(host_configuration(key, HOST_ID), build, self.clock)
        self.wire.bind(self.host, HOST_ADDR)
        self.quic = QuicViewer(self.clock)
        self.wire.bind(self.quic, VIEWER_ADDR)
        self.viewer = Recorder()
        self.quic.connect(HOST_ADDR, self.viewer, viewer_context_factory(bytes(key.verify_key)))
        self.wire.pump()

    def close(self) -> None:
        self.quic.close()
        self.host.close_all()


class RecordingInput:
    """The host's input injector: records every event the session submits."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.released = 0

    def submit(self, ev: object) -> Deferred[None]:
        self.events.append(ev)
        return succeed(None)

    def release_all(self) -> None:
        self.released += 1


class FrameStreamer(FakeStreamer):
    """The host's screen streamer: real H.264 frames of a solid colour, sent
    when the test says so (L{send})."""

    def __init__(self, deliver: Callable[[EncodedFrame], None], width: int = 64) -> None:
        super().__init__()
        self.deliver = deliver
        self.width = self.height = width
        self.encoder = VideoEncoder("h264", fps=10.0, threads=1)
        self.pts = 0
        self.started = False
        self.stopped = False

    def send(self, bgra_pixel: bytes, key: bool = False) -> None:
        """Encode and send one frame of colour C{bgra_pixel} (4 bytes)."""
        self.pts += 100
        frame = bgra_pixel * (self.width * self.height)
        self.deliver(self.encoder.encode(frame, self.width, self.height, self.pts, keyframe=key))

    def start(self) -> None:
        self.started = True
        self.send(b"\x00\x00\xff\xff", key=True)

    def stop(self) -> None:
        self.stopped = True
