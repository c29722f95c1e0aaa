"""The console's sessions page: live relay pairs, their history, reported connections.

Covers the relay's ended-pair history (L{litedesk.relay.table.PairingTable.history}:
addresses, bytes each way, times, reason; bounded to the last 500) on a
real pairing table with an injected clock, and the page's view of it
(L{litedesk.console.sessions_view}): live pairs with bytes and duration,
history newest first, and never a pair's uuid (a pairing secret).  The
connections hosts report (API audit rows) with their "Disconnect" forms,
values escaped.  The page on a real server, with a real relay pair, is in
tests/test_console_browser.py.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.template import Tag, flattenString, tags

from litedesk.console.sessions_view import (
    ago,
    duration,
    live_pairs,
    render_connections,
    render_sessions,
    size,
)
from litedesk.relay.table import HISTORY_LENGTH, PairingTable

SECRET = "3f1c7e0a-pairing-uuid"


def html(content: Any) -> str:
    """The flattened markup (plain tags flatten synchronously)."""
    out: list[bytes] = []
    flattenString(None, content).addCallback(out.append)
    return out[0].decode("utf-8")


def paired(table: PairingTable[str], uuid: str, a_ip: str, b_ip: str) -> Any:
    a = table.accept(f"{uuid}-a", a_ip)
    b = table.accept(f"{uuid}-b", b_ip)
    table.first_frame(a, uuid)
    pair = table.first_frame(b, uuid)
    assert pair is not None
    return pair, a, b


class HistoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.table: PairingTable[str] = PairingTable(self.clock)

    def test_ended_pair_recorded(self) -> None:
        """Both legs gone: one record with both addresses, bytes, times, reason."""
        pair, a, b = paired(self.table, SECRET, "198.51.100.1", "203.0.113.9")
        pair.a_to_b, pair.b_to_a = 1500, 70_000
        self.clock.advance(65)
        self.table.lost(a, "closed by peer")
        self.assertEqual(len(self.table.history), 0)
        self.table.lost(b, "drained")
        (ended,) = self.table.history
        self.assertEqual(
            (ended.a_ip, ended.b_ip, ended.a_to_b, ended.b_to_a, ended.started, ended.ended),
            ("198.51.100.1", "203.0.113.9", 1500, 70_000, 1000.0, 1065.0),
        )
        self.assertEqual(ended.reason, "closed by peer")
        self.assertNotIn(SECRET, repr(ended))

    def test_history_bounded(self) -> None:
        """Only the last HISTORY_LENGTH ended pairs are kept, oldest dropped first."""
        for n in range(HISTORY_LENGTH + 20):
            _, a, b = paired(self.table, f"u{n}", f"10.0.{n // 250}.{n % 250}", "10.1.0.1")
            self.table.lost(a, f"pair {n}")
            self.table.lost(b, "")
        self.assertEqual(len(self.table.history), HISTORY_LENGTH)
        self.assertEqual(self.table.history[0].reason, "pair 20")
        self.assertEqual(self.table.history[-1].reason, f"pair {HISTORY_LENGTH + 19}")

    def test_page_shows_live_and_ended_without_uuid(self) -> None:
        """Live pairs with bytes and duration; history newest first; no uuid anywhere."""
        _, a, b = paired(self.table, "old-" + SECRET, "192.0.2.10", "192.0.2.11")
        self.clock.advance(5)
        self.table.lost(a, "first ended")
        self.table.lost(b, "")
        live, _, _ = paired(self.table, SECRET, "198.51.100.1", "203.0.113.9")
        live.a_to_b, live.b_to_a = 2048, 3 * 1024 * 1024
        self.clock.advance(125)
        text = html(
            render_sessions(
                live_pairs(self.table.pairs),
                len(self.table.pairs),
                list(self.table.history),
                self.clock.seconds(),
            )
        )
        self.assertNotIn(SECRET, text)
        self.assertIn("1 active.", text)
        for shown in ("198.51.100.1", "203.0.113.9", "2.0 KiB", "3.0 MiB", "2 min 5 s"):
            self.assertIn(shown, text)
        self.assertIn("192.0.2.10", text)
        self.assertIn("first ended", text)
        self.assertIn("5 s", text)

    def test_live_pairs_capped(self) -> None:
        """A busy relay: the page copies at most `limit` pairs and says so."""
        for n in range(30):
            paired(self.table, f"u{n}", "10.0.0.1", "10.0.0.2")
        shown = live_pairs(self.table.pairs, limit=10)
        self.assertEqual(len(shown), 10)
        text = html(render_sessions(shown, 30, [], self.clock.seconds()))
        self.assertIn("30 active (showing 10).", text)


class FormatTests(SynchronousTestCase):
    def test_formats(self) -> None:
        self.assertEqual(
            [duration(s) for s in (0, 59, 61, 3725, 90_000, -3)],
            ["0 s", "59 s", "1 min 1 s", "1 h 2 min", "1 d 1 h", "0 s"],
        )
        self.assertEqual([size(n) for n in (0, 1023, 1536)], ["0 B", "1023 B", "1.5 KiB"])
        self.assertEqual(size(5 * 2**50), "5120.0 TiB")
        self.assertEqual(ago(None, 10), "not since start")
        self.assertEqual(ago(4, 10), "6 s ago")


def form(action: str, *children: Any, **attrs: str) -> Tag:
    """What L{litedesk.console.page.View.form} builds: a POST form with the CSRF field."""
    return tags.form(method="post", action=action, **attrs)(
        tags.input(type="hidden", name="csrf", value="csrf-value"), *children
    )


ROW: dict[str, object] = {
    "peer_id": "123456789",
    "conn_id": 7,
    "ip": "198.51.100.4",
    "peer": "<img src=x onerror=alert(1)>",
    "type": "remote desktop",
    "since": "2 min 0 s ago",
}


class ReportedConnectionTests(SynchronousTestCase):
    def test_rows_with_disconnect_forms(self) -> None:
        """Each reported connection has a POST form naming it, with the CSRF field."""
        text = html(render_connections([ROW], form))
        self.assertIn('action="/sessions"', text)
        self.assertIn('name="csrf" value="csrf-value"', text)
        self.assertIn('name="peer_id" value="123456789"', text)
        self.assertIn('name="conn_id" value="7"', text)
        self.assertIn("&lt;img src=x onerror=alert(1)&gt;", text)
        self.assertNotIn("<img", text)

    def test_silent_host_has_no_button(self) -> None:
        """A host that sends no heartbeats could not receive a disconnect: no button."""
        text = html(render_connections([{**ROW, "live": False}], form))
        self.assertNotIn("<form", text)
        self.assertIn("host silent", text)

    def test_no_buttons_without_the_api(self) -> None:
        text = html(render_connections([ROW], None))
        self.assertNotIn("<form", text)
        self.assertIn("198.51.100.4", text)

    def test_none_reported(self) -> None:
        self.assertIn("No host reports a connection now.", html(render_connections([], form)))
