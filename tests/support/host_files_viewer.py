"""A recording viewer for L{litedesk.files.host_service.HostFiles}, and file helpers.

Shared by tests/test_files_host.py and tests/test_files_host_upload.py: the
service runs with a Clock and a C{send} that records; real files live in a
temporary root with an C{outside} directory beside it that nothing may touch.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from litedesk.files.host_service import HostFiles
from litedesk.files.root import FileRoot
from litedesk.proto import message_pb2 as pb

MTIME = 1_700_000_000


class Viewer:
    """Drives a HostFiles as a viewer would and records what it sends."""

    def __init__(self, root: str, rustdesk_resume: bool = False, digests: bool = True) -> None:
        self.clock = Clock()
        self.sent: list[pb.Message] = []
        self.registered: list[Any] = []
        self.files = HostFiles(
            FileRoot(root),
            self.sent.append,
            self.clock,
            register=self.registered.append,
            unregister=lambda: self.registered.append(None),
            digests=digests,
            rustdesk_resume=rustdesk_resume,
        )

    def act(self, **kw: Any) -> None:
        self.files.action(pb.FileAction(**kw))

    def respond(self, **kw: Any) -> None:
        self.files.response(pb.FileResponse(**kw))

    def take(self) -> list[pb.Message]:
        out, self.sent[:] = list(self.sent), []
        return out

    def responses(self) -> list[pb.FileResponse]:
        return [m.file_response for m in self.take() if m.HasField("file_response")]

    def run(self, turns: int = 100_000) -> None:
        """Let the reactor turn until nothing is scheduled."""
        for _ in range(turns):
            if not self.clock.getDelayedCalls():
                return
            self.clock.advance(0)

    def turn(self) -> None:
        """One reactor turn: run only the calls due now, not those they add
        (Clock.advance would run those too)."""
        due = [c for c in self.clock.calls if c.getTime() <= self.clock.seconds()]
        for c in due:
            self.clock.calls.remove(c)
            c.func(*c.args, **c.kw)

    def confirm(self, job: int, num: int, offset: int = 0, skip: bool = False) -> None:
        c = pb.FileTransferSendConfirmRequest(id=job, file_num=num)
        if skip:
            c.skip = True
        else:
            c.offset_blk = offset
        self.act(send_confirm=c)


def write_file(path: str, data: bytes, mtime: int = MTIME) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (mtime, mtime))


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def kinds(resps: list[pb.FileResponse]) -> list[str]:
    return [str(r.WhichOneof("union")) for r in resps]


class FilesCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = os.path.realpath(self.mktemp())
        self.root = os.path.join(self.base, "root")
        self.outside = os.path.join(self.base, "outside")
        os.makedirs(self.root)
        os.makedirs(self.outside)
        write_file(os.path.join(self.outside, "secret"), b"secret")
        self.v = Viewer(self.root)

    def p(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)
