"""Password hashes for API and console users: scrypt from the standard library.

Why scrypt with these costs: it is memory-hard (an attacker with a stolen
database pays 32 MiB per guess, which defeats GPU farms far better than a
fast hash), it needs no extra dependency, and N=2**15, r=8 costs ~50-100 ms
per check on a small server: negligible for a person signing in, and the
server bounds how many run at once (L{litedesk.ops.accounts}).

Stored form: C{scrypt$<log2 N>$<r>$<p>$<salt, base64>$<hash, base64>}, so
the costs can be raised later and old hashes still verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

__all__ = ["HASH_PREFIX", "hash_password", "needs_rehash", "verify_password"]

HASH_PREFIX = "scrypt"
LOG2_N = 15
R = 8
P = 1
_SALT = 16
_LENGTH = 32
# hashlib.scrypt refuses to use more than maxmem (default 32 MiB); N=2**15,
# r=8 needs 128 * r * N = 32 MiB plus a little.
_MAXMEM = 64 * 1024 * 1024

# Verified against when the user does not exist, so an unknown name costs
# the same time as a wrong password and names cannot be probed by timing.
_DUMMY = f"{HASH_PREFIX}${LOG2_N}${R}${P}$" + "A" * 24 + "$" + "A" * 44


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """A new salted hash of C{password} in the stored form."""
    salt = os.urandom(_SALT)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=2**LOG2_N, r=R, p=P, maxmem=_MAXMEM, dklen=_LENGTH
    )
    return f"{HASH_PREFIX}${LOG2_N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether C{password} matches C{stored}; C{None} (no such user) costs the same and fails."""
    target = stored if stored is not None else _DUMMY
    try:
        prefix, log2_n, r, p, salt_b64, digest_b64 = target.split("$")
        if prefix != HASH_PREFIX or not 10 <= int(log2_n) <= 20:
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        want = base64.b64decode(digest_b64, validate=True)
        got = hashlib.scrypt(
            password.encode("utf-8", "surrogatepass"),
            salt=salt,
            n=2 ** int(log2_n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM * 2,
            dklen=len(want) or _LENGTH,
        )
    except (ValueError, TypeError):
        return False
    return stored is not None and hmac.compare_digest(got, want)


def needs_rehash(stored: str) -> bool:
    """Whether C{stored} uses weaker costs than today's (rehash at the next sign-in)."""
    return not stored.startswith(f"{HASH_PREFIX}${LOG2_N}${R}${P}$")
