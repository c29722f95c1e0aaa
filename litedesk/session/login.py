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
password and the current one-time password, with a per-source
L{FailureLimiter} (6 wrong passwords within a minute from one source: that
source is refused for a minute) and rotation of the one-time password after
10 consecutive failures from anywhere.  Time comes from an injected
L{IReactorTime}; nothing here does I/O.
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

from twisted.internet.interfaces import IReactorTime
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


class LoginVerifier:
    """The host's password check for C{LoginRequest}s.

    @ivar permanent: the stored permanent password, or None.
    @ivar limiter: the per-source L{FailureLimiter}.
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

    def verify(self, source: str, challenge: str, password: bytes) -> LoginResult:
        """Check C{LoginRequest.password} from C{source} for C{challenge}.

        Never raises, whatever the input: it is fed straight from the
        network.

        @param source: the peer's address (see L{source_key}).
        @param challenge: the challenge this connection was sent.
        @param password: C{LoginRequest.password}.
        """
        try:
            return self._verify(source, challenge, password)
        except Exception:
            _log.failure("Password check failed on unexpected input")
            return LoginResult(False, ERROR_WRONG_PASSWORD)

    def _verify(self, source: str, challenge: str, password: bytes) -> LoginResult:
        source = str(source)
        refusal = self.limiter.refusal(source)
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
            self.limiter.succeeded(source)
            self._consecutive_failures = 0
            method = "permanent" if permanent_ok else "one-time"
            _log.info(
                "Login from {source} with the {method} password",
                source=source_key(source),
                method=method,
            )
            return LoginResult(True, "", method)
        self.limiter.failed(source)
        self._consecutive_failures += 1
        _log.info(
            "Wrong password from {source} ({consecutive} in a row)",
            source=source_key(source),
            consecutive=self._consecutive_failures,
        )
        if self._one_time is not None and self._consecutive_failures >= self.rotate_after:
            self._consecutive_failures = 0
            _log.warn(
                "{count} wrong passwords in a row: replacing the one-time password",
                count=self.rotate_after,
            )
            self.rotate_one_time_password()
        return LoginResult(False, ERROR_WRONG_PASSWORD)
