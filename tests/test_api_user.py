"""What a signed-in RustDesk app reads and writes on a real server's C{/api}.

The legacy address book round trip (C{/api/ab}, which apps before 1.2.4
use, and newer ones when a server offers no personal book; an empty book
before the first push; one book per user),
the paged lists of the "Accessible devices" tab (users: oneself, or everyone
for an admin, paged as the app pages), and 401 for every one of these
without a live token (the app then signs out).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import inlineCallbacks

from tests.support.api_server import PASSWORD, ApiServerCase

BOOK = {
    "tags": ["office"],
    "peers": [{"id": "123456789", "alias": "front desk", "tags": ["office"]}],
    "tag_colors": json.dumps({"office": 4288585374}),
}


class AddressBookTests(ApiServerCase):
    @inlineCallbacks
    def test_legacy_book_round_trip_per_user(self) -> Any:
        self.start(alice=False, bob=False)
        yield self.ready
        alice, bob = self.client(), self.client()
        yield self.call(alice.login, "alice", PASSWORD)
        yield self.call(bob.login, "bob", PASSWORD)

        r = yield self.call(alice.ab_get)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["licensed_devices"], 0)
        self.assertEqual(
            json.loads(r.json()["data"]), {"tags": [], "peers": [], "tag_colors": "{}"}
        )

        r = yield self.call(alice.ab_post, BOOK)
        self.assertEqual((r.status, r.body), (200, b""))  # what pushAb counts as success
        r = yield self.call(alice.ab_get)
        self.assertEqual(json.loads(r.json()["data"]), BOOK)
        r = yield self.call(bob.ab_get)
        self.assertEqual(json.loads(r.json()["data"])["peers"], [])

    @inlineCallbacks
    def test_book_must_be_a_json_object_string(self) -> Any:
        self.start(alice=False)
        yield self.ready
        app = self.client()
        yield self.call(app.login, "alice", PASSWORD)
        for data in ["not json", "[1, 2]", 5, None]:
            r = yield self.call(app.post_json, "/api/ab", {"data": data}, auth=True)
            self.assertEqual(r.status, 400, data)
            self.assertIn("error", r.json())
        r = yield self.call(app.ab_get)
        self.assertEqual(json.loads(r.json()["data"])["peers"], [])

    @inlineCallbacks
    def test_everything_needs_a_live_token(self) -> Any:
        self.start()
        app = self.client()
        for path in ["/api/ab", "/api/users", "/api/peers", "/api/device-group/accessible"]:
            r = yield self.call(app.page, path)
            self.assertEqual(r.status, 401, path)
        r = yield self.call(app.ab_post, BOOK)
        self.assertEqual(r.status, 401)


class ListTests(ApiServerCase):
    @inlineCallbacks
    def test_users_oneself_or_everyone_for_an_admin(self) -> Any:
        self.start(alice=False, bob=False, carol=False)
        yield self.ready
        app = self.client()
        yield self.call(app.login, "alice", PASSWORD)
        r = yield self.call(app.page, "/api/users")
        self.assertEqual(r.json()["total"], 1)
        self.assertEqual([u["name"] for u in r.json()["data"]], ["alice"])

        admin = self.client()
        yield self.call(admin.login, "root", PASSWORD)
        names = []
        for current in (1, 2, 3):
            r = yield self.call(admin.page, "/api/users", current, 2)
            self.assertEqual(r.json()["total"], 4)
            names += [u["name"] for u in r.json()["data"]]
        self.assertEqual(names, ["alice", "bob", "carol", "root"])

    @inlineCallbacks
    def test_peers_and_device_groups_empty(self) -> Any:
        self.start()
        yield self.ready
        app = self.client()
        yield self.call(app.login, "root", PASSWORD)
        for path in ["/api/peers", "/api/device-group/accessible"]:
            r = yield self.call(app.page, path)
            self.assertEqual((r.status, r.json()), (200, {"total": 0, "data": []}), path)
