"""The host's file-transfer session (docs/protocol.rst §12): placeholder.

L{HostFileSession} is mixed into L{litedesk.session.host_session.HostSession}.
After a C{LoginRequest{file_transfer}} the session calls
L{_start_file_transfer}; every C{FileAction} goes to L{_file_action}; when the
connection is lost L{_end_file_transfer} runs (whatever the session's kind).
"""

from __future__ import annotations

from typing import Any

from litedesk.proto import message_pb2 as pb

__all__ = ["HostFileSession"]


class HostFileSession:
    """File transfer inside a host session; the session provides C{ctx},
    C{send_message}, C{transport}, C{close}."""

    ctx: Any
    _files: Any = None

    def _start_file_transfer(self, ft: pb.FileTransfer) -> None:
        raise NotImplementedError

    def _file_action(self, action: pb.FileAction) -> None:
        pass

    def _file_response(self, resp: pb.FileResponse) -> None:
        pass

    def _end_file_transfer(self) -> None:
        pass
