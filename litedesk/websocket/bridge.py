# -*- test-case-name: tests.test_websocket_relay,tests.test_websocket_rendezvous -*-
"""A WebSocket connection that carries the protocol a TCP connection would get.

L{WebSocketBridge} is an autobahn server protocol.  Once the opening
handshake is done it builds, through its factory, the protocol the TCP port
of the same service runs (the rendezvous connection, the relay leg) and
connects it to a L{BridgeTransport}:

- each binary message reaches the inner protocol as one BytesCodec frame: a
  single-frame message streams through (header first, then the payload as
  it is read, nothing held); a message in several frames is collected, up to
  L{MAX_REASSEMBLED} bytes, because the frame header needs its length;
- what the inner protocol writes is cut into frames
  (L{litedesk.websocket.framing}) and each frame goes out as one binary
  WebSocket frame with FIN set, as hbbr sends it; a frame that has not fully
  arrived is streamed (its WebSocket header first, then the pieces as they
  come), so a relayed frame of any size costs no memory; the frames of one
  write leave in one C{sendmsg};
- text messages, empty messages and pings are told to the subclass
  (L{WebSocketBridge.on_nonbinary}, L{WebSocketBridge.on_ping}), which knows
  what they mean on its port;
- once the inner protocol only forwards (a paired relay leg), single-frame
  binary messages are read without autobahn (L{WebSocketBridge.start_fast_path},
  L{litedesk.websocket.fastpath}); every other frame is still autobahn's.

So limits, deadlines, licence checks and logs are the inner protocol's, as
on TCP.  The bridge adds what only WebSocket has: the client address a
trusted proxy names (L{litedesk.websocket.proxy}), a bound on the opening
handshake (L{MAX_HANDSHAKE} bytes within the factory's timeout), the
connections each source may have open while handshaking, and the message
size.  Every refusal is logged with the source IP and a reason
(docs/websocket.rst §4).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, NoReturn

import txaio
from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet import tcp
from twisted.internet.interfaces import (
    IProtocol,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.twisted_internals import output_idle
from litedesk.websocket.bridge_transport import BridgeTransport, address
from litedesk.websocket.fastpath import BinaryFrameReader, frame_header
from litedesk.websocket.framing import Chunk, FrameSplitter, chunks_after
from litedesk.websocket.proxy import ForwardedHeaderError
from litedesk.wire.address import Address
from litedesk.wire.addrmangle import normalize_host
from litedesk.wire.bytescodec import MAX_ENCODABLE, encode_header

if TYPE_CHECKING:
    from litedesk.websocket.bridge_factory import BridgeFactory

__all__ = [
    "AUTOBAHN_SLICE",
    "HANDSHAKE_TIMEOUT",
    "MAX_HANDSHAKE",
    "MAX_HANDSHAKING",
    "MAX_REASSEMBLED",
    "WebSocketBridge",
]

#: Seconds for the opening handshake (TLS included on an ssl: endpoint).
HANDSHAKE_TIMEOUT = 10.0
#: Bytes of HTTP request before the handshake must be complete: a browser's
#: request with cookies is a few KiB.
MAX_HANDSHAKE = 16 * 1024
#: Connections still in their opening handshake, over all sources.
MAX_HANDSHAKING = 4096
#: Largest read of a WebSocket stream.  autobahn copies the rest of its input
#: buffer at every frame boundary, so a read costs more the more frames it
#: holds (and, for a stream of tiny frames, quadratically more): 64 KiB
#: relayed fastest in bench/relay.py before the fast path (256 KiB: about half).
MAX_READ = 64 * 1024
#: With the fast path on, autobahn is given at most this much of a read at a
#: time (what it was given before pairing, the relay's unpaired read size).
AUTOBAHN_SLICE = 16 * 1024
#: Most buffers gathered into one sendmsg (the kernel takes up to 1024).
_MAX_GATHER = 512
#: Largest message accepted in several WebSocket frames (collected before it
#: can be framed); RustDesk's clients send one frame per message.
MAX_REASSEMBLED = 1 << 20

# autobahn's parser state that the fast path reads (WebSocketProtocol's
# current_frame, inside_message and its input buffer, data).
_AUTOBAHN_PARSER_STATE = ("current_frame", "inside_message", "data")

# States in which autobahn parses what arrives (closing: for the peer's close).
_READING_STATES = (WebSocketProtocol.STATE_OPEN, WebSocketProtocol.STATE_CLOSING)

# How an incoming message reaches the inner protocol.
_IGNORE = 0  # text, or the rest of a message after a failure
_STREAM = 1  # one frame: header sent, payload passed on as it is read
_COLLECT = 2  # several frames: collected, sent at the end


class WebSocketBridge(WebSocketServerProtocol):
    """One WebSocket connection carrying an inner protocol (see the module)."""

    _log = Logger()
    # autobahn's own lines: errors only; the bridge logs every refusal and
    # failure itself, with the client's address and the reason.
    log = txaio.make_logger(level="error")  # type: ignore[attr-defined]
    factory: BridgeFactory

    #: Whether an empty frame the inner protocol writes goes out as an empty
    #: message (the rendezvous keep-alive) or is dropped (hbbr never
    #: forwards an empty read).
    forward_empty = True

    def __init__(self) -> None:
        super().__init__()
        self.inner: IProtocol | None = None
        self.source_ip = ""
        self.client: Address = ("0.0.0.0", 0)
        self.closing = False
        self.close_reason = ""
        self._admitted = False
        self._handshaking = False
        self._inner_connected = False
        self._splitter = FrameSplitter()
        self._mode = _IGNORE
        self._first_frame = True
        self._binary = False
        self._size = 0
        self._parts: bytearray | None = None
        self._pongs: list[bytes] = []
        self._sock: socket.socket | None = None
        # The header of the frame begun last, until its first piece goes out,
        # and what one write of the inner protocol gathers for one sendmsg.
        self._header_out = b""
        self._out: list[Chunk] = []
        self._out_len = 0
        # The fast path (start_fast_path): None until it is on; then whether
        # the frame at the start of autobahn's buffer is autobahn's to parse.
        self._reader: BinaryFrameReader | None = None
        self._autobahn_next = False
        self._read_size = MAX_READ

    @property
    def raw(self) -> Any:
        """The WebSocket connection's own transport (TCP, or TLS over TCP)."""
        return self.transport

    # -- connection and handshake ------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        t = self.raw
        # Plain TCP only: under TLS the bytes must go through the TLS layer.
        self._sock = t.socket if isinstance(t, tcp.Connection) else None
        peer = self.raw.getPeer()
        host = getattr(peer, "host", None)
        self.source_ip = normalize_host(host) if isinstance(host, str) else "local"
        self.client = (self.source_ip, int(getattr(peer, "port", 0) or 0))
        refusal = self.factory.admit(self)
        if refusal is not None:
            self._log.warn(
                "Refused WebSocket connection from {ip}: {reason}",
                ip=self.source_ip,
                reason=refusal,
            )
            self.closing = True
            self.raw.abortConnection()
            return
        self._admitted = self._handshaking = True

    def dataReceived(self, data: bytes) -> None:
        if self.state == WebSocketProtocol.STATE_CONNECTING and (
            len(self.data) + len(data) > MAX_HANDSHAKE
        ):
            self._refuse_raw(f"opening handshake longer than {MAX_HANDSHAKE} bytes")
            return
        if self.state == WebSocketProtocol.STATE_OPEN:
            if self._reader is not None:
                self._read_fast(data)
            else:
                # What autobahn's Twisted adapter does, without the debug
                # line it formats for every read.
                self._dataReceived(data)
        elif not self.closing or self.state != WebSocketProtocol.STATE_CONNECTING:
            super().dataReceived(data)

    def _refuse_raw(self, reason: str) -> None:
        if self.closing:
            return
        self._log.warn(
            "Closing WebSocket connection from {ip}: {reason}", ip=self.source_ip, reason=reason
        )
        self.closing = True
        self.close_reason = reason
        self.raw.abortConnection()

    def onConnect(self, request: ConnectionRequest) -> None:
        try:
            ip = self.factory.proxies.client_ip(self.source_ip, request.headers)
        except ForwardedHeaderError as e:
            self._deny(ConnectionDeny.BAD_REQUEST, str(e))
        # The port of our own TCP connection, even behind a proxy: it keeps
        # two clients behind one address apart (the rendezvous server keys
        # waiting viewers by address and port).
        self.client = (ip, self.client[1])
        inner = self.factory.build_inner(self.client, self)
        if inner is None:
            self._deny(ConnectionDeny.SERVICE_UNAVAILABLE, "refused by the server's limits")
        self.inner = inner

    def _deny(self, code: int, reason: str) -> NoReturn:
        self._log.warn(
            "Refused WebSocket handshake from {ip}: {reason}", ip=self.client[0], reason=reason
        )
        self.close_reason = reason
        raise ConnectionDeny(code, reason)  # type: ignore[no-untyped-call]

    def onOpen(self) -> None:
        self._end_handshake()
        inner = self.inner
        if inner is None or self.closing:
            return
        host = self.raw.getHost()
        peer = address(*self.client)
        self._inner_connected = True
        inner.makeConnection(BridgeTransport(self, peer, host))

    def _end_handshake(self) -> None:
        if self._handshaking:
            self._handshaking = False
            self.factory.handshake_done(self)

    def onOpenHandshakeTimeout(self) -> None:
        self.close_reason = "opening handshake not finished in time"
        self._log.warn(
            "Closing WebSocket connection from {ip}: {reason}",
            ip=self.source_ip,
            reason=self.close_reason,
        )
        super().onOpenHandshakeTimeout()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.failedByMe and not self.close_reason:
            # autobahn found a protocol violation (unmasked frame, bad
            # opcode, oversize message, ...) and failed the connection.
            self.close_reason = str(self.wasNotCleanReason or reason or code)
            self._log.warn(
                "Closing WebSocket connection from {ip}: {reason}",
                ip=self.client[0],
                reason=self.close_reason,
            )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closing = True
        super().connectionLost(reason)
        # autobahn leaves its close-handshake timer running (it finds the
        # connection closed when it fires); cancel it so nothing keeps this
        # connection alive after it ended.
        timer = getattr(self, "closeHandshakeTimeoutCall", None)
        if timer is not None and timer.active():
            timer.cancel()
        self._end_handshake()
        if self._admitted:
            self._admitted = False
            self.factory.release(self)
        inner, self.inner = self.inner, None
        if inner is not None and self._inner_connected:
            self._inner_connected = False
            inner.connectionLost(reason)

    # -- messages in ---------------------------------------------------------

    def onMessageBegin(self, isBinary: bool) -> None:
        super().onMessageBegin(isBinary)
        self._binary = isBinary
        self._first_frame = True
        self._size = 0
        self._parts = None
        self._mode = _IGNORE

    def onMessageFrameBegin(self, length: int) -> None:
        # autobahn's size checks; they fail the connection when exceeded.
        super().onMessageFrameBegin(length)
        first, self._first_frame = self._first_frame, False
        self._size += length
        if self.failedByMe or not self._binary:
            self._mode = _IGNORE
            return
        if first and self.current_frame.fin:
            if length:
                self._mode = _STREAM
                self._to_inner(encode_header(length))
            return
        if self._size > min(MAX_REASSEMBLED, MAX_ENCODABLE):
            self._mode = _IGNORE
            self._fail(f"fragmented message of more than {MAX_REASSEMBLED} bytes")
            return
        self._mode = _COLLECT
        if self._parts is None:
            self._parts = bytearray()

    def onMessageFrameData(self, payload: bytes) -> None:
        mode = self._mode
        if mode == _STREAM:
            self._to_inner(payload)
        elif mode == _COLLECT and self._parts is not None:
            self._parts += payload

    def onMessageFrameEnd(self) -> None:
        pass

    def onMessageEnd(self) -> None:
        if self.failedByMe:
            return
        if not self._binary or not self._size:
            self.on_nonbinary(self._binary)
        elif self._mode == _COLLECT and self._parts is not None:
            data = bytes(self._parts)
            self._parts = None
            self._to_inner(encode_header(len(data)) + data)
        self._mode = _IGNORE

    def onPing(self, payload: bytes) -> None:
        if self._splitter.between_frames:
            super().onPing(payload)
        else:
            # A pong now would land inside the frame being streamed out.
            self._pongs.append(payload)
        self.on_ping()

    def _to_inner(self, data: bytes | memoryview) -> None:
        inner = self.inner
        if inner is not None and self._inner_connected and not self.closing:
            # A view from the fast path: relay legs take any buffer.
            inner.dataReceived(data)  # type: ignore[arg-type]

    def _fail(self, reason: str) -> None:
        self.close_reason = reason
        self._log.warn(
            "Closing WebSocket connection from {ip}: {reason}", ip=self.client[0], reason=reason
        )
        self.closing = True
        self.raw.abortConnection()

    # -- the fast path for binary frames ------------------------------------

    def start_fast_path(self) -> None:
        """From the next frame boundary on, read single-frame binary messages here.

        L{BinaryFrameReader} (C{fastpath.py}) takes those frames and passes
        each to the inner protocol as a L{_STREAM} message would go (header,
        then payload as it is read); at any other frame it hands the bytes
        back to autobahn, which parses that frame and every later one until
        it is between messages again.
        """
        if not self.factory.fast_path or self._reader is not None:
            return
        if self.state != WebSocketProtocol.STATE_OPEN:
            return
        if not all(hasattr(self, n) for n in _AUTOBAHN_PARSER_STATE):
            return  # an autobahn that keeps its parser state otherwise: stay on its path
        limits = [
            int(getattr(self, "maxMessagePayloadSize", 0)),
            int(getattr(self, "maxFramePayloadSize", 0)),
            MAX_ENCODABLE,
        ]
        self._reader = BinaryFrameReader(min(x for x in limits if x > 0))
        # autobahn now only ever sees AUTOBAHN_SLICE bytes at a time: reads
        # may be as large as the inner protocol asks.
        self.set_read_size(self._read_size)

    def set_read_size(self, size: int) -> None:
        """Read up to C{size} bytes at a time (at most L{MAX_READ} until the fast
        path is on)."""
        self._read_size = size
        t = self.raw
        if hasattr(t, "bufferSize"):
            t.bufferSize = size if self._reader is not None else min(size, MAX_READ)

    def _read_fast(self, data: bytes) -> None:
        """A read with the fast path on: the reader takes what it can, autobahn
        the rest, L{AUTOBAHN_SLICE} bytes at a time.

        autobahn copies the rest of its buffer at every frame boundary: given
        a whole read of tiny frames, it would copy about the square of the
        read's size.  In slices, that stays what it was with small reads, and
        its frames come in the order they arrived (at a frame boundary it
        hands the rest of its slice back here, through L{processData}).
        """
        reader = self._reader
        assert reader is not None
        view = memoryview(data)
        pos = 0
        end = len(data)
        while pos < end:
            # The reader finishes a frame it began even if the connection is
            # closing meanwhile (autobahn would parse its middle as a header).
            if reader.remaining or (
                self.state == WebSocketProtocol.STATE_OPEN
                and not (
                    self._autobahn_next
                    or self.data
                    or self.current_frame is not None
                    or self.inside_message
                )
            ):
                pos += reader.feed(view[pos:], self)
                if pos < end:
                    self._autobahn_next = True
            elif self.state in _READING_STATES:
                pos = self._to_autobahn(view, pos)
            else:
                return

    def _to_autobahn(self, view: memoryview, pos: int) -> int:
        end = min(len(view), pos + AUTOBAHN_SLICE)
        self._dataReceived(bytes(view[pos:end]))
        return end

    def processData(self) -> bool:
        """autobahn parses one frame (or part of one) per call: the fast path takes
        over whenever autobahn is between messages with the fast path on."""
        reader = self._reader
        if reader is None or self.current_frame is not None or self.inside_message:
            return bool(super().processData())
        if self._autobahn_next and not reader.remaining:
            more = bool(super().processData())
            if self.current_frame is not None:
                self._autobahn_next = False  # autobahn has its frame's header
            return more
        data = self.data
        if not data:
            return False
        self.data = b""
        pos = reader.feed(data, self)
        if pos == len(data):
            return False
        self.data = data[pos:]
        self._autobahn_next = True
        return True

    def accepts_frame(self) -> bool:
        return self.state == WebSocketProtocol.STATE_OPEN and not self.closing

    def binary_begin(self, length: int) -> bytes:
        return encode_header(length)

    def binary_data(self, data: memoryview) -> None:
        self._to_inner(data)

    # -- what subclasses decide -------------------------------------------------

    def on_nonbinary(self, binary: bool) -> None:
        """A text message, or an empty binary one, arrived (nothing was passed on)."""

    def on_ping(self) -> None:
        """A ping arrived (autobahn answered it)."""

    # -- bytes out ---------------------------------------------------------------

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Every byte autobahn writes: straight to the socket when nothing is queued.

        Twisted's C{write} waits for the next reactor turn; a relayed stream
        then stalls a turn per read, and autobahn's own C{sendData} formats a
        debug line per call.  As a TCP relay leg does (C{fast_write}), send
        at once when the transport's buffer is empty (the byte order holds)
        and queue only the rest.
        """
        if sync or chopsize or self.send_queue:
            super().sendData(data, sync, chopsize)
            return
        t = self.raw
        sock = self._sock
        if sock is not None and output_idle(t) and t.connected and not t.disconnecting:
            try:
                sent = sock.send(data)
            except OSError:  # EAGAIN, or an error the transport will see itself
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        t.write(data)

    # -- frames out ------------------------------------------------------------

    def send_frames(self, data: Chunk) -> None:
        """The inner protocol wrote C{data}: BytesCodec frames, each a message out."""
        if self.state != WebSocketProtocol.STATE_OPEN:
            return
        # Views, not copies: all of it goes out in one sendmsg before this
        # returns, or is copied if it must wait.
        self._splitter.feed(memoryview(data), self)
        self._flush_out()

    # Each BytesCodec frame goes out as one binary WebSocket frame, FIN set,
    # written here rather than through autobahn's message API: that API
    # sends the length before the payload only in a frame without FIN, then
    # an empty frame to end the message (one more send per message), and
    # sendMessage joins header and payload into a copy.  The headers and
    # payloads of one write are gathered into a single sendmsg.  autobahn's
    # own frames (pong, close) never land inside one of these: what is
    # gathered goes first, pongs wait for the frame's end (onPing) and a
    # close in mid-frame is a TCP close.

    def whole(self, payload: Chunk) -> None:
        if not payload:
            if self.forward_empty:
                self._flush_out()
                self.sendMessage(b"", isBinary=True)  # type: ignore[no-untyped-call]
            return
        self._gather(frame_header(len(payload)))
        self._gather(payload)

    def begin(self, length: int) -> None:
        self._header_out = frame_header(length)

    def part(self, data: Chunk) -> None:
        if self._header_out:
            self._gather(self._header_out)
            self._header_out = b""
        self._gather(data)

    def end(self) -> None:
        if self._pongs:
            self._flush_out()
            pongs, self._pongs = self._pongs, []
            for payload in pongs:
                self.sendPong(payload)  # type: ignore[no-untyped-call]

    def _gather(self, data: Chunk) -> None:
        out = self._out
        out.append(data)
        self._out_len += len(data)
        if len(out) >= _MAX_GATHER:
            self._flush_out()

    def _flush_out(self) -> None:
        """Send what was gathered: at once when nothing is queued, else queue a copy."""
        out = self._out
        if not out:
            return
        total = self._out_len
        self._out = []
        self._out_len = 0
        if self.state != WebSocketProtocol.STATE_OPEN:
            return
        if self.send_queue:
            # Behind autobahn's chopped or synchronous writes (we make none).
            self.sendData(b"".join(out))
            return
        t = self.raw
        sock = self._sock
        if sock is not None and output_idle(t) and t.connected and not t.disconnecting:
            try:
                sent = sock.sendmsg(out)
            except OSError:  # EAGAIN, or an error the transport will see itself
                sent = 0
            if sent == total:
                return
            if sent:
                out = chunks_after(out, sent)
        t.write(b"".join(out))

    # -- closing from the inner protocol -----------------------------------

    def close_from_inner(self, abort: bool) -> None:
        """The inner protocol closed its transport."""
        if self.closing:
            return
        self.closing = True
        if abort:
            self.raw.abortConnection()
        elif self.state != WebSocketProtocol.STATE_OPEN:
            self.raw.loseConnection()
        elif self._splitter.between_frames:
            # A close frame behind what is queued; the connection ends when
            # the peer answers it or after the factory's close timeout.
            self.sendClose(code=WebSocketProtocol.CLOSE_STATUS_CODE_NORMAL)
        else:
            # In the middle of a frame there is no clean end: only the TCP one.
            self.raw.loseConnection()
