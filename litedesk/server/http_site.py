"""The operations listener's C{Site}: one root every HTTP part hangs from.

Port P-2 (21114 by default, where RustDesk clients look for an API
server): the console at C{/} (L{litedesk.console}), the RustDesk API under
C{/api} (L{litedesk.api}), C{/health} and C{/metrics} (L{litedesk.ops}).
It lives in the server package because it assembles those packages.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Site

from litedesk.api.body import BoundedRequest
from litedesk.api.root import make_api
from litedesk.console.root import make_console
from litedesk.ops.context import OpsContext
from litedesk.ops.health import HealthResource
from litedesk.ops.metrics import MetricsResource, ServerCollector

__all__ = ["make_root", "make_site"]


def make_root(ctx: OpsContext) -> Resource:
    """The console's root with C{/api}, C{/health} and C{/metrics} beside its pages."""
    root = make_console(ctx)
    root.putChild(b"api", make_api(ctx))
    root.putChild(b"health", HealthResource(ctx.top, ctx.reactor, ctx.peer_db))
    root.putChild(
        b"metrics",
        MetricsResource(ServerCollector(ctx.top, ctx.reactor, ctx.peer_db), ctx.metrics_allow),
    )
    return root


def make_site(ctx: OpsContext) -> Site:
    site = _QuietSite(make_root(ctx), reactor=ctx.reactor)  # type: ignore[no-untyped-call]
    # Bodies held in memory and bounded (Twisted's own spool to disk without a limit).
    site.requestFactory = BoundedRequest
    site.noisy = False
    return site


class _QuietSite(Site):
    """No access log: a load balancer's probe every few seconds would drown it."""

    def log(self, request: Any) -> None:
        pass
