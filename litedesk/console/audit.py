"""C{/audit}: the connection, file and alarm records RustDesk hosts post.

Hosts that use this server as their API server post each connection (when
it opens, once authorised, when it closes), each file transfer and each
alarm (wrong passwords, refused addresses) to C{/api/audit/*}; the API
keeps them in the ops database (L{litedesk.api.store}).  This page shows
them newest first, L{PAGE_SIZE} at a time, one kind per tab.  Everything
in a record was written by a host, so everything is escaped (the template
flattener does it) and nothing is trusted as markup or as a link.

Paging is by offset (C{?kind=conn&page=3}); the page number is bounded so
that a hostile URL cannot make SQLite skip through the whole table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from twisted.logger import Logger
from twisted.web.template import Flattenable, Tag, tags

from litedesk.api.store import AUDIT_KINDS, AuditRecord, recent_audit
from litedesk.console.page import Page, View
from litedesk.console.sessions import CONN_TYPES
from litedesk.console.sessions_view import duration

__all__ = ["MAX_PAGE", "PAGE_SIZE", "AuditPage", "AuditQuery", "parse_audit_query", "render_audit"]

_log = Logger()

#: Records per page.
PAGE_SIZE = 50
#: The last page number accepted (50,000 records back); older ones are in the database.
MAX_PAGE = 1000

_KIND_TITLES = {"conn": "Connections", "file": "File transfers", "alarm": "Alarms"}

#: C{FileAuditType} and C{AlarmAuditType} of RustDesk's C{src/server/connection.rs}.
_FILE_TYPES = {0: "viewer sent", 1: "viewer received"}
_ALARM_TYPES = {
    0: "address not on the allow list",
    1: "many wrong passwords",
    2: "frequent attempts",
    6: "many attempts from one IPv6 prefix",
    10: "id not on the allow list",
}


@dataclass(frozen=True)
class AuditQuery:
    """Which records: C{kind} (one of L{AUDIT_KINDS}) and C{page} (from 1)."""

    kind: str = "conn"
    page: int = 1

    def url(self, page: int) -> str:
        return "/audit?" + urlencode({"kind": self.kind, "page": str(page)})


def parse_audit_query(args: Mapping[bytes, list[bytes]]) -> AuditQuery:
    """The query from C{request.args}; anything unknown reads as the default."""
    kind = (args.get(b"kind") or [b""])[0][:16].decode("ascii", "replace")
    raw = (args.get(b"page") or [b""])[0][:8].decode("ascii", "replace").strip()
    page = int(raw) if raw.isascii() and raw.isdigit() else 1
    return AuditQuery(kind if kind in AUDIT_KINDS else "conn", min(max(page, 1), MAX_PAGE))


def _when(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "?"


def _conn_cells(r: AuditRecord) -> list[str]:
    viewer = f"{r.peer_id} ({r.peer_name})" if r.peer_name and r.peer_id else r.peer_id
    length = "open" if r.closed_at is None else duration(r.closed_at - r.created_at)
    kind = CONN_TYPES.get(r.type, f"type {r.type}")
    return [_when(r.created_at), r.device_id, viewer or r.peer_name, r.ip, kind, length, r.note]


def _file_cells(r: AuditRecord) -> list[str]:
    what = "file" if r.is_file else "folder"
    kind = _FILE_TYPES.get(r.type, f"type {r.type}")
    return [_when(r.created_at), r.device_id, r.peer_id, kind, f"{what}: {r.path}", r.info]


def _alarm_cells(r: AuditRecord) -> list[str]:
    kind = _ALARM_TYPES.get(r.type, f"type {r.type}")
    return [_when(r.created_at), r.device_id, kind, r.info]


_COLUMNS: dict[str, tuple[tuple[str, ...], Callable[[AuditRecord], list[str]]]] = {
    "conn": (("When", "Host", "Viewer", "IP", "Type", "Duration", "Note"), _conn_cells),
    "file": (("When", "Host", "Viewer", "Direction", "Path", "Details"), _file_cells),
    "alarm": (("When", "Host", "Alarm", "Details"), _alarm_cells),
}


def render_audit(query: AuditQuery, records: Sequence[AuditRecord], more: bool) -> list[Tag]:
    """Tabs, the records of one page and the page links (values escaped by the flattener).

    @param more: there are records after this page.
    """
    tabs = []
    for kind in AUDIT_KINDS:
        attrs = {"aria-current": "page"} if kind == query.kind else {}
        tabs.append(tags.li(tags.a(_KIND_TITLES[kind], href=AuditQuery(kind).url(1), **attrs)))
    heads, cells = _COLUMNS[query.kind]
    rows = [tags.tr(class_=query.kind)(*[tags.td(c) for c in cells(r)]) for r in records]
    out = [
        tags.ul(*tabs, class_="tabs"),
        tags.table(class_=f"data audit {query.kind}")(
            tags.thead(tags.tr(*[tags.th(h) for h in heads])), tags.tbody(*rows)
        ),
    ]
    if not records:
        out.append(tags.p("No records on this page.", class_="empty"))
    nav = []
    if query.page > 1:
        nav.append(tags.a("Newer", href=query.url(query.page - 1), class_="prev"))
    if more and query.page < MAX_PAGE:
        nav.append(tags.a("Older", href=query.url(query.page + 1), class_="next"))
    out.append(tags.p(f"Page {query.page}. ", *nav, class_="pages"))
    return out


class AuditPage(Page):
    """Connection, file and alarm records from hosts, newest first."""

    path = "audit"
    title = "Audit log"

    async def get(self, view: View) -> Flattenable:
        query = parse_audit_query(view.request.args or {})
        offset = (query.page - 1) * PAGE_SIZE
        try:
            records = await self.ctx.db.run(recent_audit, query.kind, PAGE_SIZE + 1, offset)
        except Exception:
            _log.failure("Console audit page: reading {kind} records failed", kind=query.kind)
            view.error("The audit records could not be read; the server log says why.", 500)
            records = []
        return render_audit(query, records[:PAGE_SIZE], len(records) > PAGE_SIZE)
