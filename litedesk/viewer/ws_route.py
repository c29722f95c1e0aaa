"""The viewer's way to a host through a WebSocket-only server (C{--websocket}).

Only the server's WebSocket URLs are reachable, so the viewer goes straight
to the relay, as a RustDesk client in WebSocket mode does (C{client.rs}:
C{force_relay} when C{use_ws()}); see L{find_host_ws}.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from litedesk.nat.nattype import SYMMETRIC
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.session.links import ServerLinks
from litedesk.viewer.refusals import punch_failure, relay_refusal
from litedesk.viewer.route import (
    PUNCH_WAITS,
    RELAY_WAIT,
    VERSION,
    Route,
    elapsed_ms,
    exchange,
    parsed_server_key,
    request_relay,
    signed_host_key,
)

__all__ = ["find_host_ws"]

_log = Logger(namespace="litedesk.viewer.route")


async def find_host_ws(
    reactor: Any,
    links: ServerLinks,
    server_key: str,
    peer_id: str,
    waits: tuple[float, ...] = PUNCH_WAITS,
    relay_wait: float = RELAY_WAIT,
    token: str = "",
) -> Route:
    """Ask the server over WebSocket for C{peer_id}; the way is always a relay.

    As a RustDesk client in WebSocket mode: C{PunchHoleRequest} with
    C{force_relay} and C{SYMMETRIC}, so the host opens the relay and answers
    C{RelayResponse}.  A host that answers otherwise (it punched, or sent its
    LAN address) is asked for a relay with C{RequestRelay}, naming the relay
    it named.  No NAT test, no IPv6 or UPnP: nothing but the server's URLs
    is reachable.
    """
    server_pk = parsed_server_key(server_key)
    request = rz.RendezvousMessage(
        punch_hole_request=rz.PunchHoleRequest(
            id=peer_id,
            licence_key=server_key,
            nat_type=SYMMETRIC,
            conn_type=rz.DEFAULT_CONN,
            version=VERSION,
            force_relay=True,
            token=token,
        )
    )
    t0 = reactor.seconds()
    answer = await exchange(
        reactor,
        links.server,
        request,
        waits,
        ("punch_hole_response", "relay_response"),
        links=links,
    )
    if answer.WhichOneof("union") == "relay_response":
        rr = answer.relay_response
        if rr.refuse_reason:
            raise relay_refusal(rr.refuse_reason, links.server)
        host_pk = signed_host_key(server_pk, rr.pk, peer_id)
        _log.info("The host opened a relay for us ({ms} ms)", ms=elapsed_ms(reactor, t0))
        return Route("relay", host_pk, uuid=rr.uuid, relay_name=rr.relay_server)
    ph = answer.punch_hole_response
    if not ph.socket_addr:
        raise punch_failure(ph, links.server)
    host_pk = signed_host_key(server_pk, ph.pk, peer_id)
    _log.info("The host answered without a relay; asking it for one")
    return await request_relay(
        reactor, links.server, peer_id, host_pk, ph.relay_server, relay_wait, links, token
    )
