# -*- test-case-name: tests.test_rustdesk_host -*-
"""One session port, two protocols: LiteDesk viewers and stock RustDesk clients.

A LiteDesk viewer is the TLS client of its session (docs/protocol.rst §8), so
the first byte it sends is a TLS handshake record (C{0x16}).  A stock RustDesk
client sends nothing: it waits for the host's C{SignedId} (docs/protocol.rst
§11).  L{ProtocolDetector} therefore waits L{DETECT_TIMEOUT} seconds on the
injected clock for a first byte:

- C{0x16}: the stream goes, unchanged and with the bytes already read, to the
  TLS host session exactly as without detection;
- silence: the stream goes to RustDesk's secure channel, host side
  (L{litedesk.rustdesk.rustdesk_host_factory}), with a L{HostSession} inside;
- C{0x00}, the empty C{Message} a stock client without a verified host key
  sends at once: RustDesk's channel too, which refuses it (or, with
  C{--allow-insecure-rustdesk}, runs it in plaintext);
- any other first byte: the connection is closed with a logged reason.

Nothing falls back to plaintext: the channel refuses an unencrypted client
unless the host was started with C{--allow-insecure-rustdesk}.

Issue 9's limits hold on both paths: the detector is an unauthenticated
member of the host's L{litedesk.session.admission.Admission} from the
connection on; on the TLS path it hands its place to the TLS session at once,
on the RustDesk path it keeps it through the channel's key exchange (bounded
by L{RUSTDESK_HANDSHAKE_TIMEOUT}, absolute, so a peer trickling bytes cannot
stretch it) and hands it to the L{HostSession} when that starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nacl.signing import SigningKey
from twisted.internet.interfaces import IAddress, IProtocol, IReactorTime, ITransport
from twisted.internet.protocol import Factory, Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.rustdesk.channel import ChannelTransport, SecureChannelProtocol
from litedesk.rustdesk.channel import rustdesk_host_factory as _channel_factory
from litedesk.session.admission import Admission
from litedesk.session.switching import SwitchingProtocol

__all__ = [
    "DETECT_TIMEOUT",
    "EMPTY_FRAME",
    "RUSTDESK_HANDSHAKE_TIMEOUT",
    "TLS_HANDSHAKE_RECORD",
    "DetectingFactory",
    "ProtocolDetector",
    "RustDeskSessionStarter",
    "rustdesk_host_protocol",
]

# How long a silent peer is taken for a stock RustDesk client.  A LiteDesk
# viewer's ClientHello leaves with its TCP handshake's last ACK, so on any
# link it arrives within a round trip of the connection; 0.3 s covers slow
# links, and a RustDesk client waits 18 s for SignedId (docs/protocol.rst §11)
# so the pause costs it nothing noticeable.
DETECT_TIMEOUT = 0.3
# The TLS record type of a handshake message: the first byte of a ClientHello.
TLS_HANDSHAKE_RECORD = 0x16
# The BytesCodec header of an empty frame: a RustDesk client's empty Message.
EMPTY_FRAME = 0x00
# The RustDesk key exchange is one frame each way; the TLS path's deadline
# (host_session.HANDSHAKE_TIMEOUT, 10 s) is ample for it too, and shorter
# than the channel's own 18 s, which only mirrors RustDesk's client timeout.
RUSTDESK_HANDSHAKE_TIMEOUT = 10.0


class ProtocolDetector(SwitchingProtocol):
    """Waits for the first byte, then hands the stream to the protocol it names.

    @ivar detect_timeout: seconds of silence after which the peer is taken
        for a RustDesk client.
    @ivar chosen: C{"tls"}, C{"rustdesk"}, C{"refused"} or None (undecided).
    @ivar close_reason: why the detector closed the connection, or None.
    """

    detect_timeout: float = DETECT_TIMEOUT
    _log = Logger()

    def __init__(
        self,
        make_tls: Callable[[], IProtocol],
        make_rustdesk: Callable[[Callable[[], None]], IProtocol],
        clock: IReactorTime,
        *,
        admission: Admission | None = None,
        shared: bool = False,
    ) -> None:
        """
        @param make_tls: builds the TLS session protocol (not yet connected).
        @param make_rustdesk: builds the RustDesk channel protocol; its
            argument is to be called when the session inside starts, to give
            the detector's admission place up.
        @param admission: the host's unauthenticated-session accounting.
        @param shared: the peer address is shared (a relay's).
        """
        self._make_tls = make_tls
        self._make_rustdesk = make_rustdesk
        self._clock = clock
        self._admission = admission
        self._shared = shared
        self._timer: Any = None
        self.chosen: str | None = None
        self.close_reason: str | None = None

    # -- connection events -----------------------------------------------------

    def connectionMade(self) -> None:
        assert self.transport is not None
        peer = str(getattr(self.transport.getPeer(), "host", "?"))
        if self._admission is not None and not self._admission.admit(
            self, peer, shared=self._shared
        ):
            # The admission logs refusals itself (rate-limited).
            self.chosen = "refused"
            self._abort()
            return
        self._timer = self._clock.callLater(self.detect_timeout, self._silent)

    def preamble_received(self, data: bytes) -> None:
        if self.chosen is not None or not data:
            return
        if data[0] == TLS_HANDSHAKE_RECORD:
            self._cancel_timer()
            self.chosen = "tls"
            # HostSession admits itself in its connectionMade: leave first so
            # that the one connection is never counted twice.
            self._release()
            self.switch_protocol(self._make_tls(), data)
            return
        if data[0] == EMPTY_FRAME:
            # A stock client holding no verified host key sends an empty
            # Message at once, without reading (docs/protocol.rst §11.5): the
            # channel refuses it with the error it shows, or runs it in
            # plaintext with --allow-insecure-rustdesk.
            self._cancel_timer()
            self._start_rustdesk(data)
            return
        self._refuse(
            f"first byte 0x{data[0]:02x} is neither a TLS handshake, "
            "a RustDesk empty message nor silence"
        )

    def _silent(self) -> None:
        self._timer = None
        if self.chosen is not None:
            return
        self._log.info(
            "Silent peer {peer} taken for a RustDesk client", peer=self._peer(), rustdesk=True
        )
        self._start_rustdesk(b"")

    def _start_rustdesk(self, leftover: bytes) -> None:
        # The detector keeps its admission place through the key exchange;
        # the channel's session gives it up when it starts.
        self.chosen = "rustdesk"
        self.switch_protocol(self._make_rustdesk(self._release), leftover)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        self._release()
        super().connectionLost(reason)

    # -- admission -------------------------------------------------------------

    def evict(self, reason: str) -> None:
        """The admission dropped us to make room: abort, whatever the phase."""
        self._cancel_timer()
        self._abort()

    def _release(self) -> None:
        if self._admission is not None:
            self._admission.leave(self)

    # -- closing ---------------------------------------------------------------

    def _refuse(self, reason: str) -> None:
        self._cancel_timer()
        self.chosen = "refused"
        self.close_reason = reason
        self._log.warn(
            "Session refused before any protocol with {peer}: {reason}",
            peer=self._peer(),
            reason=reason,
        )
        self._release()
        self._abort()

    def _abort(self) -> None:
        transport = self.transport
        if transport is None:
            return
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:  # pragma: no cover - every TCP transport can abort
            transport.loseConnection()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _peer(self) -> str:
        try:
            return str(self.transport.getPeer()) if self.transport is not None else "?"
        except Exception:  # pragma: no cover - a transport without an address
            return "?"


class _SessionTransport(ChannelTransport):
    """The channel's transport as the session sees it, with the TCP layer below.

    The session measures its send backlog (and tunes the kernel's) by walking
    C{.transport} down to the socket (litedesk.screen.backpressure), as it
    does through TLS; sealing never buffers, so the TCP layer is the backlog.
    """

    @property
    def transport(self) -> ITransport:
        return self.channel.outer


class RustDeskSessionStarter(Protocol):
    """The channel's inner protocol: starts a session once the key exchange ended.

    The channel builds its inner protocol only when the handshake has ended,
    so connecting this one is the moment a TLS session would learn of
    C{handshakeCompleted}: it connects the session and tells it so.
    """

    def __init__(self, session: IProtocol, release: Callable[[], None]) -> None:
        self.session = session
        self._release = release

    def makeConnection(self, transport: ITransport) -> None:
        self.connected = True
        self.transport = transport
        if isinstance(transport, ChannelTransport):
            transport = _SessionTransport(transport.channel, transport.encrypted)
        self._release()
        self.session.makeConnection(transport)
        completed = getattr(self.session, "handshakeCompleted", None)
        if completed is not None:
            completed()

    def dataReceived(self, data: bytes) -> None:
        self.session.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.session.connectionLost(reason)


class _StarterFactory(Factory):
    def __init__(self, make_session: Callable[[], IProtocol], release: Callable[[], None]) -> None:
        self._make_session = make_session
        self._release = release

    def buildProtocol(self, addr: IAddress | None) -> RustDeskSessionStarter:
        return RustDeskSessionStarter(self._make_session(), self._release)


def rustdesk_host_protocol(
    signing_key: SigningKey,
    peer_id: str,
    make_session: Callable[[], IProtocol],
    clock: IReactorTime,
    release: Callable[[], None] = lambda: None,
    *,
    allow_insecure: bool = False,
) -> SecureChannelProtocol:
    """The host side of RustDesk's channel around one session, not yet connected.

    C{release} is called when the session starts (see L{ProtocolDetector}).
    """
    factory = _channel_factory(
        signing_key,
        peer_id,
        _StarterFactory(make_session, release),
        clock,
        allow_insecure=allow_insecure,
    )
    proto = factory.buildProtocol(None)
    assert isinstance(proto, SecureChannelProtocol)
    proto.handshake_timeout = RUSTDESK_HANDSHAKE_TIMEOUT
    return proto


class DetectingFactory(ServerFactory):
    """Builds a L{ProtocolDetector} per connection, for C{listen} and C{connect} alike."""

    def __init__(
        self,
        make_detector: Callable[[], ProtocolDetector],
    ) -> None:
        self._make_detector = make_detector

    def buildProtocol(self, addr: IAddress | None) -> ProtocolDetector:
        proto = self._make_detector()
        proto.factory = self
        return proto
