"""The console's hosts, sessions and audit pages on a real server, fed by a real host's API calls.

A whole server runs in-process on loopback (L{tests.support.api_server});
a host registers with a real UDP RegisterPk and then makes the RustDesk
app's API calls (L{tests.support.rustdesk_api_client}: sysinfo, heartbeat,
audit posts); an administrator reads the pages through a cookie-keeping
HTTP client (L{tests.support.console}).  Covers: /hosts shows the host
online with the OS, host name, version and user it reported (escaped);
/audit shows connection, file and alarm records on their tabs and survives
any query; /sessions lists the connection the host reported, and its
"Disconnect" button (POST with the CSRF field) reaches the host in its
next heartbeat reply; a Disconnect without the CSRF field is refused (403)
and one with a malformed connection id is answered 400 and queues nothing.
The audit page's URL query parser on arbitrary input (hypothesis).
"""

from __future__ import annotations

import html
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from litedesk.api.store import AUDIT_KINDS
from litedesk.console.audit import MAX_PAGE, AuditQuery, parse_audit_query, render_audit

from .support.api_server import PASSWORD, ApiServerCase
from .support.console import ConsoleClient, csrf_of

HOST = "123456789"
HOST_UUID = b"host-machine-uuid-01"


class ReportedByHostsTests(ApiServerCase):
    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        self.start()
        yield self.ready
        yield self.register_host(HOST, HOST_UUID)
        self.api = self.client()
        self.console = ConsoleClient(self.svc.api.listening.getHost().port)
        r = yield self.call(self.console.sign_in, "root", PASSWORD)
        self.assertEqual(r.status, 303)

    @inlineCallbacks
    def page(self, path: str) -> Any:
        r = yield self.call(self.console.get, path)
        self.assertEqual(r.status, 200, r.body)
        return r.body

    @inlineCallbacks
    def test_hosts_page_shows_what_the_host_reported(self) -> Any:
        """The registered host is online with its (escaped) sysinfo."""
        r = yield self.call(
            self.api.sysinfo, HOST, HOST_UUID, hostname="<b>desk-7</b>", username="alice"
        )
        self.assertEqual(r.text, "SYSINFO_UPDATED")
        body = yield self.page("/hosts")
        row = _row(body, HOST)
        self.assertIn("online", row)
        self.assertIn("&lt;b&gt;desk-7&lt;/b&gt;", row)
        self.assertNotIn("<b>desk-7", body)
        for shown in ("alice", "1.4.9", "Debian GNU/Linux 13", "127.0.0.1"):
            self.assertIn(shown, row)
        self.assertIn("1 online, 1 registered.", body)
        body = yield self.page("/hosts?q=99&online=1")
        self.assertNotIn(f">{HOST}<", body)
        self.assertIn("Showing 0 matches", body)
        body = yield self.page(f"/hosts?q={HOST}")
        self.assertIn(f">{HOST}<", body)

    @inlineCallbacks
    def test_audit_tabs(self) -> Any:
        """Connection, file and alarm records each show on their own tab."""
        conn = {"action": "new", "ip": "198.51.100.23", "type": 0}
        yield self.call(self.api.audit_conn, HOST, HOST_UUID, 11, conn)
        auth = {"peer": ["987654321", "bob <laptop>"], "type": 1}
        yield self.call(self.api.audit_conn, HOST, HOST_UUID, 11, auth)
        yield self.call(self.api.audit_file, HOST, HOST_UUID, 11)
        yield self.call(self.api.audit_alarm, HOST, HOST_UUID, 11)
        body = yield self.page("/audit")
        row = _row(body, "198.51.100.23")
        for shown in (HOST, "987654321 (bob &lt;laptop&gt;)", "file transfer", "open"):
            self.assertIn(shown, row)
        body = yield self.page("/audit?kind=file")
        self.assertIn("file: /home/alice/report.pdf", body)
        self.assertIn("viewer sent", body)
        body = yield self.page("/audit?kind=alarm")
        self.assertIn("address not on the allow list", body)
        # Malformed queries read as the first page of connections.
        for query in ("?kind=%FF&page=-1", "?kind=<x>&page=%00"):
            body = yield self.page("/audit" + query)
            self.assertIn("198.51.100.23", body)
        body = yield self.page("/audit?page=99999999999")
        self.assertIn("Page 1000.", body)
        self.assertIn("No records on this page.", body)

    @inlineCallbacks
    def test_disconnect_reaches_the_host(self) -> Any:
        """Disconnect on /sessions: the host's next heartbeat reply names the connection."""
        r = yield self.call(self.api.heartbeat, HOST, HOST_UUID, conns=[42])
        self.assertEqual(r.status, 200)
        conn = {"action": "new", "ip": "203.0.113.50", "type": 0}
        yield self.call(self.api.audit_conn, HOST, HOST_UUID, 42, conn)
        body = yield self.page("/sessions")
        row = _row(body, "203.0.113.50")
        self.assertIn("remote desktop", row)
        self.assertIn('name="conn_id" value="42"', row)
        form = {"peer_id": HOST, "conn_id": "42"}
        r = yield self.call(self.console.post, "/sessions", form)
        self.assertEqual(r.status, 403)
        r = yield self.call(self.console.post, "/sessions", {**form, "conn_id": "4x"})
        self.assertEqual(r.status, 403)
        csrf = csrf_of(body)
        r = yield self.call(self.console.post, "/sessions", {**form, "conn_id": "4x", "csrf": csrf})
        self.assertEqual(r.status, 400)
        self.assertIn("not a number", html.unescape(r.body))
        r = yield self.call(self.console.post, "/sessions", {**form, "csrf": csrf})
        self.assertEqual(r.status, 200)
        self.assertIn("will be asked to end connection 42", r.body)
        r = yield self.call(self.api.heartbeat, HOST, HOST_UUID, conns=[42])
        self.assertEqual(r.json().get("disconnect"), [42])

    @inlineCallbacks
    def test_disconnect_of_a_silent_host_says_so(self) -> Any:
        """A host that sends no heartbeats has no button, and a forged request is
        answered with an error: nothing is queued."""
        conn = {"action": "new", "ip": "203.0.113.51", "type": 0}
        yield self.call(self.api.audit_conn, HOST, HOST_UUID, 43, conn)
        body = yield self.page("/sessions")
        row = _row(body, "203.0.113.51")
        self.assertIn("host silent", row)
        self.assertNotIn("<form", row)
        r = yield self.call(
            self.console.post,
            "/sessions",
            {"peer_id": "555555555", "conn_id": "1", "csrf": csrf_of(body)},
        )
        self.assertEqual(r.status, 400)
        self.assertIn("sends no heartbeats", r.body)


def _row(body: str, needle: str) -> str:
    """The table row of C{body} that contains C{needle}."""
    for row in re.findall(r"<tr[^>]*>.*?</tr>", body, re.S):
        if needle in row:
            return str(row)
    raise AssertionError(f"no row with {needle!r}")


class AuditQueryTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(
            parse_audit_query({b"kind": [b"file"], b"page": [b"3"]}), AuditQuery("file", 3)
        )
        self.assertEqual(AuditQuery("alarm", 2).url(3), "/audit?kind=alarm&page=3")

    @given(
        st.dictionaries(
            st.sampled_from([b"kind", b"page", b"other"]),
            st.lists(
                st.binary(max_size=40) | st.sampled_from([b"conn", b"file", b"7"]), max_size=3
            ),
        )
    )
    def test_any_query_parses(self, args: dict[bytes, list[bytes]]) -> None:
        """Any URL arguments give a known kind and a page in 1..MAX_PAGE, never an exception."""
        q = parse_audit_query(args)
        self.assertIn(q.kind, AUDIT_KINDS)
        self.assertTrue(1 <= q.page <= MAX_PAGE)
        self.assertEqual(render_audit(q, [], False)[0].tagName, "ul")
