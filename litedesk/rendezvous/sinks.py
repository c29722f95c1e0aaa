"""What the rendezvous controller writes to: a viewer's TCP connection, the UDP
socket, the peer store (typing protocols, so the controller and its tests
need no real sockets or database).
"""

from __future__ import annotations

from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.store import PeerRecord
from litedesk.wire.address import Address


class IdTaken(Exception):
    """A save refused by the database: its id is bound to another device there.

    Only a store shared by several cluster nodes can get there: a node
    checks the id in memory first, but another node may have bound it an
    instant before (docs/cluster.rst).  The host is answered UUID_MISMATCH,
    as if this node had known.
    """


class ReplySink(TypingProtocol):
    """A viewer's TCP connection as the controller sees it."""

    addr: Address
    #: The local address the connection arrived on (our own relay's IP).
    local: Address

    def send_message(self, msg: rz.RendezvousMessage) -> None: ...


class DatagramSink(TypingProtocol):
    def send_datagram(self, data: bytes, addr: Address) -> None: ...


class PeerStoreLike(TypingProtocol):
    def save(self, record: PeerRecord) -> Deferred[bytes]: ...
