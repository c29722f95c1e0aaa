"""How the viewer reaches a host through the rendezvous server.

RustDesk's C{Client::_start} (../shared/docs/rustdesk-protocol.md section
7.3), minus hole punching (a later step): send C{PunchHoleRequest}; the
server answers directly (failure, or the host's LAN address when both sides
share a public IP) or the host answers with C{RelayResponse} when it opened
a relay for us.  Otherwise ask for a relay explicitly with C{RequestRelay}.

The host's public key must arrive signed by the server key the viewer was
configured with; without that signature there is no session, because the
TLS pin would be meaningless.
"""

from __future__ import annotations

import base64
import binascii
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.session.links import LinkError, RendezvousLink, open_rendezvous, split_relay
from litedesk.session.tls import UnverifiedHostKey, host_key_from_signed_id_pk
from litedesk.wire import addrmangle

VERSION = "1.4.9"  # what we claim to be: servers only sign keys for versioned clients
PUNCH_WAITS = (3.0, 6.0, 9.0)
RELAY_WAIT = 18.0

_log = Logger(namespace="litedesk.viewer.route")


class ConnectError(Exception):
    """Why the viewer cannot reach the host; C{reason} is one short phrase."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Route:
    """Where the host is and which key it must present."""

    path: str  # "lan" or "relay"
    host_pk: bytes
    addr: tuple[str, int] | None = None
    relay: tuple[str, int] | None = None
    uuid: str = ""


_FAILURES = {
    rz.PunchHoleResponse.ID_NOT_EXIST: "unknown id",
    rz.PunchHoleResponse.OFFLINE: "host offline",
    rz.PunchHoleResponse.LICENSE_MISMATCH: "key mismatch",
    rz.PunchHoleResponse.LICENSE_OVERUSE: "key overuse",
}


def server_key_bytes(server_key: str) -> bytes:
    try:
        raw = base64.b64decode(server_key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConnectError("bad server key", "expected the base64 Ed25519 public key")
    return raw


def _host_key(server_pk: bytes, signed: bytes, peer_id: str) -> bytes:
    if not signed:
        raise ConnectError(
            "key mismatch", "the rendezvous server did not sign the host key (is it keyless?)"
        )
    try:
        return host_key_from_signed_id_pk(server_pk, signed, peer_id)
    except UnverifiedHostKey as e:
        raise ConnectError("key mismatch", str(e)) from None


async def _exchange(
    reactor: Any,
    server: tuple[str, int],
    msg: rz.RendezvousMessage,
    waits: tuple[float, ...],
    want: tuple[str, ...],
) -> rz.RendezvousMessage:
    """Send C{msg} (again after each wait) until an answer of a wanted kind."""
    try:
        link: RendezvousLink = await open_rendezvous(reactor, *server)
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


async def find_host(
    reactor: Any,
    server: tuple[str, int],
    server_key: str,
    peer_id: str,
    force_relay: bool = False,
    waits: tuple[float, ...] = PUNCH_WAITS,
    relay_wait: float = RELAY_WAIT,
) -> Route:
    """Ask the rendezvous server for C{peer_id}; return how to reach it."""
    server_pk = server_key_bytes(server_key)
    request = rz.RendezvousMessage(
        punch_hole_request=rz.PunchHoleRequest(
            id=peer_id,
            licence_key=server_key,
            # Until hole punching exists, claim a symmetric NAT: the host then
            # opens a relay itself instead of waiting for a punch.
            nat_type=rz.SYMMETRIC,
            conn_type=rz.DEFAULT_CONN,
            version=VERSION,
            force_relay=force_relay,
        )
    )
    answer = await _exchange(
        reactor, server, request, waits, ("punch_hole_response", "relay_response")
    )
    kind = answer.WhichOneof("union")
    if kind == "relay_response":
        rr = answer.relay_response
        if rr.refuse_reason:
            raise ConnectError("relay refused", rr.refuse_reason)
        host_pk = _host_key(server_pk, rr.pk, peer_id)
        relay = split_relay(rr.relay_server, *server)
        return Route("relay", host_pk, relay=relay, uuid=rr.uuid)
    ph = answer.punch_hole_response
    if not ph.socket_addr:
        if ph.other_failure:
            raise ConnectError(ph.other_failure)
        raise ConnectError(_FAILURES.get(ph.failure, "punch hole failed"))
    host_pk = _host_key(server_pk, ph.pk, peer_id)
    if ph.is_local and not force_relay:
        addr = addrmangle.normalize(addrmangle.decode(ph.socket_addr))
        return Route("lan", host_pk, addr=addr)
    return await request_relay(reactor, server, peer_id, host_pk, ph.relay_server, relay_wait)


async def request_relay(
    reactor: Any,
    server: tuple[str, int],
    peer_id: str,
    host_pk: bytes,
    relay_server: str,
    wait: float = RELAY_WAIT,
) -> Route:
    """Ask the host, through the server, to meet us on a relay (fresh uuid)."""
    uuid = str(uuidlib.uuid4())
    msg = rz.RendezvousMessage(
        request_relay=rz.RequestRelay(
            id=peer_id,
            uuid=uuid,
            relay_server=relay_server,
            secure=True,
            conn_type=rz.DEFAULT_CONN,
        )
    )
    answer = await _exchange(reactor, server, msg, (wait,), ("relay_response",))
    rr = answer.relay_response
    if rr.refuse_reason:
        raise ConnectError("relay refused", rr.refuse_reason)
    relay = split_relay(rr.relay_server or relay_server, *server)
    return Route("relay", host_pk, relay=relay, uuid=rr.uuid or uuid)
