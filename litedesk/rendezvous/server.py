"""The rendezvous server's controller: routes parsed messages between peers.

Protocols (L{litedesk.rendezvous.protocols}) parse bytes and call the
C{handle_*} methods here; the rules about registrations live in
L{litedesk.rendezvous.registry.Registry}.  This module owns what ties
connections together: the viewers' parked TCP connections awaiting a reply
(hbbs' C{tcp_punch}), the UDP socket used to push to hosts, the server key
and the relay list.  Behaviour follows hbbs 1.1.17
(../shared/docs/rustdesk-protocol.md sections 5.3-5.8).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.registry import PunchTarget, Registry
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.store import PeerRecord
from litedesk.wire import addrmangle
from litedesk.wire.addrmangle import Address
from litedesk.wire.keys import ServerKey, sign_id_pk
from litedesk.wire.messages import parse_rendezvous

Failure_ = rz.PunchHoleResponse.Failure


# The answer to nearly every datagram is one of these two: build them once.
_RPR = {
    flag: rz.RendezvousMessage(
        register_peer_response=rz.RegisterPeerResponse(request_pk=flag)
    ).SerializeToString()
    for flag in (False, True)
}


class ReplySink(TypingProtocol):
    """A viewer's TCP connection as the controller sees it."""

    addr: Address

    def send_message(self, msg: rz.RendezvousMessage) -> None: ...


class DatagramSink(TypingProtocol):
    def send_datagram(self, data: bytes, addr: Address) -> None: ...


class PeerStoreLike(TypingProtocol):
    def save(self, record: PeerRecord) -> Deferred[bytes]: ...


class RendezvousServer:
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
        self.counters: dict[str, int] = {
            "udp_datagrams": 0,
            "udp_garbage": 0,
            "register_pk_ok": 0,
            "register_pk_refused": 0,
            "punch_requests": 0,
            "relay_requests": 0,
            "licence_mismatch": 0,
        }

    def _now(self) -> float:
        return self.clock.seconds()

    def _now_us(self) -> int:
        return int(self.clock.seconds() * 1_000_000)

    def _mangle(self, addr: Address) -> bytes:
        return addrmangle.encode(addr, now_us=self._now_us)

    # -- UDP 21116 -----------------------------------------------------------

    def handle_datagram(self, data: bytes, source: Address) -> None:
        self.counters["udp_datagrams"] += 1
        msg = parse_rendezvous(data)
        kind = msg.WhichOneof("union") if msg is not None else None
        if msg is None or kind is None:
            self.counters["udp_garbage"] += 1
            return
        if kind == "register_peer":
            self._register_peer(msg.register_peer, source)
        elif kind == "register_pk":
            self._register_pk(msg.register_pk, source)
        # Everything else by UDP is ignored: PunchHoleRequest, PunchHoleSent and
        # LocalAddr since hbbs' 2026 reflection hardening (CVE-2026-30784),
        # ConfigureUpdate because no port has an admin console here.

    def _send_udp(self, msg: rz.RendezvousMessage, addr: Address) -> None:
        if self.udp is not None:
            self.udp.send_datagram(msg.SerializeToString(), addr)

    def _config_update(self) -> rz.ConfigUpdate:
        return rz.ConfigUpdate(
            serial=self.registry.server_serial, rendezvous_servers=self.rendezvous_servers
        )

    def _register_peer(self, rp: rz.RegisterPeer, source: Address) -> None:
        outcome = self.registry.register_peer(rp.id, rp.serial, source, self._now())
        if outcome is None:
            return
        if self.udp is not None:
            self.udp.send_datagram(_RPR[outcome.request_pk], source)
        if outcome.send_config_update:
            self._send_udp(rz.RendezvousMessage(configure_update=self._config_update()), source)

    def _register_pk(self, rk: rz.RegisterPk, source: Address) -> None:
        outcome = self.registry.register_pk(rk.id, rk.uuid, rk.pk, source, self._now())
        if outcome.result is None:
            self._log.debug(
                "Ignored RegisterPk for {peer_id} from {ip}: {reason}",
                peer_id=rk.id,
                ip=source[0],
                reason=outcome.reason,
            )
            return
        if outcome.result != rz.RegisterPkResponse.OK:
            self.counters["register_pk_refused"] += 1
            self._log.warn(
                "Refused RegisterPk for {peer_id} from {ip}: {result} ({reason})",
                peer_id=rk.id,
                ip=source[0],
                result=rz.RegisterPkResponse.Result.Name(outcome.result),
                reason=outcome.reason,
            )
            self._reply_register_pk(outcome.result, source)
            return
        self.counters["register_pk_ok"] += 1
        snap = outcome.persist
        if snap is None:
            self._reply_register_pk(rz.RegisterPkResponse.OK, source)
            return
        self._log.info(
            "Peer {peer_id} {reason} from {ip}",
            peer_id=rk.id,
            reason=outcome.reason,
            ip=source[0],
        )
        if self.store is None:
            self._reply_register_pk(rz.RegisterPkResponse.OK, source)
            return

        # Acknowledge only once the registration is on disk: a restart, even
        # kill -9, must never lose a key we told the host we accepted.
        def saved(guid: bytes) -> None:
            self.registry.set_guid(snap.id, guid)
            self._reply_register_pk(rz.RegisterPkResponse.OK, source)

        def failed(f: Failure) -> None:
            self._log.failure("Could not store peer {peer_id}", f, peer_id=snap.id)
            self._reply_register_pk(rz.RegisterPkResponse.SERVER_ERROR, source)

        self.store.save(snap).addCallbacks(saved, failed)

    def _reply_register_pk(self, result: int, addr: Address) -> None:
        reply = rz.RendezvousMessage(register_pk_response=rz.RegisterPkResponse(result=result))  # type: ignore[arg-type]
        self._send_udp(reply, addr)

    # -- TCP 21116 -----------------------------------------------------------

    def connection_closed(self, conn: ReplySink) -> None:
        if self._parked.get(conn.addr) is conn:
            del self._parked[conn.addr]

    def _park(self, conn: ReplySink) -> None:
        self._parked[conn.addr] = conn

    def parked_count(self) -> int:
        return len(self._parked)

    def handle_stream_message(self, conn: ReplySink, msg: rz.RendezvousMessage) -> bool:
        """Handle one message from TCP 21116; False means close the connection."""
        kind = msg.WhichOneof("union")
        if kind == "punch_hole_request":
            self._park(conn)
            self._punch_hole_request(conn, msg.punch_hole_request)
            return True
        if kind == "request_relay":
            self._park(conn)
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
            # OSS hbbs does not register over TCP (clients use this for id changes).
            conn.send_message(
                rz.RendezvousMessage(
                    register_pk_response=rz.RegisterPkResponse(
                        result=rz.RegisterPkResponse.NOT_SUPPORT
                    )
                )
            )
        elif kind is None:
            # An empty frame is the clients' keep-alive; it needs no answer.
            return True
        else:
            self._log.debug(
                "Unexpected {kind} on TCP from {ip}; closing", kind=kind, ip=conn.addr[0]
            )
        return False

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
            self._punch_failure(conn, Failure_.LICENSE_MISMATCH)
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
            self._punch_failure(conn, failure)
            return
        relay = self.relays.pick()
        nat_type = rz.SYMMETRIC if self.always_use_relay else ph.nat_type
        same_intranet = peer.addr[0] == conn.addr[0]
        socket_addr = self._mangle(conn.addr)
        self._log.info(
            "Punch hole request from {ip} for {peer_id} ({path})",
            ip=conn.addr[0],
            peer_id=ph.id,
            path="same public IP, asking for LAN address" if same_intranet else "punch",
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
                    # The viewer's own IPv6 endpoint, for a direct IPv6 path
                    # (OSS hbbs drops it; LiteDesk hosts and viewers use it).
                    socket_addr_v6=ph.socket_addr_v6,
                )
            )
        self._send_udp(out, peer.addr)

    def _punch_failure(self, conn: ReplySink, failure: int) -> None:
        resp = rz.PunchHoleResponse(failure=failure)  # type: ignore[arg-type]
        conn.send_message(rz.RendezvousMessage(punch_hole_response=resp))

    def _deliver(self, socket_addr: bytes, msg: rz.RendezvousMessage, what: str) -> None:
        """Write a host's answer to the viewer connection it names (and unpark it)."""
        target = addrmangle.normalize(addrmangle.decode(socket_addr))
        conn = self._parked.pop(target, None)
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
        resp = rz.PunchHoleResponse(
            socket_addr=self._mangle(conn.addr),
            pk=self._signed_pk(phs.version, phs.id),
            relay_server=phs.relay_server,
            nat_type=phs.nat_type,
            socket_addr_v6=phs.socket_addr_v6,
            # LiteDesk extension (hbbs does not copy it): the host's UPnP
            # port; RustDesk clients ignore it or try it.
            upnp_port=phs.upnp_port,
        )
        self._deliver(phs.socket_addr, rz.RendezvousMessage(punch_hole_response=resp), "Punch")

    def _local_addr(self, conn: ReplySink, la: rz.LocalAddr) -> None:
        resp = rz.PunchHoleResponse(
            socket_addr=la.local_addr,
            pk=self._signed_pk(la.version, la.id),
            relay_server=la.relay_server,
            is_local=True,
        )
        self._deliver(la.socket_addr, rz.RendezvousMessage(punch_hole_response=resp), "LocalAddr")

    def _request_relay(self, conn: ReplySink, rr: rz.RequestRelay) -> None:
        self.counters["relay_requests"] += 1
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
        self._send_udp(rz.RendezvousMessage(request_relay=fwd), peer.addr)

    def _relay_response(self, conn: ReplySink, rr: rz.RelayResponse) -> None:
        out = rz.RelayResponse()
        out.CopyFrom(rr)
        out.socket_addr = b""
        if rr.WhichOneof("union") == "id" and rr.id:
            out.pk = self._signed_pk(rr.version, rr.id)
        self._deliver(rr.socket_addr, rz.RendezvousMessage(relay_response=out), "RelayResponse")

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
