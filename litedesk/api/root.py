"""C{/api}: placeholder root until the endpoints land (every path answers 404)."""

from __future__ import annotations

from twisted.web.resource import Resource

from litedesk.ops.context import OpsContext

__all__ = ["API_SCHEMA", "make_api"]

#: The API's tables in the ops database (CREATE ... IF NOT EXISTS).
API_SCHEMA: tuple[str, ...] = ()


def make_api(ctx: OpsContext) -> Resource:
    return Resource()  # type: ignore[no-untyped-call]
