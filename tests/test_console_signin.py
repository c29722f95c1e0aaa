"""The web console's framework over real HTTP: sign-in, sessions, CSRF, headers.

A real server runs in-process with its HTTP listener on loopback
(L{tests.support.console}); a cookie-keeping client in a thread signs in and
out.  Covers: every page redirects to /login when signed out; sign-in with
a wrong password, an unknown user, a disabled user, a non-administrator, the
right password, and past the per-address rate limit (with the counters and
the event log); the session cookie's flags (Secure over https); refusal of a login POST without
its CSRF pair and of a signed-in POST (sign-out) without its CSRF field;
the security headers on every kind of console response; sign-out ending
the token.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from litedesk.console.security import CSP

from .support.console import ConsoleClient, add_user, csrf_of, start_console
from .support.nginx import self_signed

PAGES = ("/", "/users", "/setup")


class SignInTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def start(self, *extra: str) -> Any:
        svc, client = yield start_console(self, *extra)
        yield add_user(svc, "root", "correct horse", admin=True)
        return svc, client

    @inlineCallbacks
    def test_signed_out_pages_redirect_to_login(self) -> Any:
        """Without a session every page is a 303 to /login; /login itself is a
        form; a made-up token or an API token is no session."""
        svc, client = yield self.start()
        for path in PAGES:
            r = yield client.call(client.get, path)
            self.assertEqual((r.status, r.header("location")), (303, "/login"), path)
            self.assertNotIn("Dashboard", r.body)
        r = yield client.call(client.get, "/login")
        self.assertEqual(r.status, 200)
        self.assertIn('name="password"', r.body)
        # A made-up session cookie is no session either.
        client.cookies["litedesk_console"] = "made-up-token"
        r = yield client.call(client.get, "/")
        self.assertEqual(r.status, 303)
        # Nor is the live token a RustDesk app got for the same administrator.
        signed = yield svc.accounts.sign_in("root", "correct horse", kind="api", ip="127.0.0.1")
        client.cookies["litedesk_console"] = signed.token
        r = yield client.call(client.get, "/")
        self.assertEqual((r.status, r.header("location")), (303, "/login"))

    @inlineCallbacks
    def test_right_password_signs_in_with_a_strict_cookie(self) -> Any:
        """The right password: 303 to /, an HttpOnly SameSite=Strict cookie, the dashboard."""
        svc, client = yield self.start()
        r = yield client.call(client.sign_in, "root", "correct horse")
        self.assertEqual((r.status, r.header("location")), (303, "/"))
        session = [c for c in client.set_cookies if c.startswith("litedesk_console=")]
        self.assertEqual(len(session), 1)
        flags = {f.strip().lower() for f in session[0].split(";")[1:]}
        self.assertTrue({"httponly", "samesite=strict", "path=/"} <= flags, flags)
        self.assertNotIn("secure", flags)  # plain HTTP: a Secure cookie would never come back
        r = yield client.call(client.get, "/")
        self.assertEqual(r.status, 200)
        self.assertIn("<h1>Dashboard</h1>", r.body)
        self.assertIn("root", r.body)
        self.assertEqual(svc.ops_counters.logins["console"]["ok"], 1)
        # Signed in, /login sends you home.
        r = yield client.call(client.get, "/login")
        self.assertEqual((r.status, r.header("location")), (303, "/"))

    @inlineCallbacks
    def test_cookies_are_secure_over_https(self) -> Any:
        """An https listener (--api-endpoint ssl:...): both cookies carry Secure."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        cert, key, pem = self_signed(tmp)
        _, client = yield self.start(
            "--api-endpoint", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        )
        client.tls = ssl.create_default_context(cadata=pem.decode())
        r = yield client.call(client.sign_in, "root", "correct horse")
        self.assertEqual(r.status, 303)
        self.assertEqual(
            sorted(c.split("=", 1)[0] for c in client.set_cookies),
            ["litedesk_console", "litedesk_login_csrf", "litedesk_login_csrf"],
        )
        for raw in client.set_cookies:
            flags = {f.strip().lower() for f in raw.split(";")[1:]}
            self.assertTrue({"secure", "httponly", "samesite=strict"} <= flags, raw)
        r = yield client.call(client.get, "/")
        self.assertEqual(r.status, 200)

    @inlineCallbacks
    def test_refusals_say_why_and_are_counted(self) -> Any:
        """Wrong password, unknown user, disabled user, non-administrator: 403 and why."""
        events = Path(self.mktemp())
        svc, client = yield self.start("--event-log", str(events))
        yield add_user(svc, "alice", "alice's password")
        yield add_user(svc, "bob", "bob's password", admin=True)
        yield svc.accounts.set_disabled("bob", True)
        cases = [
            ("root", "wrong", "Wrong user name or password."),
            ("nobody", "whatever1", "Wrong user name or password."),
            ("bob", "bob's password", "This account is disabled."),
            ("alice", "alice's password", "This account is not an administrator"),
        ]
        for name, password, message in cases:
            r = yield client.call(client.sign_in, name, password)
            self.assertEqual(r.status, 403, name)
            self.assertIn(message, r.body)
            self.assertNotIn("litedesk_console", client.cookies)
        logins = svc.ops_counters.logins["console"]
        self.assertEqual(
            (logins["bad_password"], logins["unknown_user"], logins["disabled"], logins["ok"]),
            (1, 1, 1, 1),
        )
        # The non-administrator's token was ended, not left behind.
        self.assertEqual(svc.accounts.token_count(), 0)
        lines = [json.loads(x) for x in events.read_text().splitlines()]
        results = [(x["user"], x["result"]) for x in lines if x.get("event") == "sign_in"]
        self.assertEqual(
            results,
            [
                ("root", "bad_password"),
                ("nobody", "unknown_user"),
                ("bob", "disabled"),
                ("alice", "not_admin"),
            ],
        )

    @inlineCallbacks
    def test_rate_limit(self) -> Any:
        """Five attempts at once from one address, then 429 with a clear message,
        even with the right password."""
        svc, client = yield self.start()
        for _ in range(5):
            r = yield client.call(client.sign_in, "root", "wrong password")
            self.assertEqual(r.status, 403)
        r = yield client.call(client.sign_in, "root", "correct horse")
        self.assertEqual(r.status, 429)
        self.assertIn("Too many sign-in attempts from your address", r.body)
        self.assertNotIn("litedesk_console", client.cookies)
        self.assertEqual(svc.ops_counters.logins["console"]["rate_limited"], 1)

    @inlineCallbacks
    def test_login_csrf(self) -> Any:
        """A login POST without the cookie, without the field, or with a field
        for another cookie is refused (403) and signs nobody in."""
        _, client = yield self.start()
        page = yield client.call(client.get, "/login")
        field = csrf_of(page.body)
        stranger = ConsoleClient(client.port)
        # No cookie (a form posted from another site): refused.
        r = yield stranger.call(
            stranger.post, "/login", {"name": "root", "password": "correct horse", "csrf": field}
        )
        self.assertEqual(r.status, 403)
        self.assertIn("did not come from this console", r.body)
        # The cookie but no field: refused.
        r = yield client.call(client.post, "/login", {"name": "root", "password": "correct horse"})
        self.assertEqual(r.status, 403)
        # A field made for another cookie: refused.
        other = yield stranger.call(stranger.get, "/login")
        r = yield client.call(
            client.post,
            "/login",
            {"name": "root", "password": "correct horse", "csrf": csrf_of(other.body)},
        )
        self.assertEqual(r.status, 403)
        self.assertNotIn("litedesk_console", client.cookies)

    @inlineCallbacks
    def test_sign_out_needs_csrf_and_ends_the_token(self) -> Any:
        """POST /logout without the field: 403, still signed in; with it: the
        token is revoked, so a copy of the cookie no longer works."""
        svc, client = yield self.start()
        yield client.call(client.sign_in, "root", "correct horse")
        stolen = dict(client.cookies)
        r = yield client.call(client.post, "/logout", {})
        self.assertEqual(r.status, 403)
        r = yield client.call(client.post, "/logout", {"csrf": "0" * 64})
        self.assertEqual(r.status, 403)
        home = yield client.call(client.get, "/")
        self.assertEqual(home.status, 200)
        r = yield client.call(client.post, "/logout", {"csrf": csrf_of(home.body)})
        self.assertEqual((r.status, r.header("location")), (303, "/login"))
        self.assertNotIn("litedesk_console", client.cookies)
        copy = ConsoleClient(client.port, cookies=stolen)
        r = yield copy.call(copy.get, "/")
        self.assertEqual(r.status, 303)
        self.assertEqual(svc.accounts.token_count(), 0)

    @inlineCallbacks
    def test_security_headers_everywhere(self) -> Any:
        """CSP, frame, sniffing, referrer and cache headers on pages, redirects,
        errors, the sign-in form and the stylesheet."""
        _, client = yield self.start()
        responses = []
        for path in ("/", "/login", "/static/console.css", "/no-such-page"):
            responses.append((yield client.call(client.get, path)))
        yield client.call(client.sign_in, "root", "correct horse")
        for path in (*PAGES, "/no-such-page", "/users/extra"):
            responses.append((yield client.call(client.get, path)))
        responses.append((yield client.call(client.post, "/users", {"action": "add"})))
        statuses = [r.status for r in responses]
        self.assertEqual(statuses, [303, 200, 200, 404, 200, 200, 200, 404, 404, 403])
        for r in responses:
            self.assertEqual(r.header("content-security-policy"), CSP)
            self.assertEqual(r.header("x-frame-options"), "DENY")
            self.assertEqual(r.header("x-content-type-options"), "nosniff")
            self.assertEqual(r.header("referrer-policy"), "no-referrer")
            self.assertEqual(r.header("cache-control"), "no-store")
        self.assertEqual(responses[2].header("content-type"), "text/css; charset=utf-8")
        self.assertEqual(responses[1].header("content-type"), "text/html; charset=utf-8")
