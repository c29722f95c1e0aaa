"""A QUIC host socket and viewer sockets on loopback, for the QUIC session tests.

L{QuicPair} listens with a L{litedesk.quic.host.QuicHost} on
C{127.0.0.1:0} (a real UDP socket, the global reactor), connects
L{litedesk.quic.viewer.QuicViewer}s from their own UDP ports, and tears it
all down without leaving timers or sockets behind (trial checks the reactor
after every test).  L{RecordingInput} and L{FrameStreamer} are the host's
input injector and screen streamer for a full session: real H.264 frames out,
input events recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nacl.signing import SigningKey
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocol
from twisted.trial.unittest import TestCase

from litedesk.quic.host import QuicHost
from litedesk.quic.tls_config import host_configuration
from litedesk.quic.viewer import QuicViewer
from litedesk.screen.codec import EncodedFrame
from litedesk.screen.encode import VideoEncoder
from litedesk.session.pinning import PinnedHostCreator

__all__ = ["HOST_ID", "FrameStreamer", "QuicPair", "RecordingInput", "reactor"]

HOST_ID = "123456789"
# The global reactor as the UDP/time provider it is (its stubs type it loosely).
reactor: Any = _reactor


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


class FrameStreamer:
    """The host's screen streamer: real H.264 frames of a solid colour, sent
    when the test says so (L{send})."""

    def __init__(self, deliver: Callable[[EncodedFrame], None], width: int = 64) -> None:
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

    def force_keyframe(self) -> None:
        pass

    def switch_display(self, index: int) -> None:
        pass

    def set_quality(self, quality: int) -> None:
        pass

    def set_custom_fps(self, fps: int | float | None) -> None:
        pass

    def on_rtt(self, rtt: float) -> None:
        pass
