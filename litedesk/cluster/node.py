# -*- test-case-name: tests.test_cluster_node -*-
"""One rendezvous node of a cluster: the service behind C{--cluster}.

L{ClusterNode} is the rendezvous server's L{ClusterLink
<litedesk.rendezvous.forwarded.ClusterLink>}, and it keeps the server's
view of the other nodes current:

- the hosts arriving here are announced (L{Presence}, written to
  C{litedesk_presence} and NOTIFYd in one transaction, in batches: a wave of
  hosts re-registering after a restart costs a few transactions, not one
  each);
- announcements from other nodes move the host there: this node forgets it
  was online here, so that a host that comes back is announced again;
- peer rows other nodes commit (RegisterPk, ID changes) are applied to the
  registry, so every node answers the same for every id;
- every L{BEAT} seconds this node writes its row and reads the others'
  (L{Membership}); the list of nodes and its serial become the server's
  C{ConfigUpdate}, unless C{--rendezvous-servers} fixes it.

When the listener reconnects after losing PostgreSQL, the presence table
is read again (announcements may have been missed).  Peer rows missed in
such a gap reach this node when the peer next registers or at its restart.
"""

from __future__ import annotations

from typing import Any

import psycopg
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from litedesk.cluster import cluster_sql
from litedesk.cluster.envelope import (
    MAX_PAYLOAD,
    Answer,
    Arrival,
    Forward,
    PeerNotice,
    decode,
    encode,
    encode_arrivals,
    encode_peer_notices,
    own_prefixes,
)
from litedesk.cluster.membership import BEAT, Membership
from litedesk.cluster.pg_bus import PgBus
from litedesk.cluster.presence import Presence
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.pg_schema import connect
from litedesk.rendezvous.pg_store import PgPeerStore
from litedesk.rendezvous.registry import Peer
from litedesk.rendezvous.server import RendezvousServer
from litedesk.rendezvous.sinks import ReplySink
from litedesk.rendezvous.store import PeerRecord
from litedesk.wire.address import Address

__all__ = ["ClusterNode"]

#: Arrivals are written at most this long after the first of a batch.
ARRIVAL_DELAY = 0.05
#: Arrivals written in one transaction at most.
ARRIVAL_BATCH = 5_000


class ClusterNode(Service):
    """This node in the cluster; C{startService} blocks until it has joined.

    @param url: the shared database (C{--database}).
    @param advertise: this node's rendezvous address for clients.
    @param fixed_servers: C{--rendezvous-servers} was given: the server's
        list and serial are left alone.
    """

    _log = Logger()

    def __init__(
        self,
        url: str,
        reactor: Any,
        server: RendezvousServer,
        node_id: str,
        advertise: str,
        *,
        fixed_servers: bool = False,
    ) -> None:
        self._url = url
        self._reactor: IReactorTime = reactor
        self.server = server
        self.node_id = node_id
        self.advertise = advertise
        self.fixed_servers = fixed_servers
        self.membership = Membership(node_id, server.registry.server_serial)
        self.presence = Presence(node_id)
        self._arrivals: list[str] = []
        self._arrival_call: IDelayedCall | None = None
        self._beat: LoopingCall | None = None
        self.bus = PgBus(
            url,
            reactor,
            [
                cluster_sql.node_channel(node_id),
                cluster_sql.PRESENCE_CHANNEL,
                cluster_sql.PEERS_CHANNEL,
            ],
            self._notified,
            self._listening,
            own=own_prefixes(node_id),
        )

    # -- start and stop ---------------------------------------------------------

    def startService(self) -> None:
        """Create the tables, read the presence, write this node's row, then listen."""
        with connect(self._url) as conn:
            cluster_sql.create_cluster_schema(conn)
            self.presence.load(cluster_sql.load_presence(conn))
            rows, generation = cluster_sql.beat(conn, self.node_id, self.advertise)
        self._membership_read((rows, generation))
        super().startService()  # type: ignore[no-untyped-call]
        self.server.cluster = self
        self.server.registry.online.arrived = self._arrived
        store = self.server.store
        if isinstance(store, PgPeerStore):
            store.announce = self._announce_rows
        self.bus.start()
        self._beat = LoopingCall(self._send_beat)
        self._beat.clock = self._reactor
        self._beat.start(BEAT, now=False)
        self._log.info(
            "cluster: node {node} ({advertise}) joined; nodes alive: {nodes}; {hosts} hosts placed",
            node=self.node_id,
            advertise=self.advertise,
            nodes=", ".join(self.membership.alive_nodes(self._reactor.seconds())),
            hosts=len(self.presence),
        )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        self._flush_arrivals()
        self.bus.stop()
        return None

    # -- ClusterLink ---------------------------------------------------------------

    def locate(self, peer_id: str, now: float) -> str | None:
        node = self.presence.node_of(peer_id)
        if node is None or node == self.node_id or not self.membership.alive(node, now):
            return None
        return node

    def forward(self, node: str, viewer: ReplySink, message: rz.RendezvousMessage) -> bool:
        payload = encode(
            Forward(
                self.node_id,
                viewer.addr,
                viewer.local,
                bool(getattr(viewer, "websocket", False)),
                message.SerializeToString(),
            )
        )
        if len(payload.encode()) > MAX_PAYLOAD:
            return False
        return self.bus.notify(cluster_sql.node_channel(node), payload)

    def answer(self, origin: str, viewer: Address, message: rz.RendezvousMessage) -> None:
        payload = encode(Answer(viewer, message.SerializeToString()))
        if len(payload.encode()) > MAX_PAYLOAD or not self.bus.notify(
            cluster_sql.node_channel(origin), payload
        ):
            # The viewer times out and asks again, as after a lost datagram.
            self._log.warn(
                "cluster: an answer for {viewer} on node {origin} could not be sent; dropped",
                viewer=viewer,
                origin=origin,
            )

    def locate_online(self, peer_id: str, now: float) -> bool:
        """Is C{peer_id} on another live node (for OnlineRequest)?"""
        return self.locate(peer_id, now) is not None

    # -- membership ---------------------------------------------------------------

    def _send_beat(self) -> None:
        d = self.bus.run(self._beat_job)
        d.addCallbacks(self._membership_read, self._beat_failed)

    def _beat_job(self, conn: psycopg.Connection[Any]) -> tuple[Any, int]:
        return cluster_sql.beat(conn, self.node_id, self.advertise)

    def _beat_failed(self, failure: Any) -> None:
        self._log.warn(
            "cluster: node {node} could not write its row: {error}",
            node=self.node_id,
            error=failure.getErrorMessage(),
        )

    def _membership_read(self, result: tuple[Any, int]) -> None:
        rows, generation = result
        now = self._reactor.seconds()
        before = self.membership.rendezvous_servers(), self.membership.serial
        died = self.membership.update(rows, generation, now)
        for node in died:
            self._log.warn(
                "cluster: node {dead} is not heard from; its hosts count as offline "
                "until they register here",
                dead=node,
            )
        if self.fixed_servers:
            return
        servers, serial = self.membership.rendezvous_servers(), self.membership.serial
        self.server.rendezvous_servers = servers
        self.server.registry.server_serial = serial
        if (servers, serial) != before:
            self._log.info(
                "cluster: clients get rendezvous servers {servers} (serial {serial})",
                servers=",".join(servers),
                serial=serial,
            )

    # -- arrivals -------------------------------------------------------------------

    def _arrived(self, peer: Peer) -> None:
        """A host came online here (OnlineHosts' hook, on the heartbeat path)."""
        if not self.presence.arrived(peer.id, self.node_id):
            return
        self._arrivals.append(peer.id)
        if len(self._arrivals) >= ARRIVAL_BATCH:
            self._flush_arrivals()
        elif self._arrival_call is None:
            self._arrival_call = self._reactor.callLater(ARRIVAL_DELAY, self._flush_arrivals)

    def _flush_arrivals(self) -> None:
        if self._arrival_call is not None and self._arrival_call.active():
            self._arrival_call.cancel()
        self._arrival_call = None
        ids, self._arrivals = self._arrivals, []
        if not ids:
            return
        payloads = encode_arrivals(self.node_id, ids)
        node = self.node_id

        def job(conn: psycopg.Connection[Any]) -> None:
            cluster_sql.write_presence(conn, node, ids, payloads)

        self.bus.run(job).addErrback(self._arrivals_failed, ids)

    def _arrivals_failed(self, failure: Any, ids: list[str]) -> None:
        # Not written: forget them, so that their next heartbeat tries again.
        for peer_id in ids:
            if self.presence.node_of(peer_id) == self.node_id:
                self.presence.forget(peer_id)
        self._log.warn(
            "cluster: {n} arrivals could not be written: {error}",
            n=len(ids),
            error=failure.getErrorMessage(),
        )

    def _announce_rows(self, records: list[PeerRecord]) -> list[tuple[str, str]]:
        """The peer store's hook (writer thread): NOTIFYs for committed rows."""
        channel = cluster_sql.PEERS_CHANNEL
        return [(channel, p) for p in encode_peer_notices(self.node_id, records)]

    # -- notifications ------------------------------------------------------------

    def _listening(self) -> None:
        """(Re)connected: what was missed meanwhile is read from the table."""

        def reload(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
            return cluster_sql.load_presence(conn)

        self.bus.run(reload).addCallbacks(self.presence.load, self._reload_failed)

    def _reload_failed(self, failure: Any) -> None:
        self._log.warn(
            "cluster: node {node} could not read the hosts' places: {error}",
            node=self.node_id,
            error=failure.getErrorMessage(),
        )

    def _notified(self, channel: str, payload: str) -> None:
        msg = decode(payload)
        if msg is None:
            self._log.warn(
                "cluster: unreadable payload on {channel} ({size} bytes); dropped",
                channel=channel,
                size=len(payload),
            )
            return
        if isinstance(msg, Forward):
            self._forwarded(msg)
        elif isinstance(msg, Answer):
            self._answered(msg)
        elif isinstance(msg, Arrival):
            self._heard_arrival(msg)
        else:
            self._heard_rows(msg)

    def _forwarded(self, msg: Forward) -> None:
        self.server.handle_forwarded(msg.origin, msg.viewer, msg.local, msg.websocket, msg.message)

    def _answered(self, msg: Answer) -> None:
        self.server.deliver_forwarded(msg.viewer, msg.message)

    def _heard_arrival(self, msg: Arrival) -> None:
        if msg.node == self.node_id:
            return
        registry = self.server.registry
        for peer_id in msg.peer_ids:
            self.presence.arrived(peer_id, msg.node)
            peer = registry.get(peer_id)
            if peer is not None and peer.channel is None and peer.last_reg is not None:
                # Online here too: either it moved there (it stops registering
                # here and times out) or this notice overtook its move here.
                # Its next registration here announces it again, which
                # settles the second case without a clock.
                registry.online.recheck.add(peer)

    def _heard_rows(self, msg: PeerNotice) -> None:
        if msg.node == self.node_id:
            return
        registry = self.server.registry
        for record in msg.records:
            registry.apply_stored(record)
            if record.renamed_from:
                self.presence.renamed(record.renamed_from, record.id)
