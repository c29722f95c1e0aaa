"""Tests for litedesk.session.login: RustDesk's login hash, limiter, one-time password."""

from __future__ import annotations

import hmac
import itertools
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from litedesk.session import login
from litedesk.session.failure_limit import FailureLimiter, source_key
from litedesk.session.login import LoginVerifier
from litedesk.session.login_errors import (
    ERROR_EMPTY_PASSWORD,
    ERROR_NO_PASSWORD_ACCESS,
    ERROR_TOO_MANY_ATTEMPTS,
    ERROR_TRY_LATER,
    ERROR_WRONG_PASSWORD,
)
from litedesk.session.password import (
    ALPHABET,
    StoredPassword,
    challenge_response,
    login_password,
    new_challenge,
    new_one_time_password,
    new_salt,
    password_h1,
)
from litedesk.session.relayed_throttle import RelayedLoginThrottle

from .support.clock import advance

H1 = "8fa0acf6233b92d2d48a30a315cd213748d48f28eaa63d7590509392316b3016"
H2 = "c181c1f3c745e5865679944f88d90905dd2a6e091739a3ba12a7edc4c0d6d786"

PASSWORD = "correct horse"
ADDRESS = "198.51.100.7"


def _verifier(
    clock: Clock, password: str | None = PASSWORD, **kwargs: Any
) -> tuple[LoginVerifier, list[str]]:
    rotated: list[str] = []
    stored = StoredPassword.create(password) if password is not None else None
    verifier = LoginVerifier(clock, stored, on_one_time_rotated=rotated.append, **kwargs)
    return verifier, rotated


def _observe(case: SynchronousTestCase) -> EventLoggingObserver:
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


def _answer(verifier: LoginVerifier, password: str, challenge: str) -> bytes:
    return login_password(password, verifier.salt, challenge)


class HashTests(SynchronousTestCase):
    def test_spec_vector(self) -> None:
        """
        docs/protocol.rst §9 item 25: password "123456", salt "abcdef", challenge "xyz123" give the
        spec's h1 and h2, by steps and in one call.
        """
        h1 = password_h1("123456", "abcdef")
        self.assertEqual(h1.hex(), H1)
        self.assertEqual(challenge_response(h1, "xyz123").hex(), H2)
        self.assertEqual(login_password("123456", "abcdef", "xyz123").hex(), H2)

    def test_utf8(self) -> None:
        """Non-ASCII passwords are hashed as UTF-8, as RustDesk does."""
        import hashlib

        expected = hashlib.sha256("pässwörd✓".encode() + b"salt").digest()
        self.assertEqual(password_h1("pässwörd✓", "salt"), expected)

    def test_random_strings(self) -> None:
        """
        Salts are 32 and challenges 6 characters of RustDesk's alphabet (no
        0, 1, l or o), and one-time passwords 6 to 10 of them.
        """
        self.assertEqual(ALPHABET, "23456789abcdefghijkmnpqrstuvwxyz")
        for text, length in [
            (new_salt(), 32),
            (new_challenge(), 6),
            (new_one_time_password(), 6),
            (new_one_time_password(8), 8),
        ]:
            self.assertEqual(len(text), length)
            self.assertTrue(set(text) <= set(ALPHABET))
        self.assertNotEqual(new_salt(), new_salt())
        self.assertRaises(ValueError, new_one_time_password, 5)
        self.assertRaises(ValueError, new_one_time_password, 11)


class StoredPasswordTests(SynchronousTestCase):
    def test_no_plain_password(self) -> None:
        """
        The stored form is the salt and h1 only: the plain password appears
        nowhere in it, it round-trips through its text form, and it still
        recognises the password.
        """
        stored = StoredPassword.create("hunter2-secret")
        text = stored.to_text()
        self.assertNotIn("hunter2", text)
        self.assertNotIn("hunter2", repr(stored))
        self.assertEqual(text.split()[1], stored.salt)
        self.assertEqual(bytes.fromhex(text.split()[2]), password_h1("hunter2-secret", stored.salt))
        again = StoredPassword.from_text(text)
        self.assertEqual(again, stored)
        self.assertTrue(again.matches("hunter2-secret"))
        self.assertFalse(again.matches("hunter3-secret"))

    def test_bad_text(self) -> None:
        """Malformed password files are rejected with ValueError."""
        good = StoredPassword.create("x").to_text().split()
        for text in [
            "",
            "nonsense",
            " ".join(good[:2]),
            " ".join([good[0], good[1], "zz" * 32]),
            " ".join([good[0], good[1], "00" * 31]),
            " ".join(["other-v9", good[1], good[2]]),
        ]:
            with self.subTest(text=text):
                self.assertRaises(ValueError, StoredPassword.from_text, text)


class VerifierTests(SynchronousTestCase):
    def test_permanent_and_one_time(self) -> None:
        """
        The permanent password and the current one-time password both log
        in (reporting which one matched), against the salt of the permanent
        password; a wrong one gets RustDesk's "Wrong Password".
        """
        clock = Clock()
        verifier, _ = _verifier(clock)
        challenge = verifier.new_challenge()
        self.assertEqual(challenge.salt, verifier.permanent.salt)  # type: ignore[union-attr]
        self.assertEqual(challenge.to_message().hash.challenge, challenge.challenge)
        result = verifier.verify(
            ADDRESS, challenge.challenge, _answer(verifier, PASSWORD, challenge.challenge)
        )
        self.assertEqual((result.ok, result.method), (True, "permanent"))
        otp = verifier.one_time_password
        assert otp is not None
        result = verifier.verify(
            ADDRESS, challenge.challenge, _answer(verifier, otp, challenge.challenge)
        )
        self.assertEqual((result.ok, result.method), (True, "one-time"))
        result = verifier.verify(
            ADDRESS, challenge.challenge, _answer(verifier, "nope", challenge.challenge)
        )
        self.assertEqual((result.ok, result.error), (False, ERROR_WRONG_PASSWORD))

    def test_answer_is_bound_to_challenge(self) -> None:
        """A right answer to one connection's challenge is wrong for another's (no replay)."""
        verifier, _ = _verifier(Clock())
        first, second = verifier.new_challenge(), verifier.new_challenge()
        self.assertNotEqual(first.challenge, second.challenge)
        answer = _answer(verifier, PASSWORD, first.challenge)
        self.assertFalse(verifier.verify(ADDRESS, second.challenge, answer).ok)
        self.assertTrue(verifier.verify(ADDRESS, first.challenge, answer).ok)

    def test_remembered_h1(self) -> None:
        """A viewer that remembered h1 (as RustDesk viewers do) can answer without the password."""
        verifier, _ = _verifier(Clock())
        challenge = verifier.new_challenge().challenge
        h1 = password_h1(PASSWORD, verifier.salt)
        self.assertTrue(verifier.verify(ADDRESS, challenge, challenge_response(h1, challenge)).ok)

    def test_one_time_only(self) -> None:
        """
        Without a permanent password the host still has a stable salt and
        the one-time password logs in; with neither, logins are refused with
        "No Password Access".
        """
        verifier, _ = _verifier(Clock(), password=None)
        otp = verifier.one_time_password
        assert otp is not None
        self.assertEqual(len(verifier.salt), 32)
        self.assertEqual(verifier.salt, verifier.new_challenge().salt)
        result = verifier.verify(ADDRESS, "abc", _answer(verifier, otp, "abc"))
        self.assertTrue(result.ok)
        nobody, _ = _verifier(Clock(), password=None, one_time=False)
        self.assertIsNone(nobody.one_time_password)
        result = nobody.verify(ADDRESS, "abc", b"x" * 32)
        self.assertEqual(result.error, ERROR_NO_PASSWORD_ACCESS)

    def test_one_time_disabled(self) -> None:
        """With one-time passwords off, only the permanent password works."""
        verifier, _ = _verifier(Clock(), one_time=False)
        self.assertIsNone(verifier.rotate_one_time_password())
        self.assertTrue(verifier.verify(ADDRESS, "c", _answer(verifier, PASSWORD, "c")).ok)

    def test_empty_password(self) -> None:
        """An empty password gets "Empty Password" and does not count as a wrong guess."""
        verifier, _ = _verifier(Clock())
        for _ in range(20):
            self.assertEqual(verifier.verify(ADDRESS, "c", b"").error, ERROR_EMPTY_PASSWORD)
        self.assertEqual(verifier.consecutive_failures, 0)
        self.assertTrue(verifier.verify(ADDRESS, "c", _answer(verifier, PASSWORD, "c")).ok)

    def test_constant_time_compare(self) -> None:
        """
        Passwords are compared with hmac.compare_digest, against both the
        permanent and the one-time password, whichever matches.
        """
        calls: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return bool(real(a, b))

        self.patch(hmac, "compare_digest", spy)
        verifier, _ = _verifier(Clock())
        answer = _answer(verifier, PASSWORD, "c")
        self.assertTrue(verifier.verify(ADDRESS, "c", answer).ok)
        self.assertEqual(len(calls), 2)
        self.assertTrue(all(b == answer for _, b in calls))


class LimiterTests(SynchronousTestCase):
    def _wrong(self, verifier: LoginVerifier, source: str = ADDRESS) -> str:
        return verifier.verify(source, "c", b"w" * 32).error

    def test_six_per_minute(self) -> None:
        """
        Six wrong passwords from one address within a minute are answered
        "Wrong Password"; then that address is refused with "Please try 1
        minute later" for a minute, even with the right password, and the
        lockout is logged; other addresses are unaffected; after the minute
        the right password works again.
        """
        events = _observe(self)
        clock = Clock()
        verifier, _ = _verifier(clock)
        right = _answer(verifier, PASSWORD, "c")
        for _ in range(6):
            clock.advance(5)
            self.assertEqual(self._wrong(verifier), ERROR_WRONG_PASSWORD)
        self.assertEqual(verifier.verify(ADDRESS, "c", right).error, ERROR_TRY_LATER)
        self.assertTrue(verifier.verify("203.0.113.9", "c", right).ok)
        self.assertTrue(
            any(
                e.get("log_namespace") == "litedesk.session.login"
                and "refusing it for" in e.get("log_format", "")
                and e.get("source") == ADDRESS
                for e in events
            )
        )
        clock.advance(59)
        self.assertEqual(verifier.verify(ADDRESS, "c", right).error, ERROR_TRY_LATER)
        clock.advance(1)
        self.assertTrue(verifier.verify(ADDRESS, "c", right).ok)

    def test_sliding_window(self) -> None:
        """Five wrong passwords, a quiet minute, five more: never locked (the window slides)."""
        clock = Clock()
        verifier, _ = _verifier(clock)
        for _ in range(5):
            self.assertEqual(self._wrong(verifier), ERROR_WRONG_PASSWORD)
        clock.advance(60)
        for _ in range(5):
            self.assertEqual(self._wrong(verifier), ERROR_WRONG_PASSWORD)
        self.assertTrue(verifier.verify(ADDRESS, "c", _answer(verifier, PASSWORD, "c")).ok)

    def test_total_limit(self) -> None:
        """
        Thirty wrong passwords from one address without a success (paced
        under the per-minute limit) lock it with "Too many wrong attempts"
        until it has been quiet for an hour.
        """
        clock = Clock()
        verifier, _ = _verifier(clock)
        right = _answer(verifier, PASSWORD, "c")
        for _ in range(30):
            clock.advance(15)
            self.assertEqual(self._wrong(verifier), ERROR_WRONG_PASSWORD)
        clock.advance(120)
        self.assertEqual(verifier.verify(ADDRESS, "c", right).error, ERROR_TOO_MANY_ATTEMPTS)
        clock.advance(3600)
        self.assertTrue(verifier.verify(ADDRESS, "c", right).ok)

    def test_success_resets(self) -> None:
        """A successful login forgets the address's earlier wrong passwords."""
        clock = Clock()
        verifier, _ = _verifier(clock)
        for _ in range(5):
            self._wrong(verifier)
        self.assertTrue(verifier.verify(ADDRESS, "c", _answer(verifier, PASSWORD, "c")).ok)
        for _ in range(5):
            self.assertEqual(self._wrong(verifier), ERROR_WRONG_PASSWORD)

    def test_ipv6_prefix(self) -> None:
        """
        IPv6 sources are counted per /64, so hopping addresses inside one
        block does not reset the limit; IPv4-mapped addresses count as IPv4.
        """
        self.assertEqual(source_key("2001:db8:1:2::5"), "2001:db8:1:2::/64")
        self.assertEqual(source_key("::ffff:198.51.100.7"), ADDRESS)
        self.assertEqual(source_key("fe80::1%eth0"), "fe80::/64")
        self.assertEqual(source_key("not an ip"), "not an ip")
        clock = Clock()
        verifier, _ = _verifier(clock)
        for i in range(6):
            self._wrong(verifier, f"2001:db8:1:2::{i + 1:x}")
        self.assertEqual(self._wrong(verifier, "2001:db8:1:2:ffff::1"), ERROR_TRY_LATER)
        self.assertEqual(self._wrong(verifier, "2001:db8:1:3::1"), ERROR_WRONG_PASSWORD)

    def test_table_is_bounded(self) -> None:
        """The per-source table never grows past its bound (many attacking addresses)."""
        clock = Clock()
        limiter = FailureLimiter(clock, max_sources=100)
        for i in range(1000):
            clock.advance(0.01)
            limiter.failed(f"10.0.{i // 256}.{i % 256}")
        self.assertLessEqual(len(limiter), 100)


RELAY = "127.0.0.1"  # the address every relayed viewer appears from


class _Attempts:
    """Relayed login attempts through a verifier's throttle, as sessions make them."""

    def __init__(self, clock: Clock, verifier: LoginVerifier) -> None:
        self.clock = clock
        self.verifier = verifier
        self.results: list[tuple[str, float, float, login.LoginResult | None]] = []
        self.checked_at: list[float] = []

    def submit(self, password: str, alive: Any = lambda: True) -> int:
        """Start one attempt; returns its index in C{results}."""
        index = len(self.results)
        self.results.append((password, self.clock.seconds(), -1.0, None))

        def check() -> None:
            now = self.clock.seconds()
            self.checked_at.append(now)
            answer = _answer(self.verifier, password, "c")
            result = self.verifier.verify(RELAY, "c", answer, relayed=True)
            self.results[index] = (password, self.results[index][1], now, result)

        if not self.verifier.relayed_throttle.submit(check, alive, RELAY):
            refused = login.LoginResult(False, ERROR_TRY_LATER)
            self.results[index] = (password, self.clock.seconds(), self.clock.seconds(), refused)
        return index

    def result(self, index: int) -> login.LoginResult | None:
        return self.results[index][3]

    def step(self, seconds: float) -> None:
        advance(self.clock, seconds)


class RelayedThrottleTests(SynchronousTestCase):
    """Relayed viewers share the relay's address: paced host-wide, never locked out."""

    def test_burst_then_right_password_within_20_s(self) -> None:
        """
        30 wrong passwords through the relay within a second, then the
        right one, retried whenever it is told to try later (as a user
        would): it logs in less than 20 s after the burst began, and the
        relay's address is never locked out.
        """
        clock = Clock()
        verifier, _ = _verifier(clock)
        attempts = _Attempts(clock, verifier)
        for _ in range(30):
            attempts.submit("guess")
            attempts.step(1 / 30)
        right = attempts.submit(PASSWORD)
        while True:
            result = attempts.result(right)
            if result is not None and result.error == ERROR_TRY_LATER:
                attempts.step(1.0)  # the user clicks "connect" again
                right = attempts.submit(PASSWORD)
                continue
            if result is not None or clock.seconds() > 60:
                break
            attempts.step(0.1)
        result = attempts.result(right)
        assert result is not None
        self.assertTrue(result.ok, result)
        self.assertLess(attempts.results[right][2], 20.0)
        wrong = [r[3] for r in attempts.results if r[0] == "guess"]
        self.assertEqual(
            {r.error for r in wrong if r is not None}, {ERROR_WRONG_PASSWORD, ERROR_TRY_LATER}
        )
        self.assertIsNone(verifier.limiter.refusal(RELAY))

    def test_accepted_attempt_is_checked_within_16_s(self) -> None:
        """
        However many wrong passwords came before, an attempt that is not
        refused at once is checked within 4 waiting slots of 4 s.
        """
        clock = Clock()
        verifier, _ = _verifier(clock)
        attempts = _Attempts(clock, verifier)
        for _ in range(20):
            attempts.submit("guess")
            attempts.step(0.5)
        self.assertEqual(verifier.relayed_throttle.spacing(), 4.0)
        for _ in range(200):
            attempts.submit("guess")
            attempts.step(0.25)
        attempts.step(20)
        waits = [checked - sent for _, sent, checked, r in attempts.results if r is not None]
        self.assertEqual(len(waits), 220)
        self.assertLessEqual(max(waits), 16.0 + 1e-6)
        self.assertGreater(max(waits), 12.0)  # the line was full: this bound was reached

    def test_guessing_rate_bounded(self) -> None:
        """
        An attacker keeping the waiting line full for ten minutes gets at
        most 3 free guesses and then one every 4 s (about 15 a minute).
        """
        clock = Clock()
        verifier, _ = _verifier(clock)
        attempts = _Attempts(clock, verifier)
        throttle = verifier.relayed_throttle
        for _ in range(6000):  # 600 s in steps of 0.1 s
            while throttle.waiting < throttle.max_waiting:
                attempts.submit("guess")
            attempts.step(0.1)
        checked = len(attempts.checked_at)
        self.assertLessEqual(checked, 3 + 4 + 600 / 4)  # free, the ramp up to 4 s, the cap
        self.assertGreater(checked, 600 / 4 - 5)  # and the line does keep moving
        times = attempts.checked_at[7:]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        self.assertGreaterEqual(min(gaps), 4.0 - 1e-6)

    def test_waiting_line_bounded(self) -> None:
        """
        Twenty relayed attempts at once: the 3 free ones are checked, 4 wait,
        the other 13 are refused at once with "Please try 1 minute later",
        each refusal logged with the relay's address.
        """
        events = _observe(self)
        clock = Clock()
        verifier, _ = _verifier(clock)
        attempts = _Attempts(clock, verifier)
        for _ in range(20):
            attempts.submit("guess")
        errors = [r[3].error if r[3] is not None else None for r in attempts.results]
        self.assertEqual(errors[:3], [ERROR_WRONG_PASSWORD] * 3)
        self.assertEqual(errors[3:7], [None] * 4)
        self.assertEqual(errors[7:], [ERROR_TRY_LATER] * 13)
        self.assertEqual(verifier.relayed_throttle.waiting, 4)
        refusals = [e for e in events if e.get("relayed_login") == "refused"]
        self.assertEqual(len(refusals), 13)
        self.assertTrue(all(e["peer"] == RELAY and e["waiting"] == 4 for e in refusals))
        delays = [e for e in events if e.get("relayed_login") == "delayed"]
        # Each logged with the wait it faces if the checks ahead all fail, as they do.
        self.assertEqual([round(e["delay"], 1) for e in delays], [0.5, 1.5, 3.5, 7.5])
        attempts.step(20)
        self.assertEqual(verifier.relayed_throttle.waiting, 0)
        self.assertEqual(len(attempts.checked_at), 7)
        for got, expected in zip(attempts.checked_at[3:], [0.5, 1.5, 3.5, 7.5], strict=True):
            self.assertAlmostEqual(got, expected, places=6)

    def test_closed_while_waiting(self) -> None:
        """
        An attempt whose connection closes while it waits is never checked
        nor counted, and does not keep its place: the next one moves up.
        """
        clock = Clock()
        verifier, _ = _verifier(clock)
        attempts = _Attempts(clock, verifier)
        for _ in range(5):
            attempts.submit("guess")
        self.assertEqual(verifier.relayed_throttle.spacing(), 0.5)
        open_ = {"gone": False}
        gone = attempts.submit("guess", alive=lambda: not open_["gone"])
        attempts.submit("guess")
        open_["gone"] = True
        attempts.step(30)
        self.assertIsNone(attempts.result(gone))
        self.assertEqual(len(attempts.checked_at), 6)
        self.assertEqual(verifier.consecutive_failures, 6)
        # Dead waiters do not fill the line either.
        for _ in range(4):
            attempts.submit("guess", alive=lambda: False)
        right = attempts.submit(PASSWORD)
        attempts.step(5)
        result = attempts.result(right)
        self.assertTrue(result is not None and result.ok)

    def test_quiet_and_success_start_over(self) -> None:
        """A minute without relayed wrong passwords, or a right one, removes the delay."""
        clock = Clock()
        verifier, _ = _verifier(clock)
        attempts = _Attempts(clock, verifier)
        throttle = verifier.relayed_throttle
        for _ in range(6):
            attempts.submit("guess")
            attempts.step(5)
        self.assertEqual(throttle.spacing(), 4.0)
        attempts.step(60)
        self.assertEqual((throttle.failures, throttle.spacing()), (0, 0.0))
        for _ in range(6):
            attempts.submit("guess")
            attempts.step(5)
        right = attempts.submit(PASSWORD)
        attempts.step(5)
        self.assertTrue(attempts.result(right).ok)  # type: ignore[union-attr]
        self.assertEqual(throttle.spacing(), 0.0)
        self.assertEqual(throttle.failures, 0)

    def test_direct_sources_still_locked(self) -> None:
        """
        Relayed wrong passwords never lock anyone out, while a direct source
        is still refused after its 6th wrong password in a minute, even
        when it shares the relay's address.
        """
        clock = Clock()
        verifier, _ = _verifier(clock)
        attempts = _Attempts(clock, verifier)
        for _ in range(12):
            attempts.submit("guess")
            attempts.step(5)
        right = _answer(verifier, PASSWORD, "c")
        for _ in range(6):
            self.assertEqual(verifier.verify(RELAY, "c", b"w" * 32).error, ERROR_WRONG_PASSWORD)
        self.assertEqual(verifier.verify(RELAY, "c", right).error, ERROR_TRY_LATER)
        index = attempts.submit(PASSWORD)
        attempts.step(5)
        self.assertTrue(attempts.result(index).ok)  # type: ignore[union-attr]
        self.assertEqual(verifier.verify(RELAY, "c", right).error, ERROR_TRY_LATER)

    def test_rotation_counts_relayed_failures(self) -> None:
        """Ten relayed wrong passwords in a row still replace the one-time password."""
        clock = Clock()
        verifier, rotated = _verifier(clock, password=None)
        attempts = _Attempts(clock, verifier)
        for _ in range(10):
            attempts.submit("guess")
            attempts.step(5)
        self.assertEqual(len(rotated), 1)

    @given(
        ops=st.lists(
            st.tuples(
                st.sampled_from(["submit", "wait", "close", "right"]),
                st.floats(min_value=0, max_value=6, allow_nan=False),
            ),
            max_size=80,
        )
    )
    def test_throttle_invariants(self, ops: Any) -> None:
        """
        Whatever arrives, closes and waits, in any rhythm: the line never
        exceeds its bound, a closed attempt is never checked, every checked
        attempt was checked within 16 s of arriving, and consecutive checks
        keep the spacing that was due when each slot came.
        """
        clock = Clock()
        throttle = RelayedLoginThrottle(clock)
        open_: list[bool] = []
        log: list[tuple[int, float, float]] = []  # (attempt, submitted, checked)
        last_check: list[float] = []

        def make(i: int, ok: bool) -> tuple[Any, Any]:
            submitted = clock.seconds()

            def check() -> None:
                self.assertTrue(open_[i])
                if last_check:
                    self.assertGreaterEqual(clock.seconds() + 1e-9, last_check[-1])
                last_check.append(clock.seconds())
                log.append((i, submitted, clock.seconds()))
                if ok:
                    throttle.succeeded()
                else:
                    throttle.failed()

            return check, lambda: open_[i]

        for op, value in ops:
            if op in ("submit", "right"):
                open_.append(True)
                check, alive = make(len(open_) - 1, op == "right")
                throttle.submit(check, alive, "relay")
            elif op == "close" and open_:
                open_[int(value * 1000) % len(open_)] = False
            else:
                advance(clock, value)
            self.assertLessEqual(throttle.waiting, throttle.max_waiting)
        advance(clock, 20)
        self.assertEqual(throttle.waiting, 0)
        for _, submitted, checked in log:
            self.assertLessEqual(checked - submitted, 16.0 + 1e-6)


class OneTimeRotationTests(SynchronousTestCase):
    def test_rotates_after_ten(self) -> None:
        """
        Ten consecutive wrong passwords (from any addresses) replace the
        one-time password: the old one stops working, the new one works and
        is reported to the host agent, and the event is logged.
        """
        events = _observe(self)
        clock = Clock()
        verifier, rotated = _verifier(clock, rng=random.Random(4))
        old = verifier.one_time_password
        assert old is not None
        for i in range(9):
            verifier.verify(f"192.0.2.{i}", "c", b"w" * 32)
        self.assertEqual(verifier.one_time_password, old)
        verifier.verify("192.0.2.99", "c", b"w" * 32)
        new = verifier.one_time_password
        self.assertNotEqual(new, old)
        self.assertEqual(rotated, [new])
        self.assertFalse(verifier.verify("192.0.2.200", "c", _answer(verifier, old, "c")).ok)
        assert new is not None
        result = verifier.verify("192.0.2.201", "c", _answer(verifier, new, "c"))
        self.assertEqual((result.ok, result.method), (True, "one-time"))
        self.assertTrue(any("replacing the one-time" in e.get("log_format", "") for e in events))

    def test_success_breaks_the_run(self) -> None:
        """Failures separated by a successful login are not consecutive: no rotation."""
        verifier, rotated = _verifier(Clock())
        for round_ in range(3):
            for i in range(9):
                verifier.verify(f"192.0.2.{round_ * 10 + i}", "c", b"w" * 32)
            self.assertTrue(verifier.verify(ADDRESS, "c", _answer(verifier, PASSWORD, "c")).ok)
        self.assertEqual(rotated, [])

    def test_refusals_do_not_rotate(self) -> None:
        """
        Attempts refused by the rate limit are not checked and do not count
        towards rotation.
        """
        clock = Clock()
        verifier, rotated = _verifier(clock)
        for _ in range(20):
            verifier.verify(ADDRESS, "c", b"w" * 32)
        self.assertEqual(verifier.consecutive_failures, 6)
        self.assertEqual(rotated, [])


class FuzzTests(SynchronousTestCase):
    @given(
        attempts=st.lists(
            st.tuples(
                st.one_of(st.text(max_size=60), st.ip_addresses().map(str)),
                st.text(max_size=40),
                st.binary(max_size=80),
                st.floats(min_value=0, max_value=400, allow_nan=False),
                st.booleans(),
            ),
            max_size=40,
        ),
        permanent=st.one_of(st.none(), st.text(max_size=30)),
        one_time=st.booleans(),
    )
    def test_verifier_never_raises(self, attempts: Any, permanent: Any, one_time: bool) -> None:
        """
        Whatever sources, challenges and passwords arrive, in whatever
        rhythm, the verifier answers with one of RustDesk's results and never
        raises (nor hides an exception in its catch-all).
        """

        def no_failures(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("the verifier hit an unexpected exception")

        self.patch(login._log, "failure", no_failures)
        clock = Clock()
        verifier, _ = _verifier(clock, password=permanent, one_time=one_time)
        allowed = {
            "",
            ERROR_WRONG_PASSWORD,
            ERROR_TRY_LATER,
            ERROR_TOO_MANY_ATTEMPTS,
            ERROR_EMPTY_PASSWORD,
            ERROR_NO_PASSWORD_ACCESS,
        }
        for source, challenge, password, delay, relayed in attempts:
            clock.advance(delay)
            result = verifier.verify(source, challenge, password, relayed=relayed)
            self.assertIn(result.error, allowed)
            self.assertEqual(result.ok, result.error == "")
