"""The console's sessions page without I/O, and the small formatters the pages share.

Three tables: relay pairs now (from the relay's pairing table, read in one
reactor turn), the last ended pairs (L{litedesk.relay.table.PairingTable.history},
at most 500), and the connections RustDesk hosts report through the API's
audit calls (C{/api/audit/conn}), with a "Disconnect" button the host
learns about from its next heartbeat.

A pair's uuid is never shown: while the second leg has not arrived it is
the only thing a stranger needs to take its place, and afterwards it says
nothing an operator needs.  Times come from the injected reactor clock
(C{seconds()}), the same clock the relay stamps pairs with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.web.template import Tag, tags

__all__ = [
    "LivePair",
    "ago",
    "duration",
    "live_pairs",
    "render_connections",
    "render_sessions",
    "size",
]


def duration(seconds: float) -> str:
    """C{3725} -> C{"1 h 2 min"}; short and exact enough for a table."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def ago(when: float | None, now: float) -> str:
    """How long before C{now} C{when} was (C{"never"} for C{None})."""
    if when is None:
        return "not since start"
    return f"{duration(now - when)} ago"


def size(n: int) -> str:
    """Bytes for people: C{1536} -> C{"1.5 KiB"}."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class _Leg(Protocol):
    @property
    def ip(self) -> str: ...


class _Pair(Protocol):
    """What the page reads of a L{litedesk.relay.table.Pair} (never its uuid)."""

    @property
    def a(self) -> _Leg: ...
    @property
    def b(self) -> _Leg: ...
    @property
    def a_to_b(self) -> int: ...
    @property
    def b_to_a(self) -> int: ...
    @property
    def started(self) -> float: ...


class _Ended(Protocol):
    """What the page reads of a L{litedesk.relay.table.EndedPair}."""

    @property
    def a_ip(self) -> str: ...
    @property
    def b_ip(self) -> str: ...
    @property
    def a_to_b(self) -> int: ...
    @property
    def b_to_a(self) -> int: ...
    @property
    def started(self) -> float: ...
    @property
    def ended(self) -> float: ...
    @property
    def reason(self) -> str: ...


@dataclass(frozen=True)
class LivePair:
    """A live pair as shown: addresses, bytes each way, start (no uuid)."""

    a_ip: str
    b_ip: str
    a_to_b: int
    b_to_a: int
    started: float


#: Live pairs shown at most (the count above the table says how many there are).
MAX_LIVE_SHOWN = 500


def live_pairs(pairs: Iterable[_Pair], limit: int = MAX_LIVE_SHOWN) -> list[LivePair]:
    """Copies of up to C{limit} live pairs (any C{limit} of them when there
    are more), longest-running first.

    The copy is taken in one reactor turn; sorting only the copied slice
    keeps a relay with many thousand pairs cheap to show.
    """
    out = []
    for p in pairs:
        out.append(LivePair(p.a.ip, p.b.ip, p.a_to_b, p.b_to_a, p.started))
        if len(out) == limit:
            break
    out.sort(key=lambda p: p.started)
    return out


def _table(cls: str, heads: Sequence[str], rows: Sequence[Tag]) -> Tag:
    return tags.table(class_=f"data {cls}")(
        tags.thead(tags.tr(*[tags.th(h) for h in heads])), tags.tbody(*rows)
    )


_PAIR_HEADS = ("Side A", "Side B", "A to B", "B to A", "Duration")


def _live_part(pairs: Sequence[LivePair], count: int, now: float) -> list[Tag]:
    rows = [
        tags.tr(class_="pair")(
            tags.td(p.a_ip),
            tags.td(p.b_ip),
            tags.td(size(p.a_to_b)),
            tags.td(size(p.b_to_a)),
            tags.td(duration(now - p.started)),
        )
        for p in pairs
    ]
    shown = f" (showing {len(pairs)})" if len(pairs) < count else ""
    out = [
        tags.h2("Relay sessions now"),
        tags.p(f"{count} active{shown}.", class_="summary", id="live-count"),
        _table("live", _PAIR_HEADS, rows),
    ]
    if not pairs:
        out.append(tags.p("No relay sessions now.", class_="empty"))
    return out


def _history_part(ended: Sequence[_Ended]) -> list[Tag]:
    rows = [
        tags.tr(class_="ended")(
            tags.td(e.a_ip),
            tags.td(e.b_ip),
            tags.td(size(e.a_to_b)),
            tags.td(size(e.b_to_a)),
            tags.td(duration(e.ended - e.started)),
            tags.td(e.reason),
        )
        for e in reversed(ended)
    ]
    out = [
        tags.h2("Recent relay sessions"),
        tags.p(f"The last {len(ended)}, newest first." if ended else "", class_="summary"),
        _table("history", (*_PAIR_HEADS, "Ended because"), rows),
    ]
    if not ended:
        out.append(tags.p("No relay session has ended yet.", class_="empty"))
    return out


def render_connections(
    rows: Sequence[Mapping[str, object]],
    form: Callable[..., Tag] | None,
) -> list[Tag]:
    """Connections hosts report through the API, each with a "Disconnect" button.

    @param rows: mappings with C{peer_id}, C{conn_id}, C{ip}, C{peer}
        (the viewer's id or name), C{type}, C{since} (text) and C{live}
        (the host sends heartbeats, so a disconnect can reach it; a row of a
        silent host gets no button: its "close" post may simply be lost).
    @param form: makes a POST form carrying the CSRF field
        (L{litedesk.console.page.View.form}); C{None}: no buttons, the
        server cannot ask hosts to drop a connection.
    """
    cells = []
    for r in rows:
        peer_id, conn_id = str(r.get("peer_id", "")), str(r.get("conn_id", ""))
        button: Tag | str = ""
        if form is not None and not r.get("live", True):
            button = tags.span("host silent", class_="muted")
        elif form is not None:
            button = form(
                "/sessions",
                tags.input(type="hidden", name="peer_id", value=peer_id),
                tags.input(type="hidden", name="conn_id", value=conn_id),
                tags.button("Disconnect", type="submit"),
                class_="disconnect",
            )
        cells.append(
            tags.tr(class_="conn")(
                tags.td(peer_id),
                tags.td(str(r.get("peer", ""))),
                tags.td(str(r.get("ip", ""))),
                tags.td(str(r.get("type", ""))),
                tags.td(str(r.get("since", ""))),
                tags.td(button),
            )
        )
    out = [
        tags.h2("Connections reported by hosts"),
        tags.p(
            "From RustDesk hosts that use this server as their API server; a disconnect "
            "reaches the host with its next heartbeat (a few seconds).",
            class_="summary",
        ),
        _table("connections", ("Host", "Viewer", "IP", "Type", "Since", ""), cells),
    ]
    if not rows:
        out.append(tags.p("No host reports a connection now.", class_="empty"))
    return out


def render_sessions(
    live: Sequence[LivePair], live_count: int, ended: Sequence[_Ended], now: float
) -> list[Tag]:
    """The relay part of the page: sessions now and the recent history."""
    return _live_part(live, live_count, now) + _history_part(ended)
