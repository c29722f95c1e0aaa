"""The host agent's rendezvous part: registration, failover, NAT test, push handling.

Apart from L{litedesk.host.agent} (which assembles the whole host) because
this is the part that talks to "the rendezvous server", which with
C{--rendezvous A,B,...} is whichever server the host registers with now
(L{litedesk.host.failover}): when the registration moves to another server
the push handlers' server (C{PunchHoleSent}, C{LocalAddr}, C{RelayResponse}
connections, the default relay host:port+1) and the NAT test move with it.
The servers a C{ConfigUpdate} adds are saved in the config directory
(L{litedesk.host.server_list.SAVED_SERVERS_FILE}).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from litedesk.host.identity import HostIdentity
from litedesk.host.options import HostOptions
from litedesk.host.paths import HostPaths
from litedesk.host.registration import Event, Registration, StreamRegistration
from litedesk.host.rendezvous_client import RendezvousClient, StreamRendezvousClient
from litedesk.host.server_list import (
    SAVED_SERVERS_FILE,
    ServerRotation,
    describe,
    load_saved,
    save_servers,
)
from litedesk.host.udp_paths import HostUdpPaths
from litedesk.services import UDPListenerService
from litedesk.session.links import ServerLinks
from litedesk.wire.address import Address

if TYPE_CHECKING:
    from litedesk.host.agent import HostAgent
    from litedesk.nat.nattype import NatProbe, NatTypeMonitor

__all__ = ["add_rendezvous", "registration_logger"]

_log = Logger(namespace="litedesk.host")


def registration_logger(
    identity: HostIdentity, server: Callable[[], str]
) -> Callable[[Event], None]:
    """Logs a registration event; C{server} names the server in use at the time."""

    def log(event: Event) -> None:
        if event.kind == "registered":
            _log.info(
                "Registered with {server} as id {peer_id}",
                server=server(),
                peer_id=identity.peer_id,
            )
        elif event.kind == "refused":
            _log.error(
                "Registration refused by {server}: {detail}", server=server(), detail=event.detail
            )
        elif event.kind == "unreachable":
            _log.warn(
                "Rendezvous server {server} is not answering ({detail}); retrying",
                server=server(),
                detail=event.detail,
            )
        elif event.kind == "switched":
            _log.warn("{detail}", detail=event.detail)
        elif event.kind == "reachable":
            _log.info("Rendezvous server {server} answers again", server=server())
        else:
            _log.info("Registration: {kind} {detail}", kind=event.kind, detail=event.detail)

    return log


def _needs_ipv6(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return all(i[0] == socket.AF_INET6 for i in infos)


def _nat_monitor(reactor: Any, client: Callable[[], RendezvousClient]) -> NatTypeMonitor:
    """The NAT test against the current server; its C{ConfigUpdate} goes to the client."""
    from litedesk.nat.nattype import NatTypeMonitor, probe_nat_type, resolve_ip

    async def run() -> NatProbe:
        c = client()
        host, port = c.server
        result = await probe_nat_type(
            reactor, (resolve_ip(host, port), port), serial=c.registration.serial
        )
        if result.update is not None:
            c.config_update(result.update)
        return result

    def probe() -> Deferred[NatProbe]:
        return ensureDeferred(run())

    return NatTypeMonitor(reactor, probe)


def add_rendezvous(
    agent: HostAgent,
    config: HostOptions,
    reactor: Any,
    make_session: Callable[..., Any],
    upnp_port: Callable[[], int] | None,
    make_quic_host: Callable[[str], Any] | None = None,
) -> None:
    """Registration with the rendezvous servers, the NAT test, and the paths they push.

    @param make_quic_host: a QUIC host socket protocol for a punched UDP
        path (L{litedesk.host.udp_paths}); None: no UDP punching (C{--no-udp}).
    """
    if config.ws_server is not None:
        _add_websocket_rendezvous(agent, config, reactor, make_session)
        return
    identity = agent.identity
    saved = Path(config["config-dir"]) / SAVED_SERVERS_FILE
    rotation = ServerRotation(config.servers, load_saved(saved))
    if len(rotation.servers) > 1:
        _log.info(
            "Rendezvous servers, tried in turn: {servers}",
            servers=", ".join(describe(s) for s in rotation.servers),
        )
    reg = Registration(identity.peer_id, identity.uuid, identity.public_key)
    clients: list[RendezvousClient] = []
    nat_type = None
    if not config["no-nat-test"]:
        from litedesk.nat.nattype import NatTypeService

        monitor = _nat_monitor(reactor, lambda: clients[0])
        agent.nat_test = NatTypeService(monitor)
        agent.nat_test.setServiceParent(agent)  # type: ignore[no-untyped-call]
        nat_type = lambda: monitor.nat_type  # noqa: E731
    paths = HostPaths(
        reactor,
        identity.peer_id,
        rotation.current,
        config["key"],
        make_session,
        on_event=registration_logger(identity, lambda: describe(rotation.current)),
        nat_type=nat_type,
        force_relay=bool(config["force-relay"]),
        relay_server=config["relay-server"],
        upnp_port=upnp_port,
        udp=HostUdpPaths(reactor, identity.peer_id, make_quic_host)
        if make_quic_host is not None
        else None,
    )
    agent.paths = paths

    def adopted(servers: list[Address]) -> None:
        save_servers(saved, servers)

    client = RendezvousClient(
        reg,
        rotation.current,
        paths,
        reactor,
        rotation=rotation,
        # The NAT test asks the current server at its next run (a retry, or
        # the 10-minute refresh); it is not restarted here, as a probe in
        # flight would then leave a second retry chain behind.
        on_switch=paths.use_server,
        on_adopted=adopted,
    )
    clients.append(client)
    iface = "::" if any(_needs_ipv6(s[0]) for s in rotation.servers) else "0.0.0.0"
    agent.rendezvous_udp = UDPListenerService(
        "rendezvous-udp", reactor, f"udp:0:interface={iface.replace(':', chr(92) + ':')}", client
    )
    agent.rendezvous_udp.setServiceParent(agent)  # type: ignore[no-untyped-call]


def _add_websocket_rendezvous(
    agent: HostAgent, config: HostOptions, reactor: Any, make_session: Callable[..., Any]
) -> None:
    """--websocket: registration on a WebSocket stream, every viewer through the relay.

    No UDP socket and no NAT test: a host in WebSocket mode reaches nothing
    but the server's WebSocket URLs (docs/websocket.rst §7).  With several
    servers the stream, the relay answers and the relay legs move to the
    next one together (no C{ConfigUpdate} reaches a stream-registered host).
    """
    identity = agent.identity
    by_server = {
        (ws.host, ws.port): ServerLinks((ws.host, ws.port), ws=ws, ws_ca=config["ws-ca"])
        for ws in config.ws_servers
    }
    for ws in config.ws_servers:
        if not ws.rendezvous.secure:
            _log.warn(
                "The rendezvous server {server} is plain ws://: its traffic is not encrypted "
                "(sessions are, end to end); use a wss:// URL or a host name for TLS",
                server=str(ws.rendezvous),
            )
    rotation = ServerRotation(list(by_server))
    paths = HostPaths(
        reactor,
        identity.peer_id,
        rotation.current,
        config["key"],
        make_session,
        on_event=registration_logger(identity, lambda: paths.links.describe()),
        nat_type=None,
        force_relay=True,
        relay_server=config["relay-server"],
        links=by_server[rotation.current],
    )
    agent.paths = paths
    reg = StreamRegistration(identity.peer_id, identity.uuid, identity.public_key)

    def switched(server: Address) -> None:
        paths.use_server(server, by_server[server])
        client.describe = paths.links.describe()

    client = StreamRendezvousClient(
        reg,
        lambda protocol: paths.links.open_stream(reactor, protocol),
        paths,
        reactor,
        paths.links.describe(),
        rotation=rotation,
        on_switch=switched,
    )
    agent.rendezvous_stream = client
    client.setName("rendezvous-stream")  # type: ignore[no-untyped-call]
    client.setServiceParent(agent)  # type: ignore[no-untyped-call]
