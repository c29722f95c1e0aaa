"""The rendezvous servers a host may register with: parsing, rotation, the saved list.

A host given C{--rendezvous A,B,...} registers with one server at a time and
moves to the next when the current one stops answering
(L{litedesk.host.failover}).  The servers a server pushes in
C{ConfigUpdate.rendezvous_servers} (every node of a cluster) are adopted
after the configured ones, as RustDesk 1.4.9 stores them
(C{src/rendezvous_mediator.rs} restarts its mediators when the list
changed), and saved in the host's config directory so that a host that
restarts while its first server is down still finds the others.

C{ConfigUpdate} comes from the network: its entries are checked one by one
(a bad entry is skipped, not fatal), and at most L{MAX_ADOPTED} are kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from twisted.logger import Logger

from litedesk.websocket.urls import is_ws_url
from litedesk.wire.address import DEFAULT_RENDEZVOUS_PORT, Address, parse_host_port

__all__ = [
    "MAX_ADOPTED",
    "SAVED_SERVERS_FILE",
    "ServerRotation",
    "describe",
    "load_saved",
    "parse_server_list",
    "save_servers",
    "servers_from_update",
]

#: Servers adopted from one C{ConfigUpdate} at most (a hostile or broken
#: server cannot make the host hold or try an unbounded list).
MAX_ADOPTED = 32
#: Longest entry taken from a C{ConfigUpdate} (a DNS name is at most 253).
MAX_ENTRY = 300
#: The file in the config directory that keeps the adopted servers.
SAVED_SERVERS_FILE = "rendezvous-servers"

_log = Logger(namespace="litedesk.host")


def describe(server: Address) -> str:
    """C{host:port}, with an IPv6 host in brackets, as logs name a server."""
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dedupe(servers: Iterable[Address]) -> list[Address]:
    seen: set[Address] = set()
    out: list[Address] = []
    for s in servers:
        key = (s[0].lower(), s[1])
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def parse_server_list(text: str) -> list[Address]:
    """C{--rendezvous A[:P],B[:P],...}: the servers in order, duplicates dropped.

    @raise ValueError: naming the entry that is empty or not a C{HOST[:PORT]}
        (a C{ws://} URL is not taken in a list: the caller handles one alone).
    """
    servers: list[Address] = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            raise ValueError(f"empty entry in {text.strip()!r}")
        if is_ws_url(entry):
            raise ValueError(f"{entry!r}: a ws:// or wss:// URL cannot be part of a list")
        try:
            servers.append(parse_host_port(entry, DEFAULT_RENDEZVOUS_PORT))
        except ValueError:
            raise ValueError(f"{entry!r} is not HOST[:PORT]") from None
    return _dedupe(servers)


def servers_from_update(entries: Iterable[str]) -> list[Address]:
    """The usable servers of a C{ConfigUpdate.rendezvous_servers} (peer input).

    Entries that are not C{HOST[:PORT]} are skipped; at most L{MAX_ADOPTED}.
    """
    servers: list[Address] = []
    for entry in entries:
        if len(servers) >= MAX_ADOPTED:
            break
        if len(entry) > MAX_ENTRY or is_ws_url(entry) or any(c.isspace() for c in entry.strip()):
            continue
        try:
            servers.append(parse_host_port(entry, DEFAULT_RENDEZVOUS_PORT))
        except ValueError:
            continue
    return _dedupe(servers)


def load_saved(path: Path) -> list[Address]:
    """The servers saved in C{path} (one C{HOST:PORT} a line); [] when none can be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as e:
        _log.warn("Cannot read the saved rendezvous servers {path}: {error}", path=path, error=e)
        return []
    return servers_from_update(text.splitlines())


def save_servers(path: Path, servers: list[Address]) -> None:
    """Replace C{path} with C{servers}, atomically (a crash leaves the old list or the new)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text("".join(describe(s) + "\n" for s in servers), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        _log.warn("Cannot save the rendezvous servers to {path}: {error}", path=path, error=e)


class ServerRotation:
    """The servers in the order they are tried, and the one in use.

    @ivar configured: the command line's servers, always first.
    @ivar adopted: servers a C{ConfigUpdate} named (or the saved list), after them.
    @ivar current: the server the host registers with now.
    """

    def __init__(self, configured: list[Address], adopted: Iterable[Address] = ()) -> None:
        if not configured:
            raise ValueError("at least one rendezvous server is needed")
        self.configured = _dedupe(configured)
        self.adopted: list[Address] = []
        self.current = self.configured[0]
        self.adopt(adopted)

    @property
    def servers(self) -> list[Address]:
        """Every server, configured first, without duplicates."""
        return _dedupe([*self.configured, *self.adopted])

    def _index(self, server: Address) -> int | None:
        key = (server[0].lower(), server[1])
        for i, s in enumerate(self.servers):
            if (s[0].lower(), s[1]) == key:
                return i
        return None

    def advance(self) -> Address:
        """Move to the next server (round robin) and return it."""
        servers = self.servers
        i = self._index(self.current)
        self.current = servers[0] if i is None else servers[(i + 1) % len(servers)]
        return self.current

    def adopt(self, servers: Iterable[Address]) -> bool:
        """Take C{servers} as the adopted list; whether the list of servers changed.

        The current server stays in use (it answers); if it is no longer
        listed, the next switch starts again from the first server.
        """
        before = self.servers
        configured = {(s[0].lower(), s[1]) for s in self.configured}
        self.adopted = [s for s in _dedupe(servers) if (s[0].lower(), s[1]) not in configured][
            :MAX_ADOPTED
        ]
        return self.servers != before
