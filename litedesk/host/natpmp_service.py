"""C{litedesk-host --natpmp}: the host's fixed QUIC port (and TCP session port), mapped.

Beside C{--upnp} (L{litedesk.host.agent.UpnpService}): the host listens for
QUIC on a fixed UDP port P and, unless a listener of the agent already
holds it, for sessions on TCP port P; L{NatPmpMapper} maps both to one
external port E on the gateway with PCP or NAT-PMP
(L{litedesk.nat.natpmp_mapper}).  The agent advertises E as it advertises
a UPnP port (C{upnp_port} in C{PunchHoleSent}), and a viewer that comes in
through it is on path C{natpmp} (issue 14, docs/protocol.rst §8.5 for the
session over QUIC).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from nacl.signing import SigningKey
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from litedesk.nat.natpmp_mapper import NatPmpMapper
from litedesk.quic.host import QuicHost, SessionFactory
from litedesk.quic.tls_config import host_configuration

if TYPE_CHECKING:
    from litedesk.host.identity import HostIdentity
    from litedesk.host.options import HostOptions

__all__ = ["NatPmpService", "add_natpmp", "agent_quic_host_factory"]

_log = Logger(namespace="litedesk.host.natpmp")


def agent_quic_host_factory(
    signing_key: SigningKey, peer_id: str, session_factory: SessionFactory, reactor: IReactorTime
) -> QuicHost:
    """The agent's QUIC host: its identity-key certificate, its sessions."""
    return QuicHost(host_configuration(signing_key, peer_id), session_factory, reactor)


class NatPmpService(Service):
    """Listens on the mapped port (UDP: QUIC; TCP: sessions) and keeps the mapping.

    @ivar mapper: the L{NatPmpMapper}; its C{mapped_port} is what to advertise.
    @ivar quic_host: the QUIC host on the UDP port while the service runs.
    @ivar mapping: the mapper's C{start()} once started: fires with the
        external port, or None (not mapped; logged).
    """

    def __init__(
        self,
        reactor: Any,
        mapper: NatPmpMapper,
        make_quic_host: Callable[[], DatagramProtocol] | None,
        tcp_factory: IProtocolFactory | None = None,
    ) -> None:
        """
        @param mapper: maps C{mapper.udp_port} and C{mapper.tcp_port}.
        @param make_quic_host: builds the protocol for the UDP port (None:
            no UDP, C{--no-udp}).
        @param tcp_factory: the session factory to listen with on
            C{mapper.tcp_port}; None when another listener of the agent
            (C{--listen}, C{--upnp}) already holds that port.
        """
        self.reactor = reactor
        self.mapper = mapper
        self.make_quic_host = make_quic_host
        self.tcp_factory = tcp_factory
        self.quic_host: DatagramProtocol | None = None
        self.mapping: Deferred[int | None] | None = None
        self._udp: Any = None
        self._tcp: Any = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.make_quic_host is not None and not self._listen_udp(self.make_quic_host):
            return
        if self.tcp_factory is not None and not self._listen_tcp(self.tcp_factory):
            if not self.mapper.udp_port:
                return
            self.mapper.tcp_port = 0  # map what listens, not a dead port
        self.mapping = self.mapper.start()
        self.mapping.addErrback(lambda f: _log.failure("NAT-PMP: port mapping failed", f))

    def _listen_udp(self, make_quic_host: Callable[[], DatagramProtocol]) -> bool:
        port = self.mapper.udp_port
        try:
            self.quic_host = make_quic_host()
            self._udp = self.reactor.listenUDP(port, self.quic_host)
        except Exception as e:
            _log.error("NAT-PMP: cannot listen on UDP {port}: {error}", port=port, error=e)
            return False
        _log.info("QUIC host listening on UDP {port}", port=port)
        return True

    def _listen_tcp(self, factory: IProtocolFactory) -> bool:
        port = self.mapper.tcp_port
        try:
            self._tcp = self.reactor.listenTCP(port, factory)
        except Exception as e:
            _log.error("NAT-PMP: cannot listen on TCP {port}: {error}", port=port, error=e)
            return False
        return True

    def stopService(self) -> Deferred[Any]:
        super().stopService()  # type: ignore[no-untyped-call]
        stops = [self.mapper.stop()]
        for port in (self._udp, self._tcp):
            if port is not None:
                stops.append(maybeDeferred(port.stopListening))
        self._udp = self._tcp = None
        self.quic_host = None
        return DeferredList(stops, consumeErrors=True)


class AgentParts(Protocol):
    """What L{add_natpmp} uses of the host agent (a C{MultiService})."""

    identity: HostIdentity
    natpmp: Service | None


def add_natpmp(
    agent: AgentParts,
    config: HostOptions,
    reactor: Any,
    sessions: Any,
    upnp_port: Callable[[], int] | None,
) -> Callable[[], int]:
    """Build the C{--natpmp} service into C{agent}; return the port to advertise.

    The advertised port is the NAT-PMP one when mapped, else UPnP's (when
    C{--upnp} is on too).  The TCP side listens itself unless C{--listen},
    or C{--upnp}'s own listener, already holds the port.

    @param sessions: the agent's session builder (C{quic_session(addr)} for
        QUIC, C{factory(direct)} for TCP).
    """
    port = config.natpmp_port
    if config["listen"] is not None:
        held = config.fixed_listen_port()
    else:
        held = config.upnp_listen_port if config["upnp"] else None
    no_udp = bool(config["no-udp"])
    mapper = NatPmpMapper(reactor, 0 if no_udp else port, port, config["natpmp-gateway"])
    identity = agent.identity

    def make_quic_host() -> DatagramProtocol:
        return agent_quic_host_factory(
            identity.signing_key,
            identity.peer_id,
            lambda addr: sessions.quic_session(addr, "natpmp"),
            reactor,
        )

    tcp_factory = None if port == held else sessions.factory(direct=False, path="natpmp")
    service = NatPmpService(reactor, mapper, None if no_udp else make_quic_host, tcp_factory)
    service.setServiceParent(agent)  # type: ignore[no-untyped-call]
    agent.natpmp = service
    return lambda: mapper.mapped_port or (upnp_port() if upnp_port is not None else 0)
