# -*- test-case-name: tests.test_api_personal_ab -*-
"""The personal address book calls of the RustDesk apps, under C{/api/ab/...}.

What C{flutter/lib/models/ab_model.dart} (1.4.9) calls once
C{/api/ab/personal} answers a guid (404 would keep the app on the legacy
book, L{litedesk.api.user_api}):

  - C{POST ab/settings} -> C{{"max_peer_one_ab": n}};
  - C{POST ab/personal} -> C{{"guid": ...}}: one book per user, its guid
    derived from the user name (nothing to store, the same on every call);
  - C{POST ab/shared/profiles} -> an empty page: no shared books here;
  - C{POST ab/peers?current&pageSize&ab=<guid>} -> a page of peers;
  - C{POST ab/tags/<guid>} -> C{[{"name", "color"}]};
  - C{POST ab/peer/add/<guid>}, C{PUT ab/peer/update/<guid>},
    C{DELETE ab/peer/<guid>} (a JSON list of ids);
  - C{POST ab/tag/add/<guid>}, C{PUT ab/tag/rename/<guid>} C{{old, new}},
    C{PUT ab/tag/update/<guid>} C{{name, color}}, C{DELETE ab/tag/<guid>}
    (a JSON list of names).

The changes answer an empty 200 on success and C{{"error": ...}} otherwise
(the app's C{_jsonDecodeActionResp} shows that text).  Every call needs the
signed-in user's token, and a guid that is not that user's book is 404.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from litedesk.api import ab_store
from litedesk.api.body import MAX_BODY, BadBody, body_bytes, integer, parse_strings, text
from litedesk.api.endpoint import Call, Endpoint, Refused, Reply, WithArg, json_reply
from litedesk.ops.users import User

__all__ = ["book_guid", "personal_ab_endpoints"]

_NAMESPACE = uuid.UUID("6f1c9a52-3c2e-4d5e-9a4b-6c1f2b7d8e90")


def book_guid(user: str) -> str:
    """The guid of C{user}'s personal book (stable, derived from the name)."""
    return str(uuid.uuid5(_NAMESPACE, user.casefold()))


def _empty_ok(_: object) -> Reply:
    return Reply(200, b"", b"text/plain; charset=utf-8")


def _book_error(failure: Failure) -> Reply | Failure:
    """An L{ab_store.AbError} becomes the text the app shows (status 200)."""
    if not isinstance(failure.value, ab_store.AbError):
        return failure
    return json_reply({"error": str(failure.value)})


def _user_for(call: Call, guid: str) -> User:
    user = call.user()
    if guid != book_guid(user.name):
        raise Refused("no such address book", 404)
    return user


def _change(call: Call, user: User, fn: Callable[..., None], *args: Any) -> Deferred[Reply]:
    """Run C{fn(conn, user, *args)} on the database; an empty 200 or the book's error."""
    return call.ctx.db.run(fn, user.name, *args).addCallbacks(_empty_ok, _book_error)


def settings(call: Call) -> Reply:
    call.user()
    return json_reply({"max_peer_one_ab": ab_store.MAX_PEERS})


def personal(call: Call) -> Deferred[Reply]:
    user = call.user()
    d = call.ctx.db.run(ab_store.open_personal, user.name, call.now)
    return d.addCallback(lambda _: json_reply({"guid": book_guid(user.name)}))


def shared_profiles(call: Call) -> Reply:
    call.user()
    return json_reply({"total": 0, "data": []})


def peers(call: Call) -> Deferred[Reply]:
    values = call.request.args.get(b"ab") or [b""]
    user = _user_for(call, values[0].decode("ascii", "replace"))
    current = call.query_int("current", 1, 1, 1_000_000)
    size = call.query_int("pageSize", 100, 1, 1000)
    d = call.ctx.db.run(ab_store.list_peers, user.name, (current - 1) * size, size)
    return d.addCallback(lambda out: json_reply({"total": out[0], "data": out[1]}))


def tags(call: Call) -> Deferred[Reply]:
    user = _user_for(call, call.arg)
    return call.ctx.db.run(ab_store.list_tags, user.name).addCallback(json_reply)


def _peer(call: Call, *, partial: bool) -> dict[str, Any]:
    try:
        return ab_store.check_peer(call.body(), partial=partial)
    except ab_store.AbError as e:
        raise BadBody(str(e)) from None


def add_peer(call: Call) -> Deferred[Reply]:
    user = _user_for(call, call.arg)
    return _change(call, user, ab_store.add_peer, _peer(call, partial=False))


def update_peer(call: Call) -> Deferred[Reply]:
    user = _user_for(call, call.arg)
    return _change(call, user, ab_store.update_peer, _peer(call, partial=True))


def delete_peers(call: Call) -> Deferred[Reply]:
    user = _user_for(call, call.arg)
    ids = parse_strings(_raw(call), ab_store.MAX_PEERS, 64)
    return _change(call, user, ab_store.delete_peers, ids)


def _raw(call: Call) -> bytes:
    return body_bytes(call.request, MAX_BODY)


def _tag_name(body: dict[str, Any], key: str) -> str:
    name = text(body, key, ab_store.MAX_TAG, default=None)
    if not name:
        raise BadBody(f"{key} is empty")
    return name


def _color(body: dict[str, Any]) -> int:
    return integer(body, "color", low=0, high=2**32 - 1)


def add_tag(call: Call) -> Deferred[Reply]:
    user = _user_for(call, call.arg)
    body = call.body()
    return _change(call, user, ab_store.add_tag, _tag_name(body, "name"), _color(body))


def rename_tag(call: Call) -> Deferred[Reply]:
    user = _user_for(call, call.arg)
    body = call.body()
    old, new = _tag_name(body, "old"), _tag_name(body, "new")
    return _change(call, user, ab_store.rename_tag, old, new)


def set_tag_color(call: Call) -> Deferred[Reply]:
    user = _user_for(call, call.arg)
    body = call.body()
    return _change(call, user, ab_store.set_tag_color, _tag_name(body, "name"), _color(body))


def delete_tags(call: Call) -> Deferred[Reply]:
    user = _user_for(call, call.arg)
    names = parse_strings(_raw(call), ab_store.MAX_TAGS, ab_store.MAX_TAG)
    return _change(call, user, ab_store.delete_tags, names)


def personal_ab_endpoints(ctx: Any) -> dict[str, Resource]:
    """The resources by path under C{/api} (hung below the legacy C{ab})."""
    peer = WithArg(ctx, "ab/peer", {b"DELETE": delete_peers})
    peer.putChild(b"add", WithArg(ctx, "ab/peer/add", {b"POST": add_peer}))
    peer.putChild(b"update", WithArg(ctx, "ab/peer/update", {b"PUT": update_peer}))
    tag = WithArg(ctx, "ab/tag", {b"DELETE": delete_tags})
    tag.putChild(b"add", WithArg(ctx, "ab/tag/add", {b"POST": add_tag}))
    tag.putChild(b"rename", WithArg(ctx, "ab/tag/rename", {b"PUT": rename_tag}))
    tag.putChild(b"update", WithArg(ctx, "ab/tag/update", {b"PUT": set_tag_color}))
    return {
        "ab/settings": Endpoint(ctx, "ab/settings", {b"POST": settings}),
        "ab/personal": Endpoint(ctx, "ab/personal", {b"POST": personal}),
        "ab/shared/profiles": Endpoint(ctx, "ab/shared/profiles", {b"POST": shared_profiles}),
        "ab/peers": Endpoint(ctx, "ab/peers", {b"POST": peers}),
        "ab/tags": WithArg(ctx, "ab/tags", {b"POST": tags}),
        "ab/peer": peer,
        "ab/tag": tag,
    }
