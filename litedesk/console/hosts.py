"""C{/hosts}: the registered hosts, paged, with what they report through the API.

The registry part (which page, which peers, online or not) is
L{litedesk.console.hosts_view}, read in one reactor turn; then the page
waits for the ops database for the shown ids' sysinfo (OS, host name,
version, user: L{litedesk.api.store.sysinfo_for}), at most 51 ids per
query.  A database that fails leaves those columns blank with a notice: the
registry part is still worth showing.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web.template import Flattenable, tags

from litedesk.api.store import SysInfo, sysinfo_for
from litedesk.console.hosts_view import host_page, parse_host_query, render_hosts
from litedesk.console.page import Page, View

__all__ = ["HostsPage"]

_log = Logger()


def _columns(info: SysInfo) -> dict[str, object]:
    return {
        "os": info.os,
        "hostname": info.hostname,
        "version": info.version,
        "username": info.username,
    }


class HostsPage(Page):
    """Registered hosts: online state, last registration, address, sysinfo."""

    path = "hosts"
    title = "Hosts"

    async def get(self, view: View) -> Flattenable:
        registry = self.ctx.top.registry
        if registry is None:
            return tags.p(
                "This server runs no rendezvous server (--relay-only): hosts register elsewhere.",
                class_="empty",
            )
        now = view.now()
        query = parse_host_query(view.request.args or {})
        page = host_page(registry, now, query, online=registry.online_count(now))
        ids = [r.id for r in page.rows]
        if page.exact is not None:
            ids.append(page.exact.id)
        sysinfo: dict[str, dict[str, object]] | None = None
        if ids:
            try:
                found = await self.ctx.db.run(sysinfo_for, ids)
            except Exception:
                _log.failure("Console hosts page: reading sysinfo failed")
                view.error("Host details (OS, name, version) could not be read.", 200)
            else:
                sysinfo = {peer_id: _columns(info) for peer_id, info in found.items()}
        return render_hosts(page, now, sysinfo)
