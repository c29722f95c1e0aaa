"""What every part of the HTTP listener (API, console, metrics) is handed.

One object instead of a growing argument list: the API server and the
console read the live server (its registry, relay table, counters) and share
the ops database, the accounts and the event sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from litedesk.ops.access import IPNetwork
from litedesk.ops.accounts import Accounts, SignInGuard
from litedesk.ops.client_config import ClientConfig
from litedesk.ops.opsdb import OpsDatabase

if TYPE_CHECKING:
    from litedesk.ops.event_log import EventSink
    from litedesk.server.assembly import LiteDeskServer

__all__ = ["DeviceControl", "OpsContext"]


class DeviceControl(Protocol):
    """What the console asks of the API's device state (L{litedesk.api.devices.Devices})."""

    def live(self, peer_id: str, now: float | None = None) -> object | None: ...

    def request_disconnect(self, peer_id: str, conn_id: int) -> bool: ...


@dataclass
class OpsContext:
    """The server's parts the HTTP listener reads and changes.

    @ivar top: the running server (C{top.server}, C{top.registry},
        C{top.relay} are C{None} for parts the options left out).
    @ivar reactor: time and threads.
    @ivar data_dir: the server's data directory (blocklist.txt and
        blacklist.txt, which the relay reloads, live there).
    @ivar peer_db: the peer database's path (C{None} with --relay-only).
    @ivar db: the ops database.
    @ivar accounts: users and tokens.
    @ivar events: the --event-log sink, or C{None}.
    @ivar metrics_allow: networks besides loopback that may read /metrics.
    @ivar require_login: --require-login.
    @ivar api_url: what clients type as the API server (C{""} without one).
    @ivar sign_ins: per-address sign-in limit shared by the API and console.
    @ivar client_config: the settings clients should use (the console's
        client setup page), or C{None} when the server has no key to type.
    """

    top: LiteDeskServer
    reactor: Any
    data_dir: Path
    peer_db: str | None
    db: OpsDatabase
    accounts: Accounts
    events: EventSink | None
    metrics_allow: tuple[IPNetwork, ...]
    require_login: bool
    api_url: str
    sign_ins: SignInGuard = field(default_factory=SignInGuard)
    #: Set by the API server when it is built (None: no API, nothing to ask).
    devices: DeviceControl | None = None
    client_config: ClientConfig | None = None
