"""A file-transfer session end to end: a real HostSession over loopback TLS.

A viewer (a small MessageProtocol here) logs in with
C{LoginRequest{file_transfer}}, gets the root's listing unasked, uploads a
few MiB and downloads them (and a file made on the host) again, comparing
SHA-256; the download runs with the host's producer registered on the TLS
transport.  A second session shows that a login without C{file_root} is
refused with RustDesk's error.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import ClientFactory, Factory, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from litedesk.files.blocks import BLOCK_SIZE, decode_block, encode_block
from litedesk.proto import message_pb2 as pb
from litedesk.session.framing import MessageProtocol
from litedesk.session.host_certificate import host_context_factory
from litedesk.session.host_context import HostContext
from litedesk.session.host_session import HostSession
from litedesk.session.login import LoginVerifier
from litedesk.session.password import StoredPassword, login_password
from litedesk.session.pinning import viewer_context_factory
from litedesk.session.tls import tls_client_factory, tls_server_factory

from .support.fakes import FakeStreamer

PASSWORD = "files-session-pw"
HOST_ID = "123456789"
MTIME = 1_650_000_000
# The global reactor as the TCP/time provider it is (its stubs type it loosely).
reactor: Any = _reactor


class FileViewer(MessageProtocol):
    """Logs in for file transfer and queues every file message it gets."""

    def __init__(self, show_hidden: bool = False) -> None:
        self.show_hidden = show_hidden
        self.login: Deferred[pb.LoginResponse] = Deferred()
        self.files: DeferredQueue[pb.Message] = DeferredQueue()
        self.lost: Deferred[None] = Deferred()

    def message_received(self, msg: pb.Message) -> None:
        kind = msg.WhichOneof("union")
        if kind == "hash":
            answer = login_password(PASSWORD, msg.hash.salt, msg.hash.challenge)
            ft = pb.FileTransfer(dir="", show_hidden=self.show_hidden)
            req = pb.LoginRequest(
                username=HOST_ID,
                password=answer,
                my_id="viewer",
                version="1.4.9",
                file_transfer=ft,
            )
            self.send_message(pb.Message(login_request=req))
        elif kind == "login_response":
            self.login.callback(msg.login_response)
        elif kind in ("file_action", "file_response"):
            self.files.put(msg)
        elif kind == "test_delay" and not msg.test_delay.from_client:
            self.send_message(msg)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.lost.callback(None)

    def act(self, **kw: Any) -> None:
        self.send_message(pb.Message(file_action=pb.FileAction(**kw)))

    def respond(self, **kw: Any) -> None:
        self.send_message(pb.Message(file_response=pb.FileResponse(**kw)))


class _Once(ClientFactory):
    def __init__(self, protocol: FileViewer) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: object) -> FileViewer:
        return self.protocol_instance


class FileSessionTests(TestCase):
    def setUp(self) -> None:
        self.root = Path(os.path.realpath(self.mktemp()))
        self.root.mkdir()
        self.hosts: list[HostSession] = []

    def _start(self, file_root: Path | None) -> FileViewer:
        ctx = HostContext(
            peer_id=HOST_ID,
            verifier=LoginVerifier(reactor, StoredPassword.create(PASSWORD), one_time=False),
            clock=reactor,
            make_streamer=lambda deliver, buffered, codec: FakeStreamer(),
            displays=[],
            file_root=file_root,
        )

        def build() -> HostSession:
            s = HostSession(ctx)
            self.hosts.append(s)
            return s

        key = SigningKey.generate()
        factory = Factory.forProtocol(build)
        port = reactor.listenTCP(
            0,
            tls_server_factory(factory, host_context_factory(key, HOST_ID)),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)
        viewer = FileViewer()
        creator = viewer_context_factory(bytes(key.verify_key))
        reactor.connectTCP(
            "127.0.0.1", port.getHost().port, tls_client_factory(_Once(viewer), creator)
        )
        return viewer

    def _abort(self, viewer: FileViewer) -> None:
        if not viewer.lost.called and viewer.transport is not None:
            viewer.transport.loseConnection()

    @defer.inlineCallbacks
    def _close(self, viewer: FileViewer) -> Any:
        if viewer.transport is not None:
            viewer.transport.loseConnection()
        yield viewer.lost
        yield deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def _next(self, viewer: FileViewer) -> Any:
        msg = yield viewer.files.get()
        return msg

    @defer.inlineCallbacks
    def test_upload_and_download_compare_sha256(self) -> Any:
        rnd = random.Random(42)
        # Half text (compressed blocks), half random (sent as is).
        payload = (b"a line of text that compresses\n" * 60_000)[: 3 << 20]
        payload += rnd.randbytes(3 << 20)
        made_on_host = rnd.randbytes(2 * BLOCK_SIZE + 777)
        (self.root / "host.bin").write_bytes(made_on_host)
        viewer = self._start(self.root)
        self.addCleanup(self._abort, viewer)
        resp = yield viewer.login
        self.assertTrue(resp.HasField("peer_info"))
        first = yield self._next(viewer)
        self.assertEqual(first.file_response.dir.path, str(self.root))
        self.assertEqual([e.name for e in first.file_response.dir.entries], ["host.bin"])

        # Upload into a directory that does not exist yet.
        entry = pb.FileEntry(name="up.bin", size=len(payload), modified_time=MTIME)
        viewer.act(
            receive=pb.FileTransferReceiveRequest(
                id=1, path="inbox", files=[entry], total_size=len(payload)
            )
        )
        viewer.respond(
            digest=pb.FileTransferDigest(
                id=1, file_num=0, file_size=len(payload), last_modified=MTIME
            )
        )
        confirm = yield self._next(viewer)
        self.assertEqual(confirm.file_action.send_confirm.offset_blk, 0)
        for i in range(0, len(payload), BLOCK_SIZE):
            data, compressed = encode_block(payload[i : i + BLOCK_SIZE], "up.bin")
            viewer.respond(
                block=pb.FileTransferBlock(id=1, file_num=0, data=data, compressed=compressed)
            )
        viewer.respond(block=pb.FileTransferBlock(id=1, file_num=0))
        viewer.respond(done=pb.FileTransferDone(id=1, file_num=1))
        done = yield self._next(viewer)
        self.assertEqual((done.file_response.done.id, done.file_response.done.file_num), (1, 1))
        uploaded = self.root / "inbox" / "up.bin"
        self.assertEqual(
            hashlib.sha256(uploaded.read_bytes()).digest(), hashlib.sha256(payload).digest()
        )
        self.assertEqual(uploaded.stat().st_mtime, MTIME)

        # Download both back.
        for job, path, want in ((2, "inbox/up.bin", payload), (3, "host.bin", made_on_host)):
            got = yield self._download(viewer, job, path)
            self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(want).hexdigest())
        host = self.hosts[0]
        self.assertEqual(host._files.jobs if host._files else None, {})
        yield self._close(viewer)
        self.assertIsNone(host._files)

    @defer.inlineCallbacks
    def _download(self, viewer: FileViewer, job: int, path: str) -> Any:
        viewer.act(send=pb.FileTransferSendRequest(id=job, path=path))
        listing = yield self._next(viewer)
        self.assertEqual(len(listing.file_response.dir.entries), 1)
        digest = yield self._next(viewer)
        self.assertEqual(digest.file_response.digest.file_num, 0)
        # The job is the TLS transport's producer while it runs.
        files = self.hosts[0]._files
        self.assertTrue(files is not None and files._registered)
        c = pb.FileTransferSendConfirmRequest(id=job, file_num=0, offset_blk=0)
        viewer.act(send_confirm=c)
        out = bytearray()
        while True:
            m = yield self._next(viewer)
            r = m.file_response
            if r.HasField("done"):
                self.assertEqual(r.done.file_num, 1)
                return bytes(out)
            self.assertTrue(r.HasField("block"), str(r))
            out += decode_block(r.block.data, r.block.compressed, BLOCK_SIZE)

    @defer.inlineCallbacks
    def test_no_file_root_is_refused(self) -> Any:
        viewer = self._start(None)
        resp = yield viewer.login
        self.assertEqual(resp.error, "No permission of file transfer")
        yield viewer.lost
        yield deferLater(reactor, 0.05, lambda: None)
