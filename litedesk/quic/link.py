# -*- test-case-name: tests.test_quic_session -*-
"""One QUIC connection driven by the reactor, with a session on one stream.

aioquic's C{QuicConnection} is sans-IO: L{QuicLink} feeds it the datagrams
its owner (L{litedesk.quic.host.QuicHost} or
L{litedesk.quic.viewer.QuicViewer}) reads from the UDP socket, sends what
C{datagrams_to_send} returns through the owner, arms one C{callLater} at
C{get_timer}, and turns its events into the session protocol's calls.  Time
comes from an injected C{IReactorTime}.

The session (docs/protocol.rst §8, the same C{hbb.Message} stream as over
TLS) runs on the host's first bidirectional stream, L{SESSION_STREAM}: the
host opens it by sending its C{Hash}, so the host speaks first, as over TCP.
The viewer's session protocol is connected when the link starts (as a TCP
connection's is) and learns of the handshake through
C{IHandshakeListener.handshakeCompleted} once the host key is pinned
(L{litedesk.quic.tls_config.check_host_key}); the host's session protocol is
only built once the handshake is complete, so an unauthenticated peer costs
the host no session until then.

One stream carries everything, as over TCP.  The two directions of a QUIC
stream are independent, so input (viewer to host) never waits behind a lost
video packet (host to viewer).  What shares the host-to-viewer direction
with video is cursor, clipboard and C{TestDelay} echoes; giving video a
stream of its own would need the viewer to merge two streams at frame
boundaries, keep C{LoginResponse}, codec changes and frames in order across
them, and the frame-drop policy to read two backlogs.

Streams the peer opens besides the session's are refused with
C{STOP_SENDING}; their data is never delivered or held.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IProtocol, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.quic.aioquic_internals import stream_backlog, stream_send_buffer
from litedesk.quic.stream_transport import QuicStreamTransport
from litedesk.quic.tls_config import ALPN, check_host_key
from litedesk.session.host_key import HostKeyMismatch
from litedesk.session.pinning import PinnedHostCreator

__all__ = ["SESSION_STREAM", "DatagramOwner", "LinkOwner", "QuicLink"]

#: The session's stream: the first bidirectional stream the server (host) opens.
SESSION_STREAM = 1

# Application error codes in CONNECTION_CLOSE / STOP_SENDING.
_NO_ERROR = 0
_REFUSED = 1
_STREAM_REFUSED = 2

Address = tuple[Any, ...]


class LinkOwner(Protocol):
    """What a L{QuicLink} needs from the socket that carries it."""

    def send_datagram(self, data: bytes, addr: Address) -> None: ...

    def host_address(self) -> Any: ...

    def cid_issued(self, link: QuicLink, cid: bytes) -> None: ...

    def cid_retired(self, link: QuicLink, cid: bytes) -> None: ...

    def link_established(self, link: QuicLink) -> IProtocol | None:
        """The handshake is complete (host side): the session protocol, or
        None to refuse the connection."""
        ...

    def link_ended(self, link: QuicLink) -> None: ...


class DatagramOwner(DatagramProtocol):
    """The part of L{LinkOwner} both the host and the viewer implement alike."""

    _log: Logger

    def send_datagram(self, data: bytes, addr: Address) -> None:
        if self.transport is None:
            return  # the port is gone or being replaced: QUIC retransmits or times out
        try:
            self.transport.write(data, addr)
        except OSError as e:
            # An unreachable peer is QUIC's loss to recover from, not ours.
            self._log.debug("Cannot send to {peer}: {error}", peer=addr, error=e)

    def host_address(self) -> Any:
        return self.transport.getHost() if self.transport is not None else None


class QuicLink:
    """A QUIC connection and the session protocol on its session stream.

    @ivar established: the handshake completed (and, on the viewer, the host
        key was accepted).
    @ivar peer_address: where datagrams for the peer go now (it changes when
        the peer migrates and the new path is validated).
    @ivar session: the session protocol; None on the host until the
        handshake is complete.
    @ivar reason: why the connection ended, once it has.
    """

    _log = Logger()

    def __init__(
        self,
        connection: QuicConnection,
        owner: LinkOwner,
        clock: IReactorTime,
        peer_address: Address,
        *,
        session: IProtocol | None = None,
        pin: PinnedHostCreator | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.connection = connection
        self.owner = owner
        self.clock = clock
        self.peer_address = peer_address
        self.pin = pin
        self.established = False
        self.ended = False
        self.reason: Failure | None = None
        self.session: IProtocol | None = None
        self.transport: QuicStreamTransport | None = None
        self._stream_open = False
        self._early: list[bytes] = []
        self._finishing = False
        self._closed = False
        self._timer: IDelayedCall | None = None
        self._flush_call: IDelayedCall | None = None
        self._deadline: IDelayedCall | None = clock.callLater(
            handshake_timeout, self._handshake_deadline
        )
        self._handshake_timeout = handshake_timeout
        if session is not None:
            self._attach(session)

    # -- datagrams and time ------------------------------------------------------

    def start(self, first_flight: list[tuple[bytes, Address]] | None = None) -> None:
        """Send the first flight: the viewer's after C{connect}, or the host's
        answer to the Initial it already fed the connection (C{first_flight},
        from C{datagrams_to_send})."""
        for data, addr in first_flight or ():
            self.peer_address = addr
            self.owner.send_datagram(data, addr)
        self._process()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self.ended:
            return
        try:
            self.connection.receive_datagram(data, addr, now=self.clock.seconds())
        except Exception:
            # aioquic drops bad packets itself; anything escaping is a bug
            # there, and must end this connection, not the socket's reader.
            self._log.failure("QUIC could not handle a datagram from {peer}", peer=addr)
            self.abort("internal error")
            return
        self._process()

    def transmit(self) -> None:
        """Send what the connection has to send and re-arm its timer."""
        self._cancel("_flush_call")
        if self.ended:
            return
        now = self.clock.seconds()
        for data, addr in self.connection.datagrams_to_send(now=now):
            self.peer_address = addr
            self.owner.send_datagram(data, addr)
        self._arm_timer(now)
        self._after_io()

    def _arm_timer(self, now: float) -> None:
        timer_at = self.connection.get_timer()
        timer = self._timer
        if timer_at is None:
            self._cancel("_timer")
        elif timer is not None and timer.active():
            # Moved, not replaced: this runs for every packet sent.
            if timer.getTime() != timer_at:
                timer.reset(max(0.0, timer_at - now))
        else:
            self._timer = self.clock.callLater(max(0.0, timer_at - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.ended:
            return
        self.connection.handle_timer(now=self.clock.seconds())
        self._process()

    def _transmit_soon(self) -> None:
        # Writes in one reactor turn go out together, in as few packets as fit.
        if self._flush_call is None and not self.ended:
            self._flush_call = self.clock.callLater(0, self.transmit)

    def _process(self) -> None:
        while not self.ended:
            event = self.connection.next_event()
            if event is None:
                break
            self._handle(event)
        self.transmit()

    def _handle(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            self._stream_data(event)
        elif isinstance(event, events.HandshakeCompleted):
            self._handshake_completed(event)
        elif isinstance(event, events.ConnectionIdIssued):
            self.owner.cid_issued(self, event.connection_id)
        elif isinstance(event, events.ConnectionIdRetired):
            self.owner.cid_retired(self, event.connection_id)
        elif isinstance(event, events.StreamReset) and event.stream_id == SESSION_STREAM:
            self._close(ConnectionLost("the peer reset the session stream"), _NO_ERROR)
        elif isinstance(event, events.StopSendingReceived) and event.stream_id == SESSION_STREAM:
            self._close(ConnectionLost("the peer stopped reading the session stream"), _NO_ERROR)
        elif isinstance(event, events.ConnectionTerminated):
            self._terminated(event)

    # -- handshake ---------------------------------------------------------------

    def _handshake_completed(self, event: events.HandshakeCompleted) -> None:
        self._cancel("_deadline")
        if event.alpn_protocol != ALPN:
            self._close(ConnectionLost(f"peer speaks {event.alpn_protocol!r}, not {ALPN}"))
            return
        if self.connection.configuration.is_client:
            if self.pin is None:
                self._close(ConnectionLost("no host key to pin"))
                return
            try:
                check_host_key(self.connection, self.pin)
            except HostKeyMismatch as e:
                self._close(e)
                return
        else:
            session = self.owner.link_established(self)
            if session is None:
                self._close(ConnectionLost("refused"))
                return
            stream_id = self.connection.get_next_available_stream_id()
            assert stream_id == SESSION_STREAM, stream_id
            self._stream_open = True
            self._attach(session)
        self.established = True
        session = self.session
        if self._closed:
            return  # the session refused the peer as it was connected (admission)
        if session is not None and IHandshakeListener.providedBy(session):
            self._call_session(session.handshakeCompleted)

    def _handshake_deadline(self) -> None:
        self._deadline = None
        if not self.established and not self.ended:
            # Dropped, not drained: a peer that never finished its handshake
            # must not hold a handshake slot for QUIC's draining period too.
            self.drop(f"QUIC handshake not completed within {self._handshake_timeout:g} s")

    # -- the session stream ------------------------------------------------------------

    def _attach(self, session: IProtocol) -> None:
        self.session = session
        transport = self.transport = QuicStreamTransport(self, SESSION_STREAM)
        self._call_session(lambda: session.makeConnection(transport))

    def _stream_data(self, event: events.StreamDataReceived) -> None:
        if event.stream_id != SESSION_STREAM or self.session is None or not self.established:
            self._refuse_stream(event.stream_id)
            return
        if not self._stream_open:
            # Viewer: the host's first bytes opened the stream; ours may follow.
            self._stream_open = True
            early, self._early = self._early, []
            for data in early:
                self.send_stream(data)
        if event.data:
            session = self.session
            data = event.data
            self._call_session(lambda: session.dataReceived(data))
        if event.end_stream and not self.ended:
            self._close(ConnectionDone("the peer ended the session"), _NO_ERROR)

    def _refuse_stream(self, stream_id: int) -> None:
        # A stream that cannot be stopped (ours, or already ended) holds
        # nothing more of the peer's.
        with contextlib.suppress(Exception):
            self.connection.stop_stream(stream_id, _STREAM_REFUSED)

    def send_stream(self, data: bytes) -> None:
        """Queue C{data} on the session stream (held until the stream is open)."""
        if self.ended or self._finishing or self._closed:
            return
        if not self._stream_open:
            self._early.append(data)
            return
        self.connection.send_stream_data(SESSION_STREAM, data)
        if self.transport is not None:
            # As a TCP transport does: a producer hears "pause" in the write
            # that crossed the mark, not a reactor turn later.
            self.transport.backlog_changed(self.backlog())
        self._transmit_soon()

    def send_buffer(self) -> bytearray:
        """The session stream's unacknowledged bytes (see L{QuicStreamTransport})."""
        return stream_send_buffer(self.connection, SESSION_STREAM)

    def backlog(self) -> int:
        return stream_backlog(self.connection, SESSION_STREAM) + sum(map(len, self._early))

    def host_address(self) -> Any:
        return self.owner.host_address()

    def _after_io(self) -> None:
        if self.transport is not None:
            self.transport.backlog_changed(self.backlog())
        if self._finishing and not self.ended and self.backlog() == 0:
            # Everything, with the stream's end, is acknowledged: close.
            self._close(ConnectionDone("session closed"), _NO_ERROR)

    # -- ending --------------------------------------------------------------------

    def finish(self) -> None:
        """End the session stream; close the connection once it is acknowledged."""
        if self.ended or self._finishing or self._closed:
            return
        if not self._stream_open:
            self._close(ConnectionDone("session closed"), _NO_ERROR)
            return
        self.connection.send_stream_data(SESSION_STREAM, b"", end_stream=True)
        self._finishing = True
        self._transmit_soon()

    def abort(self, why: str) -> None:
        """Close the connection now, telling the peer C{why}."""
        self._close(ConnectionAborted(why))

    def drop(self, why: str) -> None:
        """Close now and forget the connection at once, without QUIC's
        draining period: for a socket that is going away."""
        if self.ended:
            return
        self._close(ConnectionLost(why))
        self._ended()

    def _close(self, error: Exception, code: int = _REFUSED) -> None:
        """Close the QUIC connection (the peer is told) and end the session."""
        if self.ended or self._closed:
            return
        self._closed = True
        self._finishing = False
        reason = Failure(error)  # type: ignore[no-untyped-call]
        phrase = str(error) if code != _NO_ERROR else ""
        self.connection.close(error_code=code, reason_phrase=phrase[:200])
        self.transmit()
        self._session_lost(reason)

    def _terminated(self, event: events.ConnectionTerminated) -> None:
        if event.error_code == _NO_ERROR:
            error: Exception = ConnectionDone("the peer closed the connection")
        else:
            error = ConnectionLost(
                f"QUIC connection closed: {event.reason_phrase or 'no reason'} "
                f"(error {event.error_code:#x})"
            )
        self._session_lost(Failure(error))  # type: ignore[no-untyped-call]
        self._ended()

    def _ended(self) -> None:
        self.ended = True
        for name in ("_timer", "_flush_call", "_deadline"):
            self._cancel(name)
        self.owner.link_ended(self)

    def _session_lost(self, reason: Failure) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        self._early.clear()
        if self.transport is not None:
            self.transport.lost()
        session = self.session
        if session is not None:
            self._call_session(lambda: session.connectionLost(reason))

    # -- helpers -----------------------------------------------------------------

    def _call_session(self, call: Callable[[], object]) -> None:
        try:
            call()
        except Exception:
            # The session protocols do not raise; if one does, this
            # connection ends and the socket goes on.
            self._log.failure("The session protocol failed; closing the QUIC connection")
            if self.reason is None:
                self.abort("internal error")

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None and call.active():
            call.cancel()
        setattr(self, name, None)
