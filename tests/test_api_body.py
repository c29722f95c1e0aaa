"""Hostile bodies against the API: the one JSON parser, and a real server that keeps serving.

L{litedesk.api.body.parse_object} and the field readers on any bytes and
any JSON (hypothesis): a dict or L{BadBody}, never anything else.  Then a
real server sent what a hostile peer sends: a body over the limit (declared
and chunked), bytes that are not JSON or not UTF-8, JSON that is not an
object, fields of the wrong type, 10,000 nested arrays; each is answered
400 or 413 with C{{"error": ...}} and the server then still signs a user in.
The capped request buffer on its own: it keeps at most its cap.
"""

from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import inlineCallbacks
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from litedesk.api import body as b
from litedesk.api import store
from litedesk.api.endpoint import _RefusalLog
from tests.support.api_server import PASSWORD, ApiServerCase
from tests.support.rustdesk_api_client import encode_uuid

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


class ParserTests(SynchronousTestCase):
    @given(st.binary(max_size=300))
    def test_any_bytes(self, raw: bytes) -> None:
        try:
            out = b.parse_object(raw)
        except b.BadBody as e:
            self.assertIn(e.status, (400, 413))
            return
        self.assertIsInstance(out, dict)

    @given(json_values)
    def test_any_json(self, value: Any) -> None:
        """Objects come back equal; anything else is a 400 naming it."""
        raw = json.dumps(value).encode()
        if isinstance(value, dict):
            self.assertEqual(b.parse_object(raw), value)
        else:
            with self.assertRaises(b.BadBody) as caught:
                b.parse_object(raw)
            self.assertEqual(caught.exception.status, 400)

    @given(st.dictionaries(st.sampled_from(["id", "ver", "conns", "x"]), json_values, max_size=4))
    def test_field_readers(self, body: dict[str, Any]) -> None:
        """Each reader returns its type or raises BadBody, whatever the field holds."""
        for read in (
            lambda: b.text(body, "id", 64),
            lambda: b.integer(body, "ver"),
            lambda: b.int_list(body, "conns", 64),
            lambda: b.boolean(body, "x"),
        ):
            try:
                read()
            except b.BadBody as e:
                self.assertEqual(e.status, 400)

    def test_deep_nesting(self) -> None:
        with self.assertRaises(b.BadBody):
            b.parse_object(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")

    def test_lone_surrogate_refused(self) -> None:
        """Valid JSON, but text no UTF-8 database can store: a 400, not a 500."""
        with self.assertRaises(b.BadBody):
            b.parse_object(b'{"hostname": "\\ud800"}')
        self.assertEqual(b.parse_object(b'{"h": "\\ud83d\\ude00"}'), {"h": "\U0001f600"})

    def test_integers_fit_sqlite(self) -> None:
        with self.assertRaises(b.BadBody):
            b.integer({"conn_id": 2**63}, "conn_id")
        self.assertEqual(b.integer({"s": 2**64 - 1}, "s", high=2**64 - 1), 2**64 - 1)

    def test_refusal_lines_limited(self) -> None:
        """A peer refused in a loop: one log line a second, the rest counted in the next."""
        refusals = _RefusalLog()
        bad = b.BadBody("request body is not JSON")
        with capturedLogs() as events:
            for now in (10.0, 10.2, 10.9, 11.0, 11.5):
                refusals.log("login", SimpleNamespace(now=now, ip="192.0.2.1"), bad)  # type: ignore[arg-type]
        self.assertEqual([e["unlogged"] for e in events], [0, 2])
        self.assertEqual({e["reason"] for e in events}, {"request body is not JSON"})

    def test_empty_body_is_an_empty_object(self) -> None:
        self.assertEqual(b.parse_object(b""), {})
        self.assertEqual(b.parse_object(b"  \r\n"), {})

    def test_capped_buffer(self) -> None:
        buf = b._CappedBuffer(10)
        buf.write(b"x" * 8)
        buf.write(b"y" * 8)
        self.assertEqual(buf.getvalue(), b"x" * 8 + b"yy")
        self.assertTrue(buf.overflowed)
        self.assertEqual(buf.seen, 16)

    def test_audit_pruned(self) -> None:
        """Past the row cap the oldest audit rows go, and old nonces with them."""
        conn = sqlite3.connect(":memory:")
        for statement in store.API_TABLES:
            conn.execute(statement)
        for n in range(20):
            fields: dict[str, object] = {"device_id": "1", "conn_id": n, "action": "new"}
            store.record_audit(conn, "conn", fields, f"nonce-{n}", now=float(n))
        store.prune_audit(conn, now=store.NONCE_KEEP_SECONDS + 10.5, keep=5)
        rows = store.recent_audit(conn, "conn", 100, 0)
        self.assertEqual([r.conn_id for r in rows], [19, 18, 17, 16, 15])
        nonces = conn.execute("SELECT COUNT(*) FROM ops_audit_nonce").fetchone()[0]
        self.assertEqual(nonces, 9)


class HostileBodyTests(ApiServerCase):
    @inlineCallbacks
    def test_hostile_bodies_answered_and_server_still_serves(self) -> Any:
        self.start(alice=False)
        yield self.ready
        app = self.client()
        json_h = {"Content-Type": "application/json"}
        cases = [
            (b"x" * (b.MAX_BODY + 1), 413),
            (b"{" + b" " * (2 * b.MAX_REQUEST_BODY) + b"}", 413),
            (b"this is not json", 400),
            (b"\xff\xfe{}", 400),
            (b"[1, 2, 3]", 400),
            (b'"a string"', 400),
            (json.dumps({"username": ["alice"], "password": PASSWORD}).encode(), 400),
            (json.dumps({"username": "alice", "password": 12345678}).encode(), 400),
            (json.dumps({"username": "alice", "deviceInfo": "x"}).encode(), 400),
            (b"[" * 10_000 + b"]" * 10_000, 400),
            (b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}", 400),
        ]
        for raw, status in cases:
            r = yield self.call(app.request, "POST", "/api/login", raw, json_h)
            self.assertEqual(r.status, status, raw[:40])
            self.assertIn("error", r.json())
        r = yield self.call(app.request, "POST", "/api/heartbeat", b'{"id": 5}', json_h)
        self.assertEqual(r.status, 400)
        r = yield self.call(app.login, "alice", PASSWORD)
        self.assertEqual(r.status, 200)
        self.assertIn("access_token", r.json())

    @inlineCallbacks
    def test_hostile_device_posts(self) -> Any:
        """A host with the right uuid but bad fields: 400 each, then a good post works."""
        self.start()
        yield self.register_host("123456789", b"uuid-bytes")
        app = self.client()
        good = {"id": "123456789", "uuid": encode_uuid(b"uuid-bytes")}
        json_h = {"Content-Type": "application/json"}
        cases = [
            ("/api/sysinfo", b'{"id": "123456789", "hostname": "\\ud800"}'),
            ("/api/sysinfo", json.dumps({**good, "hostname": 5}).encode()),
            ("/api/heartbeat", json.dumps({**good, "conns": ["a"]}).encode()),
            ("/api/heartbeat", json.dumps({**good, "conns": list(range(1000))}).encode()),
            ("/api/audit/conn", json.dumps({**good, "conn_id": 2**70}).encode()),
            ("/api/audit/conn", json.dumps({**good, "peer": "someone"}).encode()),
            ("/api/audit/file", json.dumps({**good, "info": "x" * 20_000}).encode()),
        ]
        for path, raw in cases:
            r = yield self.call(app.request, "POST", path, raw, json_h)
            self.assertEqual(r.status, 400, (path, raw[:60]))
            self.assertIn("error", r.json())
        r = yield self.call(app.sysinfo, "123456789", b"uuid-bytes")
        self.assertEqual(r.text, "SYSINFO_UPDATED")

    @inlineCallbacks
    def test_chunked_oversize_body(self) -> Any:
        """No length given: the capped buffer still bounds it, 413."""
        self.start()
        app = self.client()

        def chunks() -> Any:
            for _ in range(40):
                yield b"x" * 65536

        r = yield self.call(
            app.request,
            "POST",
            "/api/login",
            chunks(),
            {"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        )
        self.assertEqual(r.status, 413)
