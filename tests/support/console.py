"""The web console's test fixtures: a real server and a cookie-keeping client.

L{start_console} starts litedesk-relay's services in this process (the
trial reactor) with the HTTP listener on an ephemeral loopback port and
waits until the accounts are loaded.  L{ConsoleClient} is a small blocking
HTTP client (C{http.client}, no redirects followed, cookies kept as the
server set them) for a thread: tests call it with C{deferToThread} (or
L{ConsoleClient.call}) while the reactor serves.  It keeps every raw
C{Set-Cookie} header, so tests can check the flags a browser would see.
"""

from __future__ import annotations

import html
import http.client
import re
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from litedesk.ops.accounts import SignInGuard
from tests.rendezvous_harness import TIMEOUT, start_server

__all__ = [
    "ConsoleClient",
    "Response",
    "add_user",
    "csrf_of",
    "generous_sign_ins",
    "start_console",
]

_T = TypeVar("_T")
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: str

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower(), [])
        return values[0] if values else ""


def csrf_of(body: str) -> str:
    """The first form's CSRF field in a page."""
    m = _CSRF.search(body)
    if m is None:
        raise AssertionError("the page has no CSRF field")
    return html.unescape(m.group(1))


@dataclass
class ConsoleClient:
    """Blocking HTTP to the console at 127.0.0.1:C{port}, keeping cookies."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    #: HTTPS with this context (trusting the test's certificate); None: HTTP.
    tls: ssl.SSLContext | None = None
    #: Every Set-Cookie header received, in order.
    set_cookies: list[str] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        conn: http.client.HTTPConnection
        if self.tls is not None:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=4 * TIMEOUT, context=self.tls
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=4 * TIMEOUT)
        try:
            send = dict(headers or {})
            if self.cookies:
                send["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            body = None
            if form is not None:
                body = urllib.parse.urlencode(form).encode()
                send["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=send)
            r = conn.getresponse()
            got: dict[str, list[str]] = {}
            for k, v in r.getheaders():
                got.setdefault(k.lower(), []).append(v)
            text = r.read().decode("utf-8")
        finally:
            conn.close()
        for raw in got.get("set-cookie", []):
            self._keep(raw)
        return Response(r.status, got, text)

    def _keep(self, raw: str) -> None:
        self.set_cookies.append(raw)
        name, _, rest = raw.partition("=")
        value = rest.split(";", 1)[0]
        if "max-age=0" in raw.lower().replace(" ", ""):
            self.cookies.pop(name, None)
        else:
            self.cookies[name] = value

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, form: Mapping[str, str]) -> Response:
        return self.request("POST", path, form)

    def sign_in(self, name: str, password: str) -> Response:
        """GET /login for the CSRF pair, then POST the form."""
        page = self.get("/login")
        return self.post("/login", {"name": name, "password": password, "csrf": csrf_of(page.body)})

    def call(self, fn: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """Run C{fn(*args)} (a blocking method of this client) in a thread."""
        return deferToThread(fn, *args).addTimeout(8 * TIMEOUT, _reactor())


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@inlineCallbacks
def start_console(case: TestCase, *extra: str) -> Any:
    """A running server (stopped at cleanup); C{(server, ConsoleClient)}."""
    svc = start_server(
        Path(case.mktemp()), "--key", "", "--api-endpoint", "tcp:0:interface=127.0.0.1", *extra
    )
    case.addCleanup(lambda: svc.stopService() if svc.running else None)
    yield svc.accounts.loaded
    return svc, ConsoleClient(svc.api.listening.getHost().port)


def generous_sign_ins(svc: Any) -> None:
    """Lift the per-address sign-in limit (every test client is 127.0.0.1)
    for tests that sign in more than five times."""
    console = svc.api.factory.resource.console
    console.ctx.sign_ins = SignInGuard(rate=100.0, burst=100.0)


def add_user(svc: Any, name: str, password: str, *, admin: bool = False) -> Deferred[None]:
    """A user in the server's ops database, through its Accounts."""
    d: Deferred[None] = svc.accounts.add_user(name, password, admin=admin)
    return d
