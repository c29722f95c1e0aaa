"""Markup pieces the console's pages share: tables, figures, units.

Each returns a twisted.web.template tree (escaped when flattened), so pages
stay short and look alike.  C{None} in a figure means "not running" (a part
the server's options left out), shown as such instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from twisted.web.template import Flattenable, Tag, tags

__all__ = ["NOT_RUNNING", "figures", "human_bytes", "human_duration", "table"]

NOT_RUNNING = "not running"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Flattenable]],
    *,
    empty: str = "Nothing to show.",
    id: str | None = None,
) -> Tag:
    """A table with a header row; C{empty} in a paragraph when no rows."""
    body = [tags.tr(*(tags.td(cell) for cell in row)) for row in rows]
    if not body:
        return tags.p(empty, class_="empty")
    attrs = {"id": id} if id else {}
    return tags.table(class_="data", **attrs)(
        tags.thead(tags.tr(*(tags.th(h, scope="col") for h in headers))),
        tags.tbody(*body),
    )


def figures(items: Iterable[tuple[str, str, Flattenable | None]]) -> Tag:
    """Key figures as a definition list: (id, label, value or None)."""
    out: list[Tag] = []
    for key, label, value in items:
        shown: Flattenable = NOT_RUNNING if value is None else value
        out.append(
            tags.div(class_="figure" + (" absent" if value is None else ""), id=key)(
                tags.dt(label), tags.dd(shown)
            )
        )
    return tags.dl(class_="figures")(*out)


def human_bytes(n: float) -> str:
    """1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """3725 -> "1 h 2 min"; under a minute in seconds."""
    s = int(max(0, seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{s} s"
