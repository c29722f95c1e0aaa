"""The strings a host answers a refused login with (C{LoginResponse.error}).

They are RustDesk's own, which RustDesk viewers recognise (for example to ask
for the password again).  They have a module of their own because the
per-source limiter, the relayed-login throttle's callers and the verifier all
answer with them.
"""

from __future__ import annotations

__all__ = [
    "ERROR_EMPTY_PASSWORD",
    "ERROR_FORWARD_FAILED",
    "ERROR_NO_FILE_TRANSFER",
    "ERROR_NO_FORWARD",
    "ERROR_NO_PASSWORD_ACCESS",
    "ERROR_TOO_MANY_ATTEMPTS",
    "ERROR_TRY_LATER",
    "ERROR_WRONG_PASSWORD",
    "viewer_reason",
]

ERROR_WRONG_PASSWORD = "Wrong Password"
ERROR_TRY_LATER = "Please try 1 minute later"
ERROR_TOO_MANY_ATTEMPTS = "Too many wrong attempts"
ERROR_EMPTY_PASSWORD = "Empty Password"
ERROR_NO_PASSWORD_ACCESS = "No Password Access"
# Per connection type, checked before the password (rustdesk src/server/connection.rs,
# docs/protocol.rst §12).
ERROR_NO_FILE_TRANSFER = "No permission of file transfer"
ERROR_NO_FORWARD = "No permission of IP tunneling"
# The host could not reach the forward's target (RustDesk 1.4.9's wording).
ERROR_FORWARD_FAILED = "Failed to access remote {addr}. Please make sure it is reachable/open."

# What the viewer says for each answer, as one short phrase; "Offline" and
# "Too many viewers" come from RustDesk hosts (and a LiteDesk host's limits).
_VIEWER_REASONS = {
    ERROR_WRONG_PASSWORD: "wrong password",
    ERROR_TOO_MANY_ATTEMPTS: "wrong password (too many attempts, try later)",
    ERROR_TRY_LATER: "wrong password (too many attempts, try in a minute)",
    ERROR_EMPTY_PASSWORD: "wrong password (empty)",
    ERROR_NO_PASSWORD_ACCESS: "the host accepts no password",
    "Offline": "host offline",
    "Too many viewers": "too many viewers",
    ERROR_NO_FILE_TRANSFER: "file transfer disabled",
    ERROR_NO_FORWARD: "forward not allowed",
}


def viewer_reason(error: str) -> str:
    """The viewer's phrase for a host's C{LoginResponse.error}."""
    if error.startswith(ERROR_FORWARD_FAILED.split("{", 1)[0].rstrip()):
        return "forward target unreachable"
    return _VIEWER_REASONS.get(error, "login refused")
