# -*- test-case-name: tests.test_viewer_quic_connect -*-
"""The viewer's QUIC connection to a host on a punched or mapped UDP path.

L{quic_connect} runs the QUIC handshake (TLS 1.3 pinned to the host key the
rendezvous server signed, docs/protocol.rst §8.5) from a UDP port and hands
the viewer's session to the connection only once the handshake succeeded.
Until then the session is held back (L{HeldSession}): a path that fails
(no answer, a refused key, another path that won first) leaves the session
untouched, so the caller can still take it to the relay.

The connection keeps its UDP port: the port closes when the QUIC connection
ends.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IProtocol, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.nat.nattype import wildcard_for
from litedesk.nat.punch import Gate
from litedesk.quic.stream_transport import QuicStreamTransport
from litedesk.quic.viewer import QuicViewer
from litedesk.session.host_key import HostKeyMismatch
from litedesk.session.pinning import PinnedHostCreator

__all__ = ["HeldSession", "quic_connect", "transport_kind"]

#: What L{transport_kind} says of a session on a QUIC stream.
QUIC = "quic"
TCP = "tcp"

_log = Logger(namespace="litedesk.viewer.route")


@implementer(IProtocol, IHandshakeListener)
class HeldSession:
    """Stands in for the session until the pinned handshake is complete.

    @ivar outcome: fires True at the handshake (the session is connected
        then, if C{admit} agrees), False when the connection ended first.
    """

    def __init__(self, session: IProtocol, admit: Any = None) -> None:
        self.session = session
        self.admit = admit
        self.attached = False
        self.outcome: Deferred[bool] = Deferred()
        self.reason: Failure | None = None
        self._transport: ITransport | None = None

    def makeConnection(self, transport: ITransport) -> None:
        self._transport = transport

    def connectionMade(self) -> None:
        """Nothing to do before the handshake."""

    def handshakeCompleted(self) -> None:
        if self.admit is not None and not self.admit():
            # Another path reached the host first.
            if self._transport is not None:
                self._transport.loseConnection()
            self._decide(False)
            return
        self.attached = True
        assert self._transport is not None
        self.session.makeConnection(self._transport)
        if IHandshakeListener.providedBy(self.session):
            self.session.handshakeCompleted()
        self._decide(True)

    def dataReceived(self, data: bytes) -> None:
        if self.attached:
            self.session.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        if self.attached:
            self.session.connectionLost(reason)
        else:
            self.reason = reason
            self._decide(False)

    def abandon(self) -> None:
        """Another path won before the handshake completed."""
        self._decide(False)

    def _decide(self, ok: bool) -> None:
        if not self.outcome.called:
            self.outcome.callback(ok)


async def quic_connect(
    reactor: Any,
    port: Any,
    remote: tuple[str, int],
    session: IProtocol,
    pin: PinnedHostCreator,
    *,
    timeout: float,
    label: str,
    gate: Gate | None = None,
    abandon: Deferred[None] | None = None,
) -> QuicViewer | None:
    """Connect C{session} to the host at C{remote} over QUIC from C{port}.

    @param port: a bound Twisted UDP port (a punched one), or None for a new
        port on every interface.
    @param gate: when given, the connection is used only if it claims the
        gate with C{label} (paths racing each other).
    @param abandon: fires when another path won: an unfinished handshake is
        given up at once.
    @return: the QUIC viewer, its session connected; None when the
        handshake failed or lost the race (the port is closed then).
    """
    viewer = QuicViewer(reactor)
    if port is None:
        port = reactor.listenUDP(0, viewer, interface=wildcard_for(remote[0]))
    else:
        viewer.attach(port)
    held = HeldSession(session, (lambda: gate.claim(label)) if gate is not None else None)
    t0 = reactor.seconds()
    viewer.connect(remote, held, pin, handshake_timeout=timeout)
    if abandon is not None:
        abandon.addCallback(lambda _: held.abandon())
    ok = await held.outcome
    if not ok:
        viewer.close()
        port.stopListening()
        why = held.reason.getErrorMessage() if held.reason is not None else "another path won"
        _log.info(
            "QUIC to {ip}:{port} ({label}) failed after {ms} ms: {why}",
            ip=remote[0],
            port=remote[1],
            label=label,
            ms=int((reactor.seconds() - t0) * 1000),
            why=why,
        )
        if held.reason is not None:
            _raise_key_mismatch(held.reason)
        return None
    _log.info(
        "QUIC session with {ip}:{port} ({label}) in {ms} ms",
        ip=remote[0],
        port=remote[1],
        label=label,
        ms=int((reactor.seconds() - t0) * 1000),
    )
    viewer.ended.addBoth(lambda _: port.stopListening())
    return viewer


def _raise_key_mismatch(reason: Failure) -> None:
    """A host that presents another key is not a path failure: it is an attack
    or a re-keyed host, and no other path may hide it."""
    if isinstance(reason.value, HostKeyMismatch):
        raise reason.value


def transport_kind(session: Any) -> str:
    """C{"quic"} for a session on a QUIC stream, else C{"tcp"}."""
    return QUIC if isinstance(getattr(session, "transport", None), QuicStreamTransport) else TCP
