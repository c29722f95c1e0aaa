"""The viewer's FileClient against a recording session (docs/protocol.rst §12).

Covers the message sequences of listings, downloads (single files, folders,
into an existing directory, resume from a partial, skip without overwrite,
cancel, the host's errors, unsafe names) and uploads (scp-like destination,
the host's confirm, resume offset, skip or overwrite of an existing file,
flow control as the transport's push producer), what the files on disk end
up as, and that garbage from the host never raises and unknown ids are
ignored (hypothesis).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from litedesk.files.blocks import BLOCK_SIZE, decode_block, encode_block
from litedesk.files.client import LIST_TIMEOUT, FileClient, FileTransferError, ProgressEvent
from litedesk.proto import message_pb2 as pb

MTIME = 1_700_000_000


class RecordingTransport:
    def __init__(self) -> None:
        self.producer: IPushProducer | None = None
        self.registrations = 0

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        assert self.producer is None and streaming
        self.producer = producer
        self.registrations += 1

    def unregisterProducer(self) -> None:
        self.producer = None


class RecordingSession:
    """What FileClient uses of a ViewerSession; records every message sent."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.transport = RecordingTransport()
        self.sent: list[pb.Message] = []
        self.ended: Deferred[None] = Deferred()
        self.error: Any = None
        self.on_file_response: Any = None
        self.on_file_action: Any = None

    def send_message(self, msg: pb.Message) -> None:
        self.sent.append(msg)

    def actions(self, kind: str) -> list[Any]:
        return [
            getattr(m.file_action, kind)
            for m in self.sent
            if m.WhichOneof("union") == "file_action" and m.file_action.WhichOneof("union") == kind
        ]

    def responses(self, kind: str) -> list[Any]:
        return [
            getattr(m.file_response, kind)
            for m in self.sent
            if m.WhichOneof("union") == "file_response"
            and m.file_response.WhichOneof("union") == kind
        ]

    def host(self, **kw: Any) -> None:
        self.on_file_response(pb.FileResponse(**kw))

    def host_action(self, **kw: Any) -> None:
        self.on_file_action(pb.FileAction(**kw))


def _blocks(job: int, num: int, data: bytes, name: str = "f.bin") -> list[pb.FileTransferBlock]:
    out = []
    for i in range(0, len(data), BLOCK_SIZE):
        payload, compressed = encode_block(data[i : i + BLOCK_SIZE], name)
        out.append(pb.FileTransferBlock(id=job, file_num=num, data=payload, compressed=compressed))
    out.append(pb.FileTransferBlock(id=job, file_num=num))
    return out


def _failure(d: Deferred[Any]) -> str:
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures, "expected a failure"
    assert failures[0].check(FileTransferError), failures[0]
    return str(failures[0].value.reason)


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.session = RecordingSession()
        self.client = FileClient(self.session)
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def serve_file(self, job: int, num: int, data: bytes, offset: int = 0) -> None:
        self.session.host(
            digest=pb.FileTransferDigest(
                id=job, file_num=num, last_modified=MTIME, file_size=len(data)
            )
        )
        for b in _blocks(job, num, data[offset:]):
            self.session.host(block=b)


class ListingTests(Base):
    def test_list_dir(self) -> None:
        self.session.host(dir=pb.FileDirectory(path="/srv/root"))  # the unasked one
        d = self.client.list_dir("docs", include_hidden=True)
        (req,) = self.session.actions("read_dir")
        self.assertEqual((req.path, req.include_hidden), ("docs", True))
        entry = pb.FileEntry(entry_type=pb.File, name="a.txt", size=3, modified_time=MTIME)
        self.session.host(dir=pb.FileDirectory(path="/srv/root/docs", entries=[entry]))
        listing = self.successResultOf(d)
        self.assertEqual([e.name for e in listing.entries], ["a.txt"])
        assert self.client.home is not None
        self.assertEqual(self.client.home.path, "/srv/root")

    def test_host_error(self) -> None:
        d = self.client.list_dir("../../etc")
        self.session.host(error=pb.FileTransferError(id=0, error="outside the file root"))
        self.assertEqual(_failure(d), "outside the file root")

    def test_no_answer(self) -> None:
        d = self.client.list_dir("gone")
        self.session.clock.advance(LIST_TIMEOUT)
        self.assertIn("not found: gone", _failure(d))

    def test_session_end_fails_pending(self) -> None:
        d = self.client.list_dir("x")
        self.session.error = type("E", (), {"reason": "closed by host"})()
        self.session.ended.callback(None)
        self.assertEqual(_failure(d), "closed by host")
        self.assertEqual(_failure(self.client.list_dir("y")), "closed by host")


class DownloadTests(Base):
    def test_single_file(self) -> None:
        data = os.urandom(BLOCK_SIZE * 2 + 100) + b"a" * 5000
        events: list[ProgressEvent] = []
        t = self.client.download("dir/f.bin", self.dir / "out.bin", progress=events.append)
        (send,) = self.session.actions("send")
        self.assertEqual((send.id, send.path), (t.id, "dir/f.bin"))
        entry = pb.FileEntry(entry_type=pb.File, name="", size=len(data), modified_time=MTIME)
        self.session.host(dir=pb.FileDirectory(id=t.id, path="/r/dir/f.bin", entries=[entry]))
        self.serve_file(t.id, 0, data)
        (confirm,) = self.session.actions("send_confirm")
        self.assertEqual((confirm.file_num, confirm.offset_blk), (0, 0))
        self.session.host(done=pb.FileTransferDone(id=t.id, file_num=1))
        result = self.successResultOf(t.done)
        self.assertEqual((result.files, result.bytes, result.skipped), (1, len(data), []))
        out = self.dir / "out.bin"
        self.assertEqual(out.read_bytes(), data)
        self.assertEqual(int(out.stat().st_mtime), MTIME)
        self.assertFalse((self.dir / "out.bin.download").exists())
        self.assertEqual(events[-1].total_done, len(data))
        self.assertEqual(events[-1].total_size, len(data))

    def test_folder_into_existing_directory(self) -> None:
        t = self.client.download("proj", self.dir)
        files = {"a/b.txt": b"hello", "c.txt": b"world!"}
        entries = [
            pb.FileEntry(entry_type=pb.File, name=n, size=len(v), modified_time=MTIME)
            for n, v in files.items()
        ]
        self.session.host(dir=pb.FileDirectory(id=t.id, path="/r/proj", entries=entries))
        for i, v in enumerate(files.values()):
            self.serve_file(t.id, i, v)
        self.session.host(done=pb.FileTransferDone(id=t.id, file_num=2))
        self.assertEqual(self.successResultOf(t.done).files, 2)
        self.assertEqual((self.dir / "proj" / "a" / "b.txt").read_bytes(), b"hello")
        self.assertEqual((self.dir / "proj" / "c.txt").read_bytes(), b"world!")

    def test_unsafe_names_refused(self) -> None:
        for bad in ("../evil", "/etc/passwd", "a/../../evil", "x\0y"):
            entry = pb.FileEntry(entry_type=pb.File, name=bad, size=1)
            t = self.client.download("proj", self.dir / "dst")
            self.session.host(dir=pb.FileDirectory(id=t.id, path="/r/proj", entries=[entry]))
            self.assertIn("unsafe file name", _failure(t.done))
            self.assertEqual(self.session.actions("cancel")[-1].id, t.id)
        self.assertFalse((self.dir / "evil").exists())

    def test_local_symlink_does_not_lead_out(self) -> None:
        outside = self.dir / "outside"
        outside.mkdir()
        (self.dir / "proj").mkdir()
        (self.dir / "proj" / "link").symlink_to(outside.absolute())
        t = self.client.download("proj", self.dir, overwrite=True)
        entry = pb.FileEntry(entry_type=pb.File, name="link/x", size=1)
        self.session.host(dir=pb.FileDirectory(id=t.id, path="/r/proj", entries=[entry]))
        self.serve_file(t.id, 0, b"x")
        self.assertIn("leads outside", _failure(t.done))
        self.assertEqual(list(outside.iterdir()), [])

    def _start_single(self, target: Path, size: int) -> int:
        t = self.client.download("f.bin", target, overwrite=False)
        self.transfer = t
        entry = pb.FileEntry(entry_type=pb.File, name="", size=size, modified_time=MTIME)
        self.session.host(dir=pb.FileDirectory(id=t.id, path="/r/f.bin", entries=[entry]))
        return t.id

    def test_existing_file_skipped(self) -> None:
        target = self.dir / "f.bin"
        target.write_bytes(b"mine")
        job = self._start_single(target, 10)
        self.session.host(
            digest=pb.FileTransferDigest(id=job, file_num=0, last_modified=MTIME, file_size=10)
        )
        (confirm,) = self.session.actions("send_confirm")
        self.assertTrue(confirm.skip)
        # RustDesk's host reports a job whose only file was skipped so.
        self.session.host(error=pb.FileTransferError(id=job, error="skipped"))
        self.assertEqual(self.successResultOf(self.transfer.done).skipped, ["f.bin"])
        self.assertEqual(target.read_bytes(), b"mine")

    def test_resume_from_partial(self) -> None:
        data = os.urandom(BLOCK_SIZE + 777)
        target = self.dir / "f.bin"
        Path(str(target) + ".download").write_bytes(data[:1000])
        Path(str(target) + ".digest").write_text(f'{{"size": {len(data)}, "modified": {MTIME}}}')
        job = self._start_single(target, len(data))
        self.serve_file(job, 0, data, offset=1000)
        (confirm,) = self.session.actions("send_confirm")
        self.assertEqual(confirm.offset_blk, 1000)
        self.session.host(done=pb.FileTransferDone(id=job, file_num=1))
        result = self.successResultOf(self.transfer.done)
        self.assertEqual((result.bytes, result.resumed), (len(data) - 1000, 1000))
        self.assertEqual(target.read_bytes(), data)

    def test_cancel_keeps_partial(self) -> None:
        target = self.dir / "f.bin"
        job = self._start_single(target, 3 * BLOCK_SIZE)
        self.session.host(
            digest=pb.FileTransferDigest(
                id=job, file_num=0, last_modified=MTIME, file_size=3 * BLOCK_SIZE
            )
        )
        self.session.host(block=_blocks(job, 0, os.urandom(BLOCK_SIZE))[0])
        self.transfer.cancel()
        self.assertEqual(_failure(self.transfer.done), "cancelled")
        self.assertEqual(self.session.actions("cancel")[0].id, job)
        self.assertEqual(Path(str(target) + ".download").stat().st_size, BLOCK_SIZE)
        # Whatever the host still sends for it is ignored.
        self.session.host(block=_blocks(job, 0, b"late")[0])

    def test_host_error_ends_job(self) -> None:
        t = self.client.download("nope", self.dir / "x")
        self.session.host(error=pb.FileTransferError(id=t.id, error="Not exists"))
        self.assertEqual(_failure(t.done), "not found: nope")
        t = self.client.download("/etc", self.dir / "x")
        self.session.host(error=pb.FileTransferError(id=t.id, error="outside the file root"))
        self.assertEqual(_failure(t.done), "outside the file root")

    def test_more_than_announced(self) -> None:
        job = self._start_single(self.dir / "f.bin", 10)
        self.session.host(
            digest=pb.FileTransferDigest(id=job, file_num=0, last_modified=MTIME, file_size=10)
        )
        self.session.host(block=pb.FileTransferBlock(id=job, file_num=0, data=b"x" * 11))
        self.assertIn("more than", _failure(self.transfer.done))
        self.assertEqual(self.session.actions("cancel")[0].id, job)


class UploadTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.data = os.urandom(2 * BLOCK_SIZE + 5)
        self.src = self.dir / "up.bin"
        self.src.write_bytes(self.data)
        os.utime(self.src, (MTIME, MTIME))

    def start(self, remote: str, listing: list[pb.FileEntry], **kw: Any) -> Any:
        t = self.client.upload(self.src, remote, **kw)
        (req,) = self.session.actions("read_dir")
        self.session.host(dir=pb.FileDirectory(path="/r/" + req.path, entries=listing))
        return t

    def sent_file(self, job: int, num: int) -> bytes:
        self.session.clock.advance(0)
        self.session.clock.advance(0)
        blocks = [b for b in self.session.responses("block") if b.id == job and b.file_num == num]
        self.assertEqual(blocks[-1].data, b"")
        return b"".join(decode_block(b.data, b.compressed) for b in blocks)

    def test_upload_file(self) -> None:
        t = self.start("dest/new.bin", [])
        (recv,) = self.session.actions("receive")
        self.assertEqual(recv.path, "dest/new.bin")
        self.assertEqual([(f.name, f.size) for f in recv.files], [("", len(self.data))])
        (dg,) = self.session.responses("digest")
        self.assertEqual((dg.file_size, dg.last_modified), (len(self.data), MTIME))
        self.assertIs(self.session.transport.producer, self.client)
        self.session.host_action(
            send_confirm=pb.FileTransferSendConfirmRequest(id=t.id, offset_blk=0)
        )
        self.assertEqual(self.sent_file(t.id, 0), self.data)
        (done,) = self.session.responses("done")
        self.assertEqual((done.id, done.file_num), (t.id, 1))
        self.session.host(done=pb.FileTransferDone(id=t.id, file_num=1))
        result = self.successResultOf(t.done)
        self.assertEqual((result.files, result.bytes), (1, len(self.data)))
        self.assertIsNone(self.session.transport.producer)

    def test_into_existing_directory(self) -> None:
        self.start("dest", [pb.FileEntry(entry_type=pb.Dir, name="dest")])
        self.assertEqual(self.session.actions("receive")[0].path, "dest/up.bin")

    def test_missing_parent_left_to_the_host(self) -> None:
        self.client.upload(self.src, "nodir/x.bin")
        self.session.host(error=pb.FileTransferError(id=0, error="Not exists"))
        self.assertEqual(self.session.actions("receive")[0].path, "nodir/x.bin")

    def test_resume_offset(self) -> None:
        t = self.start("new.bin", [])
        c = pb.FileTransferSendConfirmRequest(id=t.id, offset_blk=BLOCK_SIZE + 1)
        self.session.host_action(send_confirm=c)
        self.assertEqual(self.sent_file(t.id, 0), self.data[BLOCK_SIZE + 1 :])

    def _host_has_it(self, job: int) -> None:
        self.session.host(
            digest=pb.FileTransferDigest(
                id=job, file_num=0, file_size=3, last_modified=1, is_upload=True
            )
        )

    def test_exists_on_host_skipped(self) -> None:
        t = self.start("old.bin", [])
        self._host_has_it(t.id)
        (confirm,) = self.session.actions("send_confirm")
        self.assertTrue(confirm.skip)
        self.session.clock.advance(0)
        self.assertEqual(self.session.responses("block"), [])
        self.session.host(done=pb.FileTransferDone(id=t.id, file_num=1))
        self.assertEqual(self.successResultOf(t.done).skipped, ["up.bin"])

    def test_exists_on_host_overwritten(self) -> None:
        t = self.start("old.bin", [], overwrite=True)
        self._host_has_it(t.id)
        self.assertEqual(self.session.actions("send_confirm")[0].offset_blk, 0)
        self.assertEqual(self.sent_file(t.id, 0), self.data)

    def test_flow_control(self) -> None:
        t = self.start("new.bin", [])
        self.client.pauseProducing()
        self.session.host_action(send_confirm=pb.FileTransferSendConfirmRequest(id=t.id))
        self.session.clock.advance(0)
        self.assertEqual(self.session.responses("block"), [])
        self.client.resumeProducing()
        self.assertEqual(self.sent_file(t.id, 0), self.data)

    def test_missing_local(self) -> None:
        t = self.client.upload(self.dir / "nope", "x")
        self.assertIn("not found", _failure(t.done))


_ids = st.integers(min_value=-3, max_value=5)
_text = st.text(max_size=20)
_responses = st.one_of(
    st.builds(
        lambda i, p, names: pb.FileResponse(
            dir=pb.FileDirectory(
                id=i, path=p, entries=[pb.FileEntry(name=n, size=len(n)) for n in names]
            )
        ),
        _ids,
        _text,
        st.lists(_text, max_size=3),
    ),
    st.builds(
        lambda i, n, d, c: pb.FileResponse(
            block=pb.FileTransferBlock(id=i, file_num=n, data=d, compressed=c)
        ),
        _ids,
        _ids,
        st.binary(max_size=64),
        st.booleans(),
    ),
    st.builds(
        lambda i, n, s, u, ident, tr: pb.FileResponse(
            digest=pb.FileTransferDigest(
                id=i, file_num=n, file_size=s, is_upload=u, is_identical=ident, transferred_size=tr
            )
        ),
        _ids,
        _ids,
        st.integers(min_value=0, max_value=2**40),
        st.booleans(),
        st.booleans(),
        st.integers(min_value=0, max_value=2**40),
    ),
    st.builds(lambda i, n: pb.FileResponse(done=pb.FileTransferDone(id=i, file_num=n)), _ids, _ids),
    st.builds(lambda i, e: pb.FileResponse(error=pb.FileTransferError(id=i, error=e)), _ids, _text),
    st.builds(
        lambda i, n, o: pb.FileAction(
            send_confirm=pb.FileTransferSendConfirmRequest(id=i, file_num=n, offset_blk=o)
        ),
        _ids,
        _ids,
        st.integers(min_value=0, max_value=2**32 - 1),
    ),
    st.builds(lambda p: pb.FileAction(read_dir=pb.ReadDir(path=p)), _text),
)


class HostileHostTests(Base):
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_responses, max_size=12))
    def test_garbage_never_raises(self, messages: list[Any]) -> None:
        session = RecordingSession()
        client = FileClient(session)
        root = Path(self.mktemp())
        root.mkdir()
        src = root / "src.bin"
        src.write_bytes(b"abc" * 100)
        down = client.download("x", root / "down")
        up = client.upload(src, "y")
        listing = client.list_dir("z")
        for m in messages:
            if isinstance(m, pb.FileResponse):
                session.on_file_response(m)
            else:
                session.on_file_action(m)
            session.clock.advance(0)
        session.clock.advance(LIST_TIMEOUT)
        for t in (down, up):
            t.cancel()
            t.done.addErrback(lambda f: f.trap(FileTransferError))
        listing.addErrback(lambda f: f.trap(FileTransferError))
        # Nothing was written outside the download's target.
        self.assertEqual(
            sorted(p.name for p in root.iterdir() if p.name not in ("src.bin", "down")), []
        )

    def test_unknown_ids_ignored(self) -> None:
        t = self.client.download("f", self.dir / "f")
        for other in (0, t.id + 1, -1):
            self.session.host(block=pb.FileTransferBlock(id=other, file_num=0, data=b"zz"))
            self.session.host(done=pb.FileTransferDone(id=other))
            self.session.host(error=pb.FileTransferError(id=other, error="boom"))
        self.assertNoResult(t.done)
        entry = pb.FileEntry(entry_type=pb.File, name="", size=2, modified_time=MTIME)
        self.session.host(dir=pb.FileDirectory(id=t.id, path="/r/f", entries=[entry]))
        self.serve_file(t.id, 0, b"ok")
        self.session.host(done=pb.FileTransferDone(id=t.id, file_num=1))
        self.assertEqual(self.successResultOf(t.done).files, 1)
        self.assertEqual((self.dir / "f").read_bytes(), b"ok")
