"""The console's hosts page without I/O: the query, one page of peers, the HTML.

The page must cost the same at 1,000,000 registered peers as at ten (issue
16: at most 200 ms a page), so nothing here sorts or copies the registry.
Peers are listed in the registry's own order (the order they were first
registered or loaded), and a page is addressed by its position in that
order: C{start} is how many peers come before it.  Plain pages are
C{islice(registry, start, start + 50)}, which skips in C.

A filtered page (id prefix, online only) scans forward from C{start} until
it has 50 matches or has looked at L{SCAN_LIMIT} peers, whichever comes
first, and its "next" link continues the scan where this one stopped; when
the scan stopped at the limit, the page says how far it looked, so a short
page never reads as "that is all".  An exact id is looked up directly
(a dict lookup) and shown first, so finding one host never depends on the
scan.  Everything is read in one reactor turn, so the registry cannot
change under the iteration.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol
from urllib.parse import urlencode

from twisted.web.template import Tag, tags

from litedesk.console.sessions_view import ago

__all__ = [
    "MAX_PREFIX",
    "PAGE_SIZE",
    "SCAN_LIMIT",
    "HostPage",
    "HostQuery",
    "HostRow",
    "Peers",
    "host_page",
    "parse_host_query",
    "render_hosts",
    "scan_note",
]

#: Hosts per page.
PAGE_SIZE = 50
#: Peers a filtered page looks at, at most (about 30 ms of Python).
SCAN_LIMIT = 200_000
#: The longest id prefix kept from the query (RustDesk ids are far shorter).
MAX_PREFIX = 64

#: The sysinfo fields shown, in order: (key in the sysinfo mapping, column title).
SYSINFO_COLUMNS: tuple[tuple[str, str], ...] = (
    ("os", "OS"),
    ("hostname", "Host name"),
    ("version", "Version"),
    ("username", "User"),
)


class _Peer(Protocol):
    """What the page reads of a L{litedesk.rendezvous.registry.Peer}."""

    @property
    def id(self) -> str: ...
    @property
    def ip(self) -> str: ...
    @property
    def last_reg(self) -> float | None: ...
    @property
    def channel(self) -> object: ...
    def online(self, now: float) -> bool: ...


class Peers(Sized, Protocol):
    """What the page reads of a L{litedesk.rendezvous.registry.Registry}."""

    def __iter__(self) -> Iterator[_Peer]: ...
    def get(self, peer_id: str) -> _Peer | None: ...


@dataclass(frozen=True)
class HostQuery:
    """What the visitor asked for (parsed from the URL, never trusted).

    @ivar prefix: keep ids starting with this (C{""}: all).
    @ivar online: keep online hosts only.
    @ivar start: the position in the registry's order the page starts at.
    """

    prefix: str = ""
    online: bool = False
    start: int = 0

    @property
    def filtered(self) -> bool:
        return bool(self.prefix) or self.online

    def url(self, start: int) -> str:
        """The hosts page for this query from C{start}."""
        args: dict[str, str] = {}
        if self.prefix:
            args["q"] = self.prefix
        if self.online:
            args["online"] = "1"
        if start:
            args["start"] = str(start)
        return "/hosts" + ("?" + urlencode(args) if args else "")


def _first(args: Mapping[bytes, list[bytes]], name: bytes) -> str:
    values = args.get(name) or [b""]
    return values[0][: 4 * MAX_PREFIX].decode("utf-8", "replace")


def parse_host_query(args: Mapping[bytes, list[bytes]]) -> HostQuery:
    """The query from C{request.args}; anything malformed reads as its default."""
    prefix = _first(args, b"q").strip()[:MAX_PREFIX]
    online = _first(args, b"online") in ("1", "on", "yes")
    raw = _first(args, b"start").strip()
    start = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else 0
    return HostQuery(prefix, online, start)


@dataclass(frozen=True)
class HostRow:
    """One host as the page shows it (sysinfo is joined in at rendering)."""

    id: str
    ip: str
    online: bool
    last_seen: float | None
    stream: bool


@dataclass(frozen=True)
class HostPage:
    """One page of hosts.

    @ivar rows: the hosts shown, at most L{PAGE_SIZE} (+1 for an exact match).
    @ivar next_start: where the next page starts, or C{None} at the end.
    @ivar scanned_to: the position this page's scan reached.
    @ivar cut_short: a filtered scan stopped at L{SCAN_LIMIT}, not at a full page.
    @ivar total: peers registered.
    @ivar online: hosts online now.
    """

    query: HostQuery
    rows: list[HostRow]
    next_start: int | None
    scanned_to: int
    cut_short: bool
    total: int
    online: int = 0
    exact: HostRow | None = field(default=None)


def _row(peer: _Peer, now: float) -> HostRow:
    return HostRow(peer.id, peer.ip, peer.online(now), peer.last_reg, peer.channel is not None)


def host_page(
    peers: Peers,
    now: float,
    query: HostQuery,
    online: int = 0,
    scan_limit: int = SCAN_LIMIT,
) -> HostPage:
    """The page C{query} asks for, read from C{peers} at C{now}.

    @param online: the registry's online count (shown, not computed here).
    """
    total = len(peers)
    start = min(query.start, total)
    window: Iterable[_Peer] = islice(iter(peers), start, None)
    if not query.filtered:
        rows = [_row(p, now) for p in islice(window, PAGE_SIZE)]
        end = start + len(rows)
        return HostPage(query, rows, end if end < total else None, end, False, total, online)
    exact = None
    if query.prefix and start == 0:
        hit = peers.get(query.prefix)
        if hit is not None and (not query.online or hit.online(now)):
            exact = _row(hit, now)
    prefix, only_online = query.prefix, query.online
    rows = []
    scanned = 0
    for peer in islice(window, scan_limit):
        scanned += 1
        if (
            peer.id.startswith(prefix)
            and (not only_online or peer.online(now))
            and (exact is None or peer.id != exact.id)
        ):
            rows.append(_row(peer, now))
            if len(rows) == PAGE_SIZE:
                break
    end = start + scanned
    cut_short = scanned == scan_limit and len(rows) < PAGE_SIZE and end < total
    return HostPage(query, rows, end if end < total else None, end, cut_short, total, online, exact)


def _host_row(row: HostRow, now: float, info: Mapping[str, object]) -> Tag:
    state = "online" if row.online else "offline"
    bound = row.stream and row.online
    seen = "now" if bound else ago(row.last_seen, now)
    extra = [tags.td(str(info.get(key) or "")) for key, _ in SYSINFO_COLUMNS]
    return tags.tr(class_=f"host {state}")(
        tags.td(row.id, class_="id"),
        tags.td(state + (" (TCP)" if bound else ""), class_="state"),
        tags.td(seen),
        tags.td(row.ip),
        *extra,
    )


def _search_form(query: HostQuery) -> Tag:
    online = tags.input(type="checkbox", name="online", value="1", id="online-only")
    if query.online:
        online(checked="checked")
    return tags.form(method="get", action="/hosts", class_="search")(
        tags.label(
            "ID starts with ", tags.input(name="q", value=query.prefix, maxlength=str(MAX_PREFIX))
        ),
        " ",
        tags.label(online, " online only"),
        " ",
        tags.button("Search", type="submit"),
    )


def scan_note(page: HostPage) -> str:
    """Says which part of the registry the page covers, so a short filtered
    page is never read as "that is all"."""
    q = page.query
    span = f"{q.start + 1}\u2013{page.scanned_to} of {page.total}"
    if not q.filtered:
        return f"Hosts {span}." if page.rows else f"No hosts after {q.start} of {page.total}."
    shown = len(page.rows) + (page.exact is not None)
    if page.next_start is None:
        return f"Showing {shown} matches (looked at hosts {span}; no more)."
    why = "the scan stopped at its limit; " if page.cut_short else ""
    return (
        f"Showing the first {shown} matches among hosts {span} "
        f"({why}\u201cNext\u201d continues the search)."
    )


def render_hosts(
    page: HostPage, now: float, sysinfo: Mapping[str, Mapping[str, object]] | None
) -> list[Tag]:
    """The page's content (the flattener escapes every value).

    @param sysinfo: what hosts reported through the API, by id (C{None}:
        not available, the columns stay blank).
    """
    info = sysinfo or {}
    rows = [page.exact] if page.exact is not None else []
    rows += page.rows
    nav: list[Tag] = []
    if page.query.start:
        nav.append(tags.a("First page", href=page.query.url(0), class_="first"))
    if page.next_start is not None:
        nav.append(tags.a("Next", href=page.query.url(page.next_start), class_="next"))
    heads = [tags.th(title) for _, title in SYSINFO_COLUMNS]
    out = [
        tags.p(f"{page.online} online, {page.total} registered.", class_="summary"),
        _search_form(page.query),
        tags.p(scan_note(page), class_="note"),
        tags.table(class_="data hosts")(
            tags.thead(
                tags.tr(
                    tags.th("ID"), tags.th("State"), tags.th("Last seen"), tags.th("IP"), *heads
                )
            ),
            tags.tbody(*[_host_row(r, now, info.get(r.id, {})) for r in rows]),
        ),
    ]
    if not rows:
        out.append(tags.p("No hosts to show.", class_="empty"))
    if nav:
        out.append(tags.p(*nav, class_="pages"))
    return out
