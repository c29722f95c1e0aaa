"""C{/}: the dashboard, the server's state at a glance.

Every figure reads the running server directly (nothing walks the peers:
the online count is kept by L{litedesk.rendezvous.online}, so the page
stays fast with a million registered hosts).  A part the options left out
(C{--relay-only}: no rendezvous server; C{--no-relay}: no relay) shows
"not running" rather than failing.  NAT types are whatever
C{nat_type_*} counters the rendezvous server keeps, so a new type shows up
without a change here.
"""

from __future__ import annotations

from twisted.web.template import Flattenable, Tag, tags

from litedesk.console.page import Page, View
from litedesk.console.widgets import figures, human_bytes, human_duration, table

__all__ = ["DashboardPage", "hourly_chart"]

_NAT_PREFIX = "nat_type_"


def hourly_chart(hours: list[int], *, width: int = 480, height: int = 80) -> Tag:
    """Bytes per hour as an inline SVG bar chart (no script, no style attribute)."""
    peak = max(hours) if hours and max(hours) > 0 else 1
    step = width / max(1, len(hours))
    bars = []
    for i, count in enumerate(hours):
        h = round(height * count / peak, 1)
        bar = Tag("rect")(
            x=f"{i * step + 1:.1f}",
            y=f"{height - h:.1f}",
            width=f"{step - 2:.1f}",
            height=f"{h:.1f}",
        )
        bar(Tag("title")(f"{len(hours) - i - 1} h ago: {human_bytes(count)}"))
        bars.append(bar)
    return Tag("svg")(
        *bars,
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {width} {height}",
        role="img",
        class_="chart",
        **{"aria-label": "Relayed bytes per hour over the last 24 hours"},
    )


class DashboardPage(Page):
    path = ""
    title = "Dashboard"

    async def get(self, view: View) -> Flattenable:
        now = view.now()
        top = self.ctx.top
        registry = top.registry
        relay = top.relay
        sampler = self.console.bandwidth
        online = registry.online_count(now) if registry is not None else None
        registered = len(registry) if registry is not None else None
        pairs = len(relay.relay.table.pairs) if relay is not None else None
        rate = total = None
        chart: Flattenable = ""
        if relay is not None and sampler is not None:
            rate = f"{human_bytes(sampler.rate)}/s"
            total = human_bytes(sampler.total(now))
            chart = tags.figure(
                hourly_chart(sampler.hourly(now)),
                tags.figcaption("Relayed per hour, last 24 h (newest on the right)"),
            )
        parts = figures(
            [
                ("hosts-online", "Hosts online", _number(online)),
                ("hosts-registered", "Hosts registered", _number(registered)),
                ("relay-sessions", "Relay sessions now", _number(pairs)),
                ("bandwidth-now", "Relay bandwidth now", rate),
                ("bandwidth-24h", "Relayed in 24 h", total),
                ("users", "Users", str(len(self.ctx.accounts.users()))),
                ("uptime", "Up for", human_duration(now - self.console.started)),
            ]
        )
        return [parts, chart, tags.h2("NAT types seen"), self._nat_types()]

    def _nat_types(self) -> Flattenable:
        server = self.ctx.top.server
        if server is None:
            return tags.p("The rendezvous server is not running.", class_="empty")
        rows = sorted(
            (k.removeprefix(_NAT_PREFIX).replace("_", " "), str(v))
            for k, v in server.counters.items()
            if k.startswith(_NAT_PREFIX)
        )
        return table(
            ["NAT type", "Hosts seen"], rows, empty="No NAT types reported yet.", id="nat-types"
        )


def _number(n: int | None) -> str | None:
    return None if n is None else f"{n:,}"
