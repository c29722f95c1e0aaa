"""C{/}: placeholder root until the console lands (every page answers 404)."""

from __future__ import annotations

from twisted.web.resource import Resource

from litedesk.ops.context import OpsContext

__all__ = ["make_console"]


def make_console(ctx: OpsContext) -> Resource:
    return Resource()  # type: ignore[no-untyped-call]
