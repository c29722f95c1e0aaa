# -*- test-case-name: tests.test_cluster_node -*-
"""Requests for hosts on another cluster node, on both ends (C{--cluster}).

On the viewer's node (the origin), a punch or relay request for a host that
is not online here but arrived on another live node is handed to
L{ClusterLink.forward} instead of being answered "offline"; the viewer's
connection stays parked as for a local host, and the answer the host's node
sends back is delivered by L{ForwardedRequests.deliver_forwarded} exactly
as a local host's would be.

On the host's node, L{ForwardedRequests.handle_forwarded} runs the request
through the ordinary code with a L{RemoteViewer} in place of the viewer's
connection: it is parked under the viewer's address, so the host's answer
(naming that address) finds it, and whatever is written to it goes back to
the origin.  The origin has already checked the licence key, the login
token and its flood limits, so the host's node does not check them again
(users and tokens live in each node's own ops database); and it never
forwards a forwarded request again, so a stale presence cannot make two
nodes bounce a request between them.

Remote viewers wait at most L{REMOTE_WAIT} seconds and L{MAX_REMOTE} at
once: a host that never answers must not leave them behind.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from twisted.logger import Logger

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.sinks import ReplySink
from litedesk.wire.address import Address
from litedesk.wire.messages import parse_rendezvous

__all__ = ["MAX_REMOTE", "REMOTE_WAIT", "ClusterLink", "ForwardedRequests", "RemoteViewer"]

#: Seconds a forwarded request waits for its host's answer (a stock viewer
#: waits 18 s for a relay answer, docs/protocol.rst §7.3).
REMOTE_WAIT = 30.0
#: Forwarded requests waiting at once on the host's node.
MAX_REMOTE = 10_000


class ClusterLink(Protocol):
    """What the rendezvous server asks of its cluster node."""

    def locate(self, peer_id: str, now: float) -> str | None:
        """The live node, other than this one, C{peer_id} last arrived on."""

    def locate_online(self, peer_id: str, now: float) -> bool:
        """Is C{peer_id} on another live node (for OnlineRequest)?"""

    def forward(self, node: str, viewer: ReplySink, message: rz.RendezvousMessage) -> bool:
        """Send a viewer's request to C{node}; False if it could not be sent."""

    def answer(self, origin: str, viewer: Address, message: rz.RendezvousMessage) -> None:
        """Send what a forwarded viewer is told back to its node."""


class RemoteViewer:
    """A viewer connected to another node, as the host's node sees it."""

    #: Forwarded: not checked again, never forwarded again.
    forwarded = True

    def __init__(
        self, link: ClusterLink, origin: str, addr: Address, local: Address, websocket: bool
    ) -> None:
        self.link = link
        self.origin = origin
        self.addr = addr
        self.local = local
        self.websocket = websocket

    def send_message(self, msg: rz.RendezvousMessage) -> None:
        self.link.answer(self.origin, self.addr, msg)


_REQUESTS = ("punch_hole_request", "request_relay")


class ForwardedRequests:
    """Mixed into L{litedesk.rendezvous.server.RendezvousServer}."""

    _log: Logger
    counters: dict[str, int]
    _parked: dict[Address, ReplySink]
    _punch_started: dict[Address, float]
    #: The cluster node (set by the assembly with --cluster); None: one node.
    cluster: ClusterLink | None

    if TYPE_CHECKING:

        def _now(self) -> float: ...

        def _punch_hole_request(self, conn: ReplySink, ph: rz.PunchHoleRequest) -> None: ...

        def _request_relay(self, conn: ReplySink, rr: rz.RequestRelay) -> None: ...

        def _deliver(self, target: Address, msg: rz.RendezvousMessage, what: str) -> None: ...

        def _log_forwarded(self, text: str, **fields: object) -> None: ...

    def _init_forwarded(self) -> None:
        self.cluster = None
        #: Remote viewers parked here, oldest first, with when they came.
        self._remote: OrderedDict[Address, tuple[RemoteViewer, float]] = OrderedDict()

    # -- the viewer's node ------------------------------------------------------

    def _forward_to_cluster(self, conn: ReplySink, msg: rz.RendezvousMessage, peer_id: str) -> bool:
        """Hand C{msg} to the node C{peer_id} is on; False: answer it here."""
        cluster = self.cluster
        if cluster is None or getattr(conn, "forwarded", False):
            return False
        node = cluster.locate(peer_id, self._now())
        if node is None:
            return False
        if not cluster.forward(node, conn, msg):
            self.counters["cluster_forward_failed"] += 1
            return False
        self.counters["cluster_forwarded_out"] += 1
        what = "Punch hole" if msg.HasField("punch_hole_request") else "Relay"
        self._log_forwarded(
            "{what} request from {ip} for {peer_id} (forwarded to its cluster node {node})",
            what=what,
            ip=conn.addr[0],
            peer_id=peer_id,
            node=node,
        )
        return True

    def deliver_forwarded(self, viewer: Address, data: bytes) -> None:
        """An answer from another node for the viewer parked here at C{viewer}."""
        msg = parse_rendezvous(data)
        kind = msg.WhichOneof("union") if msg is not None else None
        if msg is None or kind not in ("punch_hole_response", "relay_response"):
            self.counters["cluster_bad_messages"] += 1
            self._log.warn("cluster: an answer for {viewer} is not one; dropped", viewer=viewer)
            return
        self.counters["cluster_answers_in"] += 1
        if kind == "relay_response":
            what = "RelayResponse"
        else:
            resp = msg.punch_hole_response
            if not resp.socket_addr:
                # A refusal (offline, unknown id): answered, not timed.
                self._punch_started.pop(viewer, None)
                conn = self._parked.get(viewer)
                if conn is not None:
                    conn.send_message(msg)
                return
            what = "LocalAddr" if resp.is_local else "UDP punch" if resp.is_udp else "Punch"
        self._deliver(viewer, msg, what)

    # -- the host's node --------------------------------------------------------

    def handle_forwarded(
        self, origin: str, viewer: Address, local: Address, websocket: bool, data: bytes
    ) -> None:
        """A viewer's request forwarded by node C{origin} for a host here."""
        msg = parse_rendezvous(data)
        kind = msg.WhichOneof("union") if msg is not None else None
        if msg is None or kind not in _REQUESTS or self.cluster is None:
            self.counters["cluster_bad_messages"] += 1
            self._log.warn(
                "cluster: a request forwarded by {origin} is not one; dropped", origin=origin
            )
            return
        self.counters["cluster_forwarded_in"] += 1
        remote = RemoteViewer(self.cluster, origin, viewer, local, websocket)
        self._park_remote(remote)
        if kind == "punch_hole_request":
            self._punch_hole_request(remote, msg.punch_hole_request)
        else:
            self._request_relay(remote, msg.request_relay)

    def _park_remote(self, remote: RemoteViewer) -> None:
        now = self._now()
        waiting = self._remote
        while waiting:
            addr, (old, since) = next(iter(waiting.items()))
            if now - since < REMOTE_WAIT and len(waiting) < MAX_REMOTE:
                break
            del waiting[addr]
            if self._parked.get(addr) is old:
                del self._parked[addr]
        waiting.pop(remote.addr, None)
        waiting[remote.addr] = (remote, now)
        if not isinstance(self._parked.get(remote.addr, remote), RemoteViewer):
            # A local viewer with the same address (two nodes behind one
            # NAT mapping cannot happen; a test can): the local one wins.
            return
        self._parked[remote.addr] = remote

    def remote_waiting(self) -> int:
        """Forwarded requests waiting here for their host's answer."""
        return len(self._remote)
