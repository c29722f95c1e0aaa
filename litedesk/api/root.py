"""C{/api}: the RustDesk-compatible API server (the apps' "API server" setting).

Assembles the endpoints of L{litedesk.api.auth} (sign-in),
L{litedesk.api.device_api} (what hosts post: heartbeat, sysinfo, audit),
L{litedesk.api.user_api} (the signed-in app's legacy address book and
lists) and L{litedesk.api.personal_ab} (the personal address book) into
one tree.  Every path the tree does not hold, such as C{/api/oidc/*},
answers 404 with a JSON reason: the apps read that as "this server lacks
the feature".

L{API_SCHEMA} is every table the API keeps in the ops database
(L{litedesk.api.store}); the server applies it at start-up.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource

from litedesk.api import ab_store, store
from litedesk.api.auth import auth_endpoints
from litedesk.api.device_api import device_endpoints
from litedesk.api.devices import Devices
from litedesk.api.endpoint import NotFound, error_reply
from litedesk.api.personal_ab import personal_ab_endpoints
from litedesk.api.user_api import user_endpoints
from litedesk.ops.context import OpsContext

__all__ = ["API_SCHEMA", "ApiRoot", "make_api"]

#: The API's tables in the ops database (CREATE ... IF NOT EXISTS).
API_SCHEMA: tuple[str, ...] = store.API_TABLES + ab_store.AB_TABLES


class ApiRoot(Resource):
    """A branch of the C{/api} tree: children by name, 404 for anything else.

    @ivar devices: on the root, the heartbeat state the console reads
        (L{Devices.live}) and asks disconnections through
        (L{Devices.request_disconnect}).
    """

    def __init__(self, devices: Devices | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.devices = devices

    def getChild(self, path: bytes, request: Any) -> Resource:
        return NotFound()

    def render(self, request: Any) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"application/json")
        return error_reply(404, "not supported by this server").body


def _place(root: Resource, path: str, endpoint: Resource) -> None:
    """Hang C{endpoint} at C{path} (C{a/b}), making branches on the way."""
    *parents, leaf = path.split("/")
    node = root
    for name in parents:
        child = node.children.get(name.encode())
        if child is None:
            child = ApiRoot()
            node.putChild(name.encode(), child)
        node = child
    existing = node.children.get(leaf.encode())
    if existing is not None:  # a branch made earlier for a deeper path
        for key, value in existing.children.items():
            endpoint.putChild(key, value)
    node.putChild(leaf.encode(), endpoint)


def make_api(ctx: OpsContext) -> ApiRoot:
    """The C{/api} resource of the server C{ctx} describes."""
    devices = Devices(getattr(ctx.top, "registry", None))
    # The console finds the heartbeat state here (litedesk.console.sessions).
    ctx.devices = devices
    root = ApiRoot(devices)
    endpoints: dict[str, Resource] = {
        **auth_endpoints(ctx),
        **user_endpoints(ctx),
        **personal_ab_endpoints(ctx),
        **device_endpoints(ctx, devices),
    }
    for path in sorted(endpoints, key=lambda p: p.count("/")):
        _place(root, path, endpoints[path])
    return root
