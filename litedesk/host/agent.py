"""The host agent: every service C{twistd litedesk-host} runs, assembled.

L{build_host_agent} turns the parsed options into a L{HostAgent}, a named
C{MultiService} whose attributes (C{identity}, C{ctx}, C{paths}, C{listen},
...) are the objects it built, so tests and tools reach them by name instead
of by walking services.  The agent keeps the host's id and Ed25519 key
registered with a rendezvous server (one of several, moving on when it stops
answering: L{litedesk.host.rendezvous_setup}), answers the server's pushes (LAN
address, relay), accepts direct connections when C{--listen} is given, maps
a session port on the gateway with C{--upnp}, and serves sessions: pinned
TLS, password login, screen out (mss + H.264/VP9), input and clipboard in
(pynput, xclip).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.interfaces import IProtocol
from twisted.logger import Logger

from litedesk.fdlimit import raise_nofile_limit
from litedesk.heap import keep_freed_memory
from litedesk.host.discoverable import DiscoverableService
from litedesk.host.identity import HostIdentity, IdentityError, load_or_create_identity
from litedesk.host.options import HostOptions
from litedesk.host.passwords import (
    ONE_TIME_PASSWORD_FILE,
    load_password,
    publish_one_time_password,
)
from litedesk.host.paths import HostPaths
from litedesk.host.rendezvous_client import StreamRendezvousClient
from litedesk.host.rendezvous_setup import add_rendezvous
from litedesk.logfiles import make_twistd_log_private
from litedesk.quic.host import QuicHost
from litedesk.quic.tls_config import host_configuration
from litedesk.rustdesk.detect import (
    DetectingFactory,
    ProtocolDetector,
    RustDeskRefusal,
    rustdesk_host_protocol,
)
from litedesk.rustdesk.secure import HostHandshake
from litedesk.services import EndpointService, UDPListenerService
from litedesk.session.admission import DEFAULT_PER_SOURCE, DEFAULT_TOTAL, Admission
from litedesk.session.host_certificate import host_context_factory
from litedesk.session.host_context import Display, HostContext
from litedesk.session.host_session import HostSession
from litedesk.session.login import LoginVerifier
from litedesk.session.tls import wrap_server

__all__ = ["HostAgent", "HostRuntime", "UpnpService", "build_host_agent"]

_log = Logger(namespace="litedesk.host")


class HostAgent(MultiService):
    """The running host: its identity, the sessions' shared context, and its services.

    Attributes are C{None} where the options did not ask for that part
    (no C{--rendezvous}: no C{paths} nor C{rendezvous_udp}; no C{--listen}:
    no C{listen}; C{--websocket}: C{rendezvous_stream} instead of
    C{rendezvous_udp} and C{nat_test}; and so on).
    """

    def __init__(self, identity: HostIdentity, ctx: HostContext, verifier: LoginVerifier) -> None:
        super().__init__()
        self.identity = identity
        self.ctx = ctx
        self.verifier = verifier
        self.paths: HostPaths | None = None
        self.rendezvous_udp: UDPListenerService | None = None
        self.rendezvous_stream: StreamRendezvousClient | None = None
        self.listen: EndpointService | None = None
        self.upnp: UpnpService | None = None
        self.natpmp: Service | None = None
        self.nat_test: Service | None = None
        self.discoverable: DiscoverableService | None = None
        self.runtime: HostRuntime | None = None


class HostRuntime(Service):
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


class UpnpService(Service):
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


class _Sessions:
    """Builds the host's session protocols: every stream speaks first with C{SignedId}.

    docs/protocol.rst §11.5: the peer's answer names its protocol, LiteDesk's
    TLS session or RustDesk's channel, on every path alike.
    """

    def __init__(
        self,
        ctx: HostContext,
        codec: str,
        tls_options: Any,
        identity: HostIdentity,
        reactor: Any,
        *,
        rustdesk_clients: bool,
        allow_insecure: bool,
    ) -> None:
        self.ctx = ctx
        self.codec = codec
        self.tls_options = tls_options
        self.identity = identity
        self.reactor = reactor
        self.rustdesk_clients = rustdesk_clients
        self.allow_insecure = allow_insecure

    def tls_session(self, direct: bool = False, relayed: bool = False, path: str = "?") -> Any:
        session = HostSession(self.ctx, self.codec, direct=direct, relayed=relayed)
        session.path = path
        return wrap_server(session, self.tls_options)

    def rustdesk_session(self, direct: bool, relayed: bool, path: str = "?") -> IProtocol:
        # A stock client inside the channel (docs/protocol.rst §11.5), or
        # the refusal it shows when RustDesk clients are turned off.
        if not self.rustdesk_clients:
            return RustDeskRefusal()
        session = HostSession(self.ctx, self.codec, direct=direct, relayed=relayed, rustdesk=True)
        session.path = path
        return session

    def detecting_session(
        self, direct: bool = False, relayed: bool = False, path: str = "?"
    ) -> ProtocolDetector:
        handshake = HostHandshake(
            self.identity.signing_key,
            self.identity.peer_id,
            allow_insecure=self.allow_insecure,
            offer_tls=True,
        )
        return ProtocolDetector(
            handshake,
            lambda: self.tls_session(direct=direct, relayed=relayed, path=path),
            lambda begun, release: rustdesk_host_protocol(
                begun,
                lambda: self.rustdesk_session(direct, relayed, path),
                self.reactor,
                release,
            ),
            self.reactor,
            admission=self.ctx.admission,
            shared=relayed,
        )

    def quic_session(self, addr: Any, path: str = "udp") -> IProtocol | None:
        """A session for a viewer's QUIC connection (QUIC carries the TLS itself)."""
        session = HostSession(self.ctx, self.codec, direct=False, relayed=False)
        session.path = path
        session.carrier = "quic"
        return session

    def make_quic_host(self, path: str) -> QuicHost:
        """A QUIC host socket protocol whose sessions are labelled C{path}."""
        return QuicHost(
            host_configuration(self.identity.signing_key, self.identity.peer_id),
            lambda addr: self.quic_session(addr, path),
            self.reactor,
        )

    def make_session(self, relayed: bool = False, path: str = "") -> Any:
        """A session protocol for a stream the host opened or adopted (paths.py)."""
        return self.detecting_session(relayed=relayed, path=path or _default_path(relayed))

    def factory(self, direct: bool, path: str = "") -> Any:
        """A listening factory (--listen, UPnP, NAT-PMP)."""
        label = path or ("listen" if direct else "upnp")
        return DetectingFactory(lambda: self.detecting_session(direct=direct, path=label))


def _default_path(relayed: bool) -> str:
    return "relay" if relayed else "direct"


def _monitors(display: str | None) -> list[Display]:
    """The monitors of C{display} now (sessions re-read them: monitors come and go)."""
    from litedesk.screen.capture import list_displays

    return [Display(d.x, d.y, d.width, d.height, d.name, d.primary) for d in list_displays(display)]


def _displays(display: str | None) -> list[Display]:
    from litedesk.screen.capture import CaptureError

    try:
        return _monitors(display)
    except CaptureError as e:
        raise SystemExit(f"litedesk-host: cannot open display {display}: {e}") from None


def _unauthenticated_limit() -> int:
    # Like the relay: the soft open-file limit up to the hard one, and the
    # unauthenticated sessions (one descriptor each) to a quarter of it, so
    # that a flood of them never starves the logged-in sessions, X, the
    # rendezvous socket and the relay legs of descriptors.
    nofile = raise_nofile_limit()
    keep_freed_memory()
    unauthenticated = DEFAULT_TOTAL if nofile < 0 else max(16, min(DEFAULT_TOTAL, nofile // 4))
    _log.info(
        "Open-file limit {nofile}; at most {total} unauthenticated connections, "
        "{per_source} per source",
        nofile=nofile,
        total=unauthenticated,
        per_source=DEFAULT_PER_SOURCE,
    )
    return unauthenticated


def build_host_agent(config: HostOptions, reactor: Any = None) -> HostAgent:
    """Build (not start) the agent the parsed options describe.

    @raise SystemExit: with the reason, when the identity, the password file
        or the display cannot be used.
    """
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
        publish_one_time_password(one_time_path, pw, "replaced after wrong passwords")

    verifier = LoginVerifier(
        reactor, permanent, one_time=permanent is None, on_one_time_rotated=rotated
    )
    displays = _displays(display)
    agent = _assemble(config, reactor, identity, verifier, displays)
    _log.info(
        "LiteDesk host id {peer_id}, key {pk}, display {display} ({n} monitor(s)){view_only}",
        peer_id=identity.peer_id,
        pk=base64.b64encode(identity.public_key).decode(),
        display=display,
        n=len(displays),
        view_only=", view only" if config["view-only"] else "",
    )
    if permanent is None and verifier.one_time_password is not None:
        publish_one_time_password(
            one_time_path, verifier.one_time_password, "no permanent password (--password-file)"
        )
    return agent


def _assemble(
    config: HostOptions,
    reactor: Any,
    identity: HostIdentity,
    verifier: LoginVerifier,
    displays: list[Display],
) -> HostAgent:
    from litedesk.input.clipboard import ClipboardWatcher, XClipboard
    from litedesk.input.inject import InputInjector
    from litedesk.input.worker import InputWorker
    from litedesk.screen.cursor import CursorTracker
    from litedesk.screen.streamer import ScreenStreamer

    display = config["display"]
    codec = config["codec"]
    worker = None
    if not config["view-only"]:
        worker = InputWorker(InputInjector(display=display), reactor)

    def make_streamer(deliver: Any, buffered: Any, codec: str) -> Any:
        return ScreenStreamer(reactor, deliver, buffered, display=display, codec=codec)

    ctx = HostContext(
        peer_id=identity.peer_id,
        verifier=verifier,
        clock=reactor,
        make_streamer=make_streamer,
        displays=displays,
        list_displays=lambda: _monitors(display),
        input=worker,
        view_only=bool(config["view-only"]),
        max_viewers=int(config["max-viewers"]),
        admission=Admission(reactor, total=_unauthenticated_limit()),
        file_root=config.file_root,
        allow_forward=tuple(config["allow-forward"]),
    )
    watcher = None
    if not config["view-only"]:
        clipboard = XClipboard(display=display, reactor=reactor)
        watcher = ClipboardWatcher(
            clipboard, ctx.clipboard_changed, display=display, reactor=reactor
        )
        ctx.clipboard = watcher
        ctx.read_clipboard = clipboard.get_text
    cursor = CursorTracker(reactor, display, ctx.cursor_moved, ctx.cursor_changed)
    tls_options = host_context_factory(identity.signing_key, identity.peer_id)

    sessions = _Sessions(
        ctx,
        codec,
        tls_options,
        identity,
        reactor,
        rustdesk_clients=not config["no-rustdesk-clients"],
        allow_insecure=bool(config["allow-insecure-rustdesk"]),
    )
    make_session = sessions.make_session
    session_factory = sessions.factory

    agent = HostAgent(identity, ctx, verifier)
    upnp_port = None
    if config["upnp"]:
        from litedesk.nat.upnp import UpnpMapper

        mapper = UpnpMapper(reactor, config.upnp_listen_port)
        upnp_factory = None
        if config["listen"] is None:
            upnp_factory = session_factory(direct=False)
        agent.upnp = UpnpService(reactor, mapper, upnp_factory)
        agent.upnp.setServiceParent(agent)
        upnp_port = lambda: mapper.mapped_port  # noqa: E731
    if config["natpmp"]:
        from litedesk.host.natpmp_service import add_natpmp

        # Advertised instead of the UPnP port while it is mapped.
        upnp_port = add_natpmp(agent, config, reactor, sessions, upnp_port)
    if config["rendezvous"] is not None:
        quic = None if config["no-udp"] else sessions.make_quic_host
        add_rendezvous(agent, config, reactor, make_session, upnp_port, quic)
    if config["listen"] is not None:
        factory = session_factory(direct=True)
        ep = endpoints.serverFromString(reactor, config["listen"])
        agent.listen = EndpointService("listen", ep, factory)
        agent.listen.setServiceParent(agent)
    agent.runtime = HostRuntime(ctx, agent.paths, watcher, worker, cursor)
    agent.runtime.setServiceParent(agent)
    if config["discoverable"]:
        agent.discoverable = DiscoverableService(
            reactor,
            identity.peer_id,
            config.discovery_server,
            lan_port=int(config["lan-discovery-port"]),
        )
        agent.discoverable.setServiceParent(agent)
    return agent
