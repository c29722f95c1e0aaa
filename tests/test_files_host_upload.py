"""litedesk.files.host_upload through HostFiles: files a viewer sends to the host.

New files, an existing file shown to the viewer and overwritten only by
its blocks (or kept when skipped), resume after an interrupted upload (the
LiteDesk viewer's C{send_confirm{offset}} and stock RustDesk's digest),
size checks, a zstd bomb, cancel, names outside the root, and a full disk
on a 1 MiB tmpfs (CI runs as root): the viewer is told "No space left on
device", the partial is removed and the session goes on.
"""

from __future__ import annotations

import os
import random
import subprocess
from typing import Any

import zstandard
from twisted.trial.unittest import SynchronousTestCase

from litedesk.files.blocks import BLOCK_SIZE, encode_block
from litedesk.files.host_service import MAX_JOBS
from litedesk.files.root import OUTSIDE
from litedesk.proto import message_pb2 as pb

from .support.host_files_viewer import MTIME, FilesCase, Viewer, read_file, write_file


class UploadTests(FilesCase):
    def _receive(self, job: int, dest: str, files: list[tuple[str, int]], **kw: Any) -> None:
        entries = [pb.FileEntry(name=n, size=s, modified_time=MTIME) for n, s in files]
        self.v.act(receive=pb.FileTransferReceiveRequest(id=job, path=dest, files=entries, **kw))

    def _digest(self, job: int, num: int, size: int, resume: bool = False) -> None:
        self.v.respond(
            digest=pb.FileTransferDigest(
                id=job, file_num=num, file_size=size, last_modified=MTIME, is_resume=resume
            )
        )

    def _blocks(self, job: int, num: int, data: bytes, name: str = "f", end: bool = True) -> None:
        for i in range(0, len(data), BLOCK_SIZE):
            payload, compressed = encode_block(data[i : i + BLOCK_SIZE], name)
            self.v.respond(
                block=pb.FileTransferBlock(
                    id=job, file_num=num, data=payload, compressed=compressed
                )
            )
        if end:
            self.v.respond(block=pb.FileTransferBlock(id=job, file_num=num))

    def test_new_files(self) -> None:
        a = b"alpha\n" * 70_000
        b = random.Random(3).randbytes(BLOCK_SIZE * 2 + 17)
        self._receive(5, "up", [("a.txt", len(a)), ("deep/b.bin", len(b))])
        self._digest(5, 0, len(a))
        (confirm,) = self.v.take()
        self.assertEqual(
            confirm.file_action.send_confirm,
            pb.FileTransferSendConfirmRequest(id=5, file_num=0, offset_blk=0),
        )
        self._blocks(5, 0, a, "a.txt")
        self._digest(5, 1, len(b))
        self.assertEqual(self.v.take()[0].file_action.send_confirm.offset_blk, 0)
        self._blocks(5, 1, b)
        self.v.respond(done=pb.FileTransferDone(id=5, file_num=2))
        (done,) = self.v.responses()
        self.assertEqual((done.done.id, done.done.file_num), (5, 2))
        self.assertEqual(read_file(self.p("up", "a.txt")), a)
        self.assertEqual(read_file(self.p("up", "deep", "b.bin")), b)
        self.assertEqual(os.stat(self.p("up", "a.txt")).st_mtime, MTIME)
        self.assertEqual(sorted(os.listdir(self.p("up"))), ["a.txt", "deep"])
        self.assertEqual(self.v.files.jobs, {})

    def test_existing_file_is_shown_and_overwritten_only_by_blocks(self) -> None:
        write_file(self.p("up", "a.txt"), b"host version", mtime=MTIME - 5)
        self._receive(1, "up", [("a.txt", 3)])
        self._digest(1, 0, 3)
        (d,) = self.v.responses()
        self.assertTrue(d.digest.is_upload)
        self.assertFalse(d.digest.is_identical)
        self.assertEqual((d.digest.file_size, d.digest.last_modified), (12, MTIME - 5))
        self.assertEqual(read_file(self.p("up", "a.txt")), b"host version")
        self._blocks(1, 0, b"new")
        self.v.respond(done=pb.FileTransferDone(id=1, file_num=1))
        self.assertEqual(read_file(self.p("up", "a.txt")), b"new")

    def test_existing_file_skipped_stays(self) -> None:
        write_file(self.p("up", "a.txt"), b"host version")
        self._receive(1, "up", [("a.txt", 3), ("b.txt", 2)])
        self._digest(1, 0, 3)
        self.v.take()
        self._digest(1, 1, 2)  # the viewer moved on: a.txt skipped
        self._blocks(1, 1, b"bb")
        self.v.respond(done=pb.FileTransferDone(id=1, file_num=2))
        self.assertEqual(read_file(self.p("up", "a.txt")), b"host version")
        self.assertEqual(read_file(self.p("up", "b.txt")), b"bb")
        self.assertEqual(sorted(os.listdir(self.p("up"))), ["a.txt", "b.txt"])

    def test_identical_file_is_reported(self) -> None:
        write_file(self.p("same.txt"), b"abc")
        self._receive(1, "", [("same.txt", 3)])
        self._digest(1, 0, 3)
        (d,) = self.v.responses()
        self.assertTrue(d.digest.is_identical)

    def _interrupted(self, data: bytes, have: int) -> None:
        self._receive(1, "up", [("r.bin", len(data))])
        self._digest(1, 0, len(data), resume=True)
        self.v.take()
        self._blocks(1, 0, data[:have], end=False)
        self.v.files.close()  # the connection is lost
        self.assertEqual(sorted(os.listdir(self.p("up"))), ["r.bin.digest", "r.bin.download"])

    def test_resume_litedesk_viewer(self) -> None:
        data = random.Random(5).randbytes(3 * BLOCK_SIZE)
        self._interrupted(data, 2 * BLOCK_SIZE)
        self.v = Viewer(self.root)
        self._receive(2, "up", [("r.bin", len(data))])
        self._digest(2, 0, len(data), resume=True)
        (c,) = self.v.take()
        self.assertEqual(c.file_action.send_confirm.offset_blk, 2 * BLOCK_SIZE)
        self._blocks(2, 0, data[2 * BLOCK_SIZE :])
        self.v.respond(done=pb.FileTransferDone(id=2, file_num=1))
        self.assertEqual(read_file(self.p("up", "r.bin")), data)
        self.assertEqual(os.listdir(self.p("up")), ["r.bin"])

    def test_resume_rustdesk_viewer(self) -> None:
        """Stock RustDesk: the host's digest says identical + transferred_size,
        the viewer confirms that offset and sends the rest."""
        data = random.Random(6).randbytes(2 * BLOCK_SIZE + 99)
        self._interrupted(data, BLOCK_SIZE)
        self.v = Viewer(self.root, rustdesk_resume=True)
        self._receive(2, "up", [("r.bin", len(data))])
        self._digest(2, 0, len(data), resume=True)
        (d,) = self.v.responses()
        self.assertTrue(d.digest.is_upload and d.digest.is_identical)
        self.assertEqual(d.digest.transferred_size, BLOCK_SIZE)
        self.v.confirm(2, 0, offset=BLOCK_SIZE)
        self._blocks(2, 0, data[BLOCK_SIZE:])
        self.v.respond(done=pb.FileTransferDone(id=2, file_num=1))
        self.assertEqual(read_file(self.p("up", "r.bin")), data)

    def test_no_resume_for_another_source(self) -> None:
        data = b"x" * 1000
        self._interrupted(data, 500)
        self.v = Viewer(self.root)
        self._receive(2, "up", [("r.bin", 999)])
        self._digest(2, 0, 999, resume=True)
        (c,) = self.v.take()
        self.assertEqual(c.file_action.send_confirm.offset_blk, 0)
        self._blocks(2, 0, b"y" * 999)
        self.assertEqual(read_file(self.p("up", "r.bin")), b"y" * 999)

    def test_short_file_is_an_error_and_leaves_nothing(self) -> None:
        write_file(self.p("keep.txt"), b"original")
        self._receive(1, "", [("keep.txt", 10)])
        self._digest(1, 0, 10)
        self.v.take()
        self._blocks(1, 0, b"short")
        (e,) = self.v.responses()
        self.assertEqual(e.error.id, 1)
        self.assertIn("10", e.error.error)
        self.assertEqual(read_file(self.p("keep.txt")), b"original")
        self.assertEqual(os.listdir(self.root), ["keep.txt"])
        self.assertEqual(self.v.files.jobs, {})

    def test_zstd_bomb_ends_the_job(self) -> None:

        self._receive(1, "", [("f", 100)])
        self._digest(1, 0, 100)
        self.v.take()
        bomb = zstandard.ZstdCompressor().compress(bytes(64 << 20))
        self.v.respond(block=pb.FileTransferBlock(id=1, file_num=0, data=bomb, compressed=True))
        (e,) = self.v.responses()
        self.assertIn("decompresses", e.error.error)
        self.assertEqual(os.listdir(self.root), [])

    def test_cancel_removes_the_partial(self) -> None:
        self._receive(1, "", [("f", 100)])
        self._digest(1, 0, 100)
        self._blocks(1, 0, b"x" * 50, end=False)
        self.v.act(cancel=pb.FileTransferCancel(id=1))
        self.assertEqual(os.listdir(self.root), [])
        self.v.take()
        self._blocks(1, 0, b"x" * 50)  # in flight: dropped quietly
        self.assertEqual(self.v.take(), [])

    def test_names_outside_refuse_the_job(self) -> None:
        for i, name in enumerate(["../x", "/etc/cron.d/x", "ok/../../x", "a\x00b"]):
            self._receive(i + 1, "", [("fine", 1), (name, 1)])
        self._receive(9, "../outside", [("x", 1)])
        errors = [r.error for r in self.v.responses()]
        self.assertEqual(
            [(e.error, e.file_num) for e in errors], [(OUTSIDE, 1)] * 4 + [(OUTSIDE, 0)]
        )
        self.assertEqual(self.v.files.jobs, {})

    def test_final_symlink_out_is_refused(self) -> None:
        os.symlink(os.path.join(self.outside, "secret"), self.p("link"))
        self._receive(1, "", [("link", 3)])
        (e,) = self.v.responses()
        self.assertEqual(e.error.error, OUTSIDE)
        self.assertEqual(read_file(os.path.join(self.outside, "secret")), b"secret")

    def test_viewer_error_keeps_the_partial(self) -> None:
        self._receive(1, "", [("f", 100)])
        self._digest(1, 0, 100, resume=True)
        self._blocks(1, 0, b"x" * 50, end=False)
        self.v.take()
        self.v.respond(error=pb.FileTransferError(id=1, error="read failed", file_num=0))
        (e,) = self.v.responses()
        self.assertEqual(e.error.error, "read failed")
        self.assertEqual(sorted(os.listdir(self.root)), ["f.digest", "f.download"])

    def test_job_limit(self) -> None:
        for i in range(MAX_JOBS + 1):
            self._receive(i, "", [(f"f{i}", 1)])
        (e,) = self.v.responses()
        self.assertEqual(e.error.id, MAX_JOBS)
        self.assertEqual(len(self.v.files.jobs), MAX_JOBS)
        self._receive(0, "", [("again", 1)])
        self.assertIn("in use", self.v.responses()[0].error.error)


class DiskFullTests(SynchronousTestCase):
    """A 1 MiB tmpfs as the root (CI runs as root)."""

    def setUp(self) -> None:
        self.root = os.path.realpath(self.mktemp())
        os.makedirs(self.root)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", self.root], check=True)
        self.addCleanup(subprocess.run, ["umount", "-l", self.root], check=True)

    def test_disk_full_ends_the_job_and_cleans_up(self) -> None:
        v = Viewer(self.root)
        data = random.Random(9).randbytes(2 << 20)
        entries = [pb.FileEntry(name="big.bin", size=len(data), modified_time=MTIME)]
        v.act(receive=pb.FileTransferReceiveRequest(id=1, path="", files=entries))
        v.respond(digest=pb.FileTransferDigest(id=1, file_num=0, file_size=len(data)))
        v.take()
        for i in range(0, len(data), BLOCK_SIZE):
            v.respond(block=pb.FileTransferBlock(id=1, file_num=0, data=data[i : i + BLOCK_SIZE]))
        errors = [r.error for r in v.responses() if r.HasField("error")]
        self.assertEqual(
            [(e.id, e.error, e.file_num) for e in errors], [(1, "No space left on device", 0)]
        )
        self.assertEqual(os.listdir(self.root), [])
        self.assertEqual(v.files.jobs, {})
        # The session goes on: a small file still fits.
        v.act(
            receive=pb.FileTransferReceiveRequest(
                id=2, path="", files=[pb.FileEntry(name="s", size=2)]
            )
        )
        v.respond(digest=pb.FileTransferDigest(id=2, file_num=0, file_size=2))
        v.respond(block=pb.FileTransferBlock(id=2, file_num=0, data=b"ok"))
        v.respond(block=pb.FileTransferBlock(id=2, file_num=0))
        v.respond(done=pb.FileTransferDone(id=2, file_num=1))
        self.assertEqual(read_file(os.path.join(self.root, "s")), b"ok")
