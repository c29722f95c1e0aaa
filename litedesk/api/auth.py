# -*- test-case-name: tests.test_api_auth -*-
"""Signing a RustDesk app in and out: C{/api/login}, C{logout}, C{currentUser}, options.

Shapes from RustDesk's C{flutter/lib/common/hbbs/hbbs.dart} (C{LoginRequest},
C{LoginResponse}, C{UserPayload}) and C{flutter/lib/models/user_model.dart}:

  - the login body is C{{username, password, id, uuid, autoLogin, type,
    deviceInfo}}; only C{type} C{account} (or none) is supported here: no
    e-mail codes, no second factor, no OIDC (C{/api/login-options} answers
    C{[]}, so the app shows no SSO buttons, and C{/api/oidc/*} is 404);
  - the app shows C{body['error']} when there is one, so every refusal
    carries a sentence for a person, the same one for an unknown user and a
    wrong password;
  - C{currentUser} answering 401 makes the app drop its token and sign out,
    which is what a revoked or expired token must do.

Sign-ins are limited per address (L{litedesk.ops.accounts.SignInGuard},
shared with the console) and to L{MAX_PENDING_SIGN_INS} waiting at once,
counted by outcome
(C{litedesk_api_logins_total}) and written to the event log.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from litedesk.api.body import BadBody, boolean, text
from litedesk.api.endpoint import Call, Endpoint, Refused, Reply, json_reply
from litedesk.ops.accounts import SignIn
from litedesk.ops.users import User

__all__ = [
    "DISABLED",
    "MAX_PENDING_SIGN_INS",
    "RATE_LIMITED",
    "UNSUPPORTED_TYPE",
    "WRONG_CREDENTIALS",
    "auth_endpoints",
    "user_payload",
]

_log = Logger(namespace="litedesk.api")

WRONG_CREDENTIALS = "Wrong user name or password"
DISABLED = "This account is disabled"
RATE_LIMITED = "Too many sign-in attempts, try again later"
UNSUPPORTED_TYPE = "This server signs in with a user name and password only"

_DEVICE_INFO_MAX = 1000
#: Sign-ins waiting for a password check at once, from all addresses together.
MAX_PENDING_SIGN_INS = 32


def user_payload(user: User) -> dict[str, Any]:
    """The C{UserPayload} the app keeps (status 1: a normal, enabled user)."""
    return {
        "name": user.name,
        "display_name": user.name,
        "avatar": "",
        "email": user.email,
        "note": user.note,
        "status": 0 if user.disabled else 1,
        "is_admin": user.is_admin,
    }


def _device_info(body: dict[str, Any]) -> str:
    value = body.get("deviceInfo")
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise BadBody("deviceInfo is not an object")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)[:_DEVICE_INFO_MAX]


def _record(call: Call, name: str, outcome: str) -> None:
    """Count and log one sign-in attempt (and write it to the event log)."""
    call.ctx.top.ops_counters.login("api", outcome)
    events = call.ctx.events
    if events is not None:
        events.sign_in(call.ip, name, outcome, "api")
    _log.info(
        "API sign-in from {ip} as {user!r}: {outcome}", ip=call.ip, user=name, outcome=outcome
    )


class _Pending:
    """Sign-ins waiting for their password check, at most L{MAX_PENDING_SIGN_INS}.

    The per-address limit bounds each address; this bounds them all (many
    addresses, an IPv6 prefix), so queued checks cannot pile up in memory.
    """

    def __init__(self) -> None:
        self.count = 0

    def track(self, d: Deferred[Reply]) -> Deferred[Reply]:
        self.count += 1

        def done(result: object) -> object:
            self.count -= 1
            return result

        return d.addBoth(done)


def login(call: Call, pending: _Pending | None = None) -> Reply | Deferred[Reply]:
    body = call.body()
    kind = text(body, "type", 32)
    name = text(body, "username", 256)
    password = text(body, "password", 1024)
    boolean(body, "autoLogin")
    device = {
        "device_id": text(body, "id", 64),
        "device_uuid": text(body, "uuid", 256),
        "device_info": _device_info(body),
    }
    if kind not in ("", "account"):
        raise BadBody(UNSUPPORTED_TYPE)
    crowded = pending is not None and pending.count >= MAX_PENDING_SIGN_INS
    if crowded or not call.ctx.sign_ins.allow(call.ip, call.now):
        _record(call, name, "rate_limited")
        raise Refused(RATE_LIMITED, 429)

    def done(result: SignIn) -> Reply:
        _record(call, name, result.outcome)
        if result.outcome == "ok" and result.user is not None:
            return json_reply(
                {
                    "access_token": result.token,
                    "type": "access_token",
                    "user": user_payload(result.user),
                }
            )
        # 200 with an error: the app shows the text (user_model.dart, login()).
        message = DISABLED if result.outcome == "disabled" else WRONG_CREDENTIALS
        return json_reply({"error": message})

    signed = call.ctx.accounts.sign_in(name, password, kind="api", ip=call.ip, **device)
    d = signed.addCallback(done)
    return d if pending is None else pending.track(d)


def logout(call: Call) -> Reply | Deferred[Reply]:
    """End the token sent (if it is one); the app ignores the answer."""
    call.body()
    token = call.bearer()
    if not token or call.ctx.accounts.user_for_token(token, kind="api") is None:
        return json_reply({})
    return call.ctx.accounts.sign_out(token).addCallback(lambda _: json_reply({}))


def current_user(call: Call) -> Reply:
    call.body()
    return json_reply(user_payload(call.user()))


def login_options(call: Call) -> Reply:
    return json_reply([])


def auth_endpoints(ctx: Any) -> dict[str, Endpoint]:
    return {
        "login": Endpoint(ctx, "login", {b"POST": partial(login, pending=_Pending())}),
        "logout": Endpoint(ctx, "logout", {b"POST": logout}),
        "currentUser": Endpoint(ctx, "currentUser", {b"POST": current_user}),
        "login-options": Endpoint(ctx, "login-options", {b"GET": login_options}),
    }
