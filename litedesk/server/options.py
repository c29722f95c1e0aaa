"""The server's options: what C{twistd litedesk-relay --help} shows and checks.

Apart from the assembly (L{litedesk.server.assembly}) because the option
table is long and is read on its own (by C{--help}, by the configuration
example's test); C{litedesk.relay_tap} re-exports it as C{Options}, the name
twistd looks for.  C{--config FILE} is read by L{litedesk.config_file}.
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar

from twisted.python import usage

from litedesk.cluster.options import (
    CLUSTER_OPT_FLAGS,
    CLUSTER_OPT_PARAMETERS,
    check_cluster_options,
)
from litedesk.config_file import ConfigFileOptions
from litedesk.option_types import nonneg_int, port_number
from litedesk.relay.service import (
    RELAY_OPT_FLAGS,
    RELAY_OPT_PARAMETERS,
    relay_settings_from_options,
)
from litedesk.rendezvous.protocols import DEFAULT_MAX_FRAME
from litedesk.rendezvous.registry import MAX_STREAM_HOSTS, MAX_STREAM_HOSTS_PER_SITE
from litedesk.rendezvous.secure_tcp import KEY_EXCHANGE_WAIT
from litedesk.services import parse_udp_endpoint
from litedesk.websocket.bridge import HANDSHAKE_TIMEOUT
from litedesk.websocket.proxy import TrustedProxies, parse_networks
from litedesk.websocket.relay import DEFAULT_MAX_MESSAGE

__all__ = [
    "CLIENT_SECURE_TCP_TIMEOUT",
    "DEFAULT_PORT",
    "RENDEZVOUS_BACKLOG",
    "ServerOptions",
    "key_exchange_wait",
    "shifted_endpoint",
    "tcp_endpoint",
    "udp_endpoint",
    "with_backlog",
]

DEFAULT_PORT = 21116

#: The listen backlog of the rendezvous stream listeners (TCP port P and the
#: WebSocket port) when their endpoint string names none.  A host in TCP or
#: WebSocket mode reconnects the moment its stream breaks, and the stock
#: client retries a refused connect after about 18 s, so after a restart
#: every such host arrives in one wave (rendezvous_mediator.rs start_all).
#: Whatever the reactor has not accepted yet waits in the kernel's accept
#: queue; past the backlog the kernel drops the handshake and the host only
#: retries after a 1 s, then 3 s, 7 s ... SYN timeout.  The kernel caps the
#: value at net.core.somaxconn (4096 by default since Linux 5.4), so asking
#: for the most every kernel accepts makes that sysctl the only knob.  More
#: would not help: a host in TCP mode waits 18 s for the KeyExchange, and at
#: the few thousand registrations a second one core serves (bench/rendezvous.py
#: part 6), a queue of 65535 takes about that long to drain.  A queued
#: connection costs the kernel a socket, and only completed handshakes queue
#: (a SYN flood meets SYN cookies instead).
RENDEZVOUS_BACKLOG = 65535
#: hbb_common READ_TIMEOUT: how long a RustDesk client waits for the server's
#: KeyExchange before it gives up on the connection ("Failed to secure tcp").
CLIENT_SECURE_TCP_TIMEOUT = 18.0


def _escape(interface: str) -> str:
    return interface.replace(":", "\\:")


def tcp_endpoint(port: int, interface: str) -> str:
    kind = "tcp6" if ":" in interface else "tcp"
    return f"{kind}:{port}:interface={_escape(interface)}"


def udp_endpoint(port: int, interface: str) -> str:
    return f"udp:{port}:interface={_escape(interface)}"


_TCP_PORT = re.compile(r"^(tcp6?:)(port=)?([0-9]+)((?::.*)?)$")


def shifted_endpoint(description: str, offset: int) -> str | None:
    """The same C{tcp:}/C{tcp6:} endpoint on port + C{offset} (port 0 stays 0).

    hbbs listens for WebSocket on its port + 2, hbbr on its relay port + 2;
    deriving from the endpoint keeps its interface and options.  None for
    other kinds of endpoint (C{ssl:}, C{unix:}, ...).
    """
    m = _TCP_PORT.match(description)
    if m is None:
        return None
    port = int(m.group(3))
    if port == 0:
        return description
    if not 0 < port + offset < 65536:
        return None
    return f"{m.group(1)}{m.group(2) or ''}{port + offset}{m.group(4)}"


_ENDPOINT_FIELD = re.compile(r"(?<!\\):")
_TAKES_BACKLOG = frozenset({"tcp", "tcp6", "ssl", "unix"})


def with_backlog(description: str, backlog: int) -> str:
    """C{description} with C{:backlog=N} added when its kind takes one and it names none.

    Only Twisted's C{tcp:}, C{tcp6:}, C{ssl:} and C{unix:} endpoints listen
    with a backlog; any other kind (C{systemd:} sockets, plugins) is left
    as it is.
    """
    fields = _ENDPOINT_FIELD.split(description)
    if fields[0].lower() not in _TAKES_BACKLOG:
        return description
    if any(f.startswith("backlog=") for f in fields[1:]):
        return description
    return f"{description}:backlog={backlog}"


def key_exchange_wait(value: str) -> float | None:
    """--key-exchange-wait: seconds (0 = at once) below the clients' 18 s, or "off"."""
    if value.strip().lower() == "off":
        return None
    try:
        x = float(value)
    except ValueError:
        raise usage.UsageError(f"not a number of seconds or 'off': {value!r}") from None
    if not 0 <= x < CLIENT_SECURE_TCP_TIMEOUT:
        # NaN fails this too.  At 18 s a waiting client has already given up.
        raise usage.UsageError(
            f"--key-exchange-wait must be 0 or more and below {CLIENT_SECURE_TCP_TIMEOUT:g} "
            f"seconds (clients stop waiting for the offer then), or 'off': {value!r}"
        )
    return x


def positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise usage.UsageError(f"not a number: {value!r}") from None
    if not 0 < x < float("inf"):
        raise usage.UsageError(f"must be a positive number: {value!r}")
    return x


class ServerOptions(ConfigFileOptions):
    """C{twistd litedesk-relay}'s command line (C{litedesk.relay_tap.Options})."""

    synopsis = "[options]"
    longdesc = (
        "Run a LiteDesk server: a RustDesk-compatible rendezvous/ID server (hbbs: UDP+TCP "
        "on --port, NAT test on --port - 1, WebSocket on --port + 2) and relay (hbbr: "
        "--port + 1, WebSocket on --port + 3) and an HTTP listener for /health and /metrics "
        "(--port - 2).  Unmodified "
        "RustDesk clients can use it: set their ID server to this host and their Key to the "
        "public key logged at start-up.  Options can also be read from an INI-style file "
        "given with --config (one 'name = value' per line, names as the long options)."
    )

    optFlags: ClassVar[list[list[Any]]] = [
        [
            "always-use-relay",
            None,
            "Tell hosts to use the relay instead of hole punching (hbbs ALWAYS_USE_RELAY=Y).",
        ],
        [
            "blur-ids",
            None,
            "In the --event-log, write peer ids as a short keyed hash instead.",
        ],
        [
            "discovery",
            None,
            "Serve the LiteDesk v1 JSON discovery protocol "
            "(--discovery-endpoint, TCP 8877 by default).",
        ],
        [
            "no-api",
            None,
            "Do not listen for HTTP (/health, /metrics) on --api-endpoint.",
        ],
        ["no-relay", None, "Run only the rendezvous server (hbbs), no relay."],
        [
            "require-login",
            None,
            "Refuse punch and relay requests that carry no valid API user token "
            "(hosts still register); users come from litedesk-admin.",
        ],
        [
            "no-udp-punch",
            None,
            "Do not broker UDP hole punching for RustDesk 1.4.1+ clients (docs/protocol.rst "
            "5.12); they punch over TCP or use the relay instead.",
        ],
        [
            "no-websocket",
            None,
            "Do not listen for WebSocket clients (rendezvous on P+2, relay on P+3).",
        ],
        ["relay-only", None, "Run only the relay (hbbr), no rendezvous server."],
        *RELAY_OPT_FLAGS,
        *CLUSTER_OPT_FLAGS,
    ]

    optParameters: ClassVar[list[list[Any]]] = [
        ["config", "c", None, "Read options from this file first (command line wins)."],
        [
            "data-dir",
            "d",
            ".",
            "Directory for id_ed25519, id_ed25519.pub and db_v2.sqlite3 (created 0700 if missing).",
        ],
        [
            "database",
            None,
            "",
            "Peer database: empty = db_v2.sqlite3 in --data-dir; postgresql://USER:PASS@HOST/DB "
            "= PostgreSQL (needs litedesk[postgresql]). Default: $LITEDESK_DATABASE, which keeps "
            "the password out of ps.",
        ],
        [
            "port",
            "p",
            str(DEFAULT_PORT),
            "Rendezvous port P: UDP+TCP P, NAT test TCP P-1, relay TCP P+1.",
            port_number,
        ],
        ["interface", "i", "::", "Address to listen on ('::' = all, IPv4 and IPv6)."],
        [
            "key",
            "k",
            "-",
            "hbbs -k: '-' (default) loads or creates id_ed25519 and requires "
            "its public key from clients; '' loads or creates it and requires nothing; a base64 "
            "64-byte secret key is used as the key pair; anything else is a literal licence "
            "string (no signing).",
        ],
        [
            "relay-servers",
            "r",
            "",
            "Comma-separated relay servers (host[:port]) handed to "
            "peers, round robin over those passing a TCP health check every 3 s.",
        ],
        [
            "rendezvous-servers",
            "R",
            "",
            "Comma-separated rendezvous servers sent to clients "
            "in ConfigUpdate when --serial is newer than theirs.",
        ],
        [
            "serial",
            "s",
            "0",
            "Configuration serial; clients with an older one get ConfigUpdate.",
            nonneg_int,
        ],
        [
            "udp-endpoint",
            None,
            None,
            "Rendezvous UDP listener, udp:PORT[:interface=ADDR] (default from --port/--interface).",
        ],
        [
            "tcp-endpoint",
            None,
            None,
            "Rendezvous TCP listener endpoint string (default tcp6:P:interface=\\:\\:); "
            f"listens with backlog={RENDEZVOUS_BACKLOG} (capped by net.core.somaxconn) unless "
            "the string names a backlog.",
        ],
        [
            "nat-endpoint",
            None,
            None,
            "NAT-test/online-query TCP listener endpoint string (default port P-1).",
        ],
        [
            "relay-endpoint",
            None,
            None,
            "Relay TCP listener endpoint string (default port P+1, or --relay-port).",
        ],
        ["relay-port", None, None, "Relay TCP port (default P+1).", port_number],
        [
            "ws-endpoint",
            None,
            None,
            "WebSocket rendezvous listener, an endpoint string (ssl:... for WSS) "
            "[default: tcp6:21118:interface=\\:\\:; the port of --tcp-endpoint + 2]; "
            "backlog as --tcp-endpoint.",
        ],
        [
            "ws-relay-endpoint",
            None,
            None,
            "WebSocket relay listener, an endpoint string (ssl:... for WSS) "
            "[default: tcp6:21119:interface=\\:\\:; the port of --relay-endpoint + 2].",
        ],
        [
            "trusted-proxy",
            None,
            "",
            "A reverse proxy (CIDR) whose X-Real-IP / X-Forwarded-For headers name "
            "the WebSocket client; repeatable, or comma-separated. Other sources' "
            "headers are ignored.",
        ],
        [
            "ws-max-message",
            None,
            str(DEFAULT_MAX_MESSAGE),
            "Largest WebSocket message on the relay, bytes (on the rendezvous port: --max-frame).",
            nonneg_int,
        ],
        [
            "ws-handshake-timeout",
            None,
            f"{HANDSHAKE_TIMEOUT:g}",
            "Seconds for a WebSocket connection's opening handshake (TLS included).",
            positive_float,
        ],
        [
            "api-endpoint",
            None,
            None,
            "HTTP listener for /health and /metrics, an endpoint string (ssl:... for HTTPS) "
            "[default: tcp6:21114:interface=\\:\\:; the port of --tcp-endpoint - 2].",
        ],
        [
            "metrics-allow",
            None,
            "",
            "A network (CIDR) whose clients may read /metrics besides loopback; "
            "repeatable, or comma-separated. Others get 403.",
        ],
        [
            "event-log",
            None,
            "",
            "Append one JSON line per event (relay pair ended, punch request, "
            "registration refused) to this file (created 0600).",
        ],
        [
            "public-host",
            None,
            "",
            "This server's name or address as clients should type it, for the client "
            "config string in the log and the console; empty: the machine's host name.",
        ],
        [
            "token-lifetime",
            None,
            "30",
            "Days an API or console sign-in token stays valid.",
            positive_float,
        ],
        [
            "discovery-endpoint",
            None,
            "tcp6:8877:interface=\\:\\:",
            "LiteDesk v1 discovery listener (with --discovery).",
        ],
        [
            "max-frame",
            None,
            str(DEFAULT_MAX_FRAME),
            "Largest TCP frame accepted on the rendezvous ports, bytes.",
            nonneg_int,
        ],
        [
            "key-exchange-wait",
            None,
            f"{KEY_EXCHANGE_WAIT:g}",
            "Seconds of silence on the rendezvous TCP port before the server offers secure "
            "TCP (KeyExchange), which logged-in clients and hosts in TCP mode wait for; "
            "0 offers at once (clients older than 1.2.0 then see a stray message), 'off' "
            f"never (those clients then fail). Below {CLIENT_SECURE_TCP_TIMEOUT:g}.",
            key_exchange_wait,
        ],
        [
            "stream-hosts-per-ip",
            None,
            str(MAX_STREAM_HOSTS_PER_SITE),
            "Hosts registered over TCP or WebSocket from one IPv4 address or IPv6 /64 "
            "(0 = unlimited; --max-connections-per-ip also applies).",
            nonneg_int,
        ],
        [
            "max-stream-hosts",
            None,
            str(MAX_STREAM_HOSTS),
            "Hosts registered over TCP or WebSocket in all, each holding a connection "
            "(0 = unlimited: only the open-file limit bounds them).",
            nonneg_int,
        ],
        [
            "udp-rate-per-ip",
            None,
            "500",
            "UDP datagrams per second accepted from one source "
            "IP, bursts of twice that (0 = unlimited). A host sends one every 15 s.",
            nonneg_int,
        ],
        [
            "request-rate-per-ip",
            None,
            "2",
            "Punch/relay requests per second accepted from one source IP on the "
            "rendezvous TCP port, bursts of ten times that (0 = unlimited). Each makes a "
            "host act; a viewer needs at most 6 per connection attempt.",
            nonneg_int,
        ],
        [
            "udp-rcvbuf",
            "M",
            "0",
            "UDP receive buffer in bytes (hbbs -M/RMEM; 0 = the system default).",
            nonneg_int,
        ],
        *RELAY_OPT_PARAMETERS,
        *CLUSTER_OPT_PARAMETERS,
    ]

    def parseArgs(self) -> None:
        pass

    def opt_metrics_allow(self, value: str) -> None:
        """Repeatable: each one adds networks."""
        self["metrics-allow"] = f"{self.get('metrics-allow') or ''} {value}".strip()

    def opt_trusted_proxy(self, value: str) -> None:
        """Repeatable: each one adds networks."""
        self["trusted-proxy"] = f"{self.get('trusted-proxy') or ''} {value}".strip()

    def postOptions(self) -> None:
        # The file fills what the command line did not set, then every
        # parameter is coerced (usage.Options skips defaults and file values).
        super().postOptions()
        if os.environ.get("ALWAYS_USE_RELAY", "").upper().startswith("Y"):
            self["always-use-relay"] = 1
        self["database"] = self["database"] or os.environ.get("LITEDESK_DATABASE", "")
        if self["database"] and not self["database"].startswith(("postgresql://", "postgres://")):
            raise usage.UsageError("--database takes a postgresql:// URL (or nothing, for SQLite)")
        p = int(self["port"])
        check_cluster_options(self, p)
        iface = self["interface"]
        if self["udp-endpoint"] is None:
            self["udp-endpoint"] = udp_endpoint(p, iface)
        parse_udp_endpoint(self["udp-endpoint"])
        if self["tcp-endpoint"] is None:
            self["tcp-endpoint"] = tcp_endpoint(p, iface)
        if self["nat-endpoint"] is None:
            self["nat-endpoint"] = tcp_endpoint(p - 1, iface)
        if self["relay-endpoint"] is None:
            relay_port = self["relay-port"] if self["relay-port"] is not None else p + 1
            # Twisted's default listen backlog of 50 overflows under a burst of
            # connections (a flood, or every peer reconnecting at once): the
            # kernel then drops or resets them, legitimate ones included.
            self["relay-endpoint"] = tcp_endpoint(int(relay_port), iface) + ":backlog=4096"
        self._websocket_endpoints(p, iface)
        if self["no-relay"] and self["relay-only"]:
            raise usage.UsageError("--no-relay and --relay-only exclude each other")
        self.relay_settings = relay_settings_from_options(self, os.environ)
        if self["max-frame"] < 64:
            raise usage.UsageError("--max-frame must be at least 64 bytes")
        try:
            self.trusted_proxies = TrustedProxies(parse_networks([self["trusted-proxy"] or ""]))
        except ValueError as e:
            raise usage.UsageError(f"--trusted-proxy: {e}") from None
        self._api_options(p, iface)
        if 0 < self["ws-max-message"] < self.relay_settings.max_first_frame:
            raise usage.UsageError("--ws-max-message must hold a --relay-max-first-frame")

    def _api_options(self, p: int, iface: str) -> None:
        """The HTTP listener is on P-2 (where RustDesk clients look for an API server)."""
        if self["api-endpoint"] is None and not self["no-api"]:
            shifted = shifted_endpoint(self["tcp-endpoint"], -2)
            if shifted is None and p < 3:
                raise usage.UsageError("--port below 3 has no P-2: give --api-endpoint or --no-api")
            self["api-endpoint"] = shifted or tcp_endpoint(p - 2, iface)
        if self["require-login"] and (self["no-api"] or self["relay-only"]):
            raise usage.UsageError(
                "--require-login needs the rendezvous server and its API server (users log in "
                "there): drop --no-api and --relay-only"
            )
        try:
            self.metrics_allow = parse_networks([self["metrics-allow"] or ""], strict=True)
        except ValueError as e:
            raise usage.UsageError(f"--metrics-allow: {e}") from None

    def _websocket_endpoints(self, p: int, iface: str) -> None:
        """hbbs' WebSocket port is P+2, hbbr's the relay port + 2."""
        if self["ws-endpoint"] is None:
            self["ws-endpoint"] = shifted_endpoint(self["tcp-endpoint"], 2) or tcp_endpoint(
                p + 2, iface
            )
        if self["ws-relay-endpoint"] is None:
            relay = self["relay-port"] if self["relay-port"] is not None else p + 1
            self["ws-relay-endpoint"] = shifted_endpoint(self["relay-endpoint"], 2) or tcp_endpoint(
                int(relay) + 2, iface
            )
