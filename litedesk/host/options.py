"""The host agent's options: what C{twistd litedesk-host --help} shows and checks.

Apart from the agent's assembly (L{litedesk.host.agent}) because the option
table is long and is read on its own (by C{--help}, by the tests of each
option's check); C{litedesk.host_tap} re-exports it as C{Options}, the name
twistd looks for.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, ClassVar

from twisted.python import usage

from litedesk.discovery.client import DISCOVERY_PORT
from litedesk.host.passwords import ONE_TIME_PASSWORD_FILE
from litedesk.host.server_list import parse_server_list
from litedesk.option_types import nonneg_int
from litedesk.websocket.urls import WebSocketServer, is_ws_url, load_ca_file
from litedesk.wire.address import Address, parse_host_port
from litedesk.wire.keys import BadPublicKey, server_key_bytes

__all__ = ["UPNP_LOCAL_PORT", "HostOptions"]

UPNP_LOCAL_PORT = 21118  # RustDesk's direct-access port


def _default_config_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/litedesk-host"
    return str(Path.home() / ".config" / "litedesk-host")


class HostOptions(usage.Options):
    """C{twistd litedesk-host}'s command line (C{litedesk.host_tap.Options})."""

    synopsis = (
        "--rendezvous HOST[:PORT][,HOST[:PORT]...]|ws(s)://NAME/ --key SERVER_PUBKEY [options]"
    )
    longdesc = (
        "Make this desktop reachable: register with a LiteDesk (or RustDesk) rendezvous "
        "server and serve viewers.  The id is written to CONFIG_DIR/id and logged; with "
        "no --password-file a one-time password is generated and written to "
        f"CONFIG_DIR/{ONE_TIME_PASSWORD_FILE} (mode 0600; the log says where, never what)."
    )
    optFlags: ClassVar[list[list[Any]]] = [
        ["view-only", None, "Show the screen but refuse all input and clipboard changes."],
        [
            "discoverable",
            None,
            "List this host for 'Browse' in viewers: register with the server's LiteDesk v1 "
            "discovery listener (when it runs one) and answer LAN discovery pings.",
        ],
        [
            "force-relay",
            None,
            "Never hole-punch: answer every viewer through the relay (LAN path stays).",
        ],
        ["no-nat-test", None, "Skip the NAT type test; answer viewers through the relay."],
        [
            "upnp",
            None,
            "Map a port on the Internet gateway (UPnP IGD, needs miniupnpc) to a session "
            f"listener (the --listen port, else TCP {UPNP_LOCAL_PORT}) and advertise it "
            "to viewers; the mapping is renewed and removed on shutdown.",
        ],
        [
            "natpmp",
            None,
            "Map a port on the gateway with PCP (RFC 6887), or NAT-PMP (RFC 6886) when it "
            "only speaks that: the host's QUIC port (UDP) and its session listener (TCP) on "
            f"--natpmp-port (default: the --listen port, else {UPNP_LOCAL_PORT}), both to one "
            "external port, advertised to viewers like a UPnP port; renewed, and removed on "
            "shutdown.",
        ],
        [
            "no-udp",
            None,
            "Never punch UDP or run QUIC; viewers then use TCP punching (and --natpmp maps "
            "the TCP port only).",
        ],
        [
            "no-rustdesk-clients",
            None,
            "Refuse stock RustDesk clients (they are told so in their login error box). "
            "By default every session stream (--listen, LAN, hole-punched, UPnP and relay "
            "legs) serves both LiteDesk viewers (TLS 1.3) and RustDesk clients (RustDesk's "
            "secure channel): the host sends its signed key first and the peer's answer "
            "names the protocol.",
        ],
        [
            "rustdesk-clients",
            None,
            "Accepted for old configurations; RustDesk clients are served by default.",
        ],
        [
            "allow-insecure-rustdesk",
            None,
            "Let a RustDesk client that declines encryption in (its session runs in "
            "plaintext, logged as insecure); refused otherwise.",
        ],
        [
            "websocket",
            None,
            "Reach the server only over WebSocket (a server behind a reverse proxy on 443): "
            "register on a WebSocket stream instead of UDP, and answer every viewer "
            "through the relay, over WebSocket too.  A HOST[:PORT] --rendezvous maps as "
            "RustDesk maps it (an IP address: ws://IP:PORT+2; a name: wss://NAME/ws/id); "
            "a ws:// or wss:// URL implies this option.",
        ],
        [
            "no-file-transfer",
            None,
            "Refuse file-transfer sessions (viewers are told 'No permission of file "
            "transfer').  --view-only refuses them too.",
        ],
    ]
    optParameters: ClassVar[list[list[Any]]] = [
        [
            "config-dir",
            "c",
            None,
            "Where id, uuid, key and password hash live "
            "(default /var/lib/litedesk-host as root, else ~/.config/litedesk-host).",
        ],
        [
            "rendezvous",
            "r",
            None,
            "Rendezvous server HOST[:PORT] (port 21116 by default), or a comma-separated "
            "list of them (the nodes of a cluster): the host registers with the first that "
            "answers and moves to the next when it stops answering; servers a ConfigUpdate "
            "names are added after them (kept in CONFIG_DIR/rendezvous-servers).  With "
            "--websocket each is a HOST[:PORT] or a ws:// or wss:// URL "
            "(wss://NAME/ is a reverse proxy's /ws/id and /ws/relay).",
        ],
        [
            "relay-server",
            None,
            "",
            "Relay HOST[:PORT] for relay legs instead of the one the server names or "
            "rendezvous host:port+1 (RustDesk's relay-server option); viewers may also name it. "
            "With --websocket it maps as --rendezvous does, or give a ws:// or wss:// URL.",
        ],
        ["key", "k", None, "The rendezvous server's public key (its id_ed25519.pub)."],
        ["id", None, None, "Use this id instead of the stored or generated one."],
        [
            "password-file",
            None,
            None,
            "File holding the permanent password; only a salted hash of it is kept in CONFIG_DIR.",
        ],
        ["display", None, None, "X display to capture and control (default $DISPLAY)."],
        ["max-viewers", None, "4", "Concurrent logged-in viewers (0 = unlimited).", nonneg_int],
        [
            "listen",
            None,
            None,
            "Also accept direct connections on this endpoint "
            "(e.g. tcp:21118), for 'litedesk-viewer HOST:PORT' without a server.",
        ],
        [
            "discovery-server",
            None,
            None,
            "With --discoverable: the discovery listener HOST[:PORT] "
            "(default: the rendezvous server's host, port 8877).",
        ],
        [
            "lan-discovery-port",
            None,
            "21119",
            "With --discoverable: UDP port for LAN discovery pings (0 = off).",
            nonneg_int,
        ],
        [
            "codec",
            None,
            "h264",
            "Default video codec: h264 or vp9 (viewers may ask for the other).",
        ],
        [
            "file-root",
            None,
            None,
            "The directory file transfers stay inside (default: the home directory of the "
            "user the host runs as); paths outside it, symlinks leading out included, are "
            "refused.",
        ],
        [
            "natpmp-gateway",
            None,
            None,
            "With --natpmp: the gateway's IPv4 address (default: the default route's gateway).",
        ],
        [
            "natpmp-port",
            None,
            None,
            "With --natpmp: the local UDP and TCP port to map (default: the --listen port, "
            f"else {UPNP_LOCAL_PORT}).",
        ],
        [
            "ws-ca",
            None,
            None,
            "With --websocket: a PEM file of the certificates a wss:// server must chain to "
            "(a private CA or a self-signed server) instead of the system's CAs.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["allow-forward"] = []

    def opt_allow_forward(self, target: str) -> None:
        """Let viewers forward a port to HOST:PORT as this machine reaches it
        (repeatable; without it every port forward is refused)."""
        try:
            host, port = parse_host_port(target, 0)
        except ValueError:
            raise usage.UsageError(f"bad --allow-forward {target!r}: give HOST:PORT") from None
        if not 0 < port < 65536:
            raise usage.UsageError(f"bad --allow-forward {target!r}: give HOST:PORT")
        self["allow-forward"].append((host, port))

    def parseArgs(self) -> None:
        pass

    def postOptions(self) -> None:
        if self["config-dir"] is None:
            self["config-dir"] = _default_config_dir()
        if self["rendezvous"] is None and self["listen"] is None:
            raise usage.UsageError("give --rendezvous (and --key), or --listen, or both")
        self.ws_server: WebSocketServer | None = None
        self.servers: list[Address] = []
        self.ws_servers: list[WebSocketServer] = []
        if self["rendezvous"] is not None:
            self._check_rendezvous()
        self._check_websocket()
        self.discovery_server: tuple[str, int] | None = None
        if self["discovery-server"] is not None:
            try:
                self.discovery_server = parse_host_port(self["discovery-server"], DISCOVERY_PORT)
            except ValueError:
                raise usage.UsageError(
                    f"bad --discovery-server {self['discovery-server']!r}"
                ) from None
        elif self["rendezvous"] is not None:
            self.discovery_server = (self.server[0], DISCOVERY_PORT)
        if self["allow-insecure-rustdesk"] and self["no-rustdesk-clients"]:
            raise usage.UsageError(
                "--allow-insecure-rustdesk and --no-rustdesk-clients contradict each other"
            )
        if self["rustdesk-clients"] and self["no-rustdesk-clients"]:
            raise usage.UsageError("--rustdesk-clients and --no-rustdesk-clients contradict")
        if self["codec"] not in ("h264", "vp9"):
            raise usage.UsageError("--codec must be h264 or vp9")
        if self["display"] is None:
            self["display"] = os.environ.get("DISPLAY")
        self.upnp_listen_port = self._upnp_listen_port()
        self.natpmp_port = self._natpmp_port()
        self.file_root = self._file_root()

    def _file_root(self) -> Path | None:
        """Where file transfers stay inside, or None when they are refused."""
        if self["no-file-transfer"] or self["view-only"]:
            return None
        root = Path(self["file-root"] or Path.home()).expanduser()
        if not root.is_dir():
            raise usage.UsageError(f"--file-root {str(root)!r} is not a directory")
        return root.resolve()

    def _check_rendezvous(self) -> None:
        """--rendezvous needs the server's key (to be verifiable) and a host[:port]."""
        if not self["key"]:
            raise usage.UsageError(
                "--key is required with --rendezvous: without the server's public key "
                "viewers could not verify this host"
            )
        try:
            server_key_bytes(self["key"])
        except BadPublicKey:
            raise usage.UsageError("--key must be the server's base64 public key") from None
        if any(is_ws_url(e) for e in self["rendezvous"].split(",")):
            self["websocket"] = True
        if self["websocket"]:
            self.ws_servers = self._ws_servers()
            self.ws_server = self.ws_servers[0]
            self.servers = [(ws.host, ws.port) for ws in self.ws_servers]
            self.server = self.servers[0]
            return
        try:
            self.servers = parse_server_list(self["rendezvous"])
        except ValueError as e:
            raise usage.UsageError(f"bad --rendezvous: {e}") from None
        self.server = self.servers[0]

    def _ws_servers(self) -> list[WebSocketServer]:
        """--websocket's servers: each entry a ws:// or wss:// URL, or a HOST[:PORT]
        mapped as RustDesk maps it; two entries may not name one server."""
        found: dict[Address, str] = {}
        servers: list[WebSocketServer] = []
        for entry in (e.strip() for e in self["rendezvous"].split(",")):
            if not entry:
                raise usage.UsageError(f"bad --rendezvous {self['rendezvous']!r}: empty entry")
            try:
                ws = WebSocketServer.from_option(entry)
            except ValueError as e:
                raise usage.UsageError(f"bad --rendezvous {entry!r}: {e}") from None
            other = found.setdefault((ws.host, ws.port), entry)
            if other != entry:
                raise usage.UsageError(
                    f"bad --rendezvous: {other!r} and {entry!r} name the same server"
                )
            if ws not in servers:
                servers.append(ws)
        return servers

    def _check_websocket(self) -> None:
        """--websocket needs a server; --ws-ca a readable PEM file; --upnp is pointless."""
        if self["websocket"] and self["rendezvous"] is None:
            raise usage.UsageError("--websocket needs --rendezvous")
        if self["ws-ca"] is not None:
            if not self["websocket"]:
                raise usage.UsageError("--ws-ca only applies with --websocket")
            try:
                load_ca_file(self["ws-ca"])
            except ValueError as e:
                raise usage.UsageError(f"--ws-ca: {e}") from None
        for flag in ("upnp", "natpmp"):
            if self["websocket"] and self[flag]:
                raise usage.UsageError(
                    f"--{flag} has no use with --websocket: every viewer comes through the relay"
                )

    def _upnp_listen_port(self) -> int:
        """The local port the UPnP mapping points at: the --listen port, else our own."""
        if not (self["upnp"] and self["listen"] is not None):
            return UPNP_LOCAL_PORT
        return self._listen_port("--upnp")

    def fixed_listen_port(self) -> int | None:
        """The TCP port of --listen when it names one (tcp:PORT), else None."""
        m = re.match(r"tcp6?:(?:port=)?(\d+)(?::|$)", self["listen"] or "")
        if m is None or int(m.group(1)) == 0:
            return None
        return int(m.group(1))

    def _listen_port(self, flag: str) -> int:
        port = self.fixed_listen_port()
        if port is None:
            raise usage.UsageError(f"{flag} with --listen needs a fixed TCP port (tcp:PORT)")
        return port

    def _natpmp_port(self) -> int:
        """The local UDP and TCP port --natpmp maps (0 without --natpmp)."""
        for name in ("natpmp-gateway", "natpmp-port"):
            if self[name] is not None and not self["natpmp"]:
                raise usage.UsageError(f"--{name} only applies with --natpmp")
        if self["natpmp-gateway"] is not None:
            try:
                ipaddress.IPv4Address(self["natpmp-gateway"])
            except ValueError:
                raise usage.UsageError("--natpmp-gateway must be an IPv4 address") from None
        if not self["natpmp"]:
            return 0
        if self["natpmp-port"] is not None:
            try:
                port = int(self["natpmp-port"])
            except ValueError:
                port = 0
            if not 0 < port < 65536:
                raise usage.UsageError("--natpmp-port must be a port number (1-65535)")
            return port
        if self["listen"] is not None:
            return self._listen_port("--natpmp")
        return UPNP_LOCAL_PORT
