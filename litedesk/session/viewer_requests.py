"""What a logged-in viewer may ask of the host: input, clipboard, display and options.

L{ViewerRequests} holds the handlers of a logged-in viewer's messages and the
host's pushes to it (cursor, clipboard), apart from L{HostSession}'s
connection life, limits and login, which decide whether these run at all.
A stock RustDesk client (C{rustdesk}) differs from a LiteDesk viewer in key
codes, wheel direction, clipboard encoding, codec changes and how view-only
is told (docs/protocol.rst §8.3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred

from litedesk.input.keys import KeyInput
from litedesk.input.mouse import MouseInput
from litedesk.proto import message_pb2 as pb
from litedesk.screen.cursor import CursorShape
from litedesk.session.host_messages import (
    MAX_CLIPBOARD,
    clipboard_message,
    clipboard_text,
    cursor_data,
    permission_info,
    pick_codec,
    supports_multi_clipboard,
    switch_display,
)
from litedesk.session.input_messages import key_from_proto, mouse_from_proto

if TYPE_CHECKING:
    from twisted.logger import Logger

    from litedesk.session.host_context import HostContext, StreamerLike


class ViewerRequests:
    """Mixed into L{litedesk.session.host_session.HostSession}; uses its state."""

    # Provided by HostSession and its MessageProtocol base.
    _log: Logger
    ctx: HostContext
    streamer: StreamerLike | None
    rustdesk: bool
    viewer_id: str
    codec: str
    default_codec: str
    display_index: int
    peer_version: str
    peer_platform: str
    _told_view_only: bool

    if TYPE_CHECKING:
        # Only declared for the type checker: at run time these are
        # HostSession's and MessageProtocol's, later in the MRO.
        state: str

        def send_message(self, msg: pb.Message) -> None: ...

        def close(self, reason: str, **fields: Any) -> None: ...

    def _multi_clipboards(self, clips: pb.MultiClipboards) -> None:
        for c in clips.clipboards:
            self._clipboard(c)

    def _send_permissions(self) -> None:
        """Tell a RustDesk client what is off, as a RustDesk host does at the
        start of a session: it then disables its input and clipboard instead
        of sending events the host refuses.  (LiteDesk viewers learn it from
        the message box of L{_input}.)"""
        if not self.rustdesk:
            return
        if self.ctx.view_only or self.ctx.input is None:
            self.send_message(permission_info(pb.PermissionInfo.Keyboard, False))
        if self.ctx.view_only or self.ctx.clipboard is None:
            self.send_message(permission_info(pb.PermissionInfo.Clipboard, False))

    def _mouse_event(self, ev: pb.MouseEvent) -> None:
        self._input(mouse_from_proto(ev, rustdesk=self.rustdesk))

    def _key_event(self, ev: pb.KeyEvent) -> None:
        key = key_from_proto(ev, rustdesk=self.rustdesk)
        if key is None:
            # A key up a RustDesk Linux host drops too, or a translate-mode
            # event RustDesk ignores as well (input_messages' docstring).
            self._log.debug(
                "Key event from {viewer} ignored (mode {mode}, {field})",
                viewer=self.viewer_id,
                mode=ev.mode,
                field=ev.WhichOneof("union"),
            )
            return
        self._input(key)

    def _input(self, ev: MouseInput | KeyInput) -> None:
        if self.ctx.view_only or self.ctx.input is None:
            if self.rustdesk:
                # Told once by permission_info; a RustDesk client shows a
                # message box of type "error" as a failed connection.
                return
            if not self._told_view_only:
                self._told_view_only = True
                self.send_message(
                    pb.Message(
                        message_box=pb.MessageBox(
                            msgtype="error",
                            title="View only",
                            text="view only: this host does not accept input",
                        )
                    )
                )
            return
        done = self.ctx.input.submit(ev)
        # Once the event is in the X server, the streamer serves the damage
        # it causes at once instead of at its next frame slot (issue 15).
        streamer = self.streamer
        if streamer is not None and isinstance(done, Deferred):
            done.addCallback(lambda _result: streamer.input_injected())

    def _clipboard(self, clip: pb.Clipboard) -> None:
        if self.ctx.view_only or self.ctx.clipboard is None:
            return
        text, why = clipboard_text(clip)
        if text is None:
            self._log.info("Clipboard from {viewer} refused: {why}", viewer=self.viewer_id, why=why)
            return
        self.ctx.clipboard.set_from_peer(text)

    def send_cursor_position(self, x: int, y: int) -> None:
        if self.state == "active":
            self.send_message(pb.Message(cursor_position=pb.CursorPosition(x=x, y=y)))

    def send_cursor_shape(self, shape: CursorShape) -> None:
        if self.state != "active":
            return
        self.send_message(cursor_data(shape))

    def _send_current_clipboard(self) -> None:
        # A new viewer gets the host's clipboard as it is now; later changes
        # arrive through HostContext.clipboard_changed.
        if self.ctx.read_clipboard is None or self.ctx.view_only:
            return
        d = self.ctx.read_clipboard()

        def got(text: str | None) -> None:
            if text:
                self.send_clipboard(text)

        d.addCallbacks(got, lambda f: None)

    def send_clipboard(self, text: str) -> None:
        if self.state != "active" or self.ctx.view_only:
            return
        if len(text.encode("utf-8")) > MAX_CLIPBOARD:
            return
        multi = self.rustdesk and supports_multi_clipboard(self.peer_version, self.peer_platform)
        self.send_message(clipboard_message(text, rustdesk=self.rustdesk, multi=multi))

    def _misc(self, misc: pb.Misc) -> None:
        kind = misc.WhichOneof("union")
        if kind == "close_reason":
            self.close(f"viewer closed: {misc.close_reason}")
            return
        if self.streamer is None:
            return
        if (kind == "refresh_video" and misc.refresh_video) or kind == "refresh_video_display":
            self.streamer.force_keyframe()
        elif kind == "switch_display":
            self._switch_display(self.streamer, misc.switch_display.display)
        elif kind == "option":
            self._option(misc.option)

    def _switch_display(self, streamer: StreamerLike, index: int) -> None:
        """Stream monitor C{index} and answer with its geometry, which the
        viewer maps its input through; the protocol has no refusal, so a
        monitor the host lacks is only logged."""
        displays = self.ctx.refresh_displays()
        if not 0 <= index < len(displays):
            self._log.info(
                "{viewer} asked for monitor {index}; there are {count}: ignored",
                viewer=self.viewer_id,
                index=index,
                count=len(displays),
            )
            return
        self.display_index = index
        streamer.switch_display(index)
        self.send_message(switch_display(index, displays[index]))

    def _option(self, opt: pb.OptionMessage) -> None:
        """A viewer's option change during the session (C{Misc.option})."""
        assert self.streamer is not None
        if opt.image_quality:
            self.streamer.set_quality(opt.image_quality)
        if opt.custom_fps:
            self.streamer.set_custom_fps(opt.custom_fps)
        if self.rustdesk and opt.HasField("supported_decoding"):
            # A RustDesk client re-announces its decoders when one fails
            # (its codec is then listed with ability 0) or when its user
            # picks another codec; the stream moves to the new choice, from
            # a key frame.
            codec = pick_codec(opt, self.default_codec, rustdesk=True)
            set_codec = getattr(self.streamer, "set_codec", None)
            if codec != self.codec and set_codec is not None:
                self._log.info(
                    "Viewer {viewer} switches codec from {old} to {new}",
                    viewer=self.viewer_id,
                    old=self.codec,
                    new=codec,
                )
                self.codec = codec
                set_codec(codec)
