"""litedesk.files.host_service: the host's file service as a viewer sees it.

L{HostFiles} is driven with real files in a temporary root, a Clock and a
recording C{send} (tests/support/host_files_viewer.py): listings, file
operations, downloads (digest, confirm, resume, skip, blocks, flow control
against a transport that pauses, the one log line per transfer) and hostile
actions from hypothesis (no exception, bounded jobs, nothing outside).
Uploads are in tests/test_files_host_upload.py.
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from litedesk.files.blocks import BLOCK_SIZE, decode_block
from litedesk.files.host_service import BLOCKS_PER_TURN, MAX_JOBS
from litedesk.files.root import OUTSIDE
from litedesk.proto import message_pb2 as pb

from .support.host_files_viewer import MTIME, FilesCase, Viewer, kinds, read_file, write_file


class ListingTests(FilesCase):
    def setUp(self) -> None:
        super().setUp()
        write_file(self.p("a.txt"), b"12345")
        write_file(self.p(".hidden"), b"h")
        write_file(self.p("docs", "x", "deep.txt"), b"deep")
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
        self.assertEqual(kinds(resps), ["done", "done", "done", "done", "error"])
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
        self.assertEqual(kinds(v.responses()), ["error"] * 4)
        self.assertEqual(os.listdir(self.outside), ["secret"])
        self.assertTrue(os.path.exists(self.p("a.txt")))


class DownloadTests(FilesCase):
    def setUp(self) -> None:
        super().setUp()
        rnd = random.Random(7)
        self.big = rnd.randbytes(3 * BLOCK_SIZE + 1000)
        self.text = b"text line\n" * 50_000
        write_file(self.p("d", "big.bin"), self.big)
        write_file(self.p("d", "sub", "notes.txt"), self.text)

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
        self.assertEqual(kinds(got), ["dir", "digest"])
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

    def test_resumed_job_starts_at_its_file_number(self) -> None:
        """A resumed job's send carries the file to start at (fs.rs new_read)."""
        self.v.act(send=pb.FileTransferSendRequest(id=3, path="d", file_num=1))
        listing, digest = self.v.responses()
        self.assertEqual(len(listing.dir.entries), 2)
        self.assertEqual(digest.digest.file_num, 1)
        self.v.act(send=pb.FileTransferSendRequest(id=4, path="d", file_num=99))
        self.assertEqual(self.v.responses()[-1].done.file_num, 2)

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
        got = kinds(v.responses())
        self.assertEqual(got[0], "dir")
        self.assertNotIn("digest", got)
        self.assertEqual(got[-1], "done")

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
        write_file(self.p("huge.bin"), random.Random(8).randbytes(20 * BLOCK_SIZE))
        self.v.act(send=pb.FileTransferSendRequest(id=1, path="huge.bin"))
        self.v.responses()
        self.v.files.pauseProducing()
        self.v.confirm(1, 0)
        self.v.run()
        self.assertEqual(self.v.responses(), [])
        self.v.files.resumeProducing()
        self.v.turn()
        self.assertEqual(kinds(self.v.responses()), ["block"] * BLOCKS_PER_TURN)
        self.v.turn()
        self.assertEqual(len(self.v.responses()), BLOCKS_PER_TURN)
        self.v.files.pauseProducing()
        self.v.run()
        self.assertEqual(self.v.responses(), [])
        self.v.files.resumeProducing()
        self.v.run()
        self.assertEqual(
            kinds(self.v.responses()), ["block"] * 5 + ["done"]
        )  # 4 data blocks, the empty one

    def test_one_log_line_per_transfer(self) -> None:
        """Finished and failed transfers each log one structured line."""
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        self.v.act(send=pb.FileTransferSendRequest(id=1, path="d/big.bin"))
        self.v.confirm(1, 0)
        self.v.run()
        self.v.act(
            receive=pb.FileTransferReceiveRequest(
                id=2, path="", files=[pb.FileEntry(name="u", size=10)]
            )
        )
        self.v.files.response(pb.FileResponse(block=pb.FileTransferBlock(id=2, data=b"x")))
        self.v.files.response(pb.FileResponse(block=pb.FileTransferBlock(id=2)))
        lines = [e for e in events if e.get("file_transfer")]
        self.assertEqual(
            [(e["kind"], e["result"]) for e in lines],
            [("download", "done"), ("upload", "failed: received 1 bytes, 10 announced")],
        )
        self.assertEqual(lines[0]["path"], self.p("d", "big.bin"))
        self.assertEqual(lines[0]["bytes"], len(self.big))
        self.assertEqual(lines[1]["path"], "")
        self.assertIn("seconds", lines[0])

    def test_cancel_stops_the_download(self) -> None:
        self.v.act(send=pb.FileTransferSendRequest(id=1, path="d/big.bin"))
        self.v.confirm(1, 0)
        self.v.responses()
        self.v.act(cancel=pb.FileTransferCancel(id=1))
        self.v.run()
        self.assertEqual(self.v.responses(), [])
        self.assertEqual(self.v.files.jobs, {})
        self.assertEqual(self.v.registered[-1], None)


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
        write_file(os.path.join(root, "f.txt"), b"x" * 300)
        write_file(os.path.join(root, "dir", "f"), b"y")
        write_file(os.path.join(outside, "secret"), b"s")
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
        self.assertEqual(read_file(os.path.join(outside, "secret")), b"s")
        self.assertFalse(os.path.exists(os.path.join(base, "x")))


class FlowTests(SynchronousTestCase):
    def test_download_never_reads_ahead_of_the_transport(self) -> None:
        """A transport that pauses its producer above 1 MiB buffered: the
        host reads at most one block beyond it, whatever the file's size,
        and the file arrives whole once the transport drains."""
        root = os.path.realpath(self.mktemp())
        os.makedirs(root)
        data = random.Random(11).randbytes(64 << 20)
        write_file(os.path.join(root, "big"), data)
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
