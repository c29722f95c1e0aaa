"""The console's /lists page over real HTTP on a real server, and the relay obeying it.

A whole server runs in-process on loopback (L{tests.support.console}); an
administrator's cookie-keeping HTTP client edits the block list.  Covers:
both lists shown with their current text; a good list saved (0600, exactly
the text, line ends unified) and then applied by the relay's own reload, so
a connection from the blocked address is refused at accept; wrong lines
named by number with nothing saved and the submitted text kept for
correcting; a save over a file changed on disk since the page was shown
refused; a form without the CSRF field (403), an oversized one (413), an
unknown list and non-UTF-8 text (400) refused without touching the file.
"""

from __future__ import annotations

import socket
import stat
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from litedesk.console.lists import MAX_LIST_FORM_BYTES
from litedesk.relay.service import BLACKLIST_FILE, BLOCKLIST_FILE

from .support.console import ConsoleClient, add_user, csrf_of, start_console

PASSWORD = "correct horse"


def digest_field(body: str, name: str) -> str:
    """The C{base} field of list C{name}'s form in a page."""
    start = body.index(f'id="{name}-form"')
    marker = 'name="base" value="'
    at = body.index(marker, start) + len(marker)
    return body[at : body.index('"', at)]


def refused_from(source: str, port: int) -> bool:
    """Connect from C{source} to the relay; whether the relay closed it at once."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        try:
            return s.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


class ListsPageTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        svc, client = yield start_console(self)
        yield add_user(svc, "root", PASSWORD, admin=True)
        self.svc: Any = svc
        self.client: ConsoleClient = client
        # The data directory the console edits in (its OpsContext).
        self.data_dir: Path = svc.api.factory.resource.console.ctx.data_dir
        r = yield client.call(client.sign_in, "root", PASSWORD)
        self.assertEqual(r.status, 303)

    @inlineCallbacks
    def form(self, name: str = "blocklist") -> Any:
        """A fresh GET of /lists; the fields list C{name}'s form posts."""
        r = yield self.client.call(self.client.get, "/lists")
        self.assertEqual(r.status, 200)
        return r.body, {
            "csrf": csrf_of(r.body),
            "list": name,
            "base": digest_field(r.body, name),
        }

    def post(self, fields: dict[str, str]) -> Any:
        return self.client.call(self.client.post, "/lists", fields)

    @inlineCallbacks
    def test_saved_list_is_applied_by_the_relay(self) -> Any:
        """Saved 0600 as typed; within the relay's reload a blocked address is refused."""
        (self.data_dir / BLACKLIST_FILE).write_text("192.0.2.99 slow\n")
        body, fields = yield self.form()
        self.assertIn("192.0.2.99 slow", body)
        self.assertIn('id="blacklist-form"', body)
        text = "# console test\r\n127.0.0.2 blocked by the test\r\n"
        r = yield self.post({**fields, "text": text})
        self.assertEqual(r.status, 200, r.body)
        self.assertIn("Saved blocklist.txt", r.body)
        path = self.data_dir / BLOCKLIST_FILE
        self.assertEqual(path.read_text(), text.replace("\r\n", "\n"))
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        relay_port = (yield self.svc.relay.when_listening()).getHost().port
        for _ in range(60):
            if "127.0.0.2" in self.svc.relay.relay.table.blocklist:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.svc.relay.relay.table.blocklist, {"127.0.0.2"})
        self.assertTrue((yield deferToThread(refused_from, "127.0.0.2", relay_port)))
        self.assertFalse((yield deferToThread(refused_from, "127.0.0.1", relay_port)))
        self.assertEqual(self.svc.relay.relay.refusals["blocklist"], 1)

    @inlineCallbacks
    def test_wrong_lines_named_and_nothing_saved(self) -> Any:
        """Each wrong line by number and reason; the file stays; the draft stays."""
        path = self.data_dir / BLOCKLIST_FILE
        path.write_text("203.0.113.1\n")
        _, fields = yield self.form()
        text = "203.0.113.1\n10.0.0.0/8\n198.51.100.300\n"
        r = yield self.post({**fields, "text": text})
        self.assertEqual(r.status, 400)
        self.assertIn("2 line(s) of the block list cannot match", r.body)
        self.assertIn("Line 2: '10.0.0.0/8': a network", r.body)
        self.assertIn("Line 3: '198.51.100.300': not an IP address", r.body)
        self.assertIn("198.51.100.300\n</textarea>", r.body)
        self.assertEqual(path.read_text(), "203.0.113.1\n")

    @inlineCallbacks
    def test_save_over_a_changed_file_refused(self) -> Any:
        """The file changed after the page was shown: nothing saved, current text shown."""
        path = self.data_dir / BLOCKLIST_FILE
        _, fields = yield self.form()
        path.write_text("198.51.100.7 added on the server\n")
        r = yield self.post({**fields, "text": "203.0.113.9\n"})
        self.assertEqual(r.status, 400)
        self.assertIn("changed since this page was shown", r.body)
        self.assertIn("198.51.100.7 added on the server", r.body)
        self.assertEqual(path.read_text(), "198.51.100.7 added on the server\n")

    @inlineCallbacks
    def test_bad_forms_refused(self) -> Any:
        """No CSRF field: 403; too large: 413; unknown list, non-UTF-8: 400; no file written."""
        _, fields = yield self.form()
        no_csrf = {k: v for k, v in fields.items() if k != "csrf"}
        r = yield self.post({**no_csrf, "text": "203.0.113.9\n"})
        self.assertEqual(r.status, 403)
        r = yield self.post({**fields, "text": "1" * MAX_LIST_FORM_BYTES})
        self.assertEqual(r.status, 413)
        r = yield self.post({**fields, "list": "../passwd", "text": "203.0.113.9\n"})
        self.assertEqual(r.status, 400)
        self.assertIn("no such list", r.body)
        # urlencode sends bytes values as they are: a form that is not UTF-8.
        raw: Any = {**fields, "text": b"203.0.113.9 \xff\n"}
        r = yield self.post(raw)
        self.assertEqual(r.status, 400)
        self.assertIn("not UTF-8", r.body)
        self.assertFalse((self.data_dir / BLOCKLIST_FILE).exists())
