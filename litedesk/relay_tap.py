"""C{twistd litedesk-relay}: the RustDesk-compatible rendezvous server and relay.

Ports follow hbbs/hbbr: with C{--port P} the NAT test listens on P-1 (TCP),
rendezvous on P (UDP + TCP) and the relay on P+1 (TCP).  Every listener can
be replaced by an endpoint string.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.python import usage

from litedesk.discovery.protocol import DiscoveryFactory
from litedesk.discovery.state import DiscoveryRegistry
from litedesk.logfiles import make_twistd_log_private
from litedesk.option_types import nonneg_int, port_number
from litedesk.relay.service import (
    RELAY_OPT_FLAGS,
    RELAY_OPT_PARAMETERS,
    make_relay_service,
    relay_settings_from_options,
)
from litedesk.rendezvous.floodguard import FloodGuard
from litedesk.rendezvous.protocols import (
    DEFAULT_MAX_FRAME,
    NatTestProtocol,
    RendezvousDatagramProtocol,
    RendezvousStreamFactory,
    RendezvousStreamProtocol,
)
from litedesk.rendezvous.registry import Registry
from litedesk.rendezvous.relaylist import RelayList, parse_relay_list
from litedesk.rendezvous.server import RendezvousServer
from litedesk.rendezvous.service import (
    CloseOnStop,
    EndpointService,
    UDPListenerService,
    parse_udp_endpoint,
)
from litedesk.rendezvous.store import PeerStore
from litedesk.wire.keys import KeyFileError, ServerKey, resolve_key_option

DEFAULT_PORT = 21116
DB_FILE = "db_v2.sqlite3"

_log = Logger(namespace="litedesk.relay_tap")


def _escape(interface: str) -> str:
    return interface.replace(":", "\\:")


def tcp_endpoint(port: int, interface: str) -> str:
    kind = "tcp6" if ":" in interface else "tcp"
    return f"{kind}:{port}:interface={_escape(interface)}"


def udp_endpoint(port: int, interface: str) -> str:
    return f"udp:{port}:interface={_escape(interface)}"


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a LiteDesk server: a RustDesk-compatible rendezvous/ID server (hbbs: UDP+TCP "
        "on --port, NAT test on --port - 1) and relay (hbbr: --port + 1).  Unmodified "
        "RustDesk clients can use it: set their ID server to this host and their Key to the "
        "public key logged at start-up.  Options can also be read from an INI-style file "
        "given with --config (one 'name = value' per line, names as the long options)."
    )

    optFlags: list[list[Any]] = [
        [
            "always-use-relay",
            None,
            "Tell hosts to use the relay instead of hole punching (hbbs ALWAYS_USE_RELAY=Y).",
        ],
        [
            "discovery",
            None,
            "Serve the LiteDesk v1 JSON discovery protocol "
            "(--discovery-endpoint, TCP 8877 by default).",
        ],
        ["no-relay", None, "Run only the rendezvous server (hbbs), no relay."],
        ["relay-only", None, "Run only the relay (hbbr), no rendezvous server."],
        *RELAY_OPT_FLAGS,
    ]

    optParameters: list[list[Any]] = [
        ["config", "c", None, "Read options from this file first (command line wins)."],
        [
            "data-dir",
            "d",
            ".",
            "Directory for id_ed25519, id_ed25519.pub and db_v2.sqlite3 (created 0700 if missing).",
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
            "Rendezvous TCP listener endpoint string (default tcp6:P:interface=\\:\\:).",
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
    ]

    def opt_config(self, path: str) -> None:
        self["config"] = path
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise usage.UsageError(f"cannot read {path}: {e}") from None
        known = {p[0] for p in self.optParameters} | {f[0] for f in self.optFlags}
        self._from_file: dict[str, str] = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name, eq, value = line.partition("=")
            name, value = name.strip().replace("_", "-"), value.strip()
            if not eq or name not in known or name == "config":
                raise usage.UsageError(f"{path}:{n}: unknown setting {raw.strip()!r}")
            self._from_file[name] = value

    opt_c = opt_config

    def parseArgs(self) -> None:
        pass

    def __setitem__(self, key: str, value: Any) -> None:
        # Remember what the command line set, so --config does not override it.
        if getattr(self, "_parsing", False):
            self.__dict__.setdefault("_given", set()).add(key)
        super().__setitem__(key, value)

    def parseOptions(self, options: Any = None) -> None:
        self._parsing = True
        try:
            super().parseOptions(options)
        finally:
            self._parsing = False

    def postOptions(self) -> None:
        flags = {f[0] for f in self.optFlags}
        coercers = {p[0]: p[4] for p in self.optParameters if len(p) > 4}
        given: set[str] = getattr(self, "_given", set())
        # The file only fills what the command line did not set.
        for name, value in getattr(self, "_from_file", {}).items():
            if name in given:
                continue
            if name in flags:
                self[name] = 1 if value.lower() in ("1", "y", "yes", "true", "on") else 0
            else:
                self[name] = value
        # usage.Options does not coerce defaults or file values.
        for name, coerce in coercers.items():
            if isinstance(self[name], str):
                self[name] = coerce(self[name])
        if os.environ.get("ALWAYS_USE_RELAY", "").upper().startswith("Y"):
            self["always-use-relay"] = 1
        p = int(self["port"])
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
        if self["no-relay"] and self["relay-only"]:
            raise usage.UsageError("--no-relay and --relay-only exclude each other")
        self.relay_settings = relay_settings_from_options(self, os.environ)
        if self["max-frame"] < 64:
            raise usage.UsageError("--max-frame must be at least 64 bytes")


def client_settings(key: ServerKey) -> str:
    if key.signing_key is not None and key.licence:
        return f"Key = {key.public_key}"
    if key.signing_key is not None:
        return f"Key = {key.public_key} (optional: the server requires no key)"
    return f"Key = {key.licence} (a licence string: sessions are not end-to-end verified)"


def makeService(config: Options, reactor: Any = None) -> IService:
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

    top = MultiService()
    if not config["no-relay"]:
        relay = make_relay_service(
            reactor, config["relay-endpoint"], config.relay_settings, key.licence, data_dir
        )
        relay.setName("relay")
        relay.setServiceParent(top)
        _log.info(
            "Relay on {endpoint}; licence check {check}",
            endpoint=config["relay-endpoint"],
            check="on" if key.licence else "off",
        )
    if config["relay-only"]:
        return top
    db_path = data_dir / DB_FILE
    if not db_path.exists():
        # SQLite gives the -wal/-shm files the database's mode: keep all 0600.
        os.close(os.open(db_path, os.O_CREAT | os.O_WRONLY, 0o600))
    store = PeerStore(db_path, reactor)
    registry = Registry(server_serial=int(config["serial"]))
    loaded = registry.load(store.load_all())
    # The loaded peers live as long as the process: keep them out of every
    # future collection (a full GC over a million peers pauses ~0.5 s).
    gc.collect()
    gc.freeze()
    relays = RelayList(parse_relay_list(config["relay-servers"]))
    server = RendezvousServer(
        clock=reactor,
        registry=registry,
        key=key,
        relays=relays,
        store=store,
        rendezvous_servers=parse_relay_list(config["rendezvous-servers"]),
        always_use_relay=bool(config["always-use-relay"]),
        request_guard=FloodGuard(
            float(config["request-rate-per-ip"]), 10.0 * float(config["request-rate-per-ip"])
        ),
    )
    if not config["no-relay"]:
        # Viewers may name this process's own relay (clients derive host:port+1).
        def own_relay(port: Any) -> None:
            server.own_relay_port = int(port.getHost().port)

        relay.when_listening().addCallback(own_relay)
    top.server = server  # type: ignore[attr-defined]  # for tests and the status page

    guard = FloodGuard(float(config["udp-rate-per-ip"]))
    UDPListenerService(
        "rendezvous-udp",
        reactor,
        config["udp-endpoint"],
        RendezvousDatagramProtocol(server, guard, int(config["udp-rcvbuf"])),
    ).setServiceParent(top)
    # One --max-connections-per-ip (declared with the relay's options) caps
    # each TCP port: the relay's and both rendezvous ports.
    per_ip = config.relay_settings.limits.max_per_ip
    for name, description, proto in (
        ("rendezvous-tcp", config["tcp-endpoint"], RendezvousStreamProtocol),
        ("nat-test", config["nat-endpoint"], NatTestProtocol),
    ):
        factory = RendezvousStreamFactory(
            server,
            proto,
            clock=reactor,
            max_frame=int(config["max-frame"]),
            max_per_ip=per_ip,
        )
        ep = endpoints.serverFromString(reactor, description)
        EndpointService(name, ep, factory).setServiceParent(top)

    if len(relays.configured) > 1:
        TimerService(3.0, _guarded(relays.check, reactor)).setServiceParent(top)
    TimerService(
        3600.0, _guarded(lambda now: registry.ip_blocker.prune(now), reactor.seconds)
    ).setServiceParent(top)
    CloseOnStop(store.close).setServiceParent(top)

    if config["discovery"]:
        discovery = DiscoveryFactory(DiscoveryRegistry(), reactor)
        ep = endpoints.serverFromString(reactor, config["discovery-endpoint"])
        EndpointService("discovery", ep, discovery).setServiceParent(top)
        _log.info("LiteDesk v1 discovery on {endpoint}", endpoint=config["discovery-endpoint"])

    _log.info(
        "LiteDesk rendezvous server: {peers} peers loaded from {db}; public key {pk}; "
        "licence check {check}",
        peers=loaded,
        db=str(data_dir / DB_FILE),
        pk=key.public_key or "(none: not signing)",
        check="on" if key.licence else "off",
    )
    _log.info(
        "Client settings: ID server = this host{port}, Relay server = {relay}, {key}",
        port="" if int(config["port"]) == DEFAULT_PORT else f":{config['port']}",
        relay=relays.configured[0] if relays.configured else "(derived by clients: port + 1)",
        key=client_settings(key),
    )
    return top


def _guarded(fn: Any, arg: Any) -> Any:
    """Wrap a periodic job so an exception is logged and the timer keeps running."""

    def run() -> Any:
        try:
            return fn(arg() if callable(arg) else arg)
        except Exception:
            _log.failure("Periodic job {job} failed", job=getattr(fn, "__name__", fn))
            return None

    return run
