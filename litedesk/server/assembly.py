"""The server: every service C{twistd litedesk-relay} runs, assembled.

L{build_server} turns the parsed options into a L{LiteDeskServer}, a named
C{MultiService} whose attributes are what it built: the rendezvous server
(C{server}, its C{registry} and C{store}), the relay (C{relay}), and each
listener by name (C{rendezvous_udp}, C{rendezvous_tcp}, C{nat_test},
C{rendezvous_ws}, C{relay_ws}, C{discovery}, C{api}), so tests and tools reach them
by name.

Ports follow hbbs/hbbr: with C{--port P} the NAT test listens on P-1 (TCP),
rendezvous on P (UDP + TCP) and on P+2 (WebSocket), the relay on P+1 (TCP)
and P+3 (WebSocket); the HTTP operations listener (C{/health},
C{/metrics}) on P-2.  Every listener can be replaced by an endpoint string.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet import endpoints
from twisted.logger import Logger

from litedesk.api.root import API_SCHEMA
from litedesk.cluster.options import advertised
from litedesk.discovery.protocol import DiscoveryFactory
from litedesk.discovery.state import DiscoveryRegistry
from litedesk.logfiles import make_twistd_log_private
from litedesk.ops import users
from litedesk.ops.accounts import Accounts
from litedesk.ops.client_config import ClientConfig, default_public_host
from litedesk.ops.client_config import from_options as client_config_for
from litedesk.ops.context import OpsContext
from litedesk.ops.counters import OpsCounters
from litedesk.ops.event_log import EventLog
from litedesk.ops.opsdb import OPS_DB_FILE, OpsDatabase
from litedesk.relay.service import RelayService, make_relay_service
from litedesk.rendezvous.floodguard import FloodGuard
from litedesk.rendezvous.login_gate import LoginGate
from litedesk.rendezvous.peer_db import PeerStoreService, describe, open_peer_store
from litedesk.rendezvous.protocols import (
    NatTestProtocol,
    RendezvousDatagramProtocol,
    RendezvousStreamFactory,
    RendezvousStreamProtocol,
)
from litedesk.rendezvous.registry import Registry, StreamHosts
from litedesk.rendezvous.relaylist import RelayList, parse_relay_list
from litedesk.rendezvous.server import RendezvousServer
from litedesk.server.http_site import make_site
from litedesk.server.options import (
    DEFAULT_PORT,
    RENDEZVOUS_BACKLOG,
    ServerOptions,
    with_backlog,
)
from litedesk.services import CloseOnStop, EndpointService, UDPListenerService
from litedesk.websocket.relay import RelayBridgeFactory
from litedesk.websocket.rendezvous import RendezvousBridgeFactory
from litedesk.wire.keys import KeyFileError, ServerKey, resolve_key_option

if TYPE_CHECKING:
    from litedesk.cluster.node import ClusterNode

__all__ = [
    "DB_FILE",
    "LiteDeskServer",
    "build_server",
    "client_settings",
    "plain_http_exposed",
]

DB_FILE = "db_v2.sqlite3"

# The namespace the plugin logged under before the assembly moved here:
# operators' log filters keep working.
_log = Logger(namespace="litedesk.relay_tap")


class LiteDeskServer(MultiService):
    """The running server: rendezvous (hbbs), relay (hbbr) and discovery.

    Attributes are C{None} for the parts the options left out
    (C{--relay-only}: no rendezvous parts; C{--no-relay}: no C{relay};
    C{--no-websocket}: no C{rendezvous_ws}, C{relay_ws}; no C{--discovery}:
    no C{discovery}; C{--no-api}: no C{api}).
    """

    def __init__(self, key: ServerKey) -> None:
        super().__init__()
        self.key = key
        self.relay: RelayService | None = None
        self.server: RendezvousServer | None = None
        self.registry: Registry | None = None
        self.store: PeerStoreService | None = None
        self.rendezvous_udp: UDPListenerService | None = None
        self.rendezvous_tcp: EndpointService | None = None
        self.nat_test: EndpointService | None = None
        self.rendezvous_ws: EndpointService | None = None
        self.relay_ws: EndpointService | None = None
        self.discovery: EndpointService | None = None
        self.api: EndpointService | None = None
        #: This node of a --cluster, or None.
        self.cluster: ClusterNode | None = None
        #: Sign-ins by way in and outcome: the API and console count, /metrics reads.
        self.ops_counters = OpsCounters()
        self.accounts: Accounts | None = None
        self.events: EventLog | None = None


def client_settings(key: ServerKey) -> str:
    if key.signing_key is not None and key.licence:
        return f"Key = {key.public_key}"
    if key.signing_key is not None:
        return f"Key = {key.public_key} (optional: the server requires no key)"
    return f"Key = {key.licence} (a licence string: sessions are not end-to-end verified)"


def build_server(config: ServerOptions, reactor: Any = None) -> LiteDeskServer:
    """Build (not start) the server the parsed options describe.

    @raise SystemExit: with the reason, when the key files cannot be used.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    make_twistd_log_private(config)
    data_dir = Path(config["data-dir"])
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        key = resolve_key_option(config["key"], data_dir)
    except KeyFileError as e:
        raise SystemExit(f"litedesk-relay: {e}") from None

    top = LiteDeskServer(key)
    public_host, client_config = _client_setup(config, key)
    events = top.events = _open_event_log(top, config, reactor)
    if not config["no-relay"]:
        top.relay = make_relay_service(
            reactor, config["relay-endpoint"], config.relay_settings, key.licence, data_dir
        )
        top.relay.setName("relay")
        top.relay.relay.events = events
        top.relay.setServiceParent(top)
        _log.info(
            "Relay on {endpoint}; licence check {check}",
            endpoint=config["relay-endpoint"],
            check="on" if key.licence else "off",
        )
        if not config["no-websocket"]:
            factory = RelayBridgeFactory(
                top.relay.relay,
                proxies=config.trusted_proxies,
                max_message=int(config["ws-max-message"]),
                handshake_timeout=float(config["ws-handshake-timeout"]),
            )
            ep = endpoints.serverFromString(reactor, config["ws-relay-endpoint"])
            top.relay_ws = EndpointService("relay-websocket", ep, factory)
            top.relay_ws.setServiceParent(top)
            _log.info(
                "WebSocket relay on {endpoint}",
                endpoint=config["ws-relay-endpoint"],
            )
    if config["relay-only"]:
        _add_api(top, config, reactor, None, public_host, client_config)
        return top
    relays, loaded = _add_rendezvous(top, config, reactor, data_dir, public_host)
    if top.server is not None:
        top.server.events = events
    if config["discovery"]:
        discovery = DiscoveryFactory(DiscoveryRegistry(), reactor)
        ep = endpoints.serverFromString(reactor, config["discovery-endpoint"])
        top.discovery = EndpointService("discovery", ep, discovery)
        top.discovery.setServiceParent(top)
        _log.info("LiteDesk v1 discovery on {endpoint}", endpoint=config["discovery-endpoint"])
    db = None if config["database"] else str(data_dir / DB_FILE)
    _add_api(top, config, reactor, db, public_host, client_config)
    _log_start(config, key, relays, loaded, data_dir, client_config)
    return top


def _open_event_log(top: LiteDeskServer, config: ServerOptions, reactor: Any) -> EventLog | None:
    """The C{--event-log} sink (closed when the server stops), or None.

    @raise SystemExit: with the reason, when the file cannot be opened.
    """
    if not config["event-log"]:
        return None
    try:
        events = EventLog(config["event-log"], reactor, blur_ids=bool(config["blur-ids"]))
    except OSError as e:
        raise SystemExit(f"litedesk-relay: --event-log: {e}") from None
    CloseOnStop(events.close).setServiceParent(top)
    _log.info(
        "Event log: {path}{blur}",
        path=config["event-log"],
        blur=" (peer ids blurred)" if config["blur-ids"] else "",
    )
    return events


def _client_setup(config: ServerOptions, key: ServerKey) -> tuple[str, ClientConfig | None]:
    """The public host name and what clients type (C{None}: no key they can type).

    Worked out once: the host name may take a DNS lookup (C{getfqdn}), and the
    start-up log and the console's client setup page show the same settings.
    """
    public_host = default_public_host(config["public-host"] or "")
    # The key clients type: the public key when the server signs, else the
    # licence string (client_settings' three cases).
    client_key = key.public_key or key.licence
    if not client_key:
        return public_host, None
    resolved = {**config, "public-host": public_host}
    api = None if config["no-api"] else config["api-endpoint"]
    return public_host, client_config_for(resolved, client_key, api)


def _add_api(
    top: LiteDeskServer,
    config: ServerOptions,
    reactor: Any,
    db: str | None,
    public_host: str,
    client_config: ClientConfig | None,
) -> None:
    """The HTTP operations listener (C{top.api}), unless C{--no-api}."""
    if config["no-api"]:
        return
    ctx = _ops_context(top, config, reactor, db, public_host, client_config)
    site = make_site(ctx)
    ep = endpoints.serverFromString(reactor, config["api-endpoint"])
    top.api = EndpointService("api", ep, site)
    top.api.setServiceParent(top)
    _log.info(
        "HTTP console, API server, /health and /metrics on {endpoint}; /metrics for "
        "loopback{allow}{login}",
        endpoint=config["api-endpoint"],
        allow="".join(f", {n}" for n in config.metrics_allow),
        login="; punch and relay requests need a signed-in user" if ctx.require_login else "",
    )
    if plain_http_exposed(config["api-endpoint"]):
        _log.warn(
            "The console and API server listen on {endpoint} over plain HTTP: passwords and "
            "sign-in tokens cross the network in clear. Serve it over TLS (an ssl: endpoint or "
            "a TLS proxy) or bind it to loopback.",
            endpoint=config["api-endpoint"],
        )


def plain_http_exposed(endpoint: str) -> bool:
    """Whether C{endpoint} is a plain TCP listener reachable from other machines."""
    fields = re.split(r"(?<!\\):", endpoint)
    if fields[0].lower() not in ("tcp", "tcp6"):
        return False  # ssl:, unix: and the rest
    for field in fields[1:]:
        if field.startswith("interface="):
            host = field.removeprefix("interface=").replace("\\:", ":")
            with contextlib.suppress(ValueError):
                return not ipaddress.ip_address(host).is_loopback
            return host != "localhost"
    return True  # no interface: every address


def _ops_context(
    top: LiteDeskServer,
    config: ServerOptions,
    reactor: Any,
    db: str | None,
    public_host: str,
    client_config: ClientConfig | None,
) -> OpsContext:
    """The ops database and accounts (services of C{top}) and what the HTTP parts read."""
    data_dir = Path(config["data-dir"])
    try:
        ops_db = OpsDatabase(data_dir / OPS_DB_FILE, reactor, users.SCHEMA + API_SCHEMA)
    except (OSError, sqlite3.Error) as e:
        raise SystemExit(f"litedesk-relay: {data_dir / OPS_DB_FILE}: {e}") from None
    CloseOnStop(ops_db.close).setServiceParent(top)
    accounts = Accounts(ops_db, reactor, token_lifetime=float(config["token-lifetime"]) * 86400)
    accounts.setServiceParent(top)
    top.accounts = accounts
    if config["require-login"] and top.server is not None:
        top.server.login_gate = LoginGate(accounts.user_for_token)
    return OpsContext(
        top=top,
        reactor=reactor,
        data_dir=data_dir,
        peer_db=db,
        db=ops_db,
        accounts=accounts,
        events=top.events,
        metrics_allow=tuple(config.metrics_allow),
        require_login=bool(config["require-login"]),
        api_url=_api_address(config["api-endpoint"]).replace("this host", public_host),
        client_config=client_config,
    )


def _add_rendezvous(
    top: LiteDeskServer, config: ServerOptions, reactor: Any, data_dir: Path, public_host: str
) -> tuple[RelayList, int]:
    """The rendezvous server (hbbs): its peers, listeners and periodic jobs.

    @param public_host: the server's name for clients (worked out once at
        start-up), which a cluster node advertises unless C{--advertise}.

    @return: the relay list handed to peers and how many peers were loaded.
    """
    key = top.key
    store = top.store = open_peer_store(config["database"], data_dir / DB_FILE, reactor)
    registry = top.registry = Registry(server_serial=int(config["serial"]))
    registry.streams = StreamHosts(
        max_per_site=int(config["stream-hosts-per-ip"]),
        max_total=int(config["max-stream-hosts"]),
    )
    loaded = registry.load(store.load_all())
    # The loaded peers live as long as the process: keep them out of every
    # future collection (a full GC over a million peers pauses ~0.5 s).
    gc.collect()
    gc.freeze()
    relays = RelayList(parse_relay_list(config["relay-servers"]))
    server = top.server = RendezvousServer(
        clock=reactor,
        registry=registry,
        key=key,
        relays=relays,
        store=store,
        rendezvous_servers=parse_relay_list(config["rendezvous-servers"]),
        always_use_relay=bool(config["always-use-relay"]),
        udp_punch=not config["no-udp-punch"],
        request_guard=FloodGuard(
            float(config["request-rate-per-ip"]), 10.0 * float(config["request-rate-per-ip"])
        ),
    )
    if config["cluster"]:
        # psycopg is an extra (litedesk[postgresql]); --database has needed it already.
        from litedesk.cluster.node import ClusterNode

        top.cluster = ClusterNode(
            config["database"],
            reactor,
            server,
            config["node-id"],
            advertised(config, public_host, int(config["port"])),
            fixed_servers=bool(config["rendezvous-servers"]),
        )
        top.cluster.setServiceParent(top)
    if top.relay is not None:
        # Viewers may name this process's own relay (clients derive host:port+1).
        def own_relay(port: Any) -> None:
            server.own_relay_port = int(port.getHost().port)

        top.relay.when_listening().addCallback(own_relay)

    guard = FloodGuard(float(config["udp-rate-per-ip"]))
    top.rendezvous_udp = UDPListenerService(
        "rendezvous-udp",
        reactor,
        config["udp-endpoint"],
        RendezvousDatagramProtocol(server, guard, int(config["udp-rcvbuf"])),
    )
    top.rendezvous_udp.setServiceParent(top)
    # One --max-connections-per-ip (declared with the relay's options) caps
    # each TCP port: the relay's and both rendezvous ports.
    per_ip = config.relay_settings.limits.max_per_ip
    listeners: list[EndpointService] = []
    for name, description, proto in (
        # Hosts in TCP mode reconnect here all at once after a restart: see
        # RENDEZVOUS_BACKLOG.  Port P-1 only gets one-shot queries.
        (
            "rendezvous-tcp",
            with_backlog(config["tcp-endpoint"], RENDEZVOUS_BACKLOG),
            RendezvousStreamProtocol,
        ),
        ("nat-test", config["nat-endpoint"], NatTestProtocol),
    ):
        factory = RendezvousStreamFactory(
            server,
            proto,
            clock=reactor,
            max_frame=int(config["max-frame"]),
            max_per_ip=per_ip,
            key_exchange_wait=config["key-exchange-wait"],
        )
        ep = endpoints.serverFromString(reactor, description)
        listener = EndpointService(name, ep, factory)
        listener.setServiceParent(top)
        listeners.append(listener)
    top.rendezvous_tcp, top.nat_test = listeners
    if not config["no-websocket"]:
        ws = RendezvousBridgeFactory(
            server,
            clock=reactor,
            proxies=config.trusted_proxies,
            max_frame=int(config["max-frame"]),
            max_per_ip=per_ip,
            handshake_timeout=float(config["ws-handshake-timeout"]),
        )
        # Hosts in WebSocket mode (and a proxy's connections for them) come
        # back in the same wave as those on TCP.
        ep = endpoints.serverFromString(
            reactor, with_backlog(config["ws-endpoint"], RENDEZVOUS_BACKLOG)
        )
        top.rendezvous_ws = EndpointService("rendezvous-websocket", ep, ws)
        top.rendezvous_ws.setServiceParent(top)

    if len(relays.configured) > 1:
        TimerService(3.0, _guarded(relays.check, reactor)).setServiceParent(top)
    TimerService(
        3600.0, _guarded(lambda now: registry.ip_blocker.prune(now), reactor.seconds)
    ).setServiceParent(top)
    CloseOnStop(store.close).setServiceParent(top)
    return relays, loaded


def _log_start(
    config: ServerOptions,
    key: ServerKey,
    relays: RelayList,
    loaded: int,
    data_dir: Path,
    settings: ClientConfig | None,
) -> None:
    _log.info(
        "LiteDesk rendezvous server: {peers} peers loaded from {db}; public key {pk}; "
        "licence check {check}",
        peers=loaded,
        db=describe(config["database"], data_dir / DB_FILE),
        pk=key.public_key or "(none: not signing)",
        check="on" if key.licence else "off",
    )
    wait = config["key-exchange-wait"]
    if key.signing_key is None:
        offer = "never offered (the key is a licence string and cannot sign)"
    elif wait is None:
        offer = "never offered (--key-exchange-wait off)"
    else:
        offer = f"offered after {wait:g} s of silence"
    _log.info(
        "Secure TCP on {endpoint}: KeyExchange {offer}; hosts on streams: at most "
        "{per_ip} per IP address and {total} in all (0 = unlimited)",
        endpoint=config["tcp-endpoint"],
        offer=offer,
        per_ip=config["stream-hosts-per-ip"],
        total=config["max-stream-hosts"],
    )
    if not config["no-websocket"]:
        proxies = config.trusted_proxies.networks
        _log.info(
            "WebSocket rendezvous on {endpoint}; client addresses from X-Real-IP or "
            "X-Forwarded-For only from {proxies}",
            endpoint=config["ws-endpoint"],
            proxies=", ".join(str(n) for n in proxies) if proxies else "no trusted proxy",
        )
    _log.info(
        "Client settings: ID server = this host{port}, Relay server = {relay}, {key}, "
        "API server = {api}",
        port="" if int(config["port"]) == DEFAULT_PORT else f":{config['port']}",
        api="(none: --no-api)" if config["no-api"] else _api_address(config["api-endpoint"]),
        relay=relays.configured[0] if relays.configured else "(derived by clients: port + 1)",
        key=client_settings(key),
    )
    if settings is not None:
        _log.info(
            "Client config string (the app's ID/Relay server import, or "
            "rustdesk --config STRING): {config_string}",
            config_string=settings.string(),
        )
        if settings.api_port_dropped():
            _log.warn(
                "RustDesk clients reach an https API server on port 21114 at port 443 "
                "instead: serve HTTPS on another port (--api-endpoint) or on 443"
            )


def _api_address(endpoint: str) -> str:
    """What to type as a client's API server: http(s)://this host:PORT (the default port 21114)."""
    fields = endpoint.split(":")
    scheme = "https" if fields[0].lower() == "ssl" else "http"
    port = next(
        (f.removeprefix("port=") for f in fields[1:2] if f.removeprefix("port=").isdigit()), None
    )
    if port is None:
        return endpoint
    return f"{scheme}://this host:{port}"


def _guarded(fn: Callable[[Any], Any], arg: Any) -> Callable[[], Any]:
    """Wrap a periodic job so an exception is logged and the timer keeps running."""

    def run() -> Any:
        try:
            return fn(arg() if callable(arg) else arg)
        except Exception:
            _log.failure("Periodic job {job} failed", job=getattr(fn, "__name__", fn))
            return None

    return run
