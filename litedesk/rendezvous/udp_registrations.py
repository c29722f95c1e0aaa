"""The rendezvous server's UDP 21116 half: host registrations and their replies.

L{UdpRegistrations} is the base of L{litedesk.rendezvous.server.RendezvousServer}
(which adds the TCP half): one object, as the protocols see it, in two files
along the transport seam.  Replies are never larger than their request (no
amplification towards a forged source).  How an accepted C{RegisterPk} is
stored and answered (L{UdpRegistrations._settle_register_pk}) is shared with
the registrations and ID changes that arrive on streams.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.log_budget import LineBudget
from litedesk.rendezvous.registry import RegisterPkOutcome, Registry
from litedesk.rendezvous.sinks import DatagramSink, IdTaken, PeerStoreLike
from litedesk.wire.address import Address
from litedesk.wire.messages import parse_rendezvous

if TYPE_CHECKING:
    from litedesk.ops.event_log import EventSink

# The answer to nearly every datagram is one of these two: build them once.
_RPR = {
    flag: rz.RendezvousMessage(
        register_peer_response=rz.RegisterPeerResponse(request_pk=flag)
    ).SerializeToString()
    for flag in (False, True)
}
#: The UDP answers to RegisterPk, by result (every value of the enum).
_RPKR = {
    result: rz.RendezvousMessage(
        register_pk_response=rz.RegisterPkResponse(result=result)  # type: ignore[arg-type]
    ).SerializeToString()
    for result in rz.RegisterPkResponse.Result.values()
}


class UdpRegistrations:
    """Host registrations over UDP (RegisterPeer, RegisterPk) and their replies."""

    _log = Logger(namespace="litedesk.rendezvous.server.RendezvousServer")

    clock: IReactorTime
    registry: Registry
    store: PeerStoreLike | None
    rendezvous_servers: list[str]
    #: ((serial, servers), ConfigUpdate datagram) last built.
    _cu_cache: tuple[tuple[int, tuple[str, ...]], bytes] | None = None
    udp: DatagramSink | None
    counters: dict[str, int]
    events: EventSink | None
    #: Lines for accepted registrations (L{LineBudget}); set by the server.
    registration_lines: LineBudget

    def _now(self) -> float:
        return self.clock.seconds()

    def _now_us(self) -> int:
        return int(self.clock.seconds() * 1_000_000)

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
        else:
            self._other_datagram(kind, msg, source)

    def _other_datagram(self, kind: str, msg: rz.RendezvousMessage, source: Address) -> None:
        """Any other message by UDP: ignored here.

        PunchHoleRequest, PunchHoleSent and LocalAddr since hbbs' 2026
        reflection hardening (CVE-2026-30784), ConfigureUpdate because no port
        has an admin console here.  The rendezvous server adds the UDP punch's
        two messages, never answered by UDP (docs/protocol.rst §5.12).
        """

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

    def _config_update_bytes(self) -> bytes:
        """The ConfigUpdate datagram, built again only when serial or list change."""
        key = (self.registry.server_serial, tuple(self.rendezvous_servers))
        cached = self._cu_cache
        if cached is None or cached[0] != key:
            data = rz.RendezvousMessage(configure_update=self._config_update()).SerializeToString()
            cached = self._cu_cache = (key, data)
        return cached[1]

    def _register_peer(self, rp: rz.RegisterPeer, source: Address, size: int) -> None:
        # The heartbeat: most of what this server ever does, so no call here
        # that is not needed (ratio to a bare UDP echo: bench/rendezvous.py).
        outcome = self.registry.register_peer(rp.id, rp.serial, source, self.clock.seconds())
        if outcome is None:
            return
        reply = _RPR[outcome.request_pk]
        udp = self.udp
        if udp is not None and len(reply) <= size:
            udp.send_datagram(reply, source)
        else:
            self._reply_udp(reply, source, size)
        if outcome.send_config_update:
            # hbbs sends it here by UDP to any sender (399 bytes for a 5-byte
            # request with 12 servers listed).  It goes out only if it fits the
            # request; stock clients get it anyway from the TCP TestNatResponse
            # of their NAT test (RustDesk src/common.rs test_nat_type_: "if
            # let Some(cu) = tnr.cu" sets rendezvous-servers and the serial).
            # Every heartbeat of a host behind the serial comes here (all of
            # them after a cluster's list changes), so the bytes are built
            # once per list and a reply too large is counted, not logged.
            cu = self._config_update_bytes()
            if len(cu) <= size:
                self._reply_udp(cu, source, size)
            else:
                self.counters["udp_reply_too_large"] += 1

    def _register_pk(self, rk: rz.RegisterPk, source: Address, size: int) -> None:
        # RegisterPk.old_id is ignored here, as by hbbs: an ID change frees an
        # id, which a forgeable UDP source must not do (server.py takes it on TCP).
        outcome = self.registry.register_pk(rk.id, rk.uuid, rk.pk, source, self._now())

        def reply(result: int) -> None:
            self._reply_register_pk(result, source, size)

        self._settle_register_pk(outcome, rk.id, source[0], reply)

    def _settle_register_pk(
        self,
        outcome: RegisterPkOutcome,
        peer_id: str,
        ip: str,
        reply: Callable[[int], None],
        undo: Callable[[], None] | None = None,
        what: str = "RegisterPk",
    ) -> None:
        """Log, count and answer a RegisterPk outcome, from any transport.

        An accepted change is answered OK only once it is stored; if it cannot
        be, C{undo} is called and the answer is SERVER_ERROR, or UUID_MISMATCH
        when the database holds the id for another device (L{IdTaken}: another
        cluster node bound it first).  C{what} names the request in the log.
        """
        # Ids come from strangers: a refused one may be a 64 KiB frame's worth.
        peer_id = peer_id[:100]
        if outcome.result is None:
            self._log.debug(
                "Ignored {what} for {peer_id} from {ip}: {reason}",
                what=what,
                peer_id=peer_id,
                ip=ip,
                reason=outcome.reason,
            )
            return
        if outcome.result != rz.RegisterPkResponse.OK:
            self.counters["register_pk_refused"] += 1
            self._log.warn(
                "Refused {what} for {peer_id} from {ip}: {result} ({reason})",
                what=what,
                peer_id=peer_id,
                ip=ip,
                result=rz.RegisterPkResponse.Result.Name(outcome.result),
                reason=outcome.reason,
            )
            if self.events is not None:
                name = rz.RegisterPkResponse.Result.Name(outcome.result)
                self.events.registration_refused(ip, peer_id, name, str(outcome.reason))
            reply(outcome.result)
            return
        self.counters["register_pk_ok"] += 1
        snap = outcome.persist
        if snap is None:
            reply(rz.RegisterPkResponse.OK)
            return
        self._log_registration(snap.id, outcome.reason, ip)
        if self.store is None:
            reply(rz.RegisterPkResponse.OK)
            return

        # Acknowledge only once the registration is on disk: a restart, even
        # kill -9, must never lose a key (or an id) we told the host we accepted.
        def saved(guid: bytes) -> None:
            self.registry.set_guid(snap.id, guid)
            reply(rz.RegisterPkResponse.OK)

        def failed(f: Failure) -> None:
            if undo is not None:
                undo()
            if isinstance(f.value, IdTaken):
                self.registry.discard_unsaved(snap.id, snap.uuid)
                self.counters["register_pk_refused"] += 1
                self._log.warn(
                    "Refused {what} for {peer_id} from {ip}: UUID_MISMATCH (bound to another "
                    "device by another cluster node)",
                    what=what,
                    peer_id=snap.id,
                    ip=ip,
                )
                reply(rz.RegisterPkResponse.UUID_MISMATCH)
                return
            self._log.failure("Could not store peer {peer_id}", f, peer_id=snap.id)
            reply(rz.RegisterPkResponse.SERVER_ERROR)

        self.store.save(snap).addCallbacks(saved, failed)

    def _log_registration(self, peer_id: str, reason: str, ip: str) -> None:
        """The line of an accepted registration, within L{registration_lines}' budget."""
        skipped = self.registration_lines.take(self._now())
        if skipped is None:
            return
        if skipped:
            self._log.info(
                "Peer {peer_id} {reason} from {ip} ({unlogged} registrations not logged "
                "since the last line: at most {budget} lines a second)",
                peer_id=peer_id,
                reason=reason,
                ip=ip,
                unlogged=skipped,
                budget=self.registration_lines.per_second,
            )
        else:
            self._log.info(
                "Peer {peer_id} {reason} from {ip}", peer_id=peer_id, reason=reason, ip=ip
            )

    def _reply_register_pk(self, result: int, addr: Address, size: int) -> None:
        reply = _RPKR.get(result)
        if reply is None:  # not a value of the enum: never sent by this server
            reply = rz.RendezvousMessage(
                register_pk_response=rz.RegisterPkResponse(result=result)  # type: ignore[arg-type]
            ).SerializeToString()
        self._reply_udp(reply, addr, size)
