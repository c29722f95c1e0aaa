"""C{/login} and C{/logout}: the console's only pages without a session.

Sign-in checks, in this order: the form's size, the double-submit CSRF pair
(L{litedesk.console.security}), the per-address rate limit shared with the
API (L{litedesk.ops.accounts.SignInGuard}), then the password (off the
reactor, in L{litedesk.ops.accounts.Accounts.sign_in}).  Only
administrators may use the console: a right password of an ordinary user
ends the token it was just given and says so.  Every attempt is counted
(C{litedesk_console_sign_ins_total}) and, with C{--event-log}, written as a
C{sign_in} event, so fail2ban can act on repeated failures.

The session cookie holds the console token itself (C{HttpOnly},
C{SameSite=Strict}, C{Secure} over TLS); signing out revokes it in the
ops database, so a stolen copy stops working too.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.template import Element, Tag, renderer

from litedesk.console.page import (
    Console,
    Form,
    FormError,
    finish_with,
    form_too_big,
    plain_error,
    redirect,
    template,
    write_page,
)
from litedesk.console.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    set_cookie,
)

__all__ = ["LoginResource", "LogoutResource"]

_log = Logger()
# What CsrfKeys.new_login_cookie makes; anything else is replaced.
_LOGIN_COOKIE = re.compile(r"[A-Za-z0-9_-]{16,64}")

#: What the administrator reads for each refusal (the outcome is the label).
MESSAGES = {
    "bad_password": "Wrong user name or password.",
    "unknown_user": "Wrong user name or password.",
    "disabled": "This account is disabled.",
    "not_admin": "This account is not an administrator: only administrators may use the console.",
    "rate_limited": ("Too many sign-in attempts from your address. Wait a minute, then try again."),
    "csrf": (
        "The sign-in form expired or did not come from this console "
        "(cookies must be allowed for this site). Try again."
    ),
}


class _LoginForm(Element):
    loader = template("login.xml")

    def __init__(self, csrf: str, name: str) -> None:
        super().__init__()
        self._csrf = csrf
        self._name = name

    @renderer
    def form(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(csrf=self._csrf, name=self._name)


def _client_ip(request: Any) -> str:
    return str(getattr(request.getClientAddress(), "host", "")) or "unknown"


class LoginResource(Resource):
    """C{/login}: the form (GET) and the sign-in (POST)."""

    isLeaf = True

    def __init__(self, console: Console) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.console = console

    def _form_page(
        self, request: Any, *, name: str = "", refusal: str | None = None, status: int = 200
    ) -> Any:
        """The sign-in form, with a fresh double-submit pair when needed."""
        raw = request.getCookie(LOGIN_CSRF_COOKIE)
        cookie = raw.decode("ascii", "replace") if raw else ""
        if not _LOGIN_COOKIE.fullmatch(cookie):
            cookie = self.console.csrf.new_login_cookie()
            set_cookie(request, LOGIN_CSRF_COOKIE, cookie)
        notices = [("error", MESSAGES[refusal])] if refusal else []
        d = write_page(
            request,
            self.console,
            title="Sign in",
            content=_LoginForm(self.console.csrf.for_login(cookie), name),
            status=status,
            notices=notices,
        )
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    def render_GET(self, request: Any) -> Any:
        if self.console.session(request) is not None:
            return redirect(request, b"/")
        return self._form_page(request)

    def render_POST(self, request: Any) -> Any:
        if form_too_big(request):
            return plain_error(request, self.console, 413, "Form too large", "Form too large.")
        form = Form(request.args or {})
        try:
            name = form.get("name", "")[:200]
            password = form.get("password", "")
            field = form.get("csrf", "")
        except FormError as e:
            return plain_error(request, self.console, 400, "Sign in", str(e))
        raw = request.getCookie(LOGIN_CSRF_COOKIE)
        cookie = raw.decode("ascii", "replace") if raw else ""
        ip = _client_ip(request)
        if not self.console.csrf.login_ok(cookie, field):
            _log.warn("Console sign-in from {ip} refused: missing or wrong CSRF pair", ip=ip)
            return self._form_page(request, name=name, refusal="csrf", status=403)
        ctx = self.console.ctx
        if not ctx.sign_ins.allow(ip, self.console.now()):
            self._count(ip, name, "rate_limited")
            return self._form_page(request, name=name, refusal="rate_limited", status=429)
        d = ensureDeferred(self._sign_in(request, name, password, ip))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    async def _sign_in(self, request: Any, name: str, password: str, ip: str) -> None:
        accounts = self.console.ctx.accounts
        result = await accounts.sign_in(name, password, kind="console", ip=ip)
        outcome = result.outcome
        if outcome == "ok" and result.user is not None and not result.user.is_admin:
            outcome = "not_admin"
            if result.token is not None:
                await accounts.sign_out(result.token)
        self._count(ip, name, outcome)
        if outcome != "ok" or result.token is None:
            self._form_page(request, name=name, refusal=outcome, status=403)
            return
        set_cookie(request, SESSION_COOKIE, result.token)
        clear_cookie(request, LOGIN_CSRF_COOKIE)
        finish_with(request, redirect(request, b"/"))

    def _count(self, ip: str, name: str, outcome: str) -> None:
        """The metric (whose labels are fixed), the event log, the server log."""
        ctx = self.console.ctx
        # A right password of a non-administrator counts as a sign-in that
        # worked (the metric's outcomes are shared with the API, where it is).
        ctx.top.ops_counters.login("console", "ok" if outcome == "not_admin" else outcome)
        events = getattr(ctx, "events", None)
        if events is not None:
            events.sign_in(ip, name, outcome, "console")
        _log.info(
            "Console sign-in as {user!r} from {ip}: {outcome}", user=name, ip=ip, outcome=outcome
        )

    def _failed(self, failure: Failure, request: Any) -> None:
        _log.failure("Console sign-in failed", failure)
        if not getattr(request, "startedWriting", 0) and not getattr(request, "finished", False):
            plain_error(
                request, self.console, 500, "Sign in", "Sign-in failed; the server log says why."
            )


class LogoutResource(Resource):
    """C{/logout}: POST (with the session's CSRF field) ends the session."""

    isLeaf = True

    def __init__(self, console: Console) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.console = console

    def render_GET(self, request: Any) -> Any:
        request.setHeader(b"allow", b"POST")
        return plain_error(
            request, self.console, 405, "Sign out", "Sign out with the button on any page."
        )

    def render_POST(self, request: Any) -> Any:
        session = self.console.session(request)
        if session is None:
            clear_cookie(request, SESSION_COOKIE)
            return redirect(request, b"/login")
        token, user = session
        args = request.args or {}
        field = args.get(b"csrf", [b""])[0].decode("ascii", "replace")
        if form_too_big(request) or not self.console.csrf.session_ok(token, field):
            _log.warn(
                "Console sign-out of {user} refused: missing or wrong CSRF field", user=user.name
            )
            return plain_error(
                request,
                self.console,
                403,
                "Form refused",
                "This form did not come from this console page. Go back, reload and try again.",
            )
        d = self.console.ctx.accounts.sign_out(token)

        def done(_: object) -> None:
            _log.info("Console sign-out of {user}", user=user.name)
            clear_cookie(request, SESSION_COOKIE)
            finish_with(request, redirect(request, b"/login"))

        def failed(f: Failure) -> None:
            _log.failure("Console sign-out failed", f)
            plain_error(request, self.console, 500, "Sign out", "Sign-out failed; see the log.")

        d.addCallbacks(done, failed)
        return NOT_DONE_YET
