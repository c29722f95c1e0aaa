# -*- test-case-name: tests.test_rendezvous_protocols -*-
"""The rendezvous server's punch and relay requests: a viewer's ask, the host's answer.

L{PunchRequests} is mixed into L{litedesk.rendezvous.server.RendezvousServer}.
A viewer's C{PunchHoleRequest} or C{RequestRelay} on its stream is checked
(licence key, --require-login, is the host online) and pushed to the host,
by UDP or on the host's own stream; the viewer's connection stays parked
until the host's C{PunchHoleSent}, C{LocalAddr} or C{RelayResponse} names
it, and that answer is delivered to it (hbbs 1.1.17, docs/protocol.rst
§5.3-§5.8).  Which relays a request may name is
L{litedesk.rendezvous.relay_vouch}; UDP punch ports are
L{litedesk.rendezvous.udp_punch_requests}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from litedesk.nat.ipv6 import valid_v6_endpoint
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.log_budget import LineBudget
from litedesk.rendezvous.login_gate import LoginGate
from litedesk.rendezvous.punch_stats import PUNCH_RESULTS, PunchStats
from litedesk.rendezvous.registry import Peer, PunchTarget, Registry
from litedesk.rendezvous.relay_vouch import RelayVouchers
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.sinks import ReplySink
from litedesk.rendezvous.udp_punch import PortChoice
from litedesk.wire import addrmangle
from litedesk.wire.address import Address
from litedesk.wire.keys import ServerKey, sign_id_pk

if TYPE_CHECKING:
    from litedesk.ops.event_log import EventSink

__all__ = ["PunchRequests"]

Failure_ = rz.PunchHoleResponse.Failure

#: Signed C{IdPk}s kept for the hosts viewers ask for (about 200 bytes each).
SIGNED_IDS_MAX = 4096
#: Counter names of the NAT types peers report (anything else: nat_type_other).
_NAT_NAMES = {v: f"nat_type_{k.lower()}" for k, v in rz.NatType.items()}
#: The punch result an answer delivered by L{PunchRequests._deliver} counts as.
_ANSWERED = {
    "Punch": "punch",
    "LocalAddr": "local",
    "RelayResponse": "relay",
    "UDP punch": "udp_punch",
}


class PunchRequests:
    """Punch and relay requests and their answers; the server provides what is declared."""

    key: ServerKey
    relays: RelayList
    registry: Registry
    counters: dict[str, int]
    always_use_relay: bool
    events: EventSink | None
    login_gate: LoginGate | None
    vouchers: RelayVouchers
    punch_stats: PunchStats
    #: Lines for forwarded punch and relay requests (L{LineBudget}).
    request_lines: LineBudget
    _parked: dict[Address, ReplySink]
    _punch_started: dict[Address, float]
    #: Signed IdPk by (id, pk), at most L{SIGNED_IDS_MAX}.
    _signed_ids: dict[tuple[str, bytes], bytes]
    _log: Logger

    if TYPE_CHECKING:

        def _now(self) -> float: ...

        def _mangle(self, addr: Address) -> bytes: ...

        def _push(self, peer: Peer, msg: rz.RendezvousMessage) -> None: ...

        def _udp_punch_port(
            self, conn: ReplySink, ph: rz.PunchHoleRequest, peer: Peer
        ) -> PortChoice | None: ...

        def _forward_to_cluster(
            self, conn: ReplySink, msg: rz.RendezvousMessage, peer_id: str
        ) -> bool: ...

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
        # Ed25519 signatures are deterministic: a host's signed IdPk is the
        # same for every viewer, and signing costs more than the rest of
        # the answer.  Bounded: cleared when full (a new key is a new entry).
        cache = self._signed_ids
        signed = cache.get((peer_id, peer.pk))
        if signed is None:
            if len(cache) >= SIGNED_IDS_MAX:
                cache.clear()
            signed = cache[peer_id, peer.pk] = sign_id_pk(self.key.signing_key, peer_id, peer.pk)
        return signed

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
        if state is not PunchTarget.ONLINE and self._forward_to_cluster(
            conn, rz.RendezvousMessage(punch_hole_request=ph), ph.id
        ):
            return
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
        # The push first: the viewer is waiting on it, the log is not.
        self._push(peer, out)
        self._punch_event(conn, ph, "forwarded")
        self._log_forwarded(
            "Punch hole request from {ip} for {peer_id} ({path})",
            ip=conn.addr[0],
            peer_id=ph.id,
            path=path,
        )

    def _log_forwarded(self, text: str, **fields: object) -> None:
        """A forwarded request's line, within L{request_lines}' budget.

        Each line costs more than forwarding the request; a viewer (or many)
        asking in a loop must cost neither the reactor's time nor the disk.
        """
        skipped = self.request_lines.take(self._now())
        if skipped is None:
            return
        if skipped:
            text += " ({unlogged} forwarded requests not logged since the last line)"
        self._log.info(text, unlogged=skipped, **fields)

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
        if self.login_gate is None or getattr(conn, "forwarded", False):
            # A request forwarded by another cluster node passed its gate there.
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
        if (peer is None or not peer.online(self._now())) and self._forward_to_cluster(
            conn, rz.RendezvousMessage(request_relay=rr), rr.id
        ):
            return
        self._log_forwarded(
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
