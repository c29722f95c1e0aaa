"""Hostile logins: the password lock-out cannot be turned against everyone, secrets stay private.

Issue 9, bugs 4 and 5.  The host sees every relayed viewer at the relay's
address, so RustDesk's per-address lock let one guesser lock out every
relayed viewer ("Please try 1 minute later", also for the right password).
Relayed checks are now paced host-wide instead (litedesk.session.login).
And a host without --password-file wrote its one-time password into a
0644 log, and ``--password`` showed the password to every local user.

The session tests drive L{HostSession} over a StringTransport with a Clock;
the lab tests run the real server, host and viewers (tests/support/e2e_lab.py).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from litedesk.logfiles import make_twistd_log_private, twistd_log_path
from litedesk.proto import message_pb2 as pb
from litedesk.session.framing import serialize_message
from litedesk.session.host_context import HostContext
from litedesk.session.host_session import HostSession
from litedesk.session.login import LoginVerifier
from litedesk.session.login_errors import ERROR_TRY_LATER, ERROR_WRONG_PASSWORD
from litedesk.session.password import StoredPassword, login_password
from litedesk.viewer.connection import PASSWORD_ARGV_WARNING
from litedesk.wire.bytescodec import FrameDecoder

from .support.clock import advance
from .support.e2e_lab import NEEDS, VIEWER, lab
from .support.fakes import FakeStreamer
from .support.polling import wait_until
from .support.processes import TWISTD
from .support.skips import requires

# A headless viewer whose TCP connections leave from the loopback address
# given as its first argument: each attacker then appears to the server (and
# to the host's per-requester limits) as its own machine, and the server's
# per-IP limits leave the legitimate viewer on 127.0.0.1 alone.
_BOUND_VIEWER_CODE = """
import socket, sys
source = sys.argv.pop(1)

class BoundSocket(socket.socket):
    def bind(self, address):
        # The viewer binds some sockets itself (a reserved port for the NAT
        # test and the rendezvous connection): keep its port, use our address.
        if self.family == socket.AF_INET and address[0] in ("", "0.0.0.0"):
            address = (source, address[1])
        return super().bind(address)

    def _bind_source(self):
        if self.family == socket.AF_INET and self.getsockname()[1] == 0:
            self.bind((source, 0))

    def connect(self, address):
        self._bind_source()
        return super().connect(address)

    def connect_ex(self, address):
        self._bind_source()
        return super().connect_ex(address)

socket.socket = BoundSocket
from litedesk.viewer.cli import main
main()
"""
BOUND_VIEWER = [sys.executable, "-c", _BOUND_VIEWER_CODE]

PEER_ID = "123456789"
PASSWORD = "right horse battery"
RELAY = "127.0.0.1"  # every relayed session's peer address


def _context(clock: Clock) -> HostContext:
    verifier = LoginVerifier(clock, StoredPassword.create(PASSWORD), one_time=False)
    return HostContext(
        peer_id=PEER_ID,
        verifier=verifier,
        clock=clock,
        make_streamer=lambda deliver, buffered, codec: FakeStreamer(),
        displays=[],
        hostname="test-host",
        username="tester",
    )


class _Viewer:
    """One relayed session, seen from the viewer's side of the (plain) stream."""

    def __init__(self, ctx: HostContext, port: int) -> None:
        self.session = HostSession(ctx, relayed=True)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", RELAY, port))
        self.session.makeConnection(self.transport)
        self.session.handshakeCompleted()  # the TLS layer is not under test here
        self._decoder = FrameDecoder(1 << 24)
        self.messages: list[pb.Message] = []
        self.salt, self.challenge = self._hash()

    def _read(self) -> list[pb.Message]:
        data = self.transport.value()
        self.transport.clear()
        for frame in self._decoder.feed(data):
            msg = pb.Message()
            msg.ParseFromString(frame)
            self.messages.append(msg)
        return self.messages

    def _hash(self) -> tuple[str, str]:
        for msg in self._read():
            if msg.WhichOneof("union") == "hash":
                return msg.hash.salt, msg.hash.challenge
        raise AssertionError("no Hash from the host")

    def login(self, password: str) -> None:
        answer = login_password(password, self.salt, self.challenge)
        request = pb.LoginRequest(username=PEER_ID, password=answer, my_id="viewer")
        self.session.dataReceived(serialize_message(pb.Message(login_request=request)))

    def response(self) -> pb.LoginResponse | None:
        for msg in self._read():
            if msg.WhichOneof("union") == "login_response":
                return msg.login_response
        return None

    def outcome(self) -> str | None:
        """None while waiting, "ok" when logged in, else the host's error."""
        response = self.response()
        if response is None:
            return None
        return "ok" if response.WhichOneof("union") == "peer_info" else response.error


class RelayedSessionLoginTests(SynchronousTestCase):
    """L{HostSession._login} for relayed sessions goes through the host-wide throttle."""

    def test_burst_then_right_password(self) -> None:
        """
        Eight relayed sessions send wrong passwords at once: three are
        answered "Wrong Password" at once, four wait their turn and are
        answered within 16 s, the eighth is refused at once with "Please try
        1 minute later"; then a viewer with the right password logs in,
        from the same relay address, within 20 s.
        """
        clock = Clock()
        ctx = _context(clock)
        attackers = [_Viewer(ctx, 40000 + i) for i in range(8)]
        for viewer in attackers:
            viewer.login("wrong guess")
        outcomes = [v.outcome() for v in attackers]
        self.assertEqual(outcomes[:3], [ERROR_WRONG_PASSWORD] * 3)
        self.assertEqual(outcomes[3:7], [None] * 4)
        self.assertEqual(outcomes[7], ERROR_TRY_LATER)
        self.assertTrue(attackers[7].transport.disconnecting)
        advance(clock, 16)
        self.assertEqual([v.outcome() for v in attackers[3:7]], [ERROR_WRONG_PASSWORD] * 4)
        started = clock.seconds()
        legit = _Viewer(ctx, 50000)
        legit.login(PASSWORD)
        outcome = legit.outcome()
        while outcome is None and clock.seconds() - started < 20:
            advance(clock, 0.5)
            outcome = legit.outcome()
        self.assertEqual(outcome, "ok")
        self.assertEqual(legit.session.state, "active")
        self.assertIn(legit.session, ctx.sessions)

    def test_one_check_per_session(self) -> None:
        """
        More LoginRequests on a session whose check is waiting are ignored:
        one session is one guess, answered once.
        """
        clock = Clock()
        ctx = _context(clock)
        for i in range(3):
            _Viewer(ctx, 41000 + i).login("wrong guess")
        viewer = _Viewer(ctx, 41010)
        for _ in range(5):
            viewer.login("wrong guess")
        self.assertEqual(ctx.verifier.relayed_throttle.waiting, 1)
        advance(clock, 10)
        self.assertEqual(viewer.outcome(), ERROR_WRONG_PASSWORD)
        answers = [m for m in viewer.messages if m.WhichOneof("union") == "login_response"]
        self.assertEqual(len(answers), 1)
        self.assertEqual(ctx.verifier.consecutive_failures, 4)

    def test_closed_while_waiting(self) -> None:
        """
        A session that goes away while its check waits is never checked,
        counted or answered, and its place goes to the next one.
        """
        clock = Clock()
        ctx = _context(clock)
        for i in range(3):
            _Viewer(ctx, 42000 + i).login("wrong guess")
        leaving = _Viewer(ctx, 42010)
        leaving.login(PASSWORD)
        staying = _Viewer(ctx, 42011)
        staying.login("wrong guess")
        self.assertIsNone(leaving.outcome())
        leaving.session.connectionLost()
        advance(clock, 10)
        self.assertEqual(leaving.transport.value(), b"")
        self.assertEqual(leaving.session.state, "closed")
        self.assertNotIn(leaving.session, ctx.sessions)
        self.assertEqual(staying.outcome(), ERROR_WRONG_PASSWORD)
        self.assertEqual(ctx.verifier.consecutive_failures, 4)

    def test_direct_sessions_keep_the_per_source_lock(self) -> None:
        """
        Sessions that are not relayed are still locked per source after six
        wrong passwords in a minute, even with the right password, while a
        relayed session from that same address gets in.
        """
        clock = Clock()
        ctx = _context(clock)

        def direct(port: int, password: str) -> str | None:
            viewer = _Viewer(ctx, port)
            viewer.session.relayed = False
            viewer.login(password)
            return viewer.outcome()

        for i in range(6):
            self.assertEqual(direct(43000 + i, "wrong guess"), ERROR_WRONG_PASSWORD)
        self.assertEqual(direct(43010, PASSWORD), ERROR_TRY_LATER)
        relayed = _Viewer(ctx, 43020)
        relayed.login(PASSWORD)
        self.assertEqual(relayed.outcome(), "ok")


class LogFileTests(SynchronousTestCase):
    """twistd's --logfile is created 0600, or made 0600, before twistd opens it."""

    class _Plugin:
        def __init__(self, parent: dict[str, Any] | None) -> None:
            if parent is not None:
                self.parent = parent

    def test_created_private(self) -> None:
        """A log file that does not exist yet is created empty with mode 0600."""
        path = Path(self.mktemp())
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        got = make_twistd_log_private(self._Plugin({"logfile": str(path), "nodaemon": True}))
        self.assertEqual(got, path)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(path.read_bytes(), b"")

    def test_existing_tightened(self) -> None:
        """An existing 0644 log and its rotated copies become 0600, their content kept."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "host.log"
        path.write_text("old lines\n")
        rotated = directory / "host.log.1"
        rotated.write_text("older lines\n")
        other = directory / "host.log.bak"
        other.write_text("not ours\n")
        for p in (path, rotated, other):
            os.chmod(p, 0o644)
        make_twistd_log_private(self._Plugin({"logfile": str(path)}))
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(rotated.stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(other.stat().st_mode), 0o644)
        self.assertEqual(path.read_text(), "old lines\n")

    def test_which_file(self) -> None:
        """
        As twistd decides: "-" and --nodaemon without --logfile are stdout,
        syslog is no file, a daemon without --logfile writes twistd.log;
        outside twistd (no parent options) nothing is touched.
        """
        self.assertIsNone(twistd_log_path({"logfile": "-", "nodaemon": True}))
        self.assertIsNone(twistd_log_path({"logfile": None, "nodaemon": True}))
        self.assertIsNone(twistd_log_path({"logfile": "x.log", "syslog": True}))
        self.assertEqual(twistd_log_path({"logfile": None, "nodaemon": False}), Path("twistd.log"))
        self.assertEqual(twistd_log_path({"logfile": "/v/h.log"}), Path("/v/h.log"))
        self.assertIsNone(twistd_log_path(None))
        self.assertIsNone(make_twistd_log_private(self._Plugin(None)))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class ViewerPasswordWarningTests(SynchronousTestCase):
    """``--password`` still works but says that everyone can read it."""

    def _viewer(self, *args: str, env: dict[str, str] | None = None) -> Any:
        known = Path(self.mktemp())
        # Port 9 on loopback: nothing listens, the viewer fails fast after
        # reading its password (which is all that is under test here).
        return subprocess.run(
            [*VIEWER, "127.0.0.1:9", "--headless", "--known-hosts", str(known), *args],
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    def test_password_option_warns(self) -> None:
        """
        --password prints the warning naming --password-file and
        LITEDESK_PASSWORD; the file and the variable print none.
        """
        self.assertIn("--password-file", PASSWORD_ARGV_WARNING)
        self.assertIn("LITEDESK_PASSWORD", PASSWORD_ARGV_WARNING)
        warned = self._viewer("--password", "visible-secret")
        self.assertIn(PASSWORD_ARGV_WARNING, warned.stderr)
        self.assertIn("cannot reach host", warned.stderr)  # and it went on to connect
        pwfile = Path(self.mktemp())
        pwfile.write_text("file-secret\n")
        os.chmod(pwfile, 0o600)
        quiet = self._viewer("--password-file", str(pwfile))
        self.assertNotIn("warning", quiet.stderr)
        self.assertIn("cannot reach host", quiet.stderr)
        env_only = self._viewer(env={"LITEDESK_PASSWORD": "env-secret"})
        self.assertNotIn("warning", env_only.stderr)
        self.assertIn("cannot reach host", env_only.stderr)


@requires(*NEEDS)
class HostileLoginLabTests(SynchronousTestCase):
    """Real server, relay, host on Xvfb and headless viewers."""

    def setUp(self) -> None:
        self.lab = lab()
        self.tmp = Path(self.mktemp())
        self.tmp.mkdir()

    def _viewer(
        self, peer: str, *args: str, password: str, source: str = "127.0.0.1"
    ) -> subprocess.Popen[str]:
        program = VIEWER if source == "127.0.0.1" else [*BOUND_VIEWER, source]
        argv = [
            *program,
            peer,
            "--rendezvous",
            f"127.0.0.1:{self.lab.port}",
            "--key",
            self.lab.key,
            "--headless",
            "--force-relay",
            *args,
        ]
        return subprocess.Popen(
            argv,
            env={**self.lab.env, "LITEDESK_PASSWORD": password},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )

    def test_relayed_burst_does_not_lock_out(self) -> None:
        """
        Eight viewers (from 127.0.0.2-9) send wrong passwords through the
        relay at once; all are refused (wrong password, or told to try later).  Then a viewer
        with the right password, from the same relay address, gets its
        screenshot within its 20 s login timeout; on the old per-address
        lock it was refused "too many attempts" for a minute.
        """
        peer = self.lab.host("hostile-login")
        attackers = [
            self._viewer(peer, password="not-the-password", source=f"127.0.0.{2 + i}")
            for i in range(8)
        ]
        outcomes = []
        for proc in attackers:
            _, err = proc.communicate(timeout=90)
            self.assertNotEqual(proc.returncode, 0, err)
            outcomes.append(err)
        self.assertTrue(all("wrong password" in e for e in outcomes), outcomes)
        self.assertTrue(any("Wrong Password" in e for e in outcomes), outcomes)
        shot = self.tmp / "after-burst.png"
        legit = self._viewer(
            peer, "--timeout", "20", "--screenshot", str(shot), password="e2e-password"
        )
        _, err = legit.communicate(timeout=90)
        self.assertEqual(legit.returncode, 0, err)
        self.assertGreater(shot.stat().st_size, 1000)
        host_log = (self.lab.dir / "host-hostile-login.log").read_text()
        # Guessing was slowed, not locked: the host made checks wait their turn.
        self.assertIn("for a password check", host_log)
        self.assertNotIn("refusing it for", host_log)

    def test_one_time_password_only_in_private_file(self) -> None:
        """
        A host without --password-file keeps its one-time password out of
        its log (the log says where to read it); the file and the log are
        mode 0600, as is the relay's log; the password from the file logs a
        viewer in.
        """
        cfg = self.lab.dir / "host-otp"
        log = self.lab.dir / "host-otp.log"
        peer_id = "e2eotp01"
        old = os.umask(0o022)  # what a default login shell has: files would be 0644
        try:
            self.lab._spawn(
                "host-otp",
                [
                    *TWISTD,
                    "-n",
                    "--pidfile=",
                    "--logfile",
                    str(log),
                    "litedesk-host",
                    "--config-dir",
                    str(cfg),
                    "--rendezvous",
                    f"127.0.0.1:{self.lab.port}",
                    "--key",
                    self.lab.key,
                    "--id",
                    peer_id,
                    "--display",
                    str(self.lab.xvfb.display),
                    "--view-only",
                ],
            )
        finally:
            os.umask(old)
        wait_until(
            lambda: log.exists() and f"as id {peer_id}" in log.read_text(),
            30,
            0.1,
            f"the host to register; see {log}",
        )
        otp_file = cfg / "one-time-password"
        otp = otp_file.read_text().strip()
        self.assertEqual(len(otp), 6)
        text = log.read_text()
        self.assertNotIn(otp, text)
        self.assertIn(str(otp_file), text)
        self.assertEqual(_mode(otp_file), 0o600)
        self.assertEqual(_mode(log), 0o600)
        self.assertEqual(_mode(self.lab.dir / "relay.log"), 0o600)
        viewer = self._viewer(peer_id, "--stats-json", password=otp)
        out, err = viewer.communicate(timeout=90)
        self.assertEqual(viewer.returncode, 0, err)
        self.assertIn('"path"', out)
        self.assertNotIn("warning", err)
