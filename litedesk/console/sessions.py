"""C{/sessions}: relay sessions now and lately, and connections hosts report.

The relay part is read from the relay's pairing table in one reactor turn
(L{litedesk.console.sessions_view}).  The reported connections come from
the API's audit table (L{litedesk.api.store.active_connections}: opened and
not closed, as RustDesk hosts post them to C{/api/audit/conn}); the
"Disconnect" button queues the connection id in
L{litedesk.api.devices.Devices.request_disconnect}, and the host's next
heartbeat carries it (C{{"disconnect": [conn_id]}}, C{src/hbbs_http/sync.rs}).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twisted.logger import Logger
from twisted.web.template import Flattenable, Tag, tags

from litedesk.api.store import AuditRecord, active_connections
from litedesk.console.page import Form, FormError, Page, View
from litedesk.console.sessions_view import ago, live_pairs, render_connections, render_sessions
from litedesk.ops.context import DeviceControl, OpsContext

__all__ = ["CONN_TYPES", "MAX_REPORTED", "SessionsPage", "devices_of"]

_log = Logger()

#: Reported connections shown at most.
MAX_REPORTED = 200

#: RustDesk's connection types as the audit posts number them
#: (C{AuthConnType} in C{src/server/connection.rs}).
CONN_TYPES: dict[int, str] = {
    0: "remote desktop",
    1: "file transfer",
    2: "port forward",
    3: "camera",
    4: "terminal",
}


def devices_of(ctx: OpsContext) -> DeviceControl | None:
    """The API's L{litedesk.api.devices.Devices}, or C{None} without an API."""
    return ctx.devices


def _reported(
    record: AuditRecord, now: float, devices: DeviceControl | None
) -> Mapping[str, object]:
    viewer = record.peer_name or record.peer_id
    if record.peer_name and record.peer_id:
        viewer = f"{record.peer_id} ({record.peer_name})"
    return {
        "peer_id": record.device_id,
        "conn_id": record.conn_id,
        "ip": record.ip,
        "peer": viewer,
        "type": CONN_TYPES.get(record.type, f"type {record.type}"),
        "since": ago(record.created_at, now),
        "live": devices is not None and devices.live(record.device_id) is not None,
    }


class SessionsPage(Page):
    """Live relay pairs, the last ended ones, and host-reported connections."""

    path = "sessions"
    title = "Sessions"

    async def get(self, view: View) -> Flattenable:
        now = view.now()
        out: list[Tag] = []
        relay = self.ctx.top.relay
        if relay is None:
            out.append(tags.p("This server runs no relay (--no-relay).", class_="empty"))
        else:
            table = relay.relay.table
            live = live_pairs(table.pairs)
            out += render_sessions(live, len(table.pairs), list(table.history), now)
        out += await self._reported(view, now)
        return out

    async def _reported(self, view: View, now: float) -> Sequence[Tag]:
        try:
            records = await self.ctx.db.run(active_connections, MAX_REPORTED)
        except Exception:
            _log.failure("Console sessions page: reading reported connections failed")
            view.error("The connections hosts report could not be read.", 200)
            return []
        devices = devices_of(self.ctx)
        form = view.form if devices is not None else None
        return render_connections([_reported(r, now, devices) for r in records], form)

    async def post(self, view: View, form: Form) -> Flattenable:
        peer_id = form.get("peer_id")
        raw = form.get("conn_id")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
            raise FormError("the connection id is not a number")
        conn_id = int(raw)
        devices = devices_of(self.ctx)
        if devices is None:
            view.error("This server cannot ask hosts to disconnect (no API server).")
        elif devices.request_disconnect(peer_id, conn_id):
            _log.info(
                "Console: {user} asked host {peer_id} to end connection {conn_id}",
                user=view.user.name,
                peer_id=peer_id,
                conn_id=conn_id,
            )
            view.notice(
                f"Host {peer_id} will be asked to end connection {conn_id} "
                "with its next heartbeat (within about 15 seconds)."
            )
        else:
            view.error(
                f"Host {peer_id} sends no heartbeats to this server now, so it cannot be "
                "asked to disconnect."
            )
        return await self.get(view)
