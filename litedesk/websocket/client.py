# -*- test-case-name: tests.test_websocket_litedesk -*-
"""The peers' side of WebSocket: a host or viewer whose server is reachable only as C{ws(s)://}.

A LiteDesk host or viewer started with C{--websocket} (or given a C{ws://} /
C{wss://} server) opens every connection to the server over WebSocket: the
host's registration stream, the short request connections, and the relay
legs (docs/websocket.rst §7).  This module has what that needs besides the
rendezvous and relay logic, which stays in L{litedesk.session.links}:

- where things are (sans-IO): L{WsUrl}, L{parse_ws_url}, L{check_ws}
  (RustDesk's rule for a C{HOST[:PORT]}) and L{WebSocketServer} (the
  rendezvous URL and the relay URL for each relay name);
- TLS for C{wss://}: the system's CAs, or the certificates of C{--ws-ca};
  there is no way to turn verification off (L{client_tls});
- how a byte stream becomes messages (sans-IO): L{FramedShaper} for
  rendezvous connections (one BytesCodec frame per message, as RustDesk),
  L{RelayLegShaper} for relay legs (below);
- L{dial}: an autobahn client connection carrying any Twisted protocol.

Relay legs.  After its C{RequestRelay} message a LiteDesk leg carries the
session's raw byte stream, each binary message a chunk of it.  The relay
forwards messages unchanged between two WebSocket legs, but frames them for
a TCP partner (hbbr's rule), so the two ends recognise each other's leg from
the first message (docs/websocket.rst §7.3):

- the host's first message is its C{SignedId} frame written so that it is at
  once a chunk of the raw stream (a BytesCodec frame) and a bare C{Message}
  (L{dual_first_message}), which a RustDesk client reads as RustDesk hosts
  send it;
- a viewer that receives a bare C{SignedId} instead (the relay took the
  frame header off a TCP leg) puts the header back; from a RustDesk host it
  then carries one frame per message both ways, as RustDesk peers do;
- a host whose partner answers with a bare C{Message} (a RustDesk client)
  likewise carries one frame per message; one that answers with a TLS record
  is a LiteDesk viewer and stays with chunks.

The TCP side of a mixed pair is in L{litedesk.session.links}.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from google.protobuf.message import DecodeError
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.proto import message_pb2
from litedesk.wire.address import DEFAULT_RENDEZVOUS_PORT, parse_host_port
from litedesk.wire.bytescodec import FrameDecoder, FrameError, encode_frame

__all__ = [
    "DEFAULT_RELAY_PORT",
    "MAX_CHUNK",
    "MAX_CLIENT_MESSAGE",
    "MAX_RELAY_MESSAGE",
    "MAX_RENDEZVOUS_MESSAGE",
    "FramedShaper",
    "RelayLegShaper",
    "ShapeError",
    "WebSocketError",
    "WebSocketServer",
    "WsUrl",
    "check_ws",
    "classify_first_message",
    "client_tls",
    "dial",
    "dual_first_message",
    "frame_header",
    "is_ws_url",
    "load_ca_file",
    "parse_ws_url",
]

#: RustDesk's relay port (hbbr), the default of a relay name without one.
DEFAULT_RELAY_PORT = 21117
#: Largest message accepted on a rendezvous connection (the server's --max-frame).
MAX_RENDEZVOUS_MESSAGE = 64 * 1024
#: Largest message accepted on a relay leg (the relay's --ws-max-message):
#: a RustDesk host sends a video frame as one message.
MAX_RELAY_MESSAGE = 16 * 1024 * 1024
#: Largest chunk of a LiteDesk session stream in one message (or, behind a
#: TCP leg, one frame): writes are cut to this size, and a leg accepts no
#: larger chunk, so a partner that has not authenticated yet can make a leg
#: hold at most this much (docs/websocket.rst §7.5).
MAX_CHUNK = 64 * 1024
#: Largest message a host's leg accepts from a RustDesk client (one frame per
#: message): a clipboard of up to 1 MiB, and some.
MAX_CLIENT_MESSAGE = 1024 * 1024 + 64 * 1024
#: Largest frame a leg holds while it waits for the rest (the preamble, the
#: host's SignedId): the session's own pre-handshake bound.
MAX_FIRST_FRAME = 64 * 1024
#: Seconds for TCP, TLS and the opening handshake together.
CONNECT_TIMEOUT = 10.0
#: Seconds for the closing handshake before the TCP connection is dropped.
CLOSE_TIMEOUT = 1.0

TLS_HANDSHAKE_RECORD = 0x16  # the first byte of a ClientHello (and of a ServerHello)

_log = Logger(namespace="litedesk.websocket.client")


class WebSocketError(Exception):
    """A WebSocket connection could not be opened; the message says why."""


class ShapeError(ValueError):
    """Bytes that cannot be carried as messages (a broken frame, an oversize one)."""


# -- where things are ------------------------------------------------------------


@dataclass(frozen=True)
class WsUrl:
    """A C{ws://} or C{wss://} URL: scheme, host, port and path (no query)."""

    secure: bool
    host: str
    port: int
    path: str = "/"

    def __str__(self) -> str:
        scheme = "wss" if self.secure else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{scheme}://{host}{port}{self.path}"

    def with_path(self, path: str) -> WsUrl:
        return replace(self, path=path)


_URL = re.compile(r"(?i)^(wss?)://(\[[^\]/]*\]|[^:/\[\]?#@]+)(?::(\d{1,5}))?(/[^?#]*)?$")


def is_ws_url(text: str) -> bool:
    """Whether C{text} is meant as a WebSocket URL (RustDesk's C{is_ws_endpoint})."""
    return text.strip().lower().startswith(("ws://", "wss://"))


def parse_ws_url(text: str) -> WsUrl:
    """C{ws[s]://host[:port][/path]}; IPv6 hosts in brackets.

    @raise ValueError: another scheme, user info, a query or fragment, an
        empty host or a port outside 1..65535.
    """
    m = _URL.match(text.strip())
    if m is None:
        raise ValueError(f"not a ws:// or wss:// URL: {text.strip()[:100]!r}")
    scheme, host, port_text, path = m.groups()
    secure = scheme.lower() == "wss"
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad IPv6 address in {text.strip()[:100]!r}") from None
    port = int(port_text) if port_text else (443 if secure else 80)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not in 1..65535")
    return WsUrl(secure, host.lower(), port, path or "/")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_ws(host: str, port: int, *, relay: bool) -> WsUrl:
    """RustDesk's rule for a server given as C{HOST:PORT} in WebSocket mode.

    hbb_common C{websocket.rs} C{check_ws}: an IP address keeps its host and
    takes the port + 2 (rendezvous P -> P+2, relay R -> R+2) over plain
    C{ws://}; a name goes to the reverse proxy's paths C{/ws/id} and
    C{/ws/relay} on the default port.  RustDesk uses C{wss://} for a name
    only when its API server is C{https://}; LiteDesk has no API server and
    always uses C{wss://} for a name (docs/websocket.rst §7.1).
    """
    if _is_ip(host):
        return WsUrl(False, host, port + 2, "/")
    return WsUrl(True, host.lower(), 443, "/ws/relay" if relay else "/ws/id")


def _relay_path(path: str) -> str:
    """The relay's path next to a rendezvous path: C{/ws/id} -> C{/ws/relay}."""
    if path in ("", "/"):
        return "/ws/relay"
    head, _, _ = path.rstrip("/").rpartition("/")
    return f"{head}/relay"


@dataclass(frozen=True)
class WebSocketServer:
    """Where a peer in WebSocket mode finds its rendezvous server and relays.

    @ivar rendezvous: the rendezvous server's URL.
    @ivar relay: the default relay's URL (no relay named, or the server's own).
    @ivar host: the server's host, and C{port} its rendezvous port P, as a
        C{HOST[:PORT]} names them (for a URL: its host and P = 21116).
    @ivar from_url: the option was a URL (so relays named by the server with
        this URL's host are found behind it, see L{relay_for}).
    """

    rendezvous: WsUrl
    relay: WsUrl
    host: str
    port: int
    from_url: bool

    @classmethod
    def from_option(cls, text: str) -> WebSocketServer:
        """From C{--rendezvous}: a URL, or a C{HOST[:PORT]} mapped with L{check_ws}.

        A URL whose path is C{/} (or empty) is a reverse proxy's front: the
        rendezvous server is its C{/ws/id} and the relay its C{/ws/relay}.
        Any other path is the rendezvous server's, and the relay's path is
        the same with its last segment replaced by C{relay}.

        @raise ValueError: neither form.
        """
        if is_ws_url(text):
            url = parse_ws_url(text)
            if url.path in ("", "/"):
                rendezvous = url.with_path("/ws/id")
                relay = url.with_path("/ws/relay")
            else:
                rendezvous = url
                relay = url.with_path(_relay_path(url.path))
            return cls(rendezvous, relay, url.host, DEFAULT_RENDEZVOUS_PORT, True)
        host, port = parse_host_port(text, DEFAULT_RENDEZVOUS_PORT)
        return cls(
            check_ws(host, port, relay=False),
            check_ws(host, port + 1, relay=True),
            host,
            port,
            False,
        )

    def relay_name(self) -> str:
        """How a host names its default relay to the viewer (C{RelayResponse.relay_server}).

        For a C{HOST[:PORT]} server the name peers use without WebSocket
        (host:P+1), which each side maps by its own mode as RustDesk does;
        for a URL the relay's URL, which RustDesk clients take as it is.
        """
        if self.from_url:
            return str(self.relay)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port + 1}"

    def relay_for(self, name: str) -> WsUrl:
        """The URL of the relay a push, an answer or C{--relay-server} names.

        Empty: the default relay.  A URL: itself.  C{HOST[:PORT]}: L{check_ws}
        (port 21117 by default), except that a server given as a URL finds a
        relay on its own host behind that URL, since a relay name cannot say
        which port or path a proxy uses.

        @raise ValueError: a name that is neither.
        """
        name = name.strip()
        if not name:
            return self.relay
        if is_ws_url(name):
            return parse_ws_url(name)
        host, port = parse_host_port(name, DEFAULT_RELAY_PORT)
        if self.from_url and host.lower().rstrip(".") == self.host:
            return self.relay
        return check_ws(host, port, relay=True)


# -- TLS --------------------------------------------------------------------------


def load_ca_file(path: str) -> list[Certificate]:
    """The certificates of a PEM file (C{--ws-ca}).

    @raise ValueError: the file cannot be read or holds no certificate.
    """
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    blocks = re.findall(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, flags=re.DOTALL
    )
    certs: list[Certificate] = []
    for block in blocks:
        try:
            certs.append(Certificate.loadPEM(block))
        except Exception as e:
            raise ValueError(f"{path}: a certificate does not load ({e})") from None
    if not certs:
        raise ValueError(f"{path} holds no PEM certificate")
    return certs


def client_tls(url: WsUrl, ca_file: str | None = None) -> IOpenSSLClientConnectionCreator | None:
    """TLS client options for C{url}: None for C{ws://}.

    The server's certificate must chain to the system's CAs, or with
    C{ca_file} to one of its certificates (a private CA, a self-signed
    server), and name the URL's host.  Nothing turns the check off.
    """
    if not url.secure:
        return None
    if ca_file:
        root = trustRootFromCertificates(load_ca_file(ca_file))  # type: ignore[no-untyped-call]
        return optionsForClientTLS(url.host, trustRoot=root)
    return optionsForClientTLS(url.host)


# -- streams as messages (sans-IO) ---------------------------------------------------


class Shaper(Protocol):
    """Turns what the inner protocol writes into messages, and messages into its input.

    C{max_message} is the largest message it takes now (it may change after
    a message).
    """

    max_message: int

    def outgoing(self, data: bytes) -> list[bytes]: ...

    def incoming(self, message: bytes) -> bytes: ...


def frame_header(buf: bytes | bytearray) -> tuple[int, int] | None:
    """(header length, payload length) of the BytesCodec frame that C{buf} starts with.

    None while the header is incomplete.  Longer headers than needed are
    read as RustDesk's decoder reads them (the low two bits say how long).
    """
    if not buf:
        return None
    size = (buf[0] & 0x03) + 1
    if len(buf) < size:
        return None
    return size, int.from_bytes(buf[:size], "little") >> 2


class FramedShaper:
    """A rendezvous connection: one BytesCodec frame per message, as RustDesk sends.

    An empty frame (a keep-alive) is an empty message and the other way round.
    """

    def __init__(self, max_message: int = MAX_RENDEZVOUS_MESSAGE) -> None:
        self.max_message = max_message
        self._decoder = FrameDecoder(max_message)

    def outgoing(self, data: bytes) -> list[bytes]:
        try:
            return self._decoder.feed(data)
        except FrameError as e:
            raise ShapeError(f"cannot send: {e}") from None

    def incoming(self, message: bytes) -> bytes:
        return encode_frame(message)


def _parse_message(data: bytes) -> message_pb2.Message | None:
    msg = message_pb2.Message()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError):
        return None
    return msg


def _offers_tls(msg: message_pb2.Message) -> bool:
    """The LiteDesk mark in a SignedId's IdPk (read unverified: it only picks framing)."""
    body = msg.signed_id.id[64:]
    idpk = message_pb2.IdPk()
    try:
        idpk.ParseFromString(body)
    except (DecodeError, RecursionError, ValueError):
        return False
    return bool(idpk.litedesk_tls)


#: What the first relayed message from a host says about its leg.
CHUNK = "chunk"  # a chunk of the raw stream that starts with the SignedId frame
FRAMED_LITEDESK = "framed-litedesk"  # a bare SignedId with LiteDesk's mark
FRAMED_RUSTDESK = "framed-rustdesk"  # a bare SignedId without it: a RustDesk host
UNKNOWN = "unknown"


def classify_first_message(message: bytes) -> str:
    """How a host's first relayed message (or a TCP leg's first frame payload) is framed.

    L{CHUNK}: the message is exactly one BytesCodec frame whose payload is
    a C{Message{signed_id}}: the host's leg is a WebSocket carrying the raw
    stream.  L{FRAMED_LITEDESK} / L{FRAMED_RUSTDESK}: the message itself is
    the C{Message}: the relay took the frame header off (a TCP leg), or a
    RustDesk host sent one message per frame.  The first test comes first
    because L{dual_first_message} passes both; a bare C{SignedId} never
    passes the first (its first byte announces a three-byte header and
    more than 160 KiB).
    """
    head = frame_header(message)
    if head is not None and head[1] > 0 and head[0] + head[1] == len(message):
        inner = _parse_message(message[head[0] :])
        if inner is not None and inner.WhichOneof("union") == "signed_id":
            return CHUNK
    msg = _parse_message(message)
    if msg is not None and msg.WhichOneof("union") == "signed_id":
        return FRAMED_LITEDESK if _offers_tls(msg) else FRAMED_RUSTDESK
    return UNKNOWN


# A length-delimited field of a number no message of RustDesk's uses; every
# protobuf parser skips it.
_PAD_TAG = bytes([0xC2, 0x3E])  # field 1000, wire type 2


def _pad_field(size: int) -> bytes:
    return _PAD_TAG + bytes([size - 3]) + bytes(size - 3)


def _tag_value_size(n: int) -> int | None:
    """Bytes that a two-byte frame header for C{n}, read as a protobuf tag, makes a
    parser skip after it as the field's value; None when that tag is unusable.

    The header is C{((n << 2) | 1)} in two little-endian bytes.  Its first
    byte's wire type is 5 (fixed32, 4 bytes) for an odd C{n} and 1 (fixed64,
    8 bytes) for an even one.  Below 0x80 the first byte is the whole tag and
    the second is the value's first byte; from 0x80 on the tag is a two-byte
    varint (the second byte must then end it, below 0x80) and the value
    follows the header.  The field number must not be 0.
    """
    b0, b1 = ((n << 2) | 1) & 0xFF, n >> 6
    value = 4 if n % 2 else 8
    if b0 < 0x80:
        return value - 1 if b0 >> 3 else None
    if b1 >= 0x80:
        return None
    return value if ((b0 & 0x7F) >> 3) | (b1 << 4) else None


def dual_first_message(payload: bytes) -> bytes:
    """The host's C{SignedId} as one message two kinds of reader understand.

    A LiteDesk peer reads the raw stream: the message must be a BytesCodec
    frame.  A RustDesk client reads one C{Message} per WebSocket message (or
    per frame, behind a TCP leg): the message must parse as C{payload}.  So
    the frame gets a two-byte header which, read as protobuf, is the tag of
    a fixed32 or fixed64 field (L{_tag_value_size}); the bytes that field's
    value swallows are a padding field of exactly that size.  Both the
    frame's payload (padding, C{payload}) and the whole message then parse
    as C{payload} plus unknown fields, which every protobuf parser skips
    (rust-protobuf matches whole tags, so a known field number with another
    wire type is unknown too).  Further 4-byte padding fields move the
    length off values whose tag would be unusable.  A payload that fits no
    such header is sent as a plain frame.
    """
    for extra in range(4):
        for first in (3, 4, 7, 8):
            n = first + 4 * extra + len(payload)
            if n >= 1 << 14 or _tag_value_size(n) != first:
                continue
            padding = _pad_field(first) + _pad_field(4) * extra
            return ((n << 2) | 1).to_bytes(2, "little") + padding + payload
    return encode_frame(payload)


#: How a relay leg's session stream travels (L{RelayLegShaper.mode}).
CHUNKS = "chunks"  # each message a chunk of the raw stream
MESSAGES = "messages"  # each message one frame's payload (RustDesk peers)


class RelayLegShaper:
    """A relay leg: the C{RequestRelay} message, then the session (see the module).

    @param role: C{"host"} or C{"viewer"}.
    @ivar mode: L{CHUNKS}, L{MESSAGES}, or None until the partner's first message.
    @ivar partner: what the partner's first message said (L{classify_first_message}
        for a viewer; C{"tls"} or C{"rustdesk"} for a host), or None.
    @ivar max_message: L{MAX_CHUNK}, except one frame per message from a
        RustDesk peer: L{MAX_CLIENT_MESSAGE} on a host, L{MAX_RELAY_MESSAGE}
        on a viewer (video).
    """

    def __init__(self, role: str) -> None:
        if role not in ("host", "viewer"):
            raise ValueError(f"role must be host or viewer, not {role!r}")
        self.role = role
        self.mode: str | None = None
        self.partner: str | None = None
        self.max_message = MAX_CHUNK
        self._pending = bytearray()
        # Frames still to be sent whole: the RequestRelay, then the host's
        # SignedId (unless the partner speaks first: then there is none).
        self._whole = 2 if role == "host" else 1
        self._frames = FrameDecoder(MAX_RELAY_MESSAGE)

    def outgoing(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self._whole:
            self._pending += data
            data = b""
            while self._whole:
                payload = self._take_frame()
                if payload is None:
                    return out
                if self._whole == 2 or self.role == "viewer":
                    out.append(payload)  # RequestRelay: the relay reads one message, no header
                else:
                    out.append(dual_first_message(payload))
                self._whole -= 1
        if self._pending:
            data = bytes(self._pending) + data
            self._pending.clear()
        if not data:
            return out
        if self.mode == MESSAGES:
            try:
                out.extend(f for f in self._frames.feed(data) if f)
            except FrameError as e:
                raise ShapeError(f"cannot send: {e}") from None
        else:
            out.extend(data[i : i + MAX_CHUNK] for i in range(0, len(data), MAX_CHUNK))
        return out

    def _take_frame(self) -> bytes | None:
        head = frame_header(self._pending)
        if head is None:
            return None
        size, length = head
        if length > MAX_FIRST_FRAME:
            raise ShapeError(f"a leg's first frames are at most {MAX_FIRST_FRAME} bytes")
        end = size + length
        if len(self._pending) < end:
            return None
        payload = bytes(self._pending[size:end])
        del self._pending[:end]
        return payload

    def incoming(self, message: bytes) -> bytes:
        if not message:
            return b""  # never relayed; a stray one must not decide anything
        if self.mode is None:
            return self._first(message)
        if self.mode == MESSAGES:
            return encode_frame(message)
        return message

    def _first(self, message: bytes) -> bytes:
        if self.role == "host":
            if self._whole == 1:
                self._whole = 0  # the partner spoke first: our session sends no SignedId
            if message[0] == TLS_HANDSHAKE_RECORD:
                self.partner, self.mode = "tls", CHUNKS  # a LiteDesk viewer's ClientHello
                return message
            self.partner, self.mode = "rustdesk", MESSAGES  # a RustDesk client's Message
            self.max_message = MAX_CLIENT_MESSAGE
            return encode_frame(message)
        self.partner = classify_first_message(message)
        if self.partner == FRAMED_RUSTDESK:
            self.mode = MESSAGES
            self.max_message = MAX_RELAY_MESSAGE
            return encode_frame(message)
        self.mode = CHUNKS
        if self.partner == FRAMED_LITEDESK:
            # A LiteDesk host on a TCP leg: the relay took the header off its
            # SignedId frame; from our answer on it frames its stream for us
            # (litedesk.session.links.PartnerFraming), which the relay unframes.
            return encode_frame(message)
        return message


# -- the connection ------------------------------------------------------------------


class _ExactTimer:
    """autobahn's timer interface on plain C{callLater}: its batched timers
    leave a reactor call behind after their last timeout is cancelled."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock

    def call_later(self, delay: float, fn: Any, *args: Any, **kwargs: Any) -> IDelayedCall:
        return self._clock.callLater(delay, fn, *args, **kwargs)


@implementer(ITransport, IConsumer, IPushProducer)
class WsStreamTransport:
    """The inner protocol's transport: writes become messages through the shaper.

    C{transport} is the connection below (TCP, or TLS over TCP), so code
    that measures a session's send backlog walks down to the socket through
    it; producers register there too.
    """

    def __init__(self, proto: WsClientProtocol) -> None:
        self._proto = proto

    @property
    def transport(self) -> Any:
        return self._proto.transport

    @property
    def disconnecting(self) -> bool:
        return self._proto.closing

    @property
    def connected(self) -> bool:
        return not self._proto.closing

    def write(self, data: bytes) -> None:
        self._proto.send_stream(bytes(data))

    def writeSequence(self, data: Any) -> None:
        self._proto.send_stream(b"".join(data))

    def loseConnection(self) -> None:
        self._proto.close_from_inner()

    def abortConnection(self) -> None:
        self._proto.abort()

    def getPeer(self) -> IAddress:
        return self._proto.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        return self._proto.transport.getHost()  # type: ignore[union-attr]

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._proto.transport.registerProducer(producer, streaming)  # type: ignore[union-attr]

    def unregisterProducer(self) -> None:
        self._proto.transport.unregisterProducer()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self._proto.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self._proto.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        self._proto.abort()


class WsClientProtocol(WebSocketClientProtocol):
    """One client WebSocket connection carrying C{inner} (see L{dial})."""

    _ws_log = Logger()

    def __init__(self, inner: IProtocol, shaper: Shaper, url: WsUrl) -> None:
        super().__init__()
        self.inner = inner
        self.shaper = shaper
        self.url = url
        self.opened: Deferred[WsClientProtocol] = Deferred()
        self.closing = False
        self._inner_connected = False
        self._lost: Failure | None = None

    def onOpen(self) -> None:
        self._inner_connected = True
        self.inner.makeConnection(WsStreamTransport(self))
        if not self.opened.called:
            self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # Text and pings carry nothing for us (autobahn answers pings).
        if not isBinary or self.closing:
            return
        try:
            data = self.shaper.incoming(payload)
        except ShapeError as e:
            self._fail(str(e))
            return
        # autobahn reads its limits per frame: the shaper's takes effect now.
        self.maxMessagePayloadSize = self.maxFramePayloadSize = self.shaper.max_message
        if data:
            self.inner.dataReceived(data)

    def send_stream(self, data: bytes) -> None:
        if self.closing or self.state != WebSocketProtocol.STATE_OPEN:
            return
        try:
            messages = self.shaper.outgoing(data)
        except ShapeError as e:
            self._fail(str(e))
            return
        for m in messages:
            self.sendMessage(m, isBinary=True)  # type: ignore[no-untyped-call]

    def close_from_inner(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendClose(code=1000)
        elif self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        self.closing = True
        t: Any = self.transport
        if t is not None:
            t.abortConnection()

    def _fail(self, reason: str) -> None:
        self._ws_log.warn("Closing WebSocket {url}: {reason}", url=str(self.url), reason=reason)
        self.abort()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # autobahn's onClose only says "closed uncleanly"; keep the real
        # reason (a certificate that does not verify) for the error message.
        self._lost = reason
        super().connectionLost(reason)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.closing = True
        if not self.opened.called:
            self.opened.errback(WebSocketError(self._why(code, reason)))
            return
        if self._inner_connected:
            self._inner_connected = False
            lost = ConnectionDone("WebSocket closed") if wasClean else ConnectionLost(str(reason))
            self.inner.connectionLost(Failure(lost))  # type: ignore[no-untyped-call]

    def _why(self, code: Any, reason: Any) -> str:
        lost = self._lost
        if lost is not None and not lost.check(ConnectionDone):  # type: ignore[no-untyped-call]
            return f"{lost.getErrorMessage()}"
        return str(reason or code or "closed during the opening handshake")


class _ClientFactory(WebSocketClientFactory):
    noisy = False

    def __init__(self, url: WsUrl, make: Callable[[], WsClientProtocol], clock: IReactorTime):
        super().__init__(str(url), useragent="LiteDesk")  # type: ignore[no-untyped-call]
        self._make = make
        # autobahn's private timer slot (if it is ever renamed, autobahn's own
        # batched timer is used and only a lingering reactor call differs).
        self._batched_timer = _ExactTimer(clock)

    def buildProtocol(self, addr: IAddress | None) -> WsClientProtocol:
        proto = self._make()
        proto.factory = self
        return proto


async def dial(
    reactor: Any,
    url: WsUrl,
    inner: IProtocol,
    shaper: Shaper,
    *,
    ca_file: str | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> WsClientProtocol:
    """Open C{url} and connect C{inner} to it through C{shaper}.

    A message larger than the shaper's C{max_message} closes the connection.

    Fires once the opening handshake is done (C{inner} is connected by
    then); fails with L{WebSocketError} saying why (refused, the
    certificate, an HTTP answer that is not an upgrade, the timeout).
    """
    factory = _ClientFactory(url, lambda: WsClientProtocol(inner, shaper, url), reactor)
    factory.setProtocolOptions(  # type: ignore[no-untyped-call]
        openHandshakeTimeout=0,  # the whole dial has one deadline, below
        closeHandshakeTimeout=CLOSE_TIMEOUT,
        maxFramePayloadSize=shaper.max_message,
        maxMessagePayloadSize=shaper.max_message,
        autoFragmentSize=0,
        failByDrop=True,
        perMessageCompressionOffers=[],
    )
    endpoint: Any = HostnameEndpoint(reactor, url.host, url.port, timeout=timeout)
    tls = client_tls(url, ca_file)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    deadline = reactor.seconds() + timeout
    connecting: Deferred[WsClientProtocol] = endpoint.connect(factory)
    connecting.addTimeout(timeout, reactor)
    try:
        proto: WsClientProtocol = await connecting
    except (CancelledError, TimeoutError):
        raise WebSocketError(f"{url}: no connection within {timeout:g} s") from None
    except Exception as e:
        raise WebSocketError(f"{url}: {e}") from None
    opened = proto.opened
    opened.addTimeout(max(0.0, deadline - reactor.seconds()), reactor)
    try:
        return await opened
    except (CancelledError, TimeoutError):
        proto.abort()
        raise WebSocketError(f"{url}: no WebSocket handshake within {timeout:g} s") from None
    except WebSocketError as e:
        raise WebSocketError(f"{url}: {e}") from None
