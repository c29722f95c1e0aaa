"""The host's answers to rendezvous pushes: relay legs and LAN listeners.

RustDesk hosts react to pushes as described in
docs/protocol.rst §7.2:

- C{PunchHole}: when neither side is behind a symmetric NAT (and no relay
  is forced), TCP hole punching (L{litedesk.nat.punch}): from a fresh local
  port L, tell the server C{PunchHoleSent}, connect out from L to the
  viewer's public address and listen on L; the first stream wins.
  Otherwise the host opens a relay itself ("host-initiated relay":
  C{RelayResponse} with a new uuid through the rendezvous server, then the
  relay leg).  Hosts built without a NAT type source (C{nat_type=None})
  always take the relay, as before hole punching existed;
- with C{--upnp} (L{litedesk.nat.upnp}) every answer advertises the
  mapped external port as C{upnp_port}; when punching is impossible the
  host still answers C{PunchHoleSent} (without punching) so that the viewer
  learns our public address and can try that port before asking for a
  relay;
- C{FetchLocalAddr} (viewer behind the same public IP): listen on a LAN
  port, tell the server with C{LocalAddr}, accept one connection;
- C{RequestRelay}: acknowledge with C{RelayResponse}, then join the
  viewer's uuid on the relay;
- in WebSocket mode (C{--websocket}, L{litedesk.session.links.ServerLinks}
  over WebSocket) every C{PunchHole} and C{FetchLocalAddr} is answered with a
  relay the host opens itself, as a RustDesk host in WebSocket mode does
  (C{rendezvous_mediator.rs}: "websocket go relay directly"): nothing but the
  server's WebSocket URLs is reachable, so there is nothing to punch or
  listen on.  Answers and relay legs go over WebSocket too.

Every accepted stream is handed to the session factory (TLS server).

Pushes are unauthenticated requests from whoever reached the server, so the
host bounds what they can make it do: at most L{MAX_JOBS_PER_IP} relay legs,
punches and LAN listeners at a time for one requester IP and L{MAX_JOBS} in
all (a relay leg counts until it closes; L{litedesk.host.job_slots}), and a
C{RequestRelay} naming a relay the host was not told about goes to the host's
own default relay (L{litedesk.host.path_policy}).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.host.job_slots import MAX_JOBS, MAX_JOBS_PER_IP, JobSlots, Slot
from litedesk.host.lan_listener import OneShotFactory
from litedesk.host.path_policy import RelayChoice, host_path_choice
from litedesk.host.udp_paths import HostUdpPaths
from litedesk.nat.ipv6 import valid_v6_endpoint
from litedesk.nat.nattype import NAMES, resolve_ip
from litedesk.nat.punch import (
    Gate,
    GatedFactory,
    adopt_if_first,
    open_rendezvous_from,
    punch_candidates,
    punch_connect,
)
from litedesk.nat.sockets import listen_on, local_address_towards
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.session.links import LinkError, ServerLinks
from litedesk.wire import addrmangle
from litedesk.wire.address import Address

VERSION = "1.4.9"
LAN_ACCEPT_WINDOW = 18.0  # RustDesk hosts listen this long for the viewer
PUNCH_WINDOW = 18.0  # and accept/punch this long after PunchHoleSent


class HostPaths:
    """Implements the push handlers of L{litedesk.host.rendezvous_client}."""

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        peer_id: str,
        server: tuple[str, int],
        licence_key: str,
        make_session: Callable[..., IProtocol],
        on_event: Callable[[Any], None] | None = None,
        nat_type: Callable[[], int] | None = None,
        force_relay: bool = False,
        upnp_port: Callable[[], int] | None = None,
        relay_server: str = "",
        max_jobs_per_ip: int = MAX_JOBS_PER_IP,
        max_jobs: int = MAX_JOBS,
        links: ServerLinks | None = None,
        udp: HostUdpPaths | None = None,
    ) -> None:
        """
        @param links: how to reach the server and relays (default: TCP to
            C{server}); over WebSocket every push is answered by a relay.
        @param udp: UDP punching with QUIC sessions (None: C{--no-udp}).
        """
        self.reactor = reactor
        self.peer_id = peer_id
        self.server = server
        self.licence_key = licence_key
        self.make_session = make_session
        self.on_event = on_event
        self.nat_type = nat_type
        self.force_relay = force_relay
        self.upnp_port = upnp_port or (lambda: 0)
        self.listeners: list[IListeningPort] = []
        self._timers: list[Any] = []
        self._pending: set[Deferred[None]] = set()
        self._gates: list[Gate] = []
        #: Job slots per requester IP and in all (what pushes can make us hold).
        self.slots = JobSlots(reactor, max_jobs_per_ip, max_jobs)
        #: Where relay legs go and which relays a push may name.
        self.relays = RelayChoice(server, relay_server)
        self.relays_replaced = 0
        self.links = links if links is not None else ServerLinks(server)
        self.udp = udp

    @property
    def relay_server(self) -> str:
        """--relay-server: used (as RustDesk's relay-server option) before the
        rendezvous host:port+1 default."""
        return self.relays.relay_server

    @relay_server.setter
    def relay_server(self, value: str) -> None:
        self.relays.relay_server = value.strip()

    def use_server(self, server: tuple[str, int], links: ServerLinks | None = None) -> None:
        """The host registers with C{server} now (reached through C{links}, else by
        TCP): answers, punches and the default relay (host:port+1) go there
        (L{litedesk.host.failover})."""
        self.server = server
        self.relays.server = server
        if links is None:
            self.links.server = server
        else:
            self.links = links

    # -- IPushHandler ----------------------------------------------------------

    def registration_event(self, event: Any) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def punch_hole(self, msg: rz.PunchHole) -> None:
        viewer = addrmangle.decode(msg.socket_addr)
        slot = self.slots.acquire(viewer[0], "punch")
        if slot is None:
            return
        self.relays.remember(msg.relay_server)
        if msg.socket_addr_v6 and not valid_v6_endpoint(msg.socket_addr_v6):
            host6, port6 = addrmangle.decode(msg.socket_addr_v6)
            self._log.warn(
                "Viewer {ip} offers IPv6 endpoint [{addr}]:{port}, which is not a routable "
                "IPv6 endpoint; ignoring it",
                ip=viewer[0],
                addr=host6,
                port=port6,
            )
            msg.socket_addr_v6 = b""
        if self.links.websocket:
            self._relay_instead(msg.socket_addr, msg.relay_server, slot, "asks to connect")
            return
        own = self.nat_type() if self.nat_type is not None else None
        forced = self.force_relay or msg.force_relay
        if own is not None and not forced and self.udp is not None and self.udp.wants(msg, own):
            self._track(self._udp_punch(msg, own, slot), slot, holds=True)
            return
        why = host_path_choice(own, msg.nat_type, forced)
        upnp = self.upnp_port()
        if why and own is not None and not forced and (msg.socket_addr_v6 or upnp):
            # IPv4 cannot be punched, but IPv6 has no NAT, and a UPnP mapping
            # needs no punching: offer those (the viewer asks for a relay if
            # they fail).
            self._log.info(
                "Viewer {ip} asks to connect ({why}); offering {what} only",
                ip=viewer[0],
                why=why,
                what=" and ".join(
                    w for w, on in (("IPv6", msg.socket_addr_v6), ("UPnP", upnp)) if on
                ),
            )
            self._track(self._punch(msg, own, ipv4=False), slot)
            return
        if why:
            self._log.info(
                "Viewer {ip} asks to connect; opening a relay ({why})", ip=viewer[0], why=why
            )
            self._track(
                self._host_initiated_relay(msg.socket_addr, msg.relay_server, slot),
                slot,
                holds=True,
            )
            return
        assert own is not None
        self._log.info(
            "Viewer {ip} asks to connect ({vnat}, we are {nat}); punching",
            ip=viewer[0],
            vnat=NAMES.get(msg.nat_type, "?"),
            nat=NAMES.get(own, "?"),
        )
        self._track(self._punch(msg, own), slot)

    def request_relay(self, msg: rz.RequestRelay) -> None:
        viewer = addrmangle.decode(msg.socket_addr)
        slot = self.slots.acquire(viewer[0], "relay")
        if slot is None:
            return
        self._log.info("Viewer {ip} asks for a relay ({uuid})", ip=viewer[0], uuid=msg.uuid)
        if not self.relays.allowed(msg.relay_server):
            # The viewer names the relay; a relay we never heard of is where an
            # attacker wants us to connect.  Our default relay is where an
            # honest viewer's relay most likely is anyway.
            self.relays_replaced += 1
            host, port = self.relays.default()
            self._log.warn(
                "Viewer {ip} names relay {relay}, which we were not told about; "
                "using {host}:{port} instead",
                ip=viewer[0],
                relay=msg.relay_server[:100],
                host=host,
                port=port,
            )
            msg.relay_server = ""
        self._track(self._join_relay(msg, slot), slot, holds=True)

    def fetch_local_addr(self, msg: rz.FetchLocalAddr) -> None:
        viewer = addrmangle.decode(msg.socket_addr)
        slot = self.slots.acquire(viewer[0], "LAN")
        if slot is None:
            return
        self.relays.remember(msg.relay_server)
        if self.links.websocket:
            # RustDesk's handle_intranet: in WebSocket mode, a relay instead.
            self._relay_instead(msg.socket_addr, msg.relay_server, slot, "is on our public IP")
            return
        self._log.info("Viewer {ip} is on our public IP; offering a LAN address", ip=viewer[0])
        self._track(self._offer_lan(msg, slot), slot, holds=True)

    def _relay_instead(self, socket_addr: bytes, relay_server: str, slot: Slot, why: str) -> None:
        """WebSocket mode: every path is a relay the host opens (no punch, no LAN)."""
        ip = addrmangle.decode(socket_addr)[0]
        self._log.info("Viewer {ip} {why}; opening a relay (WebSocket mode)", ip=ip, why=why)
        self._track(self._host_initiated_relay(socket_addr, relay_server, slot), slot, holds=True)

    # -- paths -----------------------------------------------------------------

    def _track(self, coro: Any, slot: Slot, holds: bool = False) -> None:
        """Run a path handler in the job slot of C{ip}.

        C{holds}: on success the coroutine hands its slot to what it opened
        (a relay leg, a LAN listener), which releases it when it closes.
        """
        d: Deferred[None] = ensureDeferred(coro)

        def release(result: object) -> object:
            if not holds or isinstance(result, Failure):
                slot.release()
            return result

        d.addBoth(release)

        def failed(f: Any) -> None:
            if f.check(LinkError):
                self._log.warn("Connection path failed: {error}", error=f.getErrorMessage())
            else:
                self._log.failure("Connection path failed", f)

        d.addErrback(failed)
        self._pending.add(d)

        def forget(_: object) -> None:
            self._pending.discard(d)

        d.addBoth(forget)

    def idle(self) -> Deferred[object]:
        """Fires when every path handler that is running now has finished."""
        return Deferred.fromCoroutine(self._wait_pending())

    async def _wait_pending(self) -> object:
        for d in list(self._pending):
            await d
        return None

    async def _tell_server(self, msg: rz.RendezvousMessage) -> None:
        link = await self.links.open_rendezvous(self.reactor)
        link.send(msg)
        # hbbs closes after a host's answer; wait for that (bounded) so the
        # answer is delivered before the relay leg races it.
        d = link.closed
        d.addTimeout(5, self.reactor)
        try:
            await d
        except Exception:
            link.close()

    async def _host_initiated_relay(
        self, socket_addr: bytes, relay_server: str, slot: Slot
    ) -> None:
        uuid = str(uuidlib.uuid4())
        # The server chose this relay (RustDesk: the relay-server option first).
        relay = self.relay_server or relay_server
        await self._tell_server(
            rz.RendezvousMessage(
                relay_response=rz.RelayResponse(
                    socket_addr=socket_addr,
                    uuid=uuid,
                    relay_server=relay or self.links.default_relay_name(),
                    id=self.peer_id,
                    version=VERSION,
                    upnp_port=self.upnp_port(),
                )
            )
        )
        await self._relay_leg(relay, uuid, slot)

    async def _relay_leg(self, relay: str, uuid: str, slot: Slot) -> None:
        """Open the relay leg (C{relay}: its name, empty for the default); its job slot
        is released when the leg closes."""
        leg = await self.links.connect_relay(
            self.reactor,
            relay,
            uuid,
            self.licence_key,
            self.make_session(relayed=True, path="relay"),
            role="host",
        )
        leg.lost.addBoth(slot.release)

    def _session_for(self, label: str) -> Callable[[], IProtocol]:
        """Sessions for a stream of candidate C{label}, named as the viewer names the path."""
        path = {"ipv4": "direct", "ipv6": "ipv6"}.get(label, label)
        return lambda: self.make_session(path=path)

    def _listen_gated(
        self, candidates: list[tuple[str, Address, Address]], gate: Gate
    ) -> list[IListeningPort]:
        """Listen on each candidate's shared endpoint; the viewer may connect in first."""
        listening: list[IListeningPort] = []
        for label, shared, _ in candidates:
            try:
                port_obj = listen_on(
                    self.reactor, shared, GatedFactory(gate, self._session_for(label), label)
                )
            except OSError as e:
                self._log.warn("Cannot listen on {addr}: {error}", addr=shared, error=e)
                continue
            listening.append(port_obj)
            self.listeners.append(port_obj)
        return listening

    async def _punch(self, msg: rz.PunchHole, own_nat: int, ipv4: bool = True) -> None:
        viewer = addrmangle.normalize(addrmangle.decode(msg.socket_addr))
        server = (resolve_ip(*self.server), self.server[1])
        link, local = await open_rendezvous_from(self.reactor, server)
        candidates, socket_addr_v6 = punch_candidates(msg, server, local, viewer, ipv4)
        gate = Gate()
        self._gates.append(gate)
        listening = self._listen_gated(candidates, gate)
        t0 = self.reactor.seconds()

        async def connect_out(label: str, shared: Address, remote: Address) -> None:
            sock = await punch_connect(self.reactor, shared, remote, PUNCH_WINDOW, gate)
            adopt_if_first(self.reactor, sock, gate, label, self._session_for(label))

        connecting = [ensureDeferred(connect_out(*c)) for c in candidates]
        link.send(
            rz.RendezvousMessage(
                punch_hole_sent=self._punch_hole_sent(msg, own_nat, socket_addr_v6)
            )
        )
        closed = link.closed
        closed.addTimeout(5, self.reactor)

        def stop(_: object = None) -> None:
            for p in listening:
                if p in self.listeners:
                    self.listeners.remove(p)
                p.stopListening()
            listening.clear()

        timer = self.reactor.callLater(PUNCH_WINDOW, stop)
        self._timers.append(timer)
        try:
            await closed
        except Exception:
            link.close()
        for d in connecting:
            await d
        if gate in self._gates:
            self._gates.remove(gate)
        if gate.winner is not None:
            self._log.info(
                "Punched stream with viewer {ip} ({how}) after {ms} ms",
                ip=viewer[0],
                how=gate.winner,
                ms=int((self.reactor.seconds() - t0) * 1000),
            )
            if timer.active():
                timer.cancel()
            if timer in self._timers:
                self._timers.remove(timer)
            stop()

    def _punch_hole_sent(
        self, msg: rz.PunchHole, own_nat: int, socket_addr_v6: bytes = b""
    ) -> rz.PunchHoleSent:
        """Our answer to C{msg}'s punch, by TCP or (the UDP punch's) by UDP."""
        return rz.PunchHoleSent(
            socket_addr=msg.socket_addr,
            id=self.peer_id,
            relay_server=self.relays.announced(msg.relay_server),
            nat_type=own_nat,  # type: ignore[arg-type]
            version=VERSION,
            socket_addr_v6=socket_addr_v6,
            upnp_port=self.upnp_port(),
        )

    async def _udp_punch(self, msg: rz.PunchHole, own_nat: int, slot: Slot) -> None:
        assert self.udp is not None
        sent = self._punch_hole_sent(msg, own_nat)
        await self.udp.punch(msg, own_nat, self.server, sent, slot)

    async def _join_relay(self, msg: rz.RequestRelay, slot: Slot) -> None:
        await self._tell_server(
            rz.RendezvousMessage(
                relay_response=rz.RelayResponse(
                    socket_addr=msg.socket_addr, version=VERSION, upnp_port=self.upnp_port()
                )
            )
        )
        await self._relay_leg(msg.relay_server or self.relay_server, msg.uuid, slot)

    async def _offer_lan(self, msg: rz.FetchLocalAddr, slot: Slot) -> None:
        host, port = self.server
        try:
            local_ip = local_address_towards(host, port)
        except OSError as e:
            raise LinkError(f"no local address towards {host}: {e}") from None
        listening: list[IListeningPort] = []
        timers: list[Any] = []

        def stop() -> None:
            self.slots.withdraw_offer(slot.ip, stop)
            for t in timers:
                if t.active():
                    t.cancel()
                if t in self._timers:
                    self._timers.remove(t)
            for p in listening:
                if p in self.listeners:
                    self.listeners.remove(p)
                p.stopListening()
            listening.clear()
            slot.release()

        factory = OneShotFactory(self._session_for("lan"), lambda: self.reactor.callLater(0, stop))
        endpoint_class = TCP6ServerEndpoint if ":" in local_ip else TCP4ServerEndpoint
        endpoint: Any = endpoint_class(self.reactor, 0, interface=local_ip)
        port_obj: IListeningPort = await endpoint.listen(factory)
        listening.append(port_obj)
        self.listeners.append(port_obj)
        timer = self.reactor.callLater(LAN_ACCEPT_WINDOW, stop)
        timers.append(timer)
        self._timers.append(timer)
        self.slots.offer(slot.ip, stop)
        bound: Any = port_obj.getHost()
        local = (local_ip, int(bound.port))
        await self._tell_server(
            rz.RendezvousMessage(
                local_addr=rz.LocalAddr(
                    socket_addr=msg.socket_addr,
                    local_addr=addrmangle.encode(local),
                    relay_server=self.relays.announced(msg.relay_server),
                    id=self.peer_id,
                    version=VERSION,
                )
            )
        )

    def stop(self) -> None:
        if self.udp is not None:
            self.udp.stop()
        for gate in self._gates:
            gate.claim("stopped")  # punch loops end at their next attempt
        self._gates.clear()
        for t in self._timers:
            if t.active():
                t.cancel()
        self._timers.clear()
        for p in list(self.listeners):
            p.stopListening()
        self.listeners.clear()
