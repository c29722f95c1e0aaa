"""Raw mode of the two stream layers, which a port forward switches to after its login.

L{MessageProtocol.start_raw}: bytes after the switching frame (in the same
read or buffered) reach the receiver unparsed, writes go out unframed, no
frame is sent any more, the idle timeout can be lengthened.
L{SecureChannelProtocol.set_raw} (RustDesk's channel): after the switch
nothing is sealed or framed either way, and what followed the last sealed
frame in the same segment is delivered raw.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import message_pb2 as m
from litedesk.rustdesk import rustdesk_client_factory, rustdesk_host_factory
from litedesk.rustdesk.channel import ChannelTransport
from litedesk.session.framing import MessageProtocol
from litedesk.wire.bytescodec import encode_frame

from .strategies import chunked
from .test_rustdesk_secure import HOST_SEED, PEER_ID, RecorderFactory, Side, _pump

LOGIN = m.Message(login_request=m.LoginRequest(username=PEER_ID))
ANSWER = m.Message(login_response=m.LoginResponse(peer_info=m.PeerInfo(hostname="h")))
# A header announcing a ~1 GiB frame: parsed as a frame it would close the stream.
NOT_A_FRAME = b"\xff\xff\xff\xff tunnelled"


class RawOnMessage(MessageProtocol):
    """Goes raw on the first message of kind C{switch_on}; records everything."""

    def __init__(self, switch_on: str, reply: m.Message | None = None) -> None:
        self.clock = Clock()
        self.switch_on = switch_on
        self.reply = reply
        self.messages: list[m.Message] = []
        self.raw_bytes = bytearray()

    def message_received(self, msg: m.Message) -> None:
        self.messages.append(msg)
        if msg.WhichOneof("union") == self.switch_on:
            if self.reply is not None:
                self.send_message(self.reply)
            self.start_raw(self.raw_bytes.extend)


def _connect(proto: MessageProtocol) -> StringTransport:
    transport = StringTransport()
    proto.makeConnection(transport)
    return transport


class MessageProtocolRawTests(SynchronousTestCase):
    def test_leftover_in_same_read(self) -> None:
        """Bytes after the switching frame in one read are tunnelled data, unparsed."""
        proto = RawOnMessage("login_response")
        transport = _connect(proto)
        proto.dataReceived(encode_frame(ANSWER.SerializeToString()) + NOT_A_FRAME)
        self.assertEqual(len(proto.messages), 1)
        self.assertEqual(bytes(proto.raw_bytes), NOT_A_FRAME)
        self.assertFalse(proto.closing)
        proto.dataReceived(b"more")
        self.assertEqual(bytes(proto.raw_bytes), NOT_A_FRAME + b"more")
        self.assertFalse(transport.disconnecting)

    @given(st.binary(max_size=200), st.data())
    def test_any_chunking(self, tail: bytes, data: st.DataObject) -> None:
        """However the stream is cut, the receiver gets exactly the bytes after the frame."""
        proto = RawOnMessage("login_response")
        _connect(proto)
        stream = encode_frame(ANSWER.SerializeToString()) + tail
        for chunk in data.draw(chunked(stream)):
            proto.dataReceived(chunk)
        self.assertEqual(bytes(proto.raw_bytes), tail)
        self.assertEqual(len(proto.messages), 1)

    def test_switch_later_delivers_buffered(self) -> None:
        """start_raw outside dataReceived first hands over what the decoder buffered."""
        proto = MessageProtocol()
        proto.clock = Clock()
        _connect(proto)
        proto.dataReceived(b"\x0cab")  # 2 of a 3-byte frame
        got = bytearray()
        proto.start_raw(got.extend)
        self.assertEqual(bytes(got), b"\x0cab")

    def test_writes_unframed_and_frames_dropped(self) -> None:
        proto = RawOnMessage("login_request")
        transport = _connect(proto)
        proto.dataReceived(encode_frame(LOGIN.SerializeToString()))
        transport.clear()
        proto.write_raw(b"GET / HTTP/1.0\r\n\r\n")
        proto.send_message(ANSWER)  # a frame would corrupt the tunnel
        self.assertEqual(transport.value(), b"GET / HTTP/1.0\r\n\r\n")

    def test_write_raw_needs_raw(self) -> None:
        proto = MessageProtocol()
        _connect(proto)
        self.assertRaises(RuntimeError, proto.write_raw, b"x")

    def test_idle_timeout_changed(self) -> None:
        """A forward may stay silent for an hour: the timer follows set_idle_timeout."""
        proto = RawOnMessage("login_request")
        proto.idle_timeout = 30.0
        transport = _connect(proto)
        proto.set_idle_timeout(3600.0)
        clock = cast(Clock, proto.clock)
        clock.advance(3599)
        self.assertFalse(transport.disconnecting)
        clock.advance(2)
        self.assertTrue(transport.disconnecting)

    def test_receiver_error_closes(self) -> None:
        proto = MessageProtocol()
        proto.clock = Clock()
        transport = _connect(proto)

        def boom(data: bytes) -> None:
            raise RuntimeError("boom")

        proto.start_raw(boom)
        proto.dataReceived(b"x")
        self.assertTrue(proto.closing)
        self.assertTrue(transport.disconnecting)
        self.flushLoggedErrors(RuntimeError)


class ChannelRawTests(SynchronousTestCase):
    """A LiteDesk session inside RustDesk's channel, going raw as a forward does."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.hosts: list[RawOnMessage] = []
        self.clients: list[RawOnMessage] = []

    def _factory(self, make: Callable[[], RawOnMessage], into: list[RawOnMessage]) -> Factory:
        def build() -> RawOnMessage:
            proto = make()
            proto.clock = self.clock
            into.append(proto)
            return proto

        return Factory.forProtocol(build)

    def _pair(self) -> tuple[Side, Side]:
        host_inner = self._factory(lambda: RawOnMessage("login_request", ANSWER), self.hosts)
        client_inner = self._factory(lambda: RawOnMessage("login_response"), self.clients)
        host = Side(
            rustdesk_host_factory(
                SigningKey(HOST_SEED), PEER_ID, cast(RecorderFactory, host_inner), self.clock
            )
        )
        client = Side(
            rustdesk_client_factory(
                SigningKey(HOST_SEED).verify_key,
                PEER_ID,
                cast(RecorderFactory, client_inner),
                self.clock,
            )
        )
        host.proto.makeConnection(host.transport)
        client.proto.makeConnection(client.transport)
        _pump(host, client)
        return host, client

    def test_raw_both_ways_unsealed(self) -> None:
        host, client = self._pair()
        (client_inner,) = self.clients
        client_inner.send_message(LOGIN)
        # The host answers (sealed) and goes raw; its first tunnelled bytes
        # follow the answer in the same segment.
        host.proto.dataReceived(client.take())
        (host_inner,) = self.hosts
        self.assertTrue(host.proto.raw)
        self.assertFalse(host.proto.encrypted)
        host_inner.write_raw(NOT_A_FRAME)
        wire = host.take()
        self.assertTrue(wire.endswith(NOT_A_FRAME), "raw bytes leave unsealed, unframed")
        client.proto.dataReceived(wire)
        self.assertEqual([x.WhichOneof("union") for x in client_inner.messages], ["login_response"])
        self.assertTrue(client.proto.raw)
        self.assertEqual(bytes(client_inner.raw_bytes), NOT_A_FRAME)
        # And the other way: the client's writes arrive as written.
        client_inner.write_raw(b"\x00\x01raw")
        self.assertEqual(client.transport.value(), b"\x00\x01raw")
        host.proto.dataReceived(client.take())
        self.assertEqual(bytes(host_inner.raw_bytes), b"\x00\x01raw")
        self.assertFalse(host.proto.close_reason or client.proto.close_reason)

    def test_producer_calls_pass_through(self) -> None:
        """A forward pauses the channel's reading through the inner transport."""
        host, _ = self._pair()
        (host_inner,) = self.hosts
        transport = host_inner.transport
        assert isinstance(transport, ChannelTransport)
        transport.pauseProducing()
        self.assertEqual(host.transport.producerState, "paused")
        transport.resumeProducing()
        self.assertEqual(host.transport.producerState, "producing")
