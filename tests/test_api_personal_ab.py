"""The personal address book on a real server, called the way RustDesk 1.4.9's app calls it.

The app's pull (settings, personal guid, shared profiles, peers page, tags)
and each of its changes (peer add, update, delete; tag add, rename,
recolour, delete), with the texts it shows for refusals; books kept apart
per user and a foreign guid refused; the legacy book copied in once when
the personal book is first opened; the per-book peer limit; hostile bodies
(400 with a reason, never a 500).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from twisted.internet.defer import inlineCallbacks

from litedesk.api import ab_store
from tests.support.api_server import PASSWORD, ApiServerCase


class PersonalBookTests(ApiServerCase):
    @inlineCallbacks
    def signed_in(self, name: str) -> Any:
        app = self.client()
        r = yield self.call(app.login, name, PASSWORD)
        self.assertEqual(r.status, 200)
        r = yield self.call(app.ab_personal)
        self.assertEqual(r.status, 200)
        return app, r.json()["guid"]

    @inlineCallbacks
    def test_pull_and_every_change(self) -> Any:
        self.start(alice=False)
        yield self.ready
        app, guid = yield self.signed_in("alice")
        r = yield self.call(app.ab_settings)
        self.assertEqual(r.json(), {"max_peer_one_ab": ab_store.MAX_PEERS})
        r = yield self.call(app.ab_shared_profiles)
        self.assertEqual(r.json(), {"total": 0, "data": []})

        ok = (200, b"")
        r = yield self.call(app.ab_send, "POST", "tag/add", guid, {"name": "office", "color": 7})
        self.assertEqual((r.status, r.body), ok)
        for peer_id in ("111111111", "222222222"):
            peer = {"id": peer_id, "alias": "", "tags": ["office"], "hash": "h", "username": "u"}
            r = yield self.call(app.ab_send, "POST", "peer/add", guid, peer)
            self.assertEqual((r.status, r.body), ok)
        r = yield self.call(app.ab_send, "POST", "peer/add", guid, {"id": "111111111"})
        self.assertIn("already", r.json()["error"])
        change = {"id": "111111111", "alias": "front desk"}
        r = yield self.call(app.ab_send, "PUT", "peer/update", guid, change)
        self.assertEqual((r.status, r.body), ok)
        rename = {"old": "office", "new": "hq"}
        r = yield self.call(app.ab_send, "PUT", "tag/rename", guid, rename)
        self.assertEqual((r.status, r.body), ok)
        r = yield self.call(app.ab_send, "PUT", "tag/update", guid, {"name": "hq", "color": 9})
        self.assertEqual((r.status, r.body), ok)

        r = yield self.call(app.ab_peers, guid)
        body = r.json()
        self.assertEqual(body["total"], 2)
        first = body["data"][0]
        self.assertEqual(
            (first["id"], first["alias"], first["tags"], first["hash"]),
            ("111111111", "front desk", ["hq"], "h"),
        )
        r = yield self.call(app.ab_tags, guid)
        self.assertEqual(r.json(), [{"name": "hq", "color": 9}])

        r = yield self.call(app.ab_send, "DELETE", "tag", guid, ["hq"])
        self.assertEqual((r.status, r.body), ok)
        r = yield self.call(app.ab_send, "DELETE", "peer", guid, ["222222222"])
        self.assertEqual((r.status, r.body), ok)
        r = yield self.call(app.ab_peers, guid)
        self.assertEqual(r.json()["total"], 1)
        self.assertEqual(r.json()["data"][0]["tags"], [])
        r = yield self.call(app.ab_tags, guid)
        self.assertEqual(r.json(), [])

    @inlineCallbacks
    def test_books_apart_and_foreign_guid_refused(self) -> Any:
        self.start(alice=False, bob=False)
        yield self.ready
        alice, alice_guid = yield self.signed_in("alice")
        bob, bob_guid = yield self.signed_in("bob")
        self.assertNotEqual(alice_guid, bob_guid)
        r = yield self.call(alice.ab_send, "POST", "peer/add", alice_guid, {"id": "123456789"})
        self.assertEqual(r.status, 200)
        r = yield self.call(bob.ab_peers, alice_guid)
        self.assertEqual(r.status, 404)
        r = yield self.call(bob.ab_send, "DELETE", "peer", alice_guid, ["123456789"])
        self.assertEqual(r.status, 404)
        r = yield self.call(bob.ab_peers, bob_guid)
        self.assertEqual(r.json(), {"total": 0, "data": []})
        bob.token = ""
        r = yield self.call(bob.ab_personal)
        self.assertEqual(r.status, 401)

    @inlineCallbacks
    def test_legacy_book_copied_in_once(self) -> Any:
        self.start(alice=False)
        yield self.ready
        app = self.client()
        yield self.call(app.login, "alice", PASSWORD)
        legacy = {
            "tags": ["lab"],
            "peers": [{"id": "333333333", "alias": "scope", "tags": ["lab"]}, {"bad": 1}],
            "tag_colors": json.dumps({"lab": 12345}),
        }
        yield self.call(app.ab_post, legacy)
        r = yield self.call(app.ab_personal)
        guid = r.json()["guid"]
        r = yield self.call(app.ab_peers, guid)
        self.assertEqual(
            [(p["id"], p["alias"]) for p in r.json()["data"]], [("333333333", "scope")]
        )
        r = yield self.call(app.ab_tags, guid)
        self.assertEqual(r.json(), [{"name": "lab", "color": 12345}])
        # Emptied by the user, it stays empty: the copy happens once.
        yield self.call(app.ab_send, "DELETE", "peer", guid, ["333333333"])
        yield self.call(app.ab_personal)
        r = yield self.call(app.ab_peers, guid)
        self.assertEqual(r.json()["total"], 0)

    @inlineCallbacks
    def test_hostile_changes(self) -> Any:
        self.start(alice=False)
        yield self.ready
        app, guid = yield self.signed_in("alice")
        cases = [
            ("POST", "peer/add", {"alias": "no id"}),
            ("POST", "peer/add", {"id": "1", "tags": "office"}),
            ("POST", "peer/add", {"id": "1", "alias": 5}),
            ("POST", "peer/add", {"id": "x" * 65}),
            ("PUT", "peer/update", {"id": "1", "note": "n" * 5000}),
            ("POST", "tag/add", {"name": "", "color": 1}),
            ("POST", "tag/add", {"name": "t", "color": -1}),
            ("PUT", "tag/rename", {"old": "a"}),
            ("DELETE", "peer", {"not": "a list"}),
            ("DELETE", "tag", [1, 2]),
        ]
        for method, path, value in cases:
            r = yield self.call(app.ab_send, method, path, guid, value)
            self.assertEqual(r.status, 400, (path, value))
            self.assertIn("error", r.json())
        r = yield self.call(app.ab_send, "PUT", "peer/update", guid, {"id": "404404404"})
        self.assertEqual(r.json(), {"error": "Peer 404404404 is not in the address book"})
        r = yield self.call(app.ab_send, "PUT", "tag/rename", guid, {"old": "a", "new": "b"})
        self.assertEqual(r.json(), {"error": "There is no tag a"})

    def test_peer_limit(self) -> None:
        """The store refuses the peer past MAX_PEERS with the text the app shows."""
        conn = sqlite3.connect(":memory:")
        for statement in ab_store.AB_TABLES:
            conn.execute(statement)
        for n in range(ab_store.MAX_PEERS):
            ab_store.add_peer(conn, "alice", {"id": str(n), "tags": []})
        with self.assertRaises(ab_store.AbError) as caught:
            ab_store.add_peer(conn, "alice", {"id": "one more", "tags": []})
        self.assertIn(str(ab_store.MAX_PEERS), str(caught.exception))
        ab_store.add_peer(conn, "bob", {"id": "1", "tags": []})
