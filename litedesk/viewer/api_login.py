"""Signing the viewer in and out on a server's API, as a RustDesk app does.

RustDesk's contract (C{flutter/lib/common/hbbs/hbbs.dart} C{LoginRequest},
C{LoginResponse}; C{flutter/lib/models/user_model.dart}):

  - C{POST /api/login} with C{{username, password, id, uuid, autoLogin,
    type: "account", deviceInfo: {os, type: "client", name}}} answers
    C{{access_token, type: "access_token", user: {name, ...}}}, or
    C{{error}} with a text for the person (also on a 4xx status);
  - C{POST /api/logout} with C{{id, uuid}} and C{Authorization: Bearer
    TOKEN} ends the token (the app ignores the answer).

The viewer has no RustDesk id: it sends an empty C{id} and a random
C{uuid} per sign-in, kept with the token (L{litedesk.viewer.api_tokens})
and sent again at sign-out.  The API server is the peer here: its answer is
read up to L{MAX_ANSWER} bytes, within L{HTTP_TIMEOUT}, and whatever it
sends ends in a L{LoginAnswer} or a L{LoginFailure} with a sentence, never
another exception.
"""

from __future__ import annotations

import base64
import json
import platform
import socket
import uuid as uuidlib
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, PartialDownloadError, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from litedesk.viewer.api_tokens import MAX_TOKEN
from litedesk.viewer.refusals import ConnectError

__all__ = [
    "HTTP_TIMEOUT",
    "MAX_ANSWER",
    "SIGN_IN_FAILED",
    "LoginAnswer",
    "LoginFailure",
    "device_uuid",
    "login_body",
    "parse_login_answer",
    "sign_in",
    "sign_out",
]

HTTP_TIMEOUT = 15.0
#: A login answer is a token and a user record: far below this.
MAX_ANSWER = 64 * 1024
SIGN_IN_FAILED = "sign-in failed"
_MAX_TEXT = 300  # how much of a server's error text we repeat
_log = Logger(namespace="litedesk.viewer.api_login")


class LoginFailure(ConnectError):
    """The sign-in did not give a token; the message says why, for a person."""

    def __init__(self, detail: str) -> None:
        super().__init__(SIGN_IN_FAILED, detail)


@dataclass(frozen=True)
class LoginAnswer:
    """A successful sign-in: the access token and the user's name."""

    access_token: str
    user: str


def device_uuid() -> str:
    """A fresh device uuid, base64 as RustDesk apps send theirs."""
    return base64.b64encode(uuidlib.uuid4().bytes).decode("ascii")


def _device_info() -> dict[str, str]:
    system = platform.system().lower()
    return {
        "os": {"darwin": "macos"}.get(system, system),
        "type": "client",
        "name": socket.gethostname(),
    }


def login_body(username: str, password: str, uuid: str) -> dict[str, Any]:
    """The C{/api/login} body (C{LoginRequest} of C{hbbs.dart})."""
    return {
        "username": username,
        "password": password,
        "id": "",
        "uuid": uuid,
        "autoLogin": True,
        "type": "account",
        "deviceInfo": _device_info(),
    }


def _clean(text: str) -> str:
    """A server's text as one short printable line."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return line if len(line) <= _MAX_TEXT else line[:_MAX_TEXT] + "..."


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _usable_token(token: object) -> bool:
    # It goes into protobuf strings and HTTP headers: printable ASCII only.
    return (
        isinstance(token, str)
        and 0 < len(token) <= MAX_TOKEN
        and token.isascii()
        and token.isprintable()
        and " " not in token
    )


def parse_login_answer(status: int, body: bytes) -> LoginAnswer:
    """What an C{/api/login} answer means.

    @raise LoginFailure: anything but a usable access token, with the
        server's C{error} text when it sent one.
    """
    answer = _json_object(body)
    if answer is None:
        raise LoginFailure(
            f"the API server's answer (HTTP {status}) is not a JSON object: "
            "is --api-server the server's API?"
        )
    error = answer.get("error")
    if isinstance(error, str) and error:
        raise LoginFailure(f"the server says: {_clean(error)}")
    if status != 200:
        raise LoginFailure(f"the API server answered HTTP {status}")
    kind = answer.get("type")
    if kind in ("email_check", "tfa_check"):
        raise LoginFailure(
            f"the server asks for a second factor ({kind}), which litedesk-viewer cannot give"
        )
    token = answer.get("access_token")
    if kind != "access_token" or not _usable_token(token):
        raise LoginFailure("the API server's answer has no usable access token")
    assert isinstance(token, str)
    user = answer.get("user")
    name = user.get("name") if isinstance(user, dict) else None
    return LoginAnswer(token, _clean(name) if isinstance(name, str) else "")


class _BoundedBody(Protocol):
    """Collects a response body up to C{limit} bytes, then gives up."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            if not self.done.called:
                self.done.errback(
                    LoginFailure(f"the API server's answer is over {self.limit} bytes")
                )
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if isinstance(reason.value, ResponseDone | PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(PartialDownloadError(b"", b"the answer was cut short"))


async def _post(reactor: Any, url: str, body: dict[str, Any], token: str = "") -> tuple[int, bytes]:
    """POST C{body} as JSON; (status, answer body).

    @raise LoginFailure: the API server cannot be reached, or its answer is
        too long, too slow or cut short.
    """
    headers = Headers({b"Content-Type": [b"application/json"]})
    if token:
        headers.addRawHeader(b"Authorization", f"Bearer {token}".encode("ascii"))
    data = json.dumps(body).encode("utf-8")
    agent = Agent(reactor, connectTimeout=HTTP_TIMEOUT)  # type: ignore[no-untyped-call]
    try:
        producer = FileBodyProducer(BytesIO(data))  # type: ignore[no-untyped-call]
        d = agent.request(b"POST", url.encode("utf-8"), headers, producer)
        d.addTimeout(HTTP_TIMEOUT, reactor)
        response = await d
        reader = _BoundedBody(MAX_ANSWER)
        response.deliverBody(reader)  # type: ignore[no-untyped-call]
        reader.done.addTimeout(HTTP_TIMEOUT, reactor)
        answer = await reader.done
    except LoginFailure:
        raise
    except Exception as e:
        # Connection refused, no such host, TLS, timeouts, a cut answer: all
        # mean the same to the person, who needs the URL and the cause.
        why = _clean(str(e)) or type(e).__name__
        raise LoginFailure(f"cannot reach the API server at {url} ({why})") from None
    return int(response.code), answer


async def sign_in(
    reactor: Any, api_server: str, username: str, password: str, uuid: str
) -> LoginAnswer:
    """Sign in on C{api_server}; the token and user name, or L{LoginFailure}."""
    url = f"{api_server}/api/login"
    status, answer = await _post(reactor, url, login_body(username, password, uuid))
    try:
        result = parse_login_answer(status, answer)
    except LoginFailure as e:
        _log.info("Sign-in as {user!r} on {url} failed: {why}", user=username, url=url, why=e)
        raise
    _log.info("Signed in as {user!r} on {url}", user=result.user or username, url=url)
    return result


async def sign_out(reactor: Any, api_server: str, token: str, uuid: str) -> int:
    """End C{token} on C{api_server}; the HTTP status (the app ignores the body).

    @raise LoginFailure: the API server cannot be reached.
    """
    status, _ = await _post(reactor, f"{api_server}/api/logout", {"id": "", "uuid": uuid}, token)
    return status
