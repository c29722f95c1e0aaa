"""Tests for litedesk.session.framing: hbb.Message over BytesCodec frames."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import message_pb2 as m
from litedesk.session.framing import (
    MAX_FRAME_LENGTH,
    MessageProtocol,
    kind,
    parse_message,
    serialize_message,
)
from litedesk.wire.bytescodec import encode_frame, encode_header

from .strategies import chunked


class Recording(MessageProtocol):
    def __init__(self, stop_on: str | None = None, explode_on: str | None = None) -> None:
        self.messages: list[m.Message] = []
        self.stop_on = stop_on
        self.explode_on = explode_on
        # A StringTransport never reports the connection lost, so the hard
        # abort that close() schedules would stay on the global reactor.
        self.clock = Clock()

    def message_received(self, msg: m.Message) -> None:
        self.messages.append(msg)
        if self.explode_on is not None and kind(msg) == self.explode_on:
            raise RuntimeError("boom")
        if self.stop_on is not None and kind(msg) == self.stop_on:
            self.close("told to stop")


def _connect(protocol: MessageProtocol) -> StringTransport:
    transport = StringTransport()
    protocol.makeConnection(transport)
    return transport


def _observe(case: SynchronousTestCase) -> EventLoggingObserver:
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


def _warnings(events: EventLoggingObserver) -> list[dict[str, Any]]:
    return [e for e in events if e["log_level"] == LogLevel.warn]


# A few realistic messages of each kind the session sends.
sint32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
messages = st.one_of(
    st.builds(
        lambda mask, x, y: m.Message(mouse_event=m.MouseEvent(mask=mask, x=x, y=y)),
        st.integers(min_value=0, max_value=0xFF),
        sint32,
        sint32,
    ),
    st.builds(
        lambda key, down: m.Message(key_event=m.KeyEvent(control_key=key, down=down)),
        st.sampled_from(list(m.ControlKey.values())),
        st.booleans(),
    ),
    st.builds(
        lambda text: m.Message(key_event=m.KeyEvent(seq=text, press=True)), st.text(max_size=20)
    ),
    st.builds(
        lambda t, c: m.Message(test_delay=m.TestDelay(time=t, from_client=c)),
        st.integers(min_value=0, max_value=2**62),
        st.booleans(),
    ),
    st.builds(
        lambda data, key: m.Message(
            video_frame=m.VideoFrame(
                h264s=m.EncodedVideoFrames(frames=[m.EncodedVideoFrame(data=data, key=key)])
            )
        ),
        st.binary(max_size=20_000),
        st.booleans(),
    ),
    st.builds(
        lambda text: m.Message(clipboard=m.Clipboard(content=text.encode(), format=m.Text)),
        st.text(max_size=100),
    ),
    st.builds(lambda s: m.Message(misc=m.Misc(close_reason=s)), st.text(max_size=30)),
    st.just(m.Message()),
)


def _reference(data: bytes, limit: int) -> tuple[list[m.Message], str | None, bool]:
    """What a correct reader delivers from C{data}.

    @return: the messages before the first bad frame, why the reader must
        close (None if it must not), and whether an oversized header follows
        later in the stream.
    """
    delivered: list[m.Message] = []
    reason: str | None = None
    oversize_later = False
    pos = 0
    while pos < len(data):
        header_len = (data[pos] & 3) + 1
        if len(data) - pos < header_len:
            break
        length = int.from_bytes(data[pos : pos + header_len], "little") >> 2
        if length > limit:
            if reason is None:
                reason = "frame too large"
            else:
                oversize_later = True
            break
        end = pos + header_len + length
        if end > len(data):
            break
        msg = parse_message(data[pos + header_len : end])
        if reason is None:
            if msg is None:
                reason = "not an hbb.Message"
            else:
                delivered.append(msg)
        pos = end
    return delivered, reason, oversize_later


class FramingTests(SynchronousTestCase):
    def test_send_message(self) -> None:
        """send_message writes one BytesCodec frame holding the serialized message (§9 item 26)."""
        protocol = Recording()
        transport = _connect(protocol)
        protocol.send_message(m.Message(mouse_event=m.MouseEvent(mask=9, x=100, y=-5)))
        self.assertEqual(transport.value().hex(), "24" + "5207080910c8011809")
        self.assertEqual(serialize_message(m.Message()), b"\x00")

    @given(st.lists(messages, max_size=8), st.data())
    def test_round_trip_any_chunking(self, sent: list[m.Message], data: st.DataObject) -> None:
        """
        Any sequence of session messages, framed and cut into arbitrary
        chunks, arrives complete and in order, and the connection stays open.
        """
        wire = b"".join(serialize_message(msg) for msg in sent)
        protocol = Recording()
        transport = _connect(protocol)
        for chunk in data.draw(chunked(wire)):
            protocol.dataReceived(chunk)
        self.assertEqual(protocol.messages, sent)
        self.assertFalse(transport.disconnecting)

    @given(
        st.lists(st.one_of(messages.map(serialize_message), st.binary(max_size=40)), max_size=6),
        st.sampled_from([64, 1024, MAX_FRAME_LENGTH]),
        st.data(),
    )
    def test_garbage_never_raises(
        self, parts: list[bytes], limit: int, data: st.DataObject
    ) -> None:
        """
        Arbitrary bytes mixed with real frames never raise out of
        dataReceived: the protocol delivers exactly the messages before the
        first bad frame, and on a bad frame closes the connection with one
        logged warning and delivers nothing after it.
        """
        wire = b"".join(parts)
        expected, reason, oversize_later = _reference(wire, limit)
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        try:
            protocol = Recording()
            protocol.max_frame_length = limit
            transport = _connect(protocol)
            for chunk in data.draw(chunked(wire)):
                protocol.dataReceived(chunk)
        finally:
            globalLogPublisher.removeObserver(events)
        reasons = [e["reason"] for e in _warnings(events)]
        self.assertEqual(transport.disconnecting, reason is not None)
        if reason is None:
            self.assertEqual(protocol.messages, expected)
            self.assertEqual(reasons, [])
            return
        # FrameDecoder.feed raises on an oversized header without returning
        # the frames it completed earlier in the same read; so when one
        # follows, the session may close on it with fewer messages delivered.
        allowed = {reason, "frame too large"} if oversize_later else {reason}
        self.assertEqual(len(reasons), 1)
        self.assertIn(reasons[0], allowed)
        self.assertEqual(protocol.messages, expected[: len(protocol.messages)])
        if reasons[0] == "not an hbb.Message":
            self.assertEqual(protocol.messages, expected)

    def test_oversized_frame(self) -> None:
        """
        A header announcing more than the limit (here 1 GiB) closes the
        session at once, logged with the announced length, without waiting
        for or buffering the body.
        """
        events = _observe(self)
        protocol = Recording()
        transport = _connect(protocol)
        protocol.dataReceived(encode_header(0x3FFFFFFF) + b"\x00" * 10)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(protocol.closing)
        [warning] = _warnings(events)
        self.assertEqual(warning["reason"], "frame too large")
        self.assertEqual(warning["frame_length"], 0x3FFFFFFF)

    def test_garbage_stops_delivery(self) -> None:
        """
        In one chunk holding a good frame, a frame that is not an
        hbb.Message, and another good frame, only the first is delivered and
        the connection is closed with reason "not an hbb.Message".
        """
        events = _observe(self)
        good = serialize_message(m.Message(test_delay=m.TestDelay(time=1)))
        bad = encode_frame(b"\xff\xff\xff")
        protocol = Recording()
        transport = _connect(protocol)
        protocol.dataReceived(good + bad + good)
        self.assertEqual(len(protocol.messages), 1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual([e["reason"] for e in _warnings(events)], ["not an hbb.Message"])
        protocol.dataReceived(good)
        self.assertEqual(len(protocol.messages), 1)

    def test_close_from_handler(self) -> None:
        """
        When the handler closes the session (e.g. after a wrong password),
        the messages behind it in the same chunk are not handled and nothing
        more can be sent.
        """
        stop = serialize_message(m.Message(misc=m.Misc(close_reason="bye")))
        later = serialize_message(m.Message(mouse_event=m.MouseEvent(mask=9)))
        protocol = Recording(stop_on="misc")
        transport = _connect(protocol)
        protocol.dataReceived(later + stop + later)
        self.assertEqual([kind(msg) for msg in protocol.messages], ["mouse_event", "misc"])
        self.assertTrue(transport.disconnecting)
        before = transport.value()
        protocol.send_message(m.Message())
        self.assertEqual(transport.value(), before)

    def test_handler_error(self) -> None:
        """
        A handler that raises does not kill the reactor: the failure is
        logged, the session is closed, and later messages are not handled.
        """
        boom = serialize_message(m.Message(test_delay=m.TestDelay()))
        later = serialize_message(m.Message(mouse_event=m.MouseEvent(mask=9)))
        protocol = Recording(explode_on="test_delay")
        transport = _connect(protocol)
        protocol.dataReceived(boom + later)
        self.assertEqual(len(protocol.messages), 1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unknown_members(self) -> None:
        """
        A message LiteDesk does not declare (audio_frame from a RustDesk
        peer) is delivered with no member set rather than closing the
        session.
        """
        protocol = Recording()
        transport = _connect(protocol)
        protocol.dataReceived(encode_frame(bytes.fromhex("5a03") + b"\x0a\x01\x00"))
        self.assertEqual(len(protocol.messages), 1)
        self.assertIsNone(kind(protocol.messages[0]))
        self.assertFalse(transport.disconnecting)

    def test_deep_nesting(self) -> None:
        """§9 item 28's deeply nested groups close the session instead of crashing."""
        protocol = Recording()
        transport = _connect(protocol)
        protocol.dataReceived(encode_frame(b"\x0b" * 300_000 + b"\x0c" * 300_000))
        self.assertEqual(protocol.messages, [])
        self.assertTrue(transport.disconnecting)


class IdleTimeoutTests(SynchronousTestCase):
    def test_idle_timeout(self) -> None:
        """
        With an idle timeout, any received byte restarts the countdown; when
        nothing arrives for the whole timeout the session is closed with
        reason "Timeout"; closing cancels the timer.
        """
        events = _observe(self)
        clock = Clock()
        protocol = Recording()
        protocol.idle_timeout = 30
        protocol.clock = clock
        transport = _connect(protocol)
        clock.advance(29)
        protocol.dataReceived(b"\x00")
        clock.advance(29)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual([e["reason"] for e in _warnings(events)], ["Timeout"])
        # The idle timer is gone; what is left is the hard abort for a peer
        # that would not read the close.
        (pending,) = clock.getDelayedCalls()
        self.assertEqual(pending.getTime(), 59 + protocol.abort_timeout)

    def test_no_timer_by_default(self) -> None:
        """Without an idle timeout nothing is scheduled."""
        clock = Clock()
        protocol = Recording()
        protocol.clock = clock
        _connect(protocol)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lost_cancels(self) -> None:
        """A lost connection cancels the idle timer."""
        clock = Clock()
        protocol = Recording()
        protocol.idle_timeout = 30
        protocol.clock = clock
        _connect(protocol)
        protocol.connectionLost()
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertTrue(protocol.closing)
