"""Signing a RustDesk app in and out of a real server's C{/api}.

A real litedesk-relay on loopback (L{tests.support.api_server}) and the
app's calls as RustDesk 1.4.9 makes them
(L{tests.support.rustdesk_api_client}): login right, wrong, unknown,
disabled and rate-limited (the error texts the app shows, the sign-in
counters and the event log), C{currentUser} with a live token, a signed-out
one, one revoked by disabling the user and none (401, which makes the app
sign out), C{login-options} (no SSO buttons), OIDC and unknown paths (404).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks

from litedesk.api.auth import MAX_PENDING_SIGN_INS, RATE_LIMITED
from litedesk.ops.counters import LOGIN_OUTCOMES
from tests.support.api_server import PASSWORD, ApiServerCase


class LoginTests(ApiServerCase):
    @inlineCallbacks
    def test_login_then_current_user_then_logout(self) -> Any:
        """A right password: a token and the user; the token works until logout."""
        self.start(alice=False)
        yield self.ready
        app = self.client()
        r = yield self.call(app.login, "alice", PASSWORD)
        self.assertEqual(r.status, 200)
        body = r.json()
        self.assertEqual(body["type"], "access_token")
        self.assertTrue(body["access_token"])
        self.assertEqual(
            body["user"],
            {
                "name": "alice",
                "display_name": "alice",
                "avatar": "",
                "email": "",
                "note": "",
                "status": 1,
                "is_admin": False,
            },
        )
        r = yield self.call(app.current_user)
        self.assertEqual((r.status, r.json()["name"]), (200, "alice"))
        r = yield self.call(app.logout)
        self.assertEqual(r.status, 200)
        r = yield self.call(app.current_user)
        self.assertEqual(r.status, 401)
        self.assertIn("error", r.json())

    @inlineCallbacks
    def test_admin_flag(self) -> Any:
        self.start()
        yield self.ready
        app = self.client()
        r = yield self.call(app.login, "root", PASSWORD)
        self.assertIs(r.json()["user"]["is_admin"], True)

    @inlineCallbacks
    def test_wrong_password_and_unknown_user_read_the_same(self) -> Any:
        """The app shows body['error']; the texts do not tell which was wrong."""
        svc = self.start(alice=False)
        yield self.ready
        app = self.client()
        wrong = yield self.call(app.login, "alice", "not the password")
        unknown = yield self.call(app.login, "mallory", PASSWORD)
        for r in (wrong, unknown):
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json(), {"error": "Wrong user name or password"})
            self.assertNotIn("access_token", r.json())
        counts = svc.ops_counters.logins["api"]
        self.assertEqual((counts["bad_password"], counts["unknown_user"]), (1, 1))

    @inlineCallbacks
    def test_disabled_user(self) -> Any:
        self.start(bob=True)
        yield self.ready
        app = self.client()
        r = yield self.call(app.login, "bob", PASSWORD)
        self.assertEqual(r.json(), {"error": "This account is disabled"})
        self.assertEqual(self.svc.ops_counters.logins["api"]["disabled"], 1)

    @inlineCallbacks
    def test_rate_limited_per_address(self) -> Any:
        """After five quick attempts the sixth is refused with 429 and the text."""
        self.start(alice=False)
        yield self.ready
        app = self.client()
        for _ in range(5):
            r = yield self.call(app.login, "alice", "wrong password")
            self.assertEqual(r.json(), {"error": "Wrong user name or password"})
        r = yield self.call(app.login, "alice", PASSWORD)
        self.assertEqual(r.status, 429)
        self.assertEqual(r.json(), {"error": "Too many sign-in attempts, try again later"})
        self.assertEqual(self.svc.ops_counters.logins["api"]["rate_limited"], 1)
        self.assertEqual(set(self.svc.ops_counters.logins["api"]), set(LOGIN_OUTCOMES))

    @inlineCallbacks
    def test_too_many_waiting_sign_ins_from_all_addresses(self) -> Any:
        """With MAX_PENDING_SIGN_INS checks waiting, a new sign-in is turned away."""
        self.start(alice=False)
        yield self.ready
        endpoint = self.svc.api.factory.resource.children[b"api"].children[b"login"]
        pending = endpoint._handlers[b"POST"].keywords["pending"]
        self.assertEqual(pending.count, 0)
        pending.count = MAX_PENDING_SIGN_INS
        app = self.client()
        r = yield self.call(app.login, "alice", PASSWORD)
        self.assertEqual((r.status, r.json()["error"]), (429, RATE_LIMITED))
        pending.count = 0
        r = yield self.call(app.login, "alice", PASSWORD)
        self.assertEqual(r.status, 200)
        self.assertEqual(pending.count, 0)  # the finished check was counted out

    @inlineCallbacks
    def test_sign_ins_in_the_event_log(self) -> Any:
        path = Path(self.mktemp()).resolve()
        self.start("--event-log", str(path), alice=False)
        yield self.ready
        app = self.client()
        yield self.call(app.login, "alice", PASSWORD)
        yield self.call(app.login, "alice", "nope nope")
        self.svc.events.close()
        events = [json.loads(line) for line in path.read_text().splitlines()]
        signs = [(e["user"], e["result"], e["via"]) for e in events if e["event"] == "sign_in"]
        self.assertEqual(signs, [("alice", "ok", "api"), ("alice", "bad_password", "api")])

    @inlineCallbacks
    def test_other_login_types_refused_with_a_reason(self) -> Any:
        """E-mail codes and second factors are not offered: a 400 the app shows."""
        self.start(alice=False)
        yield self.ready
        app = self.client()
        r = yield self.call(app.login, "alice", PASSWORD, kind="email_code")
        self.assertEqual(r.status, 400)
        self.assertIn("user name and password", r.json()["error"])

    @inlineCallbacks
    def test_token_revoked_when_the_user_is_disabled(self) -> Any:
        """Disabling a user ends its tokens: currentUser answers 401 at once."""
        svc = self.start(alice=False)
        yield self.ready
        app = self.client()
        yield self.call(app.login, "alice", PASSWORD)
        r = yield self.call(app.current_user)
        self.assertEqual(r.status, 200)
        yield svc.accounts.set_disabled("alice", True)
        r = yield self.call(app.current_user)
        self.assertEqual(r.status, 401)

    @inlineCallbacks
    def test_console_token_opens_no_api_call(self) -> Any:
        """A token the web console issued is refused by the API (and cannot sign out)."""
        svc = self.start()
        yield self.ready
        signed = yield svc.accounts.sign_in("root", PASSWORD, kind="console", ip="127.0.0.1")
        app = self.client()
        app.token = signed.token
        r = yield self.call(app.current_user)
        self.assertEqual(r.status, 401)
        yield self.call(app.logout)
        self.assertIsNotNone(svc.accounts.user_for_token(signed.token, kind="console"))

    @inlineCallbacks
    def test_current_user_without_or_with_a_made_up_token(self) -> Any:
        self.start()
        yield self.ready
        app = self.client()
        r = yield self.call(app.current_user)
        self.assertEqual(r.status, 401)
        app.token = "x" * 43
        r = yield self.call(app.current_user)
        self.assertEqual(r.status, 401)
        r = yield self.call(app.logout)
        self.assertEqual(r.status, 200)


class OptionsTests(ApiServerCase):
    @inlineCallbacks
    def test_login_options_empty(self) -> Any:
        """No SSO: an empty list, so the app shows no OIDC buttons."""
        self.start()
        r = yield self.call(self.client().login_options)
        self.assertEqual((r.status, r.json()), (200, []))

    @inlineCallbacks
    def test_oidc_and_unknown_paths_404(self) -> Any:
        self.start()
        app = self.client()
        for method, path in [
            ("POST", "/api/oidc/auth"),
            ("GET", "/api/oidc/auth-query?code=1&id=2&uuid=3"),
            ("POST", "/api/ab/shared/elsewhere"),
            ("POST", "/api/device-group"),
            ("POST", "/api/login/extra"),
            ("GET", "/api"),
        ]:
            r = yield self.call(app.request, method, path, b"{}")
            self.assertEqual(r.status, 404, path)
            self.assertIn("error", r.json())

    @inlineCallbacks
    def test_wrong_method_405(self) -> Any:
        self.start()
        r = yield self.call(self.client().request, "GET", "/api/login")
        self.assertEqual(r.status, 405)
