"""The rendezvous server's controller: routes parsed messages between peers.

Protocols (L{litedesk.rendezvous.protocols}) parse bytes and call the
C{handle_*} methods here; the rules about registrations live in
L{litedesk.rendezvous.registry.Registry}.  L{RendezvousServer} is one object,
as the protocols see it, assembled from a module per concern: the UDP
registrations (L{litedesk.rendezvous.udp_registrations}), the hosts
registered on streams and ID changes (L{litedesk.rendezvous.host_streams}),
the viewers' punch and relay requests and the hosts' answers
(L{litedesk.rendezvous.punch_requests}) and the UDP punch
(L{litedesk.rendezvous.udp_punch_requests}).  This module owns the state they
share: the viewers' parked TCP connections awaiting a reply (hbbs'
C{tcp_punch}), the UDP socket used to push to hosts, the server key, the
relay list and the counters; and it dispatches each stream message.
Which requests reach a host is L{litedesk.rendezvous.admission}, which relays
they may name L{litedesk.rendezvous.relay_vouch}.  Behaviour follows hbbs
1.1.17 (docs/protocol.rst §5.3-§5.8), except where hbbs answers
C{RegisterPk} on a stream with NOT_SUPPORT (here a stream may register a
host, and C{RegisterPk} with C{old_id} changes an id, docs/protocol.rst
§5.11) and where hbbs ignores the UDP punch of RustDesk 1.4.1 and later
(here it is brokered, docs/protocol.rst §5.12, its answers going only over
TCP or WebSocket).  A stream is anything with L{ReplySink}'s
C{send_message}: TCP here, WebSocket alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.admission import RequestAdmission
from litedesk.rendezvous.floodguard import FloodGuard
from litedesk.rendezvous.forwarded import ForwardedRequests
from litedesk.rendezvous.host_streams import (
    HOST_HEARTBEAT,
    HOST_KEEP_ALIVE,
    HOST_STREAM_IDLE,
    HostStreams,
)
from litedesk.rendezvous.log_budget import LineBudget
from litedesk.rendezvous.login_gate import LoginGate
from litedesk.rendezvous.punch_requests import PunchRequests
from litedesk.rendezvous.punch_stats import PunchStats
from litedesk.rendezvous.registry import Peer, Registry
from litedesk.rendezvous.relay_vouch import RelayVouchers
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.sinks import DatagramSink, PeerStoreLike, ReplySink
from litedesk.rendezvous.udp_punch import UdpPunchBroker
from litedesk.rendezvous.udp_punch_requests import UdpPunchRequests
from litedesk.rendezvous.udp_registrations import UdpRegistrations
from litedesk.wire import addrmangle
from litedesk.wire.address import Address
from litedesk.wire.keys import ServerKey
from litedesk.wire.messages import parse_rendezvous

if TYPE_CHECKING:
    from litedesk.ops.event_log import EventSink

# The stream hosts' timing, importable from here as before the split.
__all__ = ["HOST_HEARTBEAT", "HOST_KEEP_ALIVE", "HOST_STREAM_IDLE", "RendezvousServer"]


class RendezvousServer(
    PunchRequests, HostStreams, UdpPunchRequests, UdpRegistrations, ForwardedRequests
):
    """Shared state of one rendezvous server (UDP + TCP + NAT-test ports)."""

    _log = Logger()

    def __init__(
        self,
        *,
        clock: IReactorTime,
        registry: Registry,
        key: ServerKey,
        relays: RelayList,
        store: PeerStoreLike | None = None,
        rendezvous_servers: Sequence[str] = (),
        always_use_relay: bool = False,
        request_guard: FloodGuard | None = None,
        own_relay_port: int = 0,
        udp_punch: bool = True,
    ) -> None:
        self.clock = clock
        self.registry = registry
        self.key = key
        self.relays = relays
        self.store = store
        self.rendezvous_servers = list(rendezvous_servers)
        self.always_use_relay = always_use_relay
        self.udp: DatagramSink | None = None
        self._parked: dict[Address, ReplySink] = {}
        #: When each parked viewer's PunchHoleRequest came (a subset of
        #: _parked's keys: bounded as it is), for the latency histogram.
        self._punch_started: dict[Address, float] = {}
        self.punch_stats = PunchStats()
        self.counters: dict[str, int] = {
            "udp_datagrams": 0,
            "udp_garbage": 0,
            "register_pk_ok": 0,
            "register_pk_refused": 0,
            "punch_requests": 0,
            "relay_requests": 0,
            "licence_mismatch": 0,
            "requests_refused_connection": 0,
            "requests_refused_rate": 0,
            "relay_server_replaced": 0,
            "addr_v6_dropped": 0,
            "udp_reply_too_large": 0,
            "stream_hosts_refused": 0,
            "stream_hosts_silent": 0,
            "id_changes": 0,
            "id_changes_refused": 0,
            "udp_nat_tests": 0,
            "udp_punch_requests": 0,
            "udp_punch_port_replaced": 0,
            "udp_punch_answers": 0,
            "udp_punch_sent_refused": 0,
            "login_required": 0,
            "cluster_forwarded_out": 0,
            "cluster_forwarded_in": 0,
            "cluster_forward_failed": 0,
            "cluster_answers_in": 0,
            "cluster_bad_messages": 0,
        }
        #: Where punch requests and refused registrations are reported
        #: (--event-log); set by the assembly.
        self.events: EventSink | None = None
        #: --require-login (set by the assembly); None: tokens are not checked.
        self.login_gate: LoginGate | None = None
        self._heartbeats: dict[ReplySink, IDelayedCall] = {}
        self.admission = RequestAdmission(request_guard, self.counters)
        self.vouchers = RelayVouchers(relays, own_relay_port)
        #: UDP punch brokering (docs/protocol.rst §5.12); None: UDP punch
        #: messages are ignored and C{udp_port} is not forwarded, as by hbbs.
        self.udp_punch = UdpPunchBroker() if udp_punch else None
        self.registration_lines = LineBudget()
        self.request_lines = LineBudget()
        self._signed_ids: dict[tuple[str, bytes], bytes] = {}
        self._init_forwarded()

    def _mangle(self, addr: Address) -> bytes:
        return addrmangle.encode(addr, now_us=self._now_us)

    # -- TCP 21116 -----------------------------------------------------------

    def connection_closed(self, conn: ReplySink) -> None:
        if self._parked.get(conn.addr) is conn:
            del self._parked[conn.addr]
            if self._punch_started.pop(conn.addr, None) is not None:
                self.punch_stats.result("abandoned")
            if self.udp_punch is not None:
                self.udp_punch.forget(conn.addr)
        self.admission.forget(conn)
        self._unbind_host(conn, "its stream closed")

    def _park(self, conn: ReplySink) -> None:
        self._parked[conn.addr] = conn

    def parked_count(self) -> int:
        return len(self._parked)

    def handle_stream_message(self, conn: ReplySink, msg: rz.RendezvousMessage) -> bool:
        """Handle one message from TCP 21116; False means close the connection."""
        kind = msg.WhichOneof("union")
        self.registry.streams.touch(conn, self._now())
        if kind == "punch_hole_request":
            if not self.admission.admit(conn, kind, msg.punch_hole_request.id, self._now()):
                return False
            self._park(conn)
            self._punch_started[conn.addr] = self._now()
            self._punch_hole_request(conn, msg.punch_hole_request)
            return True
        if kind == "request_relay":
            if not self.admission.admit(conn, kind, msg.request_relay.id, self._now()):
                return False
            self._park(conn)
            self._punch_started.pop(conn.addr, None)
            self._request_relay(conn, msg.request_relay)
            return True
        if kind == "punch_hole_sent":
            self._punch_hole_sent(conn, msg.punch_hole_sent)
        elif kind == "local_addr":
            self._local_addr(conn, msg.local_addr)
        elif kind == "relay_response":
            self._relay_response(conn, msg.relay_response)
        elif kind == "test_nat_request":
            self._test_nat(conn, msg.test_nat_request, with_config=True)
        elif kind == "register_pk":
            rk = msg.register_pk
            if rk.old_id:
                return self._change_id(conn, rk)
            return self._register_host_stream(conn, rk)
        elif kind is None:
            # An empty frame is the clients' keep-alive, and a stream host's
            # answer to our heartbeat; it needs no answer.
            return True
        else:
            self._log.debug(
                "Unexpected {kind} on TCP from {ip}; closing", kind=kind, ip=conn.addr[0]
            )
        return False

    def _push(self, peer: Peer, msg: rz.RendezvousMessage) -> None:
        """Send C{msg} to a host: on the stream it registered on, else by UDP."""
        if peer.channel is not None:
            peer.channel.send_message(msg)
            return
        for addr in self.registry.push_addresses(peer, self._now()):
            self._send_udp(msg, addr)

    @property
    def own_relay_port(self) -> int:
        """The TCP port of the relay running in this process (0: none)."""
        return self.vouchers.own_relay_port

    @own_relay_port.setter
    def own_relay_port(self, port: int) -> None:
        self.vouchers.own_relay_port = port

    def _test_nat(self, conn: ReplySink, req: rz.TestNatRequest, with_config: bool) -> None:
        resp = rz.TestNatResponse(port=conn.addr[1])
        if with_config and self.registry.server_serial > req.serial:
            resp.cu.CopyFrom(self._config_update())
        conn.send_message(rz.RendezvousMessage(test_nat_response=resp))

    # -- TCP 21115 -----------------------------------------------------------

    def handle_nat_port_message(self, conn: ReplySink, msg: rz.RendezvousMessage) -> None:
        kind = msg.WhichOneof("union")
        if kind == "test_nat_request":
            self._test_nat(conn, msg.test_nat_request, with_config=False)
        elif kind == "online_request":
            cluster = self.cluster
            states = self.registry.online_states(
                list(msg.online_request.peers),
                self._now(),
                None if cluster is None else cluster.locate_online,
            )
            conn.send_message(
                rz.RendezvousMessage(online_response=rz.OnlineResponse(states=states))
            )
        else:
            self._log.debug("Unexpected {kind} on the NAT-test port", kind=kind)

    def message_from_bytes(self, data: bytes) -> rz.RendezvousMessage | None:
        return parse_rendezvous(data)
