# -*- test-case-name: tests.test_api_user -*-
"""What a signed-in app reads and writes: the legacy address book, users, peers, notes.

All of these need C{Authorization: Bearer <token>}; without a live token
they answer 401 and the app signs out (C{flutter/lib/models/ab_model.dart},
C{group_model.dart}).

  - C{/api/ab} (GET, POST): the legacy address book, the app's whole book
    as one JSON string per user (at most 1 MiB).  Current RustDesk apps
    (1.4.9) use the personal book (L{litedesk.api.personal_ab}) and fall back
    here only when C{/api/ab/personal} answers 404; older apps use it.  A
    user with no book yet gets an empty one.  The push is answered with an
    empty 200, which is what the app counts as success.
  - C{/api/users}, C{/api/peers}, C{/api/device-group/accessible} (GET,
    paged by C{current} and C{pageSize}): C{{"total": n, "data": [...]}}, the
    app pages on until C{current * pageSize >= total}.  Users: the signed-in
    user, or every user for an admin; no peers and no device groups (LiteDesk
    has no per-user device ownership).
  - C{PUT /api/audit} C{{guid, note}}: a note on an audit record.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred

from litedesk.api import store
from litedesk.api.auth import user_payload
from litedesk.api.body import MAX_AB_BODY, parse_object, text
from litedesk.api.endpoint import Call, Endpoint, Refused, Reply, json_reply

__all__ = ["EMPTY_BOOK", "user_endpoints"]

#: What the app reads as an empty legacy book (its own serialisation).
EMPTY_BOOK = json.dumps({"tags": [], "peers": [], "tag_colors": "{}"}, separators=(",", ":"))
_PAGE_MAX = 1000


def get_ab(call: Call) -> Deferred[Reply]:
    user = call.user()

    def reply(data: str | None) -> Reply:
        return json_reply({"data": data if data is not None else EMPTY_BOOK, "licensed_devices": 0})

    return call.ctx.db.run(store.get_ab, user.name).addCallback(reply)


def post_ab(call: Call) -> Deferred[Reply]:
    user = call.user()
    body = call.body(MAX_AB_BODY)
    data = text(body, "data", MAX_AB_BODY, default=None)
    # The book itself must be what the app can read back: a JSON object.
    parse_object(data.encode("utf-8", "surrogatepass"), MAX_AB_BODY)
    d = call.ctx.db.run(store.put_ab, user.name, data, call.now)
    return d.addCallback(lambda _: Reply(200, b"", b"text/plain; charset=utf-8"))


def _page(call: Call, items: list[dict[str, Any]]) -> Reply:
    current = call.query_int("current", 1, 1, 1_000_000)
    size = call.query_int("pageSize", 100, 1, _PAGE_MAX)
    start = (current - 1) * size
    return json_reply({"total": len(items), "data": items[start : start + size]})


def users(call: Call) -> Reply:
    user = call.user()
    listed = call.ctx.accounts.users() if user.is_admin else [user]
    return _page(call, [user_payload(u) for u in listed])


def nothing(call: Call) -> Reply:
    call.user()
    return _page(call, [])


def put_audit_note(call: Call) -> Deferred[Reply]:
    call.user()
    body = call.body()
    guid = text(body, "guid", 64, default=None)
    note = text(body, "note", 4096)

    def done(found: bool) -> Reply:
        if not found:
            raise Refused(f"no audit record {guid!r}", 404)
        return json_reply({})

    return call.ctx.db.run(store.set_audit_note, guid, note).addCallback(done)


def user_endpoints(ctx: Any) -> dict[str, Endpoint]:
    return {
        "ab": Endpoint(ctx, "ab", {b"GET": get_ab, b"POST": post_ab}),
        "users": Endpoint(ctx, "users", {b"GET": users}),
        "peers": Endpoint(ctx, "peers", {b"GET": nothing}),
        "device-group/accessible": Endpoint(ctx, "device-group/accessible", {b"GET": nothing}),
        "audit": Endpoint(ctx, "audit", {b"PUT": put_audit_note}),
    }
