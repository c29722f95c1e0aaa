"""What hosts post without a token: heartbeat, sysinfo and audit, on a real server.

A host registers with a real UDP C{RegisterPk} (id and raw uuid bytes); the
app's sync loop and audit posts (L{tests.support.rustdesk_api_client}) then
send C{base64(uuid)}.  Covers: the heartbeat asking for sysinfo until one
is stored, sysinfo stored in the ops database and read back with
L{litedesk.api.store.sysinfo_for}, the wrong uuid and an unregistered id
(heartbeat C{{}}, sysinfo C{UUID_MISMATCH} / C{ID_NOT_FOUND}, audit 403),
disconnect requests carried by the next heartbeat, audit records
deduplicated on nonce and a connection's posts merged into one row, the
audit note, and L{litedesk.api.devices.Devices} and the uuid decoding on
their own (hypothesis).
"""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from litedesk.api import store
from litedesk.api.devices import MAX_PENDING_DISCONNECTS, STALE_SECONDS, Devices, decode_uuid
from litedesk.rendezvous.registry import Peer
from tests.support.api_server import PASSWORD, ApiServerCase

HOST = "123456789"
UUID = b"\x01machine-uuid-\xff\x00"


class HeartbeatTests(ApiServerCase):
    @inlineCallbacks
    def test_heartbeat_asks_for_sysinfo_until_it_is_stored(self) -> Any:
        self.start()
        yield self.register_host(HOST, UUID)
        app = self.client()
        r = yield self.call(app.heartbeat, HOST, UUID)
        self.assertEqual((r.status, r.json()), (200, {"sysinfo": 1}))
        r = yield self.call(app.sysinfo, HOST, UUID)
        self.assertEqual((r.status, r.text), (200, "SYSINFO_UPDATED"))
        r = yield self.call(app.heartbeat, HOST, UUID, conns=[5, 6])
        self.assertEqual(r.json(), {})
        live = self.devices().live(HOST)
        self.assertEqual((live.conns, live.ver), ((5, 6), 1004009))
        found = self.read_db(store.sysinfo_for, [HOST, "nobody"])
        self.assertEqual(list(found), [HOST])
        info = found[HOST]
        self.assertEqual(
            (info.hostname, info.username, info.os, info.version, info.memory),
            ("test-host", "alice", "linux / Debian GNU/Linux 13", "1.4.9", "16GB"),
        )
        self.assertIn('"cpu":"Test CPU', info.info)

    @inlineCallbacks
    def test_wrong_uuid_and_unknown_id_are_refused(self) -> Any:
        self.start()
        yield self.register_host(HOST, UUID)
        app = self.client()
        r = yield self.call(app.heartbeat, HOST, b"someone else")
        self.assertEqual((r.status, r.json()), (200, {}))
        r = yield self.call(app.sysinfo, HOST, b"someone else", hostname="evil")
        self.assertEqual(r.text, "UUID_MISMATCH")
        r = yield self.call(app.sysinfo, "555555555", UUID)
        self.assertEqual(r.text, "ID_NOT_FOUND")
        r = yield self.call(app.heartbeat, "555555555", UUID)
        self.assertEqual(r.json(), {})
        self.assertIsNone(self.devices().live(HOST))
        found = self.read_db(store.sysinfo_for, [HOST, "555555555"])
        self.assertEqual(found, {})
        r = yield self.call(app.audit_conn, HOST, b"someone else", 1, {"action": "new", "ip": "x"})
        self.assertEqual(r.status, 403)

    @inlineCallbacks
    def test_disconnect_rides_the_next_heartbeat(self) -> Any:
        self.start()
        yield self.register_host(HOST, UUID)
        app = self.client()
        devices = self.devices()
        self.assertFalse(devices.request_disconnect(HOST, 5))  # no heartbeat yet
        yield self.call(app.sysinfo, HOST, UUID)
        yield self.call(app.heartbeat, HOST, UUID, conns=[5])
        self.assertTrue(devices.request_disconnect(HOST, 5))
        r = yield self.call(app.heartbeat, HOST, UUID, conns=[5])
        self.assertEqual(r.json(), {"disconnect": [5]})
        r = yield self.call(app.heartbeat, HOST, UUID, conns=[])
        self.assertEqual(r.json(), {})


class AuditTests(ApiServerCase):
    @inlineCallbacks
    def test_connection_posts_merge_and_retries_dedupe(self) -> Any:
        """new, then peer/type, then close: one row; a retried post changes nothing."""
        self.start()
        yield self.register_host(HOST, UUID)
        app = self.client()
        new = {"action": "new", "ip": "192.0.2.7"}
        r = yield self.call(app.audit_conn, HOST, UUID, 3, new, "nonce-1")
        self.assertEqual((r.status, r.body), (200, b""))
        r = yield self.call(app.audit_conn, HOST, UUID, 3, new, "nonce-1")
        self.assertEqual((r.status, r.body), (200, b""))
        authed = {"peer": ["987654321", "bob"], "type": 0, "primary_auth": 1}
        yield self.call(app.audit_conn, HOST, UUID, 3, authed, "nonce-2")
        active = self.read_db(store.active_connections)
        self.assertEqual(len(active), 1)
        row = active[0]
        self.assertEqual(
            (row.device_id, row.conn_id, row.ip, row.peer_id, row.peer_name),
            (HOST, 3, "192.0.2.7", "987654321", "bob"),
        )
        yield self.call(app.audit_conn, HOST, UUID, 3, {"action": "close"}, "nonce-3")
        self.assertEqual(self.read_db(store.active_connections), [])
        records = self.read_db(store.recent_audit, "conn", 10, 0)
        self.assertEqual(len(records), 1)
        self.assertIsNotNone(records[0].closed_at)

        # A note from the signed-in viewer, by the record's guid.
        yield self.ready
        yield self.call(app.login, "root", PASSWORD)
        r = yield self.call(app.audit_note, records[0].guid, "support call #4")
        self.assertEqual(r.status, 200)
        records = self.read_db(store.recent_audit, "conn", 10, 0)
        self.assertEqual(records[0].note, "support call #4")
        r = yield self.call(app.audit_note, "no-such-guid", "x")
        self.assertEqual(r.status, 404)

    @inlineCallbacks
    def test_file_and_alarm_records(self) -> Any:
        self.start()
        yield self.register_host(HOST, UUID)
        app = self.client()
        r = yield self.call(app.audit_file, HOST, UUID, 4, "file-nonce")
        self.assertEqual((r.status, r.body), (200, b""))
        yield self.call(app.audit_file, HOST, UUID, 4, "file-nonce")
        r = yield self.call(app.audit_alarm, HOST, UUID, 4)
        self.assertEqual((r.status, r.body), (200, b""))
        files = self.read_db(store.recent_audit, "file", 10, 0)
        self.assertEqual(len(files), 1)
        self.assertEqual((files[0].path, files[0].is_file), ("/home/alice/report.pdf", True))
        self.assertIn('"num": 1', files[0].info)
        alarms = self.read_db(store.recent_audit, "alarm", 10, 0)
        self.assertEqual(len(alarms), 1)


class DevicesStateTests(SynchronousTestCase):
    def registry(self) -> dict[str, Peer]:
        return {HOST: Peer(HOST, uuid=UUID), "empty": Peer("empty")}

    def test_check(self) -> None:
        devices = Devices(self.registry())
        good = base64.b64encode(UUID).decode()
        self.assertEqual(devices.check(HOST, good), "ok")
        self.assertEqual(devices.check(HOST, good.rstrip("=")), "ok")
        self.assertEqual(devices.check(HOST, base64.b64encode(b"other").decode()), "uuid_mismatch")
        self.assertEqual(devices.check(HOST, "not base64!"), "uuid_mismatch")
        self.assertEqual(devices.check("empty", ""), "uuid_mismatch")
        self.assertEqual(devices.check("nobody", good), "unknown_id")
        self.assertEqual(Devices(None).check(HOST, good), "unknown_id")

    def test_stale_devices_forgotten(self) -> None:
        devices = Devices(self.registry())
        devices.heartbeat(HOST, 1, [], now=0.0)
        devices.heartbeat("other", 1, [], now=STALE_SECONDS / 2)
        self.assertIsNotNone(devices.live(HOST, now=STALE_SECONDS - 1))
        self.assertIsNone(devices.live(HOST, now=STALE_SECONDS))
        devices.heartbeat("other", 1, [], now=STALE_SECONDS + 1)
        self.assertIsNone(devices.live(HOST))
        self.assertEqual(len(devices), 1)

    def test_pending_disconnects_bounded(self) -> None:
        devices = Devices(self.registry())
        devices.sysinfo_stored(HOST, 0.0)
        for conn_id in range(MAX_PENDING_DISCONNECTS):
            self.assertTrue(devices.request_disconnect(HOST, conn_id))
        self.assertFalse(devices.request_disconnect(HOST, 10_000))
        reply = devices.heartbeat(HOST, 1, [], now=1.0)
        self.assertEqual(reply, {"disconnect": list(range(MAX_PENDING_DISCONNECTS))})

    @given(st.binary(max_size=64))
    def test_uuid_round_trip(self, raw: bytes) -> None:
        """Whatever bytes a host registers, the app's base64 of them decodes back."""
        self.assertEqual(decode_uuid(base64.b64encode(raw).decode()) or b"", raw)

    @given(st.text(max_size=300))
    def test_decode_uuid_any_text(self, text: str) -> None:
        """Any text from a peer decodes to bytes or None, never raises."""
        out = decode_uuid(text)
        self.assertTrue(out is None or isinstance(out, bytes))
