"""The rendezvous server's controller: routes parsed messages between peers.

Protocols (L{litedesk.rendezvous.protocols}) parse bytes and call the
C{handle_*} methods here; the rules about registrations live in
L{litedesk.rendezvous.registry.Registry}.  This module owns what ties
connections together: the viewers' parked TCP connections awaiting a reply
(hbbs' C{tcp_punch}), the UDP socket used to push to hosts, the server key
and the relay list.  The UDP registration half is the base class
(L{litedesk.rendezvous.udp_registrations}); which requests reach a host is
L{litedesk.rendezvous.admission}, which relays they may name
L{litedesk.rendezvous.relay_vouch}.  Behaviour follows hbbs 1.1.17
(docs/protocol.rst §5.3-§5.8), except where hbbs answers C{RegisterPk} on a
stream with NOT_SUPPORT: here a stream may register a host, which then gets
its pushes and heartbeats on that stream, and C{RegisterPk} with C{old_id}
changes an id (docs/protocol.rst §5.11), and where hbbs ignores the UDP
punch of RustDesk 1.4.1 and later: here it is brokered
(L{litedesk.rendezvous.udp_punch}, docs/protocol.rst §5.12), its answers
going only over TCP or WebSocket.  A stream is anything with
L{ReplySink}'s C{send_message}: TCP here, WebSocket alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from litedesk.nat.ipv6 import valid_v6_endpoint
from litedesk.ops.counters import PUNCH_RESULTS, PunchStats
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.admission import RequestAdmission
from litedesk.rendezvous.floodguard import FloodGuard
from litedesk.rendezvous.log_budget import LineBudget
from litedesk.rendezvous.login_gate import LoginGate
from litedesk.rendezvous.registry import Peer, PunchTarget, Registry
from litedesk.rendezvous.relay_vouch import RelayVouchers
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.sinks import DatagramSink, PeerStoreLike, ReplySink
from litedesk.rendezvous.udp_punch import UdpPunchBroker
from litedesk.rendezvous.udp_punch_requests import UdpPunchRequests
from litedesk.rendezvous.udp_registrations import UdpRegistrations
from litedesk.wire import addrmangle
from litedesk.wire.address import Address
from litedesk.wire.keys import ServerKey, sign_id_pk
from litedesk.wire.messages import parse_rendezvous

if TYPE_CHECKING:
    from litedesk.ops.event_log import EventSink

Failure_ = rz.PunchHoleResponse.Failure
Result = rz.RegisterPkResponse.Result

#: A host registered on a stream gets an empty frame every HOST_HEARTBEAT
#: seconds and answers each with one (rendezvous_mediator.rs start_tcp: "if
#: bytes.is_empty() ... send_bytes(Bytes::new())").  Both sides need the
#: traffic: the host drops a stream silent for 1.5 x the keep_alive it was
#: told (HOST_KEEP_ALIVE, s), the listener one silent for 30 s, and NATs and
#: proxies (nginx: 60 s by default) forget idle connections.
HOST_HEARTBEAT = 15.0
HOST_KEEP_ALIVE = 30
#: A host whose stream brought nothing for this long is offline even if the
#: transport has not noticed yet (two heartbeats unanswered, and some).
HOST_STREAM_IDLE = 40.0
_HEARTBEAT = rz.RendezvousMessage()
#: Counter names of the NAT types peers report (anything else: nat_type_other).
_NAT_NAMES = {v: f"nat_type_{k.lower()}" for k, v in rz.NatType.items()}
#: The punch result an answer delivered by L{RendezvousServer._deliver} counts as.
_ANSWERED = {
    "Punch": "punch",
    "LocalAddr": "local",
    "RelayResponse": "relay",
    "UDP punch": "udp_punch",
}


class RendezvousServer(UdpPunchRequests, UdpRegistrations):
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

    # -- hosts registered on a stream, ID changes ----------------------------

    def stream_host_count(self) -> int:
        return len(self.registry.streams)

    def _register_host_stream(self, conn: ReplySink, rk: rz.RegisterPk) -> bool:
        """C{RegisterPk} on a stream: the hbbs rules of UDP, then the stream is the way in."""
        streams = self.registry.streams
        bound = streams.peer_of(conn) is not None
        known = self.registry.get(rk.id)
        refusal = streams.refusal(conn, known.channel if known is not None else None)
        if refusal is not None:
            self.counters["stream_hosts_refused"] += 1
            self._log.warn(
                "Refused RegisterPk for {peer_id} on a stream from {ip}: {reason}; closing",
                ip=conn.addr[0],
                peer_id=rk.id[:100],
                reason=refusal,
            )
            if self.events is not None:
                self.events.registration_refused(conn.addr[0], rk.id, "TOO_FREQUENT", refusal)
            # A stock host logs it and comes back on a new stream (start_all).
            self._send_register_pk_response(conn, Result.TOO_FREQUENT)
            return False
        outcome = self.registry.register_pk(rk.id, rk.uuid, rk.pk, conn.addr, self._now())
        if outcome.result is None:
            self._log.warn(
                "Closing TCP connection from {ip}: RegisterPk for {peer_id} ({reason})",
                ip=conn.addr[0],
                peer_id=rk.id[:100],
                reason=outcome.reason,
            )
            return False
        if outcome.result != Result.OK:
            self._settle_register_pk(
                outcome,
                rk.id,
                conn.addr[0],
                lambda r: self._send_register_pk_response(conn, r),
                what="RegisterPk on a stream",
            )
            # A stock host answers UUID_MISMATCH with a new id on the same
            # stream; an unbound stream has nothing else to wait for.
            return bound or outcome.result == Result.UUID_MISMATCH
        peer = self.registry.get(rk.id)
        assert peer is not None
        self._bind_host(conn, peer)

        def undo() -> None:
            if streams.peer_of(conn) is peer:
                self._unbind_host(conn, "its registration could not be stored")

        self._settle_register_pk(
            outcome,
            rk.id,
            conn.addr[0],
            lambda r: self._send_register_pk_response(conn, r),
            undo,
            what="RegisterPk on a stream",
        )
        return True

    def _send_register_pk_response(self, conn: ReplySink, result: int) -> None:
        resp = rz.RegisterPkResponse(result=result)  # type: ignore[arg-type]
        if result == Result.OK and self.registry.streams.peer_of(conn) is not None:
            # The host drops the stream after 1.5 x this without a message.
            resp.keep_alive = HOST_KEEP_ALIVE
        conn.send_message(rz.RendezvousMessage(register_pk_response=resp))

    def _bind_host(self, conn: ReplySink, peer: Peer) -> None:
        replaced = self.registry.streams.bind(conn, peer, self._now())
        if replaced is not None:
            self._stop_heartbeat(replaced)
            self._log.info(
                "Host {peer_id} moved from its stream from {old} to one from {ip}",
                ip=conn.addr[0],
                peer_id=peer.id,
                old=replaced.addr[0],
            )
        if conn not in self._heartbeats:
            self._heartbeats[conn] = self.clock.callLater(HOST_HEARTBEAT, self._heartbeat, conn)

    def _unbind_host(self, conn: ReplySink, why: str) -> None:
        self._stop_heartbeat(conn)
        peer = self.registry.streams.unbind(conn)
        if peer is not None:
            self._log.info(
                "Host {peer_id} on a stream from {ip} is offline: {reason}",
                ip=conn.addr[0],
                peer_id=peer.id,
                reason=why,
            )

    def _stop_heartbeat(self, conn: ReplySink) -> None:
        call = self._heartbeats.pop(conn, None)
        if call is not None and call.active():
            call.cancel()

    def _heartbeat(self, conn: ReplySink) -> None:
        del self._heartbeats[conn]
        silent = self.registry.streams.silent_for(conn, self._now())
        if silent > HOST_STREAM_IDLE:
            self.counters["stream_hosts_silent"] += 1
            self._unbind_host(conn, f"nothing on its stream for {silent:.0f} s")
            return
        conn.send_message(_HEARTBEAT)
        self._heartbeats[conn] = self.clock.callLater(HOST_HEARTBEAT, self._heartbeat, conn)

    def _change_id(self, conn: ReplySink, rk: rz.RegisterPk) -> bool:
        """C{RegisterPk{old_id, id, uuid}}: a device asks for a new id (§5.11)."""
        outcome = self.registry.change_id(rk.old_id, rk.id, rk.uuid, conn.addr, self._now())
        ok = outcome.result == Result.OK
        self.counters["id_changes" if ok else "id_changes_refused"] += 1
        peer = self.registry.get(rk.id) if ok else None

        def undo() -> None:
            if peer is not None and self.registry.undo_change_id(peer, rk.old_id):
                self._log.warn(
                    "Id {peer_id} is {old_id} again", peer_id=rk.id, old_id=rk.old_id[:100]
                )

        answered: list[int] = []

        def reply(result: int) -> None:
            answered.append(result)
            self._send_register_pk_response(conn, result)

        what = f"id change from {rk.old_id[:100]}"
        self._settle_register_pk(outcome, rk.id, conn.addr[0], reply, undo, what=what)
        # The client reads the one answer and closes.  An accepted change is
        # answered once it is on disk: until then the connection stays open.
        return not answered or self.registry.streams.peer_of(conn) is not None

    def _push(self, peer: Peer, msg: rz.RendezvousMessage) -> None:
        """Send C{msg} to a host: on the stream it registered on, else by UDP."""
        if peer.channel is not None:
            peer.channel.send_message(msg)
            return
        for addr in self.registry.push_addresses(peer, self._now()):
            self._send_udp(msg, addr)

    def _checked_v6(self, data: bytes, ip: str, what: str) -> bytes:
        """C{data} if it is a valid IPv6 endpoint (L{valid_v6_endpoint}), else b"".

        C{ip} is the sender's, for the log."""
        if not data or valid_v6_endpoint(data):
            return data
        self.counters["addr_v6_dropped"] += 1
        host, port = addrmangle.decode(data)
        self._log.warn(
            "Dropped socket_addr_v6 {addr} in {what} from {ip}: not a routable IPv6 "
            "endpoint ({size} bytes)",
            addr=f"[{host}]:{port}",
            what=what,
            ip=ip,
            size=len(data),
        )
        return b""

    @property
    def own_relay_port(self) -> int:
        """The TCP port of the relay running in this process (0: none)."""
        return self.vouchers.own_relay_port

    @own_relay_port.setter
    def own_relay_port(self, port: int) -> None:
        self.vouchers.own_relay_port = port

    def relay_known(self, relay_server: str, conn: ReplySink, peer_id: str) -> bool:
        """Is C{relay_server} one a stock viewer of C{peer_id} can legitimately name?"""
        return self.vouchers.known(relay_server, conn.local[0], conn.addr[0], peer_id, self._now())

    def _vouch(self, answer_ip: str, peer_id: str, relay_server: str, viewer: Address) -> None:
        """Remember the relay a host's answer from C{answer_ip} named to C{viewer}."""
        peer = self.registry.get(peer_id)
        host_ip = peer.addr[0] if peer is not None and peer.addr is not None else None
        self.vouchers.vouch(host_ip, answer_ip, peer_id, relay_server, viewer[0], self._now())

    def _signed_pk(self, version: str, peer_id: str) -> bytes:
        if not version or self.key.signing_key is None:
            return b""
        peer = self.registry.get(peer_id)
        if peer is None or not peer.pk:
            return b""
        return sign_id_pk(self.key.signing_key, peer_id, peer.pk)

    def _punch_hole_request(self, conn: ReplySink, ph: rz.PunchHoleRequest) -> None:
        self.counters["punch_requests"] += 1
        if self.key.licence and ph.licence_key != self.key.licence:
            self.counters["licence_mismatch"] += 1
            # One line per refusal, with the source IP first-class for fail2ban.
            self._log.warn(
                "Key mismatch from {ip}: punch hole request for {peer_id} refused",
                ip=conn.addr[0],
                peer_id=ph.id,
            )
            self._punch_event(conn, ph, "licence_mismatch")
            self._punch_failure(conn, Failure_.LICENSE_MISMATCH)
            return
        self._nat_seen(ph.nat_type)
        refusal = self._login_refusal(conn, "Punch hole", ph.id, ph.token)
        if refusal is not None:
            self._punch_event(conn, ph, "login_required")
            self._punch_started.pop(conn.addr, None)
            resp = rz.PunchHoleResponse(other_failure=refusal)
            conn.send_message(rz.RendezvousMessage(punch_hole_response=resp))
            return
        state, peer = self.registry.punch_target(ph.id, self._now())
        if state is not PunchTarget.ONLINE or peer is None or peer.addr is None:
            self._log.info(
                "Punch hole request from {ip} for {peer_id}: {state}",
                ip=conn.addr[0],
                peer_id=ph.id,
                state=state.value,
            )
            failure = (
                Failure_.ID_NOT_EXIST if state is PunchTarget.ID_NOT_EXIST else Failure_.OFFLINE
            )
            self._punch_event(conn, ph, state.name.lower())
            self._punch_failure(conn, failure)
            return
        relay = self.relays.pick()
        socket_addr_v6 = self._checked_v6(ph.socket_addr_v6, conn.addr[0], "PunchHoleRequest")
        nat_type = rz.SYMMETRIC if self.always_use_relay else ph.nat_type
        # hbbs never asks for the LAN address for a viewer on WebSocket: such a
        # viewer cannot dial it (a web client cannot open TCP at all).
        viewer_on_websocket = bool(getattr(conn, "websocket", False))
        same_intranet = peer.addr[0] == conn.addr[0] and not viewer_on_websocket
        socket_addr = self._mangle(conn.addr)
        udp = None if same_intranet else self._udp_punch_port(conn, ph, peer)
        udp_port = udp.port if udp is not None else 0
        if same_intranet:
            path = "same public IP, asking for LAN address"
        elif udp is not None and udp.port:
            path = f"UDP punch, the viewer's UDP port {udp.port} {udp.reason}"
        else:
            path = "punch"
        self._log.info(
            "Punch hole request from {ip} for {peer_id} ({path})",
            ip=conn.addr[0],
            peer_id=ph.id,
            path=path,
        )
        if same_intranet:
            out = rz.RendezvousMessage(
                fetch_local_addr=rz.FetchLocalAddr(socket_addr=socket_addr, relay_server=relay)
            )
        else:
            out = rz.RendezvousMessage(
                punch_hole=rz.PunchHole(
                    socket_addr=socket_addr,
                    relay_server=relay,
                    nat_type=nat_type,
                    # 0 is not serialized: requests without a UDP port give
                    # the host the same bytes as before UDP punching.
                    udp_port=udp_port,
                    # The viewer's own IPv6 endpoint, for a direct IPv6 path
                    # (OSS hbbs drops it; LiteDesk hosts and viewers use it).
                    socket_addr_v6=socket_addr_v6,
                )
            )
        self._punch_event(conn, ph, "forwarded")
        self._push(peer, out)

    def _punch_event(self, conn: ReplySink, ph: rz.PunchHoleRequest, result: str) -> None:
        if result in PUNCH_RESULTS:
            self.punch_stats.result(result)
        if self.events is not None:
            self.events.punch_request(conn.addr[0], ph.id, result)

    def _punch_failure(self, conn: ReplySink, failure: int) -> None:
        # Answered here and now: neither an answer to time nor abandoned.
        self._punch_started.pop(conn.addr, None)
        resp = rz.PunchHoleResponse(failure=failure)  # type: ignore[arg-type]
        conn.send_message(rz.RendezvousMessage(punch_hole_response=resp))

    @staticmethod
    def _viewer(socket_addr: bytes) -> Address:
        """The viewer connection a host's answer names (its mangled address, echoed)."""
        return addrmangle.normalize(addrmangle.decode(socket_addr))

    def _deliver(self, target: Address, msg: rz.RendezvousMessage, what: str) -> None:
        """Write a host's answer to the viewer connection C{target} (and unpark it)."""
        conn = self._parked.pop(target, None)
        started = self._punch_started.pop(target, None)
        if conn is not None and started is not None:
            self.punch_stats.answered(_ANSWERED[what], self._now() - started)
        if conn is None:
            self._log.info(
                "{what} for {ip}:{port}, which is no longer waiting",
                what=what,
                ip=target[0],
                port=target[1],
            )
            return
        conn.send_message(msg)

    def _punch_hole_sent(self, conn: ReplySink, phs: rz.PunchHoleSent) -> None:
        self._nat_seen(phs.nat_type)
        viewer = self._viewer(phs.socket_addr)
        if viewer in self._parked:
            self._vouch(conn.addr[0], phs.id, phs.relay_server, viewer)
        self._deliver(viewer, self._punch_answer(phs, conn.addr, is_udp=False), "Punch")

    def _punch_answer(
        self, phs: rz.PunchHoleSent, host: Address, *, is_udp: bool
    ) -> rz.RendezvousMessage:
        """The viewer's C{PunchHoleResponse} to a host's C{PunchHoleSent} from C{host}."""
        resp = rz.PunchHoleResponse(
            socket_addr=self._mangle(host),
            pk=self._signed_pk(phs.version, phs.id),
            relay_server=phs.relay_server,
            nat_type=phs.nat_type,
            socket_addr_v6=self._checked_v6(phs.socket_addr_v6, host[0], "PunchHoleSent"),
            # LiteDesk extension (hbbs does not copy it): the host's UPnP
            # port; RustDesk clients ignore it or try it.
            upnp_port=phs.upnp_port,
            # False is not serialized: a TCP answer's bytes are hbbs'.
            is_udp=is_udp,
        )
        return rz.RendezvousMessage(punch_hole_response=resp)

    def _local_addr(self, conn: ReplySink, la: rz.LocalAddr) -> None:
        viewer = self._viewer(la.socket_addr)
        if viewer in self._parked:
            self._vouch(conn.addr[0], la.id, la.relay_server, viewer)
        resp = rz.PunchHoleResponse(
            socket_addr=la.local_addr,
            pk=self._signed_pk(la.version, la.id),
            relay_server=la.relay_server,
            is_local=True,
        )
        self._deliver(viewer, rz.RendezvousMessage(punch_hole_response=resp), "LocalAddr")

    def _nat_seen(self, nat_type: int) -> None:
        """Count the NAT type a viewer or host reports (the console's "NAT types seen")."""
        # An open proto3 enum can hold any number: only known names become keys.
        name = _NAT_NAMES.get(nat_type, "nat_type_other")
        self.counters[name] = self.counters.get(name, 0) + 1

    def _login_refusal(self, conn: ReplySink, what: str, peer_id: str, token: str) -> str | None:
        """With --require-login, the text refusing a request without a live token."""
        if self.login_gate is None:
            return None
        refused = self.login_gate.refusal(token)
        if refused is None:
            return None
        reason, text = refused
        self.counters["login_required"] += 1
        self._log.warn(
            "{what} request from {ip} for {peer_id} refused: {reason} (--require-login)",
            what=what,
            ip=conn.addr[0],
            peer_id=peer_id[:100],
            reason=reason,
        )
        return text

    def _request_relay(self, conn: ReplySink, rr: rz.RequestRelay) -> None:
        self.counters["relay_requests"] += 1
        refusal = self._login_refusal(conn, "Relay", rr.id, rr.token)
        if refusal is not None:
            resp = rz.RelayResponse(uuid=rr.uuid, refuse_reason=refusal)
            conn.send_message(rz.RendezvousMessage(relay_response=resp))
            return
        peer = self.registry.relay_target(rr.id)
        self._log.info(
            "Relay request from {ip} for {peer_id}{unknown}",
            ip=conn.addr[0],
            peer_id=rr.id,
            unknown="" if peer is not None else " (unknown id, not forwarded)",
        )
        if peer is None or peer.addr is None:
            return
        fwd = rz.RequestRelay()
        fwd.CopyFrom(rr)
        fwd.socket_addr = self._mangle(conn.addr)
        if not self.relay_known(rr.relay_server, conn, rr.id):
            # hbbs forwards whatever the requester names, so anyone with the
            # key could make every online host connect to a listener of their
            # choosing.  "" makes LiteDesk hosts use their default relay
            # (rendezvous host:port+1); a stock RustDesk host given "" fails
            # that attempt without connecting anywhere.
            self.counters["relay_server_replaced"] += 1
            self._log.warn(
                "Relay request from {ip} for {peer_id} names relay {relay}, which this "
                "server does not announce; forwarding it without a relay server",
                ip=conn.addr[0],
                peer_id=rr.id,
                relay=rr.relay_server[:100],
            )
            fwd.relay_server = ""
        self._push(peer, rz.RendezvousMessage(request_relay=fwd))

    def _relay_response(self, conn: ReplySink, rr: rz.RelayResponse) -> None:
        out = rz.RelayResponse()
        out.CopyFrom(rr)
        out.socket_addr = b""
        out.socket_addr_v6 = self._checked_v6(rr.socket_addr_v6, conn.addr[0], "RelayResponse")
        if rr.WhichOneof("union") == "id" and rr.id:
            out.pk = self._signed_pk(rr.version, rr.id)
        self._deliver(
            self._viewer(rr.socket_addr),
            rz.RendezvousMessage(relay_response=out),
            "RelayResponse",
        )

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
            states = self.registry.online_states(list(msg.online_request.peers), self._now())
            conn.send_message(
                rz.RendezvousMessage(online_response=rz.OnlineResponse(states=states))
            )
        else:
            self._log.debug("Unexpected {kind} on the NAT-test port", kind=kind)

    def message_from_bytes(self, data: bytes) -> rz.RendezvousMessage | None:
        return parse_rendezvous(data)
