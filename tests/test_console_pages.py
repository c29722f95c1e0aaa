"""The web console's own pages over real HTTP: dashboard, users, client setup.

A real server in-process (L{tests.support.console}), an administrator
signed in through the real form.  Covers: the dashboard's figures moving
after a real UDP registration and a real relay pair (and "not running" for
the parts --no-relay and --relay-only leave out); every user action of
/users and what the affected user then notices (signing in with a new
password, being signed out, being gone), the refusal to disable or delete
oneself, UserError messages; refusal (403, nothing changed) of every POST
without a CSRF field or with another session's; escaping of a hostile user
name everywhere it is shown; the client setup page's key, config string
(decoded back), command, installer name and QR code.
"""

from __future__ import annotations

import html
import re
import socket
import urllib.parse
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from litedesk.console.bandwidth import BandwidthService
from litedesk.ops import client_config
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.bytescodec import encode_frame

from .rendezvous_harness import TIMEOUT, tcp_client, udp_client
from .support.console import ConsoleClient, add_user, csrf_of, generous_sign_ins, start_console
from .support.polling import until

HOSTILE = "<img src=x onerror=alert(1)>\"&'"


def figure(body: str, key: str) -> str:
    """The value shown in the dashboard figure C{key}."""
    m = re.search(rf'id="{key}"><dt>[^<]*</dt><dd>([^<]*)</dd>', body)
    if m is None:
        raise AssertionError(f"no figure {key}")
    return html.unescape(m.group(1))


def code(body: str, key: str) -> str:
    m = re.search(rf'<code id="{key}">([^<]*)</code>', body)
    if m is None:
        raise AssertionError(f"no {key}")
    return html.unescape(m.group(1))


def open_relay_pair(port: int, uuid: str, payload: bytes) -> list[socket.socket]:
    """Two legs paired on the relay, C{payload} sent each way; left open."""
    frame = encode_frame(
        rz.RendezvousMessage(request_relay=rz.RequestRelay(uuid=uuid)).SerializeToString()
    )
    legs = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(2)]
    for leg in legs:
        leg.sendall(frame)
    for leg in legs:
        leg.sendall(payload)
    for leg in legs:
        got = b""
        while len(got) < len(payload):
            chunk = leg.recv(65536)
            if not chunk:
                raise ConnectionError("relay closed a leg")
            got += chunk
    return legs


class ConsolePageTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def signed_in(self, *extra: str) -> Any:
        svc, client = yield start_console(self, *extra)
        yield add_user(svc, "root", "correct horse", admin=True)
        generous_sign_ins(svc)
        r = yield client.call(client.sign_in, "root", "correct horse")
        self.assertEqual(r.status, 303)
        return svc, client

    @inlineCallbacks
    def test_dashboard_follows_registrations_and_relay_pairs(self) -> Any:
        """A host registering over UDP shows as online and registered; the NAT
        type a viewer reports in its punch request in the NAT table; an open
        relay pair as a session; its bytes in the 24 h total once sampled."""
        svc, client = yield self.signed_in()
        r = yield client.call(client.get, "/")
        self.assertIn("No NAT types reported yet.", r.body)
        self.assertEqual(
            [figure(r.body, k) for k in ("hosts-online", "hosts-registered", "relay-sessions")],
            ["0", "0", "0"],
        )
        self.assertEqual(figure(r.body, "users"), "1")
        udp = udp_client()
        assert udp.transport is not None
        self.addCleanup(udp.transport.stopListening)
        msg = rz.RendezvousMessage(
            register_pk=rz.RegisterPk(id="123456789", uuid=b"u" * 16, pk=bytes([7]) * 32)
        )
        udp.send(msg.SerializeToString(), svc.rendezvous_udp.listening.getHost().port)
        yield udp.recv()
        viewer = yield tcp_client(svc.rendezvous_tcp.listening.getHost().port)
        self.addCleanup(viewer.close)
        viewer.send_msg(
            rz.RendezvousMessage(
                punch_hole_request=rz.PunchHoleRequest(id="123456789", nat_type=rz.SYMMETRIC)
            )
        )
        yield until(lambda: svc.server.counters.get("nat_type_symmetric"))
        relay_port = (yield svc.relay.when_listening()).getHost().port
        legs = yield deferToThread(open_relay_pair, relay_port, "console-pair", b"x" * 5000)
        self.addCleanup(lambda: [leg.close() for leg in legs])
        yield until(lambda: len(svc.relay.relay.table.pairs) == 1)
        (sampling,) = [s for s in svc if isinstance(s, BandwidthService)]
        sampling.tick()
        r = yield client.call(client.get, "/")
        self.assertEqual(figure(r.body, "hosts-online"), "1")
        self.assertEqual(figure(r.body, "hosts-registered"), "1")
        self.assertEqual(figure(r.body, "relay-sessions"), "1")
        self.assertRegex(figure(r.body, "bandwidth-24h"), r"^9\.\d KiB$")  # 10,000 bytes
        self.assertIn('<svg xmlns="http://www.w3.org/2000/svg"', r.body)
        self.assertIn("<tr><td>symmetric</td><td>1</td></tr>", r.body)

    @inlineCallbacks
    def test_dashboard_without_a_relay(self) -> Any:
        """--no-relay: the relay's figures say "not running", the rest still work."""
        _, client = yield self.signed_in("--no-relay")
        r = yield client.call(client.get, "/")
        self.assertEqual(r.status, 200)
        for key in ("relay-sessions", "bandwidth-now", "bandwidth-24h"):
            self.assertEqual(figure(r.body, key), "not running")
        self.assertEqual(figure(r.body, "hosts-registered"), "0")

    @inlineCallbacks
    def test_dashboard_relay_only(self) -> Any:
        """--relay-only: the rendezvous figures say "not running"."""
        _, client = yield self.signed_in("--relay-only")
        r = yield client.call(client.get, "/")
        self.assertEqual(r.status, 200)
        for key in ("hosts-online", "hosts-registered"):
            self.assertEqual(figure(r.body, key), "not running")
        self.assertIn("The rendezvous server is not running.", r.body)
        self.assertEqual(figure(r.body, "relay-sessions"), "0")

    @inlineCallbacks
    def users_post(self, client: ConsoleClient, **form: str) -> Any:
        page = yield client.call(client.get, "/users")
        r = yield client.call(client.post, "/users", {"csrf": csrf_of(page.body), **form})
        return r

    @inlineCallbacks
    def test_user_actions(self) -> Any:
        """Add, new password, sign out everywhere, disable, enable, demote,
        promote, delete: each shows its outcome and the affected user notices it."""
        svc, client = yield self.signed_in()
        r = yield self.users_post(client, action="add", user="carol", password="carol pass 1")
        self.assertEqual(r.status, 200)
        self.assertIn("User carol added.", r.body)
        self.assertIsNotNone(svc.accounts.get("carol"))
        self.assertFalse(svc.accounts.get("carol").is_admin)
        r = yield self.users_post(
            client, action="add", user="dave", password="dave pass 1", admin="1"
        )
        self.assertTrue(svc.accounts.get("dave").is_admin)

        dave = ConsoleClient(client.port)
        self.assertEqual((yield dave.call(dave.sign_in, "dave", "dave pass 1")).status, 303)
        r = yield client.call(client.get, "/users")
        self.assertRegex(
            r.body,
            r'<span class="name">dave</span></td><td>yes</td>'
            r"<td>enabled</td><td>1</td>",
        )

        r = yield self.users_post(client, action="sign-out", user="dave")
        self.assertIn("dave signed out everywhere (1 sign-ins ended).", r.body)
        self.assertEqual((yield dave.call(dave.get, "/")).status, 303)

        r = yield self.users_post(client, action="password", user="dave", password="dave pass 2")
        self.assertIn("New password set for dave", r.body)
        self.assertEqual((yield dave.call(dave.sign_in, "dave", "dave pass 1")).status, 403)
        self.assertEqual((yield dave.call(dave.sign_in, "dave", "dave pass 2")).status, 303)

        r = yield self.users_post(client, action="disable", user="dave")
        self.assertIn("User dave disabled.", r.body)
        self.assertEqual((yield dave.call(dave.get, "/")).status, 303)  # session ended
        r = yield dave.call(dave.sign_in, "dave", "dave pass 2")
        self.assertIn("This account is disabled.", r.body)
        r = yield self.users_post(client, action="enable", user="dave")
        self.assertIn("User dave enabled.", r.body)
        self.assertEqual((yield dave.call(dave.sign_in, "dave", "dave pass 2")).status, 303)

        r = yield self.users_post(client, action="not-admin", user="dave")
        self.assertIn("dave is no longer an administrator.", r.body)
        r = yield dave.call(dave.get, "/")
        self.assertEqual(r.status, 303)  # the console is for administrators only
        r = yield self.users_post(client, action="admin", user="dave")
        self.assertIn("dave is now an administrator.", r.body)
        self.assertEqual((yield dave.call(dave.get, "/")).status, 200)

        r = yield self.users_post(client, action="delete", user="dave")
        self.assertIn("User dave deleted.", r.body)
        self.assertIsNone(svc.accounts.get("dave"))
        self.assertEqual((yield dave.call(dave.get, "/")).status, 303)

    @inlineCallbacks
    def test_user_errors_and_oneself(self) -> Any:
        """UserError texts are shown (400); one's own account cannot be
        disabled, deleted or demoted (409) and stays usable."""
        svc, client = yield self.signed_in()
        r = yield self.users_post(client, action="add", user="erin", password="short")
        self.assertEqual(r.status, 400)
        self.assertIn("Not done: a password has at least 8 characters.", r.body)
        r = yield self.users_post(client, action="add", user="ROOT", password="long enough")
        self.assertIn("Not done: user 'ROOT' exists.", r.body)
        r = yield self.users_post(client, action="disable", user="nobody")
        self.assertIn("Not done: no user", r.body)
        r = yield self.users_post(client, action="frobnicate", user="root")
        self.assertEqual(r.status, 400)
        self.assertIn("unknown action", r.body)
        for action, message in (
            ("disable", "You cannot disable your own account."),
            ("delete", "You cannot delete your own account."),
            ("not-admin", "You cannot take your own administrator rights away."),
        ):
            r = yield self.users_post(client, action=action, user="Root")
            self.assertEqual(r.status, 409)
            self.assertIn(message, r.body)
        self.assertFalse(svc.accounts.get("root").disabled)
        self.assertTrue(svc.accounts.get("root").is_admin)
        self.assertEqual((yield client.call(client.get, "/users")).status, 200)

    @inlineCallbacks
    def test_every_post_needs_this_sessions_csrf_field(self) -> Any:
        """Each form's POST without the field, or with another session's, is a
        403 and changes nothing."""
        svc, client = yield self.signed_in()
        yield add_user(svc, "frank", "frank's password")
        other = ConsoleClient(client.port)
        yield other.call(other.sign_in, "root", "correct horse")
        foreign = csrf_of((yield other.call(other.get, "/users")).body)
        forms = [
            ("/users", {"action": "add", "user": "mallory", "password": "mallory's pass"}),
            ("/users", {"action": "disable", "user": "frank"}),
            ("/users", {"action": "password", "user": "frank", "password": "new password"}),
            ("/users", {"action": "sign-out", "user": "root"}),
            ("/users", {"action": "delete", "user": "frank"}),
            ("/users", {"action": "admin", "user": "frank"}),
            ("/", {"anything": "1"}),
            ("/setup", {"anything": "1"}),
            ("/logout", {}),
        ]
        for path, form in forms:
            for extra in ({}, {"csrf": foreign}, {"csrf": ""}):
                r = yield client.call(client.post, path, {**form, **extra})
                self.assertEqual(r.status, 403, (path, form, extra))
                self.assertIn("Form refused", r.body)
        self.assertIsNone(svc.accounts.get("mallory"))
        self.assertFalse(svc.accounts.get("frank").disabled)
        self.assertFalse(svc.accounts.get("frank").is_admin)
        self.assertEqual((yield client.call(client.get, "/")).status, 200)  # still signed in
        self.assertEqual(svc.accounts.token_count(), 2)
        frank = ConsoleClient(client.port)
        ok = yield frank.call(frank.sign_in, "frank", "frank's password")
        self.assertIn("not an administrator", ok.body)  # password unchanged

    @inlineCallbacks
    def test_hostile_user_name_is_escaped(self) -> Any:
        """A user named like markup shows as text on /users, in notices and in
        the sign-in form's refilled name."""
        svc, client = yield self.signed_in()
        r = yield self.users_post(client, action="add", user=HOSTILE, password="hostile pass")
        self.assertIsNotNone(svc.accounts.get(HOSTILE))
        page = yield client.call(client.get, "/users")
        stranger = ConsoleClient(client.port)
        refused = yield stranger.call(stranger.sign_in, HOSTILE, "wrong password")
        for body in (r.body, page.body, refused.body):
            self.assertNotIn("<img src=x", body)
            self.assertIn("&lt;img src=x onerror=alert(1)&gt;", body)
        self.assertIn(f'value="{html.escape(HOSTILE)}"'.replace("&#x27;", "'"), page.body)

    @inlineCallbacks
    def test_client_setup_page(self) -> Any:
        """The key, the config string (which decodes to the server's settings),
        the command, the installer name and a QR code image."""
        svc, client = yield self.signed_in("--key", "-", "--public-host", "rd.example.org")
        r = yield client.call(client.get, "/setup")
        self.assertEqual(r.status, 200)
        key = svc.key.public_key
        self.assertTrue(key)
        self.assertEqual(code(r.body, "key"), key)
        string = code(r.body, "config-string")
        decoded = client_config.decode(string)
        self.assertEqual(decoded.key, key)
        self.assertTrue(decoded.host.startswith("rd.example.org"), decoded.host)
        self.assertEqual(code(r.body, "config-command"), f"rustdesk --config {string}")
        self.assertEqual(code(r.body, "installer-name"), decoded.installer_name())
        m = re.search(r'<img src="data:image/svg\+xml;charset=utf-8,([^"]+)"', r.body)
        assert m is not None
        svg = urllib.parse.unquote(html.unescape(m.group(1)))
        self.assertIn("<svg xmlns=", svg)
        self.assertEqual(svg.count("<path"), decoded.qr_svg().count("<path"))

    @inlineCallbacks
    def test_client_setup_with_a_licence_string(self) -> Any:
        """--key LICENCE (no signing): the licence is the key clients type,
        shown as text, and the installer name falls back to the encoded form."""
        _, client = yield self.signed_in("--key", "lic/<b>&x")
        r = yield client.call(client.get, "/setup")
        self.assertEqual(r.status, 200)
        self.assertNotIn("<b>", r.body)
        self.assertEqual(code(r.body, "key"), "lic/<b>&x")
        decoded = client_config.decode(code(r.body, "config-string"))
        self.assertEqual(decoded.key, "lic/<b>&x")
        self.assertTrue(code(r.body, "installer-name").startswith("rustdesk-licensed-"))
