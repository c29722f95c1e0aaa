"""A stock RustDesk client for bench/session.py: the RustDesk-protocol (VP9) column.

The way to the host is the stock-client emulators' (tests/support/
rustdesk_rendezvous.py for the rendezvous server and the relay,
tests/support/rustdesk_client.py for the session: SignedId checked against
the host's Ed25519 key, PublicKey, secretbox frames with per-direction
counters, Hash, LoginRequest announcing what a stock 64-bit desktop client
decodes: VP9, VP8 and AV1 in software, no H.264), run on a blocking socket in
a thread.  The logged-in socket is then handed to the reactor, where
L{RustDeskStream} carries on with the emulator's frame reader and secret
channel, so that the session is measured on the same reactor and thread as
the LiteDesk viewer and x11vnc's client.  Like the emulators this module
imports nothing of LiteDesk but the generated protobuf modules.

What the client does during the session is what a RustDesk 1.4.9 desktop
client does (src/client.rs, src/client/io_loop.rs), as far as it reaches the
host:

  - it echoes every TestDelay of the host (the host measures the round trip);
  - it decodes every video frame (PyAV; FFmpeg's native VP9 decoder, one
    thread, each picture converted to RGB like the LiteDesk viewer's), and
    asks for a key frame when a frame does not decode
    (C{Misc{refresh_video_display}});
  - once a second it runs the client's frame-rate control (L{FpsControl}),
    which sends C{Misc{option{custom_fps}}} from its decoding speed; from
    the user's frame-rate setting (L{RustDeskStream.set_custom_fps}) too;
  - a click is a move, a left down and a left up at the point
    (C{mask = buttons << 3 | type}), on a socket with TCP_NODELAY as every
    RustDesk client socket (hbb_common tcp.rs);
  - closing sends C{Misc{close_reason: ""}}, as the client does when its
    user closes the session.

Through the relay (L{open_via_relay}) it is a client with "force relay":
C{PunchHoleRequest{force_relay, nat_type SYMMETRIC}}, then the relay the host
opened (C{RelayResponse}) or, after a C{PunchHoleResponse}, one it asks for
itself (C{RequestRelay} with its own uuid).  A stock client with "force
relay" also dials the host's address once and drops that connection; the
emulator does not, so the host is spared one connection that would only
wait out its detection.
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from litedesk.proto import message_pb2 as pb  # noqa: E402
from tests.support import rustdesk_client as rc  # noqa: E402
from tests.support import rustdesk_rendezvous as rr  # noqa: E402

__all__ = [
    "FpsControl",
    "PictureDecoder",
    "RustDeskStream",
    "adopt",
    "host_key_from_config",
    "log_in",
    "open_direct",
    "open_via_relay",
]

# client.rs: a click is "down" then "up" with the left button (1) in the
# buttons bits; a plain move has no buttons.
MOUSE_MOVE, MOUSE_DOWN, MOUSE_UP = 0, 1, 2
LEFT = 1

_CODECS = {"vp9s": "vp9", "vp8s": "vp8", "av1s": "libdav1d", "h264s": "h264"}


# -- reaching the host and logging in ------------------------------------------------


def open_via_relay(server: str, key: str, peer_id: str) -> tuple[rc.RustDeskClient, str]:
    """A stock client with "force relay" from id to stream (blocking).

    @return: the client, its handshake not done yet, and how the relay was
        agreed ("host-opened" after a RelayResponse to the PunchHoleRequest,
        else "requested" with the client's own RequestRelay).
    @raise rr.RendezvousFailure: RustDesk's text for what went wrong.
    """
    reached = rr.reach(server, key, peer_id, force_relay=True)
    how = "host-opened" if reached.answer.kind == "relay" else "requested"
    return rc.RustDeskClient(reached.sock, peer_id, reached.answer.host_pk), how


def open_direct(addr: tuple[str, int], peer_id: str, host_pk: bytes) -> rc.RustDeskClient:
    """TCP straight to the host's port, its Ed25519 key known beforehand (blocking)."""
    return rc.RustDeskClient.connect(addr[0], addr[1], peer_id, host_pk)


def log_in(client: rc.RustDeskClient, password: str) -> pb.PeerInfo:
    """The key exchange and the login (blocking); the client is closed on failure.

    @raise rc.EmulatorError: the session is not encrypted, or the host refused.
    """
    try:
        if not client.handshake():
            raise rc.HandshakeError("the session is not encrypted")
        result = client.login(password)
        if result.response.error:
            raise rc.EmulatorError(f"login refused: {result.response.error}")
    except BaseException:
        client.close()
        raise
    return result.response.peer_info


# -- the session on the reactor ------------------------------------------------------


class FpsControl:
    """The client's frame-rate control, sans IO (client.rs fps_calculate, io_loop.rs fps_control).

    The stock client measures how fast it decodes (the mean over up to 30
    frames, the first 3 skipped) and, once a second, asks the host for at
    most 90 % of that rate on a direct link and 80 % through a relay, never
    more than the user's setting (30 unless set, 5-120).  It lowers the rate
    when its queue of undecoded frames grows; this client decodes each frame
    as it arrives, so its queue never holds more than one and only the
    first request and the increases happen.
    """

    INACTIVE = 15  # io_loop.rs inactive_threshold (seconds without a frame)

    def __init__(self, *, direct: bool, custom_fps: int | None = None) -> None:
        self.direct = direct
        self.custom_fps = custom_fps
        self.decode_fps: int | None = None
        self.last_auto_fps: int | None = None
        self._skip = 0
        self._count = 0
        self._seconds = 0.0
        self._frames_this_tick = 0
        self._inactive = 0
        self._idle = 0

    def decoded(self, seconds: float) -> None:
        """One picture decoded in C{seconds}."""
        self._frames_this_tick += 1
        if self._skip < 3:  # the first frames are slow
            self._skip += 1
            return
        self._seconds += seconds
        self._count += 1
        ms = int(self._seconds * 1000)
        if self._count % 10 == 0 and ms > 0:
            self.decode_fps = self._count * 1000 // ms
        if self._count >= 30:
            self._count, self._seconds = 0, 0.0

    def tick(self) -> int | None:
        """Once a second: the custom_fps to send now, if any."""
        frames, self._frames_this_tick = self._frames_this_tick, 0
        self._inactive = 0 if frames else self._inactive + 1
        custom = self.custom_fps or 30
        if not 5 <= custom <= 120:
            custom = 30
        if self.decode_fps is None or self._inactive >= self.INACTIVE:
            return None
        limited = self.decode_fps * (9 if self.direct else 8) // 10
        limited = min(limited, custom)
        self._idle += 1  # the queue is empty at every tick
        last = self.last_auto_fps
        if last is not None and not (self._idle > 3 and last + 3 <= limited):
            return None
        auto = max(1, limited)
        if auto == last:
            return None
        self.last_auto_fps = auto
        return auto


class PictureDecoder:
    """PyAV decoding of one display's frames; each picture handed over as RGB.

    Frames before the first key frame are dropped (a VP9 decoder cannot
    start elsewhere); a frame that does not decode makes it wait for the next
    key frame, and the caller asks the host for one.
    """

    def __init__(self) -> None:
        self._ctx: Any = None
        self._codec = ""
        self.errors = 0

    def decode(self, codec: str, data: bytes, key: bool) -> tuple[bytes, int] | None:
        """The picture as packed RGB rows and the row length in bytes, or None."""
        if codec != self._codec:
            self._ctx, self._codec = None, codec
        if self._ctx is None:
            if not key:
                return None
            ctx = av.CodecContext.create(codec, "r")
            ctx.thread_count = 1  # frame threading would add a frame of delay
            ctx.open()
            self._ctx = ctx
        try:
            pictures = self._ctx.decode(av.Packet(data))
        except av.FFmpegError:
            self.errors += 1
            self._ctx = None
            raise
        if not pictures:
            return None
        rgb = pictures[-1].reformat(format="rgb24", interpolation="POINT")
        plane = rgb.planes[0]
        return bytes(plane), int(plane.line_size)


@dataclass
class StreamStats:
    frames: int = 0
    wire_bytes: int = 0
    video_bytes: int = 0
    key_frames: int = 0
    decode_errors: int = 0
    custom_fps_sent: list[int] = field(default_factory=list)
    codecs: set[str] = field(default_factory=set)
    rtts_ms: list[float] = field(default_factory=list)
    rtt_times: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    close_reason: str = ""


class RustDeskStream(Protocol):
    """The logged-in session, carried on by the reactor after L{connect_and_login}.

    @param on_picture: called with (time, RGB rows, row length) per decoded picture.
    """

    def __init__(
        self,
        client: rc.RustDeskClient,
        clock: Any,
        on_picture: Callable[[float, bytes, int], None],
        *,
        direct: bool,
    ) -> None:
        self.client = client
        self.reader = client.reader
        self.channel = client.channel
        self.clock = clock
        self.on_picture = on_picture
        self.stats = StreamStats()
        self.fps = FpsControl(direct=direct)
        self.decoder = PictureDecoder()
        self.ended: Deferred[None] = Deferred()
        self._ticker: Any = None

    # -- connection

    def connectionMade(self) -> None:
        # Frames the emulator read past the LoginResponse are in its reader.
        self._drain()
        self._ticker = self.clock.callLater(1.0, self._tick)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._ticker is not None and self._ticker.active():
            self._ticker.cancel()
        if not self.ended.called:
            self.ended.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.stats.wire_bytes += len(data)
        self.reader.feed(data)
        self._drain()

    def _drain(self) -> None:
        try:
            while (payload := self.reader.next()) is not None:
                if self.channel is not None:
                    payload = self.channel.open(payload)
                msg = pb.Message()
                msg.ParseFromString(payload)
                self._message(msg)
        except Exception as e:  # a broken stream ends the session, as in the client
            self.stats.close_reason = f"{type(e).__name__}: {e}"
            transport: Any = self.transport  # a TCP transport: it can abort
            if transport is not None:
                transport.abortConnection()

    def send(self, msg: pb.Message) -> None:
        data = msg.SerializeToString()
        if self.channel is not None:
            data = self.channel.seal(data)
        assert self.transport is not None
        self.transport.write(rc.encode_frame(data))

    # -- what the host sends

    def _message(self, msg: pb.Message) -> None:
        kind = msg.WhichOneof("union")
        if kind == "video_frame":
            self._video(msg.video_frame)
        elif kind == "test_delay" and not msg.test_delay.from_client:
            # client.rs handle_test_delay: echoed unchanged.
            self.send(msg)
            if msg.test_delay.last_delay:
                self.stats.rtts_ms.append(float(msg.test_delay.last_delay))
                self.stats.rtt_times.append(self.clock.seconds())
        elif kind == "misc" and msg.misc.WhichOneof("union") == "close_reason":
            self.stats.close_reason = msg.misc.close_reason or "closed by the host"
            assert self.transport is not None
            self.transport.loseConnection()

    def _video(self, vf: pb.VideoFrame) -> None:
        which = vf.WhichOneof("union") or ""
        codec = _CODECS.get(which)
        if codec is None:
            return
        self.stats.codecs.add(which[:-1])
        for ef in getattr(vf, which).frames:
            self.stats.video_bytes += len(ef.data)
            self.stats.key_frames += ef.key
            t = time.perf_counter()
            try:
                picture = self.decoder.decode(codec, ef.data, ef.key)
            except av.FFmpegError:
                # client.rs start_video_thread: a frame that fails asks for a
                # key frame of that display.
                self.stats.decode_errors += 1
                self.send(rc.misc_message(refresh_video_display=vf.display))
                continue
            if picture is None:
                continue
            seconds = time.perf_counter() - t
            self.stats.decode_ms.append(seconds * 1000)
            self.fps.decoded(seconds)
            self.stats.frames += 1
            self.on_picture(self.clock.seconds(), *picture)

    # -- what the client sends

    def _tick(self) -> None:
        self._ticker = self.clock.callLater(1.0, self._tick)
        auto = self.fps.tick()
        if auto is not None:
            self.stats.custom_fps_sent.append(auto)
            self.send(rc.misc_message(option=pb.OptionMessage(custom_fps=auto)))

    def set_custom_fps(self, fps: int) -> None:
        """The user's frame-rate setting (client.rs set_custom_fps)."""
        self.fps.custom_fps = fps
        self.stats.custom_fps_sent.append(fps)
        self.send(rc.misc_message(option=pb.OptionMessage(custom_fps=fps)))

    def click(self, x: int, y: int) -> None:
        self.send(rc.mouse_event(MOUSE_MOVE, x, y))
        self.send(rc.mouse_event(LEFT << 3 | MOUSE_DOWN, x, y))
        self.send(rc.mouse_event(LEFT << 3 | MOUSE_UP, x, y))

    def close(self) -> Deferred[None]:
        if self.transport is not None and not self.ended.called:
            # io_loop.rs: the client tells the host it closes, then drops the link.
            self.send(rc.misc_message(close_reason=""))
            self.transport.loseConnection()
        return self.ended


class _OneProtocol(Factory):
    def __init__(self, protocol: Protocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_instance


def adopt(reactor: Any, stream: RustDeskStream) -> None:
    """Hand the emulator's connected socket to the reactor, under C{stream}."""
    sock = stream.client.sock
    sock.setblocking(False)
    try:
        reactor.adoptStreamConnection(sock.fileno(), sock.family, _OneProtocol(stream))
    finally:
        sock.close()  # the reactor holds its own duplicate of the descriptor


def host_key_from_config(config_dir: Path) -> bytes:
    """The host's Ed25519 public key as its config dir holds it (what the server signs)."""
    return base64.b64decode((config_dir / "id_ed25519.pub").read_text().strip())
