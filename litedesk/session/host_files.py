"""The host's file-transfer session (docs/protocol.rst §12).

L{HostFileSession} is mixed into L{litedesk.session.host_session.HostSession}.
After a C{LoginRequest{file_transfer}} the session calls
L{HostFileSession._start_file_transfer}; every C{FileAction} goes to
L{HostFileSession._file_action}, every C{FileResponse} the viewer sends (an
upload's digests, blocks, done, error) to L{HostFileSession._file_response};
when the connection is lost L{HostFileSession._end_file_transfer} runs
(whatever the session's kind).  The work is L{litedesk.files.host_service.HostFiles}'s;
this mixin only connects it to the session: its sends, clock, transport (the
download's producer is registered there) and the viewer's version, which
decides RustDesk's per-file digests (C{can_enable_overwrite_detection},
1.1.10 and later; rustdesk C{src/server/connection.rs}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from litedesk.files.host_service import HostFiles
from litedesk.files.root import FileRoot
from litedesk.proto import message_pb2 as pb
from litedesk.session.host_messages import version_number

__all__ = ["HostFileSession"]

# RustDesk peers from this version on confirm each file of a transfer.
_DIGEST_VERSION = (1, 1, 10)


class HostFileSession:
    """File transfer inside a host session; the session provides C{ctx},
    C{clock}, C{send_message}, C{transport}, C{peer_version}, C{rustdesk}
    and C{_log}."""

    ctx: Any
    clock: Any
    transport: Any
    peer_version: str
    rustdesk: bool
    viewer_id: str
    peer: str
    _log: Logger
    _files: HostFiles | None = None
    # Provided by MessageProtocol (declared only: a method here would shadow it).
    send_message: Callable[[pb.Message], None]

    def _start_file_transfer(self, ft: pb.FileTransfer) -> None:
        """Logged in for file transfer: serve the root and list the login's dir."""
        root = self.ctx.file_root
        assert root is not None  # the login refuses file transfer without one
        self._files = HostFiles(
            FileRoot(root),
            self.send_message,
            self.clock,
            register=self._register_file_producer,
            unregister=self._unregister_file_producer,
            # A LiteDesk viewer sends LiteDesk's version (a RustDesk one).
            digests=version_number(self.peer_version) >= _DIGEST_VERSION,
            rustdesk_resume=bool(getattr(self, "rustdesk", False)),
        )
        self._files.start(ft)

    def _register_file_producer(self, producer: IPushProducer) -> None:
        if self.transport is not None:
            self.transport.registerProducer(producer, True)

    def _unregister_file_producer(self) -> None:
        if self.transport is not None:
            self.transport.unregisterProducer()

    def _file_action(self, action: pb.FileAction) -> None:
        if self._files is not None:
            self._files.action(action)

    def _file_response(self, resp: pb.FileResponse) -> None:
        if self._files is not None:
            self._files.response(resp)

    def _end_file_transfer(self) -> None:
        files, self._files = self._files, None
        if files is not None:
            files.close()
