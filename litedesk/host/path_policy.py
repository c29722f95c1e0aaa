"""The host's choices for a push: punch or relay, and which relay it may join.

Pure policy (no sockets), apart from L{litedesk.host.paths} which carries the
choices out.
"""

from __future__ import annotations

from collections import deque

from litedesk.nat.nattype import SYMMETRIC
from litedesk.session.links import split_relay
from litedesk.wire.addrmangle import normalize_host

KNOWN_RELAYS = 16  # relays remembered from the server's own pushes


def host_path_choice(own_nat: int | None, viewer_nat: int, force_relay: bool) -> str:
    """Why the host must answer a C{PunchHole} through the relay; "" means punch.

    C{own_nat} is None when the host runs no NAT test (then always relay).
    """
    if own_nat is None:
        return "no NAT test"
    if force_relay:
        return "relay forced"
    if viewer_nat == SYMMETRIC:
        return "viewer behind a symmetric NAT"
    if own_nat == SYMMETRIC:
        return "we are behind a symmetric NAT"
    return ""


class RelayChoice:
    """Where relay legs go, and which relays a viewer's push may name.

    A viewer names the relay in C{RequestRelay}; a relay the host was never
    told about is where an attacker wants it to connect.  Allowed: empty (our
    default), the rendezvous host's port + 1, our --relay-server, or a relay
    the server itself pushed (C{PunchHole}/C{FetchLocalAddr}).
    """

    def __init__(self, server: tuple[str, int], relay_server: str = "") -> None:
        self.server = server
        #: --relay-server: used (as RustDesk's relay-server option) before the
        #: rendezvous host:port+1 default.
        self.relay_server = relay_server.strip()
        # Relays the server chose itself (its PunchHole/FetchLocalAddr pushes).
        self._server_relays: deque[tuple[str, int]] = deque(maxlen=KNOWN_RELAYS)

    def _norm(self, entry: str) -> tuple[str, int] | None:
        try:
            host, port = split_relay(entry, *self.server)
        except ValueError:
            return None
        return normalize_host(host.strip().rstrip(".").lower()), port

    def default(self) -> tuple[str, int]:
        """Where a relay leg goes when no (known) relay is named."""
        return split_relay(self.relay_server, *self.server)

    def announced(self, provided: str) -> str:
        """The relay a host names in its answers (C{PunchHoleSent}, C{LocalAddr}).

        As a RustDesk host does (rendezvous_mediator.rs C{get_relay_server}):
        its own relay-server setting, else the one the server provided, else
        the rendezvous host on port + 1.  A RustDesk viewer on our LAN that
        then falls back to the relay uses exactly this name; an empty one
        made it give up ("Failed to make direct connection").
        """
        if self.relay_server:
            return self.relay_server
        if provided.strip():
            return provided.strip()
        host, port = self.server
        return f"[{host}]:{port + 1}" if ":" in host else f"{host}:{port + 1}"

    def remember(self, relay_server: str) -> None:
        """The server itself pushed C{relay_server}: viewers may name it later."""
        relay = self._norm(relay_server) if relay_server.strip() else None
        if relay is not None and relay not in self._server_relays:
            self._server_relays.append(relay)

    def allowed(self, relay_server: str) -> bool:
        """Empty, our default, our --relay-server, or one the server itself pushed."""
        if not relay_server.strip():
            return True
        want = self._norm(relay_server)
        if want is None:
            return False
        known = {self._norm(""), self._norm(self.relay_server)}
        return want in known or want in self._server_relays
