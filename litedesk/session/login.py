# -*- test-case-name: tests.test_session_login -*-
"""RustDesk's salted challenge login (docs/protocol.rst §8.2), sans-IO.

Exchange, inside the TLS session::

    host   -> viewer  Message{hash: Hash{salt, challenge}}
    viewer -> host    Message{login_request: LoginRequest{username, password: h2, ...}}
    host   -> viewer  Message{login_response: LoginResponse{peer_info | error}}

with C{h1 = SHA256(password UTF-8 || salt)} and C{h2 = SHA256(h1 || challenge)}.
The salt is the permanent password's; the challenge is new per connection.

The hashes and the host's stored password are in
L{litedesk.session.password}; the answers to refused logins in
L{litedesk.session.login_errors}.

L{LoginVerifier} checks a C{LoginRequest}'s password against the permanent
password and the current one-time password, and rotates the one-time
password after 10 consecutive failures from anywhere (as RustDesk does).
How wrong passwords are limited depends on how the viewer arrived:

- Direct sources (punched, LAN, C{--listen}, UPnP): the host sees the
  viewer's own address, so RustDesk's per-source
  L{litedesk.session.failure_limit.FailureLimiter} applies
  (6 wrong passwords within a minute from one source: that source is refused
  for a minute; 30 without a success: refused until an hour of quiet).
- Relayed viewers: the host sees only the relay's address, which everyone on
  that relay (or behind one NAT) shares, so a per-source lock would let one
  guesser lock every relayed viewer out.  Instead
  L{litedesk.session.relayed_throttle.RelayedLoginThrottle}
  paces relayed password checks host-wide: the first 3 wrong passwords cost
  nothing, then the checks are spaced 0.5, 1, 2 and at most 4 seconds apart
  (at most 15 relayed guesses a minute, whoever sends them); a minute without
  a relayed wrong password, or a right one, starts over.  At most 4 checks
  wait for a slot; more are refused at once with "Please try 1 minute later"
  (RustDesk's answer to a busy login gate too).  So after any burst the right
  password is checked within 4 x 4 = 16 seconds.

Time comes from an injected L{IReactorTime}; nothing here does I/O (the
throttle schedules its checks with the clock's C{callLater}).
"""

from __future__ import annotations

import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from litedesk.session.failure_limit import FailureLimiter, source_key
from litedesk.session.login_errors import (
    ERROR_EMPTY_PASSWORD,
    ERROR_NO_PASSWORD_ACCESS,
    ERROR_WRONG_PASSWORD,
)
from litedesk.session.password import (
    ONE_TIME_LENGTHS,
    Challenge,
    StoredPassword,
    challenge_response,
    login_password,
    new_challenge,
    new_one_time_password,
    new_salt,
)
from litedesk.session.relayed_throttle import RelayedLoginThrottle

__all__ = ["LoginResult", "LoginVerifier"]

_log = Logger(namespace="litedesk.session.login")


@dataclass(frozen=True)
class LoginResult:
    """The outcome of one C{LoginRequest}.

    @ivar ok: the password was right.
    @ivar error: for C{LoginResponse.error} when not C{ok} (RustDesk's strings).
    @ivar method: C{"permanent"} or C{"one-time"}: which password matched.
    """

    ok: bool
    error: str = ""
    method: str | None = None


class LoginVerifier:
    """The host's password check for C{LoginRequest}s.

    @ivar permanent: the stored permanent password, or None.
    @ivar limiter: the per-source L{FailureLimiter} (direct sources).
    @ivar relayed_throttle: the host-wide L{RelayedLoginThrottle} that
        sessions of relayed viewers take a slot from before calling
        L{verify} with C{relayed=True}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        permanent: StoredPassword | None = None,
        *,
        one_time: bool = True,
        one_time_length: int = 6,
        rotate_after: int = 10,
        limiter: FailureLimiter | None = None,
        relayed_throttle: RelayedLoginThrottle | None = None,
        on_one_time_rotated: Callable[[str], object] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """
        @param one_time: accept a one-time password besides the permanent one.
        @param rotate_after: consecutive wrong passwords (from any source)
            after which the one-time password is replaced.
        @param on_one_time_rotated: called with each new one-time password
            (the host agent logs or shows it).
        @param rng: for tests only; default is the OS's CSPRNG.
        """
        if one_time_length not in ONE_TIME_LENGTHS:
            raise ValueError(f"one-time passwords are 6 to 10 characters, not {one_time_length}")
        self.clock = clock
        self.permanent = permanent
        self.limiter = limiter if limiter is not None else FailureLimiter(clock)
        self.relayed_throttle = (
            relayed_throttle if relayed_throttle is not None else RelayedLoginThrottle(clock)
        )
        self.rotate_after = rotate_after
        self._one_time_length = one_time_length
        self._rng = rng
        self._on_rotated = on_one_time_rotated
        self._consecutive_failures = 0
        # Without a permanent password the salt only has to be stable for
        # this process: it salts the one-time password.
        self._own_salt = new_salt(rng)
        self._one_time: str | None = (
            new_one_time_password(one_time_length, rng) if one_time else None
        )

    @property
    def salt(self) -> str:
        return self.permanent.salt if self.permanent is not None else self._own_salt

    @property
    def one_time_password(self) -> str | None:
        """The current one-time password (None when disabled)."""
        return self._one_time

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    def new_challenge(self) -> Challenge:
        """The C{Hash} for a new connection."""
        return Challenge(self.salt, new_challenge(self._rng))

    def rotate_one_time_password(self) -> str | None:
        """Replace the one-time password now; returns the new one."""
        if self._one_time is None:
            return None
        self._one_time = new_one_time_password(self._one_time_length, self._rng)
        if self._on_rotated is not None:
            try:
                self._on_rotated(self._one_time)
            except Exception:
                _log.failure("Reporting the new one-time password failed")
        return self._one_time

    def verify(
        self, source: str, challenge: str, password: bytes, *, relayed: bool = False
    ) -> LoginResult:
        """Check C{LoginRequest.password} from C{source} for C{challenge}.

        Never raises, whatever the input: it is fed straight from the
        network.

        @param source: the peer's address (see L{source_key}).
        @param challenge: the challenge this connection was sent.
        @param password: C{LoginRequest.password}.
        @param relayed: the viewer came through a relay, so C{source} is the
            relay's address: the per-source lock does not apply and the
            outcome goes to L{relayed_throttle} (whose slot the caller took).
        """
        try:
            return self._verify(source, challenge, password, relayed)
        except Exception:
            _log.failure("Password check failed on unexpected input")
            return LoginResult(False, ERROR_WRONG_PASSWORD)

    def _verify(self, source: str, challenge: str, password: bytes, relayed: bool) -> LoginResult:
        source = str(source)
        # The relay's address is everyone's: locking it would lock out every
        # relayed viewer, so relayed checks are paced instead (see module doc).
        refusal = None if relayed else self.limiter.refusal(source)
        if refusal is not None:
            # Not even checked: a locked-out source learns nothing.
            _log.info(
                "Refused a login attempt from {source}: {error}",
                source=source_key(source),
                error=refusal,
            )
            return LoginResult(False, refusal)
        if self.permanent is None and self._one_time is None:
            return LoginResult(False, ERROR_NO_PASSWORD_ACCESS)
        if not isinstance(password, bytes | bytearray | memoryview):
            password = b""
        password = bytes(password)
        if not password:
            # RustDesk's "ask the person at the host" mode; there is nobody
            # to ask, and it is no guess, so it does not count as a failure.
            return LoginResult(False, ERROR_EMPTY_PASSWORD)
        challenge = str(challenge)
        # Compute and compare both, whichever is set, so that the time taken
        # does not say which password exists or matched.
        permanent_ok = one_time_ok = False
        if self.permanent is not None:
            expected = challenge_response(self.permanent.h1, challenge)
            permanent_ok = hmac.compare_digest(expected, password)
        if self._one_time is not None:
            expected = login_password(self._one_time, self.salt, challenge)
            one_time_ok = hmac.compare_digest(expected, password)
        if permanent_ok or one_time_ok:
            if relayed:
                self.relayed_throttle.succeeded()
            else:
                self.limiter.succeeded(source)
            self._consecutive_failures = 0
            method = "permanent" if permanent_ok else "one-time"
            _log.info(
                "Login from {source} with the {method} password",
                source=source_key(source),
                method=method,
                relayed=relayed,
            )
            return LoginResult(True, "", method)
        if relayed:
            self.relayed_throttle.failed()
        else:
            self.limiter.failed(source)
        self._consecutive_failures += 1
        _log.info(
            "Wrong password from {source} ({consecutive} in a row)",
            source=source_key(source),
            consecutive=self._consecutive_failures,
            relayed=relayed,
        )
        if self._one_time is not None and self._consecutive_failures >= self.rotate_after:
            self._consecutive_failures = 0
            _log.warn(
                "{count} wrong passwords in a row: replacing the one-time password",
                count=self.rotate_after,
            )
            self.rotate_one_time_password()
        return LoginResult(False, ERROR_WRONG_PASSWORD)
