"""A stock RustDesk client's file transfer and port forward against a real LiteDesk host.

End to end under Xvfb (tests/support/e2e_lab.py): a real C{twistd litedesk-relay} and real
C{twistd litedesk-host} agents, one with C{--file-root} and C{--allow-forward}, one with
C{--no-file-transfer}, driven by the stock-client emulator (tests/support/rustdesk_files.py,
rustdesk_fs.py and rustdesk_forward.py on top of rustdesk_client.py and
rustdesk_rendezvous.py), which imports nothing of LiteDesk but its protobufs.  What a
person using the RustDesk app would notice is checked on the LAN path and through the
relay: the root's listing, an 8 MiB file downloaded and uploaded intact (SHA-256), a
download resumed from a partial C{.download} and one skipped to keep a local file, a path
outside the root refused, the refusal of a host without file transfer, an HTTP GET through
a forwarded port, and the refusal of a target the host does not allow.

The unit tests at the top check the emulator itself against RustDesk's source: the
LoginRequests and relay frame of the two session kinds (client.rs), raw mode after a
port-forward login (tcp.rs set_raw), its file-side rules (hbb_common fs.rs: version
numbers, file-name checks, block compression), and what it does with any FileResponse a
host may send (hypothesis).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import message_pb2 as pb
from litedesk.proto import rendezvous_pb2 as rz

from .support import rustdesk_client as rc
from .support import rustdesk_files as rf
from .support import rustdesk_forward as rfw
from .support import rustdesk_fs as rfs
from .support import rustdesk_rendezvous as rr
from .support.e2e_lab import NEEDS, Lab, lab
from .support.imports import module_imports
from .support.skips import requires

if TYPE_CHECKING:
    _Case = SynchronousTestCase
else:
    _Case = object

HOST = "rd-files"
NO_FILES_HOST = "rd-nofiles"
PASSWORD = "rd-files-Pw-4410"
BIG = 8 * 1024 * 1024
TUNNEL_MARKER = b"LITEDESK-TUNNEL-BODY-7Qx"
RATE_RETRIES = 10


# --- unit tests of the emulator's file side ---------------------------------------------------


class IndependenceTests(SynchronousTestCase):
    def test_emulator_modules_import_nothing_of_litedesks_code(self) -> None:
        """Only the generated protobufs and the other emulator modules."""
        for module in (rf, rfs, rfw):
            absolute, relative = module_imports(module.__file__ or "")
            litedesk = {m for m in absolute if m.startswith("litedesk")}
            self.assertLessEqual(litedesk, {"litedesk.proto"}, module.__name__)
            self.assertLessEqual(relative, {"rustdesk_client", "rustdesk_fs"}, module.__name__)


class FsRulesTests(SynchronousTestCase):
    def test_version_numbers(self) -> None:
        # hbb_common get_version_number: the last part counts ten times.  (Its comment's
        # "1.2.3 -> 1001030" is a slip: the code gives 1002030.)
        self.assertEqual(rfs.version_number("1.1.10"), 1001100)
        self.assertEqual(rfs.version_number("1.2.3"), 1002030)
        self.assertGreater(rfs.version_number("1.4.9"), rfs.version_number("1.4.2"))
        self.assertLess(rfs.version_number("1.1.9"), rfs.version_number("1.1.10"))

    def test_unsafe_names(self) -> None:
        self.assertIsNone(rfs.transfer_name_error([""]))
        self.assertIsNone(rfs.transfer_name_error(["a", "b/c.txt"]))
        self.assertIsNotNone(rfs.transfer_name_error(["a", ""]))
        self.assertIsNotNone(rfs.transfer_name_error(["../x"]))
        self.assertIsNotNone(rfs.transfer_name_error(["a/../../x"]))
        self.assertIsNotNone(rfs.transfer_name_error(["/etc/passwd"]))
        self.assertIsNotNone(rfs.transfer_name_error(["a\0b"]))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.text(max_size=20), min_size=1, max_size=4))
    def test_accepted_names_stay_below_the_destination(self, names: list[str]) -> None:
        if rfs.transfer_name_error(names) is not None:
            return
        base = Path("/dest/dir")
        for name in names:
            joined = os.path.normpath(base / name) if name else str(base)
            self.assertTrue(joined == str(base) or joined.startswith(f"{base}/"), name)

    def test_recursive_files(self) -> None:
        root = Path(self.mktemp())
        (root / "sub" / ".hid").mkdir(parents=True)
        (root / "a.txt").write_bytes(b"abc")
        (root / "sub" / "b.bin").write_bytes(b"12345")
        (root / "sub" / ".hid" / "c").write_bytes(b"")
        names = {e.name: e.size for e in rfs.recursive_files(root, False)}
        self.assertEqual(names, {"a.txt": 3, "sub/b.bin": 5})
        self.assertIn("sub/.hid/c", {e.name for e in rfs.recursive_files(root, True)})
        single = rfs.recursive_files(root / "a.txt", False)
        self.assertEqual([(e.name, e.size) for e in single], [("", 3)])

    def test_block_compression_rule(self) -> None:
        """fs.rs read: zstd only when shorter, never for already compressed kinds."""
        for name, data, packed in (
            ("t.txt", b"a" * 200_000, True),
            ("t.gz", b"a" * 200_000, False),
            ("t.bin", os.urandom(1000), False),
        ):
            path = Path(self.mktemp())
            path.mkdir()
            (path / name).write_bytes(data)
            # A single-file job: the extension is the source file's own.
            job = rfs.ReadJob(rfs.Transfer(1), path / name, False)
            job.open()
            block = job.read()
            self.assertEqual(block.compressed, packed, name)
            got = rfs.decompress(block.data) if block.compressed else block.data
            self.assertEqual(got, data[: rfs.BLOCK_SIZE])


class SessionShapeTests(SynchronousTestCase):
    """What the emulator sends for the two session kinds, as client.rs builds it."""

    def test_login_requests(self) -> None:
        who = rc.ClientIdentity(session_id=5)
        ft = rc.build_login_request("1", b"p", who, pb.FileTransfer(dir="/d", show_hidden=True))
        self.assertEqual(ft.login_request.WhichOneof("union"), "file_transfer")
        self.assertEqual(
            (ft.login_request.file_transfer.dir, ft.login_request.file_transfer.show_hidden),
            ("/d", True),
        )
        # get_option_message returns None for file transfer and port forward.
        self.assertFalse(ft.login_request.HasField("option"))
        pf = rc.build_login_request("1", b"p", who, pb.PortForward(host="h", port=80))
        self.assertEqual(pf.login_request.WhichOneof("union"), "port_forward")
        forward = pf.login_request.port_forward
        self.assertEqual((forward.host, forward.port), ("h", 80))
        self.assertFalse(pf.login_request.HasField("option"))
        desktop = rc.build_login_request("1", b"p", who)
        self.assertIsNone(desktop.login_request.WhichOneof("union"))
        self.assertTrue(desktop.login_request.option.HasField("supported_decoding"))

    def test_relay_leg_carries_the_conn_type(self) -> None:
        reader = rc.FrameReader()
        reader.feed(rc.request_relay_frame("u", "k", "1", rz.PORT_FORWARD))
        msg = rz.RendezvousMessage()
        msg.ParseFromString(reader.next() or b"")
        self.assertEqual(msg.request_relay.conn_type, rz.PORT_FORWARD)

    def test_raw_mode_keeps_the_bytes_behind_the_login(self) -> None:
        """Tunnelled bytes in the same read as the LoginResponse come out first, as they
        are; later ones too, with no header and no decryption."""
        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        client = rc.RustDeskClient(ours, "1", None, timeout=5)
        self.addCleanup(client.close)
        login = pb.Message(login_response=pb.LoginResponse(peer_info=pb.PeerInfo(username="u")))
        theirs.sendall(rc.encode_frame(login.SerializeToString()) + b"HTTP/1.0 200 OK\r\n")
        self.assertEqual(client.recv().WhichOneof("union"), "login_response")
        tunnel = rfw.Tunnel(client)
        theirs.sendall(b"\x00\x04tail")
        theirs.shutdown(socket.SHUT_WR)
        self.assertEqual(tunnel.recv_all(), b"HTTP/1.0 200 OK\r\n\x00\x04tail")
        tunnel.sendall(b"GET")
        self.assertEqual(theirs.recv(10), b"GET")


def _draining_client() -> rc.RustDeskClient:
    """A client on a socket pair whose far end reads and drops what the client sends."""
    ours, theirs = socket.socketpair()

    def drain() -> None:
        with theirs:
            while theirs.recv(65536):
                pass

    threading.Thread(target=drain, daemon=True).start()
    return rc.RustDeskClient(ours, "123456789", None)


_NAMES = st.sampled_from(["", "a", "d/e", "../x", "d/../../x", "/etc/x", "..", "a\0b"]) | st.text(
    max_size=8
)
_U64 = st.integers(0, 2**64 - 1)
_FILE_NUM = st.integers(0, 3)
_ENTRY = st.builds(
    lambda name, size, mtime: pb.FileEntry(
        entry_type=pb.File, name=name, size=size, modified_time=mtime
    ),
    _NAMES,
    _U64,
    _U64,
)
_DATA = st.binary(max_size=64) | st.just(rfs.compress(b"x" * 300))
_RESPONSES = st.one_of(
    st.lists(_ENTRY, max_size=3).map(
        lambda e: pb.FileResponse(dir=pb.FileDirectory(id=1, path="/h", entries=e))
    ),
    st.builds(
        lambda n, size, mtime, resume: pb.FileResponse(
            digest=pb.FileTransferDigest(
                id=1, file_num=n, file_size=size, last_modified=mtime, is_resume=resume
            )
        ),
        _FILE_NUM,
        _U64,
        _U64,
        st.booleans(),
    ),
    st.builds(
        lambda n, data, packed: pb.FileResponse(
            block=pb.FileTransferBlock(id=1, file_num=n, data=data, compressed=packed)
        ),
        _FILE_NUM,
        _DATA,
        st.booleans(),
    ),
    _FILE_NUM.map(lambda n: pb.FileResponse(done=pb.FileTransferDone(id=1, file_num=n))),
    st.text(max_size=10).map(lambda e: pb.FileResponse(error=pb.FileTransferError(id=1, error=e))),
)


class HostileFileResponseTests(SynchronousTestCase):
    """Whatever a host sends for a download job, in any order, the emulator writes only
    below its destination and never raises anything but its own error."""

    def setUp(self) -> None:
        self.client = _draining_client()
        self.addCleanup(self.client.close)
        login = rc.LoginResult(
            response=pb.LoginResponse(peer_info=pb.PeerInfo(username="u", version="1.4.9")),
            hash=pb.Hash(),
            before=[],
        )
        self.session = rf.FileSession(self.client, login)

    def _feed(self, responses: list[pb.FileResponse], resume: bool) -> None:
        top = Path(self.mktemp())
        top.mkdir()
        job = rfs.WriteJob(rfs.Transfer(1), top / "dest", is_resume=resume)
        try:
            for fr in responses:
                with contextlib.suppress(rc.EmulatorError):
                    self.session._download_step(job, fr)
        finally:
            job.close()
        # A single-file job's destination is the base itself (its .download beside it).
        allowed = {"dest", "dest.download", "dest.digest"}
        for path in top.rglob("*"):
            rel = path.relative_to(top)
            self.assertTrue(str(rel) in allowed or rel.parts[0] == "dest", str(rel))

    def test_well_formed_download_lands_the_files(self) -> None:
        """The sequence a RustDesk host sends: two files, one compressed, renamed into
        place with the host's mtimes (so the property below is not vacuous)."""
        top = Path(self.mktemp())
        top.mkdir()
        job = rfs.WriteJob(rfs.Transfer(1), top / "dest")
        entries = [
            pb.FileEntry(name="a", size=3, modified_time=1000),
            pb.FileEntry(name="d/b", size=300, modified_time=2000),
        ]
        for fr in (
            pb.FileResponse(dir=pb.FileDirectory(id=1, entries=entries)),
            pb.FileResponse(digest=pb.FileTransferDigest(id=1, file_size=3, last_modified=1000)),
            pb.FileResponse(block=pb.FileTransferBlock(id=1, data=b"abc")),
            pb.FileResponse(block=pb.FileTransferBlock(id=1)),
            pb.FileResponse(digest=pb.FileTransferDigest(id=1, file_num=1, file_size=300)),
            pb.FileResponse(
                block=pb.FileTransferBlock(
                    id=1, file_num=1, data=rfs.compress(b"x" * 300), compressed=True
                )
            ),
            pb.FileResponse(block=pb.FileTransferBlock(id=1, file_num=1)),
            pb.FileResponse(done=pb.FileTransferDone(id=1, file_num=2)),
        ):
            self.session._download_step(job, fr)
        found = sorted(str(p.relative_to(top)) for p in top.rglob("*"))
        self.assertEqual(found, ["dest", "dest/a", "dest/d", "dest/d/b"])
        self.assertEqual((top / "dest" / "a").read_bytes(), b"abc")
        self.assertEqual((top / "dest" / "a").stat().st_mtime, 1000)
        self.assertEqual((top / "dest" / "d" / "b").read_bytes(), b"x" * 300)
        self.assertEqual([c.offset_blk for c in job.t.confirms], [0, 0])

    @settings(
        max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(st.lists(_RESPONSES, max_size=8), st.booleans())
    def test_any_sequence_of_file_responses(
        self, responses: list[pb.FileResponse], resume: bool
    ) -> None:
        self._feed(responses, resume)

    @settings(
        max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(st.lists(st.binary(max_size=200), max_size=6))
    def test_any_bytes(self, payloads: list[bytes]) -> None:
        responses = []
        for payload in payloads:
            fr = pb.FileResponse()
            try:
                fr.ParseFromString(payload)
            except DecodeError:
                continue
            if fr.WhichOneof("union") is not None:
                responses.append(fr)
        self._feed(responses, False)


# --- end to end --------------------------------------------------------------------------------


class _Body(BaseHTTPRequestHandler):
    body = TUNNEL_MARKER + os.urandom(2 * 1024 * 1024)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


_target: ThreadingHTTPServer | None = None


def http_target() -> int:
    """The local web server the host may forward to (one per test process)."""
    global _target
    if _target is None:
        _target = ThreadingHTTPServer(("127.0.0.1", 0), _Body)
        threading.Thread(target=_target.serve_forever, daemon=True).start()
    return _target.server_address[1]


def file_root(the_lab: Lab) -> Path:
    root = the_lab.dir / "rd-files-root"
    root.mkdir(exist_ok=True)
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def big_file(path: Path) -> Path:
    """8 MiB, half random and half text: blocks both as they are and zstd-compressed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = b"".join(b"line %08d of a text the host compresses\n" % i for i in range(200_000))
    path.write_bytes((os.urandom(BIG // 2) + text)[:BIG])
    return path


def reach_paced(server: str, key: str, peer: str, **kwargs: Any) -> rr.Reached:
    """rr.reach, again after a pause while the server says to try again in a few seconds.

    The lab's server allows a source IP 2 punch/relay requests a second (bursts of 20);
    this module opens a session per check, two requests each on the relay path, as a
    user would retry after RustDesk showed the server's text.
    """
    for _ in range(RATE_RETRIES):
        try:
            return rr.reach(server, key, peer, **kwargs)
        except rr.RendezvousFailure as e:
            if not str(e).startswith("Too many connection requests"):
                raise
            time.sleep(2)
    return rr.reach(server, key, peer, **kwargs)


class StockClientFileChecks(_Case):
    """The checks, run once per path; subclasses set C{force_relay} and C{path}."""

    force_relay = False
    path = "direct"
    lab: Lab
    peer: str
    root: Path
    sub: Path
    tmp: Path

    def setUp(self) -> None:
        self.lab = lab()
        self.root = file_root(self.lab)
        self.peer = self.lab.host(
            HOST,
            "--file-root",
            str(self.root),
            "--allow-forward",
            f"127.0.0.1:{http_target()}",
            password=PASSWORD,
        )
        # A directory of this test's own below the host's root.
        self.sub = self.root / f"{self.path}-{self._testMethodName}"
        self.sub.mkdir()
        # Absolute: a relative path would be the host's to resolve (below its root).
        self.tmp = Path(self.mktemp()).absolute()
        self.tmp.mkdir()

    def reach(self, conn_type: int, peer: str | None = None) -> rc.RustDeskClient:
        reached = reach_paced(
            f"127.0.0.1:{self.lab.port}",
            self.lab.key,
            peer or self.peer,
            force_relay=self.force_relay,
            conn_type=conn_type,
        )
        self.assertEqual(reached.path, self.path)
        client = rc.RustDeskClient(reached.sock, peer or self.peer, reached.answer.host_pk)
        self.addCleanup(client.close)
        self.assertTrue(client.handshake())
        return client

    def files(self, **kwargs: object) -> rf.FileSession:
        client = self.reach(rz.FILE_TRANSFER)
        login = rf.file_login(client, PASSWORD)
        self.assertEqual(login.response.error, "")
        return rf.FileSession(client, login, **kwargs)  # type: ignore[arg-type]

    def remote(self, session: rf.FileSession, *parts: str) -> str:
        """A path on the host as the client builds it: the listed root's path joined."""
        base = session.first_listing().dir.path.rstrip("/")
        return "/".join([base, self.sub.name, *parts])

    def test_lists_the_root(self) -> None:
        """The login's listing is the host's file root; a folder lists its files."""
        (self.sub / "notes.txt").write_bytes(b"hello")
        (self.sub / "folder").mkdir()
        session = self.files()
        first = session.first_listing()
        self.assertEqual(first.WhichOneof("union"), "dir")
        self.assertEqual(Path(first.dir.path).resolve(), self.root.resolve())
        self.assertIn(self.sub.name, {e.name for e in first.dir.entries if e.entry_type == pb.Dir})
        listing = session.read_dir(self.remote(session))
        self.assertEqual(listing.WhichOneof("union"), "dir")
        entries = {e.name: (e.entry_type, e.size) for e in listing.dir.entries}
        self.assertEqual(entries, {"notes.txt": (pb.File, 5), "folder": (pb.Dir, 0)})

    def test_download_8mib(self) -> None:
        source = big_file(self.sub / "big.bin")
        session = self.files()
        dest = self.tmp / "big.bin"
        t = session.download(self.remote(session, "big.bin"), dest)
        self.assertEqual((t.error, t.problems), (None, []))
        assert t.done is not None
        self.assertEqual(t.done.file_num, 1)
        self.assertEqual(sha256(dest), sha256(source))
        self.assertEqual([d.file_size for d in t.digests], [BIG])
        self.assertEqual([c.offset_blk for c in t.confirms], [0])
        # Renamed into place with the host's mtime, no partial files left.
        self.assertEqual(sorted(p.name for p in self.tmp.iterdir()), ["big.bin"])
        self.assertEqual(int(dest.stat().st_mtime), int(source.stat().st_mtime))
        self.assertGreater(t.compressed_blocks, 0)
        self.assertLess(t.compressed_blocks, t.blocks)

    def test_upload_8mib(self) -> None:
        source = big_file(self.tmp / "up.bin")
        session = self.files()
        t = session.upload(source, self.remote(session, "up.bin"))
        self.assertEqual(t.error, None)
        assert t.done is not None
        self.assertEqual(sha256(self.sub / "up.bin"), sha256(source))
        # No such file on the host: its send_confirm starts the blocks at 0.
        self.assertEqual([(c.file_num, c.offset_blk) for c in t.confirms], [(0, 0)])
        self.assertEqual(sorted(p.name for p in self.sub.iterdir()), ["up.bin"])

    def test_download_resumes_a_partial_file(self) -> None:
        source = big_file(self.sub / "resume.bin")
        data = source.read_bytes()
        dest = self.tmp / "resume.bin"
        half = 3 * 1024 * 1024
        Path(f"{dest}.download").write_bytes(data[:half])
        digest = {"size": BIG, "modified": int(source.stat().st_mtime)}
        Path(f"{dest}.digest").write_text(json.dumps(digest))
        session = self.files()
        t = session.download(self.remote(session, "resume.bin"), dest, resume=True)
        self.assertEqual((t.error, t.problems), (None, []))
        self.assertEqual([c.offset_blk for c in t.confirms], [half])
        self.assertEqual(sha256(dest), sha256(source))
        self.assertEqual(sorted(p.name for p in self.tmp.iterdir()), ["resume.bin"])

    def test_skip_keeps_the_local_file(self) -> None:
        big_file(self.sub / "keep.bin")
        dest = self.tmp / "keep.bin"
        dest.write_bytes(b"mine")
        session = self.files(overwrite=False)
        t = session.download(self.remote(session, "keep.bin"), dest)
        self.assertEqual([c.skip for c in t.confirms], [True])
        self.assertEqual(t.error, "skipped")
        self.assertEqual(dest.read_bytes(), b"mine")

    def test_outside_the_root_is_refused(self) -> None:
        session = self.files()
        listing = session.read_dir("/etc")
        self.assertEqual(listing.WhichOneof("union"), "error")
        self.assertIn("outside the file root", listing.error.error)
        t = session.download("/etc/hostname", self.tmp / "hostname")
        self.assertIn("outside the file root", t.error or "", t)
        self.assertEqual(list(self.tmp.iterdir()), [])
        outside = self.tmp / "outside"
        source = self.tmp / "small.txt"
        source.write_bytes(b"should not land")
        t = session.upload(source, str(outside))
        self.assertIn("outside the file root", t.error or "", t)
        self.assertFalse(outside.exists())

    def test_host_without_file_transfer(self) -> None:
        peer = self.lab.host(NO_FILES_HOST, "--no-file-transfer", password=PASSWORD)
        client = self.reach(rz.FILE_TRANSFER, peer)
        login = rf.file_login(client, PASSWORD)
        self.assertEqual(login.response.error, "No permission of file transfer")
        self.assertTrue(client.closed_by_peer())

    def dial_forward(self) -> rc.RustDeskClient:
        return self.reach(rz.PORT_FORWARD)

    def test_http_get_through_a_forwarded_port(self) -> None:
        """What a user of RustDesk's port forward does: a local port, a browser's GET."""
        listener = rfw.PortForwardListener(self.dial_forward, PASSWORD, "127.0.0.1", http_target())
        self.addCleanup(listener.close)
        conn = http.client.HTTPConnection("127.0.0.1", listener.port, timeout=30)
        self.addCleanup(conn.close)
        conn.request("GET", "/tunnel.bin")
        response = conn.getresponse()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.read(), _Body.body)
        self.assertEqual(listener.errors, [])

    def test_tunnel_is_raw_bytes(self) -> None:
        """After the login the stream is the target's bytes as they are (set_raw)."""
        before = len(self.lab.proxy.snapshot())
        client = self.reach(rz.PORT_FORWARD)
        login, tunnel = rfw.open_tunnel(client, PASSWORD, "127.0.0.1", http_target())
        self.assertEqual(login.response.error, "")
        assert tunnel is not None
        tunnel.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = tunnel.recv_all()
        self.assertTrue(reply.startswith(b"HTTP/1.0 200"), reply[:40])
        self.assertTrue(reply.endswith(_Body.body))
        if self.force_relay:
            # RustDesk's tunnel is not encrypted: the relay carries the body as it is.
            self.assertIn(TUNNEL_MARKER, self.lab.proxy.snapshot()[before:])

    def test_target_not_allowed(self) -> None:
        client = self.reach(rz.PORT_FORWARD)
        login, tunnel = rfw.open_tunnel(client, PASSWORD, "127.0.0.1", self.lab.port)
        self.assertIsNone(tunnel)
        self.assertEqual(login.response.error, "No permission of IP tunneling")


@requires(*NEEDS)
class LanPathFileTests(StockClientFileChecks, SynchronousTestCase):
    """The LAN address the server offers a client behind the host's public IP."""


@requires(*NEEDS)
class RelayPathFileTests(StockClientFileChecks, SynchronousTestCase):
    """The client forces the relay (its RequestRelay carries the session's conn_type)."""

    force_relay = True
    path = "relay"
