"""A stock RustDesk host, emulated for tests: the controlled side of a RustDesk session.

Written from RustDesk 1.4.9's own source and deliberately independent of LiteDesk, so that
LiteDesk's viewer can be measured against it: it imports nothing of LiteDesk but the
generated protobuf modules (never ``litedesk.session``, ``litedesk.rustdesk``,
``litedesk.wire`` or ``litedesk.screen``), and nothing of the client emulator either (its
framing, sealing and address code are written again here, so one bug cannot hide in code
both sides share).  Besides the standard library it uses PyNaCl, PyAV (the video
encoders), Pillow (the test picture) and zstandard (RustDesk's clipboard and cursor
compression).

What it does, and where RustDesk does the same:

* Registration (``src/rendezvous_mediator.rs`` ``start_udp``, ``register_peer``,
  ``register_pk``, ``handle_resp``): UDP to the rendezvous server, a timer every second;
  ``RegisterPk{id, uuid, pk}`` while the key is not confirmed (a fresh host's first
  datagram), else ``RegisterPeer{id, serial}`` every 15 s, re-sent after 3 s without an
  answer; ``request_pk`` asks for ``RegisterPk`` again; ``UUID_MISMATCH`` makes the host
  take a new id (``Config::update_id``).  L{Registrar} holds these rules on an injected
  clock.
* Pushes from the server (the same file): ``FetchLocalAddr`` (``handle_intranet``: a TCP
  connection to the server, ``LocalAddr`` with the host's end of it and the relay it would
  use, then a listener on that very address for one session), ``PunchHole``
  (``handle_punch_hole``: to the relay at once when a side is symmetric or the relay is
  forced, else ``PunchHoleSent`` and the same listener), ``RequestRelay``
  (``handle_request_relay``/``create_relay``: ``RelayResponse`` to the server, a relay leg
  with ``RequestRelay{licence_key, uuid}``, then the session on the leg, secure as the
  request says).
* The session (``src/server.rs`` ``create_tcp_connection``, ``src/server/connection.rs``):
  ``SignedId`` with a fresh X25519 key signed by the identity key, then ``PublicKey`` opens
  the session key (hbb_common ``tcp.rs`` ``Encrypt``); a client that declines (an empty
  ``Message``, an empty ``PublicKey``) gets a plaintext session, as from a stock host.
  ``Hash`` (``on_open``), ``TestDelay`` every second while none is outstanding, 30 s of
  silence closes; ``LoginRequest`` checked as ``on_message``/``check_failure`` do (the
  texts "Offline", "Wrong Password", "Please try 1 minute later", "Too many wrong
  attempts"); ``LoginResponse{peer_info}`` as ``send_logon_response_and_keep_alive`` builds
  it; the codec chosen as scrap's ``Encoder::update`` does; ``VideoFrame``\\ s of a known
  test picture (four coloured quadrants above a band with a moving bar), a key frame first,
  on ``refresh_video`` and on a codec change; input, clipboard and ``Misc`` recorded.

Not emulated: the UDP/KCP punch (``udp_port``), IPv6 paths, WebSocket and proxies, 2FA,
the click-to-approve and temporary passwords, recent-session re-login, audio, file
transfer, more than one display, switching displays and resolution changes.

Threads and blocking sockets: it runs beside a Twisted reactor or beside subprocesses.
"""

from __future__ import annotations

import contextlib
import fractions
import hashlib
import io
import os
import secrets
import select
import socket
import struct
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

import av
import zstandard
from av.video.codeccontext import VideoCodecContext
from google.protobuf.message import DecodeError
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.secret import SecretBox
from nacl.signing import SigningKey
from PIL import Image, ImageChops, ImageDraw, ImageStat

from litedesk.proto import message_pb2 as pb
from litedesk.proto import rendezvous_pb2 as rz

from .realtime import drop_realtime

__all__ = [
    "HOST_VERSION",
    "LOGIN_OFFLINE",
    "LOGIN_TOO_MANY",
    "LOGIN_TRY_LATER",
    "LOGIN_WRONG_PASSWORD",
    "FrameError",
    "FrameReader",
    "HostCodecs",
    "LoginFailures",
    "Registrar",
    "RustDeskHost",
    "SessionRecord",
    "VideoEncoder",
    "choose_codec",
    "encodable",
    "encode_frame",
    "frame_header",
    "mangle_decode",
    "mangle_encode",
    "picture_error",
    "signed_id",
    "supported_encoding",
    "test_picture",
]

# hbb_common config.rs and RustDesk's common.rs.
CONNECT_TIMEOUT = 18.0
REG_INTERVAL = 15.0
MIN_REG_TIMEOUT = 3.0
TIMER_OUT = 1.0
RENDEZVOUS_PORT = 21116
RELAY_PORT = 21117
RS_PUB_KEY = "OeVuKk5nlHiXp+APNn0Y3pC1Iwpwn44JGqrQCsWqmBw="
COMPRESS_LEVEL = 3
# connection.rs: TestDelay timer, silence limit, video send timeout.
TEST_DELAY_INTERVAL = 1.0
SESSION_IDLE = 30.0
SEND_TIMEOUT = 12.0
# The version a 1.4.9 host puts in PeerInfo, LocalAddr, PunchHoleSent, RelayResponse.
HOST_VERSION = "1.4.9"
# config.rs CHARS: salts and challenges.
PASSWORD_CHARS = "23456789abcdefghijkmnpqrstuvwxyz"
# client.rs LOGIN_MSG_*, connection.rs check_failure.
LOGIN_OFFLINE = "Offline"
LOGIN_WRONG_PASSWORD = "Wrong Password"
LOGIN_TRY_LATER = "Please try 1 minute later"
LOGIN_TOO_MANY = "Too many wrong attempts"
# RustDesk's decoder has no frame limit; a sane one keeps a broken peer from costing
# gigabytes in a test.
MAX_FRAME = 64 * 1024 * 1024
# A clipboard is decompressed up to this many bytes.
MAX_CLIPBOARD = 16 * 1024 * 1024


class FrameError(Exception):
    """A frame header announces more than the reader accepts."""


class PeerGone(Exception):
    """The peer closed or reset the stream."""


class HandshakeAbort(Exception):
    """create_tcp_connection bailed out (its texts)."""


# --- BytesCodec (hbb_common bytes_codec.rs) -------------------------------------------------


def frame_header(n: int) -> bytes:
    """The header BytesCodec writes for an C{n}-byte payload: 1-4 bytes little-endian,
    the low two bits the header length minus one, the rest the length."""
    if not 0 <= n <= 0x3FFFFFFF:
        raise FrameError(f"payload of {n} bytes cannot be framed")
    if n <= 0x3F:
        return bytes([n << 2])
    if n <= 0x3FFF:
        return ((n << 2) | 1).to_bytes(2, "little")
    if n <= 0x3FFFFF:
        return ((n << 2) | 2).to_bytes(3, "little")
    return ((n << 2) | 3).to_bytes(4, "little")


def encode_frame(payload: bytes) -> bytes:
    return frame_header(len(payload)) + payload


class FrameReader:
    """BytesCodec's decoder over a byte buffer: L{feed}, then L{pop} until None."""

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def pop(self) -> bytes | None:
        """The next whole payload, None until one is complete.

        @raise FrameError: the header announces more than C{limit} bytes.
        """
        if not self._buf:
            return None
        width = (self._buf[0] & 3) + 1
        if len(self._buf) < width:
            return None
        n = int.from_bytes(self._buf[:width], "little") >> 2
        if n > self.limit:
            raise FrameError(f"frame of {n} bytes, more than {self.limit}")
        if len(self._buf) < width + n:
            return None
        payload = bytes(self._buf[width : width + n])
        del self._buf[: width + n]
        return payload


# --- AddrMangle (hbb_common lib.rs) -------------------------------------------------------


def mangle_encode(host: str, port: int, micros: int | None = None) -> bytes:
    """AddrMangle::encode for an IPv4 address (the time-salted form, trailing zeros cut)
    or an IPv6 one (16 bytes and the port little-endian)."""
    if ":" in host:
        raw = socket.inet_pton(socket.AF_INET6, host)
        if raw[:12] != bytes(10) + b"\xff\xff":
            return raw + struct.pack("<H", port)
        host = socket.inet_ntop(socket.AF_INET, raw[12:])
    tm = (time.time_ns() // 1000 if micros is None else micros) & 0xFFFFFFFF
    ip = int.from_bytes(socket.inet_aton(host), "little")
    v = ((ip + tm) << 49) | (tm << 17) | (port + (tm & 0xFFFF))
    return v.to_bytes(16, "little").rstrip(b"\x00")


def mangle_decode(data: bytes) -> tuple[str, int]:
    """AddrMangle::decode: total, like RustDesk's (u128 arithmetic wraps as its casts do);
    more than 16 bytes but not 18 is the unspecified IPv6 address."""
    if len(data) > 16:
        if len(data) != 18:
            return ("::", 0)
        return socket.inet_ntop(socket.AF_INET6, data[:16]), int.from_bytes(data[16:], "little")
    number = int.from_bytes(data.ljust(16, b"\x00"), "little")
    tm = (number >> 17) & 0xFFFFFFFF
    ip = (((number >> 49) - tm) & 0xFFFFFFFF).to_bytes(4, "little")
    port = ((number & 0xFFFFFF) - (tm & 0xFFFF)) & 0xFFFF
    return socket.inet_ntoa(ip), port


def check_port(host: str, port: int) -> str:
    """socket_client.rs check_port (IPv4 and names): add C{port} unless one is there."""
    return host if ":" in host else f"{host}:{port}"


def increase_port(host: str, offset: int) -> str:
    """socket_client.rs increase_port: C{host:port} becomes C{host:port+offset}."""
    name, sep, port = host.partition(":")
    if sep and port.isdigit() and int(port) > 0:
        return f"{name}:{int(port) + offset}"
    return host


def _split(addr: str, default_port: int) -> tuple[str, int]:
    name, _, port = check_port(addr, default_port).rpartition(":")
    return name, int(port)


# --- the handshake's pieces (server.rs create_tcp_connection, tcp.rs) ---------------------


def signed_id(identity: SigningKey, peer_id: str, x25519_pk: bytes) -> pb.Message:
    """Message{signed_id}: IdPk{id, pk} signed in combined mode (signature, then message)."""
    idpk = pb.IdPk(id=peer_id, pk=x25519_pk).SerializeToString()
    return pb.Message(signed_id=pb.SignedId(id=bytes(identity.sign(idpk))))


def _nonce(seq: int) -> bytes:
    return struct.pack("<Q", seq) + bytes(16)


class Sealer:
    """tcp.rs Encrypt: one key, a counter per direction, both 0 at set_key."""

    def __init__(self, key: bytes) -> None:
        self._box = SecretBox(key)
        self.send_seq = 0
        self.recv_seq = 0

    def seal(self, data: bytes) -> bytes:
        self.send_seq += 1
        return self._box.encrypt(data, _nonce(self.send_seq)).ciphertext

    def open(self, data: bytes) -> bytes:
        """@raise CryptoError: "decryption error" (the stream then dies)."""
        # Encrypt::dec: payloads of at most one byte are not ciphertexts (the empty
        # Message a 1.2.4+ peer may send); they pass as they are and cost no counter.
        if len(data) <= 1:
            return data
        self.recv_seq += 1
        return self._box.decrypt(data, _nonce(self.recv_seq))


# --- codecs (libs/scrap/src/common/codec.rs Encoder::update, supported_encoding) ----------


@dataclass(frozen=True)
class HostCodecs:
    """What the emulated host's hardware and configuration allow.

    @ivar av1_test: the start-up AV1 speed test passed (option "av1-test" not "N"); then a
        client that decodes AV1 and prefers nothing gets AV1, as from a stock 64-bit host.
        Off by default: the host then behaves as one whose test failed, and sends VP9.
    @ivar h264, h265: a hardware encoder exists (hwcodec/vram); off on most machines.
    @ivar low_memory: at most 4 GB of RAM: VP8 instead of VP9/AV1 for "Auto".
    """

    av1_test: bool = False
    h264: bool = False
    h265: bool = False
    low_memory: bool = False


_PREFER = {
    pb.SupportedDecoding.VP9: "vp9",
    pb.SupportedDecoding.VP8: "vp8",
    pb.SupportedDecoding.AV1: "av1",
    pb.SupportedDecoding.H264: "h264",
    pb.SupportedDecoding.H265: "h265",
}


def choose_codec(decoding: pb.SupportedDecoding | None, host: HostCodecs) -> str:
    """Encoder::update for one client: the codec a stock host encodes with.

    No C{supported_decoding} counts as VP9 only (connection.rs update_codec_on_login).  A
    preference is used when usable (VP9 always; VP8 and AV1 when the client decodes them;
    H.264/H.265 when it decodes them and the host has a hardware encoder), else "Auto"
    decides: H.265 > H.264 > AV1 (when the AV1 test passed) > VP9, with VP8 instead of
    VP9/AV1 on a small-memory host.
    """
    d = decoding if decoding is not None else pb.SupportedDecoding(ability_vp9=1)
    usable = {
        "vp9": True,
        "vp8": d.ability_vp8 > 0,
        "av1": d.ability_av1 > 0,
        "h264": d.ability_h264 > 0 and host.h264,
        "h265": d.ability_h265 > 0 and host.h265,
    }
    auto = "av1" if usable["av1"] and host.av1_test else "vp9"
    if usable["h264"]:
        auto = "h264"
    if usable["h265"]:
        auto = "h265"
    if auto in ("vp9", "av1") and usable["vp8"] and host.low_memory:
        auto = "vp8"
    preferred = _PREFER.get(d.prefer)
    # codec.rs: a preference that is not usable (for H.26x: the client cannot decode it
    # or the host has no hardware encoder) leaves the choice to "Auto".
    return preferred if preferred is not None and usable[preferred] else auto


def supported_encoding(host: HostCodecs) -> pb.SupportedEncoding:
    """Encoder::supported_encoding on a 64-bit host (PeerInfo.encoding)."""
    return pb.SupportedEncoding(
        vp8=True,
        av1=True,
        h264=host.h264,
        h265=host.h265,
        i444=pb.CodecAbility(vp9=True, av1=True),
    )


# --- the test picture -----------------------------------------------------------------------

#: Top-left, top-right, bottom-left, bottom-right.
QUADRANTS = ((220, 40, 40), (40, 190, 60), (40, 80, 220), (235, 210, 40))
BAND = (30, 30, 30)
BAR = (250, 250, 250)


def band_height(height: int) -> int:
    return max(2, height // 8)


def test_picture(width: int, height: int, tick: int = 0) -> Image.Image:
    """Four coloured quadrants above a dark band in which a white bar moves with C{tick}.

    Everything but the band is the same in every frame (see L{picture_error}).
    """
    im = Image.new("RGB", (width, height), BAND)
    d = ImageDraw.Draw(im)
    still = height - band_height(height)
    half_w, half_h = width // 2, still // 2
    boxes = (
        (0, 0, half_w, half_h),
        (half_w, 0, width, half_h),
        (0, half_h, half_w, still),
        (half_w, half_h, width, still),
    )
    for box, colour in zip(boxes, QUADRANTS, strict=True):
        d.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=colour)
    bar = max(2, width // 16)
    x = (tick * max(1, width // 64)) % max(1, width - bar)
    d.rectangle((x, still, x + bar - 1, height - 1), fill=BAR)
    return im


def picture_error(image: Image.Image, width: int, height: int) -> float:
    """Mean absolute difference (0-255) between C{image}, scaled to the host's size, and
    the test picture, over the part that does not move."""
    box = (0, 0, width, height - band_height(height))
    got = image.convert("RGB").resize((width, height)).crop(box)
    want = test_picture(width, height).crop(box)
    stat = ImageStat.Stat(ImageChops.difference(got, want))
    return float(sum(stat.mean) / 3)


# --- video encoding (PyAV in place of libvpx/libaom/hwcodec) -------------------------------

# Options chosen to match vpxcodec.rs (realtime, no lag, no automatic key frames: RustDesk
# sets VPX_KF_DISABLED and forces key frames itself) and RustDesk's low-delay AV1/H.26x.
_ENCODERS: dict[str, tuple[tuple[str, dict[str, str]], ...]] = {
    "vp9": (
        (
            "libvpx-vp9",
            {"deadline": "realtime", "cpu-used": "7", "lag-in-frames": "0", "row-mt": "1"},
        ),
    ),
    "vp8": (("libvpx", {"deadline": "realtime", "cpu-used": "12", "lag-in-frames": "0"}),),
    "av1": (
        ("libaom-av1", {"usage": "realtime", "cpu-used": "10", "lag-in-frames": "0"}),
        ("libsvtav1", {"preset": "10", "svtav1-params": "pred-struct=1:rc=2:lp=1"}),
    ),
    "h264": (("libx264", {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1"}),),
    "h265": (("libx265", {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1"}),),
}


def _encoder_name(codec: str) -> tuple[str, dict[str, str]] | None:
    for name, options in _ENCODERS.get(codec, ()):
        try:
            av.codec.Codec(name, "w")
        except Exception:  # PyAV raises several kinds for a missing encoder
            continue
        return name, options
    return None


def encodable(codec: str) -> bool:
    """Whether this machine's PyAV can encode C{codec} ("vp9", "vp8", "av1", "h264", ...)."""
    return _encoder_name(codec) is not None


class VideoEncoder:
    """One codec's encoder for one display; L{encode} gives EncodedVideoFrame messages."""

    def __init__(self, codec: str, width: int, height: int, fps: int = 15) -> None:
        found = _encoder_name(codec)
        if found is None:
            raise ValueError(f"PyAV cannot encode {codec} here")
        name, options = found
        if name == "libsvtav1":
            # SVT-AV1 prints its banner on stderr at every start unless told otherwise.
            os.environ.setdefault("SVT_LOG", "1")
        self.codec = codec
        self.ctx = cast(VideoCodecContext, av.CodecContext.create(name, "w"))
        self.ctx.width, self.ctx.height = width, height
        self.ctx.pix_fmt = "yuv420p"  # profile 0, 8-bit 4:2:0: what every client decodes
        self.ctx.time_base = fractions.Fraction(1, 1000)
        self.ctx.framerate = fractions.Fraction(fps, 1)
        self.ctx.gop_size = 1 << 20
        self.ctx.bit_rate = 2_000_000
        self.ctx.options = dict(options)
        self.ctx.open()
        # SVT-AV1 (the AV1 encoder here) makes the process real-time when root.
        drop_realtime()

    def encode(self, image: Image.Image, *, key: bool, pts_ms: int) -> list[pb.EncodedVideoFrame]:
        frame = av.VideoFrame.from_image(image).reformat(format="yuv420p")
        frame.pts = pts_ms
        if key:
            frame.pict_type = av.video.frame.PictureType.I
        return [
            pb.EncodedVideoFrame(data=bytes(p), key=bool(p.is_keyframe), pts=pts_ms)
            for p in self.ctx.encode(frame)
        ]

    def close(self) -> None:
        """Drain the encoder (the end of stream its library expects before teardown)."""
        with contextlib.suppress(av.FFmpegError):
            self.ctx.encode(None)
        drop_realtime()


_VIDEO_FIELD = {"vp9": "vp9s", "vp8": "vp8s", "av1": "av1s", "h264": "h264s", "h265": "h265s"}


# --- login failures (connection.rs check_failure / update_failure) -----------------------


class LoginFailures:
    """Per source IP: (minute of the last failure, failures in that minute, failures in all).

    More than 30 in all refuses with "Too many wrong attempts"; more than 6 in the current
    minute with "Please try 1 minute later"; a success forgets the address.  Time is passed
    in (milliseconds since the epoch, as get_time()).
    """

    def __init__(self) -> None:
        self._map: dict[str, tuple[int, int, int]] = {}

    def refusal(self, ip: str, now_ms: int) -> str | None:
        minute, in_minute, total = self._map.get(ip, (0, 0, 0))
        if total > 30:
            return LOGIN_TOO_MANY
        if minute == now_ms // 60_000 and in_minute > 6:
            return LOGIN_TRY_LATER
        return None

    def failed(self, ip: str, now_ms: int) -> None:
        minute, in_minute, total = self._map.get(ip, (0, 0, 0))
        now_minute = now_ms // 60_000
        if minute == now_minute:
            self._map[ip] = (minute, in_minute + 1, total + 1)
        else:
            self._map[ip] = (now_minute, 1, total + 1)

    def succeeded(self, ip: str) -> None:
        self._map.pop(ip, None)


def _random_chars(n: int) -> str:
    return "".join(secrets.choice(PASSWORD_CHARS) for _ in range(n))


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=COMPRESS_LEVEL).compress(data)


def _unzstd(data: bytes, limit: int = MAX_CLIPBOARD) -> bytes:
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as r:
        return r.read(limit)


def _version(v: str) -> tuple[int, ...]:
    """hbb_common get_version_number, as a comparable tuple."""
    parts = []
    for p in v.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (3 - len(parts)))


def supports_multi_clipboard(version: str, platform: str) -> bool:
    """clipboard.rs is_support_multi_clipboard."""
    if _version(version) < (1, 3, 0) or platform in ("", "iOS"):
        return False
    return not (platform == "Android" and _version(version) < (1, 3, 3))


def clipboard_proto(text: str) -> pb.Clipboard:
    """clipboard.rs plain_to_proto: the zstd frame only when it is shorter."""
    raw = text.encode()
    packed = _zstd(raw)
    if len(packed) < len(raw):
        return pb.Clipboard(compress=True, content=packed, format=pb.ClipboardFormat.Text)
    return pb.Clipboard(compress=False, content=raw, format=pb.ClipboardFormat.Text)


def clipboard_text(cb: pb.Clipboard) -> str:
    data = _unzstd(cb.content) if cb.compress else cb.content
    return data.decode("utf-8", "replace")


def _is_direct_ip_access(username: str) -> bool:
    """common.rs is_direct_ip_access, roughly: an IP address or a host:port, not an id."""
    return "." in username or ":" in username


# --- one session ----------------------------------------------------------------------------


@dataclass
class SessionRecord:
    """What one emulated-host session saw, for assertions (lists filled as it runs)."""

    path: str
    peer: tuple[str, int]
    secure: bool
    encrypted: bool = False
    handshake: str = ""
    login_requests: list[pb.LoginRequest] = field(default_factory=list)
    login_errors: list[str] = field(default_factory=list)
    authorized: bool = False
    awaiting_approval: bool = False
    codecs: list[str] = field(default_factory=list)
    frames_sent: int = 0
    key_frames_sent: int = 0
    mouse: list[pb.MouseEvent] = field(default_factory=list)
    keys: list[pb.KeyEvent] = field(default_factory=list)
    clipboards: list[str] = field(default_factory=list)
    misc: list[pb.Misc] = field(default_factory=list)
    received: list[pb.Message] = field(default_factory=list)
    test_delays_answered: int = 0
    unparseable: int = 0
    closed_reason: str = ""
    challenge: str = ""
    bytes_sent: int = 0
    bytes_received: int = 0
    closed: threading.Event = field(default_factory=threading.Event)

    @property
    def codec(self) -> str:
        return self.codecs[-1] if self.codecs else ""

    def typed_text(self) -> str:
        """The text a stock Linux host types for the recorded KeyEvents.

        connection.rs: on Linux a press, or a down of a key that is not a modifier, is
        typed (ups only release); input_service.rs types a Seq as its text, a Unicode as
        its character and a Legacy chr as its character.  Map and Translate key codes and
        control keys are keys, not text, and are left out.
        """
        out = []
        for k in self.keys:
            which = k.WhichOneof("union")
            if not (k.press or k.down) or which is None:
                continue
            if which == "seq":
                out.append(k.seq)
            elif which == "unicode" or (which == "chr" and k.mode == pb.KeyboardMode.Legacy):
                code = getattr(k, which)
                out.append(chr(code) if code <= 0x10FFFF else "\ufffd")
        return "".join(out)


class _Link:
    """A session stream: frames, the optional secretbox, one lock for all senders."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(SEND_TIMEOUT)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = FrameReader()
        self.sealer: Sealer | None = None
        self.sent = self.received = 0
        self._lock = threading.Lock()

    def send(self, msg: pb.Message) -> None:
        data = msg.SerializeToString()
        with self._lock:
            if self.sealer is not None:
                data = self.sealer.seal(data)
            frame = encode_frame(data)
            self.sock.sendall(frame)
            self.sent += len(frame)

    def recv(self, wait: float) -> bytes | None:
        """The next payload (decrypted once a key is set), None if none came in C{wait}.

        @raise PeerGone, FrameError, CryptoError
        """
        deadline = time.monotonic() + wait
        while (payload := self.reader.pop()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                if not select.select([self.sock], [], [], left)[0]:
                    return None
                data = self.sock.recv(1 << 16)
            except (OSError, ValueError) as e:  # ValueError: closed under us (stop())
                raise PeerGone(f"connection error: {e}") from e
            if not data:
                raise PeerGone("closed by the peer")
            self.received += len(data)
            self.reader.feed(data)
        return self.sealer.open(payload) if self.sealer is not None else payload

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class HostSession:
    """One connection from create_tcp_connection to its close, on the calling thread."""

    def __init__(self, host: RustDeskHost, sock: socket.socket, record: SessionRecord) -> None:
        self.host = host
        self.link = _Link(sock)
        self.record = record
        self.challenge = record.challenge = _random_chars(6)
        self.lr = pb.LoginRequest()
        self._closed = threading.Event()
        self._want_key = threading.Event()
        self._last_test_delay: float | None = None
        self._network_delay = 0
        self._keyboard = "keyboard" not in host.permissions_off
        self._clipboard = "clipboard" not in host.permissions_off

    # -- life

    def run(self) -> None:
        try:
            if self.record.secure:
                self._handshake()
            self._on_open()
            self._loop()
        except (PeerGone, HandshakeAbort, FrameError, OSError) as e:
            self._close(str(e))
        except CryptoError:
            self._close("decryption error")
        finally:
            self._close("ended")

    def _close(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self.record.closed_reason = reason
        self.link.close()
        self.record.bytes_sent, self.record.bytes_received = self.link.sent, self.link.received
        self.record.closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _handshake(self) -> None:
        """server.rs create_tcp_connection with secure and a key pair."""
        eph = self.host.ephemeral()
        self.link.send(
            signed_id(self.host.sign_key, self.host.signed_id_for, bytes(eph.public_key))
        )
        payload = self.link.recv(CONNECT_TIMEOUT)
        if payload is None:
            raise HandshakeAbort("Failed to receive public key")
        msg = pb.Message()
        try:
            msg.ParseFromString(payload)
        except DecodeError as e:
            raise HandshakeAbort("Handshake failed: invalid message format") from e
        if msg.WhichOneof("union") != "public_key":
            # A stock host logs this and goes on without encryption.
            self.record.handshake = f"invalid message type: {msg.WhichOneof('union')}"
            return
        pk = msg.public_key
        if not pk.asymmetric_value:
            self.record.handshake = "empty public key: force to update pk"
            return
        if len(pk.asymmetric_value) != 32:
            raise HandshakeAbort("Handshake failed: invalid public sign key length from peer")
        try:
            key = Box(eph, PublicKey(pk.asymmetric_value)).decrypt(pk.symmetric_value, bytes(24))
        except CryptoError as e:
            raise HandshakeAbort("Handshake failed: box decryption failure") from e
        if len(key) != SecretBox.KEY_SIZE:
            raise HandshakeAbort("Handshake failed: invalid secret key length from peer")
        self.link.sealer = Sealer(key)
        self.record.encrypted = True
        self.record.handshake = "public key"

    def _on_open(self) -> None:
        """on_open's Hash, then a Misc{permission_info} per disabled permission."""
        self.send(pb.Message(hash=pb.Hash(salt=self.host.salt, challenge=self.challenge)))
        names = {"keyboard": pb.PermissionInfo.Keyboard, "clipboard": pb.PermissionInfo.Clipboard}
        for name in sorted(self.host.permissions_off):
            if name in names:
                info = pb.PermissionInfo(permission=names[name], enabled=False)
                self.send(pb.Message(misc=pb.Misc(permission_info=info)))

    def send(self, msg: pb.Message) -> None:
        if not self.closed:
            self.link.send(msg)

    def _loop(self) -> None:
        last_recv = time.monotonic()
        next_tick = last_recv  # interval_at(now): the first TestDelay goes out at once
        while not self.closed:
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + TEST_DELAY_INTERVAL
                if now - last_recv >= SESSION_IDLE:
                    raise PeerGone("Timeout")
                self._test_delay_tick(now)
            payload = self.link.recv(max(0.0, next_tick - time.monotonic()))
            if payload is None:
                continue
            last_recv = time.monotonic()
            msg = pb.Message()
            try:
                msg.ParseFromString(payload)
            except DecodeError:
                self.record.unparseable += 1  # connection.rs ignores what it cannot parse
                continue
            self.record.received.append(msg)
            reason = self._on_message(msg)
            if reason is not None:
                self._close(reason)

    def _test_delay_tick(self, now: float) -> None:
        if self._last_test_delay is None:
            self._last_test_delay = now
            td = pb.TestDelay(last_delay=self._network_delay, target_bitrate=2000)
            self.send(pb.Message(test_delay=td))

    # -- messages (connection.rs on_message)

    def _on_message(self, msg: pb.Message) -> str | None:
        """Handle one message; a string is the reason to close the session."""
        kind = msg.WhichOneof("union")
        if kind == "misc" and msg.misc.WhichOneof("union") == "close_reason":
            # Handled before anything else, logged in or not.
            self.record.misc.append(msg.misc)
            return f"Peer close: {msg.misc.close_reason!r}"
        if kind == "login_request":
            # A second LoginRequest after a successful one is ignored.
            return None if self.record.authorized else self._login(msg.login_request)
        if kind == "test_delay":
            self._on_test_delay(msg.test_delay)
        elif self.record.authorized:
            self._authorized(kind, msg)
        return None

    def _on_test_delay(self, td: pb.TestDelay) -> None:
        if td.from_client:
            self.record.test_delays_answered += 1
            self.send(pb.Message(test_delay=td))
        elif self._last_test_delay is not None:
            self._network_delay = int((time.monotonic() - self._last_test_delay) * 1000)
            self._last_test_delay = None

    def _authorized(self, kind: str | None, msg: pb.Message) -> None:
        if kind == "mouse_event" and self._keyboard:
            self.record.mouse.append(msg.mouse_event)
        elif kind == "key_event" and self._keyboard:
            self.record.keys.append(msg.key_event)
        elif kind == "clipboard" and self._clipboard:
            self.record.clipboards.append(clipboard_text(msg.clipboard))
        elif kind == "multi_clipboards" and self._clipboard:
            for cb in msg.multi_clipboards.clipboards:
                if cb.format == pb.ClipboardFormat.Text:
                    self.record.clipboards.append(clipboard_text(cb))
        elif kind == "misc":
            self._on_misc(msg.misc)

    def _on_misc(self, misc: pb.Misc) -> None:
        self.record.misc.append(misc)
        which = misc.WhichOneof("union")
        if which in ("refresh_video", "refresh_video_display"):
            self._want_key.set()
        elif which == "option" and misc.option.HasField("supported_decoding"):
            # A client re-announces its decoders after one failed: renegotiate.
            self._set_codec(choose_codec(misc.option.supported_decoding, self.host.codecs))

    def _set_codec(self, codec: str) -> None:
        if codec != self.record.codec:
            self.record.codecs.append(codec)

    # -- login (connection.rs handle_login_request and check_failure)

    def _login(self, lr: pb.LoginRequest) -> str | None:
        self.lr = lr
        self.record.login_requests.append(lr)
        if not _is_direct_ip_access(lr.username) and lr.username != self.host.peer_id:
            self._login_error(LOGIN_OFFLINE)
            return LOGIN_OFFLINE
        if not lr.password:
            # A stock host shows its user an accept dialog and sends nothing.
            self.record.awaiting_approval = True
            return None
        ip = self.record.peer[0]
        now_ms = int(self.host.wall_clock() * 1000)
        refusal = self.host.failures.refusal(ip, now_ms)
        if refusal is not None:
            # The session stays open; the client shows the text.
            self._login_error(refusal)
            return None
        if not self.host.check_proof(lr.password, self.challenge):
            self.host.failures.failed(ip, now_ms)
            self._login_error(LOGIN_WRONG_PASSWORD)
            return None
        self.host.failures.succeeded(ip)
        self._logon()
        return None

    def _login_error(self, text: str) -> None:
        self.record.login_errors.append(text)
        self.send(pb.Message(login_response=pb.LoginResponse(error=text)))

    def _logon(self) -> None:
        decoding = (
            self.lr.option.supported_decoding
            if self.lr.HasField("option") and self.lr.option.HasField("supported_decoding")
            else None
        )
        self._set_codec(choose_codec(decoding, self.host.codecs))
        self.record.authorized = True
        self.send(pb.Message(login_response=pb.LoginResponse(peer_info=self.host.peer_info())))
        self.send(pb.Message(cursor_data=self.host.cursor_data()))
        x, y = self.host.cursor
        self.send(pb.Message(cursor_position=pb.CursorPosition(x=x, y=y)))
        threading.Thread(target=self._video, name="rustdesk-host-video", daemon=True).start()

    # -- host to client

    def send_clipboard(self, text: str) -> None:
        """What a stock host sends when its clipboard changes (clipboard.rs)."""
        cb = clipboard_proto(text)
        if supports_multi_clipboard(self.lr.version, self.lr.my_platform):
            self.send(pb.Message(multi_clipboards=pb.MultiClipboards(clipboards=[cb])))
        else:
            self.send(pb.Message(clipboard=cb))

    def request_key_frame(self) -> None:
        self._want_key.set()

    def _video(self) -> None:
        """video_service.rs: one VideoFrame per encoded picture, display 0."""
        encoder: VideoEncoder | None = None
        start = time.monotonic()
        tick = 0
        try:
            while not self.closed:
                codec = self.record.codec
                if encoder is None or encoder.codec != codec:
                    if encoder is not None:
                        encoder.close()
                    encoder = VideoEncoder(codec, self.host.width, self.host.height, self.host.fps)
                    self._want_key.set()  # a new encoder starts with a key frame
                key = self._want_key.is_set()
                self._want_key.clear()
                picture = self.host.picture(tick)
                frames = encoder.encode(
                    picture, key=key, pts_ms=int((time.monotonic() - start) * 1000)
                )
                tick += 1
                if frames:
                    self._send_frames(codec, frames)
                time.sleep(1 / self.host.fps)
        except (OSError, ValueError) as e:
            self._close(f"video: {e}")
        finally:
            if encoder is not None:
                encoder.close()

    def _send_frames(self, codec: str, frames: list[pb.EncodedVideoFrame]) -> None:
        vf = pb.VideoFrame(display=0)
        getattr(vf, _VIDEO_FIELD[codec]).frames.extend(frames)
        # Counted before sending, so a test that saw the frame also sees the count.
        self.record.frames_sent += len(frames)
        self.record.key_frames_sent += sum(1 for f in frames if f.key)
        self.send(pb.Message(video_frame=vf))


# --- registration (rendezvous_mediator.rs start_udp, register_peer, register_pk) ----------

_PUSHES = ("punch_hole", "fetch_local_addr", "request_relay")


class Registrar:
    """The UDP registration rules of a stock host, on an injected clock (seconds).

    L{tick} is called once a second (TIMER_OUT) and returns what to send; L{on_datagram}
    takes what the server sent and returns the replies and, for a push (PunchHole,
    FetchLocalAddr, RequestRelay), the message to act on.
    """

    def __init__(
        self,
        peer_id: str,
        uuid: bytes,
        pk: bytes,
        *,
        serial: int = 0,
        key_confirmed: bool = False,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.uuid = uuid
        self.pk = pk
        self.serial = serial
        self.key_confirmed = key_confirmed
        self.last_response: float | None = None
        self.last_sent: float | None = None
        self.fails = 0
        self.keep_alive_ms = 60_000
        self.old_ids: list[str] = []
        self.rendezvous_servers: list[str] = []
        self._new_id = new_id or (lambda: str(1_000_000_000 + secrets.randbelow(1_000_000_000)))
        self._last_push: dict[str, tuple[tuple[str, int], float]] = {}

    def register_pk(self) -> rz.RendezvousMessage:
        # 1.4.9 sets neither old_id nor no_register_device.
        pk = rz.RegisterPk(id=self.peer_id, uuid=self.uuid, pk=self.pk)
        return rz.RendezvousMessage(register_pk=pk)

    def register_message(self) -> rz.RendezvousMessage:
        """register_peer: RegisterPk while the key is not confirmed, else RegisterPeer."""
        if not self.key_confirmed:
            return self.register_pk()
        return rz.RendezvousMessage(
            register_peer=rz.RegisterPeer(id=self.peer_id, serial=self.serial)
        )

    def tick(self, now: float) -> list[rz.RendezvousMessage]:
        expired = self.last_response is None or now - self.last_response >= REG_INTERVAL
        timed_out = self.last_sent is not None and now - self.last_sent >= MIN_REG_TIMEOUT
        if not (timed_out or (self.last_sent is None and expired)):
            return []
        if timed_out:
            self.fails += 1
        self.last_sent = now
        return [self.register_message()]

    def _answered(self, now: float) -> None:
        # update_latency: an answer resets the timeout and the failure count.
        self.last_response = now
        self.last_sent = None
        self.fails = 0

    def on_datagram(
        self, data: bytes, now: float
    ) -> tuple[list[rz.RendezvousMessage], rz.RendezvousMessage | None]:
        msg = rz.RendezvousMessage()
        try:
            msg.ParseFromString(data)
        except DecodeError:
            return [], None  # "Non-protobuf message bytes received"
        kind = msg.WhichOneof("union")
        if kind == "register_peer_response":
            self._answered(now)
            return ([self.register_pk()] if msg.register_peer_response.request_pk else []), None
        if kind == "register_pk_response":
            self._answered(now)
            return self._pk_response(msg.register_pk_response), None
        if kind == "configure_update":
            self.serial = msg.configure_update.serial
            self.rendezvous_servers = list(msg.configure_update.rendezvous_servers)
            return [], None
        if kind in _PUSHES and not self._duplicate(kind, getattr(msg, kind).socket_addr, now):
            return [], msg
        return [], None

    def _pk_response(self, r: rz.RegisterPkResponse) -> list[rz.RendezvousMessage]:
        out: list[rz.RendezvousMessage] = []
        if r.result == rz.RegisterPkResponse.OK:
            self.key_confirmed = True
        elif r.result == rz.RegisterPkResponse.UUID_MISMATCH:
            # handle_uuid_mismatch: Config::update_id picks a new id, then RegisterPk.
            self.key_confirmed = False
            self.old_ids.append(self.peer_id)
            self.peer_id = self._new_id()
            out.append(self.register_pk())
        if r.keep_alive > 0:
            self.keep_alive_ms = r.keep_alive * 1000
        return out

    def _duplicate(self, kind: str, socket_addr: bytes, now: float) -> bool:
        """LAST_MSG / LAST_RELAY_MSG: the same requester within 100 ms is skipped."""
        group = "relay" if kind == "request_relay" else "punch"
        addr = mangle_decode(socket_addr)
        last = self._last_push.get(group)
        self._last_push[group] = (addr, now)
        return last is not None and last[0] == addr and now - last[1] < 0.1


# --- the host ---------------------------------------------------------------------------------


def _reusable_socket(family: int = socket.AF_INET) -> socket.socket:
    """tcp.rs new_socket(reuse = true): both options, so a port can be listened on right
    after a connection from it (accept_connection) and punched from twice."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return s


def _connect(target: tuple[str, int], local: tuple[str, int], timeout: float) -> socket.socket:
    s = _reusable_socket()
    try:
        s.bind(local)
        s.settimeout(timeout)
        s.connect(target)
    except OSError:
        s.close()
        raise
    return s


class RustDeskHost:
    """An emulated stock RustDesk 1.4.9 host on Linux.

    Serve streams with L{listen} (or L{serve} on a socket), register with a server with
    L{start_rendezvous}; L{stop} ends everything.  Arguments: the id (a random 9-digit one
    by default) and the permanent password; C{identity} the Ed25519 key pair it registers;
    the display size and frame rate of the test picture; C{codecs} what its encoders can
    do; C{permissions_off} ("keyboard", "clipboard") what its user disabled, announced in
    Misc{permission_info} and enforced; PeerInfo's host and user names.  For tests of a
    forged host: C{sign_key} signs the SignedId instead of the identity, C{signed_id_for}
    is the id put in it.  C{wall_clock} is the time of the login-failure minutes.

    @ivar sessions: a L{SessionRecord} per session stream, in order of arrival.
    @ivar rendezvous_sent: every message it sent to the rendezvous server over TCP
        (LocalAddr, PunchHoleSent, RelayResponse) and the relay legs' RequestRelay.
    @ivar pushes: every push it acted on (PunchHole, FetchLocalAddr, RequestRelay).
    """

    def __init__(
        self,
        peer_id: str | None = None,
        password: str = "rustdesk-password",
        *,
        identity: SigningKey | None = None,
        width: int = 1280,
        height: int = 720,
        fps: int = 15,
        codecs: HostCodecs | None = None,
        permissions_off: Iterable[str] = (),
        hostname: str = "rustdesk-emulator",
        username: str = "tester",
        sign_key: SigningKey | None = None,
        signed_id_for: str | None = None,
        wall_clock: Callable[[], float] = time.time,
        ephemeral: Callable[[], PrivateKey] = PrivateKey.generate,
    ) -> None:
        self.peer_id = peer_id or str(100_000_000 + secrets.randbelow(400_000_000))
        self.password = password
        self.identity = identity or SigningKey.generate()
        # A forged host: SignedId signed by another key, or for another id.
        self._sign_key = sign_key
        self._signed_id_for = signed_id_for
        self.salt = _random_chars(32)
        self.uuid = uuidlib.uuid4().hex.encode()
        self.width, self.height, self.fps = width, height, fps
        self.codecs = codecs or HostCodecs()
        self.permissions_off = frozenset(permissions_off)
        self.hostname, self.username = hostname, username
        self.wall_clock = wall_clock
        # The per-connection X25519 key (box_::gen_keypair); fixed only to reproduce vectors.
        self.ephemeral = ephemeral
        self.cursor = (width // 2, height // 2)
        self.failures = LoginFailures()
        self.sessions: list[SessionRecord] = []
        self.rendezvous_sent: list[rz.RendezvousMessage] = []
        self.pushes: list[rz.RendezvousMessage] = []
        self.registrar: Registrar | None = None
        self.registered = threading.Event()
        self.server = ""
        self.key = ""
        self.relay_option = ""
        self.local_ip = "127.0.0.1"
        self.nat_type: int = rz.UNKNOWN_NAT
        self._live: list[HostSession] = []
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- identity and login

    @property
    def verify_key(self) -> bytes:
        """The Ed25519 key the host registers (RegisterPk.pk), which servers sign."""
        return bytes(self.identity.verify_key)

    @property
    def sign_key(self) -> SigningKey:
        return self._sign_key or self.identity

    @property
    def signed_id_for(self) -> str:
        return self._signed_id_for or self.peer_id

    def check_proof(self, proof: bytes, challenge: str) -> bool:
        """connection.rs validate_password_plain / verify_h1 (constant time)."""
        h1 = hashlib.sha256(self.password.encode() + self.salt.encode()).digest()
        want = hashlib.sha256(h1 + challenge.encode()).digest()
        return secrets.compare_digest(want, proof)

    def peer_info(self) -> pb.PeerInfo:
        """send_logon_response_and_keep_alive's PeerInfo for a remote-desktop login."""
        size = pb.Resolution(width=self.width, height=self.height)
        display = pb.DisplayInfo(
            x=0,
            y=0,
            width=self.width,
            height=self.height,
            name="0",
            online=True,
            cursor_embedded=False,
            original_resolution=size,
            scale=1.0,
        )
        return pb.PeerInfo(
            username=self.username,
            hostname=self.hostname,
            platform="Linux",
            displays=[display],
            current_display=0,
            sas_enabled=False,
            version=HOST_VERSION,
            features=pb.Features(privacy_mode=False, terminal=True),
            encoding=supported_encoding(self.codecs),
            resolutions=pb.SupportedResolutions(resolutions=[size]),
            platform_additions='{"support_view_camera":true}',
        )

    @staticmethod
    def cursor_data() -> pb.CursorData:
        """A 16x16 arrow; colors are always zstd-compressed RGBA (input_service.rs)."""
        rgba = bytearray()
        for y in range(16):
            for x in range(16):
                rgba += b"\x00\x00\x00\xff" if x <= y // 2 else bytes(4)
        return pb.CursorData(id=1, hotx=0, hoty=0, width=16, height=16, colors=_zstd(bytes(rgba)))

    def picture(self, tick: int) -> Image.Image:
        return test_picture(self.width, self.height, tick)

    # -- sessions

    def serve(
        self,
        sock: socket.socket,
        *,
        secure: bool = True,
        path: str = "direct",
        peer: tuple[str, int] | None = None,
    ) -> SessionRecord:
        """create_tcp_connection on C{sock}, on this thread, until the session ends."""
        where = peer or tuple(sock.getpeername()[:2])
        record = SessionRecord(path=path, peer=(str(where[0]), int(where[1])), secure=secure)
        session = HostSession(self, sock, record)
        with self._lock:
            self.sessions.append(record)
            self._live.append(session)
        try:
            session.run()
        finally:
            with self._lock:
                self._live.remove(session)
        return record

    def _spawn(self, target: Callable[..., object], *args: object) -> None:
        threading.Thread(target=target, args=args, name="rustdesk-host", daemon=True).start()

    def listen(self, port: int = 0, *, secure: bool = True, interface: str = "127.0.0.1") -> int:
        """Accept session streams on C{port} (0: any) until L{stop}; return the port.

        C{secure=False} is RustDesk's direct-IP listener (port 21118, direct_server), which
        sends no SignedId; C{secure=True} serves streams as the LAN and punch paths do.
        """
        listener = _reusable_socket()
        listener.bind((interface, port))
        listener.listen(64)
        self._sockets.append(listener)

        def accept() -> None:
            while not self._stop.is_set():
                try:
                    conn, addr = listener.accept()
                except OSError:
                    return
                self._spawn(self._serve_quietly, conn, secure, "direct", addr[:2])

        self._spawn(accept)
        return int(listener.getsockname()[1])

    def _serve_quietly(
        self, sock: socket.socket, secure: bool, path: str, peer: tuple[str, int] | None
    ) -> None:
        with contextlib.suppress(OSError):
            self.serve(sock, secure=secure, path=path, peer=peer)

    def live(self) -> list[HostSession]:
        with self._lock:
            return list(self._live)

    def wait_session(
        self,
        predicate: Callable[[SessionRecord], object] = lambda r: True,
        timeout: float = 30.0,
    ) -> SessionRecord:
        """The first session record for which C{predicate} holds (polling)."""
        deadline = time.monotonic() + timeout
        while True:
            for record in list(self.sessions):
                if predicate(record):
                    return record
            if time.monotonic() >= deadline:
                raise AssertionError(f"no matching RustDesk host session in {timeout} s")
            time.sleep(0.02)

    def send_clipboard(self, text: str) -> int:
        """Push a clipboard change to every logged-in session; how many got it."""
        n = 0
        for s in self.live():
            if s.record.authorized and "clipboard" not in self.permissions_off:
                s.send_clipboard(text)
                n += 1
        return n

    def move_cursor(self, x: int, y: int) -> None:
        """The host's own pointer moved: CursorPosition to every logged-in session."""
        self.cursor = (x, y)
        for s in self.live():
            if s.record.authorized:
                s.send(pb.Message(cursor_position=pb.CursorPosition(x=x, y=y)))

    # -- rendezvous

    def start_rendezvous(
        self,
        server: str,
        key: str = "",
        *,
        relay_server: str = "",
        local_ip: str = "127.0.0.1",
        nat_type: int = rz.UNKNOWN_NAT,
    ) -> None:
        """Register with C{server} ("host[:port]", the ID server setting) and answer its
        pushes until L{stop}.  C{key} is the Key setting (the server's public key,
        base64); C{relay_server} the Relay server setting; C{local_ip} the address every
        socket of the host binds (a second loopback address makes the server see a host
        on another IP, so it pushes PunchHole instead of FetchLocalAddr)."""
        self.server = check_port(server, RENDEZVOUS_PORT)
        self.key = key
        self.relay_option = relay_server
        self.local_ip = local_ip
        self.nat_type = nat_type
        self.registrar = Registrar(self.peer_id, self.uuid, self.verify_key)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((local_ip, 0))
        self._sockets.append(udp)
        self._spawn(self._udp_loop, udp, self.registrar)

    def wait_registered(self, timeout: float = 30.0) -> None:
        if not self.registered.wait(timeout):
            raise AssertionError(f"the emulated host did not register in {timeout} s")

    def _udp_loop(self, udp: socket.socket, registrar: Registrar) -> None:
        target = _split(self.server, RENDEZVOUS_PORT)
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + TIMER_OUT
                for m in registrar.tick(now):
                    self._sendto(udp, m, target)
            try:
                ready = select.select([udp], [], [], max(0.0, next_tick - time.monotonic()))[0]
                data = udp.recvfrom(65536)[0] if ready else b""
            except (OSError, ValueError):
                return
            if not ready:
                continue
            replies, push = registrar.on_datagram(data, time.monotonic())
            self.peer_id = registrar.peer_id
            if registrar.key_confirmed:
                self.registered.set()
            for m in replies:
                self._sendto(udp, m, target)
            if push is not None:
                self.pushes.append(push)
                self._spawn(self._handle_push, push)

    @staticmethod
    def _sendto(udp: socket.socket, msg: rz.RendezvousMessage, target: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):
            udp.sendto(msg.SerializeToString(), target)

    def _handle_push(self, msg: rz.RendezvousMessage) -> None:
        kind = msg.WhichOneof("union")
        with contextlib.suppress(OSError, HandshakeAbort):
            if kind == "punch_hole":
                self.handle_punch_hole(msg.punch_hole)
            elif kind == "fetch_local_addr":
                self.handle_intranet(msg.fetch_local_addr)
            elif kind == "request_relay":
                rr = msg.request_relay
                self.create_relay(rr.socket_addr, rr.relay_server, rr.uuid, rr.secure, False)

    def relay_for(self, provided: str) -> str:
        """get_relay_server: the Relay server setting, else the server's, else ID server
        port + 1."""
        return self.relay_option or provided or increase_port(self.server, 1)

    def _to_server(self) -> socket.socket:
        return _connect(_split(self.server, RENDEZVOUS_PORT), (self.local_ip, 0), CONNECT_TIMEOUT)

    def _send_framed(self, sock: socket.socket, msg: rz.RendezvousMessage) -> None:
        self.rendezvous_sent.append(msg)
        sock.sendall(encode_frame(msg.SerializeToString()))

    def handle_intranet(self, fla: rz.FetchLocalAddr) -> None:
        """handle_intranet: LocalAddr with this host's address, relay filled in; the
        relay only if that fails."""
        relay = self.relay_for(fla.relay_server)
        try:
            sock = self._to_server()
            local = sock.getsockname()[:2]
            la = rz.LocalAddr(
                id=self.peer_id,
                socket_addr=mangle_encode(*mangle_decode(fla.socket_addr)),
                local_addr=mangle_encode(*local),
                relay_server=relay,
                version=HOST_VERSION,
            )
            self._send_framed(sock, rz.RendezvousMessage(local_addr=la))
        except OSError:
            self.create_relay(fla.socket_addr, relay, str(uuidlib.uuid4()), True, True)
            return
        self._accept_connection(sock, "lan")

    def handle_punch_hole(self, ph: rz.PunchHole) -> None:
        """handle_punch_hole over TCP (the UDP/KCP punch of udp_port > 0 is not emulated)."""
        relay = self.relay_for(ph.relay_server)
        if rz.SYMMETRIC in (ph.nat_type, self.nat_type) or ph.force_relay:
            self.create_relay(ph.socket_addr, relay, str(uuidlib.uuid4()), True, True)
            return
        sent = rz.PunchHoleSent(
            socket_addr=ph.socket_addr,
            id=self.peer_id,
            relay_server=relay,
            nat_type=self.nat_type,  # type: ignore[arg-type]
            version=HOST_VERSION,
        )
        sock = self._to_server()
        local = sock.getsockname()[:2]
        # "Tell my gateway the incoming peer is safe": a 30 ms connect from the same port.
        with contextlib.suppress(OSError):
            _connect(mangle_decode(ph.socket_addr), local, 0.03).close()
        self._send_framed(sock, rz.RendezvousMessage(punch_hole_sent=sent))
        self._accept_connection(sock, "punch")

    def _accept_connection(self, sock: socket.socket, path: str) -> None:
        """server.rs accept_connection_: drop the socket to the server, listen on its
        local address for CONNECT_TIMEOUT, serve the one connection (secure)."""
        local = sock.getsockname()[:2]
        sock.close()
        listener = _reusable_socket()
        try:
            listener.bind(local)
            listener.listen(128)
            listener.settimeout(CONNECT_TIMEOUT)
            conn, addr = listener.accept()
        except OSError:
            return
        finally:
            listener.close()
        conn.settimeout(None)
        self.serve(conn, secure=True, path=path, peer=addr[:2])

    def create_relay(
        self, socket_addr: bytes, relay_server: str, uuid: str, secure: bool, initiate: bool
    ) -> None:
        """create_relay: RelayResponse to the server (with uuid, relay and id when the host
        initiates), then create_relay_connection; the server socket stays open meanwhile."""
        rr = rz.RelayResponse(socket_addr=socket_addr, version=HOST_VERSION)
        if initiate:
            rr.uuid, rr.relay_server, rr.id = uuid, relay_server, self.peer_id
        with self._to_server() as sock:
            self._send_framed(sock, rz.RendezvousMessage(relay_response=rr))
            leg = _connect(_split(relay_server, RELAY_PORT), (self.local_ip, 0), CONNECT_TIMEOUT)
            # create_relay_connection_: only the licence key and the uuid.
            request = rz.RequestRelay(licence_key=self.key or RS_PUB_KEY, uuid=uuid)
            self._send_framed(leg, rz.RendezvousMessage(request_relay=request))
            leg.settimeout(None)
            self.serve(leg, secure=secure, path="relay", peer=mangle_decode(socket_addr))

    def stop(self) -> None:
        self._stop.set()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()
        for session in self.live():
            session._close("host stopped")


# --- the UDP punch of RustDesk 1.4.1 and later ------------------------------------------------

# common.rs punch_udp: resend after 20 ms, the wait growing x1.5 up to 200 ms, for 20 s.
UDP_RETRY_FIRST = 0.02
UDP_RETRY_MAX = 0.2
UDP_PUNCH_TIME = 20.0


@dataclass
class UdpPunchRecord:
    """One UDP punch the host made.

    @ivar target: where it punched: the viewer's IP (as the server saw it) at C{udp_port}.
    @ivar local: its punch socket, from which the PunchHoleSent copies went to the server.
    @ivar first: the first non-empty datagram from the viewer (KCP's first segment in
        RustDesk), None while waiting or when the punch timed out.
    """

    push: rz.PunchHole
    sent: rz.PunchHoleSent
    target: tuple[str, int]
    local: tuple[str, int]
    first: bytes | None = None
    done: threading.Event = field(default_factory=threading.Event)


class UdpPunchHost(RustDeskHost):
    """A host that answers C{PunchHole{udp_port > 0}} as RustDesk 1.4.1+ does.

    rendezvous_mediator.rs handle_punch_hole: the relay when a side is symmetric or the
    relay is forced (as L{RustDeskHost}); else, with C{udp_port > 0}, punch_udp_hole: a
    fresh UDP socket, C{PunchHoleSent} from it to the server's UDP port (three copies,
    10-30 ms apart; no TCP answer at all), and udp_nat_listen: the socket connected to the
    viewer's IP at C{udp_port}, empty datagrams (punch_udp) until a non-empty one arrives.
    KCP itself is not emulated: the first non-empty datagram is recorded instead.
    Requests without C{udp_port} get the TCP punch of L{RustDeskHost}.

    @ivar udp_punches: a L{UdpPunchRecord} per UDP punch, in order.
    """

    def __init__(self, *args: object, punch_time: float = UDP_PUNCH_TIME, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.punch_time = punch_time
        self.udp_punches: list[UdpPunchRecord] = []

    def handle_punch_hole(self, ph: rz.PunchHole) -> None:
        relay = rz.SYMMETRIC in (ph.nat_type, self.nat_type) or ph.force_relay
        if relay or ph.udp_port <= 0:
            super().handle_punch_hole(ph)
            return
        self.punch_udp_hole(ph)

    def punch_udp_hole(self, ph: rz.PunchHole) -> UdpPunchRecord:
        sent = rz.PunchHoleSent(
            socket_addr=ph.socket_addr,
            id=self.peer_id,
            relay_server=self.relay_for(ph.relay_server),
            nat_type=self.nat_type,  # type: ignore[arg-type]
            version=HOST_VERSION,
        )
        data = rz.RendezvousMessage(punch_hole_sent=sent).SerializeToString()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sockets.append(udp)
        udp.bind((self.local_ip, 0))
        server = _split(self.server, RENDEZVOUS_PORT)
        udp.sendto(data, server)
        # peer_addr.set_port(ph.udp_port as u16): the viewer's address as the server saw it.
        target = (mangle_decode(ph.socket_addr)[0], ph.udp_port & 0xFFFF)
        record = UdpPunchRecord(ph, sent, target, udp.getsockname()[:2])
        self.udp_punches.append(record)

        def copies() -> None:
            for _ in range(2):
                time.sleep((10 + secrets.randbelow(20)) / 1000)
                with contextlib.suppress(OSError):
                    udp.sendto(data, server)

        self._spawn(copies)
        udp.connect(target)
        try:
            record.first = _punch_listen(udp, self.punch_time, self._stop)
        finally:
            record.done.set()
        return record


def _punch_listen(udp: socket.socket, max_time: float, stop: threading.Event) -> bytes | None:
    """common.rs punch_udp(listen = true): empty datagrams until a non-empty one arrives."""
    deadline = time.monotonic() + max_time
    wait = UDP_RETRY_FIRST
    next_send = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now >= deadline:
            return None
        if now >= next_send:
            with contextlib.suppress(OSError):
                udp.send(b"")
            next_send = now + wait
            wait = min(wait * 1.5, UDP_RETRY_MAX)
        udp.settimeout(max(0.001, min(next_send, deadline) - now))
        try:
            data = udp.recv(1500)
        except OSError:
            continue  # a timeout, or ICMP from a port not open yet: keep punching
        if data:
            return data
    return None
