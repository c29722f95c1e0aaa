"""The viewer's side of a session: log in, decode the screen, send input.

Shared by the headless viewer (C{litedesk-viewer --headless}) and the window.
Runs over the pinned TLS stream (the viewer is the TLS client); see
L{litedesk.session.host_session} for the message flow.
"""

from __future__ import annotations

import platform
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.proto import message_pb2 as pb
from litedesk.screen.decode import DecodedFrame, VideoDecoder
from litedesk.session.framing import MessageProtocol
from litedesk.session.host_key import HostKeyMismatch
from litedesk.session.password import login_password

VERSION = "1.4.9"
IDLE_TIMEOUT = 30.0

_CODEC_OF_FIELD = {"h264s": "h264", "vp9s": "vp9"}


class SessionError(Exception):
    """The session failed; C{reason} is one short user-facing phrase."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


_LOGIN_ERRORS = {
    "Wrong Password": "wrong password",
    "Too many wrong attempts": "wrong password (too many attempts, try later)",
    "Please try 1 minute later": "wrong password (too many attempts, try in a minute)",
    "Empty Password": "wrong password (empty)",
    "No Password Access": "the host accepts no password",
    "Offline": "host offline",
    "Too many viewers": "too many viewers",
}


@dataclass
class ViewerStats:
    frames: int = 0
    key_frames: int = 0
    bytes: int = 0
    video_bytes: int = 0
    decode_errors: int = 0
    rtt_ms: float | None = None
    first_frame_at: float | None = None
    last_frame_at: float | None = None


@implementer(IHandshakeListener)
class ViewerSession(MessageProtocol):
    """One session with a host, as seen from the viewer."""

    _log = Logger()
    idle_timeout = IDLE_TIMEOUT

    def __init__(
        self,
        clock: IReactorTime,
        peer_id: str,
        password: str,
        *,
        my_id: str = "",
        codec: str = "h264",
        image_quality: int = pb.Balanced,
        custom_fps: int = 0,
        on_frame: Callable[[DecodedFrame], None] | None = None,
    ) -> None:
        self.clock = clock
        self._clock: IReactorTime = clock
        self.peer_id = peer_id
        self.password = password
        self.my_id = my_id or f"viewer-{socket.gethostname()}"
        self.codec = codec
        self.image_quality = image_quality
        self.custom_fps = custom_fps
        self.on_frame = on_frame
        self.logged_in: Deferred[pb.PeerInfo] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.peer_info: pb.PeerInfo | None = None
        self.decoder = VideoDecoder(codec)
        self.latest: DecodedFrame | None = None
        self.stats = ViewerStats()
        self.remote_clipboard: str | None = None
        self.view_only_notice: str | None = None
        self.cursor: tuple[int, int] | None = None
        self.cursor_shape: pb.CursorData | None = None
        self.display = 0
        self.error: SessionError | None = None
        self._frame_waiters: list[tuple[float, Deferred[DecodedFrame]]] = []
        self._clipboard_waiters: list[Deferred[str]] = []
        self._pings: dict[int, float] = {}

    # -- connection ----------------------------------------------------------

    def handshakeCompleted(self) -> None:
        super().handshakeCompleted()
        self._log.debug("TLS handshake with the host completed")

    def dataReceived(self, data: bytes) -> None:
        self.stats.bytes += len(data)
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self.error is None:
            if isinstance(reason.value, HostKeyMismatch):
                self.error = SessionError("host key mismatch", str(reason.value))
            elif not self.logged_in.called:
                self.error = SessionError("connection lost before login", reason.getErrorMessage())
            else:
                self.error = SessionError("disconnected", reason.getErrorMessage())
        if not self.logged_in.called:
            self.logged_in.errback(self.error)
        for _, d in self._frame_waiters:
            d.errback(self.error)
        self._frame_waiters.clear()
        for c in self._clipboard_waiters:
            c.errback(self.error)
        self._clipboard_waiters.clear()
        if not self.ended.called:
            self.ended.callback(None)

    def fail(self, reason: str, detail: str = "") -> None:
        if self.error is None:
            self.error = SessionError(reason, detail)
        self.close(reason)

    # -- incoming --------------------------------------------------------------

    def message_received(self, msg: pb.Message) -> None:
        kind = msg.WhichOneof("union")
        handler = _HANDLERS.get(kind) if kind is not None else None
        if handler is not None:
            handler(self, msg)

    def _multi_clipboards(self, clips: pb.MultiClipboards) -> None:
        for c in clips.clipboards:
            self._clipboard(c)

    def _message_box(self, box: pb.MessageBox) -> None:
        if "view only" in box.text.lower() or "view only" in box.title.lower():
            self.view_only_notice = box.text or box.title
        self._log.info("Host says: {title}: {text}", title=box.title, text=box.text)

    def _misc(self, misc: pb.Misc) -> None:
        which = misc.WhichOneof("union")
        if which == "close_reason":
            self.fail("closed by host", misc.close_reason)
        elif which == "switch_display":
            self.display = misc.switch_display.display
            self.decoder.reset()

    def _login(self, h: pb.Hash) -> None:
        req = pb.LoginRequest(
            username=self.peer_id,
            password=login_password(self.password, h.salt, h.challenge),
            my_id=self.my_id,
            my_name=self.my_id,
            my_platform=platform.system(),
            version=VERSION,
            session_id=random.getrandbits(63),
        )
        opt = req.option
        opt.image_quality = self.image_quality  # type: ignore[assignment]
        if self.custom_fps:
            opt.custom_fps = self.custom_fps
        dec = opt.supported_decoding
        dec.ability_h264 = 1
        dec.ability_vp9 = 1
        dec.prefer = pb.SupportedDecoding.VP9 if self.codec == "vp9" else pb.SupportedDecoding.H264
        self.send_message(pb.Message(login_request=req))

    def _login_response(self, resp: pb.LoginResponse) -> None:
        if resp.WhichOneof("union") == "error":
            reason = _LOGIN_ERRORS.get(resp.error, "login refused")
            self.fail(reason, resp.error)
            return
        self.peer_info = resp.peer_info
        self.display = resp.peer_info.current_display
        if not self.logged_in.called:
            self.logged_in.callback(resp.peer_info)

    def display_size(self) -> tuple[int, int] | None:
        if self.peer_info is None:
            return None
        displays = self.peer_info.displays
        if 0 <= self.display < len(displays):
            d = displays[self.display]
            return d.width, d.height
        return None

    def _video(self, vf: pb.VideoFrame) -> None:
        which = vf.WhichOneof("union")
        codec = _CODEC_OF_FIELD.get(which or "")
        if codec is None:
            return
        if codec != self.decoder.codec:
            self.decoder.reset(codec)
        size = self.display_size() or (0, 0)
        for ef in getattr(vf, which or "").frames:
            self.stats.video_bytes += len(ef.data)
            decoded = self.decoder.decode(ef.data, ef.key, ef.pts, size[0], size[1])
            if decoded is None:
                self.stats.decode_errors = self.decoder.errors
                continue
            now = self._clock.seconds()
            self.stats.frames += 1
            if ef.key:
                self.stats.key_frames += 1
            if self.stats.first_frame_at is None:
                self.stats.first_frame_at = now
            self.stats.last_frame_at = now
            self.latest = decoded
            waiters, self._frame_waiters = self._frame_waiters, []
            for after, d in waiters:
                if now >= after:
                    d.callback(decoded)
                else:
                    self._frame_waiters.append((after, d))
            if self.on_frame is not None:
                self.on_frame(decoded)

    def _test_delay(self, msg: pb.Message) -> None:
        td = msg.test_delay
        if not td.from_client:
            # The host measures the round trip; echo unchanged.  Its
            # last_delay is the most recent round trip it saw.
            self.send_message(msg)
            if td.last_delay:
                self.stats.rtt_ms = float(td.last_delay)
            return
        sent = self._pings.pop(td.time, None)
        if sent is not None:
            self.stats.rtt_ms = (self._clock.seconds() - sent) * 1000.0

    def _clipboard(self, clip: pb.Clipboard) -> None:
        if clip.compress or clip.format != pb.Text:
            return
        try:
            text = clip.content.decode("utf-8")
        except UnicodeDecodeError:
            return
        self.remote_clipboard = text
        waiters, self._clipboard_waiters = self._clipboard_waiters, []
        for d in waiters:
            d.callback(text)

    # -- outgoing ------------------------------------------------------------

    def ping(self) -> None:
        now = self._clock.seconds()
        t = int(now * 1000)
        self._pings[t] = now
        self.send_message(pb.Message(test_delay=pb.TestDelay(time=t, from_client=True)))

    def send_mouse(self, mask: int, x: int, y: int, modifiers: list[int] | None = None) -> None:
        self.send_message(
            pb.Message(
                mouse_event=pb.MouseEvent(
                    mask=mask,
                    x=x,
                    y=y,
                    modifiers=modifiers or [],  # type: ignore[arg-type]
                )
            )
        )

    def send_key(self, ev: pb.KeyEvent) -> None:
        self.send_message(pb.Message(key_event=ev))

    def set_clipboard(self, text: str) -> None:
        self.send_message(
            pb.Message(clipboard=pb.Clipboard(content=text.encode("utf-8"), format=pb.Text))
        )

    def refresh(self) -> None:
        self.send_message(pb.Message(misc=pb.Misc(refresh_video=True)))

    def switch_display(self, index: int) -> None:
        self.send_message(pb.Message(misc=pb.Misc(switch_display=pb.SwitchDisplay(display=index))))

    def set_option(self, image_quality: int | None = None, custom_fps: int | None = None) -> None:
        opt = pb.OptionMessage()
        if image_quality is not None:
            opt.image_quality = image_quality  # type: ignore[assignment]
        if custom_fps is not None:
            opt.custom_fps = custom_fps
        self.send_message(pb.Message(misc=pb.Misc(option=opt)))

    def next_frame(self, after: float | None = None) -> Deferred[DecodedFrame]:
        """The first frame decoded at or after time C{after} (default: now)."""
        d: Deferred[DecodedFrame] = Deferred()
        if self.error is not None:
            d.errback(self.error)
            return d
        self._frame_waiters.append((self._clock.seconds() if after is None else after, d))
        return d

    def next_clipboard(self) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        if self.error is not None:
            d.errback(self.error)
            return d
        self._clipboard_waiters.append(d)
        return d

    def disconnect(self) -> None:
        self.send_message(pb.Message(misc=pb.Misc(close_reason="Closed by viewer")))
        if self.transport is not None:
            self.transport.loseConnection()


def describe(f: Any) -> str:
    """One user-facing line for an error from the session or the route."""
    err = getattr(f, "value", f)
    reason = getattr(err, "reason", None)
    if isinstance(reason, str):
        return str(err)
    return str(err) or type(err).__name__


def _set_cursor_position(session: ViewerSession, msg: pb.Message) -> None:
    session.cursor = (msg.cursor_position.x, msg.cursor_position.y)


def _set_cursor_shape(session: ViewerSession, msg: pb.Message) -> None:
    session.cursor_shape = msg.cursor_data


# The host's messages the viewer acts on, by Message union field; the rest
# are ignored.  (Lambdas call through the instance so subclasses can override.)
_HANDLERS: dict[str, Callable[[ViewerSession, pb.Message], None]] = {
    "hash": lambda s, m: s._login(m.hash),
    "login_response": lambda s, m: s._login_response(m.login_response),
    "video_frame": lambda s, m: s._video(m.video_frame),
    "test_delay": lambda s, m: s._test_delay(m),
    "clipboard": lambda s, m: s._clipboard(m.clipboard),
    "multi_clipboards": lambda s, m: s._multi_clipboards(m.multi_clipboards),
    "cursor_position": _set_cursor_position,
    "cursor_data": _set_cursor_shape,
    "message_box": lambda s, m: s._message_box(m.message_box),
    "misc": lambda s, m: s._misc(m.misc),
}
