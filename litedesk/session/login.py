# -*- test-case-name: tests.test_session_login -*-
"""RustDesk's salted challenge login (rustdesk-protocol.md §8.2), sans-IO.

Exchange, inside the TLS session::

    host   -> viewer  Message{hash: Hash{salt, challenge}}
    viewer -> host    Message{login_request: LoginRequest{username, password: h2, ...}}
    host   -> viewer  Message{login_response: LoginResponse{peer_info | error}}

with C{h1 = SHA256(password UTF-8 || salt)} and C{h2 = SHA256(h1 || challenge)}.
The salt is the permanent password's; the challenge is new per connection.

The host stores only C{salt} and C{h1} (L{StoredPassword}), never the plain
password.  Note that C{h1} is still a login credential for this protocol
(whoever has it can answer any challenge), so the file holding it must be as
private as a password; what storing C{h1} buys is that the plain password,
which people reuse elsewhere, is not on disk.

L{LoginVerifier} checks a C{LoginRequest}'s password against the permanent
password and the current one-time password, and rotates the one-time
password after 10 consecutive failures from anywhere (as RustDesk does).
How wrong passwords are limited depends on how the viewer arrived:

- Direct sources (punched, LAN, C{--listen}, UPnP): the host sees the
  viewer's own address, so RustDesk's per-source L{FailureLimiter} applies
  (6 wrong passwords within a minute from one source: that source is refused
  for a minute; 30 without a success: refused until an hour of quiet).
- Relayed viewers: the host sees only the relay's address, which everyone on
  that relay (or behind one NAT) shares, so a per-source lock would let one
  guesser lock every relayed viewer out.  Instead L{RelayedLoginThrottle}
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

import hashlib
import hmac
import ipaddress
import random
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from litedesk.proto import message_pb2

__all__ = [
    "ALPHABET",
    "CHALLENGE_LENGTH",
    "ERROR_EMPTY_PASSWORD",
    "ERROR_NO_PASSWORD_ACCESS",
    "ERROR_TOO_MANY_ATTEMPTS",
    "ERROR_TRY_LATER",
    "ERROR_WRONG_PASSWORD",
    "SALT_LENGTH",
    "Challenge",
    "FailureLimiter",
    "LoginResult",
    "LoginVerifier",
    "RelayedLoginThrottle",
    "StoredPassword",
    "challenge_response",
    "login_password",
    "new_challenge",
    "new_one_time_password",
    "new_salt",
    "password_h1",
    "random_string",
    "source_key",
]

# RustDesk's CHARS (hbb_common config.rs): no 0/1/l/o, which people misread.
# 32 symbols, so a salt of 32 carries 160 bits and a one-time password of 6
# carries 30.
ALPHABET = "23456789abcdefghijkmnpqrstuvwxyz"
SALT_LENGTH = 32
CHALLENGE_LENGTH = 6
ONE_TIME_LENGTHS = range(6, 11)

# The strings RustDesk hosts send in LoginResponse.error; RustDesk viewers
# recognise them (e.g. to ask for the password again).
ERROR_WRONG_PASSWORD = "Wrong Password"
ERROR_TRY_LATER = "Please try 1 minute later"
ERROR_TOO_MANY_ATTEMPTS = "Too many wrong attempts"
ERROR_EMPTY_PASSWORD = "Empty Password"
ERROR_NO_PASSWORD_ACCESS = "No Password Access"

_STORED_PREFIX = "litedesk-password-v1"

_system_random = secrets.SystemRandom()

_log = Logger(namespace="litedesk.session.login")


def random_string(length: int, rng: random.Random | None = None) -> str:
    """C{length} characters drawn uniformly from L{ALPHABET}.

    @param rng: for tests only; the default is the operating system's CSPRNG.
    """
    chooser = rng if rng is not None else _system_random
    return "".join(chooser.choice(ALPHABET) for _ in range(length))


def new_salt(rng: random.Random | None = None) -> str:
    """A permanent-password salt (32 characters, as RustDesk's)."""
    return random_string(SALT_LENGTH, rng)


def new_challenge(rng: random.Random | None = None) -> str:
    """A per-connection challenge (6 characters, as RustDesk's)."""
    return random_string(CHALLENGE_LENGTH, rng)


def new_one_time_password(length: int = 6, rng: random.Random | None = None) -> str:
    """A one-time password like RustDesk's temporary password (6 to 10 characters)."""
    if length not in ONE_TIME_LENGTHS:
        raise ValueError(f"one-time passwords are 6 to 10 characters, not {length}")
    return random_string(length, rng)


def _utf8(text: str) -> bytes:
    # Protobuf strings are valid UTF-8; "surrogatepass" only keeps a
    # malformed str from raising in code that must never raise.
    return text.encode("utf-8", "surrogatepass")


def password_h1(password: str, salt: str) -> bytes:
    """C{SHA256(password || salt)}: what the host stores and viewers remember."""
    return hashlib.sha256(_utf8(password) + _utf8(salt)).digest()


def challenge_response(h1: bytes, challenge: str) -> bytes:
    """C{SHA256(h1 || challenge)}: C{LoginRequest.password}."""
    return hashlib.sha256(bytes(h1) + _utf8(challenge)).digest()


def login_password(password: str, salt: str, challenge: str) -> bytes:
    """What a viewer puts in C{LoginRequest.password} for C{password}."""
    return challenge_response(password_h1(password, salt), challenge)


@dataclass(frozen=True)
class StoredPassword:
    """The permanent password as the host stores it: salt and C{h1} only."""

    salt: str
    h1: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.h1) != 32:
            raise ValueError("h1 is a 32-byte SHA-256 digest")
        if not self.salt or any(c.isspace() for c in self.salt):
            raise ValueError("the salt must be non-empty and without whitespace")

    @classmethod
    def create(cls, password: str, rng: random.Random | None = None) -> StoredPassword:
        """Hash C{password} with a new salt."""
        salt = new_salt(rng)
        return cls(salt, password_h1(password, salt))

    def matches(self, password: str) -> bool:
        """Whether C{password} is this password (constant-time)."""
        return hmac.compare_digest(password_h1(password, self.salt), self.h1)

    def to_text(self) -> str:
        """One line for the host's password file."""
        return f"{_STORED_PREFIX} {self.salt} {self.h1.hex()}\n"

    @classmethod
    def from_text(cls, text: str) -> StoredPassword:
        """Parse L{to_text}'s format.

        @raise ValueError: not that format.
        """
        fields = text.split()
        if len(fields) != 3 or fields[0] != _STORED_PREFIX:
            raise ValueError(f"not a {_STORED_PREFIX} line")
        try:
            h1 = bytes.fromhex(fields[2])
        except ValueError:
            raise ValueError("the hash is not hexadecimal") from None
        return cls(fields[1], h1)


@dataclass(frozen=True)
class Challenge:
    """What the host sends first on a session: C{Hash{salt, challenge}}."""

    salt: str
    challenge: str

    def to_message(self) -> message_pb2.Message:
        return message_pb2.Message(hash=message_pb2.Hash(salt=self.salt, challenge=self.challenge))


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


def source_key(host: str) -> str:
    """The unit that failures are counted per, for a peer address.

    IPv4 addresses count alone (IPv4-mapped IPv6 ones as IPv4); IPv6
    addresses count per /64, the block one subscriber usually gets, so an
    attacker cannot reset the limit by hopping addresses inside it.
    Anything else (a host name, a test label) counts as itself.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class _Record:
    recent: deque[float] = field(default_factory=deque)
    total: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class FailureLimiter:
    """Wrong-password accounting per source, RustDesk's limits.

    - C{per_minute} (6) wrong passwords within C{window} (60 s) from one
      source lock it for C{lockout} (60 s): "Please try 1 minute later";
    - C{total_limit} (30) wrong passwords from one source without a success
      lock it until it has been quiet for C{total_quiet} (an hour): "Too many
      wrong attempts".  (RustDesk keeps that lock until a restart; forgetting
      after an hour of quiet keeps a shared NAT address from being locked
      out forever.)

    A successful login clears the source's record.  The table holds at most
    C{max_sources} records; beyond that the stalest are forgotten.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        per_minute: int = 6,
        window: float = 60.0,
        lockout: float = 60.0,
        total_limit: int = 30,
        total_quiet: float = 3600.0,
        max_sources: int = 10_000,
    ) -> None:
        self.clock = clock
        self.per_minute = per_minute
        self.window = window
        self.lockout = lockout
        self.total_limit = total_limit
        self.total_quiet = total_quiet
        self.max_sources = max_sources
        self._records: dict[str, _Record] = {}

    def _record(self, source: str, now: float) -> _Record | None:
        record = self._records.get(source)
        if record is not None and now - record.last >= self.total_quiet:
            # Quiet for long enough: forget everything about this source.
            del self._records[source]
            return None
        return record

    def refusal(self, source: str) -> str | None:
        """The error to answer C{source} with, without checking its password."""
        now = self.clock.seconds()
        record = self._record(source_key(source), now)
        if record is None:
            return None
        if record.total >= self.total_limit:
            return ERROR_TOO_MANY_ATTEMPTS
        if now < record.locked_until:
            return ERROR_TRY_LATER
        return None

    def failed(self, source: str) -> None:
        """Count a wrong password from C{source}; lock it when over a limit."""
        now = self.clock.seconds()
        key = source_key(source)
        record = self._record(key, now)
        if record is None:
            self._make_room(now)
            record = self._records[key] = _Record()
        record.last = now
        record.total += 1
        record.recent.append(now)
        while record.recent and now - record.recent[0] >= self.window:
            record.recent.popleft()
        if record.total == self.total_limit:
            _log.warn(
                "{count} wrong passwords from {source} without a success: refusing it "
                "until it has been quiet for {quiet} seconds",
                count=record.total,
                source=key,
                quiet=self.total_quiet,
            )
        elif len(record.recent) >= self.per_minute:
            record.locked_until = now + self.lockout
            record.recent.clear()
            _log.warn(
                "{count} wrong passwords from {source} within {window} seconds: "
                "refusing it for {lockout} seconds",
                count=self.per_minute,
                source=key,
                window=self.window,
                lockout=self.lockout,
            )

    def succeeded(self, source: str) -> None:
        """A right password from C{source}: forget its failures."""
        self._records.pop(source_key(source), None)

    def _make_room(self, now: float) -> None:
        if len(self._records) < self.max_sources:
            return
        for key in [k for k, r in self._records.items() if now - r.last >= self.total_quiet]:
            del self._records[key]
        excess = len(self._records) - self.max_sources + 1
        if excess > 0:
            stalest = sorted(self._records, key=lambda k: self._records[k].last)[:excess]
            for key in stalest:
                del self._records[key]

    def __len__(self) -> int:
        return len(self._records)


@dataclass
class _Waiter:
    check: Callable[[], object]
    alive: Callable[[], bool]
    peer: str
    since: float


class RelayedLoginThrottle:
    """Host-wide pacing of the password checks of relayed viewers.

    Every relayed check takes a slot.  Slots follow one another at least
    L{spacing} seconds apart: 0 while fewer than C{free_failures} relayed
    wrong passwords are remembered, then C{base_delay} doubling with each
    further one up to C{max_delay}.  Wrong passwords are forgotten after
    C{quiet} seconds without one, and by a right password.  At most
    C{max_waiting} checks wait for a slot; L{submit} refuses more, so a check
    that is accepted runs within C{max_waiting * max_delay} seconds however
    many wrong passwords came before it.

    The throttle does not see passwords: the session hands it a C{check}
    callable, and L{LoginVerifier.verify} reports the outcome with L{failed}
    and L{succeeded}.  A check whose C{alive()} is false when its slot comes
    (the connection closed while it waited) is dropped without running and
    without using the slot.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        free_failures: int = 3,
        base_delay: float = 0.5,
        max_delay: float = 4.0,
        quiet: float = 60.0,
        max_waiting: int = 4,
    ) -> None:
        self.clock = clock
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.quiet = quiet
        self.max_waiting = max_waiting
        self._failures = 0
        self._last_failure = 0.0
        self._last_check: float | None = None
        self._waiting: deque[_Waiter] = deque()
        self._timer: IDelayedCall | None = None

    @property
    def failures(self) -> int:
        """Relayed wrong passwords remembered now."""
        self._forget_if_quiet()
        return self._failures

    @property
    def waiting(self) -> int:
        """Checks waiting for a slot (including any whose connection is gone)."""
        return len(self._waiting)

    def spacing(self) -> float:
        """Seconds between the last check and the next one, as things stand."""
        return self._spacing_for(self.failures)

    def _spacing_for(self, failures: int) -> float:
        extra = failures - self.free_failures
        if extra < 0:
            return 0.0
        # Capped before exponentiating so a long attack cannot overflow.
        return float(min(self.max_delay, self.base_delay * 2.0 ** min(extra, 60)))

    def submit(self, check: Callable[[], object], alive: Callable[[], bool], peer: str) -> bool:
        """Run C{check} in the next free slot (now, if it is free).

        @param alive: whether the connection still wants its check; asked
            again when the slot comes and when counting waiting checks.
        @param peer: for the log (the relay's address, as the host sees it).
        @return: False if too many checks are waiting already: the caller
            refuses the login (L{ERROR_TRY_LATER}) without checking it.
        """
        self._drop_dead()
        if len(self._waiting) >= self.max_waiting:
            _log.warn(
                "Refused a relayed login attempt from {peer}: {waiting} already wait for a "
                "password check ({failures} recent relayed wrong passwords)",
                peer=peer,
                waiting=len(self._waiting),
                failures=self.failures,
                relayed_login="refused",
            )
            return False
        self._waiting.append(_Waiter(check, alive, peer, self.clock.seconds()))
        self._run_due()
        if self._waiting and self._waiting[-1].check is check:
            _log.info(
                "Relayed login attempt from {peer} waits up to {delay:.1f} s for a password "
                "check ({failures} recent relayed wrong passwords, {waiting} waiting)",
                peer=peer,
                delay=self._wait_for_last(),
                failures=self.failures,
                waiting=len(self._waiting),
                relayed_login="delayed",
            )
        return True

    def failed(self) -> None:
        """A relayed check found a wrong password: slow the next ones down."""
        self._forget_if_quiet()
        self._failures += 1
        self._last_failure = self.clock.seconds()

    def succeeded(self) -> None:
        """A relayed check found the right password: start over."""
        self._failures = 0

    def stop(self) -> None:
        """Cancel the pending slot and drop every waiting check (host shutdown)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._waiting.clear()

    def _forget_if_quiet(self) -> None:
        if self._failures and self.clock.seconds() - self._last_failure >= self.quiet:
            self._failures = 0

    def _drop_dead(self) -> None:
        self._waiting = deque(w for w in self._waiting if _alive(w))

    def _wait_for_last(self) -> float:
        # For the log: the newcomer's wait if every check ahead of it finds
        # a wrong password (a right one makes it shorter).
        now = self.clock.seconds()
        slot = self._last_check if self._last_check is not None else now
        failures = self.failures
        for _ in self._waiting:
            slot += self._spacing_for(failures)
            failures += 1
        return max(0.0, slot - now)

    def _next_slot(self, now: float) -> float:
        if self._last_check is None:
            return now
        return self._last_check + self.spacing()

    def _run_due(self) -> None:
        if self._timer is not None and self._timer.active():
            return
        self._timer = None
        while self._waiting:
            head = self._waiting[0]
            if not _alive(head):
                # Gone while waiting: never checked, never counted.
                self._waiting.popleft()
                continue
            now = self.clock.seconds()
            due = self._next_slot(now)
            if due > now:
                self._timer = self.clock.callLater(due - now, self._slot)
                return
            self._waiting.popleft()
            # Spacing counts from when the slot was due (or from the arrival
            # of a check that found the slot free), not from when the
            # reactor got round to it: late timers must not add up.
            self._last_check = max(due, head.since)
            try:
                head.check()
            except Exception:
                _log.failure("A relayed password check failed")

    def _slot(self) -> None:
        self._timer = None
        self._run_due()


def _alive(waiter: _Waiter) -> bool:
    try:
        return bool(waiter.alive())
    except Exception:
        return False


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
