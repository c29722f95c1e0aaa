"""The web console's parts on their own: sampler, forms, CSRF keys, failures.

Covers: the bandwidth sampler (rate of the last interval, per-minute totals,
the 24 h window, a relay table that starts over, the fixed bound on what it
keeps, with hypothesis over any sample sequence); form fields and CSRF
checks against any bytes a peer can send (hypothesis: a text, a
L{FormError} or a refusal, never another exception); arbitrary form bodies
and cookies POSTed over real HTTP to /login and /users (hypothesis, in a
thread while the reactor serves) answered with a page, never a failure;
a page that raises answered with a logged 500 page that still carries the
security headers; the units the dashboard shows.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site
from twisted.web.template import Flattenable

from litedesk.console.bandwidth import MINUTES_KEPT, BandwidthSampler
from litedesk.console.page import MAX_FIELD_CHARS, Form, FormError, Page, PageResource, View
from litedesk.console.security import CSP, CsrfKeys
from litedesk.console.widgets import human_bytes, human_duration

from .support.console import ConsoleClient, add_user, csrf_of, generous_sign_ins, start_console

reactor: Any = _reactor
# What can stand in a Cookie header (latin-1, no separators).
_COOKIE = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters=';,"\\\x7f'),
    max_size=40,
)


class BandwidthSamplerTests(SynchronousTestCase):
    def test_rate_and_totals(self) -> None:
        """The rate is the last interval's; totals add up per minute."""
        s = BandwidthSampler()
        s.sample(600.0, 1000)  # the first sample is only a baseline
        self.assertEqual((s.rate, s.total(600.0)), (0.0, 0))
        s.sample(610.0, 11000)
        self.assertEqual(s.rate, 1000.0)
        s.sample(620.0, 11000)
        self.assertEqual(s.rate, 0.0)
        s.sample(670.0, 61000)
        self.assertEqual(s.total(670.0), 60000)
        self.assertEqual(s.total(670.0, seconds=60), 50000)  # this minute only

    def test_the_window_is_24_hours(self) -> None:
        """Bytes older than 24 h leave the total and the hourly chart."""
        s = BandwidthSampler()
        s.sample(0.0, 0)
        s.sample(60.0, 5000)
        day = 24 * 3600.0
        s.sample(day - 60, 5000)
        self.assertEqual(s.total(day - 60), 5000)
        self.assertEqual(s.hourly(day - 60)[0], 5000)
        s.sample(day + 120, 6000)
        self.assertEqual(s.total(day + 120), 1000)
        self.assertEqual(sum(s.hourly(day + 120)), 1000)

    def test_a_new_relay_table_starts_over(self) -> None:
        """A total smaller than the last counts from zero, never negative."""
        s = BandwidthSampler()
        s.sample(0.0, 10_000)
        s.sample(10.0, 300)
        self.assertEqual((s.rate, s.total(10.0)), (30.0, 300))

    @given(
        st.lists(
            st.tuples(st.floats(0, 10 * 86400), st.integers(0, 2**62)), min_size=1, max_size=300
        )
    )
    def test_any_samples_stay_bounded(self, samples: list[tuple[float, int]]) -> None:
        """Whatever the sequence: at most 24 h of minutes kept, nothing negative."""
        s = BandwidthSampler()
        for now, total in sorted(samples):
            s.sample(now, total)
        end = max(now for now, _ in samples)
        self.assertLessEqual(len(s._minutes), MINUTES_KEPT)
        self.assertGreaterEqual(s.rate, 0.0)
        hours = s.hourly(end)
        self.assertEqual(len(hours), 24)
        self.assertTrue(all(h >= 0 for h in hours))
        self.assertEqual(sum(hours), s.total(end))


class FormAndCsrfTests(SynchronousTestCase):
    @given(st.dictionaries(st.binary(max_size=20), st.lists(st.binary(max_size=5000), max_size=3)))
    def test_form_fields_from_any_bytes(self, args: dict[bytes, list[bytes]]) -> None:
        """A field is text within the bound, or a FormError; nothing else."""
        form = Form(args)
        for name in ("csrf", "user", "password", "action"):
            try:
                value = form.get(name)
            except FormError as e:
                self.assertIn(name, str(e))
            else:
                self.assertLessEqual(len(value), MAX_FIELD_CHARS)
                self.assertEqual(value.encode("utf-8"), args[name.encode()][0])

    @given(st.text(max_size=80), st.text(max_size=80))
    def test_csrf_checks_refuse_anything_else(self, token: str, field: str) -> None:
        """Only the HMAC of this token passes; any other text (non-ASCII too) is refused."""
        keys = CsrfKeys(b"k" * 32)
        self.assertTrue(keys.session_ok(token, keys.for_session(token)) or not token)
        self.assertEqual(keys.session_ok(token, field), field == keys.for_session(token))
        self.assertEqual(
            keys.login_ok(token, field), bool(token) and field == keys.for_login(token)
        )
        self.assertFalse(CsrfKeys(b"x" * 32).session_ok(token, keys.for_session(token)))
        # The session and sign-in forms' fields are not interchangeable.
        self.assertFalse(keys.session_ok(token, keys.for_login(token)))

    def test_units(self) -> None:
        self.assertEqual(
            [human_bytes(n) for n in (0, 1023, 1536, 5 * 2**30, 2**60)],
            ["0 B", "1023 B", "1.5 KiB", "5.0 GiB", "1048576.0 TiB"],
        )
        self.assertEqual(
            [human_duration(s) for s in (-1, 59, 61, 3725, 90000)],
            ["0 s", "59 s", "1 min", "1 h 2 min", "1 d 1 h"],
        )


_BODY = st.dictionaries(
    st.sampled_from(["csrf", "name", "password", "user", "action", "admin", "x"]),
    st.text(max_size=300),
    max_size=6,
)


class HostileFormTests(TestCase):
    timeout = 300

    @inlineCallbacks
    def test_any_form_and_cookie_gets_a_page(self) -> Any:
        """Arbitrary bodies (with and without the right CSRF field) and
        cookies, POSTed to /login and /users: a page with a 2xx-4xx status,
        and the server still answers afterwards."""
        svc, client = yield start_console(self)
        yield add_user(svc, "root", "correct horse", admin=True)
        generous_sign_ins(svc)
        yield client.call(client.sign_in, "root", "correct horse")
        good = csrf_of((yield client.call(client.get, "/users")).body)
        statuses: set[int] = set()

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(_BODY, st.booleans(), _COOKIE)
        def post(body: dict[str, str], with_csrf: bool, cookie: str) -> None:
            if with_csrf:
                body = {**body, "csrf": good}
            stranger = ConsoleClient(client.port, cookies={"litedesk_login_csrf": cookie})
            for who, path in ((stranger, "/login"), (client, "/users")):
                r = who.post(path, body)
                self.assertLess(r.status, 500, (path, body, r.body[:300]))
                self.assertEqual(r.header("content-security-policy"), CSP)
                statuses.add(r.status)

        yield deferToThread(post)
        self.assertIn(403, statuses)
        r = yield client.call(client.get, "/users")
        self.assertEqual(r.status, 200)
        self.assertIsNotNone(svc.accounts.get("root"))

    @inlineCallbacks
    def test_a_failing_page_is_a_logged_500(self) -> Any:
        """A page that raises: 500, a short page with the security headers,
        the failure in the log, and the next request served."""
        svc, client = yield start_console(self)
        yield add_user(svc, "root", "correct horse", admin=True)
        yield client.call(client.sign_in, "root", "correct horse")
        console = svc.api.factory.resource.console

        class Broken(Page):
            path = "broken"
            title = "Broken"

            async def get(self, view: View) -> Flattenable:
                raise RuntimeError("this page is broken on purpose")

        site = Site(PageResource(Broken(console)))
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        other = ConsoleClient(port.getHost().port, cookies=dict(client.cookies))
        r = yield other.call(other.get, "/")
        self.assertEqual(r.status, 500)
        self.assertIn("This page failed", r.body)
        self.assertEqual(r.header("content-security-policy"), CSP)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        r = yield client.call(client.get, "/")
        self.assertEqual(r.status, 200)
