"""How the viewer reaches a host through the rendezvous server.

RustDesk's C{Client::_start} (docs/protocol.rst §7.3): test our NAT type
(§7.4), send C{PunchHoleRequest} from a
shared (SO_REUSEPORT) local port; the server answers directly (failure, or
the host's LAN address when both sides share a public IP), the host answers
with C{RelayResponse} when it opened a relay for us, or with
C{PunchHoleSent}, which the server turns into a C{PunchHoleResponse} with
the host's public address: then punch (L{connect_punched}), connecting from
the same local port, and fall back to C{RequestRelay} when that fails.

The host's public key must arrive signed by the server key the viewer was
configured with; without that signature there is no session, because the
TLS pin would be meaningless.

In WebSocket mode (L{litedesk.viewer.ws_route.find_host_ws}, C{--websocket}) only the server's
WebSocket URLs are reachable, so the viewer goes straight to the relay, as
a RustDesk client in WebSocket mode does (C{client.rs}: C{force_relay} when
C{use_ws()}): it asks with C{force_relay} and C{SYMMETRIC}, and the host
opens the relay.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IProtocol
from twisted.logger import Logger

from litedesk.nat.ipv6 import free_port, own_ipv6
from litedesk.nat.nattype import (
    SYMMETRIC,
    UNKNOWN,
    resolve_ip,
    wildcard_for,
)
from litedesk.nat.punch import (
    Gate,
    adopt_if_first,
    direct_timeout,
    punch_connect,
)
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.session.host_key import UnverifiedHostKey, host_key_from_signed_id_pk
from litedesk.session.links import (
    LinkError,
    RendezvousLink,
    ServerLinks,
    open_rendezvous,
    split_relay,
)
from litedesk.viewer.nat_cache import NatCache
from litedesk.viewer.punch_link import open_for_punch
from litedesk.viewer.refusals import ConnectError as ConnectError  # re-exported
from litedesk.viewer.refusals import punch_failure, relay_refusal
from litedesk.viewer.secure_rendezvous import secured_rendezvous
from litedesk.viewer.udp_route import UdpCandidate, UdpPlan
from litedesk.websocket.urls import is_ws_url
from litedesk.wire import addrmangle
from litedesk.wire.keys import BadPublicKey, server_key_bytes

VERSION = "1.4.9"  # what we claim to be: servers only sign keys for versioned clients
PUNCH_WAITS = (3.0, 6.0, 9.0)
RELAY_WAIT = 18.0
IPV6_WINDOW = 1.0  # no NAT to get through: like RustDesk's 1 s for a local address
UPNP_WINDOW = 1.0  # a port mapped on the host's gateway answers at once or not at all

_log = Logger(namespace="litedesk.viewer.route")


@dataclass(frozen=True)
class Route:
    """Where the host is and which key it must present."""

    path: str  # "lan", "relay" or "punch" (then L{connect_punched}, which may use UPnP)
    host_pk: bytes
    addr: tuple[str, int] | None = None
    relay: tuple[str, int] | None = None
    uuid: str = ""
    local: tuple[str, int] | None = None  # our shared port (punch)
    relay_server: str = ""
    peer_nat: int = UNKNOWN
    own_nat: int = UNKNOWN
    punch_time: float = 0.0
    addr6: tuple[str, int] | None = None  # the host's IPv6 endpoint, if it has one
    local6: tuple[str, int] | None = None  # ours
    try_v4: bool = True  # False: IPv4 needs the relay, only IPv6 may go direct
    upnp: tuple[str, int] | None = None  # the host's public IP and UPnP-mapped port
    relay_name: str = ""  # the relay as the host or server named it ("": the default)
    udp: UdpPlan | None = None  # path "udp": the host punches UDP (then L{connect_udp})


def parsed_server_key(server_key: str) -> bytes:
    try:
        return server_key_bytes(server_key)
    except BadPublicKey as e:
        raise ConnectError("bad server key", str(e)) from None


def signed_host_key(server_pk: bytes, signed: bytes, peer_id: str) -> bytes:
    if not signed:
        raise ConnectError(
            "key mismatch", "the rendezvous server did not sign the host key (is it keyless?)"
        )
    try:
        return host_key_from_signed_id_pk(server_pk, signed, peer_id)
    except UnverifiedHostKey as e:
        raise ConnectError("key mismatch", str(e)) from None


async def exchange(
    reactor: Any,
    server: tuple[str, int],
    msg: rz.RendezvousMessage,
    waits: tuple[float, ...],
    want: tuple[str, ...],
    link: RendezvousLink | None = None,
    links: ServerLinks | None = None,
) -> rz.RendezvousMessage:
    """Send C{msg} (again after each wait) until an answer of a wanted kind."""
    if link is None:
        try:
            if links is not None:
                link = await links.open_rendezvous(reactor)
            else:
                link = await open_rendezvous(reactor, *server)
        except LinkError as e:
            raise ConnectError("cannot reach rendezvous server", str(e)) from None
    try:
        for wait in waits:
            link.send(msg)
            try:
                while True:
                    answer = await link.next_message(reactor, wait)
                    if answer.WhichOneof("union") in want:
                        return answer
            except LinkError as e:
                if "closed" in str(e):
                    raise ConnectError("rendezvous server closed the connection") from None
        raise ConnectError("no answer from rendezvous server")
    finally:
        link.close()


def elapsed_ms(reactor: Any, t0: float) -> int:
    return int((reactor.seconds() - t0) * 1000)


async def find_host(
    reactor: Any,
    server: tuple[str, int],
    server_key: str,
    peer_id: str,
    force_relay: bool = False,
    waits: tuple[float, ...] = PUNCH_WAITS,
    relay_wait: float = RELAY_WAIT,
    nat_test: bool = True,
    token: str = "",
    udp: bool = True,
    nat_cache: NatCache | None = None,
) -> Route:
    """Ask the rendezvous server for C{peer_id}; return how to reach it.

    @param token: the API access token (C{litedesk-viewer --login}), sent in
        every punch and relay request, as a signed-in RustDesk app does: only
        on a keyed connection (L{litedesk.viewer.secure_rendezvous}).
    @param udp: offer a UDP punch (L{litedesk.viewer.udp_route}); False is
        C{--no-udp}.
    @param nat_cache: our NAT type as tested earlier on this network.
    """
    server_pk = parsed_server_key(server_key)
    try:
        server_ip = (resolve_ip(*server), server[1])
    except OSError as e:
        raise ConnectError("cannot reach rendezvous server", f"{server[0]}: {e}") from None
    link, local, own_nat = await open_for_punch(
        reactor, server_ip, force_relay, nat_test, server_pk if token else None, nat_cache
    )
    local6 = None
    if not force_relay:
        own6 = own_ipv6()
        if own6 is not None:
            local6 = (own6, free_port(own6))
    candidate = None
    if udp and not force_relay:
        candidate = _udp_candidate(reactor, server_ip, own_nat, peer_id)
    request = rz.RendezvousMessage(
        punch_hole_request=rz.PunchHoleRequest(
            id=peer_id,
            licence_key=server_key,
            nat_type=own_nat,  # type: ignore[arg-type]
            conn_type=rz.DEFAULT_CONN,
            version=VERSION,
            force_relay=force_relay,
            socket_addr_v6=addrmangle.encode(local6) if local6 is not None else b"",
            token=token,
            udp_port=candidate.local_port if candidate is not None else 0,
        )
    )
    t0 = reactor.seconds()
    try:
        answer = await exchange(
            reactor, server, request, waits, ("punch_hole_response", "relay_response"), link
        )
        route = await _route_for(
            reactor, answer, server, server_pk, peer_id, force_relay, own_nat, local, local6,
            reactor.seconds() - t0, relay_wait, token, candidate,
        )  # fmt: skip
    except BaseException:
        if candidate is not None:
            candidate.close()
        raise
    if candidate is not None and route.udp is None:
        candidate.close()
    return route


def _udp_candidate(
    reactor: Any, server_ip: tuple[str, int], own_nat: int, peer_id: str
) -> UdpCandidate | None:
    try:
        return UdpCandidate(reactor, server_ip, own_nat, peer_id)
    except OSError as e:
        _log.warn("No UDP punch: cannot open a UDP socket ({error})", error=e)
        return None


async def _route_for(
    reactor: Any,
    answer: rz.RendezvousMessage,
    server: tuple[str, int],
    server_pk: bytes,
    peer_id: str,
    force_relay: bool,
    own_nat: int,
    local: tuple[str, int],
    local6: tuple[str, int] | None,
    punch_time: float,
    relay_wait: float,
    token: str,
    candidate: UdpCandidate | None,
) -> Route:
    """The route the server's (or host's) answer gives."""
    kind = answer.WhichOneof("union")
    if kind == "relay_response":
        rr = answer.relay_response
        if rr.refuse_reason:
            raise relay_refusal(rr.refuse_reason, server)
        host_pk = signed_host_key(server_pk, rr.pk, peer_id)
        relay = split_relay(rr.relay_server, *server)
        _log.info("The host opened a relay for us ({ms} ms)", ms=int(punch_time * 1000))
        return Route("relay", host_pk, relay=relay, uuid=rr.uuid, relay_name=rr.relay_server)
    ph = answer.punch_hole_response
    if not ph.socket_addr:
        raise punch_failure(ph, server)
    host_pk = signed_host_key(server_pk, ph.pk, peer_id)
    addr = addrmangle.normalize(addrmangle.decode(ph.socket_addr))
    if ph.is_local and not force_relay:
        return Route("lan", host_pk, addr=addr)
    peer_nat = ph.nat_type if ph.WhichOneof("union") == "nat_type" else UNKNOWN
    upnp = None
    if ph.upnp_port > 0 and not force_relay:
        upnp = (addr[0], int(ph.upnp_port))
    if ph.is_udp and candidate is not None:
        _log.info(
            "The host punches UDP from {ip}:{port} ({ms} ms)",
            ip=addr[0],
            port=addr[1],
            ms=int(punch_time * 1000),
        )
        plan = UdpPlan(candidate, addr, peer_nat, upnp)
        return Route(
            "udp", host_pk, addr=addr, relay_server=ph.relay_server, peer_nat=peer_nat,
            own_nat=own_nat, punch_time=punch_time, udp=plan,
        )  # fmt: skip
    try_v4 = not (force_relay or SYMMETRIC in (own_nat, peer_nat) or ph.is_udp)
    if not try_v4 and not (ph.socket_addr_v6 and local6 is not None) and upnp is None:
        return await request_relay(
            reactor, server, peer_id, host_pk, ph.relay_server, relay_wait, None, token, server_pk
        )
    return Route(
        "punch",
        host_pk,
        addr=addr,
        local=local,
        relay_server=ph.relay_server,
        peer_nat=peer_nat,
        own_nat=own_nat,
        punch_time=punch_time,
        addr6=addrmangle.decode(ph.socket_addr_v6) if ph.socket_addr_v6 else None,
        local6=local6 if ph.socket_addr_v6 else None,
        try_v4=try_v4,
        upnp=upnp,
    )


async def connect_punched(
    reactor: Any,
    route: Route,
    server: tuple[str, int],
    licence_key: str,
    peer_id: str,
    protocol: IProtocol,
    relay_wait: float = RELAY_WAIT,
    token: str = "",
) -> str:
    """Punch to the host from our shared port; on failure go through the relay.

    Both sides with a routable IPv6 address try that first (path C{"ipv6"}):
    no NAT, only stateful firewalls the two connects open for each other.

    A host with a UPnP port mapping (C{route.upnp}) is tried before
    anything else (path C{"upnp"}): a plain connect to its public address.

    Returns the path used: C{"upnp"}, C{"ipv6"}, C{"direct"} or C{"relay"}.
    """
    assert route.addr is not None and route.local is not None
    gate = Gate()
    if route.upnp is not None:
        t0 = reactor.seconds()
        any_port = (wildcard_for(route.upnp[0]), 0)
        sock = await punch_connect(reactor, any_port, route.upnp, UPNP_WINDOW, gate)
        ok = adopt_if_first(reactor, sock, gate, "upnp", lambda: protocol)
        _log.info(
            "Direct connection to the host's UPnP port {ip}:{port}: {outcome} after {ms} ms",
            ip=route.upnp[0],
            port=route.upnp[1],
            outcome="ok" if ok else "failed",
            ms=elapsed_ms(reactor, t0),
        )
        if ok:
            return "upnp"
    if route.addr6 is not None and route.local6 is not None:
        t0 = reactor.seconds()
        sock = await punch_connect(reactor, route.local6, route.addr6, IPV6_WINDOW, gate)
        ok = adopt_if_first(reactor, sock, gate, "ipv6", lambda: protocol)
        _log.info(
            "Direct IPv6 connection to [{ip}]:{port}: {outcome} after {ms} ms",
            ip=route.addr6[0],
            port=route.addr6[1],
            outcome="ok" if ok else "failed",
            ms=elapsed_ms(reactor, t0),
        )
        if ok:
            return "ipv6"
    window = direct_timeout(False, route.peer_nat, route.own_nat, True, route.punch_time)
    t0 = reactor.seconds()
    sock = None
    if route.try_v4:
        sock = await punch_connect(reactor, route.local, route.addr, window, gate)
    if adopt_if_first(reactor, sock, gate, "connected", lambda: protocol):
        _log.info(
            "Direct (punched) connection to {ip}:{port}: ok in {ms} ms",
            ip=route.addr[0],
            port=route.addr[1],
            ms=elapsed_ms(reactor, t0),
        )
        return "direct"
    if route.try_v4:
        _log.info(
            "Direct (punched) connection to {ip}:{port}: failed after {ms} ms; trying the relay",
            ip=route.addr[0],
            port=route.addr[1],
            ms=elapsed_ms(reactor, t0),
        )
    return await relay_fallback(
        reactor, route, server, licence_key, peer_id, protocol, relay_wait, token
    )


async def relay_fallback(
    reactor: Any,
    route: Route,
    server: tuple[str, int],
    licence_key: str,
    peer_id: str,
    protocol: IProtocol,
    relay_wait: float = RELAY_WAIT,
    token: str = "",
) -> str:
    """No direct path worked: ask the host for a relay and connect C{protocol} there."""
    relayed = await request_relay(
        reactor,
        server,
        peer_id,
        route.host_pk,
        route.relay_server,
        relay_wait,
        None,
        token,
        parsed_server_key(licence_key),
    )
    links = ServerLinks(server)
    try:
        await links.connect_relay(reactor, relayed.relay_name, relayed.uuid, licence_key, protocol)
    except LinkError as e:
        raise ConnectError("cannot reach relay", str(e)) from None
    return "relay"


async def request_relay(
    reactor: Any,
    server: tuple[str, int],
    peer_id: str,
    host_pk: bytes,
    relay_server: str,
    wait: float = RELAY_WAIT,
    links: ServerLinks | None = None,
    token: str = "",
    server_pk: bytes = b"",
) -> Route:
    """Ask the host, through the server, to meet us on a relay (fresh uuid).

    With a C{token}, a TCP connection is keyed with C{server_pk} first.
    """
    uuid = str(uuidlib.uuid4())
    t0 = reactor.seconds()
    msg = rz.RendezvousMessage(
        request_relay=rz.RequestRelay(
            id=peer_id,
            uuid=uuid,
            relay_server=relay_server,
            secure=True,
            conn_type=rz.DEFAULT_CONN,
            token=token,
        )
    )
    link = await secured_rendezvous(reactor, server, links, server_pk) if token else None
    answer = await exchange(reactor, server, msg, (wait,), ("relay_response",), link, links)
    rr = answer.relay_response
    if rr.refuse_reason:
        raise relay_refusal(rr.refuse_reason, server)
    name = rr.relay_server or relay_server
    _log.info(
        "Relay {relay} agreed with the host in {ms} ms",
        relay=name or "(the default)",
        ms=elapsed_ms(reactor, t0),
    )
    relay: tuple[str, int] | None = None
    if (links is None or not links.websocket) and not is_ws_url(name):
        try:
            relay = split_relay(name, *server)
        except ValueError:
            raise ConnectError("cannot reach relay", f"bad relay server {name[:100]!r}") from None
    return Route("relay", host_pk, relay=relay, uuid=rr.uuid or uuid, relay_name=name)
