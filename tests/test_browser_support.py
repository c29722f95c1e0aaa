"""The real-browser fixture (tests/support/browser.py) against a real
twisted.web Site on loopback in the trial reactor.

Covers: signing in through a form in Debian's headless chromium while the
reactor serves; the session cookie's flags as the browser holds them
(HttpOnly, so page scripts cannot read it; SameSite=Strict; not Secure on
plain HTTP); the HTTP status of a refused sign-in as the page reports it; a
script that fails on purpose keeping a screenshot and the page source in
the LITEDESK_TEST_ARTIFACTS directory, named by the test id, with both paths
in the failure; no chromium or chromedriver process alive after the browser
quits; a failure reported (without files) when the browser itself is gone;
artifact file names safe for any test id (hypothesis).
"""

from __future__ import annotations

import html
import os
import secrets
from pathlib import Path
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from selenium.webdriver.remote.webdriver import WebDriver
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from .support import browser
from .support.browser import BROWSER_TEST_TIMEOUT, Browser, BrowserScriptFailed
from .support.skips import cannot_run

reactor = cast(Any, _reactor)

PASSWORD = "correct horse"

_FORM = b"""<!doctype html>
<html><head><title>Sign in</title></head><body>
<form method="post" action="/signin">
<label>Name <input name="name"></label>
<label>Password <input name="password" type="password"></label>
<button id="submit" type="submit">Sign in</button>
</form></body></html>"""


class _SignIn(Resource):
    """GET: the form; POST: a session cookie and a redirect, or 403."""

    isLeaf = True

    def __init__(self, sessions: dict[str, str]) -> None:
        super().__init__()
        self.sessions = sessions

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return _FORM

    def render_POST(self, request: Request) -> bytes:
        args = request.args or {}
        name = args.get(b"name", [b""])[0].decode("utf-8", "replace")
        password = args.get(b"password", [b""])[0].decode("utf-8", "replace")
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        if password != PASSWORD:
            request.setResponseCode(http.FORBIDDEN)
            return b"<!doctype html><p id='error'>wrong name or password</p>"
        token = secrets.token_urlsafe(16)
        self.sessions[token] = name
        request.addCookie(b"session", token, path=b"/", httpOnly=True, sameSite="strict")
        request.redirect(b"/home")
        request.setResponseCode(http.SEE_OTHER)
        return b""


class _Home(Resource):
    """The signed-in page: who the session cookie says you are, else 401."""

    isLeaf = True

    def __init__(self, sessions: dict[str, str]) -> None:
        super().__init__()
        self.sessions = sessions

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        token = (request.getCookie(b"session") or b"").decode("ascii", "replace")
        name = self.sessions.get(token)
        if name is None:
            request.setResponseCode(http.UNAUTHORIZED)
            return b"<!doctype html><p id='error'>not signed in</p>"
        return f"<!doctype html><p id='who'>Signed in as {html.escape(name)}</p>".encode()


def serve(case: TestCase) -> tuple[str, dict[str, str]]:
    """A sign-in site on 127.0.0.1 in the trial reactor: its base URL and
    its sessions (token -> name); closed, connections included, by a cleanup
    registered before the browser's (so it runs after the browser quit)."""
    sessions: dict[str, str] = {}
    root = Resource()
    root.putChild(b"signin", _SignIn(sessions))
    root.putChild(b"home", _Home(sessions))
    # WrappingFactory keeps the open connections: the browser keeps them
    # alive, and a test must not end with them open (trial calls it dirty).
    site = WrappingFactory(Site(root))
    port: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")

    @inlineCallbacks
    def close() -> Any:
        yield port.stopListening()
        # The browser has quit; its connections close within a few turns.
        for _ in range(100):
            if not site.protocols:
                return
            yield deferLater(cast(IReactorTime, reactor), 0.05, lambda: None)
        for wrapper in list(site.protocols):
            wrapper.transport.abortConnection()
        yield deferLater(cast(IReactorTime, reactor), 0, lambda: None)

    case.addCleanup(close)
    return f"http://127.0.0.1:{cast(IPv4Address, port.getHost()).port}", sessions


def set_env(case: SynchronousTestCase, name: str, value: str) -> None:
    """Set an environment variable for this test only."""
    old = os.environ.get(name)
    os.environ[name] = value

    def restore() -> None:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old

    case.addCleanup(restore)


class BrowserTests(TestCase):
    """Debian's headless chromium against a twisted.web Site in this reactor."""

    timeout = BROWSER_TEST_TIMEOUT

    def setUp(self) -> None:
        reason = browser.missing_browser()
        if reason:
            cannot_run(reason)

    @inlineCallbacks
    def test_sign_in_sets_an_httponly_samesite_strict_cookie(self) -> Any:
        """Signing in through the form lands on the signed-in page with a
        session cookie the browser holds as HttpOnly, SameSite=Strict and not
        Secure (plain HTTP), invisible to page scripts."""
        base, sessions = serve(self)

        def sign_in(driver: WebDriver) -> dict[str, Any]:
            driver.get(f"{base}/signin")
            browser.fill(driver, {"name": "alice", "password": PASSWORD})
            browser.click(driver, "#submit")
            who = browser.wait_for(driver, "#who")
            return {
                "who": who.text,
                "url": driver.current_url,
                "status": browser.page_status(driver),
                "cookies": browser.cookies(driver),
                "script_sees": driver.execute_script("return document.cookie"),
            }

        seen = yield browser.browse(self, sign_in)
        self.assertEqual(seen["who"], "Signed in as alice")
        self.assertEqual(seen["url"], f"{base}/home")
        self.assertEqual(seen["status"], 200)
        session = seen["cookies"]["session"]
        self.assertEqual(sessions, {session.value: "alice"})
        self.assertTrue(session.http_only, f"session cookie not HttpOnly: {session}")
        self.assertEqual(session.same_site, "Strict")
        self.assertFalse(session.secure, f"Secure on plain HTTP: {session}")
        self.assertEqual(session.path, "/")
        self.assertNotIn("session", seen["script_sees"])

    @inlineCallbacks
    def test_wrong_password_is_refused_with_403(self) -> Any:
        """A wrong password shows the error page, with status 403 as the
        browser reports it, and leaves the browser without a session cookie."""
        base, sessions = serve(self)

        def wrong(driver: WebDriver) -> tuple[str, int, list[str]]:
            driver.get(f"{base}/signin")
            browser.fill(driver, {"name": "alice", "password": "guess"})
            browser.click(driver, "#submit")
            error = browser.wait_for(driver, "#error")
            return error.text, browser.page_status(driver), list(browser.cookies(driver))

        text, status, names = yield browser.browse(self, wrong)
        self.assertEqual(text, "wrong name or password")
        self.assertEqual(status, 403)
        self.assertEqual(names, [])
        self.assertEqual(sessions, {})

    @inlineCallbacks
    def test_failing_script_keeps_screenshot_and_page_source(self) -> Any:
        """A script that raises fails the Deferred with the paths of a PNG
        screenshot and the page's HTML, kept in LITEDESK_TEST_ARTIFACTS under
        the test's id, and with the script's own error in the text."""
        base, _ = serve(self)
        artifacts = Path(self.mktemp())
        set_env(self, browser.ARTIFACTS_ENV, str(artifacts))

        def fails(driver: WebDriver) -> None:
            driver.get(f"{base}/signin")
            browser.wait_for(driver, "#submit")
            raise AssertionError("failing on purpose")

        failure = yield self.assertFailure(browser.browse(self, fails), BrowserScriptFailed)
        stem = browser.artifact_stem(self.id())
        self.assertEqual(failure.screenshot, artifacts / f"{stem}.png")
        self.assertEqual(failure.page_source, artifacts / f"{stem}.html")
        self.assertTrue(failure.screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"))
        self.assertIn('name="password"', failure.page_source.read_text())
        text = str(failure)
        self.assertIn(str(failure.screenshot), text)
        self.assertIn(str(failure.page_source), text)
        self.assertIn("failing on purpose", text)
        self.assertIn(f"{base}/signin", text)

        # The browser still works after a failed script (same test, same browser),
        # and a second failure does not overwrite the first one's files.
        again = yield self.assertFailure(browser.browse(self, fails), BrowserScriptFailed)
        self.assertEqual(again.screenshot, artifacts / f"{stem}-2.png")
        self.assertTrue(failure.screenshot.exists())

    @inlineCallbacks
    def test_failure_when_the_browser_is_gone_still_reports(self) -> Any:
        """A script that fails after the browser died still fails the test
        with the script's error, saying no screenshot could be taken."""
        artifacts = Path(self.mktemp())
        set_env(self, browser.ARTIFACTS_ENV, str(artifacts))

        def crashes(driver: WebDriver) -> None:
            driver.quit()
            raise RuntimeError("the browser went away")

        failure = yield self.assertFailure(browser.browse(self, crashes), BrowserScriptFailed)
        self.assertIsNone(failure.screenshot)
        self.assertIsNone(failure.page_source)
        self.assertIn("screenshot: (none: the browser did not answer)", str(failure))
        self.assertIn("the browser went away", str(failure))
        self.assertEqual(list(artifacts.iterdir()), [])

    @inlineCallbacks
    def test_quit_leaves_no_process(self) -> Any:
        """After quit, no chromedriver or chromium process of that browser
        is alive (crashpad handlers included), and its private root is gone."""
        started: Browser = yield deferToThread(Browser.start)
        root, driver_pid = started.root, started.driver_pid
        self.addCleanup(deferToThread, started.quit)
        self.assertIn(driver_pid, browser.browser_processes(root, driver_pid))
        self.assertGreater(len(browser.browser_processes(root, None)), 1)
        yield deferToThread(started.quit)
        self.assertEqual(browser.browser_processes(root, driver_pid), [])
        self.assertFalse(root.exists())


class ArtifactNameTests(SynchronousTestCase):
    """Artifact file names come from test ids, which may hold any text."""

    @given(st.text(max_size=400))
    def test_stem_is_a_plain_bounded_file_name(self, test_id: str) -> None:
        stem = browser.artifact_stem(test_id)
        self.assertTrue(0 < len(stem) <= 150)
        self.assertFalse(stem.startswith("."))
        self.assertNotIn("/", stem)
        self.assertRegex(stem, r"\A[A-Za-z0-9_.-]+\Z")

    def test_stem_keeps_a_test_id_readable(self) -> None:
        self.assertEqual(
            browser.artifact_stem("tests.test_console.SignIn.test_cookie"),
            "tests.test_console.SignIn.test_cookie",
        )
