"""Rendezvous servers in the test process on RustDesk's port layout.

L{tests.rendezvous_harness.start_server} binds ephemeral ports, so its NAT
test port is not P-1 and its relay is not P+1; the failover tests need the
real layout, because a host's NAT test (which carries the server's
C{ConfigUpdate}) and a viewer's punch request derive those ports from P.
Nodes of one cluster share one key pair: L{copy_key} gives a second data
directory the first one's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor

from litedesk.relay_tap import Options, makeService

from .ports import free_port_pair

__all__ = ["copy_key", "start_node", "two_port_layouts"]

reactor: Any = _reactor


def start_node(data: Path, port: int, *extra: str) -> Any:
    """litedesk-relay's services on 127.0.0.1, rendezvous port C{port} (no API).

    @return: the started L{litedesk.server.assembly.LiteDeskServer}.
    """
    opts = Options()
    opts.parseOptions(
        [
            "--data-dir",
            str(data),
            "--port",
            str(port),
            "--interface",
            "127.0.0.1",
            "--no-api",
            "--key",
            "",
            *extra,
        ]
    )
    svc = makeService(opts, reactor)
    svc.privilegedStartService()
    svc.startService()
    return svc


def two_port_layouts() -> tuple[int, int]:
    """Two rendezvous ports whose layouts (P-2 .. P+3) do not overlap."""
    first = free_port_pair()
    while True:
        second = free_port_pair()
        if abs(second - first) > 6:
            return first, second


def copy_key(source: Path, target: Path) -> None:
    """Give data directory C{target} the key pair of C{source} (created 0700)."""
    target.mkdir(mode=0o700, exist_ok=True)
    for name in ("id_ed25519", "id_ed25519.pub"):
        shutil.copy(source / name, target / name)
