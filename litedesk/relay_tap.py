"""C{twistd litedesk-relay}: the RustDesk-compatible rendezvous server and relay.

The plugin only names the options and the assembly: L{ServerOptions} is the
command line (and C{--config} file), L{build_server} builds the
L{litedesk.server.assembly.LiteDeskServer}.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService

from litedesk.server.assembly import build_server
from litedesk.server.options import ServerOptions as Options

__all__ = ["Options", "makeService"]


def makeService(config: Options, reactor: Any = None) -> IService:
    return build_server(config, reactor)
