"""The window's connection logic on a Clock: attempts, reconnect delays, the
countdown text, and which failures end in a dialog instead of a retry.

L{ConnectionController} with a recording view, real L{ViewerSession}s over
C{StringTransport}, and a connector whose results the tests decide.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import message_pb2 as pb
from litedesk.session.viewer_session import SessionError, ViewerSession
from litedesk.viewer.connection import FailureReason
from litedesk.viewer.controller import RECONNECT_DELAYS, ConnectionController
from litedesk.viewer.route import ConnectError

INFO = pb.PeerInfo(displays=[pb.DisplayInfo(width=1920, height=1080)])


class RecordingView:
    """Plays the window: makes sessions and records what it is told."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sessions: list[ViewerSession] = []
        self.failures: list[tuple[str, str, FailureReason]] = []
        self.statuses: list[str] = []
        self.pending: list[bool] = []
        self.logins: list[ViewerSession] = []
        self.asked = 0
        self.lost = 0

    def make_session(self) -> ViewerSession:
        s = ViewerSession(self.clock, "123456789", "pw")
        self.sessions.append(s)
        return s

    def attempt_started(self) -> None:
        pass

    def status_changed(self) -> None:
        pass

    def logged_in(self, session: ViewerSession, info: pb.PeerInfo) -> None:
        self.logins.append(session)

    def session_lost(self) -> None:
        self.lost += 1

    def failed(self, title: str, detail: str, reason: FailureReason) -> None:
        self.failures.append((title, detail, reason))

    def reconnect_pending(self, pending: bool) -> None:
        self.pending.append(pending)

    def set_status(self, text: str) -> None:
        self.statuses.append(text)

    def ask_destination(self) -> None:
        self.asked += 1


class ControllerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.view = RecordingView(self.clock)
        self.args = argparse.Namespace(target="123456789", timeout=20.0)
        self.calls: list[tuple[ViewerSession, Callable[[str], None], Deferred[str]]] = []

        def connector(session: ViewerSession, progress: Callable[[str], None]) -> Deferred[str]:
            d: Deferred[str] = Deferred()
            self.calls.append((session, progress, d))
            return d

        self.ctl = ConnectionController(self.clock, self.args, self.view, connector)

    def reach(self, path: str = "relay", attempt: int = -1) -> ViewerSession:
        """An attempt (the latest) reaches the host (stream open, TLS started)."""
        session, progress, d = self.calls[attempt]
        session.makeConnection(StringTransport())
        progress(path)
        d.callback(path)
        return session

    def log_in(self) -> ViewerSession:
        """Log in: the pending attempt, or a new one."""
        if not self.calls or self.calls[-1][2].called:
            self.ctl.connect()
        session = self.reach()
        session.logged_in.callback(INFO)
        self.assertTrue(self.ctl.connected)
        return session

    def transport(self, session: ViewerSession) -> StringTransport:
        t = session.transport
        assert isinstance(t, StringTransport)
        return t

    def drop(self, session: ViewerSession) -> None:
        session.connectionLost(Failure(ConnectionDone("gone")))

    def status(self) -> str | None:
        return self.ctl.status_line(self.clock.seconds())[0]

    def test_connecting_status_counts_the_phase_time(self) -> None:
        """While connecting, the status names the target, the phase and the seconds
        since the attempt started; once logged in it names the path."""
        self.ctl.connect()
        self.clock.advance(1.5)
        self.assertEqual(
            self.status(),
            "Connecting to 123456789: asking the rendezvous server for the host… (1.5 s)",
        )
        self.reach("relay")
        self.assertEqual(
            self.status(), "Connecting to 123456789: securing the connection (TLS)… (1.5 s)"
        )
        self.calls[-1][0].logged_in.callback(INFO)
        self.assertEqual(self.status(), "Connected to 123456789 via relay")
        self.assertEqual(self.view.logins, [self.calls[-1][0]])

    def test_first_failure_asks_instead_of_retrying(self) -> None:
        """Before any login, a failure (final or not) opens the dialog and nothing is
        retried, however long one waits."""
        self.ctl.connect()
        self.calls[-1][2].errback(ConnectError("cannot reach relay", "refused"))
        self.assertEqual(
            self.view.failures,
            [
                (
                    "cannot reach relay",
                    "cannot reach relay: refused",
                    FailureReason.RELAY_UNREACHABLE,
                )
            ],
        )
        self.clock.advance(600)
        self.assertEqual(len(self.calls), 1)
        self.assertIsNone(self.ctl.reconnect_at)
        # The status line no longer says it is connecting.
        self.assertIsNone(self.status())

    def test_wrong_password_is_final(self) -> None:
        """A wrong password after a drop is not retried: the dialog offers to enter it."""
        session = self.log_in()
        self.drop(session)
        self.clock.advance(RECONNECT_DELAYS[0])
        self.assertEqual(len(self.calls), 2)
        retry = self.reach()
        retry.fail("wrong password", "Wrong Password")
        self.drop(retry)  # the host closes after refusing the login
        self.assertEqual(self.view.failures[-1][2], FailureReason.WRONG_PASSWORD)
        self.assertTrue(self.view.failures[-1][2].final)
        self.clock.advance(600)
        self.assertEqual(len(self.calls), 2)

    def test_drop_counts_down_and_backs_off(self) -> None:
        """A lost session reconnects after 2 s with a countdown in the status line;
        failing retries wait 4, 8, 15, then 30 s each; a login starts over at 2 s."""
        session = self.log_in()
        self.drop(session)
        self.assertEqual(self.view.lost, 1)
        self.assertEqual(
            self.status(),
            "Connection lost (disconnected: Connection was closed cleanly: gone.); "
            "reconnecting in 2 s",
        )
        self.clock.advance(1)
        self.assertEqual(
            self.status(),
            "Connection lost (disconnected: Connection was closed cleanly: gone.); "
            "reconnecting in 1 s",
        )
        waits = []
        for _ in range(6):
            before = len(self.calls)
            assert self.ctl.reconnect_at is not None
            wait = self.ctl.reconnect_at - self.clock.seconds()
            self.clock.advance(wait - 0.1)
            self.assertEqual(len(self.calls), before, "retried early")
            self.clock.advance(0.1)
            self.assertEqual(len(self.calls), before + 1, "no retry when due")
            waits.append(wait)
            self.calls[-1][2].errback(ConnectError("cannot reach relay", "refused"))
        self.assertEqual(waits, [1.0, 4.0, 8.0, 15.0, 30.0, 30.0])
        self.assertEqual(self.view.failures, [])
        self.clock.advance(30)
        self.log_in()
        self.drop(self.calls[-1][0])
        self.assertEqual(self.ctl.reconnect_at, self.clock.seconds() + RECONNECT_DELAYS[0])

    def test_login_timeout(self) -> None:
        """A host that never answers the login fails the attempt after --timeout
        seconds with "timed out waiting for the login"."""
        self.ctl.connect()
        self.reach()
        self.clock.advance(19.9)
        self.assertEqual(self.view.failures, [])
        self.clock.advance(0.1)
        (title, _detail, reason) = self.view.failures[0]
        self.assertEqual(
            (title, reason), ("timed out waiting for the login", FailureReason.TIMED_OUT)
        )

    def test_cancel_and_user_disconnect_stop_retrying(self) -> None:
        """Cancel stops the countdown; a session the person closed is not reconnected."""
        session = self.log_in()
        self.drop(session)
        self.ctl.cancel_reconnect()
        self.assertEqual(self.view.statuses[-1], "Not connected (reconnect cancelled)")
        self.assertEqual(self.view.pending[-1], False)
        self.clock.advance(600)
        self.assertEqual(len(self.calls), 1)
        self.ctl.reconnect_now()
        session = self.log_in()
        self.ctl.disconnect()
        self.assertTrue(self.transport(session).disconnecting)
        self.drop(session)
        self.assertEqual(self.view.statuses[-1], "Disconnected")
        self.clock.advance(600)
        self.assertEqual(len(self.calls), 2)

    def test_host_key_mismatch_after_drop_is_final(self) -> None:
        """A session that ends with a host key mismatch is reported, not retried."""
        session = self.log_in()
        session.error = SessionError("host key mismatch", "pinned key differs")
        self.drop(session)
        self.assertEqual(self.view.failures[-1][2], FailureReason.HOST_KEY_MISMATCH)
        self.clock.advance(600)
        self.assertEqual(len(self.calls), 1)

    def test_stale_attempt_is_closed(self) -> None:
        """An attempt overtaken by a new destination closes its stream when it
        completes and does not become the current session."""
        self.ctl.connect()
        old_session = self.calls[-1][0]
        self.args.target = "987654321"
        self.ctl.restart()
        old = self.reach(attempt=0)
        self.assertIs(old, old_session)
        self.assertTrue(self.transport(old).disconnecting)
        self.assertIsNot(self.ctl.session, old)
        self.assertFalse(self.ctl.connected)

    def test_no_target_asks(self) -> None:
        """Reconnect without a destination opens the connect dialog."""
        self.args.target = None
        self.ctl.reconnect_now()
        self.assertEqual((self.view.asked, len(self.calls)), (1, 0))
