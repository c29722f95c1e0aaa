"""The console's defences on every response: headers, cookies, CSRF tokens.

Everything here is small and pure so that each page cannot forget it: the
framework (L{litedesk.console.page}) calls L{secure_headers} on every
response it writes, sets cookies only through L{set_cookie}, and checks
L{CsrfKeys} before any POST reaches a page.

CSRF: the session cookie is C{SameSite=Strict} already, but older browsers
and same-site attackers (another service on a sibling host name) are not
stopped by it, so every form carries a hidden C{csrf} field.  Signed in,
the field is HMAC-SHA256(per-process secret, session token): nothing to
store, and a new process (new secret) simply asks for a fresh page.  Before
sign-in there is no token to bind to, so C{/login} uses a double submit:
a random C{litedesk_login_csrf} cookie and a field that is the HMAC of that
cookie; a page on another site can make the browser post a form but can
neither read nor set that cookie, so login CSRF (signing a victim in as the
attacker) is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

__all__ = [
    "CSP",
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "CsrfKeys",
    "clear_cookie",
    "secure_headers",
    "set_cookie",
]

#: The session cookie: its value is the console token (L{litedesk.ops.accounts}).
SESSION_COOKIE = b"litedesk_console"
#: The pre-session cookie of C{/login}'s double-submit CSRF check.
LOGIN_CSRF_COOKIE = b"litedesk_login_csrf"

#: No scripts at all, styles only from the one stylesheet, images only from
#: here or data: URIs (the QR code), no framing, forms post only here.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'"
)

_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode("ascii")),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # Pages show live state and user data: never from a cache.
    (b"cache-control", b"no-store"),
)


def secure_headers(request: Any) -> None:
    """Set the console's security headers on C{request}'s response."""
    for name, value in _HEADERS:
        request.setHeader(name, value)


def set_cookie(request: Any, name: bytes, value: str) -> None:
    """A cookie scripts cannot read and other sites never send back.

    C{Secure} when this request came over TLS: behind a TLS-terminating
    proxy the browser sees https but the cookie is sent without the flag
    (it is still C{SameSite=Strict} and HttpOnly).
    """
    request.addCookie(
        name,
        value.encode("ascii"),
        path=b"/",
        httpOnly=True,
        secure=request.isSecure(),
        sameSite="strict",
    )


def clear_cookie(request: Any, name: bytes) -> None:
    """Tell the browser to drop cookie C{name}."""
    request.addCookie(
        name,
        b"",
        path=b"/",
        httpOnly=True,
        secure=request.isSecure(),
        sameSite="strict",
        max_age=b"0",
    )


class CsrfKeys:
    """The per-process secret and the form tokens derived from it.

    @param secret: 32 random bytes unless a test passes its own.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def _mac(self, purpose: bytes, value: str) -> str:
        data = purpose + b"\0" + value.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()

    def for_session(self, session_token: str) -> str:
        """The C{csrf} field of every form a signed-in administrator gets."""
        return self._mac(b"session", session_token)

    def session_ok(self, session_token: str, field: str) -> bool:
        return bool(field) and _same(self.for_session(session_token), field)

    @staticmethod
    def new_login_cookie() -> str:
        return secrets.token_urlsafe(24)

    def for_login(self, cookie: str) -> str:
        """The C{csrf} field of the sign-in form, bound to its cookie."""
        return self._mac(b"login", cookie)

    def login_ok(self, cookie: str, field: str) -> bool:
        return bool(cookie) and bool(field) and _same(self.for_login(cookie), field)


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison of any two strings (compare_digest refuses
    non-ASCII text, which a form field can hold)."""
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "surrogatepass"))
