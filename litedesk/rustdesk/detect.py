"""One session stream, two protocols: LiteDesk viewers and stock RustDesk clients.

The host speaks first on every session stream it accepts or opens (direct,
LAN, punched, C{--listen}, UPnP and relay legs), as a RustDesk host does: a
C{SignedId} (docs/protocol.rst §11.2) whose signed C{IdPk} carries LiteDesk's
mark, C{litedesk_tls} (§11.5).  What the peer answers names its protocol:

- C{0x16}, a TLS handshake record: a LiteDesk viewer that read the mark
  answers with its ClientHello.  The stream, with the bytes read so far, goes
  to the TLS host session exactly as before.
- anything else is a BytesCodec frame, the client's answer in RustDesk's key
  exchange (C{PublicKey}, or an empty C{Message} from a client holding no
  verified key): the stream goes to RustDesk's secure channel, whose
  handshake has already begun with our C{SignedId}, with a L{HostSession}
  inside (or, with C{--no-rustdesk-clients}, a refusal the client shows).

No timer guesses: the answer decides, so a relay leg (where the viewer may
arrive long after the host) is served like any other stream.  Nothing falls
back to plaintext: the channel refuses an unencrypted client unless the host
runs with C{--allow-insecure-rustdesk}.

Issue 9's limits hold on both paths: the detector is an unauthenticated
member of the host's L{litedesk.session.admission.Admission} from the
connection on; on the TLS path it hands its place to the TLS session at once,
on the RustDesk path it keeps it through the key exchange and hands it to the
L{HostSession} when that starts.  The peer must answer, and the key exchange
end, within L{RUSTDESK_HANDSHAKE_TIMEOUT} of the connection (absolute, so a
peer trickling bytes cannot stretch it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IAddress, IProtocol, IReactorTime, ITransport
from twisted.internet.protocol import Factory, Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.proto import message_pb2
from litedesk.rustdesk.channel import ChannelTransport, SecureChannelProtocol
from litedesk.rustdesk.secure import Handshake, HostHandshake, Outcome
from litedesk.session.admission import Admission
from litedesk.session.switching import SwitchingProtocol
from litedesk.wire.bytescodec import encode_frame

__all__ = [
    "RUSTDESK_CLIENTS_OFF",
    "RUSTDESK_HANDSHAKE_TIMEOUT",
    "TLS_HANDSHAKE_RECORD",
    "DetectingFactory",
    "ProtocolDetector",
    "RustDeskRefusal",
    "RustDeskSessionStarter",
    "SessionStarterFactory",
    "rustdesk_host_protocol",
]

# The TLS record type of a handshake message: the first byte of a ClientHello.
TLS_HANDSHAKE_RECORD = 0x16
# The answer and the key exchange take one frame each way; the TLS path's
# deadline (host_session.HANDSHAKE_TIMEOUT, 10 s) is ample for both, and
# shorter than the channel's own 18 s, which only mirrors RustDesk's client.
RUSTDESK_HANDSHAKE_TIMEOUT = 10.0
# What a stock client is told by a host started with --no-rustdesk-clients;
# it shows it in its "Login Error" box.
RUSTDESK_CLIENTS_OFF = (
    "This host accepts LiteDesk viewers only: RustDesk clients are turned off "
    "(--no-rustdesk-clients)."
)


class ProtocolDetector(SwitchingProtocol):
    """Speaks first with C{SignedId}, then hands the stream to the protocol the answer names.

    @ivar chosen: C{"tls"}, C{"rustdesk"}, C{"refused"} or None (undecided).
    @ivar close_reason: why the detector closed the connection, or None.
    """

    handshake_timeout: float = RUSTDESK_HANDSHAKE_TIMEOUT
    _log = Logger()

    def __init__(
        self,
        handshake: HostHandshake,
        make_tls: Callable[[], IProtocol],
        make_rustdesk: Callable[[Handshake, Callable[[], None]], SecureChannelProtocol],
        clock: IReactorTime,
        *,
        admission: Admission | None = None,
        shared: bool = False,
    ) -> None:
        """
        @param handshake: the RustDesk key exchange, host side, for this
            stream (a fresh X25519 key, LiteDesk's mark in its C{SignedId}).
        @param make_tls: builds the TLS session protocol (not yet connected).
        @param make_rustdesk: builds the RustDesk channel protocol around a
            handshake that has begun; its second argument is to be called
            when the session inside starts, to give the detector's admission
            place up.
        @param admission: the host's unauthenticated-session accounting.
        @param shared: the peer address is shared (a relay's).
        """
        self._handshake = handshake
        self._make_tls = make_tls
        self._make_rustdesk = make_rustdesk
        self._clock = clock
        self._admission = admission
        self._shared = shared
        self._timer: Any = None
        self._deadline = 0.0
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
        self._deadline = self._clock.seconds() + self.handshake_timeout
        self._timer = self._clock.callLater(self.handshake_timeout, self._stalled)
        # On a relay leg this waits in the relay until the viewer arrives
        # (hbbr and LiteDesk's relay both keep a leg's early bytes).
        self.transport.write(encode_frame(self._handshake.begin()))

    def preamble_received(self, data: bytes) -> None:
        if self.chosen is not None or not data:
            return
        self._cancel_timer()
        if data[0] == TLS_HANDSHAKE_RECORD:
            self.chosen = "tls"
            # HostSession admits itself in its connectionMade: leave first so
            # that the one connection is never counted twice.
            self._release()
            self.switch_protocol(self._make_tls(), data)
            return
        # A BytesCodec frame: the client's half of RustDesk's key exchange.
        # The channel reads exactly one frame of bounded size and judges it.
        self.chosen = "rustdesk"
        channel = self._make_rustdesk(_Begun(self._handshake), self._release)
        channel.handshake_timeout = max(0.0, self._deadline - self._clock.seconds())
        self.switch_protocol(channel, data)

    def _stalled(self) -> None:
        self._timer = None
        if self.chosen is None:
            self._refuse(f"no answer to SignedId within {self.handshake_timeout:g} s")

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


class _Begun:
    """A handshake whose first message the detector has already sent."""

    def __init__(self, handshake: Handshake) -> None:
        self._handshake = handshake

    def begin(self) -> None:
        return None

    def receive(self, payload: bytes) -> Outcome:
        return self._handshake.receive(payload)


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


class SessionStarterFactory(Factory):
    """Builds the channel's inner protocol: a L{RustDeskSessionStarter} around a new session."""

    def __init__(
        self, make_session: Callable[[], IProtocol], release: Callable[[], None] = lambda: None
    ) -> None:
        self._make_session = make_session
        self._release = release

    def buildProtocol(self, addr: IAddress | None) -> RustDeskSessionStarter:
        return RustDeskSessionStarter(self._make_session(), self._release)


def rustdesk_host_protocol(
    handshake: Handshake,
    make_session: Callable[[], IProtocol],
    clock: IReactorTime,
    release: Callable[[], None] = lambda: None,
) -> SecureChannelProtocol:
    """The host side of RustDesk's channel around one session, not yet connected.

    C{handshake} is the host's key exchange (its C{begin} is what the
    channel sends first; L{ProtocolDetector} passes one it has already
    sent).  C{release} is called when the session starts.
    """
    proto = SecureChannelProtocol(
        handshake, SessionStarterFactory(make_session, release), clock, "host"
    )
    proto.handshake_timeout = RUSTDESK_HANDSHAKE_TIMEOUT
    return proto


class RustDeskRefusal(Protocol):
    """The inner protocol of a host with C{--no-rustdesk-clients}.

    The key exchange has ended, so the refusal goes sealed, as the client
    expects every frame to be; a stock client shows the error in its
    "Login Error" box.
    """

    _log = Logger()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._log.info(
            "RustDesk client {peer} refused: RustDesk clients are turned off",
            peer=str(self.transport.getPeer()),
        )
        msg = message_pb2.Message()
        msg.login_response.error = RUSTDESK_CLIENTS_OFF
        self.transport.write(encode_frame(msg.SerializeToString()))
        self.transport.loseConnection()


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
