"""The viewer's side of a session: log in, decode the screen, send input.

Shared by the headless viewer (C{litedesk-viewer --headless}) and the window.
Runs over the pinned TLS stream to a LiteDesk host (the viewer is the TLS
client) and inside RustDesk's secure channel to a stock RustDesk host; see
L{litedesk.session.host_session} for the message flow.

Video: the C{LoginRequest} announces every codec this viewer decodes
(L{litedesk.screen.decode.decodable_codecs}) and prefers the one asked for,
else H.264 from a LiteDesk host (as always) and VP9 from a RustDesk host (a
RustDesk host takes a VP9 preference unconditionally; with none, 1.2 to
1.4 hosts pick VP8, AV1 or a hardware H.264/H.265 encoder depending on the
version and the machine).  Frames of any announced codec
decode, and a codec switch mid-session switches the decoder.  A frame that
cannot be shown asks for a key frame (L{KeyFrameRequests}); a codec that
keeps failing is withdrawn with a new C{SupportedDecoding}, as RustDesk's
client does.
"""

from __future__ import annotations

import platform
import random
import socket
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.proto import message_pb2 as pb
from litedesk.screen.backpressure import send_without_delay
from litedesk.screen.decode import DecodedFrame, KeyFrameRequests, VideoDecoder, decodable_codecs
from litedesk.screen.tile_patch import patched
from litedesk.screen.tiles import VERSION as TILES_VERSION
from litedesk.screen.tiles import TileError
from litedesk.session.framing import MessageProtocol
from litedesk.session.host_key import HostKeyMismatch
from litedesk.session.login_errors import viewer_reason
from litedesk.session.password import login_password
from litedesk.session.viewer_stats import ViewerStats

VERSION = "1.4.9"
IDLE_TIMEOUT = 30.0

_CODEC_OF_FIELD = {"vp9s": "vp9", "vp8s": "vp8", "av1s": "av1", "h264s": "h264", "h265s": "h265"}
_PREFER = {
    "vp9": pb.SupportedDecoding.VP9,
    "vp8": pb.SupportedDecoding.VP8,
    "av1": pb.SupportedDecoding.AV1,
    "h264": pb.SupportedDecoding.H264,
    "h265": pb.SupportedDecoding.H265,
}
_ABILITY = {
    "vp9": "ability_vp9",
    "vp8": "ability_vp8",
    "av1": "ability_av1",
    "h264": "ability_h264",
    "h265": "ability_h265",
}


class SessionError(Exception):
    """The session failed; C{reason} is one short user-facing phrase."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@implementer(IHandshakeListener)
class ViewerSession(MessageProtocol):
    """One session with a host, as seen from the viewer.

    @ivar codec: the codec asked for (C{None}: the host's kind decides).
    @ivar rustdesk: the host is a stock RustDesk host (the session runs in
        RustDesk's secure channel).  Whoever starts the session there sets
        it before the host's C{Hash} arrives; it only changes the codec
        preference announced at login.
    @ivar unsupported: codecs withdrawn after they kept failing to decode.
    """

    _log = Logger()
    idle_timeout = IDLE_TIMEOUT

    def __init__(
        self,
        clock: IReactorTime,
        peer_id: str,
        password: str,
        *,
        my_id: str = "",
        codec: str | None = None,
        rustdesk: bool = False,
        image_quality: int = pb.Balanced,
        custom_fps: int = 0,
        on_frame: Callable[[DecodedFrame], None] | None = None,
        file_transfer: pb.FileTransfer | None = None,
        port_forward: pb.PortForward | None = None,
    ) -> None:
        """
        @param codec: the codec to ask the host for, one of
            L{decodable_codecs}; C{None} for H.264 from a LiteDesk host and
            VP9 from a RustDesk host.
        @param file_transfer: open a file-transfer session (no screen); the
            host's C{FileResponse}s go to L{on_file_response}.
        @param port_forward: open a port-forward session: once logged in the
            stream carries the tunnelled bytes (docs/protocol.rst §13).
        @raise ValueError: C{codec} cannot be decoded here.
        """
        if codec is not None and codec not in decodable_codecs():
            raise ValueError(f"cannot decode {codec!r} (can: {sorted(decodable_codecs())})")
        self.clock = clock
        self._clock: IReactorTime = clock
        self.peer_id = peer_id
        self.password = password
        self.my_id = my_id or f"viewer-{socket.gethostname()}"
        self.codec = codec
        self.rustdesk = rustdesk
        self.image_quality = image_quality
        self.custom_fps = custom_fps
        self.on_frame = on_frame
        self.file_transfer = file_transfer
        self.port_forward = port_forward
        self.on_file_response: Callable[[pb.FileResponse], None] | None = None
        # An upload's send_confirm comes from the host as a FileAction
        # (hbb_common src/fs.rs new_send_confirm).
        self.on_file_action: Callable[[pb.FileAction], None] | None = None
        self.logged_in: Deferred[pb.PeerInfo] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.peer_info: pb.PeerInfo | None = None
        self.decoder = VideoDecoder(codec or "h264")
        self.key_frame_requests = KeyFrameRequests()
        self.unsupported: set[str] = set()
        self.latest: DecodedFrame | None = None
        self.stats = ViewerStats()
        self.remote_clipboard: str | None = None
        self.view_only_notice: str | None = None
        self.cursor: tuple[int, int] | None = None
        self.cursor_shape: pb.CursorData | None = None
        self.display = 0
        self.display_switched_at: float | None = None  # the host's last switch answer
        self.error: SessionError | None = None
        self._frame_waiters: list[tuple[float, Deferred[DecodedFrame]]] = []
        self._clipboard_waiters: list[Deferred[str]] = []
        self._pings: dict[int, float] = {}

    # -- connection ----------------------------------------------------------

    def handshakeCompleted(self) -> None:
        super().handshakeCompleted()
        self._log.debug("TLS handshake with the host completed")
        # Input is small writes (a click, a key): with Nagle's algorithm one
        # waits in the kernel until the previous one is acknowledged, which
        # the host's delayed ACK can put off by 40 ms.  QUIC has no TCP socket.
        send_without_delay(self.transport)

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
            self._switch_display(misc.switch_display)

    def _switch_display(self, sd: pb.SwitchDisplay) -> None:
        self.display = sd.display
        self.display_switched_at = self._clock.seconds()
        self.decoder.reset()
        # A RustDesk host also sends it when the display's resolution
        # changes: keep the geometry the viewer maps input through current.
        displays = self.peer_info.displays if self.peer_info is not None else []
        if 0 <= sd.display < len(displays) and sd.width > 0 and sd.height > 0:
            d = displays[sd.display]
            d.x, d.y, d.width, d.height = sd.x, sd.y, sd.width, sd.height

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
        opt.supported_decoding.CopyFrom(self.supported_decoding())
        if self.file_transfer is not None:
            req.file_transfer.CopyFrom(self.file_transfer)
        elif self.port_forward is not None:
            req.port_forward.CopyFrom(self.port_forward)
        self.send_message(pb.Message(login_request=req))

    def supported_decoding(self) -> pb.SupportedDecoding:
        """What this viewer decodes, as announced at login and after a codec
        is withdrawn (RustDesk's Decoder::supported_decodings)."""
        preferred = self.codec or ("vp9" if self.rustdesk else "h264")
        dec = pb.SupportedDecoding(prefer=_PREFER[preferred])
        for codec in decodable_codecs() - self.unsupported:
            setattr(dec, _ABILITY[codec], 1)
        dec.litedesk_tiles = TILES_VERSION
        return dec

    def _login_response(self, resp: pb.LoginResponse) -> None:
        if resp.WhichOneof("union") == "error":
            self.fail(viewer_reason(resp.error), resp.error)
            return
        self.peer_info = resp.peer_info
        self.display = resp.peer_info.current_display
        if not self.logged_in.called:
            self.logged_in.callback(resp.peer_info)

    def _file_response(self, resp: pb.FileResponse) -> None:
        if self.on_file_response is not None:
            self.on_file_response(resp)

    def _file_action(self, action: pb.FileAction) -> None:
        if self.on_file_action is not None:
            self.on_file_action(action)

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
        if which == "tiles":
            self._tiles(vf.tiles)
            return
        codec = _CODEC_OF_FIELD.get(which or "")
        if codec is None:
            self._unsupported_video(which)
            return
        if codec != self.decoder.codec:
            self._log.info(
                "Host video switched from {old} to {new}", old=self.decoder.codec, new=codec
            )
            self.decoder.reset(codec)
        self.stats.codec = codec
        width, height = self.display_size() or (0, 0)
        for ef in getattr(vf, codec + "s").frames:
            self.stats.video_bytes += len(ef.data)
            decoded = self.decoder.decode(ef.data, ef.key, ef.pts, width, height)
            self.stats.decode_errors = self.decoder.errors
            if decoded is not None:
                self.key_frame_requests.picture_decoded()
                self._show(decoded, ef.key)
        if self.decoder.waiting_for_key:
            self._ask_key_frame(codec, self.decoder.last_error or "no key frame yet")
        if self.decoder.gave_up or codec not in decodable_codecs():
            self._withdraw(codec)

    def _tiles(self, frames: pb.EncodedVideoFrames) -> None:
        """Screen tiles: patched into a copy of the picture shown last."""
        for ef in frames.frames:
            self.stats.video_bytes += len(ef.data)
            if self.latest is None or self.decoder.waiting_for_key:
                continue  # the key frame they patch is missing: asked for below
            try:
                shown = patched(self.latest, ef.data, ef.pts)
            except TileError as e:
                # The picture shown now lacks a change: a key frame repairs
                # it (one request until a picture decodes, as for video).
                self.stats.tile_errors += 1
                self._log.warn("Screen tiles refused: {reason}", reason=e)
                self._ask_key_frame("tiles", str(e))
                continue
            self.stats.tiles += 1
            self._show(shown, False)
        if self.decoder.waiting_for_key:
            self._ask_key_frame("tiles", "no key frame yet")

    def _ask_key_frame(self, kind: str, reason: str) -> None:
        """Send C{refresh_video} unless one is outstanding (L{KeyFrameRequests})."""
        if self.key_frame_requests.need(self._clock.seconds()):
            self.stats.key_frame_requests += 1
            self._log.info(
                "Asking the host for a key frame ({codec}: {reason})", codec=kind, reason=reason
            )
            self.refresh()

    def _show(self, decoded: DecodedFrame, key: bool) -> None:
        now = self._clock.seconds()
        self.stats.frames += 1
        if key:
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

    def _unsupported_video(self, which: str | None) -> None:
        # RustDesk's raw rgb/yuv frames (web clients only) or a member added
        # after this viewer: nothing to show.  Logged once, then counted.
        self.stats.unsupported_frames += 1
        if self.stats.unsupported_frames == 1:
            self._log.warn(
                "Host sends video this viewer cannot decode ({kind}); ignored",
                kind=which or "unknown VideoFrame member",
            )

    def _withdraw(self, codec: str) -> None:
        """Tell the host this viewer cannot decode C{codec}, once (client.rs
        start_video_thread: mark_unsupported, update_supported_decodings)."""
        if codec in self.unsupported:
            return
        self.unsupported.add(codec)
        self._log.warn(
            "Withdrawing {codec} from the decoders announced to the host ({reason})",
            codec=codec,
            reason=self.decoder.last_error or "no decoder",
        )
        option = pb.OptionMessage()
        option.supported_decoding.CopyFrom(self.supported_decoding())
        self.send_message(pb.Message(misc=pb.Misc(option=option)))

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
        """A frame decoded at or after time C{after} (default: now); the latest
        at once if it already was (a fast host's frame can beat the caller)."""
        d: Deferred[DecodedFrame] = Deferred()
        if self.error is not None:
            d.errback(self.error)
            return d
        shown = self.stats.last_frame_at
        if after is not None and self.latest is not None and shown is not None and shown >= after:
            d.callback(self.latest)
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
    "file_response": lambda s, m: s._file_response(m.file_response),
    "file_action": lambda s, m: s._file_action(m.file_action),
}
