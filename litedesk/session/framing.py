# -*- test-case-name: tests.test_session_framing -*-
"""BytesCodec-framed C{hbb.Message} streams, shared by host and viewer.

On a session every frame (docs/protocol.rst §2.1) carries one serialized
C{hbb.Message}; over LiteDesk's TLS the frames are inside the TLS stream.
L{MessageProtocol} turns bytes into messages for a subclass's
L{MessageProtocol.message_received} and messages into frames with
L{MessageProtocol.send_message}.

Bad input never raises out of C{dataReceived}: a frame longer than
L{MessageProtocol.max_frame_length}, or one that is not an C{hbb.Message},
closes the connection with a logged reason, and nothing after it in the
stream is delivered.  Unknown fields and oneof members (newer RustDesk peers)
are not garbage: they parse, and C{WhichOneof("union")} is None for a member
LiteDesk does not declare.

A closed session is closed, whatever the peer does:

- before the TLS handshake has completed, L{MessageProtocol.close} aborts the
  connection and sends nothing: Twisted's C{TLSMemoryBIOProtocol} with
  application data queued before the handshake neither sends it nor closes
  on C{loseConnection}, so a "graceful" close of a peer that never finishes
  the handshake would hold its socket for ever;
- L{MessageProtocol.handshake_timeout} is an absolute deadline from the
  connection to the end of the handshake (handshake bytes never reach the
  protocol, so the idle timer cannot see a byte-a-second handshake either
  way);
- after any close, a peer that does not read what is still queued (the TLS
  close alert, a last message) is aborted L{MessageProtocol.abort_timeout}
  seconds later.

A port-forward session stops framing after its login (L{MessageProtocol.start_raw}):
from then on the stream carries the tunnelled TCP bytes both ways.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError
from twisted.internet.interfaces import IReactorTime, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.proto import message_pb2
from litedesk.twisted_internals import close_tcp_under_tls
from litedesk.wire.bytescodec import FrameDecoder, FrameError, FrameTooLarge, encode_frame

__all__ = ["MAX_FRAME_LENGTH", "MessageProtocol", "kind", "parse_message", "serialize_message"]

# The largest frame accepted: a 1080p key frame is well under this, and a
# peer cannot make us buffer more than this for one frame.
MAX_FRAME_LENGTH = 16 * 1024 * 1024


def parse_message(data: bytes) -> message_pb2.Message | None:
    """Parse one C{hbb.Message}; None if it is not one.

    The upb runtime bounds nesting (docs/protocol.rst §9 item 28), so hostile nesting is a
    C{DecodeError}; C{RecursionError} is caught in case the pure-Python
    runtime is in use.
    """
    msg = message_pb2.Message()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError):
        return None
    return msg


def kind(msg: message_pb2.Message) -> str | None:
    """The name of the member of C{union} that is set, e.g. C{"mouse_event"}."""
    name: str | None = msg.WhichOneof("union")
    return name


def serialize_message(msg: message_pb2.Message) -> bytes:
    """One framed message, ready for a transport."""
    return encode_frame(msg.SerializeToString())


class MessageProtocol(Protocol):
    """Base protocol: BytesCodec frames in and out, one C{hbb.Message} each.

    Subclasses override L{message_received}, and may call L{close} (for
    example after a wrong password) to stop all further delivery.

    @ivar max_frame_length: frames announcing more are a protocol error.
    @ivar idle_timeout: seconds without any received byte after which the
        connection is closed with reason C{"Timeout"}; None (the default)
        for no timeout.
    @ivar handshake_timeout: over TLS, seconds from the connection until
        the handshake must have completed, however busy the peer keeps it;
        None (the default) for no deadline.
    @ivar abort_timeout: seconds after L{close} after which a connection
        that is still open (its peer does not read the data still queued)
        is aborted.
    @ivar clock: schedules the timeouts; the global reactor by default.

    Over TLS the protocol must learn of the handshake's end: subclasses that
    implement C{IHandshakeListener.handshakeCompleted} call this class's
    L{handshakeCompleted} too.  (Application data arriving also proves it.)
    """

    max_frame_length: int = MAX_FRAME_LENGTH
    idle_timeout: float | None = None
    handshake_timeout: float | None = None
    abort_timeout: float = 5.0
    clock: IReactorTime | None = None

    _log = Logger()
    _decoder: FrameDecoder | None = None
    _closing = False
    _idle_call: Any = None
    _handshake_call: Any = None
    _abort_call: Any = None
    # True while a TLS transport has not completed its handshake: only then
    # does close() abort instead of closing gracefully.
    _handshake_pending = False
    # Set by start_raw: where the bytes go once the stream is no longer framed.
    _raw_receiver: Callable[[bytes], None] | None = None
    # True while dataReceived hands frames out (start_raw then defers the leftover).
    _in_delivery = False

    def connectionMade(self) -> None:
        self._decoder = FrameDecoder(self.max_frame_length)
        self._handshake_pending = _is_tls(self.transport)
        if self._handshake_pending and self.handshake_timeout is not None:
            self._handshake_call = self._time_source().callLater(
                self.handshake_timeout, self._handshake_timed_out
            )
        self._arm_idle_timer()

    def handshakeCompleted(self) -> None:
        """The TLS handshake completed; from now on a close is graceful."""
        self._tls_established()

    def _tls_established(self) -> None:
        self._handshake_pending = False
        self._cancel_call("_handshake_call")

    @property
    def handshake_pending(self) -> bool:
        """Over TLS, the handshake has not completed yet."""
        return self._handshake_pending

    def set_max_frame_length(self, limit: int) -> None:
        """Change the frame limit, also for a frame already announced.

        For example from a small limit before login to L{MAX_FRAME_LENGTH}
        after it.
        """
        self.max_frame_length = limit
        if self._decoder is not None:
            self._decoder.max_length = limit

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            # After close() nothing more is delivered: a peer must not get a
            # message handled after it was told to go away.
            return
        if self._handshake_pending:
            # TLS delivers application data only after its handshake (and a
            # subclass's handshakeCompleted must not run twice).
            self._tls_established()
        self._arm_idle_timer()
        if self._raw_receiver is not None:
            self._deliver_raw(data)
            return
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = FrameDecoder(self.max_frame_length)
        self._in_delivery = True
        try:
            self._deliver_frames(decoder, data)
        finally:
            self._in_delivery = False
        if self._raw_receiver is not None and not self._closing:
            # A message handler switched to raw: what followed its frame in
            # this chunk is already tunnelled data.
            self._deliver_raw(decoder.take_remainder())

    def _deliver_frames(self, decoder: FrameDecoder, data: bytes) -> None:
        """Hand each complete frame to L{message_received}, one at a time.

        One at a time because any message may end the framing (L{start_raw}):
        the bytes after it must not be parsed as frames.
        """
        chunk = data
        while not self._closing and self._raw_receiver is None:
            try:
                frames = decoder.feed(chunk, 1)
            except FrameTooLarge as e:
                self.close("frame too large", frame_length=e.length, limit=e.limit)
                return
            except FrameError as e:
                self.close("bad frame", error=str(e))
                return
            chunk = b""
            if not frames:
                return
            msg = parse_message(frames[0])
            if msg is None:
                self.close("not an hbb.Message", frame_length=len(frames[0]))
                return
            try:
                self.message_received(msg)
            except Exception:
                self._log.failure(
                    "Handling a {kind} message failed; closing the session",
                    kind=kind(msg),
                )
                self.close("internal error")
                return

    # -- raw mode (port forwarding, docs/protocol.rst §13) -------------------

    @property
    def raw(self) -> bool:
        """L{start_raw} was called: the stream carries unframed bytes."""
        return self._raw_receiver is not None

    def start_raw(self, receiver: Callable[[bytes], None]) -> None:
        """Stop framing: from now on received bytes go to C{receiver} as they
        come, and L{write_raw} writes unframed (L{send_message} drops).

        Bytes already received after the last complete frame go to
        C{receiver} first.  A transport that frames or seals itself (RustDesk's
        secure channel) is told with its C{set_raw()}, as RustDesk's
        C{set_raw} drops its codec and key (hbb_common src/tcp.rs); over TLS
        the bytes stay inside TLS.
        """
        if self._raw_receiver is not None:
            raise RuntimeError("the stream is already raw")
        self._raw_receiver = receiver
        if not self._in_delivery and self._decoder is not None:
            # Called outside dataReceived (after an asynchronous step): the
            # leftover goes now; inside, dataReceived hands it over after the
            # message that switched.
            self._deliver_raw(self._decoder.take_remainder())
        set_raw = getattr(self.transport, "set_raw", None)
        if set_raw is not None:
            set_raw()

    def write_raw(self, data: bytes) -> None:
        """Write C{data} unframed (after L{start_raw}; dropped once closing)."""
        if self._raw_receiver is None:
            raise RuntimeError("write_raw before start_raw")
        if self._closing or self.transport is None:
            return
        self.transport.write(data)

    def _deliver_raw(self, data: bytes) -> None:
        receiver = self._raw_receiver
        if not data or receiver is None or self._closing:
            return
        try:
            receiver(data)
        except Exception:
            self._log.failure("Handling tunnelled bytes failed; closing the session")
            self.close("internal error")

    def set_idle_timeout(self, seconds: float | None) -> None:
        """Change L{idle_timeout}, counting from now (a port forward's is an hour)."""
        self.idle_timeout = seconds
        self._cancel_idle_timer()
        if not self._closing:
            self._arm_idle_timer()

    def message_received(self, msg: message_pb2.Message) -> None:
        """One message arrived; override."""

    def send_message(self, msg: message_pb2.Message) -> None:
        """Frame and write C{msg} (dropped once the connection is closing)."""
        if self._closing or self.transport is None or self._raw_receiver is not None:
            # Once raw, a frame would corrupt the tunnelled stream.
            return
        self.transport.write(serialize_message(msg))

    @property
    def closing(self) -> bool:
        """L{close} was called or the connection is gone."""
        return self._closing

    def close(self, reason: str, **fields: object) -> None:
        """Stop delivering messages, log why, and close the connection.

        @param reason: a short phrase for the log (e.g. C{"frame too large"}).
        @param fields: extra structured fields for the log event.
        """
        if self._closing:
            return
        peer = self.transport.getPeer() if self.transport is not None else None
        self._log.warn(
            "Closing session with {peer}: {reason}",
            peer=str(peer),
            reason=reason,
            **fields,
        )
        self._shut(abort=self._handshake_pending)

    def abort(self) -> None:
        """Stop delivering messages and drop the connection at once, sending
        nothing and logging nothing (for refusals the caller logs itself,
        rate-limited, so that a flood does not flood the log)."""
        if self._closing:
            return
        self._shut(abort=True)

    def _shut(self, abort: bool) -> None:
        self._closing = True
        self._cancel_idle_timer()
        self._cancel_call("_handshake_call")
        transport = self.transport
        if transport is None:
            return
        if abort:
            _abort(transport)
            return
        # A graceful close still has to send what is queued and the TLS close
        # alert; a peer that never reads would keep the socket open for as
        # long as it likes, so it gets abort_timeout seconds.
        self._abort_call = self._time_source().callLater(self.abort_timeout, self._hard_abort)
        transport.loseConnection()
        if _is_tls(transport):
            # Twisted's TLS then waits for the peer's close_notify before it
            # closes TCP, reading and decrypting whatever the peer sends in the
            # meantime; RFC 8446 6.1 lets the closing side go without waiting.
            # Our last messages and close_notify are already in TCP's buffer,
            # which TCP's loseConnection still sends before closing.  (If the TCP
            # transport cannot be reached, _hard_abort ends it after abort_timeout.)
            close_tcp_under_tls(transport)

    def _hard_abort(self) -> None:
        self._abort_call = None
        if self.transport is None:
            return
        self._log.info(
            "Aborting session with {peer}: still open {abort_timeout} s after closing",
            peer=str(self.transport.getPeer()),
            abort_timeout=self.abort_timeout,
        )
        _abort(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._cancel_idle_timer()
        self._cancel_call("_handshake_call")
        self._cancel_call("_abort_call")

    def _time_source(self) -> IReactorTime:
        clock = self.clock
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        assert clock is not None
        return clock

    def _cancel_call(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None and call.active():
            call.cancel()
        setattr(self, name, None)

    def _handshake_timed_out(self) -> None:
        self._handshake_call = None
        if self._handshake_pending:
            self.close("TLS handshake not completed", handshake_timeout=self.handshake_timeout)

    def _arm_idle_timer(self) -> None:
        if self.idle_timeout is None:
            return
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(self.idle_timeout)
            return
        self._idle_call = self._time_source().callLater(self.idle_timeout, self._idle_timed_out)

    def _cancel_idle_timer(self) -> None:
        self._cancel_call("_idle_call")

    def _idle_timed_out(self) -> None:
        self._idle_call = None
        self.timed_out()

    def timed_out(self) -> None:
        """Nothing was received for C{idle_timeout} seconds; closes by default.

        Override to tell the peer first (RustDesk hosts send
        C{Misc{close_reason: "Timeout"}}).
        """
        self.close("Timeout", idle_timeout=self.idle_timeout)


def _is_tls(transport: ITransport | None) -> bool:
    """Whether C{transport} is a TLS layer that has a handshake to complete.

    Twisted's C{TLSMemoryBIOProtocol} hands its C{SSL.Connection} out through
    C{getHandle}; a plain TCP transport hands out a socket.
    """
    get_handle = getattr(transport, "getHandle", None)
    if get_handle is None:
        return False
    from OpenSSL import SSL

    try:
        return isinstance(get_handle(), SSL.Connection)
    except Exception:
        return False


def _abort(transport: ITransport) -> None:
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()
