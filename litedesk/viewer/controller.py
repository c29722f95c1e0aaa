"""Connecting, reconnecting and the countdown between: the window's connection logic.

Tk-free and driven by an injected clock (C{IReactorTime}), so that the
reconnect delays, the countdown text and which failures end in a dialog
instead of a retry are tested on C{twisted.internet.task.Clock}
(tests/test_viewer_controller.py); the window (L{litedesk.viewer.window})
implements L{ConnectionView} to show what happens.

One attempt: C{connect()} makes a session (the view decides its options),
opens the stream with the connector (L{litedesk.viewer.connection.connect}
in the window) and waits for the login.  A failure before the first
successful login asks the person (a dialog); after it, a lost session or a
failed retry is tried again after L{RECONNECT_DELAYS}, unless its reason is
final (L{FailureReason.final}: a wrong password or a key mismatch will not
go away by waiting).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Protocol

from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from litedesk.proto import message_pb2 as pb
from litedesk.session.viewer_session import SessionError, ViewerSession
from litedesk.viewer.connection import (
    FailureReason,
    UsageFailure,
    failure_reason,
    is_direct,
    reason_phrase,
    with_timeout,
)
from litedesk.viewer.route import ConnectError

_log = Logger(namespace="litedesk.viewer.controller")

RECONNECT_DELAYS = (2, 4, 8, 15, 30)
PHASES = {
    "rendezvous": "asking the rendezvous server for the host",
    "punch": "punching through the NAT (relay if that fails)",
    "relay": "connecting through the relay",
    "lan": "connecting to the host on the LAN",
    "direct": "connecting to the host directly",
    "tls": "securing the connection (TLS)",
    "login": "logging in",
}

#: Opens the stream for a session, reporting phases; returns the path used.
Connector = Callable[[ViewerSession, Callable[[str], None]], Awaitable[str]]


class ConnectionView(Protocol):
    """What the controller asks of the window."""

    def make_session(self) -> ViewerSession:
        """A new session for the next attempt (the view sets its options)."""

    def attempt_started(self) -> None:
        """An attempt to reach C{args.target} began."""

    def status_changed(self) -> None:
        """The status line (L{ConnectionController.status_line}) may differ."""

    def logged_in(self, session: ViewerSession, info: pb.PeerInfo) -> None:
        """C{session} is logged in and is the current one."""

    def session_lost(self) -> None:
        """The current session ended (keys held on it are gone with it)."""

    def failed(self, title: str, detail: str, reason: FailureReason) -> None:
        """Tell the person why there is no session; no retry is scheduled."""

    def reconnect_pending(self, pending: bool) -> None:
        """A reconnect is (no longer) counting down."""

    def set_status(self, text: str) -> None:
        """Show this text in the status line."""

    def ask_destination(self) -> None:
        """There is nobody to connect to: ask (the connect dialog)."""


class ConnectionController:
    """The current session, and when to try again."""

    def __init__(
        self,
        clock: IReactorTime,
        args: argparse.Namespace,
        view: ConnectionView,
        connector: Connector,
    ) -> None:
        self.clock = clock
        self.args = args  # target and timeout; the connector reads the rest
        self.view = view
        self.connector = connector
        self.session: ViewerSession | None = None
        self.path = ""
        self.connected = False
        self.ever_connected = False
        self.user_closed = False
        self.phase = ""
        self.phase_at = 0.0
        self.attempt_started = 0.0
        self.reconnect_at: float | None = None
        self.reconnect_reason = ""
        self.reconnect_tries = 0
        self._reconnect_call: IDelayedCall | None = None

    # -- attempts ----------------------------------------------------------------

    def connect(self) -> None:
        """Start an attempt to reach C{args.target} with a new session."""
        self.cancel_reconnect(silent=True)
        self.user_closed = False
        self.attempt_started = self.clock.seconds()
        self.view.attempt_started()
        self.set_phase("rendezvous" if not is_direct(self.args.target) else "direct")
        session = self.view.make_session()
        self.session = session
        self.connected = False
        d = ensureDeferred(self._attempt(session))
        d.addErrback(lambda f: _log.failure("Connection attempt crashed", f))

    def restart(self) -> None:
        """Connect to a new destination: a fresh start, not a retry."""
        self.close_session()
        self.ever_connected = False
        self.reconnect_tries = 0
        self.connect()

    def set_phase(self, what: str) -> None:
        self.phase = what
        self.phase_at = self.clock.seconds()
        self.view.status_changed()

    async def _attempt(self, session: ViewerSession) -> None:
        try:
            self.path = await self.connector(session, self.set_phase)
            if session is not self.session:
                session.disconnect()
                return
            self.set_phase("tls")
            info = await with_timeout(self.clock, session.logged_in, self.args.timeout, "the login")
        except (ConnectError, SessionError, UsageFailure) as e:
            if session is self.session:
                self._attempt_failed(e)
            return
        except Exception as e:
            # Anything else (a bad server address, a socket error) must still
            # end in a dialog, not in "Connecting…" forever.
            _log.failure("Unexpected error while connecting")
            if session is self.session:
                self._attempt_failed(ConnectError("cannot connect", f"{type(e).__name__}: {e}"))
            return
        if session is not self.session:
            return
        self.connected = True
        self.ever_connected = True
        self.reconnect_tries = 0
        self.phase = ""
        _log.info(
            "Connected to {peer} via {path} ({n} monitor(s))",
            peer=self.args.target,
            path=self.path,
            n=len(info.displays),
        )
        self.view.logged_in(session, info)
        session.ended.addCallback(lambda _: self._session_ended(session))

    def _attempt_failed(self, e: Exception) -> None:
        reason = failure_reason(e)
        _log.warn("Connection failed: {error}", error=str(e), reason=reason.name)
        self.connected = False
        # The attempt is over: the status line must stop counting its phase.
        self.phase = ""
        if self.session is not None and self.session.transport is not None:
            self.session.transport.loseConnection()
        if self.ever_connected and not reason.final:
            self._schedule_reconnect(str(e))
            return
        self.view.failed(reason_phrase(e), str(e), reason)

    def _session_ended(self, session: ViewerSession) -> None:
        if session is not self.session:
            return
        self.connected = False
        self.view.session_lost()
        err = session.error
        if self.user_closed:
            self.view.set_status("Disconnected")
            return
        text = str(err) if err is not None else "disconnected"
        _log.warn("Session ended: {error}", error=text)
        if err is not None:
            reason = failure_reason(err)
            if reason.final:
                self.view.failed(err.reason, text, reason)
                return
        self._schedule_reconnect(text)

    # -- reconnecting --------------------------------------------------------------

    def _schedule_reconnect(self, why: str) -> None:
        delay = RECONNECT_DELAYS[min(self.reconnect_tries, len(RECONNECT_DELAYS) - 1)]
        self.reconnect_tries += 1
        self.reconnect_reason = why
        self.reconnect_at = self.clock.seconds() + delay
        self._reconnect_call = self.clock.callLater(delay, self.reconnect_now)
        _log.info("Reconnecting in {delay} s ({why})", delay=delay, why=why)
        self.view.reconnect_pending(True)
        self.view.status_changed()

    def reconnect_now(self) -> None:
        if not self.args.target:
            self.view.ask_destination()
            return
        self.cancel_reconnect(silent=True)
        self.close_session()
        self.connect()

    def cancel_reconnect(self, silent: bool = False) -> None:
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        self._reconnect_call = None
        self.reconnect_at = None
        self.view.reconnect_pending(False)
        if not silent:
            self.view.set_status("Not connected (reconnect cancelled)")

    # -- ending --------------------------------------------------------------------

    def close_session(self) -> None:
        """Forget the current session (closing it), without a retry."""
        s, self.session = self.session, None
        self.connected = False
        if s is not None and s.transport is not None:
            s.disconnect()

    def disconnect(self) -> None:
        """The person disconnects: close, and do not reconnect."""
        self.user_closed = True
        self.cancel_reconnect(silent=True)
        s = self.session
        self.connected = False
        if s is not None and s.transport is not None:
            s.disconnect()
        self.view.set_status("Disconnected")
        _log.info("Disconnected by the user")

    def shutdown(self) -> None:
        """The viewer is closing: say goodbye to the host, schedule nothing."""
        self.user_closed = True
        self.cancel_reconnect(silent=True)
        if self.session is not None and self.session.transport is not None:
            self.session.disconnect()

    # -- the status line -------------------------------------------------------------

    def status_line(self, now: float) -> tuple[str | None, bool]:
        """The status text for now, and whether a passing notice may replace it.

        C{None}: nothing to say about the connection; keep what is shown.
        """
        s = self.session
        if self.reconnect_at is not None:
            left = max(0, round(self.reconnect_at - now))
            text = f"Connection lost ({self.reconnect_reason}); reconnecting in {left} s"
            return text, False
        if s is not None and not self.connected and self.phase:
            elapsed = now - self.attempt_started
            what = PHASES.get(self.phase, self.phase)
            return f"Connecting to {self.args.target}: {what}… ({elapsed:.1f} s)", False
        if s is not None and self.connected:
            return f"Connected to {self.args.target} via {self.path}", True
        return None, True
