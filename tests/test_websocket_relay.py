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
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IPullProducer
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import directlyProvides

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.relay.limiter import BandwidthSettings
from litedesk.relay.settings import RelaySettings
from litedesk.relay.table import ConnectionLimits, Deadlines
from litedesk.websocket.bridge import MAX_REASSEMBLED
from litedesk.websocket.framing import FrameSplitter
from litedesk.websocket.proxy import TrustedProxies
from litedesk.websocket.relay import RelayBridgeFactory
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

    def whole(self, payload: bytes) -> None:
        assert self._cur is None
        self.whole_count += 1
        self.messages.append(bytes(payload))

    def begin(self, length: int) -> None:
        assert self._cur is None and length > 0
        self._cur = bytearray()
        self._len = length

    def part(self, data: bytes) -> None:
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
