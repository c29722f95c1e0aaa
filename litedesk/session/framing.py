# -*- test-case-name: tests.test_session_framing -*-
"""BytesCodec-framed C{hbb.Message} streams, shared by host and viewer.

On a session every frame (rustdesk-protocol.md §2.1) carries one serialized
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
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.proto import message_pb2
from litedesk.wire.bytescodec import FrameDecoder, FrameError, FrameTooLarge, encode_frame

__all__ = ["MAX_FRAME_LENGTH", "MessageProtocol", "kind", "parse_message", "serialize_message"]

# The largest frame accepted: a 1080p key frame is well under this, and a
# peer cannot make us buffer more than this for one frame.
MAX_FRAME_LENGTH = 16 * 1024 * 1024


def parse_message(data: bytes) -> message_pb2.Message | None:
    """Parse one C{hbb.Message}; None if it is not one.

    The upb runtime bounds nesting (§9.28), so hostile nesting is a
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
    @ivar clock: schedules the idle timeout; the global reactor by default.
    """

    max_frame_length: int = MAX_FRAME_LENGTH
    idle_timeout: float | None = None
    clock: IReactorTime | None = None

    _log = Logger()
    _decoder: FrameDecoder | None = None
    _closing = False
    _idle_call: Any = None

    def connectionMade(self) -> None:
        self._decoder = FrameDecoder(self.max_frame_length)
        self._arm_idle_timer()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            # After close() nothing more is delivered: a peer must not get a
            # message handled after it was told to go away.
            return
        self._arm_idle_timer()
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = FrameDecoder(self.max_frame_length)
        try:
            frames = decoder.feed(data)
        except FrameTooLarge as e:
            self.close(
                "frame too large",
                frame_length=e.length,
                limit=e.limit,
            )
            return
        except FrameError as e:
            self.close("bad frame", error=str(e))
            return
        for payload in frames:
            if self._closing:
                return
            msg = parse_message(payload)
            if msg is None:
                self.close("not an hbb.Message", frame_length=len(payload))
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

    def message_received(self, msg: message_pb2.Message) -> None:
        """One message arrived; override."""

    def send_message(self, msg: message_pb2.Message) -> None:
        """Frame and write C{msg} (dropped once the connection is closing)."""
        if self._closing or self.transport is None:
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
        self._closing = True
        self._cancel_idle_timer()
        peer = self.transport.getPeer() if self.transport is not None else None
        self._log.warn(
            "Closing session with {peer}: {reason}",
            peer=str(peer),
            reason=reason,
            **fields,
        )
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._cancel_idle_timer()

    def _arm_idle_timer(self) -> None:
        if self.idle_timeout is None:
            return
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(self.idle_timeout)
            return
        clock = self.clock
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        assert clock is not None
        self._idle_call = clock.callLater(self.idle_timeout, self._idle_timed_out)

    def _cancel_idle_timer(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None

    def _idle_timed_out(self) -> None:
        self._idle_call = None
        self.timed_out()

    def timed_out(self) -> None:
        """Nothing was received for C{idle_timeout} seconds; closes by default.

        Override to tell the peer first (RustDesk hosts send
        C{Misc{close_reason: "Timeout"}}).
        """
        self.close("Timeout", idle_timeout=self.idle_timeout)
