"""The relay on WebSocket (docs/websocket.rst §5): legs pair across WebSocket and TCP
as in hbbr, and hostile WebSocket clients cannot make the relay hold more than its
bounds.

Real sockets on loopback: a relay service on 127.0.0.1:0 (tests/support/relay.py)
with its WebSocket listener beside it; WebSocket peers are autobahn clients
(tests/support/ws_client.py), TCP peers plain protocols.  The frame splitter that
turns a TCP peer's frames into messages is checked with hypothesis.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IPullProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import directlyProvides

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.relay.limiter import BandwidthSettings
from litedesk.relay.settings import RelaySettings
from litedesk.relay.table import ConnectionLimits, Deadlines
from litedesk.websocket.bridge import AUTOBAHN_SLICE, MAX_REASSEMBLED, WebSocketBridge
from litedesk.websocket.bridge_factory import BridgeFactory
from litedesk.websocket.fastpath import (
    MAX_BATCH,
    Unmasker,
    frame_header,
    parse_header,
    scratch_of,
)
from litedesk.websocket.framing import Chunk, FrameSplitter
from litedesk.websocket.proxy import TrustedProxies
from litedesk.websocket.relay import RelayBridgeFactory
from litedesk.websocket.timing import ExactTimer
from litedesk.wire.address import Address
from litedesk.wire.bytescodec import FrameDecoder, encode_frame, encode_header

from .support.polling import pause, until
from .support.relay import Peer, RelayFixture, request_relay
from .support.ws_client import HandshakeRefused, WSClient, ws_connect

reactor: Any = _reactor


# -- the frame splitter -------------------------------------------------------------


class _Collect:
    """A FrameSink that rebuilds the messages."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.whole_count = 0
        self._cur: bytearray | None = None
        self._len = 0

    def whole(self, payload: Chunk) -> None:
        assert self._cur is None
        self.whole_count += 1
        self.messages.append(bytes(payload))

    def begin(self, length: int) -> None:
        assert self._cur is None and length > 0
        self._cur = bytearray()
        self._len = length

    def part(self, data: Chunk) -> None:
        assert self._cur is not None and data
        self._cur += data
        assert len(self._cur) <= self._len

    def end(self) -> None:
        assert self._cur is not None and len(self._cur) == self._len
        self.messages.append(bytes(self._cur))
        self._cur = None


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


class FrameSplitterTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.binary(max_size=300) | st.sampled_from([b"", b"x" * 70_000])),
        st.lists(st.integers(min_value=0, max_value=200_000), max_size=30),
    )
    def test_any_split_gives_the_frames(self, payloads: list[bytes], cuts: list[int]) -> None:
        """However a stream of frames is cut into chunks, every frame comes out once, in
        order and unchanged, and the splitter never holds more than a partial header."""
        stream = b"".join(encode_frame(p) for p in payloads)
        splitter = FrameSplitter()
        sink = _Collect()
        for chunk in _chunks(stream, cuts):
            splitter.feed(chunk, sink)
            self.assertLessEqual(len(splitter._header), 3)
        self.assertEqual(sink.messages, payloads)
        self.assertTrue(splitter.between_frames)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=2000), st.lists(st.integers(min_value=0, max_value=2000)))
    def test_garbage_never_raises(self, data: bytes, cuts: list[int]) -> None:
        """Any byte stream (a TCP peer may send anything) is cut without an exception and
        without holding payload bytes."""
        splitter = FrameSplitter()
        sink = _Collect()
        for chunk in _chunks(data, cuts):
            splitter.feed(chunk, sink)
            self.assertLessEqual(len(splitter._header), 3)

    def test_whole_frames_and_long_headers(self) -> None:
        """A frame complete in its chunk is reported whole; a 2-byte header announcing 0
        bytes (non-canonical) is an empty frame; a frame cut in two is begun, continued
        and ended."""
        splitter = FrameSplitter()
        sink = _Collect()
        splitter.feed(encode_frame(b"abc") + b"\x01\x00" + encode_header(5) + b"12", sink)
        splitter.feed(b"345", sink)
        self.assertEqual(sink.messages, [b"abc", b"", b"12345"])
        self.assertEqual(sink.whole_count, 2)


# -- pairing across WebSocket and TCP ---------------------------------------------------


def _settings(**kw: Any) -> RelaySettings:
    base: dict[str, Any] = {
        "deadlines": Deadlines(first_frame=10, partner=10, idle=10, drain=5),
        "limits": ConnectionLimits(max_per_ip=64, max_unpaired=1000),
        "bandwidth": BandwidthSettings(0, 0, 0),
    }
    base.update(kw)
    return RelaySettings(**base)


class FramedPeer(Peer):
    """A TCP relay peer that also decodes the BytesCodec frames it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = FrameDecoder()
        self.frames: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.frames.extend(self.decoder.feed(data))


class WebSocketRelayCase(TestCase):
    """A relay with its WebSocket listener, and helpers to make peers."""

    licence = ""
    max_message = 1 << 20

    def relay_settings(self) -> RelaySettings:
        return _settings()

    async def start(self) -> None:
        data = Path(self.mktemp())
        data.mkdir()
        self.fixture = RelayFixture(self.relay_settings(), data, self.licence)
        await self.fixture.start()
        self.factory = RelayBridgeFactory(
            self.fixture.service.relay,
            proxies=TrustedProxies(),
            max_message=self.max_message,
            handshake_timeout=2.0,
        )
        self.ws_port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.ws: list[WSClient] = []
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self._observe)  # type: ignore[arg-type]
        self.addCleanup(self.stop)

    def _observe(self, event: dict[str, Any]) -> None:
        self.logged.append(event)

    async def stop(self) -> None:
        globalLogPublisher.removeObserver(self._observe)  # type: ignore[arg-type]
        for c in self.ws:
            c.abort()
        await self.ws_port.stopListening()
        await self.fixture.stop()
        await until(lambda: self.factory.connections == 0)

    async def ws_peer(self, uuid: str | None, *extra: bytes) -> WSClient:
        c = await ws_connect(self.ws_port.getHost().port, path="/ws/relay")
        self.ws.append(c)
        if uuid is not None:
            c.send(
                rz.RendezvousMessage(
                    request_relay=rz.RequestRelay(uuid=uuid, licence_key=self.licence)
                ).SerializeToString()
            )
        for m in extra:
            c.send(m)
        return c

    async def tcp_peer(self, uuid: str, early: bytes = b"") -> FramedPeer:
        ep = TCP4ClientEndpoint(reactor, "127.0.0.1", self.fixture.port)
        p: FramedPeer = await connectProtocol(ep, FramedPeer())
        self.fixture.peers.append(p)
        assert p.transport is not None
        p.transport.write(request_relay(uuid, self.licence) + early)
        return p

    async def paired(self) -> None:
        await until(lambda: self.fixture.service.relay.table.pairs, message="a pair")

    def log_text(self) -> str:
        from twisted.logger import formatEvent

        return "\n".join(formatEvent(e) for e in self.logged)


class WebSocketPairingTests(WebSocketRelayCase):
    async def test_websocket_with_websocket_message_for_message(self) -> None:
        """Two WebSocket legs with one uuid are paired; messages (those sent before the
        partner arrived, a 1 MiB one streamed through) arrive one for one, unchanged,
        both ways."""
        await self.start()
        a = await self.ws_peer("ws-ws", b"early-1", b"early-2")
        await until(lambda: self.fixture.service.relay.table.waiting_count == 1)
        b = await self.ws_peer("ws-ws")
        self.assertEqual(await b.recv(), b"early-1")
        self.assertEqual(await b.recv(), b"early-2")
        big = os.urandom(1 << 20)
        b.send(b"back")
        b.send(big)
        self.assertEqual(await a.recv(), b"back")
        self.assertEqual(await a.recv(), big)
        a.send(b"x")
        self.assertEqual(await b.recv(), b"x")

    async def test_websocket_with_tcp_frames_are_messages(self) -> None:
        """WebSocket with TCP, as hbbr: each TCP frame (cut anywhere, several per write,
        one of 3 MB) arrives as one binary message, empty frames are not forwarded; each
        binary message arrives as one BytesCodec frame, text messages and pings are
        not forwarded."""
        await self.start()
        t = await self.tcp_peer("ws-tcp", encode_frame(b"early"))
        await until(lambda: self.fixture.service.relay.table.waiting_count == 1)
        w = await self.ws_peer("ws-tcp")
        await self.paired()
        self.assertEqual(await w.recv(), b"early")
        big = os.urandom(3_000_000)
        stream = encode_frame(b"one") + encode_frame(b"") + encode_frame(b"two") + encode_frame(big)
        assert t.transport is not None
        t.transport.write(stream[:2])
        await pause(0.05)
        t.transport.write(stream[2:100_000])
        await pause(0.05)
        t.transport.write(stream[100_000:])
        self.assertEqual(await w.recv(), b"one")
        self.assertEqual(await w.recv(), b"two")
        self.assertEqual(await w.recv(), big)
        w.sendMessage(b"a text message", isBinary=False)
        w.sendPing(b"ping")
        w.send(b"m1")
        w.send(b"")
        w.send(b"m2" * 1000)
        await until(lambda: len(t.frames) >= 2)
        await pause(0.1)
        self.assertEqual(t.frames, [b"m1", b"m2" * 1000])
        self.assertEqual(bytes(t.received), encode_frame(b"m1") + encode_frame(b"m2" * 1000))

    async def test_tcp_waits_websocket_arrives_second(self) -> None:
        """The WebSocket leg may arrive second: its early messages and the TCP leg's early
        frames both arrive; a fragmented message becomes one frame."""
        await self.start()
        w = await self.ws_peer("tcp-first", b"w-early")
        t = await self.tcp_peer("tcp-first", encode_frame(b"t-early"))
        await self.paired()
        self.assertEqual(await w.recv(), b"t-early")
        w.sendMessage(b"f" * 5000, isBinary=True, fragmentSize=700)
        await until(lambda: len(t.frames) >= 2)
        self.assertEqual(t.frames, [b"w-early", b"f" * 5000])

    async def test_closing_one_side_closes_the_other(self) -> None:
        """When the TCP leg ends, the WebSocket leg gets what was sent and then a close;
        when a WebSocket leg ends, the TCP leg is closed."""
        await self.start()
        t = await self.tcp_peer("close-1")
        w = await self.ws_peer("close-1")
        await self.paired()
        assert t.transport is not None
        t.transport.write(encode_frame(b"last words"))
        t.transport.loseConnection()
        self.assertEqual(await w.recv(), b"last words")
        await w.closed
        t2 = await self.tcp_peer("close-2")
        w2 = await self.ws_peer("close-2")
        await self.paired()
        await w2.close()
        await t2.lost
        await until(lambda: self.fixture.service.relay.table.connections == 0)


class WebSocketLicenceTests(WebSocketRelayCase):
    licence = "the-licence"

    async def test_licence_checked(self) -> None:
        """A WebSocket leg with a wrong licence key is closed without a reply and the
        reason logged, as on TCP; with the key it pairs."""
        await self.start()
        c = await ws_connect(self.ws_port.getHost().port)
        self.ws.append(c)
        c.send(
            rz.RendezvousMessage(
                request_relay=rz.RequestRelay(uuid="u", licence_key="wrong")
            ).SerializeToString()
        )
        await c.closed
        self.assertEqual(c.received, 0)
        self.assertIn("wrong licence key", self.log_text())
        a = await self.ws_peer("lic")
        b = await self.ws_peer("lic")
        a.send(b"hello")
        self.assertEqual(await b.recv(), b"hello")


class HostileWebSocketRelayTests(WebSocketRelayCase):
    max_message = 70_000

    async def test_first_message_must_be_request_relay(self) -> None:
        """A text message, an empty message or another protobuf as the first message
        closes the connection with a logged reason (hbbr drops it too); the listener
        goes on pairing."""
        await self.start()
        for first in ("text", b"", rz.RendezvousMessage(register_peer=rz.RegisterPeer(id="1"))):
            c = await ws_connect(self.ws_port.getHost().port)
            self.ws.append(c)
            if isinstance(first, str):
                c.sendMessage(first.encode(), isBinary=False)
            elif isinstance(first, bytes):
                c.send(first)
            else:
                c.send_msg(first)
            await c.closed
        text = self.log_text()
        self.assertIn("first message is a text message", text)
        self.assertIn("first message is an empty binary message", text)
        self.assertIn("first frame is register_peer", text)
        a = await self.ws_peer("after")
        b = await self.ws_peer("after")
        a.send(b"ok")
        self.assertEqual(await b.recv(), b"ok")

    async def test_oversize_messages_close(self) -> None:
        """A message over --ws-max-message closes the connection with the reason logged,
        and so does a fragmented message over 1 MiB on a relay allowing more; a
        RequestRelay over --relay-max-first-frame is refused as on TCP."""
        await self.start()
        a = await self.ws_peer("big")
        b = await self.ws_peer("big")
        await self.paired()
        a.send(b"z" * 70_001)
        await a.closed
        await b.closed
        self.assertIn("exceeds payload limit of 70000", self.log_text())
        self.factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        c = await self.ws_peer("frag")
        d = await self.ws_peer("frag")
        await self.paired()
        c.sendMessage(b"q" * (MAX_REASSEMBLED + 10), isBinary=True, fragmentSize=65536)
        await c.closed
        await d.closed
        self.assertIn(f"fragmented message of more than {MAX_REASSEMBLED} bytes", self.log_text())
        e = await ws_connect(self.ws_port.getHost().port)
        self.ws.append(e)
        e.send(
            rz.RendezvousMessage(
                request_relay=rz.RequestRelay(uuid="u" * 70_000)
            ).SerializeToString()
        )
        await e.closed
        self.assertIn("exceeds max-first-frame", self.log_text())

    async def test_handshake_bounds(self) -> None:
        """A connection that never finishes its opening handshake is closed after the
        handshake timeout, one whose request grows past 16 KiB at once, and a source
        beyond --max-connections-per-ip is refused; each is logged with the reason and
        the listener keeps working."""
        await self.start()
        port = self.ws_port.getHost().port
        slow = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Peer())
        assert slow.transport is not None
        slow.transport.write(b"GET /ws/relay HTTP/1.1\r\nHost: x\r\n")
        huge = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Peer())
        assert huge.transport is not None
        huge.transport.write(b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000)
        await huge.lost
        await slow.lost
        text = self.log_text()
        self.assertIn("opening handshake longer than 16384 bytes", text)
        self.assertIn("opening handshake not finished in time", text)
        self.factory.max_per_source = 3
        held = [
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Peer())
            for _ in range(3)
        ]
        with self.assertRaises(HandshakeRefused):
            await ws_connect(port)
        self.assertIn("more than 3 open connections", self.log_text())
        for p in held:
            assert p.transport is not None
            p.transport.abortConnection()
        await until(lambda: self.factory.connections == 0)
        a = await self.ws_peer("later")
        b = await self.ws_peer("later")
        a.send(b"fine")
        self.assertEqual(await b.recv(), b"fine")


class BackpressureTests(WebSocketRelayCase):
    def relay_settings(self) -> RelaySettings:
        return _settings(read_size=64 * 1024, early_buffer=64 * 1024)

    async def test_stalled_websocket_reader_stalls_tcp_sender(self) -> None:
        """A WebSocket peer that stops reading stalls its TCP partner: the relay holds at
        most about two read sizes for it while 64 MiB wait at the sender, and once it
        reads again every message arrives, in order."""
        await self.start()
        w = await self.ws_peer("stall")
        t = await self.tcp_peer("stall")
        await self.paired()
        wt: Any = w.transport
        tt: Any = t.transport
        wt.pauseProducing()
        frame = encode_frame(b"\x5a" * 65_000)
        total = 1024
        sent = 0

        class Push:
            def resumeProducing(self) -> None:
                nonlocal sent
                if sent < total:
                    sent += 1
                    tt.write(frame)
                else:
                    tt.unregisterProducer()

            def stopProducing(self) -> None:
                pass

        push = Push()
        directlyProvides(push, IPullProducer)
        tt.registerProducer(push, False)
        await pause(1.0)
        stalled_at = sent
        table = self.fixture.service.relay.table
        leg_buffered = max(c.handle.buffered() for pair in table.pairs for c in (pair.a, pair.b))
        self.assertLess(stalled_at, total // 2)
        self.assertLessEqual(leg_buffered, 4 * 64 * 1024 + 65_100)
        wt.resumeProducing()
        got: list[bytes] = []
        while len(got) < total:
            got.append(await w.recv(10))
        self.assertEqual(set(got), {b"\x5a" * 65_000})


# -- the fast path for a paired leg's binary frames, against autobahn ----------------


_MASK = b"\x9d\x21\x7e\x03"
_HANDSHAKE = (
    b"GET /ws/relay HTTP/1.1\r\nHost: relay.example\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = _MASK,
    form: int | None = None,
) -> bytes:
    """One client frame (RFC 6455 5.2); C{form} forces the length form (125, 126 or 127)."""
    n = len(payload)
    if form is None:
        form = 125 if n < 126 else 126 if n < 0x10000 else 127
    b1 = 0x80 if mask is not None else 0
    if form == 125:
        head = bytes((b1 | n,))
    elif form == 126:
        head = bytes((b1 | 126,)) + n.to_bytes(2, "big")
    else:
        head = bytes((b1 | 127,)) + n.to_bytes(8, "big")
    head = bytes(((0x80 if fin else 0) | rsv << 4 | opcode,)) + head
    if mask is None:
        return head + payload
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


def binary(payload: bytes, **kw: Any) -> bytes:
    return client_frame(2, payload, **kw)


class _Inner(Protocol):
    """The protocol a bridge carries: keeps every byte it is given (a copy, as a
    relay leg sends or copies at once: the fast path's buffers are reused); with
    C{close_at}, closes its transport once it has that many."""

    close_at = 0

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.close_at and len(self.data) >= self.close_at and self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True


class _Transport(StringTransport):
    """A string transport that, like a TCP one, lets autobahn unregister no producer."""

    def unregisterProducer(self) -> None:
        self.producer = None


class _RecordingBridge(WebSocketBridge):
    """A bridge that records what it tells its subclass hooks, and the most bytes
    autobahn's input buffer held when autobahn was asked to parse."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.most_buffered = 0

    def _dataReceived(self, data: bytes) -> None:
        self.most_buffered = max(self.most_buffered, len(self.data) + len(data))
        super()._dataReceived(data)

    def on_nonbinary(self, binary: bool) -> None:
        self.events.append("empty" if binary else "text")

    def on_ping(self) -> None:
        self.events.append("ping")


class _RecordingFactory(BridgeFactory):
    protocol = _RecordingBridge

    def build_inner(self, client: Address, bridge: WebSocketBridge) -> IProtocol | None:
        return _Inner()


@dataclass
class Outcome:
    """What a stream of client bytes did to a bridge."""

    inner: bytes  # the BytesCodec stream the inner protocol got
    events: list[str]
    sent: bytes  # what the bridge wrote back (pongs, close frames)
    reason: str  # close_reason ("" if none)
    failed: bool  # autobahn failed the connection
    dropped: bool  # the TCP connection was closed
    fast_frames: int  # frames the fast path took
    most_buffered: int  # most bytes autobahn held to parse


def drive(
    chunks: list[bytes],
    *,
    fast: bool,
    max_message: int = 1000,
    native: bool = True,
    close_at: int = 0,
) -> Outcome:
    """Open a bridge on a string transport, turn the fast path on (as a pairing does)
    or not, feed it C{chunks} and say what happened."""
    factory = _RecordingFactory(
        proxies=TrustedProxies(), max_per_source=0, max_message=max_message, clock=Clock()
    )
    bridge = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert isinstance(bridge, _RecordingBridge)
    tr = _Transport()
    bridge.makeConnection(tr)
    bridge.dataReceived(_HANDSHAKE)
    assert tr.value().startswith(b"HTTP/1.1 101"), tr.value()
    tr.clear()
    inner = bridge.inner
    assert isinstance(inner, _Inner)
    inner.close_at = close_at
    if fast:
        bridge.start_fast_path()
        assert bridge._reader is not None
        bridge._reader._native = native
    for chunk in chunks:
        bridge.dataReceived(chunk)
        if tr.disconnecting:
            # What the reactor does once a dropped connection is gone.
            bridge.connectionLost(Failure(ConnectionDone()))
            break
    reader = bridge._reader
    return Outcome(
        inner=bytes(inner.data),
        events=bridge.events,
        sent=tr.value(),
        reason=bridge.close_reason,
        failed=bool(bridge.failedByMe),
        dropped=tr.disconnecting,
        fast_frames=reader.frames if reader is not None else 0,
        most_buffered=bridge.most_buffered,
    )


def expected_stream(*messages: bytes) -> bytes:
    return b"".join(encode_frame(m) for m in messages)


class FastPathTests(SynchronousTestCase):
    """L{litedesk.websocket.fastpath} and the bridge's use of it give exactly what
    autobahn gives for the same bytes (autobahn is the reference: each stream is
    also fed to a bridge without the fast path), whatever the cuts."""

    def same(self, chunks: list[bytes], max_message: int = 1000, native: bool = True) -> Outcome:
        ref = drive(chunks, fast=False, max_message=max_message)
        got = drive(chunks, fast=True, max_message=max_message, native=native)
        self.assertEqual(got.inner, ref.inner)
        self.assertEqual(got.events, ref.events)
        self.assertEqual(got.sent, ref.sent)
        self.assertEqual(
            (got.reason, got.failed, got.dropped), (ref.reason, ref.failed, ref.dropped)
        )
        return got

    def test_binary_frames_of_every_length_form(self) -> None:
        """Binary frames with 7-bit, 16-bit and 64-bit lengths are unmasked and passed
        on as frames, all by the fast path."""
        payloads = [os.urandom(n) for n in (1, 125, 126, 65_535, 65_536, 70_000)]
        stream = b"".join(binary(p) for p in payloads)
        got = self.same([stream], max_message=1 << 20)
        self.assertEqual(got.inner, expected_stream(*payloads))
        self.assertEqual(got.fast_frames, len(payloads))
        self.assertEqual(got.sent, b"")

    def test_cut_at_every_byte(self) -> None:
        """A stream of binary frames, a ping, a text message, a fragmented message and
        an empty one gives the same result cut in two at every byte, and fed one
        byte at a time, with and without autobahn's native masker."""
        stream = (
            binary(b"a" * 130)
            + client_frame(9, b"hi")
            + binary(b"b")
            + client_frame(1, "é".encode())
            + client_frame(2, b"fr", fin=False)
            + client_frame(9, b"")
            + client_frame(0, b"ag", fin=True)
            + binary(b"")
            + binary(b"c" * 3)
        )
        whole = self.same([stream])
        self.assertEqual(whole.inner, expected_stream(b"a" * 130, b"b", b"frag", b"ccc"))
        self.assertEqual(whole.events, ["ping", "text", "ping", "empty"])
        self.assertEqual(whole.fast_frames, 3)
        for cut in range(len(stream) + 1):
            self.same([stream[:cut], stream[cut:]])
            self.same([stream[:cut], stream[cut:]], native=False)
        self.same([stream[i : i + 1] for i in range(len(stream))])

    def test_close_mid_stream(self) -> None:
        """A close frame between binary frames: autobahn answers it and nothing after it
        reaches the inner protocol."""
        stream = binary(b"x" * 200) + client_frame(8, b"\x03\xe8") + binary(b"late")
        got = self.same([stream])
        self.assertEqual(got.inner, expected_stream(b"x" * 200))
        self.assertTrue(got.sent.startswith(b"\x88"))

    def test_closing_in_mid_frame(self) -> None:
        """The inner protocol closes while a frame is half read: the rest of that frame
        is still read as a frame (not as headers), the close frame goes out, and the
        peer's close reply ends the connection cleanly, as with autobahn alone."""
        first = binary(b"m" * 3000)
        stream = first + binary(b"n" * 500) + client_frame(8, b"\x03\xe8")
        for cut in (100, 2999, len(first) + 3, len(first) + 200):
            got = drive([stream[:cut], stream[cut:]], fast=True, close_at=1, max_message=9000)
            ref = drive([stream[:cut], stream[cut:]], fast=False, close_at=1, max_message=9000)
            self.assertEqual(got.sent, ref.sent)
            self.assertTrue(got.sent.startswith(b"\x88\x02\x03\xe8"))
            self.assertEqual((got.failed, got.dropped, got.reason), (False, True, ""))
            self.assertEqual((ref.failed, ref.dropped, ref.reason), (False, True, ""))
        # Closing after the first batch of a read that holds more of the frame.
        stream = binary(b"L" * (MAX_BATCH + 1000)) + client_frame(8, b"\x03\xe8")
        got = drive([stream], fast=True, close_at=1, max_message=1 << 20)
        self.assertTrue(got.sent.startswith(b"\x88\x02\x03\xe8"))
        self.assertEqual((got.failed, got.dropped, got.reason), (False, True, ""))

    def test_protocol_violations_are_autobahns(self) -> None:
        """An unmasked frame, RSV bits, a reserved opcode, a length not in its shortest
        form, a continuation outside a message and a new message inside a fragmented
        one fail the connection with autobahn's reason, after the frames before them
        went through the fast path."""
        before = binary(b"ok" * 50)
        for bad in (
            binary(b"nomask", mask=None),
            binary(b"rsv", rsv=1),
            client_frame(3, b"op"),
            binary(b"long", form=126),
            binary(b"x" * 200, form=127),
            client_frame(0, b"cont"),
            client_frame(2, b"fr", fin=False) + binary(b"inside a fragmented message"),
        ):
            got = self.same([before + bad + binary(b"after")])
            self.assertTrue(got.failed and got.dropped, bad)
            self.assertTrue(got.reason, bad)
            self.assertEqual(got.inner, expected_stream(b"ok" * 50))

    def test_oversize_closes_with_reason(self) -> None:
        """A frame over the message limit is left to autobahn, which drops the connection
        with the limit in its reason; nothing of it is passed on."""
        got = self.same([binary(b"k" * 10) + binary(b"z" * 1001)])
        self.assertIn("exceeds payload limit of 1000", got.reason)
        self.assertEqual(got.inner, expected_stream(b"k" * 10))
        self.assertTrue(got.dropped)

    def test_autobahn_parses_a_slice_at_a_time(self) -> None:
        """With the fast path on, autobahn is given a large read in slices: its
        buffer, which it copies at every frame boundary, never holds more than
        AUTOBAHN_SLICE bytes and a partial frame, where alone it held the whole read
        (quadratic copying for a read of tiny frames); pings in the middle are
        answered in order and the binary frames around them still take the fast
        path."""
        stream = (
            binary(b"a" * 1000)
            + client_frame(9, b"p") * 6000
            + binary(b"b" * 1000)
            + client_frame(9, b"q") * 6000
            + binary(b"c" * 1000)
        )
        got = self.same([stream])
        self.assertEqual(got.inner, expected_stream(b"a" * 1000, b"b" * 1000, b"c" * 1000))
        self.assertEqual(got.fast_frames, 3)
        self.assertEqual(got.sent.count(b"\x8a\x01p"), 6000)
        self.assertLessEqual(got.most_buffered, AUTOBAHN_SLICE + 7)
        self.assertEqual(drive([stream], fast=False).most_buffered, len(stream))

    def test_holds_nothing(self) -> None:
        """A 16 MiB frame arriving in pieces is passed on piece by piece: the bridge
        keeps no payload (autobahn's buffer stays empty) and the reader only a count."""
        factory = _RecordingFactory(
            proxies=TrustedProxies(), max_per_source=0, max_message=1 << 24, clock=Clock()
        )
        bridge = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        assert isinstance(bridge, _RecordingBridge)
        bridge.makeConnection(_Transport())
        bridge.dataReceived(_HANDSHAKE)
        bridge.start_fast_path()
        inner = bridge.inner
        assert isinstance(inner, _Inner) and bridge._reader is not None
        size = 1 << 24
        bridge.dataReceived(client_frame(2, b"", form=127)[:2] + size.to_bytes(8, "big") + _MASK)
        piece = bytes(b ^ _MASK[i & 3] for i, b in enumerate(b"\x00" * 65_536))
        for i in range(size // 65_536):
            bridge.dataReceived(piece)
            self.assertEqual(bridge.data, b"")
            self.assertEqual(len(inner.data), 65_536 + (4 if i == 0 else 0))
            inner.data.clear()
        self.assertEqual(bridge._reader.remaining, 0)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.binary(max_size=300).map(binary),
                st.just(binary(b"y" * 70_000)),
                st.binary(max_size=125).map(lambda p: client_frame(9, p)),
                st.binary(max_size=125).map(lambda p: client_frame(10, p)),
                st.text(max_size=20).map(lambda t: client_frame(1, t.encode())),
                st.lists(st.binary(max_size=50), min_size=2, max_size=4).map(
                    lambda ps: b"".join(
                        client_frame(2 if i == 0 else 0, p, fin=i == len(ps) - 1)
                        for i, p in enumerate(ps)
                    )
                ),
                st.sampled_from(
                    [
                        client_frame(8, b"\x03\xe8"),
                        binary(b"u", mask=None),
                        binary(b"r", rsv=2),
                        binary(b"n", form=126),
                        client_frame(0, b"c"),
                        client_frame(11, b""),
                        client_frame(2, b"f", fin=False),
                    ]
                ),
            ),
            max_size=12,
        ),
        st.lists(st.integers(min_value=0, max_value=100_000), max_size=12),
        st.booleans(),
    )
    def test_any_stream_any_cuts(self, frames: list[bytes], cuts: list[int], native: bool) -> None:
        """Any sequence of frames (binary of any size, pings, pongs, text, fragmented
        messages, unfinished ones, a close, protocol violations, an oversize frame),
        cut anywhere, gives what autobahn alone gives."""
        stream = b"".join(frames)
        self.same(_chunks(stream, cuts), max_message=65_536, native=native)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(min_size=4, max_size=4), st.binary(max_size=2000), st.lists(st.integers()))
    def test_unmasker_is_rfc_xor(self, mask: bytes, data: bytes, cuts: list[int]) -> None:
        """Unmasking in pieces (native and through autobahn's public masker) is the
        RFC 6455 XOR with the mask from the start of the payload."""
        want = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
        for native in (True, False):
            u = Unmasker(mask, len(data), native=native)
            out = scratch_of(len(data) + 1)
            out.view[0:1] = b"P"
            at = 1
            for c in _chunks(data, cuts):
                at = u.apply(memoryview(c), out, at)
            self.assertEqual(bytes(out.view[:at]), b"P" + want)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=20), st.integers(min_value=0, max_value=100))
    def test_header_parser_takes_only_its_frames(self, data: bytes, limit: int) -> None:
        """parse_header accepts only a complete header of a masked FIN binary frame with a
        shortest-form length in 1..limit, and then says where its payload starts."""
        found = parse_header(data, 0, limit)
        if found is None:
            return
        header, length = found
        self.assertEqual(data[0], 0x82)
        self.assertTrue(data[1] & 0x80)
        self.assertTrue(length > 0 and (not limit or length <= limit))
        self.assertEqual(
            data[:header],
            client_frame(2, b"\x00" * length, mask=data[header - 4 : header])[:header],
        )

    def test_frame_header_matches_autobahn(self) -> None:
        """The header the bridge writes for an outgoing message is the one autobahn
        writes for a binary frame with FIN set."""
        for n in (1, 125, 126, 65_535, 65_536, 1 << 24):
            factory = WebSocketServerFactory()
            factory.protocol = WebSocketServerProtocol
            # Its handshake timer on a test clock, not the reactor.
            factory._batched_timer = ExactTimer(Clock())
            proto: Any = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
            tr = _Transport()
            proto.makeConnection(tr)
            tr.clear()
            proto.sendFrame(opcode=2, payload=b"\x00" * n)
            sent = tr.value()
            self.assertEqual(sent[: len(frame_header(n))], frame_header(n))
            self.assertEqual(len(sent), len(frame_header(n)) + n)


def _bridges(case: WebSocketRelayCase) -> list[WebSocketBridge]:
    """The relay's WebSocket legs that are paired now."""
    found = []
    for pair in case.fixture.service.relay.table.pairs:
        for c in (pair.a, pair.b):
            bridge = getattr(c.handle.transport, "_bridge", None)
            if isinstance(bridge, WebSocketBridge):
                found.append(bridge)
    return found


def _fast_frames(case: WebSocketRelayCase) -> int:
    """Frames the relay's paired WebSocket legs read on the fast path so far."""
    return sum(b._reader.frames for b in _bridges(case) if b._reader is not None)


def _queued(case: WebSocketRelayCase) -> int:
    """Bytes the relay holds in its legs' write buffers (copied there to wait)."""
    table = case.fixture.service.relay.table
    return sum(c.handle.buffered() for pair in table.pairs for c in (pair.a, pair.b))


class FastPathRelayTests(WebSocketRelayCase):
    """A paired WebSocket leg reads its binary frames on the fast path, over real sockets:
    the partner gets every message intact and in order, also when it reads slowly
    (the unmasked bytes are in a buffer the next read reuses, so whatever must wait is
    copied), and frames for autobahn in between change nothing."""

    def relay_settings(self) -> RelaySettings:
        return _settings(read_size=128 * 1024, early_buffer=64 * 1024)

    async def test_slow_tcp_reader_gets_every_message(self) -> None:
        """WebSocket to a TCP peer that stops reading while 13 MB of distinct messages
        are sent: bytes wait in the relay, and once the peer reads, every frame is the
        message sent."""
        await self.start()
        w = await self.ws_peer("slow-tcp")
        t = await self.tcp_peer("slow-tcp")
        await self.paired()
        tt: Any = t.transport
        tt.pauseProducing()
        messages = [os.urandom(65_000) for _ in range(200)]
        for m in messages:
            w.send(m)
        await pause(0.5)
        self.assertGreater(_queued(self), 0)
        tt.resumeProducing()
        await until(lambda: len(t.frames) >= len(messages), message="every frame")
        self.assertEqual(t.frames, messages)
        self.assertGreater(_fast_frames(self), 100)

    async def test_slow_websocket_reader_gets_every_message(self) -> None:
        """WebSocket to a WebSocket peer that stops reading: the same."""
        await self.start()
        a = await self.ws_peer("slow-ws")
        b = await self.ws_peer("slow-ws")
        await self.paired()
        bt: Any = b.transport
        bt.pauseProducing()
        messages = [os.urandom(n) for n in (65_000, 1, 126, 65_536, 70_000) * 40]
        for m in messages:
            a.send(m)
        await pause(0.5)
        self.assertGreater(_queued(self), 0)
        bt.resumeProducing()
        got = [await b.recv(10) for _ in messages]
        self.assertEqual(got, messages)
        self.assertGreater(_fast_frames(self), 100)

    async def test_other_frames_between(self) -> None:
        """Pings, text, empty and fragmented messages between binary ones go through
        autobahn as before (pings answered, text and empty not forwarded, fragments
        joined) and the binary ones around them through the fast path; a paired leg
        reads as much at a time as a TCP leg (the relay's read size)."""
        await self.start()
        a = await self.ws_peer("mixed")
        t = await self.tcp_peer("mixed")
        await self.paired()
        big = os.urandom(100_000)
        a.send(big)
        a.sendPing(b"p1")
        a.sendMessage(b"text", isBinary=False)
        a.send(b"")
        a.sendMessage(b"f" * 5000, isBinary=True, fragmentSize=1000)
        a.send(b"last")
        await until(lambda: len(t.frames) >= 3, message="three frames")
        self.assertEqual(t.frames, [big, b"f" * 5000, b"last"])
        self.assertEqual(_fast_frames(self), 2)
        self.assertFalse(a.closed.called)
        (bridge,) = _bridges(self)
        self.assertEqual(bridge.raw.bufferSize, 128 * 1024)

    async def test_unpaired_legs_stay_on_autobahn(self) -> None:
        """Only a paired leg reads on the fast path: a leg waiting for its partner has
        none, and reads as little as a waiting TCP leg."""
        await self.start()
        a = await self.ws_peer("alone")
        table = self.fixture.service.relay.table
        await until(lambda: "alone" in table.waiting, message="a waiting leg")
        waiting: Any = getattr(table.waiting["alone"].handle.transport, "_bridge", None)
        self.assertIsNone(waiting._reader)
        self.assertEqual(waiting.raw.bufferSize, self.relay_settings().unpaired_read)
        a.send(b"early")
        await pause(0.1)
        self.assertIsNone(waiting._reader)
        b = await self.ws_peer("alone")
        await self.paired()
        self.assertEqual(await b.recv(), b"early")
        self.assertTrue(all(x._reader is not None for x in _bridges(self)))
