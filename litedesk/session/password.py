"""RustDesk's login hashes, the host's stored password and its challenge.

With C{h1 = SHA256(password UTF-8 || salt)} and C{h2 = SHA256(h1 || challenge)}
the viewer sends C{h2}; the host stores only C{salt} and C{h1}
(L{StoredPassword}), never the plain password.  Note that C{h1} is still a
login credential for this protocol (whoever has it can answer any challenge),
so the file holding it must be as private as a password; what storing C{h1}
buys is that the plain password, which people reuse elsewhere, is not on
disk.

This is the arithmetic both ends share (the viewer computes C{h2}, the host
checks it); the host's policy of who may try how often lives in
L{litedesk.session.login} and the modules it names.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
from dataclasses import dataclass, field

from litedesk.proto import message_pb2

__all__ = [
    "ALPHABET",
    "CHALLENGE_LENGTH",
    "ONE_TIME_LENGTHS",
    "SALT_LENGTH",
    "Challenge",
    "StoredPassword",
    "challenge_response",
    "login_password",
    "new_challenge",
    "new_one_time_password",
    "new_salt",
    "password_h1",
    "random_string",
]

# RustDesk's CHARS (hbb_common config.rs): no 0/1/l/o, which people misread.
# 32 symbols, so a salt of 32 carries 160 bits and a one-time password of 6
# carries 30.
ALPHABET = "23456789abcdefghijkmnpqrstuvwxyz"
SALT_LENGTH = 32
CHALLENGE_LENGTH = 6
ONE_TIME_LENGTHS = range(6, 11)

_STORED_PREFIX = "litedesk-password-v1"

_system_random = secrets.SystemRandom()


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
