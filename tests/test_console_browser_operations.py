"""The console's operations pages in a real browser against a real server (issue 16, Tests).

(tests/test_console_browser.py covers the framework's pages: dashboard,
users, client setup.)

Debian's headless chromium, driven by selenium (L{tests.support.browser}),
browses a whole server running in this process on loopback ports
(L{tests.support.console}): a host registered with a real UDP RegisterPk,
a relay session made of two real TCP legs that sent RequestRelay with the
same uuid and stay open while the page is read.  Covers, as an
administrator would see it: signing in through the form; the session
cookie as the browser holds it (HttpOnly, SameSite=Strict, not Secure on
plain HTTP, invisible to page scripts); the host online on /hosts; the
live relay session on /sessions with its bytes and never its uuid; adding
127.0.0.2 to the block list on /lists, after which the relay refuses a
connection from 127.0.0.2 and still accepts one from 127.0.0.1; a form
whose CSRF field was removed refused with 403 and nothing saved; signing
out, after which the pages send the browser back to /login.  A screenshot
and the page source are kept when a script fails (the support does it).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.relay.service import BLOCKLIST_FILE
from litedesk.wire.bytescodec import encode_frame

from .rendezvous_harness import TIMEOUT, udp_client, with_timeout
from .support import browser
from .support.browser import BROWSER_TEST_TIMEOUT
from .support.console import add_user, start_console
from .support.skips import cannot_run

PASSWORD = "correct horse battery"
HOST_ID = "314159265"
PAIR_UUID = "browser-test-pairing-secret"
PAYLOAD = b"x" * 3000


def open_pair(port: int) -> tuple[socket.socket, socket.socket]:
    """Two relay legs paired by L{PAIR_UUID}, each having sent L{PAYLOAD} to
    the other; left open (the caller closes them)."""
    frame = encode_frame(
        rz.RendezvousMessage(request_relay=rz.RequestRelay(uuid=PAIR_UUID)).SerializeToString()
    )
    legs = []
    for _ in range(2):
        leg = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        leg.sendall(frame + PAYLOAD)
        legs.append(leg)
    for leg in legs:
        got = b""
        while len(got) < len(PAYLOAD):
            chunk = leg.recv(65536)
            if not chunk:
                raise ConnectionError("the relay closed a leg")
            got += chunk
    return legs[0], legs[1]


def accepted_from(source: str, port: int) -> bool:
    """Whether a connection from C{source} to the relay stays open for a moment
    (a refused one is closed by the relay at accept)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        try:
            return s.recv(1) != b""
        except TimeoutError:
            return True  # nothing to read and not closed: accepted
        except ConnectionResetError:
            return False
    except ConnectionRefusedError:
        return False
    finally:
        s.close()


class ConsoleInBrowserTests(TestCase):
    timeout = BROWSER_TEST_TIMEOUT

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        reason = browser.missing_browser()
        if reason:
            cannot_run(reason)
        svc, _ = yield start_console(self)
        yield add_user(svc, "admin", PASSWORD, admin=True)
        self.svc: Any = svc
        self.base = f"http://127.0.0.1:{svc.api.listening.getHost().port}"
        self.relay_port: int = (yield svc.relay.when_listening()).getHost().port
        self.data_dir: Path = svc.api.factory.resource.console.ctx.data_dir
        yield self.register_host()

    @inlineCallbacks
    def register_host(self) -> Any:
        """L{HOST_ID} registers as a RustDesk host does: UDP RegisterPk."""
        client = udp_client()
        assert client.transport is not None
        self.addCleanup(client.transport.stopListening)
        msg = rz.RendezvousMessage(
            register_pk=rz.RegisterPk(id=HOST_ID, uuid=b"browser-host-uuid", pk=bytes([7]) * 32)
        )
        client.send(msg.SerializeToString(), self.svc.rendezvous_udp.listening.getHost().port)
        data, _ = yield with_timeout(client.recv())
        reply = rz.RendezvousMessage()
        reply.ParseFromString(data)
        self.assertEqual(reply.register_pk_response.result, rz.RegisterPkResponse.OK)

    @inlineCallbacks
    def relay_session(self) -> Any:
        """A live relay pair, closed at cleanup."""
        legs = yield deferToThread(open_pair, self.relay_port)
        for leg in legs:
            self.addCleanup(leg.close)

    @inlineCallbacks
    def test_sign_in_see_host_and_session_block_an_address_sign_out(self) -> Any:
        """The administrator's round: every step as the browser shows it."""
        yield self.relay_session()
        base = self.base

        def look(driver: WebDriver) -> dict[str, Any]:
            driver.get(f"{base}/hosts")  # signed out: sent to the sign-in form
            browser.fill(driver, {"name": "admin", "password": PASSWORD}, "form.signin")
            browser.click(driver, "#sign-in")
            browser.wait_for(driver, "header .who")
            seen: dict[str, Any] = {
                "after_sign_in": driver.current_url,
                "cookies": browser.cookies(driver),
                "script_sees": driver.execute_script("return document.cookie"),
            }
            driver.get(f"{base}/hosts")
            row = browser.wait_for(driver, "table.hosts tr.host")
            seen["host_row"] = row.text
            driver.get(f"{base}/sessions")
            seen["live_count"] = browser.wait_for(driver, "#live-count").text
            seen["pair_row"] = browser.wait_for(driver, "table.live tr.pair").text
            seen["sessions_source"] = driver.page_source
            return seen

        seen = yield browser.browse(self, look)
        self.assertEqual(seen["after_sign_in"], f"{base}/")
        session = seen["cookies"]["litedesk_console"]
        self.assertTrue(session.http_only, session)
        self.assertEqual(session.same_site, "Strict")
        self.assertFalse(session.secure, session)
        self.assertNotIn("litedesk_console", seen["script_sees"])
        self.assertIn(HOST_ID, seen["host_row"])
        self.assertIn("online", seen["host_row"])
        self.assertEqual(seen["live_count"], "1 active.")
        self.assertIn("127.0.0.1", seen["pair_row"])
        self.assertIn("2.9 KiB", seen["pair_row"])
        self.assertNotIn(PAIR_UUID, seen["sessions_source"])

        self.assertTrue((yield deferToThread(accepted_from, "127.0.0.2", self.relay_port)))

        def block(driver: WebDriver) -> dict[str, Any]:
            driver.get(f"{base}/lists")
            area = browser.wait_for(driver, "#blocklist-text")
            area.clear()
            area.send_keys("127.0.0.2 blocked from the browser test\n")
            browser.click(driver, "#blocklist-form button[type=submit]")
            notice = browser.wait_for(driver, "p.notice.ok")
            return {"notice": notice.text, "status": browser.page_status(driver)}

        saved = yield browser.browse(self, block)
        self.assertEqual(saved["status"], 200)
        self.assertIn("Saved blocklist.txt", saved["notice"])
        table = self.svc.relay.relay.table
        for _ in range(60):  # the relay re-reads its lists every second
            if "127.0.0.2" in table.blocklist:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(table.blocklist, {"127.0.0.2"})
        refused_before = self.svc.relay.relay.refusals["blocklist"]
        self.assertFalse((yield deferToThread(accepted_from, "127.0.0.2", self.relay_port)))
        self.assertEqual(self.svc.relay.relay.refusals["blocklist"], refused_before + 1)
        self.assertTrue((yield deferToThread(accepted_from, "127.0.0.1", self.relay_port)))

        def forged_then_sign_out(driver: WebDriver) -> dict[str, Any]:
            driver.get(f"{base}/lists")
            area = browser.wait_for(driver, "#blocklist-text")
            area.clear()
            area.send_keys("198.51.100.1\n")
            # What a form posted from elsewhere lacks: this session's CSRF field.
            field = driver.find_element(By.CSS_SELECTOR, '#blocklist-form input[name="csrf"]')
            driver.execute_script("arguments[0].remove()", field)
            browser.click(driver, "#blocklist-form button[type=submit]")
            browser.wait_for(driver, "main p")
            out: dict[str, Any] = {"forged_status": browser.page_status(driver)}
            driver.get(f"{base}/lists")
            browser.click(driver, "#sign-out")
            browser.wait_for(driver, "form.signin")
            out["after_sign_out"] = driver.current_url
            out["cookies_after"] = list(browser.cookies(driver))
            driver.get(f"{base}/sessions")
            browser.wait_for(driver, "form.signin")
            out["sessions_after"] = driver.current_url
            return out

        after = yield browser.browse(self, forged_then_sign_out)
        self.assertEqual(after["forged_status"], 403)
        self.assertEqual(
            (self.data_dir / BLOCKLIST_FILE).read_text(),
            "127.0.0.2 blocked from the browser test\n",
        )
        self.assertEqual(after["after_sign_out"], f"{base}/login")
        self.assertNotIn("litedesk_console", after["cookies_after"])
        self.assertEqual(after["sessions_after"], f"{base}/login")
