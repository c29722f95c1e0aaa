"""C{--require-login}: viewers' punch and relay requests need a signed-in user.

A RustDesk app signed in to the API server puts its access token in
C{PunchHoleRequest.token} and C{RequestRelay.token} (rustdesk src/client.rs);
LiteDesk viewers do the same after C{litedesk-viewer --login}.  The gate
only asks whether the token is live (an in-memory lookup, see
L{litedesk.ops.accounts.Accounts.user_for_token}); hosts' registrations
never pass through it, so hosts stay reachable for those who may connect.

The refusal texts are what the app shows the person at the viewer, so they
say what to do.  (RustDesk shows C{PunchHoleResponse.other_failure} and
C{RelayResponse.refuse_reason} verbatim.)
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["NO_TOKEN", "TOKEN_INVALID", "LoginGate"]

NO_TOKEN = "This server requires you to log in: set its API server and log in, then connect again."
TOKEN_INVALID = (
    "Your login to this server has expired or was ended: log out, log in again, then connect."
)


class LoginGate:
    """Decides whether a request's token lets it through.

    @param user_for_token: the live user a token belongs to, or C{None}.
    """

    def __init__(self, user_for_token: Callable[[str], object | None]) -> None:
        self._user_for_token = user_for_token

    def refusal(self, token: str) -> tuple[str, str] | None:
        """C{None} to let the request through, else (log reason, text for the person)."""
        if not token:
            return "no token", NO_TOKEN
        if self._user_for_token(token) is None:
            return "token not live", TOKEN_INVALID
        return None
