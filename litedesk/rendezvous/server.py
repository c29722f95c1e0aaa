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
from dataclasses import dataclass
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.nat.ipv6 import is_routable_v6
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.floodguard import FloodGuard
from litedesk.rendezvous.registry import PunchTarget, Registry
from litedesk.rendezvous.relaylist import DEFAULT_RELAY_PORT, RelayList
from litedesk.rendezvous.store import PeerRecord
from litedesk.wire import addrmangle
from litedesk.wire.address import Address, parse_host_port
from litedesk.wire.addrmangle import normalize_host
from litedesk.wire.keys import ServerKey, sign_id_pk
from litedesk.wire.messages import parse_rendezvous

Failure_ = rz.PunchHoleResponse.Failure

#: A stock RustDesk client resends an unanswered PunchHoleRequest on the same
#: TCP connection, three times in all (src/client.rs _start_inner,
#: "for i in 1..=3"); every RequestRelay attempt opens a new connection
#: (client.rs request_relay: "use different socket ... for each attempt").
#: So one connection carries at most three identical PunchHoleRequests or
#: exactly one RequestRelay, never both.
MAX_PUNCH_REPEATS = 3
#: Punch/relay requests per second from one source IP, and the burst.  One
#: connect costs a stock client at most 3 + 3 requests.
DEFAULT_REQUEST_RATE = 2.0
REQUEST_BURST_FACTOR = 10.0
#: How long a relay a host named in its answer stays usable by that viewer:
#: a stock client asks for the relay after failing the direct path (up to
#: 18 s) and retries 3 times with 18 s each.
VOUCH_WINDOW = 120.0
MAX_VOUCHED = 10_000

_TOO_MANY = "Too many connection requests from your address; try again in a few seconds"


def normalize_relay(entry: str) -> tuple[str, int] | None:
    """A relay entry as C{(host, port)} for comparison; None if it does not parse.

    Host names compare case-insensitively, IP addresses in their normal form
    (C{::ffff:1.2.3.4} is C{1.2.3.4}); the port defaults to 21117 as clients do
    (RustDesk C{check_port(relay_server, RELAY_PORT)}).
    """
    try:
        host, port = parse_host_port(entry, DEFAULT_RELAY_PORT)
    except ValueError:
        return None
    host = host.strip().rstrip(".").lower()
    if not host:
        return None
    return normalize_host(host), port


def valid_v6_endpoint(data: bytes) -> bool:
    """Is C{data} an AddrMangle IPv6 endpoint another host could be sent to?

    Well formed (16 address bytes and a little-endian port), a routable
    address (L{is_routable_v6}: not loopback, link-local, ULA, multicast,
    v4-mapped...) and a port in 1..65535.  That is all the server can check:
    the requester names an address of its own choosing and the server has no
    way to prove the requester owns it (the request usually arrives over
    IPv4, and even over IPv6 a client may use another (privacy) address for
    its punch socket), short of a round trip to that address, which would
    itself be the unsolicited packet we want to avoid.  What this excludes is
    aiming hosts at their own machine or LAN (loopback, link-local, ULA).
    """
    if len(data) != 18:
        return False
    host, port = addrmangle.decode(data)
    return 0 < port < 65536 and is_routable_v6(host)


@dataclass(slots=True)
class _ConnRequests:
    """What one TCP connection has asked for so far."""

    kind: str
    peer_id: str
    count: int = 1


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
    #: The local address the connection arrived on (our own relay's IP).
    local: Address

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
        request_guard: FloodGuard | None = None,
        own_relay_port: int = 0,
    ) -> None:
        self.clock = clock
        self.registry = registry
        self.key = key
        self.relays = relays
        self.store = store
        self.rendezvous_servers = list(rendezvous_servers)
        self.always_use_relay = always_use_relay
        if request_guard is None:  # (not `or`: an empty FloodGuard is falsy)
            request_guard = FloodGuard(
                DEFAULT_REQUEST_RATE, DEFAULT_REQUEST_RATE * REQUEST_BURST_FACTOR
            )
        self.request_guard = request_guard
        #: The TCP port of the relay running in this process (0: none).
        self.own_relay_port = own_relay_port
        self.udp: DatagramSink | None = None
        self._parked: dict[Address, ReplySink] = {}
        self._requests: dict[ReplySink, _ConnRequests] = {}
        # (host id, viewer IP) -> (relay the host itself named, expiry)
        self._vouched: dict[tuple[str, str], tuple[tuple[str, int], float]] = {}
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
            self._register_peer(msg.register_peer, source, len(data))
        elif kind == "register_pk":
            self._register_pk(msg.register_pk, source, len(data))
        # Everything else by UDP is ignored: PunchHoleRequest, PunchHoleSent and
        # LocalAddr since hbbs' 2026 reflection hardening (CVE-2026-30784),
        # ConfigureUpdate because no port has an admin console here.

    def _send_udp(self, msg: rz.RendezvousMessage, addr: Address) -> None:
        """A push to a registered host (not a reply: no size rule)."""
        if self.udp is not None:
            self.udp.send_datagram(msg.SerializeToString(), addr)

    def _reply_udp(self, data: bytes, addr: Address, request_size: int) -> bool:
        """Answer a datagram of C{request_size} bytes with at most that many bytes.

        UDP sources are not authenticated: a reply larger than its request
        would make this server an amplifier towards whoever's address the
        request was forged with.  Larger replies are not sent (and counted);
        what they carried has another way (ConfigUpdate: TCP TestNatResponse).
        """
        if len(data) > request_size:
            self.counters["udp_reply_too_large"] += 1
            self._log.debug(
                "Not sending a {size}-byte reply to a {request}-byte datagram from {ip}",
                size=len(data),
                request=request_size,
                ip=addr[0],
            )
            return False
        if self.udp is not None:
            self.udp.send_datagram(data, addr)
        return True

    def _config_update(self) -> rz.ConfigUpdate:
        return rz.ConfigUpdate(
            serial=self.registry.server_serial, rendezvous_servers=self.rendezvous_servers
        )

    def _register_peer(self, rp: rz.RegisterPeer, source: Address, size: int) -> None:
        outcome = self.registry.register_peer(rp.id, rp.serial, source, self._now())
        if outcome is None:
            return
        self._reply_udp(_RPR[outcome.request_pk], source, size)
        if outcome.send_config_update:
            # hbbs sends it here by UDP to any sender (399 bytes for a 5-byte
            # request with 12 servers listed).  It goes out only if it fits the
            # request; stock clients get it anyway from the TCP TestNatResponse
            # of their NAT test (RustDesk src/common.rs test_nat_type_: "if
            # let Some(cu) = tnr.cu" sets rendezvous-servers and the serial).
            cu = rz.RendezvousMessage(configure_update=self._config_update())
            self._reply_udp(cu.SerializeToString(), source, size)

    def _register_pk(self, rk: rz.RegisterPk, source: Address, size: int) -> None:
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
            self._reply_register_pk(outcome.result, source, size)
            return
        self.counters["register_pk_ok"] += 1
        snap = outcome.persist
        if snap is None:
            self._reply_register_pk(rz.RegisterPkResponse.OK, source, size)
            return
        self._log.info(
            "Peer {peer_id} {reason} from {ip}",
            peer_id=rk.id,
            reason=outcome.reason,
            ip=source[0],
        )
        if self.store is None:
            self._reply_register_pk(rz.RegisterPkResponse.OK, source, size)
            return

        # Acknowledge only once the registration is on disk: a restart, even
        # kill -9, must never lose a key we told the host we accepted.
        def saved(guid: bytes) -> None:
            self.registry.set_guid(snap.id, guid)
            self._reply_register_pk(rz.RegisterPkResponse.OK, source, size)

        def failed(f: Failure) -> None:
            self._log.failure("Could not store peer {peer_id}", f, peer_id=snap.id)
            self._reply_register_pk(rz.RegisterPkResponse.SERVER_ERROR, source, size)

        self.store.save(snap).addCallbacks(saved, failed)

    def _reply_register_pk(self, result: int, addr: Address, size: int) -> None:
        reply = rz.RendezvousMessage(register_pk_response=rz.RegisterPkResponse(result=result))  # type: ignore[arg-type]
        self._reply_udp(reply.SerializeToString(), addr, size)

    # -- TCP 21116 -----------------------------------------------------------

    def connection_closed(self, conn: ReplySink) -> None:
        if self._parked.get(conn.addr) is conn:
            del self._parked[conn.addr]
        self._requests.pop(conn, None)

    def _park(self, conn: ReplySink) -> None:
        self._parked[conn.addr] = conn

    def parked_count(self) -> int:
        return len(self._parked)

    def handle_stream_message(self, conn: ReplySink, msg: rz.RendezvousMessage) -> bool:
        """Handle one message from TCP 21116; False means close the connection."""
        kind = msg.WhichOneof("union")
        if kind == "punch_hole_request":
            if not self._admit(conn, kind, msg.punch_hole_request.id):
                return False
            self._park(conn)
            self._punch_hole_request(conn, msg.punch_hole_request)
            return True
        if kind == "request_relay":
            if not self._admit(conn, kind, msg.request_relay.id):
                return False
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

    def _admit(self, conn: ReplySink, kind: str, peer_id: str) -> bool:
        """May this punch/relay request go to a host?  False: refused, close.

        Each request makes an online host act (open a relay leg, punch, listen),
        so a connection gets what a stock client needs and no more
        (L{MAX_PUNCH_REPEATS}), and one source IP gets a token bucket.
        """
        seen = self._requests.get(conn)
        if seen is not None:
            repeat = kind == seen.kind == "punch_hole_request" and peer_id == seen.peer_id
            if not repeat or seen.count >= MAX_PUNCH_REPEATS:
                self.counters["requests_refused_connection"] += 1
                self._log.warn(
                    "Refused {kind} for {peer_id} from {ip}: request {n} on one TCP "
                    "connection after {first} for {first_id}; closing",
                    kind=kind,
                    peer_id=peer_id,
                    ip=conn.addr[0],
                    n=seen.count + 1,
                    first=seen.kind,
                    first_id=seen.peer_id,
                )
                return False
        if not self.request_guard.allow(conn.addr[0], self._now()):
            self.counters["requests_refused_rate"] += 1
            self._log.warn(
                "Refused {kind} for {peer_id} from {ip}: more than {rate}/s punch/relay "
                "requests from this IP; closing",
                kind=kind,
                peer_id=peer_id,
                ip=conn.addr[0],
                rate=self.request_guard.rate,
            )
            # Stock clients show these texts as the reason (client.rs bails
            # with other_failure / refuse_reason).
            if kind == "punch_hole_request":
                resp = rz.PunchHoleResponse(other_failure=_TOO_MANY)
                conn.send_message(rz.RendezvousMessage(punch_hole_response=resp))
            else:
                rr = rz.RelayResponse(refuse_reason=_TOO_MANY)
                conn.send_message(rz.RendezvousMessage(relay_response=rr))
            return False
        if seen is None:
            self._requests[conn] = _ConnRequests(kind, peer_id)
        else:
            seen.count += 1
        return True

    def _checked_v6(self, data: bytes, conn: ReplySink, what: str) -> bytes:
        """C{data} if it is a valid IPv6 endpoint (L{valid_v6_endpoint}), else b""."""
        if not data or valid_v6_endpoint(data):
            return data
        self.counters["addr_v6_dropped"] += 1
        host, port = addrmangle.decode(data)
        self._log.warn(
            "Dropped socket_addr_v6 {addr} in {what} from {ip}: not a routable IPv6 "
            "endpoint ({size} bytes)",
            addr=f"[{host}]:{port}",
            what=what,
            ip=conn.addr[0],
            size=len(data),
        )
        return b""

    def relay_known(self, relay_server: str, conn: ReplySink, peer_id: str) -> bool:
        """Is C{relay_server} one a stock viewer of C{peer_id} can legitimately name?

        The viewer takes it from the host's answer (PunchHoleResponse.relay_server,
        RustDesk client.rs _start_inner), which the host took from our push or
        from its own relay-server option or derived (rendezvous host:port+1,
        rendezvous_mediator.rs get_relay_server).  So: empty (host's default),
        a relay we announce, our own relay on the address this request came
        to, or a relay the registered host itself named to this viewer's IP.
        """
        if not relay_server.strip():
            return True
        want = normalize_relay(relay_server)
        if want is None:
            return False
        for entry in self.relays.configured:
            if normalize_relay(entry) == want:
                return True
        if self.own_relay_port and want == (normalize_host(conn.local[0]), self.own_relay_port):
            return True
        vouched = self._vouched.get((peer_id, conn.addr[0]))
        return vouched is not None and vouched[0] == want and vouched[1] > self._now()

    def _vouch(self, conn: ReplySink, peer_id: str, relay_server: str, viewer: Address) -> None:
        """Remember the relay a host named in its answer to C{viewer}, if it is the host.

        Only an answer from the registered host's IP counts: anyone can send a
        PunchHoleSent naming any id.
        """
        if not relay_server.strip():
            return
        peer = self.registry.get(peer_id)
        relay = normalize_relay(relay_server)
        if peer is None or peer.addr is None or relay is None:
            return
        if normalize_host(peer.addr[0]) != normalize_host(conn.addr[0]):
            return
        if len(self._vouched) >= MAX_VOUCHED:
            now = self._now()
            self._vouched = {k: v for k, v in self._vouched.items() if v[1] > now}
            while len(self._vouched) >= MAX_VOUCHED:
                del self._vouched[next(iter(self._vouched))]
        self._vouched[(peer_id, viewer[0])] = (relay, self._now() + VOUCH_WINDOW)

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
        socket_addr_v6 = self._checked_v6(ph.socket_addr_v6, conn, "PunchHoleRequest")
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
                    socket_addr_v6=socket_addr_v6,
                )
            )
        for addr in self.registry.push_addresses(peer, self._now()):
            self._send_udp(out, addr)

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
        viewer = addrmangle.normalize(addrmangle.decode(phs.socket_addr))
        if viewer in self._parked:
            self._vouch(conn, phs.id, phs.relay_server, viewer)
        resp = rz.PunchHoleResponse(
            socket_addr=self._mangle(conn.addr),
            pk=self._signed_pk(phs.version, phs.id),
            relay_server=phs.relay_server,
            nat_type=phs.nat_type,
            socket_addr_v6=self._checked_v6(phs.socket_addr_v6, conn, "PunchHoleSent"),
            # LiteDesk extension (hbbs does not copy it): the host's UPnP
            # port; RustDesk clients ignore it or try it.
            upnp_port=phs.upnp_port,
        )
        self._deliver(phs.socket_addr, rz.RendezvousMessage(punch_hole_response=resp), "Punch")

    def _local_addr(self, conn: ReplySink, la: rz.LocalAddr) -> None:
        viewer = addrmangle.normalize(addrmangle.decode(la.socket_addr))
        if viewer in self._parked:
            self._vouch(conn, la.id, la.relay_server, viewer)
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
        for addr in self.registry.push_addresses(peer, self._now()):
            self._send_udp(rz.RendezvousMessage(request_relay=fwd), addr)

    def _relay_response(self, conn: ReplySink, rr: rz.RelayResponse) -> None:
        out = rz.RelayResponse()
        out.CopyFrom(rr)
        out.socket_addr = b""
        out.socket_addr_v6 = self._checked_v6(rr.socket_addr_v6, conn, "RelayResponse")
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
