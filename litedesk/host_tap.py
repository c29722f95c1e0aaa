"""C{twistd litedesk-host}: the agent on the machine being controlled.

It keeps the host's id and Ed25519 key registered with a rendezvous server,
answers the server's pushes (LAN address, relay), accepts direct connections
when C{--listen} is given, maps a session port on the gateway with C{--upnp},
and serves sessions: pinned TLS, password login, screen out (mss + H.264/VP9),
input and clipboard in (pynput, xclip).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import endpoints
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python import usage

from litedesk.fdlimit import raise_nofile_limit
from litedesk.host.identity import (
    HostIdentity,
    IdentityError,
    load_or_create_identity,
    write_private,
)
from litedesk.host.paths import HostPaths
from litedesk.host.registration import Event, Registration
from litedesk.host.rendezvous_client import RendezvousClient, parse_server
from litedesk.logfiles import make_twistd_log_private
from litedesk.option_types import nonneg_int
from litedesk.rendezvous.service import UDPListenerService
from litedesk.session.admission import DEFAULT_PER_SOURCE, DEFAULT_TOTAL, Admission
from litedesk.session.host_certificate import host_context_factory
from litedesk.session.host_session import Display, HostContext, HostSession
from litedesk.session.login import LoginVerifier
from litedesk.session.password import StoredPassword
from litedesk.session.tls import tls_server_factory, wrap_server
from litedesk.viewer.route import ConnectError, server_key_bytes

PASSWORD_FILE = "password"
# Without --password-file the current one-time password is here (0600),
# never in the log: twistd logs may be read by others or shipped elsewhere.
ONE_TIME_PASSWORD_FILE = "one-time-password"
UPNP_LOCAL_PORT = 21118  # RustDesk's direct-access port
_log = Logger(namespace="litedesk.host")


def _default_config_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/litedesk-host"
    return str(Path.home() / ".config" / "litedesk-host")


class Options(usage.Options):
    synopsis = "--rendezvous HOST[:PORT] --key SERVER_PUBKEY [options]"
    longdesc = (
        "Make this desktop reachable: register with a LiteDesk (or RustDesk) rendezvous "
        "server and serve viewers.  The id is written to CONFIG_DIR/id and logged; with "
        "no --password-file a one-time password is generated and written to "
        f"CONFIG_DIR/{ONE_TIME_PASSWORD_FILE} (mode 0600; the log says where, never what)."
    )
    optFlags: list[list[Any]] = [
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
    ]
    optParameters: list[list[Any]] = [
        [
            "config-dir",
            "c",
            None,
            "Where id, uuid, key and password hash live "
            "(default /var/lib/litedesk-host as root, else ~/.config/litedesk-host).",
        ],
        ["rendezvous", "r", None, "Rendezvous server HOST[:PORT] (port 21116 by default)."],
        [
            "relay-server",
            None,
            "",
            "Relay HOST[:PORT] for relay legs instead of the one the server names or "
            "rendezvous host:port+1 (RustDesk's relay-server option); viewers may also name it.",
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
    ]

    def parseArgs(self) -> None:
        pass

    def postOptions(self) -> None:
        if self["config-dir"] is None:
            self["config-dir"] = _default_config_dir()
        if self["rendezvous"] is None and self["listen"] is None:
            raise usage.UsageError("give --rendezvous (and --key), or --listen, or both")
        if self["rendezvous"] is not None:
            if not self["key"]:
                raise usage.UsageError(
                    "--key is required with --rendezvous: without the server's public key "
                    "viewers could not verify this host"
                )
            try:
                server_key_bytes(self["key"])
            except ConnectError:
                raise usage.UsageError("--key must be the server's base64 public key") from None
            try:
                self.server = parse_server(self["rendezvous"])
            except ValueError:
                raise usage.UsageError(f"bad --rendezvous {self['rendezvous']!r}") from None
        self.discovery_server: tuple[str, int] | None = None
        if self["discovery-server"] is not None:
            try:
                self.discovery_server = parse_server(self["discovery-server"], 8877)
            except ValueError:
                raise usage.UsageError(
                    f"bad --discovery-server {self['discovery-server']!r}"
                ) from None
        elif self["rendezvous"] is not None:
            self.discovery_server = (self.server[0], 8877)
        if self["codec"] not in ("h264", "vp9"):
            raise usage.UsageError("--codec must be h264 or vp9")
        if self["display"] is None:
            self["display"] = os.environ.get("DISPLAY")
        self.upnp_listen_port = UPNP_LOCAL_PORT
        if self["upnp"] and self["listen"] is not None:
            m = re.match(r"tcp6?:(?:port=)?(\d+)(?::|$)", self["listen"])
            if m is None or int(m.group(1)) == 0:
                raise usage.UsageError("--upnp with --listen needs a fixed TCP port (tcp:PORT)")
            self.upnp_listen_port = int(m.group(1))


def load_password(config_dir: Path, password_file: str | None) -> StoredPassword | None:
    """Hash a given password into the config dir, or load the stored hash."""
    stored_path = config_dir / PASSWORD_FILE
    if password_file is not None:
        try:
            text = Path(password_file).read_text().strip("\r\n")
        except OSError as e:
            raise SystemExit(f"litedesk-host: cannot read {password_file}: {e}") from None
        if not text:
            raise SystemExit(f"litedesk-host: {password_file} is empty")
        if stored_path.exists():
            try:
                old = StoredPassword.from_text(stored_path.read_text())
                if old.matches(text):
                    return old
            except ValueError:
                pass
        stored = StoredPassword.create(text)
        write_private(stored_path, stored.to_text() + "\n")
        return stored
    if stored_path.exists():
        try:
            return StoredPassword.from_text(stored_path.read_text())
        except ValueError as e:
            raise SystemExit(f"litedesk-host: {stored_path}: {e}") from None
    return None


def _displays(display: str | None) -> list[Display]:
    from litedesk.screen.capture import CaptureError, list_displays

    try:
        found = list_displays(display)
    except CaptureError as e:
        raise SystemExit(f"litedesk-host: cannot open display {display}: {e}") from None
    return [Display(d.x, d.y, d.width, d.height, d.name, d.primary) for d in found]


class _HostRuntime(Service):
    """Starts and stops what the sessions share (input thread, clipboard watcher)."""

    def __init__(
        self, ctx: HostContext, paths: HostPaths | None, watcher: Any, worker: Any, cursor: Any
    ) -> None:
        self.cursor = cursor
        self.ctx = ctx
        self.paths = paths
        self.watcher = watcher
        self.worker = worker

    def startService(self) -> None:
        super().startService()
        try:
            self.cursor.start()
        except Exception as e:
            _log.warn("Cursor tracking is off: {error}", error=e)
        if self.watcher is not None:
            try:
                self.watcher.start()
            except Exception as e:
                _log.warn("Clipboard sync is off: {error}", error=e)
                self.watcher = None
                self.ctx.clipboard = None

    def stopService(self) -> Any:
        super().stopService()
        for s in list(self.ctx.sessions):
            if s.transport is not None:
                s.transport.loseConnection()
        self.cursor.stop()
        if self.paths is not None:
            self.paths.stop()
        if self.watcher is not None:
            self.watcher.stop()
            # The clipboard's xclip owner process would outlive the agent.
            self.watcher.clipboard.stop()
        if self.worker is not None:
            return self.worker.stop()
        return None


class _UpnpService(Service):
    """C{--upnp}: a session listener on a fixed port (unless C{--listen} is it), mapped."""

    def __init__(self, reactor: Any, mapper: Any, factory: Any) -> None:
        self.reactor = reactor
        self.mapper = mapper
        self.factory = factory
        self.port: Any = None

    def startService(self) -> None:
        super().startService()
        if self.factory is not None:
            try:
                self.port = self.reactor.listenTCP(self.mapper.internal_port, self.factory)
            except Exception as e:
                _log.error(
                    "UPnP: cannot listen on TCP {port}: {error}",
                    port=self.mapper.internal_port,
                    error=e,
                )
                return
        d = self.mapper.start()
        d.addErrback(lambda f: _log.failure("UPnP: port mapping failed", f))

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            self.port.stopListening()
            self.port = None
        return self.mapper.stop()


def _registration_logger(identity: HostIdentity, server: str) -> Any:
    def log(event: Event) -> None:
        if event.kind == "registered":
            _log.info(
                "Registered with {server} as id {peer_id}", server=server, peer_id=identity.peer_id
            )
        elif event.kind == "refused":
            _log.error(
                "Registration refused by {server}: {detail}", server=server, detail=event.detail
            )
        elif event.kind == "unreachable":
            _log.warn(
                "Rendezvous server {server} is not answering ({detail}); retrying",
                server=server,
                detail=event.detail,
            )
        elif event.kind == "reachable":
            _log.info("Rendezvous server {server} answers again", server=server)
        else:
            _log.info("Registration: {kind} {detail}", kind=event.kind, detail=event.detail)

    return log


def makeService(config: Options, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    config_dir = Path(config["config-dir"])
    try:
        identity = load_or_create_identity(config_dir, config["id"])
    except IdentityError as e:
        raise SystemExit(f"litedesk-host: {e}") from None
    make_twistd_log_private(config)
    permanent = load_password(config_dir, config["password-file"])
    display = config["display"]
    one_time_path = config_dir / ONE_TIME_PASSWORD_FILE
    if permanent is not None:
        # A one-time password left from a run without --password-file no
        # longer logs in: do not leave it lying around.
        one_time_path.unlink(missing_ok=True)

    def rotated(pw: str) -> None:
        _publish_one_time_password(one_time_path, pw, "replaced after wrong passwords")

    verifier = LoginVerifier(
        reactor, permanent, one_time=permanent is None, on_one_time_rotated=rotated
    )

    from litedesk.input.clipboard import ClipboardWatcher, XClipboard
    from litedesk.input.inject import InputInjector, InputWorker
    from litedesk.screen.streamer import ScreenStreamer

    displays = _displays(display)
    worker = None
    if not config["view-only"]:
        worker = InputWorker(InputInjector(display=display), reactor)

    def make_streamer(deliver: Any, buffered: Any, codec: str) -> Any:
        return ScreenStreamer(reactor, deliver, buffered, display=display, codec=codec)

    # Like the relay: the soft open-file limit up to the hard one, and the
    # unauthenticated sessions (one descriptor each) to a quarter of it, so
    # that a flood of them never starves the logged-in sessions, X, the
    # rendezvous socket and the relay legs of descriptors.
    nofile = raise_nofile_limit()
    unauthenticated = DEFAULT_TOTAL if nofile < 0 else max(16, min(DEFAULT_TOTAL, nofile // 4))
    _log.info(
        "Open-file limit {nofile}; at most {total} unauthenticated connections, "
        "{per_source} per source",
        nofile=nofile,
        total=unauthenticated,
        per_source=DEFAULT_PER_SOURCE,
    )
    ctx = HostContext(
        peer_id=identity.peer_id,
        verifier=verifier,
        clock=reactor,
        make_streamer=make_streamer,
        displays=displays,
        input=worker,
        view_only=bool(config["view-only"]),
        max_viewers=int(config["max-viewers"]),
        admission=Admission(reactor, total=unauthenticated),
    )
    watcher = None
    if not config["view-only"]:
        clipboard = XClipboard(display=display, reactor=reactor)
        watcher = ClipboardWatcher(
            clipboard, ctx.clipboard_changed, display=display, reactor=reactor
        )
        ctx.clipboard = watcher
        ctx.read_clipboard = clipboard.get_text
    from litedesk.screen.cursor import CursorTracker

    cursor = CursorTracker(reactor, display, ctx.cursor_moved, ctx.cursor_changed)
    tls_options = host_context_factory(identity.signing_key, identity.peer_id)

    def make_session(relayed: bool = False) -> Any:
        return wrap_server(HostSession(ctx, config["codec"], relayed=relayed), tls_options)

    top = MultiService()
    paths = None
    upnp_port = None
    if config["upnp"]:
        from litedesk.nat.upnp import UpnpMapper

        mapper = UpnpMapper(reactor, config.upnp_listen_port)
        upnp_factory = None
        if config["listen"] is None:
            upnp_factory = tls_server_factory(
                Factory.forProtocol(lambda: HostSession(ctx, config["codec"])), tls_options
            )
        _UpnpService(reactor, mapper, upnp_factory).setServiceParent(top)
        upnp_port = lambda: mapper.mapped_port  # noqa: E731
    if config["rendezvous"] is not None:
        server = config.server
        nat_type = None
        if not config["no-nat-test"]:
            from litedesk.nat.nattype import NatTypeService, monitor_for

            monitor = monitor_for(reactor, server)
            NatTypeService(monitor).setServiceParent(top)
            nat_type = lambda: monitor.nat_type  # noqa: E731
        paths = HostPaths(
            reactor,
            identity.peer_id,
            server,
            config["key"],
            make_session,
            on_event=_registration_logger(identity, config["rendezvous"]),
            nat_type=nat_type,
            force_relay=bool(config["force-relay"]),
            relay_server=config["relay-server"],
            upnp_port=upnp_port,
        )
        reg = Registration(identity.peer_id, identity.uuid, identity.public_key)
        client = RendezvousClient(reg, server, paths, reactor)
        iface = "::" if _needs_ipv6(server[0]) else "0.0.0.0"
        UDPListenerService(
            "rendezvous-udp",
            reactor,
            f"udp:0:interface={iface.replace(':', chr(92) + ':')}",
            client,
        ).setServiceParent(top)
    if config["listen"] is not None:
        factory = tls_server_factory(
            Factory.forProtocol(lambda: HostSession(ctx, config["codec"], direct=True)),
            tls_options,
        )
        svc = StreamServerEndpointService(
            endpoints.serverFromString(reactor, config["listen"]), factory
        )
        svc.setName("listen")
        svc._raiseSynchronously = True
        svc.setServiceParent(top)
    _HostRuntime(ctx, paths, watcher, worker, cursor).setServiceParent(top)
    if config["discoverable"]:
        from litedesk.viewer.browse import DiscoverableService

        DiscoverableService(
            reactor,
            identity.peer_id,
            config.discovery_server,
            lan_port=int(config["lan-discovery-port"]),
        ).setServiceParent(top)
    top.ctx = ctx  # type: ignore[attr-defined]  # for tests
    top.identity = identity  # type: ignore[attr-defined]

    _log.info(
        "LiteDesk host id {peer_id}, key {pk}, display {display} ({n} monitor(s)){view_only}",
        peer_id=identity.peer_id,
        pk=__import__("base64").b64encode(identity.public_key).decode(),
        display=display,
        n=len(displays),
        view_only=", view only" if config["view-only"] else "",
    )
    if permanent is None and verifier.one_time_password is not None:
        _publish_one_time_password(
            one_time_path, verifier.one_time_password, "no permanent password (--password-file)"
        )
    return top


def _publish_one_time_password(path: Path, password: str, why: str) -> None:
    """Write the one-time password to its 0600 file and log only where it is."""
    try:
        write_private(path, password + "\n")
    except OSError as e:
        _log.error("Cannot write the one-time password to {path}: {error}", path=str(path), error=e)
        return
    _log.warn(
        "One-time password ({why}): read it from {path}",
        why=why,
        path=str(path),
        one_time_password_file=str(path),
    )


def _needs_ipv6(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return all(i[0] == socket.AF_INET6 for i in infos)
