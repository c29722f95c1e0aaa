"""C{/}: the web console's root, its page list, and how to add a page.

The console is server-rendered HTML on the operations listener (issue 16,
item 4): no JavaScript at all (the Content-Security-Policy forbids
scripts), one stylesheet at C{/static/console.css}, twisted.web.template
for markup.  C{litedesk.server.http_site} puts C{/api}, C{/health} and
C{/metrics} beside the pages as children of this root; they do not pass
through the console's session or headers.

Adding a page
=============

  1. A module C{litedesk/console/NAME.py} with a L{Page} subclass::

         class HostsPage(Page):
             path = "hosts"            # served at /hosts
             title = "Hosts"           # heading, window title, nav link

             async def get(self, view: View) -> Flattenable:
                 rows = ...            # read self.ctx (OpsContext), await the db
                 return tags.table(...)   # or an Element with template("hosts.xml")

             async def post(self, view: View, form: Form) -> Flattenable:
                 what = form.get("id")        # FormError -> error notice, 400
                 ...; view.notice("Done.")    # or view.error("why", status)
                 return await self.get(view)

     The framework (L{litedesk.console.page.PageResource}) has already
     checked the administrator's session (else 303 to C{/login}), the CSRF
     field of a POST (else 403) and the form's size; it sets the security
     headers, wraps the content in C{templates/layout.xml} and turns an
     exception into a logged 500 page.  Forms: C{view.form("/hosts",
     ...children)} adds the hidden CSRF field; a POST answers with the page
     (no redirect), so show the outcome with L{View.notice}/L{View.error}.
  2. Markup: return L{tags} trees or an L{Element} whose loader is
     C{template("NAME.xml")} (C{litedesk/console/templates/}, package
     data).  Never build HTML by string concatenation: the flattener
     escapes every string and attribute, and peer ids, host names and user
     names come from strangers.  No C{style=} attributes and no scripts (the
     CSP refuses them): add classes to C{static/console.css}.
  3. Add the class to L{PAGES} below (one line; the order is the
     navigation bar's).  Shared helpers for tables and figures are in
     L{litedesk.console.widgets}.
  4. Tests: C{tests/test_console_NAME.py}, using
     L{tests.support.console} (a real server, a signed-in HTTP client).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from twisted.web.resource import Resource

from litedesk.console.audit import AuditPage
from litedesk.console.bandwidth import BandwidthService
from litedesk.console.client_setup import ClientSetupPage
from litedesk.console.dashboard import DashboardPage
from litedesk.console.hosts import HostsPage
from litedesk.console.lists_page import ListsPage
from litedesk.console.page import Console, Page, PageResource, plain_error
from litedesk.console.security import secure_headers
from litedesk.console.sessions import SessionsPage
from litedesk.console.signin import LoginResource, LogoutResource
from litedesk.console.users import UsersPage
from litedesk.ops.context import OpsContext

__all__ = ["PAGES", "make_console"]

#: Every signed-in page, in the navigation bar's order.
PAGES: tuple[type[Page], ...] = (
    DashboardPage,
    HostsPage,
    SessionsPage,
    AuditPage,
    ListsPage,
    UsersPage,
    ClientSetupPage,
)


class ConsoleRoot(Resource):
    """The pages are children; any other path is the console's 404 page."""

    def __init__(self, console: Console) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.console = console

    def getChild(self, path: bytes, request: Any) -> Resource:
        return _NotFound(self.console)


class _NotFound(Resource):
    isLeaf = True

    def __init__(self, console: Console) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.console = console

    def render(self, request: Any) -> Any:
        return plain_error(request, self.console, 404, "Not found", "No such page.")


class _Stylesheet(Resource):
    """C{/static/console.css}, read once from the package."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._css = (files("litedesk.console") / "static" / "console.css").read_bytes()

    def render_GET(self, request: Any) -> bytes:
        secure_headers(request)
        if request.postpath != [b"console.css"]:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Not found\n"
        request.setHeader(b"content-type", b"text/css; charset=utf-8")
        return self._css


def make_console(ctx: OpsContext) -> Resource:
    """The console's root resource, and its bandwidth sampler (a child
    service of C{ctx.top}, so it stops with the server)."""
    console = Console(ctx, started=float(ctx.reactor.seconds()))
    sampling = BandwidthService(ctx)
    sampling.setServiceParent(ctx.top)  # type: ignore[no-untyped-call]
    console.bandwidth = sampling.sampler
    root = ConsoleRoot(console)
    for page_class in PAGES:
        page = page_class(console)
        if page.in_nav:
            console.nav.append((page.path, page.title))
        root.putChild(page.path.encode("ascii"), PageResource(page))
    root.putChild(b"login", LoginResource(console))
    root.putChild(b"logout", LogoutResource(console))
    root.putChild(b"static", _Stylesheet())
    return root
