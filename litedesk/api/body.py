# -*- test-case-name: tests.test_api_body -*-
"""Request bodies from the peer: bounded reading and the API's one JSON parser.

Everything the RustDesk apps send the API is a JSON object (RustDesk's
C{flutter/lib/common/hbbs/hbbs.dart}, C{src/hbbs_http/sync.rs},
C{src/server/connection.rs}), so one small parser serves every endpoint:
L{parse_object} takes the raw bytes and either returns a C{dict} or raises
L{BadBody} carrying the HTTP status and the text the client gets back.  The
field readers (L{text}, L{integer}, ...) check one field's type and size
the same way, so a handler reads its body as a list of checks.

Twisted's C{Request} buffers a whole body before any resource sees it, on
disk past 100 kB, with no limit at all.  L{BoundedRequest} (the listener's
request factory) keeps at most L{MAX_REQUEST_BODY} bytes in memory and
drops the rest, remembering that it did; the resource then answers 413
without parsing.  Endpoints may ask for less (L{MAX_BODY}).
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

from twisted.web.server import Request

__all__ = [
    "MAX_AB_BODY",
    "MAX_BODY",
    "MAX_REQUEST_BODY",
    "BadBody",
    "BoundedRequest",
    "boolean",
    "int_list",
    "integer",
    "parse_json",
    "parse_object",
    "parse_strings",
    "text",
]

#: Largest body any endpoint takes but the address book (64 KiB).
MAX_BODY = 64 * 1024
#: The legacy address book: the whole book as one JSON string (1 MiB).
MAX_AB_BODY = 1024 * 1024
#: What a request keeps in memory at most; the rest is read and dropped.
MAX_REQUEST_BODY = MAX_AB_BODY


class BadBody(Exception):
    """A body the API refuses.

    @ivar status: the HTTP status to answer (400 or 413).
    @ivar message: the C{error} text the client is sent (and the log reason).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _CappedBuffer(BytesIO):
    """A body buffer that stores the first C{cap} bytes and counts the rest."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap
        self.seen = 0

    def write(self, data: Any) -> int:
        self.seen += len(data)
        room = self.cap - self.tell()
        if room > 0:
            super().write(bytes(data[:room]))
        return len(data)

    @property
    def overflowed(self) -> bool:
        return self.seen > self.cap


class BoundedRequest(Request):
    """A C{Request} that holds at most L{MAX_REQUEST_BODY} bytes of body, in memory.

    Chunked bodies (no length known up front) are bounded the same way.
    """

    def gotLength(self, length: int | None) -> None:
        self.content = _CappedBuffer(MAX_REQUEST_BODY)


def body_bytes(request: Any, limit: int) -> bytes:
    """The request's body, or L{BadBody} (413) when it is longer than C{limit}."""
    content = request.content
    if content is None:
        return b""
    if getattr(content, "overflowed", False) or getattr(content, "seen", 0) > limit:
        raise BadBody(f"request body over {limit} bytes", 413)
    content.seek(0)
    data = content.read(limit + 1)
    if len(data) > limit:
        raise BadBody(f"request body over {limit} bytes", 413)
    return bytes(data)


def parse_object(raw: bytes, limit: int = MAX_BODY) -> dict[str, Any]:
    """C{raw} as a JSON object, or L{BadBody}.

    An empty body reads as C{{}}: the apps send none with some POSTs
    (C{/api/ab/personal}, C{/api/sysinfo_ver}).  Nesting too deep for
    Python's parser (RecursionError) is refused like any other bad JSON.
    """
    value = parse_json(raw, limit, {})
    if not isinstance(value, dict):
        raise BadBody("request body is not a JSON object")
    return value


def parse_strings(raw: bytes, max_items: int, max_len: int) -> list[str]:
    """C{raw} as a JSON list of strings (the address book's DELETE bodies), or L{BadBody}."""
    value = parse_json(raw, MAX_BODY, [])
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise BadBody("request body is not a JSON list of strings")
    if len(value) > max_items or any(len(x) > max_len for x in value):
        raise BadBody(f"request body holds more than {max_items} items or too long ones")
    return value


def parse_json(raw: bytes, limit: int, empty: Any) -> Any:
    """C{raw} as any JSON value (C{empty} for an empty body), or L{BadBody}."""
    if len(raw) > limit:
        raise BadBody(f"request body over {limit} bytes", 413)
    if not raw.strip():
        return empty
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadBody("request body is not UTF-8") from None
    except RecursionError:
        raise BadBody("request body nests too deeply") from None
    except ValueError:
        raise BadBody("request body is not JSON") from None
    # A lone surrogate (\ud800) parses, but no UTF-8 store or log can hold it.
    # Only a \u escape can make one (UTF-8 input cannot), so most bodies skip this.
    if b"\\u" in raw:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadBody("request body holds text that is not valid Unicode") from None
    return value


def text(body: dict[str, Any], key: str, max_len: int, *, default: str | None = "") -> str:
    """C{body[key]}: a string of at most C{max_len} characters.

    @param default: what a missing (or null) field reads as; C{None} makes
        the field required.
    """
    value = body.get(key)
    if value is None:
        if default is None:
            raise BadBody(f"{key} is missing")
        return default
    if not isinstance(value, str):
        raise BadBody(f"{key} is not a string")
    if len(value) > max_len:
        raise BadBody(f"{key} is longer than {max_len} characters")
    return value


def integer(
    body: dict[str, Any],
    key: str,
    *,
    default: int | None = 0,
    low: int = -(2**63),
    high: int = 2**63 - 1,
) -> int:
    """C{body[key]}: an integer in C{[low, high]} (C{true}/C{false} are not integers).

    The default range is SQLite's (signed 64 bits).
    """
    value = body.get(key)
    if value is None:
        if default is None:
            raise BadBody(f"{key} is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadBody(f"{key} is not an integer")
    if not low <= value <= high:
        raise BadBody(f"{key} is out of range")
    return value


def boolean(body: dict[str, Any], key: str, *, default: bool = False) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadBody(f"{key} is not true or false")
    return value


def int_list(body: dict[str, Any], key: str, max_items: int) -> list[int]:
    """C{body[key]}: a list of at most C{max_items} 32-bit integers (missing: empty)."""
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadBody(f"{key} is not a list")
    if len(value) > max_items:
        raise BadBody(f"{key} has more than {max_items} items")
    out: list[int] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not -(2**31) <= item < 2**31:
            raise BadBody(f"{key} holds something other than 32-bit integers")
        out.append(item)
    return out
