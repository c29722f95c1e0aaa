# -*- test-case-name: tests.test_websocket_litedesk -*-
"""How a byte stream becomes WebSocket messages for a peer (sans-IO).

L{FramedShaper} for rendezvous connections (one BytesCodec frame per
message, as RustDesk) and L{RelayLegShaper} for relay legs, with the first
message of a host's leg written to be read both ways
(L{dual_first_message}); docs/websocket.rst §7.3 and
L{litedesk.websocket.client}'s docstring.
"""

from __future__ import annotations

from typing import Protocol

from google.protobuf.message import DecodeError

from litedesk.proto import message_pb2
from litedesk.wire.bytescodec import FrameDecoder, FrameError, encode_frame

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
TLS_HANDSHAKE_RECORD = 0x16  # the first byte of a ClientHello (and of a ServerHello)


class ShapeError(ValueError):
    """Bytes that cannot be carried as messages (a broken frame, an oversize one)."""


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
