# -*- test-case-name: tests.test_api_auth -*-
"""The plumbing every C{/api} endpoint shares: one call, one reply, no tracebacks.

A handler is a plain function from a L{Call} (the request with its parsed
parts: client address, bearer token, JSON body) to a L{Reply} or a
C{Deferred} of one.  L{Endpoint} maps HTTP methods to handlers and takes
care of what each would otherwise repeat:

  - a body the parser refuses (L{BadBody}) or a refusal a handler raises
    (L{Refused}: 401, 403, 429) becomes that status with C{{"error": ...}},
    and a log line with the reason, the endpoint and the address (at most
    one a second per endpoint, with a count of those left out);
  - anything else a handler raises becomes a 500 with a generic text (the
    failure goes to the log, never to the peer);
  - a reply that arrives after the client went away is dropped.

Why JSON error bodies: the RustDesk apps show C{body['error']} to the user
(C{flutter/lib/models/user_model.dart}) and read any other body as the
answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from litedesk.api.body import MAX_BODY, BadBody, body_bytes, parse_object
from litedesk.ops.context import OpsContext
from litedesk.ops.users import User

__all__ = [
    "Call",
    "Endpoint",
    "Handler",
    "NotFound",
    "Refused",
    "Reply",
    "WithArg",
    "error_reply",
    "json_reply",
    "text_reply",
]

_log = Logger(namespace="litedesk.api")
#: Seconds between two refusal lines of one endpoint (the others are counted).
LOG_INTERVAL = 1.0


class Refused(BadBody):
    """A request refused for a reason other than its body (401, 403, 404, 429)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What an endpoint answers: status, body, content type."""

    status: int
    body: bytes
    ctype: bytes = b"application/json"


def json_reply(value: object, status: int = 200) -> Reply:
    return Reply(status, json.dumps(value, separators=(",", ":")).encode())


def text_reply(text: str, status: int = 200) -> Reply:
    return Reply(status, text.encode(), b"text/plain; charset=utf-8")


def error_reply(status: int, message: str) -> Reply:
    return json_reply({"error": message}, status)


class Call:
    """One request as a handler sees it.

    @ivar ctx: the server's parts (accounts, database, registry, ...).
    @ivar request: the twisted.web request (headers, arguments).
    @ivar arg: the path segment after the endpoint's own, for endpoints
        that take one (C{/api/ab/tags/<guid>}), else C{""}.
    @ivar ip: the client's address.
    @ivar now: the reactor's time when the request arrived.
    """

    def __init__(self, ctx: OpsContext, request: Any, arg: str = "") -> None:
        self.ctx = ctx
        self.request = request
        self.arg = arg
        self.ip = str(getattr(request.getClientAddress(), "host", ""))
        self.now = float(ctx.reactor.seconds())

    def body(self, limit: int = MAX_BODY) -> dict[str, Any]:
        """The JSON object sent (empty body: C{{}}), or L{BadBody}."""
        return parse_object(body_bytes(self.request, limit), limit)

    def bearer(self) -> str:
        """The token of C{Authorization: Bearer ...}, or C{""}."""
        raw = self.request.getHeader(b"authorization") or b""
        scheme, _, token = raw.partition(b" ")
        if scheme.lower() != b"bearer" or len(token) > 512:
            return ""
        return token.strip().decode("ascii", "replace")

    def user(self) -> User:
        """The signed-in user, or L{Refused} 401 (the app then signs out).

        Only tokens issued to an app (C{kind} C{api}) count: a console
        session's token opens no API call.
        """
        user = self.ctx.accounts.user_for_token(self.bearer(), kind="api")
        if user is None:
            raise Refused("Not signed in, or the sign-in expired", 401)
        return user

    def query_int(self, name: str, default: int, low: int, high: int) -> int:
        """A query argument as an integer clamped to C{[low, high]}."""
        values = self.request.args.get(name.encode()) or []
        try:
            value = int(values[0]) if values else default
        except ValueError:
            value = default
        return max(low, min(high, value))


Handler = Callable[[Call], "Reply | Deferred[Reply]"]


class Endpoint(Resource):
    """One API path: handlers by HTTP method; deeper paths are 404.

    @param ctx: handed to every L{Call}.
    @param name: the path, for the log.
    @param handlers: C{{b"GET": fn, b"POST": fn, ...}}.
    @param arg: handed to every L{Call} as C{call.arg}.
    """

    def __init__(
        self, ctx: OpsContext, name: str, handlers: dict[bytes, Handler], arg: str = ""
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._ctx = ctx
        self.name = name
        self._handlers = handlers
        self._arg = arg
        self.refusals = _RefusalLog()

    def getChild(self, path: bytes, request: Any) -> Resource:
        return NotFound()

    def render(self, request: Any) -> bytes | int:
        handler = self._handlers.get(request.method)
        if handler is None:
            request.setHeader(b"allow", b", ".join(sorted(self._handlers)))
            return _write(request, error_reply(405, "method not allowed"))
        call = Call(self._ctx, request, self._arg)
        try:
            result = handler(call)
        except Exception as e:
            return _write(request, self._failed(call, Failure(e)))  # type: ignore[no-untyped-call]
        if not isinstance(result, Deferred):
            return _write(request, result)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def deliver(reply: Reply) -> None:
            if not gone:
                request.write(_write(request, reply))
                request.finish()

        result.addErrback(lambda f: self._failed(call, f)).addCallback(deliver).addErrback(
            lambda f: _log.failure("Could not answer {endpoint}", f, endpoint=self.name)
        )
        return NOT_DONE_YET

    def _failed(self, call: Call, failure: Failure) -> Reply:
        e = failure.value
        if isinstance(e, BadBody):
            self.refusals.log(self.name, call, e)
            return error_reply(e.status, e.message)
        _log.failure("API {endpoint} from {ip} failed", failure, endpoint=self.name, ip=call.ip)
        return error_reply(500, "internal server error")


class _RefusalLog:
    """Refusal lines of one endpoint: at most one per L{LOG_INTERVAL}, the rest counted.

    A peer sending junk in a loop must not fill the disk with the log.
    """

    def __init__(self) -> None:
        self._last = float("-inf")
        self._unlogged = 0

    def log(self, endpoint: str, call: Call, e: BadBody) -> None:
        if call.now - self._last < LOG_INTERVAL:
            self._unlogged += 1
            return
        self._last = call.now
        _log.info(
            "API {endpoint} from {ip} refused ({status}): {reason}"
            " ({unlogged} refusals not logged since the last line)",
            endpoint=endpoint,
            ip=call.ip,
            status=e.status,
            reason=e.message,
            unlogged=self._unlogged,
        )
        self._unlogged = 0


class WithArg(Resource):
    """C{<path>/<arg>}: an L{Endpoint} for any one segment C{arg} (a guid).

    Fixed names put with C{putChild} win over the catch-all.
    """

    def __init__(self, ctx: OpsContext, name: str, handlers: dict[bytes, Handler]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._ctx = ctx
        self.name = name
        self._handlers = handlers
        self._refusals = _RefusalLog()

    def getChild(self, path: bytes, request: Any) -> Resource:
        if not path or len(path) > 64:
            return NotFound()
        endpoint = Endpoint(self._ctx, self.name, self._handlers, path.decode("ascii", "replace"))
        endpoint.refusals = self._refusals
        return endpoint

    def render(self, request: Any) -> bytes:
        return _write(request, error_reply(404, "not supported by this server"))


class NotFound(Resource):
    """404 with a JSON reason, for every method and every deeper path.

    The apps read a 404 as "this server lacks the feature" (the personal
    address book: C{flutter/lib/models/ab_model.dart}) and fall back.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def render(self, request: Any) -> bytes:
        return _write(request, error_reply(404, "not supported by this server"))


def _write(request: Any, reply: Reply) -> bytes:
    """Status and headers on C{request}; the body to send."""
    request.setResponseCode(reply.status)
    request.setHeader(b"content-type", reply.ctype)
    request.setHeader(b"cache-control", b"no-store")
    return reply.body
