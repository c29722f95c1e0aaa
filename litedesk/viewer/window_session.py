"""The viewer session the window uses: a L{ViewerSession} that reports arrivals.

The window redraws the cursor, copies the clipboard and shows notices as
they arrive instead of polling the session; a listener (anything with the
four methods of L{SessionListener}, the window in practice) hears of them.
Tk-free, so the connection controller can create it in tests on a Clock.
"""

from __future__ import annotations

from typing import Any, Protocol

from litedesk.proto import message_pb2 as pb
from litedesk.session.viewer_session import ViewerSession


class SessionListener(Protocol):
    def phase(self, what: str) -> None: ...

    def cursor_changed(self, shape: bool) -> None: ...

    def remote_clipboard_changed(self) -> None: ...

    def notice_changed(self) -> None: ...


class WindowSession(ViewerSession):
    """L{ViewerSession} that also tells the window what arrived."""

    def __init__(self, *a: Any, listener: SessionListener, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.listener = listener

    def handshakeCompleted(self) -> None:
        super().handshakeCompleted()
        self.listener.phase("login")

    def message_received(self, msg: pb.Message) -> None:
        super().message_received(msg)
        kind = msg.WhichOneof("union")
        if kind in ("cursor_position", "cursor_data"):
            self.listener.cursor_changed(kind == "cursor_data")
        elif kind in ("clipboard", "multi_clipboards"):
            self.listener.remote_clipboard_changed()
        elif kind == "message_box":
            self.listener.notice_changed()
