"""What the viewer makes of the rendezvous server's refusals.

The server refuses a punch request with C{PunchHoleResponse.failure} (a
code) or C{other_failure} (a text for the person), and a relay request with
C{RelayResponse.refuse_reason} (rustdesk C{src/client.rs} shows those texts
as they are).  Each becomes a L{ConnectError} whose C{reason} names the
kind, so callers decide by kind (L{litedesk.viewer.connection.FailureReason}).

A server started with C{--require-login} refuses with the texts of
L{litedesk.rendezvous.login_gate}: those become C{"login required"}, with
the command that fixes it (C{litedesk-viewer --login USER}), because the
server's own text speaks of a RustDesk app's settings.
"""

from __future__ import annotations

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.login_gate import NO_TOKEN, TOKEN_INVALID

__all__ = [
    "LOGIN_REQUIRED",
    "ConnectError",
    "LoginRequired",
    "punch_failure",
    "relay_refusal",
]

LOGIN_REQUIRED = "login required"
_LOGIN_TEXTS = frozenset({NO_TOKEN, TOKEN_INVALID})

_FAILURES = {
    rz.PunchHoleResponse.ID_NOT_EXIST: "unknown id",
    rz.PunchHoleResponse.OFFLINE: "host offline",
    rz.PunchHoleResponse.LICENSE_MISMATCH: "key mismatch",
    rz.PunchHoleResponse.LICENSE_OVERUSE: "key overuse",
}


class ConnectError(Exception):
    """Why the viewer cannot reach the host; C{reason} is one short phrase."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class LoginRequired(ConnectError):
    """A C{--require-login} refusal; C{text} is the server's own.

    @param server: the rendezvous server as C{--rendezvous} names it, or
        its (host, port): the hint names it, since the sign-in is kept per
        server.
    """

    def __init__(self, text: str, server: tuple[str, int] | str) -> None:
        if not isinstance(server, str):
            host = f"[{server[0]}]" if ":" in server[0] else server[0]
            server = f"{host}:{server[1]}"
        super().__init__(
            LOGIN_REQUIRED,
            f"{text} To sign in: litedesk-viewer --login USER --rendezvous {server} (add "
            "--api-server URL when the API server is not on the rendezvous port - 2)",
        )
        self.text = text


def punch_failure(ph: rz.PunchHoleResponse, server: tuple[str, int]) -> ConnectError:
    """The error for a C{PunchHoleResponse} without the host's address."""
    if ph.other_failure in _LOGIN_TEXTS:
        return LoginRequired(ph.other_failure, server)
    if ph.other_failure:
        return ConnectError(ph.other_failure)
    return ConnectError(_FAILURES.get(ph.failure, "punch hole failed"))


def relay_refusal(text: str, server: tuple[str, int]) -> ConnectError:
    """The error for a C{RelayResponse} with a C{refuse_reason}."""
    if text in _LOGIN_TEXTS:
        return LoginRequired(text, server)
    return ConnectError("relay refused", text)
