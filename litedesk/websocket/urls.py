# -*- test-case-name: tests.test_websocket_litedesk -*-
"""Where a WebSocket-mode peer finds the server, and TLS for C{wss://} (sans-IO).

L{WsUrl}, L{parse_ws_url}, L{check_ws} (RustDesk's rule for a
C{HOST[:PORT]}) and L{WebSocketServer} (the rendezvous URL and the relay URL
for each relay name); L{client_tls}: the system's CAs or the certificates of
C{--ws-ca}, with no way to turn verification off (docs/websocket.rst §7.1,
§7.4).  L{litedesk.websocket.client} uses these to connect.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
)
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates

from litedesk.wire.address import DEFAULT_RENDEZVOUS_PORT, parse_host_port

#: RustDesk's relay port (hbbr), the default of a relay name without one.
DEFAULT_RELAY_PORT = 21117


# -- where things are ------------------------------------------------------------


@dataclass(frozen=True)
class WsUrl:
    """A C{ws://} or C{wss://} URL: scheme, host, port and path (no query)."""

    secure: bool
    host: str
    port: int
    path: str = "/"

    def __str__(self) -> str:
        scheme = "wss" if self.secure else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{scheme}://{host}{port}{self.path}"

    def with_path(self, path: str) -> WsUrl:
        return replace(self, path=path)


_URL = re.compile(r"(?i)^(wss?)://(\[[^\]/]*\]|[^:/\[\]?#@]+)(?::(\d{1,5}))?(/[^?#]*)?$")


def is_ws_url(text: str) -> bool:
    """Whether C{text} is meant as a WebSocket URL (RustDesk's C{is_ws_endpoint})."""
    return text.strip().lower().startswith(("ws://", "wss://"))


def parse_ws_url(text: str) -> WsUrl:
    """C{ws[s]://host[:port][/path]}; IPv6 hosts in brackets.

    @raise ValueError: another scheme, user info, a query or fragment, an
        empty host or a port outside 1..65535.
    """
    m = _URL.match(text.strip())
    if m is None:
        raise ValueError(f"not a ws:// or wss:// URL: {text.strip()[:100]!r}")
    scheme, host, port_text, path = m.groups()
    secure = scheme.lower() == "wss"
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad IPv6 address in {text.strip()[:100]!r}") from None
    port = int(port_text) if port_text else (443 if secure else 80)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not in 1..65535")
    return WsUrl(secure, host.lower(), port, path or "/")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_ws(host: str, port: int, *, relay: bool) -> WsUrl:
    """RustDesk's rule for a server given as C{HOST:PORT} in WebSocket mode.

    hbb_common C{websocket.rs} C{check_ws}: an IP address keeps its host and
    takes the port + 2 (rendezvous P -> P+2, relay R -> R+2) over plain
    C{ws://}; a name goes to the reverse proxy's paths C{/ws/id} and
    C{/ws/relay} on the default port.  RustDesk uses C{wss://} for a name
    only when its API server is C{https://}; LiteDesk has no API server and
    always uses C{wss://} for a name (docs/websocket.rst §7.1).
    """
    if _is_ip(host):
        return WsUrl(False, host, port + 2, "/")
    return WsUrl(True, host.lower(), 443, "/ws/relay" if relay else "/ws/id")


def _relay_path(path: str) -> str:
    """The relay's path next to a rendezvous path: C{/ws/id} -> C{/ws/relay}."""
    if path in ("", "/"):
        return "/ws/relay"
    head, _, _ = path.rstrip("/").rpartition("/")
    return f"{head}/relay"


@dataclass(frozen=True)
class WebSocketServer:
    """Where a peer in WebSocket mode finds its rendezvous server and relays.

    @ivar rendezvous: the rendezvous server's URL.
    @ivar relay: the default relay's URL (no relay named, or the server's own).
    @ivar host: the server's host, and C{port} its rendezvous port P, as a
        C{HOST[:PORT]} names them (for a URL: its host and P = 21116).
    @ivar from_url: the option was a URL (so relays named by the server with
        this URL's host are found behind it, see L{relay_for}).
    """

    rendezvous: WsUrl
    relay: WsUrl
    host: str
    port: int
    from_url: bool

    @classmethod
    def from_option(cls, text: str) -> WebSocketServer:
        """From C{--rendezvous}: a URL, or a C{HOST[:PORT]} mapped with L{check_ws}.

        A URL whose path is C{/} (or empty) is a reverse proxy's front: the
        rendezvous server is its C{/ws/id} and the relay its C{/ws/relay}.
        Any other path is the rendezvous server's, and the relay's path is
        the same with its last segment replaced by C{relay}.

        @raise ValueError: neither form.
        """
        if is_ws_url(text):
            url = parse_ws_url(text)
            if url.path in ("", "/"):
                rendezvous = url.with_path("/ws/id")
                relay = url.with_path("/ws/relay")
            else:
                rendezvous = url
                relay = url.with_path(_relay_path(url.path))
            return cls(rendezvous, relay, url.host, DEFAULT_RENDEZVOUS_PORT, True)
        host, port = parse_host_port(text, DEFAULT_RENDEZVOUS_PORT)
        return cls(
            check_ws(host, port, relay=False),
            check_ws(host, port + 1, relay=True),
            host,
            port,
            False,
        )

    def relay_name(self) -> str:
        """How a host names its default relay to the viewer (C{RelayResponse.relay_server}).

        For a C{HOST[:PORT]} server the name peers use without WebSocket
        (host:P+1), which each side maps by its own mode as RustDesk does;
        for a URL the relay's URL, which RustDesk clients take as it is.
        """
        if self.from_url:
            return str(self.relay)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port + 1}"

    def relay_for(self, name: str) -> WsUrl:
        """The URL of the relay a push, an answer or C{--relay-server} names.

        Empty: the default relay.  A URL: itself.  C{HOST[:PORT]}: L{check_ws}
        (port 21117 by default), except that a server given as a URL finds a
        relay on its own host behind that URL, since a relay name cannot say
        which port or path a proxy uses.

        @raise ValueError: a name that is neither.
        """
        name = name.strip()
        if not name:
            return self.relay
        if is_ws_url(name):
            return parse_ws_url(name)
        host, port = parse_host_port(name, DEFAULT_RELAY_PORT)
        if self.from_url and host.lower().rstrip(".") == self.host:
            return self.relay
        return check_ws(host, port, relay=True)


# -- TLS --------------------------------------------------------------------------


def load_ca_file(path: str) -> list[Certificate]:
    """The certificates of a PEM file (C{--ws-ca}).

    @raise ValueError: the file cannot be read or holds no certificate.
    """
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    blocks = re.findall(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, flags=re.DOTALL
    )
    certs: list[Certificate] = []
    for block in blocks:
        try:
            certs.append(Certificate.loadPEM(block))
        except Exception as e:
            raise ValueError(f"{path}: a certificate does not load ({e})") from None
    if not certs:
        raise ValueError(f"{path} holds no PEM certificate")
    return certs


def client_tls(url: WsUrl, ca_file: str | None = None) -> IOpenSSLClientConnectionCreator | None:
    """TLS client options for C{url}: None for C{ws://}.

    The server's certificate must chain to the system's CAs, or with
    C{ca_file} to one of its certificates (a private CA, a self-signed
    server), and name the URL's host.  Nothing turns the check off.
    """
    if not url.secure:
        return None
    if ca_file:
        root = trustRootFromCertificates(load_ca_file(ca_file))  # type: ignore[no-untyped-call]
        return optionsForClientTLS(url.host, trustRoot=root)
    return optionsForClientTLS(url.host)
