"""The operations listener's C{Site}: one root resource every part hangs from.

Port P-2 (21114 by default, where RustDesk clients look for an API
server).  Today it serves C{/health} and C{/metrics}; the API server and
console are to be added as further children of L{make_root}'s resource.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.web.resource import Resource
from twisted.web.server import Site

from litedesk.ops.access import IPNetwork
from litedesk.ops.health import HealthResource
from litedesk.ops.metrics import MetricsResource, ServerCollector

if TYPE_CHECKING:
    from litedesk.server.assembly import LiteDeskServer

__all__ = ["make_root", "make_site"]


def make_root(
    top: LiteDeskServer, reactor: Any, db_path: str | None, metrics_allow: Iterable[IPNetwork]
) -> Resource:
    """The root resource: C{/health}, C{/metrics}; anything else is 404."""
    root = Resource()  # type: ignore[no-untyped-call]
    root.putChild(b"health", HealthResource(top, reactor, db_path))
    root.putChild(
        b"metrics", MetricsResource(ServerCollector(top, reactor, db_path), metrics_allow)
    )
    return root


def make_site(
    top: LiteDeskServer, reactor: Any, db_path: str | None, metrics_allow: Iterable[IPNetwork]
) -> Site:
    site = _QuietSite(  # type: ignore[no-untyped-call]
        make_root(top, reactor, db_path, metrics_allow), reactor=reactor
    )
    site.noisy = False
    return site


class _QuietSite(Site):
    """No access log: a load balancer's probe every few seconds would drown it."""

    def log(self, request: Any) -> None:
        pass
