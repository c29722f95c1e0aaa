"""litedesk.files.host_service: the host's file service as a viewer sees it.

L{HostFiles} is driven with real files in a temporary root, a Clock and a
recording C{send}: listings, file operations, downloads (digest, confirm,
resume, skip, blocks, flow control), uploads (new, overwrite, skip, resume
both ways, size checks, cancel), a full disk (a 1 MiB tmpfs), and hostile
actions from hypothesis (no exception, bounded jobs, nothing outside).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from litedesk.files.blocks import BLOCK_SIZE, decode_block, encode_block
from litedesk.files.host_service import BLOCKS_PER_TURN, MAX_JOBS, HostFiles
from litedesk.files.root import OUTSIDE, FileRoot
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


def _write(path: str, data: bytes, mtime: int = MTIME) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (mtime, mtime))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _kinds(resps: list[pb.FileResponse]) -> list[str]:
    return [str(r.WhichOneof("union")) for r in resps]


class _Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = os.path.realpath(self.mktemp())
        self.root = os.path.join(self.base, "root")
        self.outside = os.path.join(self.base, "outside")
        os.makedirs(self.root)
        os.makedirs(self.outside)
        _write(os.path.join(self.outside, "secret"), b"secret")
        self.v = Viewer(self.root)

    def p(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)


class ListingTests(_Case):
    def setUp(self) -> None:
        super().setUp()
        _write(self.p("a.txt"), b"12345")
        _write(self.p(".hidden"), b"h")
        _write(self.p("docs", "x", "deep.txt"), b"deep")
        os.makedirs(self.p("docs", "empty"))
        os.symlink(self.p("docs"), self.p("docslink"))
        os.symlink(self.p("a.txt"), self.p("alink"))

    def test_login_lists_the_root(self) -> None:
        self.v.files.start(pb.FileTransfer(dir="", show_hidden=False))
        (r,) = self.v.responses()
        self.assertEqual(r.dir.id, 0)
        self.assertEqual(r.dir.path, self.root)
        by_name = {e.name: e for e in r.dir.entries}
        self.assertEqual(sorted(by_name), ["a.txt", "alink", "docs", "docslink"])
        self.assertEqual(by_name["a.txt"].entry_type, pb.File)
        self.assertEqual(by_name["a.txt"].size, 5)
        self.assertEqual(by_name["a.txt"].modified_time, MTIME)
        self.assertEqual(by_name["docs"].entry_type, pb.Dir)
        self.assertEqual(by_name["docs"].size, 0)
        self.assertEqual(by_name["docslink"].entry_type, pb.DirLink)
        self.assertEqual(by_name["alink"].entry_type, pb.FileLink)

    def test_hidden_files_on_request(self) -> None:
        self.v.act(read_dir=pb.ReadDir(path=self.root, include_hidden=True))
        (r,) = self.v.responses()
        hidden = [e for e in r.dir.entries if e.name == ".hidden"]
        self.assertEqual(len(hidden), 1)
        self.assertTrue(hidden[0].is_hidden)

    def test_all_files_is_recursive_with_relative_names(self) -> None:
        self.v.act(all_files=pb.ReadAllFiles(id=4, path="", include_hidden=False))
        (r,) = self.v.responses()
        self.assertEqual((r.dir.id, r.dir.path), (4, ""))
        self.assertEqual(sorted(e.name for e in r.dir.entries), ["a.txt", "docs/x/deep.txt"])
        self.v.act(all_files=pb.ReadAllFiles(id=5, path="a.txt"))
        (r,) = self.v.responses()
        self.assertEqual([(e.name, e.size) for e in r.dir.entries], [("", 5)])

    def test_empty_dirs(self) -> None:
        self.v.act(read_empty_dirs=pb.ReadEmptyDirs(path="docs"))
        (r,) = self.v.responses()
        self.assertEqual([d.path for d in r.empty_dirs.empty_dirs], [self.p("docs", "empty")])

    def test_outside_and_missing(self) -> None:
        self.v.act(read_dir=pb.ReadDir(path="/etc"))
        self.v.act(all_files=pb.ReadAllFiles(id=3, path="../outside"))
        self.v.act(read_dir=pb.ReadDir(path="nothing"))
        errors = [r.error for r in self.v.responses()]
        self.assertEqual(
            [(e.id, e.error) for e in errors], [(0, OUTSIDE), (3, OUTSIDE), (0, "Not exists")]
        )

    def test_create_rename_remove(self) -> None:
        v = self.v
        v.act(create=pb.FileDirCreate(id=1, path="new/sub"))
        v.act(rename=pb.FileRename(id=2, path="a.txt", new_name="b.txt"))
        v.act(remove_file=pb.FileRemoveFile(id=3, path="b.txt", file_num=7))
        v.act(remove_dir=pb.FileRemoveDir(id=4, path="new", recursive=True))
        v.act(remove_dir=pb.FileRemoveDir(id=5, path="docs", recursive=False))
        resps = v.responses()
        self.assertEqual(_kinds(resps), ["done", "done", "done", "done", "error"])
        self.assertEqual(
            [(r.done.id, r.done.file_num) for r in resps[:4]], [(1, 0), (2, 0), (3, 7), (4, 0)]
        )
        self.assertEqual(sorted(os.listdir(self.root)), [".hidden", "alink", "docs", "docslink"])

    def test_operations_outside_are_refused(self) -> None:
        v = self.v
        v.act(create=pb.FileDirCreate(id=1, path="../evil"))
        v.act(remove_file=pb.FileRemoveFile(id=2, path=os.path.join(self.outside, "secret")))
        v.act(rename=pb.FileRename(id=3, path="a.txt", new_name="../../outside/x"))
        v.act(remove_dir=pb.FileRemoveDir(id=4, path="..", recursive=True))
        self.assertEqual(_kinds(v.responses()), ["error"] * 4)
        self.assertEqual(os.listdir(self.outside), ["secret"])
        self.assertTrue(os.path.exists(self.p("a.txt")))


class DownloadTests(_Case):
    def setUp(self) -> None:
        super().setUp()
        rnd = random.Random(7)
        self.big = rnd.randbytes(3 * BLOCK_SIZE + 1000)
        self.text = b"text line\n" * 50_000
        _write(self.p("d", "big.bin"), self.big)
        _write(self.p("d", "sub", "notes.txt"), self.text)

    def _collect(self, job: int, start_offsets: dict[int, int] | None = None) -> dict[int, bytes]:
        """Answer digests with confirms and gather each file's blocks until done."""
        got: dict[int, bytearray] = {}
        offsets = start_offsets or {}
        for _ in range(10_000):
            self.v.run()
            resps = self.v.responses()
            if not resps:
                break
            for r in resps:
                if r.HasField("dir"):
                    continue
                kind = r.WhichOneof("union")
                if kind == "digest":
                    self.assertFalse(r.digest.is_upload)
                    self.v.confirm(job, r.digest.file_num, offsets.get(r.digest.file_num, 0))
                elif kind == "block":
                    b = r.block
                    got.setdefault(b.file_num, bytearray()).extend(
                        decode_block(b.data, b.compressed, BLOCK_SIZE)
                    )
                elif kind == "done":
                    self.assertEqual(r.done.file_num, 2)
                    return {k: bytes(v) for k, v in got.items()}
                else:
                    self.fail(f"unexpected {r}")
        self.fail("no done")

    def test_directory_download(self) -> None:
        self.v.act(send=pb.FileTransferSendRequest(id=9, path="d"))
        listing = self.v.sent[0].file_response
        names = [e.name for e in listing.dir.entries]
        self.assertEqual(sorted(names), ["big.bin", "sub/notes.txt"])
        self.assertEqual(self.v.registered, [self.v.files])
        got = self._collect(9)
        files = {names[i]: data for i, data in got.items()}
        self.assertEqual(files["big.bin"], self.big)
        self.assertEqual(files["sub/notes.txt"], self.text)
        self.assertEqual(self.v.registered, [self.v.files, None])
        self.assertEqual(self.v.files.jobs, {})

    def test_blocks_and_end_of_file(self) -> None:
        """128 KiB blocks, text compressed, random data not, one empty block per file."""
        self.v.act(send=pb.FileTransferSendRequest(id=1, path="d/sub/notes.txt"))
        listing, digest = self.v.responses()
        self.assertEqual([(e.name, e.size) for e in listing.dir.entries], [("", len(self.text))])
        self.assertEqual(
            (digest.digest.file_size, digest.digest.last_modified), (len(self.text), MTIME)
        )
        self.v.confirm(1, 0)
        self.v.run()
        resps = self.v.responses()
        blocks = [r.block for r in resps if r.HasField("block")]
        self.assertTrue(all(b.compressed for b in blocks[:-1]))
        self.assertEqual((blocks[-1].data, blocks[-1].compressed), (b"", False))
        self.assertEqual(len(blocks), -(-len(self.text) // BLOCK_SIZE) + 1)
        self.assertEqual(resps[-1].done.file_num, 1)

    def test_resume_from_an_offset(self) -> None:
        self.v.act(send=pb.FileTransferSendRequest(id=2, path="d/big.bin"))
        got = self.v.responses()
        self.assertEqual(_kinds(got), ["dir", "digest"])
        self.v.confirm(2, 0, offset=BLOCK_SIZE + 5)
        self.v.run()
        data = b"".join(
            decode_block(r.block.data, r.block.compressed)
            for r in self.v.responses()
            if r.HasField("block")
        )
        self.assertEqual(data, self.big[BLOCK_SIZE + 5 :])

    def test_skip(self) -> None:
        self.v.act(send=pb.FileTransferSendRequest(id=3, path="d"))
        self.v.responses()
        self.v.confirm(3, 0, skip=True)
        (digest,) = self.v.responses()
        self.assertEqual(digest.digest.file_num, 1)
        self.v.confirm(3, 1, skip=True)
        (done,) = self.v.responses()
        self.assertEqual(done.done.file_num, 2)

    def test_the_only_file_skipped_is_an_error(self) -> None:
        """RustDesk's job_error: a one-file job whose file was skipped ends with "skipped"."""
        self.v.act(send=pb.FileTransferSendRequest(id=3, path="d/big.bin"))
        self.v.responses()
        self.v.confirm(3, 0, skip=True)
        (err,) = self.v.responses()
        self.assertEqual((err.error.id, err.error.error), (3, "skipped"))

    def test_old_viewer_gets_blocks_without_digests(self) -> None:
        v = Viewer(self.root, digests=False)
        v.act(send=pb.FileTransferSendRequest(id=3, path="d/big.bin"))
        v.run()
        kinds = _kinds(v.responses())
        self.assertEqual(kinds[0], "dir")
        self.assertNotIn("digest", kinds)
        self.assertEqual(kinds[-1], "done")

    def test_missing_and_outside(self) -> None:
        self.v.act(send=pb.FileTransferSendRequest(id=1, path="nothing"))
        self.v.act(send=pb.FileTransferSendRequest(id=2, path="../outside/secret"))
        self.assertEqual(
            [(r.error.id, r.error.error) for r in self.v.responses()],
            [(1, "Not exists"), (2, OUTSIDE)],
        )
        self.assertEqual(self.v.files.jobs, {})

    def test_paused_transport_gets_no_blocks(self) -> None:
        """Flow control: while paused nothing is read or sent; at most
        BLOCKS_PER_TURN blocks per reactor turn."""
        _write(self.p("huge.bin"), random.Random(8).randbytes(20 * BLOCK_SIZE))
        self.v.act(send=pb.FileTransferSendRequest(id=1, path="huge.bin"))
        self.v.responses()
        self.v.files.pauseProducing()
        self.v.confirm(1, 0)
        self.v.run()
        self.assertEqual(self.v.responses(), [])
        self.v.files.resumeProducing()
        self.v.turn()
        self.assertEqual(_kinds(self.v.responses()), ["block"] * BLOCKS_PER_TURN)
        self.v.turn()
        self.assertEqual(len(self.v.responses()), BLOCKS_PER_TURN)
        self.v.files.pauseProducing()
        self.v.run()
        self.assertEqual(self.v.responses(), [])
        self.v.files.resumeProducing()
        self.v.run()
        kinds = _kinds(self.v.responses())
        self.assertEqual(kinds, ["block"] * 5 + ["done"])  # 4 data blocks, the empty one

    def test_cancel_stops_the_download(self) -> None:
        self.v.act(send=pb.FileTransferSendRequest(id=1, path="d/big.bin"))
        self.v.confirm(1, 0)
        self.v.responses()
        self.v.act(cancel=pb.FileTransferCancel(id=1))
        self.v.run()
        self.assertEqual(self.v.responses(), [])
        self.assertEqual(self.v.files.jobs, {})
        self.assertEqual(self.v.registered[-1], None)


class UploadTests(_Case):
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
        self.assertEqual(_read(self.p("up", "a.txt")), a)
        self.assertEqual(_read(self.p("up", "deep", "b.bin")), b)
        self.assertEqual(os.stat(self.p("up", "a.txt")).st_mtime, MTIME)
        self.assertEqual(sorted(os.listdir(self.p("up"))), ["a.txt", "deep"])
        self.assertEqual(self.v.files.jobs, {})

    def test_existing_file_is_shown_and_overwritten_only_by_blocks(self) -> None:
        _write(self.p("up", "a.txt"), b"host version", mtime=MTIME - 5)
        self._receive(1, "up", [("a.txt", 3)])
        self._digest(1, 0, 3)
        (d,) = self.v.responses()
        self.assertTrue(d.digest.is_upload)
        self.assertFalse(d.digest.is_identical)
        self.assertEqual((d.digest.file_size, d.digest.last_modified), (12, MTIME - 5))
        self.assertEqual(_read(self.p("up", "a.txt")), b"host version")
        self._blocks(1, 0, b"new")
        self.v.respond(done=pb.FileTransferDone(id=1, file_num=1))
        self.assertEqual(_read(self.p("up", "a.txt")), b"new")

    def test_existing_file_skipped_stays(self) -> None:
        _write(self.p("up", "a.txt"), b"host version")
        self._receive(1, "up", [("a.txt", 3), ("b.txt", 2)])
        self._digest(1, 0, 3)
        self.v.take()
        self._digest(1, 1, 2)  # the viewer moved on: a.txt skipped
        self._blocks(1, 1, b"bb")
        self.v.respond(done=pb.FileTransferDone(id=1, file_num=2))
        self.assertEqual(_read(self.p("up", "a.txt")), b"host version")
        self.assertEqual(_read(self.p("up", "b.txt")), b"bb")
        self.assertEqual(sorted(os.listdir(self.p("up"))), ["a.txt", "b.txt"])

    def test_identical_file_is_reported(self) -> None:
        _write(self.p("same.txt"), b"abc")
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
        self.assertEqual(_read(self.p("up", "r.bin")), data)
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
        self.assertEqual(_read(self.p("up", "r.bin")), data)

    def test_no_resume_for_another_source(self) -> None:
        data = b"x" * 1000
        self._interrupted(data, 500)
        self.v = Viewer(self.root)
        self._receive(2, "up", [("r.bin", 999)])
        self._digest(2, 0, 999, resume=True)
        (c,) = self.v.take()
        self.assertEqual(c.file_action.send_confirm.offset_blk, 0)
        self._blocks(2, 0, b"y" * 999)
        self.assertEqual(_read(self.p("up", "r.bin")), b"y" * 999)

    def test_short_file_is_an_error_and_leaves_nothing(self) -> None:
        _write(self.p("keep.txt"), b"original")
        self._receive(1, "", [("keep.txt", 10)])
        self._digest(1, 0, 10)
        self.v.take()
        self._blocks(1, 0, b"short")
        (e,) = self.v.responses()
        self.assertEqual(e.error.id, 1)
        self.assertIn("10", e.error.error)
        self.assertEqual(_read(self.p("keep.txt")), b"original")
        self.assertEqual(os.listdir(self.root), ["keep.txt"])
        self.assertEqual(self.v.files.jobs, {})

    def test_zstd_bomb_ends_the_job(self) -> None:
        import zstandard

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
        self.assertEqual(_read(os.path.join(self.outside, "secret")), b"secret")

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
        self.assertEqual(_read(os.path.join(self.root, "s")), b"ok")


# -- hostile viewers ----------------------------------------------------------

_paths = st.sampled_from(["", "a", "a/b", "..", "../x", "/etc", "/", "x\x00", "f.txt", "dir/f"])
_ids = st.integers(min_value=-2, max_value=12)
_nums = st.integers(min_value=-3, max_value=4)


def _confirm_msg(draw: st.DrawFn, job: int, num: int) -> pb.FileAction:
    c = pb.FileTransferSendConfirmRequest(id=job, file_num=num)
    if draw(st.booleans()):
        c.skip = draw(st.booleans())
    else:
        c.offset_blk = draw(st.integers(0, 2**32 - 1))
    return pb.FileAction(send_confirm=c)


def _receive_msg(draw: st.DrawFn, job: int, path: str) -> pb.FileAction:
    files = [
        pb.FileEntry(name=draw(_paths), size=draw(st.integers(0, 300_000)))
        for _ in range(draw(st.integers(0, 3)))
    ]
    return pb.FileAction(receive=pb.FileTransferReceiveRequest(id=job, path=path, files=files))


def _action(draw: st.DrawFn) -> pb.Message:
    """Any FileAction or upload FileResponse, with hostile paths, ids and numbers."""
    path, job, num, flag = draw(_paths), draw(_ids), draw(_nums), draw(st.booleans())
    actions: dict[str, Any] = {
        "read_dir": lambda: pb.FileAction(read_dir=pb.ReadDir(path=path, include_hidden=flag)),
        "all_files": lambda: pb.FileAction(all_files=pb.ReadAllFiles(id=job, path=path)),
        "send": lambda: pb.FileAction(send=pb.FileTransferSendRequest(id=job, path=path)),
        "receive": lambda: _receive_msg(draw, job, path),
        "create": lambda: pb.FileAction(create=pb.FileDirCreate(id=job, path=path)),
        "remove_dir": lambda: pb.FileAction(
            remove_dir=pb.FileRemoveDir(id=job, path=path, recursive=flag)
        ),
        "remove_file": lambda: pb.FileAction(remove_file=pb.FileRemoveFile(id=job, path=path)),
        "rename": lambda: pb.FileAction(
            rename=pb.FileRename(id=job, path=path, new_name=draw(_paths))
        ),
        "send_confirm": lambda: _confirm_msg(draw, job, num),
        "cancel": lambda: pb.FileAction(cancel=pb.FileTransferCancel(id=job)),
        "read_empty_dirs": lambda: pb.FileAction(read_empty_dirs=pb.ReadEmptyDirs(path=path)),
        "empty": pb.FileAction,
        "digest": lambda: pb.FileResponse(
            digest=pb.FileTransferDigest(
                id=job, file_num=num, file_size=draw(st.integers(0, 2**64 - 1)), is_resume=flag
            )
        ),
        "block": lambda: pb.FileResponse(
            block=pb.FileTransferBlock(
                id=job, file_num=num, data=draw(st.binary(max_size=64)), compressed=flag
            )
        ),
        "done": lambda: pb.FileResponse(done=pb.FileTransferDone(id=job, file_num=num)),
        "error": lambda: pb.FileResponse(error=pb.FileTransferError(id=job, error="x")),
    }
    inner = actions[draw(st.sampled_from(sorted(actions)))]()
    if isinstance(inner, pb.FileAction):
        return pb.Message(file_action=inner)
    return pb.Message(file_response=inner)


class HostileTests(SynchronousTestCase):
    @settings(
        max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(st.data())
    def test_random_messages_never_raise_nor_escape(self, data: st.DataObject) -> None:
        base = os.path.realpath(self.mktemp())
        root, outside = os.path.join(base, "root"), os.path.join(base, "outside")
        _write(os.path.join(root, "f.txt"), b"x" * 300)
        _write(os.path.join(root, "dir", "f"), b"y")
        _write(os.path.join(outside, "secret"), b"s")
        v = Viewer(root)
        for _ in range(data.draw(st.integers(1, 40))):
            m = data.draw(st.composite(_action)())
            if m.HasField("file_action"):
                v.files.action(m.file_action)
            else:
                v.files.response(m.file_response)
            v.clock.advance(0)
            self.assertLessEqual(len(v.files.jobs), MAX_JOBS)
        v.files.close()
        self.assertEqual(os.listdir(outside), ["secret"])
        self.assertEqual(_read(os.path.join(outside, "secret")), b"s")
        self.assertFalse(os.path.exists(os.path.join(base, "x")))


class FlowTests(SynchronousTestCase):
    def test_download_never_reads_ahead_of_the_transport(self) -> None:
        """A transport that pauses its producer above 1 MiB buffered: the
        host reads at most one block beyond it, whatever the file's size,
        and the file arrives whole once the transport drains."""
        root = os.path.realpath(self.mktemp())
        os.makedirs(root)
        data = random.Random(11).randbytes(64 << 20)
        _write(os.path.join(root, "big"), data)
        v = Viewer(root)
        buffered: list[pb.Message] = []
        limit = 1 << 20

        def send(m: pb.Message) -> None:
            buffered.append(m)
            if sum(len(x.file_response.block.data) for x in buffered) > limit:
                v.files.pauseProducing()

        v.files.send = send
        v.act(send=pb.FileTransferSendRequest(id=1, path="big"))
        v.confirm(1, 0)
        digest = hashlib.sha256()
        most = 0
        for _ in range(10_000):
            v.run()
            job = v.files.jobs.get(1)
            queued = sum(len(x.file_response.block.data) for x in buffered)
            most = max(most, queued)
            for m in buffered:
                b = m.file_response.block
                if b.data:
                    digest.update(decode_block(b.data, b.compressed))
            buffered.clear()
            if job is None:
                break
            v.files.resumeProducing()  # the transport drained
        self.assertEqual(v.files.jobs, {})
        self.assertLessEqual(most, limit + BLOCK_SIZE)
        self.assertEqual(digest.hexdigest(), hashlib.sha256(data).hexdigest())
