# -*- test-case-name: tests.test_rendezvous_stream_hosts -*-
"""The rendezvous server's hosts on streams, and ID changes: C{RegisterPk} on TCP or WebSocket.

L{HostStreams} is mixed into L{litedesk.rendezvous.server.RendezvousServer}.
hbbs answers C{RegisterPk} on a stream with NOT_SUPPORT; here a stream may
register a host, which then gets its pushes and heartbeats on that stream
(RustDesk's TCP mode, rendezvous_mediator.rs C{start_tcp}), and a
C{RegisterPk} with C{old_id} changes an id (docs/protocol.rst §5.11).  Which
stream may hold which host, and how many per site, is
L{litedesk.rendezvous.registry.StreamHosts}; this module binds hosts to
streams, keeps their heartbeats and unbinds them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.registry import Peer, RegisterPkOutcome, Registry
from litedesk.rendezvous.sinks import ReplySink

if TYPE_CHECKING:
    from litedesk.ops.event_log import EventSink

__all__ = ["HOST_HEARTBEAT", "HOST_KEEP_ALIVE", "HOST_STREAM_IDLE", "HostStreams"]

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


class HostStreams:
    """Hosts registered on streams and ID changes; the server provides what is declared."""

    clock: IReactorTime
    registry: Registry
    counters: dict[str, int]
    events: EventSink | None
    _heartbeats: dict[ReplySink, IDelayedCall]
    _log: Logger

    if TYPE_CHECKING:

        def _now(self) -> float: ...

        def _settle_register_pk(
            self,
            outcome: RegisterPkOutcome,
            peer_id: str,
            ip: str,
            reply: Callable[[int], None],
            undo: Callable[[], None] | None = None,
            what: str = "RegisterPk",
        ) -> None: ...

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
