"""The LiteDesk viewer controls a stock RustDesk host (issue 11, viewer side).

C{litedesk-viewer ID --headless}, as a real process, against the emulated RustDesk 1.4.9
host of tests/support/rustdesk_host.py (written from RustDesk's source, sharing no code
with LiteDesk) registered with a real C{twistd litedesk-relay}, whose relay is reached
through the recording proxy of tests/support/e2e_lab.  On the LAN path (FetchLocalAddr)
and the forced relay path: the screenshot is the host's test picture, a click and typed
text arrive as the MouseEvents and KeyEvents a RustDesk host acts on, the clipboard goes
both ways, C{--stats-json} says C{"protocol": "rustdesk"}; a wrong password gives the
viewer's wrong-password failure; a host whose SignedId is signed by another key than the
one the server vouches for is refused before anything else is sent; and the relay sees
neither the typed text, the clipboard, the password nor the login proof.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from PIL import Image
from twisted.trial.unittest import SynchronousTestCase

from tests.support import rustdesk_host as rh
from tests.support.e2e_lab import VIEWER, RecordingProxy
from tests.support.ports import free_port_pair
from tests.support.processes import RelayProcess

PASSWORD = "rustdesk host password"
SIZE = (960, 540)
TYPED = "typed-through-rustdesk"
TO_HOST = "clipboard to the RustDesk host"
FROM_HOST = "clipboard from the RustDesk host"


class _Server:
    """One server for the module, its relay behind a recording proxy."""

    instance: _Server | None = None

    def __init__(self, root: Path) -> None:
        self.port = free_port_pair()
        self.proxy = RecordingProxy(("127.0.0.1", self.port + 1))
        self.proc = RelayProcess(
            root / "data",
            self.port,
            root / "relay.log",
            "--relay-servers",
            f"127.0.0.1:{self.proxy.port}",
        )
        self.key = (root / "data" / "id_ed25519.pub").read_text().strip()
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.stop()
        self.proxy.close()

    @classmethod
    def get(cls, case: SynchronousTestCase) -> _Server:
        if cls.instance is None:
            root = Path(case.mktemp())
            root.mkdir(parents=True)
            cls.instance = cls(root)
            atexit.register(cls.instance.stop)
        return cls.instance


class ViewerAgainstRustDeskHost(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = _Server.get(self)
        self.dir = Path(self.mktemp())
        self.dir.mkdir(parents=True)

    def host(self, peer_id: str, **kw: Any) -> rh.RustDeskHost:
        host = rh.RustDeskHost(peer_id, PASSWORD, width=SIZE[0], height=SIZE[1], **kw)
        self.addCleanup(host.stop)
        host.start_rendezvous(self.server.address, self.server.key)
        host.wait_registered()
        return host

    def viewer(
        self, peer_id: str, *args: str, password: str = PASSWORD
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, LITEDESK_PASSWORD=password)
        argv = [
            *VIEWER,
            peer_id,
            "--rendezvous",
            self.server.address,
            "--key",
            self.server.key,
            "--headless",
            *args,
        ]
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL
        )

    @staticmethod
    def push_clipboard_after_login(host: rh.RustDeskHost, text: str) -> threading.Thread:
        """A stock host sends its clipboard when it changes: change it once the viewer is in."""

        def push() -> None:
            host.wait_session(lambda r: r.authorized, timeout=60)
            host.send_clipboard(text)

        t = threading.Thread(target=push, daemon=True)
        t.start()
        return t

    def full_session(
        self, peer_id: str, *extra: str
    ) -> tuple[rh.RustDeskHost, rh.SessionRecord, dict[str, Any]]:
        """Screenshot, click, typing, clipboard both ways; the host's record and the stats."""
        host = self.host(peer_id)
        pusher = self.push_clipboard_after_login(host, FROM_HOST)
        shot = self.dir / "screen.png"
        done = self.viewer(
            peer_id,
            *extra,
            "--click",
            "200,150",
            "--type",
            TYPED,
            "--clipboard-set",
            TO_HOST,
            "--clipboard-get",
            "--screenshot",
            str(shot),
            "--stats-json",
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        pusher.join(5)
        out = done.stdout.strip().splitlines()
        self.assertEqual(out[0], FROM_HOST)
        stats: dict[str, Any] = json.loads(out[-1])
        record = host.wait_session(lambda r: r.authorized)
        # The viewer disconnected; the host saw the session end.
        self.assertTrue(record.closed.wait(10))

        self.assertEqual(stats["protocol"], "rustdesk")
        self.assertEqual(stats["codec"], "vp9")
        self.assertTrue(record.encrypted)
        self.assertEqual(record.codecs, ["vp9"])
        with Image.open(shot) as im:
            self.assertEqual(im.size, SIZE)
            self.assertLess(rh.picture_error(im, *SIZE), 8)
        # mask = buttons << 3 | type: a move, then left (1) down (1) and up (2).
        self.assertEqual(
            [(m.mask, m.x, m.y) for m in record.mouse],
            [(0, 200, 150), (1 << 3 | 1, 200, 150), (1 << 3 | 2, 200, 150)],
        )
        self.assertEqual(record.typed_text(), TYPED)
        self.assertEqual(record.clipboards, [TO_HOST])
        lr = record.login_requests[-1]
        self.assertEqual(lr.username, peer_id)
        self.assertTrue(lr.option.supported_decoding.ability_vp9)
        return host, record, stats

    def test_lan_path(self) -> None:
        _, record, stats = self.full_session("810000001")
        self.assertEqual(stats["path"], "lan")
        self.assertEqual(record.path, "lan")

    def test_forced_relay_through_the_recording_proxy(self) -> None:
        before = len(self.server.proxy.snapshot())
        host, record, stats = self.full_session("810000002", "--force-relay")
        self.assertEqual(stats["path"], "relay")
        self.assertEqual(record.path, "relay")
        seen = self.server.proxy.snapshot()[before:]
        # The proxy carried this session: the host's relay request and every byte of the
        # session both ways ...
        leg = [
            m.request_relay
            for m in host.rendezvous_sent
            if m.WhichOneof("union") == "request_relay"
        ]
        self.assertIn(leg[0].uuid.encode(), seen)
        self.assertGreaterEqual(len(seen), record.bytes_sent + record.bytes_received)
        self.assertGreater(record.bytes_sent, 1000)
        # ... and none of what the session keeps secret.
        h1 = hashlib.sha256(PASSWORD.encode() + host.salt.encode()).digest()
        proof = hashlib.sha256(h1 + record.challenge.encode()).digest()
        for secret in (TYPED, TO_HOST, FROM_HOST, PASSWORD):
            self.assertNotIn(secret.encode(), seen, secret)
        self.assertNotIn(h1, seen)
        self.assertNotIn(proof, seen)

    def test_wrong_password(self) -> None:
        host = self.host("810000003")
        done = self.viewer("810000003", "--stats-json", password="not the password")
        self.assertEqual(done.returncode, 1, done.stdout)
        self.assertIn("litedesk-viewer: wrong password", done.stderr)
        record = host.wait_session(lambda r: r.login_errors)
        self.assertEqual(record.login_errors, [rh.LOGIN_WRONG_PASSWORD])
        self.assertFalse(record.authorized)

    def test_codec_choice(self) -> None:
        """The viewer asks for VP9 unless told otherwise, even of a host that would pick
        AV1 or H.264 for a client preferring nothing; --codec asks for another one."""
        host = self.host("810000005", codecs=rh.HostCodecs(av1_test=True, h264=True))
        for codec in (None, "vp8", "av1", "h264"):
            shot = self.dir / f"{codec}.png"
            extra = ("--codec", codec) if codec else ()
            done = self.viewer("810000005", *extra, "--screenshot", str(shot), "--stats-json")
            self.assertEqual(done.returncode, 0, done.stderr)
            want = codec or "vp9"
            self.assertEqual(json.loads(done.stdout)["codec"], want)
            self.assertEqual(host.sessions[-1].codecs, [want])
            with Image.open(shot) as im:
                self.assertLess(rh.picture_error(im, *SIZE), 8, want)

    def test_signed_id_by_another_key_is_refused(self) -> None:
        host = self.host("810000004", sign_key=SigningKey.generate())
        done = self.viewer("810000004", "--stats-json")
        self.assertEqual(done.returncode, 1, done.stdout)
        self.assertIn("host key mismatch", done.stderr)
        record = host.wait_session()
        self.assertTrue(record.closed.wait(30))
        # The viewer answered nothing: no PublicKey, no plaintext fallback, no login.
        self.assertEqual(record.handshake, "")
        self.assertEqual((record.received, record.login_requests), ([], []))
        self.assertFalse(record.encrypted)


class ViewerDirectToRustDeskHost(SynchronousTestCase):
    """HOST:PORT without a server: nothing vouches for a RustDesk host's key."""

    def run_viewer(self, secure: bool) -> tuple[rh.RustDeskHost, subprocess.CompletedProcess[str]]:
        host = rh.RustDeskHost("810000009", PASSWORD, width=SIZE[0], height=SIZE[1])
        self.addCleanup(host.stop)
        port = host.listen(secure=secure)
        known = Path(self.mktemp())
        env = dict(os.environ, LITEDESK_PASSWORD=PASSWORD)
        argv = [*VIEWER, f"127.0.0.1:{port}", "--known-hosts", str(known), "--headless"]
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        return host, done

    def test_signed_id_cannot_be_verified(self) -> None:
        host, done = self.run_viewer(secure=True)
        self.assertEqual(done.returncode, 1)
        self.assertIn("cannot verify a RustDesk host", done.stderr)
        record = host.wait_session()
        self.assertTrue(record.closed.wait(30))
        self.assertEqual((record.received, record.login_requests), ([], []))

    def test_direct_ip_access_without_signed_id_is_refused(self) -> None:
        # RustDesk's direct-IP listener (21118) sends Hash in plaintext at once.
        host, done = self.run_viewer(secure=False)
        self.assertEqual(done.returncode, 1)
        self.assertIn("not a LiteDesk or RustDesk host", done.stderr)
        record = host.wait_session()
        self.assertTrue(record.closed.wait(30))
        self.assertEqual((record.received, record.login_requests), ([], []))
