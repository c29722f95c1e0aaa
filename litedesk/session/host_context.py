"""What every session of one host agent shares: the L{HostContext}.

The host agent (L{litedesk.host.agent}) builds one context and every
L{litedesk.session.host_session.HostSession} reads it: the login verifier,
the screen streamer factory, the displays, the input worker and clipboard,
the admission limits and the live sessions it fans cursor and clipboard
changes out to.  It is separate from the session so that the agent can
assemble it, and tests can fake its parts, without the session's protocol
code; the parts are described by the small protocols here, not by their
implementations.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from litedesk.screen.codec import EncodedFrame
from litedesk.screen.cursor import CursorShape
from litedesk.session.admission import Admission
from litedesk.session.login import LoginVerifier

__all__ = [
    "DISPLAYS_REUSED_FOR",
    "ClipboardLike",
    "Display",
    "HostContext",
    "InputLike",
    "LiveSession",
    "StreamerLike",
]

_log = Logger()

#: Seconds a monitor listing is reused: a viewer flooding C{SwitchDisplay}
#: costs one listing (about 1 ms on the reactor thread) a second at most.
DISPLAYS_REUSED_FOR = 1.0


class StreamerLike(Protocol):
    def start(self) -> None: ...
    def stop(self) -> Any: ...
    def force_keyframe(self) -> None: ...
    def switch_display(self, index: int) -> None: ...
    def set_quality(self, quality: int) -> None: ...
    def set_custom_fps(self, fps: int | float | None) -> None: ...
    def on_rtt(self, rtt: float) -> None: ...
    def input_injected(self) -> None: ...
    def set_tiles(self, enabled: bool) -> None: ...


class InputLike(Protocol):
    def submit(self, ev: object) -> Any: ...
    def release_all(self) -> Any: ...


class ClipboardLike(Protocol):
    def set_from_peer(self, text: str) -> Any: ...


class LiveSession(Protocol):
    """A logged-in session as the context sees it (a HostSession)."""

    transport: Any

    def send_cursor_position(self, x: int, y: int) -> None: ...
    def send_cursor_shape(self, shape: CursorShape) -> None: ...
    def send_clipboard(self, text: str) -> None: ...


@dataclass(frozen=True)
class Display:
    x: int
    y: int
    width: int
    height: int
    name: str = ""
    primary: bool = False


@dataclass
class HostContext:
    """What every session of one host agent shares.

    @ivar make_streamer: builds a streamer for one session:
        C{make_streamer(deliver, buffered, codec)}.
    @ivar displays: the monitors (from the capturer at start-up, then as
        L{refresh_displays} last found them).
    @ivar list_displays: lists the monitors now (None: C{displays} stays).
    @ivar input: the host's serialised injector, or None (no input at all).
    @ivar clipboard: the host clipboard watcher, or None.
    @ivar sessions: the live logged-in sessions (for --max-viewers and the
        clipboard fan-out).
    """

    peer_id: str
    verifier: LoginVerifier
    clock: IReactorTime
    make_streamer: Callable[[Callable[[EncodedFrame], None], Callable[[], int], str], StreamerLike]
    displays: list[Display]
    input: InputLike | None = None
    clipboard: ClipboardLike | None = None
    view_only: bool = False
    max_viewers: int = 0
    hostname: str = field(default_factory=socket.gethostname)
    username: str = field(default_factory=getpass.getuser)
    sessions: set[LiveSession] = field(default_factory=set)
    read_clipboard: Callable[[], Any] | None = None
    cursor_position: tuple[int, int] | None = None
    cursor_shape: CursorShape | None = None
    # Unauthenticated sessions per source and in total; one with the default
    # limits is made when none is given, so no session path goes unbounded.
    admission: Admission | None = None
    # File transfer sessions (None: refused) and the forward targets allowed
    # (empty: every forward refused); docs/protocol.rst §12-13.
    file_root: Path | None = None
    allow_forward: tuple[tuple[str, int], ...] = ()
    list_displays: Callable[[], list[Display]] | None = None
    _listed_at: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.admission is None:
            self.admission = Admission(self.clock)

    def refresh_displays(self) -> list[Display]:
        """The monitors now, as C{displays} becomes.

        Sessions ask at each login and monitor switch: a monitor plugged in
        (or a layout changed) after start-up is then offered, and the
        geometry a viewer maps its input through is the one the streamer
        captures (it reads the monitors live).  Listing takes about 1 ms
        (an X connection and a few RandR round trips on Xvfb), once per login
        or switch, so it runs on the reactor thread; a listing is reused for
        L{DISPLAYS_REUSED_FOR}.  If it fails or finds nothing (X
        restarting), the last list stays.
        """
        now = self.clock.seconds()
        if self.list_displays is None or (
            self._listed_at is not None and now - self._listed_at < DISPLAYS_REUSED_FOR
        ):
            return self.displays
        self._listed_at = now
        try:
            found = self.list_displays()
        except Exception as e:  # whatever X raises: the last list is still a list
            _log.warn("Cannot list the monitors, keeping the last list: {error}", error=e)
            return self.displays
        if found and found != self.displays:
            _log.info(
                "Monitors changed: {old} -> {new}",
                old=_describe(self.displays),
                new=_describe(found),
            )
            self.displays = found
        return self.displays

    def cursor_moved(self, x: int, y: int) -> None:
        self.cursor_position = (x, y)
        for s in list(self.sessions):
            s.send_cursor_position(x, y)

    def cursor_changed(self, shape: CursorShape) -> None:
        self.cursor_shape = shape
        for s in list(self.sessions):
            s.send_cursor_shape(shape)

    def clipboard_changed(self, text: str) -> None:
        """The host's clipboard changed: tell every logged-in viewer."""
        for s in list(self.sessions):
            s.send_clipboard(text)


def _describe(displays: list[Display]) -> str:
    return ", ".join(f"{d.width}x{d.height}+{d.x}+{d.y}" for d in displays) or "none"
