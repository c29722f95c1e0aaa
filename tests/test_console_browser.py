"""The web console in a real browser: Debian's headless chromium (selenium).

A real server in-process (L{tests.support.console}) and the browser of
L{tests.support.browser} (screenshot and page source kept when a script
fails).  Covers what only a browser shows: being sent to the sign-in form,
signing in through it, the dashboard counting a host that registered over
real UDP as online, the cookies as the browser holds them (HttpOnly, so no
page script can read them; SameSite=Strict; not Secure on plain HTTP), the
stylesheet applied under the Content-Security-Policy, the QR code image
decoded by the browser, adding a user through the form, and signing out
(the cookie gone, the token revoked on the server).
"""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from litedesk.proto import rendezvous_pb2 as rz

from .rendezvous_harness import udp_client
from .support import browser
from .support.browser import BROWSER_TEST_TIMEOUT
from .support.console import add_user, start_console
from .support.skips import cannot_run


class ConsoleBrowserTests(TestCase):
    timeout = BROWSER_TEST_TIMEOUT

    def setUp(self) -> None:
        reason = browser.missing_browser()
        if reason:
            cannot_run(reason)

    @inlineCallbacks
    def test_sign_in_see_a_host_add_a_user_sign_out(self) -> Any:
        """The whole round an administrator makes, in chromium."""
        svc, client = yield start_console(self, "--key", "-")
        yield add_user(svc, "root", "correct horse", admin=True)
        udp = udp_client()
        assert udp.transport is not None
        self.addCleanup(udp.transport.stopListening)
        msg = rz.RendezvousMessage(
            register_pk=rz.RegisterPk(id="987654321", uuid=b"v" * 16, pk=bytes([9]) * 32)
        )
        udp.send(msg.SerializeToString(), svc.rendezvous_udp.listening.getHost().port)
        yield udp.recv()
        base = f"http://127.0.0.1:{client.port}"

        def sign_in(driver: WebDriver) -> dict[str, Any]:
            driver.get(f"{base}/")
            browser.wait_for(driver, "form.signin")
            sent_to = driver.current_url
            browser.fill(driver, {"name": "root", "password": "correct horse"}, "form.signin")
            browser.click(driver, "#sign-in")
            heading = browser.wait_for(driver, "main h1")
            header = driver.find_element(By.CSS_SELECTOR, "header.top")
            return {
                "sent_to": sent_to,
                "heading": heading.text,
                "url": driver.current_url,
                "online": driver.find_element(By.CSS_SELECTOR, "#hosts-online dd").text,
                "registered": driver.find_element(By.CSS_SELECTOR, "#hosts-registered dd").text,
                "cookies": browser.cookies(driver),
                "script_sees": driver.execute_script("return document.cookie"),
                "header_bg": header.value_of_css_property("background-color"),
            }

        seen = yield browser.browse(self, sign_in)
        self.assertEqual(seen["sent_to"], f"{base}/login")
        self.assertEqual((seen["heading"], seen["url"]), ("Dashboard", f"{base}/"))
        self.assertEqual((seen["online"], seen["registered"]), ("1", "1"))
        session = seen["cookies"]["litedesk_console"]
        self.assertTrue(session.http_only)
        self.assertEqual(session.same_site, "Strict")
        self.assertFalse(session.secure)
        self.assertNotIn("litedesk_login_csrf", seen["cookies"])  # dropped once signed in
        self.assertEqual(seen["script_sees"], "")
        # The stylesheet loaded and applied despite the strict CSP.
        self.assertEqual(seen["header_bg"], "rgba(24, 32, 46, 1)")

        def setup_and_users(driver: WebDriver) -> dict[str, Any]:
            driver.get(f"{base}/setup")
            qr = browser.wait_for(driver, "#config-qr")
            qr_width = driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", qr
            )
            driver.get(f"{base}/users")
            browser.fill(
                driver, {"user": "carol", "password": "carol's password"}, "#add-user-form"
            )
            browser.click(driver, "#new-admin")
            browser.click(driver, "#add-user")
            notice = browser.wait_for(driver, ".notice.ok")
            names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#users .name")]
            return {"qr_width": qr_width, "notice": notice.text, "names": names}

        seen = yield browser.browse(self, setup_and_users)
        self.assertGreater(seen["qr_width"], 100)  # the SVG data URI decoded as an image
        self.assertEqual(seen["notice"], "User carol added.")
        self.assertEqual(seen["names"], ["carol", "root"])
        self.assertTrue(svc.accounts.get("carol").is_admin)

        def sign_out(driver: WebDriver) -> dict[str, Any]:
            browser.click(driver, "#sign-out")
            browser.wait_for(driver, "form.signin")
            url = driver.current_url
            driver.get(f"{base}/users")
            browser.wait_for(driver, "form.signin")
            return {"url": url, "after": driver.current_url, "cookies": browser.cookies(driver)}

        seen = yield browser.browse(self, sign_out)
        self.assertEqual((seen["url"], seen["after"]), (f"{base}/login", f"{base}/login"))
        self.assertNotIn("litedesk_console", seen["cookies"])
        self.assertEqual(svc.accounts.token_count(), 0)
