"""The host's link to the rendezvous server: registration and pushes.

L{RendezvousClient}: one UDP socket, as RustDesk hosts use: heartbeats and
key registration go out, the server's answers and its pushes
(C{PunchHole}, C{FetchLocalAddr}, C{RequestRelay}) come in.  The rules live
in L{litedesk.host.registration.Registration}.

L{StreamRendezvousClient}: a host that cannot use UDP (C{--websocket}: the
server is reachable only as C{ws(s)://}) keeps one stream open instead, as
RustDesk's C{start_tcp} does (docs/protocol.rst §5.11): C{RegisterPk} on it,
the server's keep-alives answered, the pushes received on it, and a new
stream when it ends.  The rules live in
L{litedesk.host.registration.StreamRegistration}.

Either way pushes are handed to an L{IPushHandler}, once per request.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Coroutine
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.host.failover import Failover, FailoverOutput, StreamFailover
from litedesk.host.registration import Event, Registration, StreamOutput, StreamRegistration
from litedesk.host.server_list import ServerRotation
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.address import Address
from litedesk.wire.addrmangle import decode, normalize, normalize_host
from litedesk.wire.bytescodec import FrameDecoder, FrameError, encode_frame
from litedesk.wire.messages import parse_rendezvous

DUPLICATE_WINDOW = 0.1  # RustDesk ignores a repeated push from one requester within 100 ms


class IPushHandler(TypingProtocol):
    def punch_hole(self, msg: rz.PunchHole) -> None: ...

    def fetch_local_addr(self, msg: rz.FetchLocalAddr) -> None: ...

    def request_relay(self, msg: rz.RequestRelay) -> None: ...

    def registration_event(self, event: Event) -> None: ...


def duplicate_key(msg: rz.RendezvousMessage) -> tuple[str, str]:
    """What identifies a push, for the duplicate filter.

    A C{RequestRelay} is one viewer's relay attempt: its uuid.  Other pushes
    name the requester by its mangled address, whose IPv4 form embeds a
    microsecond timestamp (AddrMangle), so the raw bytes of two copies of
    one request never match: key on the decoded address instead.
    """
    kind = msg.WhichOneof("union") or ""
    if kind == "request_relay":
        return kind, msg.request_relay.uuid
    inner = getattr(msg, kind, None)
    raw = bytes(getattr(inner, "socket_addr", b""))
    host, port = normalize(decode(raw))
    return kind, f"{host}|{port}"


PUSHES = ("punch_hole", "fetch_local_addr", "request_relay")


class PushDispatcher:
    """Hands each push to the handler once: a copy within L{DUPLICATE_WINDOW} is dropped."""

    _log = Logger()

    def __init__(self, handler: IPushHandler) -> None:
        self.handler = handler
        self._recent: dict[tuple[str, str], float] = {}

    def dispatch(self, msg: rz.RendezvousMessage, now: float) -> None:
        kind = msg.WhichOneof("union")
        if kind not in PUSHES:
            return
        key = duplicate_key(msg)
        last = self._recent.get(key)
        self._recent = {k: t for k, t in self._recent.items() if now - t < DUPLICATE_WINDOW}
        if last is not None and now - last < DUPLICATE_WINDOW:
            return
        self._recent[key] = now
        try:
            if kind == "punch_hole":
                self.handler.punch_hole(msg.punch_hole)
            elif kind == "fetch_local_addr":
                self.handler.fetch_local_addr(msg.fetch_local_addr)
            else:
                self.handler.request_relay(msg.request_relay)
        except Exception:
            self._log.failure("Handling {kind} failed", kind=kind)


class RendezvousClient(DatagramProtocol):
    """Keeps one host registered with one server at a time and receives its pushes.

    With a L{ServerRotation} of several servers it moves to the next one
    when the current one stops answering (L{Failover}); C{on_switch} hears
    the new server (everything else the host sends to "the server" follows
    it) and C{on_adopted} the server list a C{ConfigUpdate} changed (to save).
    """

    _log = Logger()
    noisy = False

    def __init__(
        self,
        registration: Registration,
        server: tuple[str, int],
        handler: IPushHandler,
        clock: IReactorTime,
        tick: float = 1.0,
        rotation: ServerRotation | None = None,
        on_switch: Callable[[Address], None] | None = None,
        on_adopted: Callable[[list[Address]], None] | None = None,
    ) -> None:
        self.registration = registration
        self.failover = Failover(registration, rotation or ServerRotation([server]))
        self.server = self.failover.current
        self.on_switch = on_switch
        self.on_adopted = on_adopted
        self.handler = handler
        self.clock = clock
        self._tick_interval = tick
        self._loop: LoopingCall | None = None
        self._server_addr: tuple[str, int] | None = None
        self._pushes = PushDispatcher(handler)

    def startProtocol(self) -> None:
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self._tick_interval, now=True)

    def stopProtocol(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _resolve(self) -> tuple[str, int] | None:
        # Resolved on every miss-free tick would be wasteful; resolve lazily and
        # again after the server stops answering (it may have moved).
        if self._server_addr is None:
            host, port = self.server
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except OSError as e:
                self._log.warn(
                    "Cannot resolve rendezvous server {host}: {error}", host=host, error=e
                )
                return None
            family = self._family()
            chosen = [i for i in infos if i[0] == family] or infos
            addr = chosen[0][4]
            ip = str(addr[0])
            if family == socket.AF_INET6 and ":" not in ip:
                ip = "::ffff:" + ip
            self._server_addr = (ip, int(addr[1]))
        return self._server_addr

    def _family(self) -> int:
        assert self.transport is not None
        return int(self.transport.getHandle().family)  # type: ignore[attr-defined]

    def _tick(self) -> None:
        try:
            out = self.failover.tick(self.clock.seconds())
            if self.registration.misses >= 4:
                self._server_addr = None
            self._apply(out)
        except Exception:
            # The loop must survive a bad tick or the host silently goes offline.
            self._log.failure("Registration tick failed")

    def config_update(self, cu: rz.ConfigUpdate) -> None:
        """A C{ConfigUpdate} from the current server's NAT test answer."""
        self._apply(self.failover.config_update(cu, self.clock.seconds()))

    def _apply(self, out: FailoverOutput) -> None:
        if out.switch_to is not None:
            self.server = out.switch_to
            self._server_addr = None
            if self.on_switch is not None:
                self.on_switch(out.switch_to)
        if out.adopted is not None and self.on_adopted is not None:
            self.on_adopted(out.adopted)
        addr = self._resolve()
        if addr is not None and self.transport is not None:
            for msg in out.send:
                try:
                    self.transport.write(msg.SerializeToString(), addr)
                except OSError as e:
                    self._log.warn("Cannot send to rendezvous server: {error}", error=e)
        for event in out.events:
            self.handler.registration_event(event)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        msg = parse_rendezvous(datagram)
        if msg is None:
            return
        # Only the server may push: anything else could make us connect anywhere.
        server = self._server_addr
        if (
            server is None
            or normalize_host(addr[0]) != normalize_host(server[0])
            or (addr[1] != server[1])
        ):
            self._log.debug("Ignored a datagram from {ip}:{port}", ip=addr[0], port=addr[1])
            return
        kind = msg.WhichOneof("union")
        now = self.clock.seconds()
        if kind in ("register_peer_response", "register_pk_response", "configure_update"):
            self._apply(self.failover.received(msg, now))
            return
        self._pushes.dispatch(msg, now)


# -- registered on a stream ---------------------------------------------------------------

#: Largest frame the server may send on the stream (its own --max-frame).
MAX_STREAM_FRAME = 64 * 1024
#: Seconds a stopping client waits for its stream to close.
STOP_TIMEOUT = 3.0


class _StreamLink(Protocol):
    """One rendezvous stream: frames in, to the client; messages and keep-alives out."""

    def __init__(self, client: StreamRendezvousClient) -> None:
        self.client = client
        self._decoder = FrameDecoder(MAX_STREAM_FRAME)
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.client.stream_opened(self)

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except FrameError as e:
            self.close(f"bad frame from the server: {e}")
            return
        for frame in frames:
            if self.transport is None or self.client.link is not self:
                return
            self.client.frame_received(frame)

    def send(self, payload: bytes) -> None:
        if self.transport is not None:
            self.transport.write(encode_frame(payload))

    def close(self, reason: str) -> None:
        self.client.log_close(reason)
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.client.stream_closed(self)
        if not self.ended.called:
            self.ended.callback(None)


class StreamRendezvousClient(Service):
    """Keeps one host registered on a rendezvous stream and receives its pushes.

    @param connect: opens a stream to the server and connects the protocol
        given to it (L{litedesk.session.links.ServerLinks.open_stream});
        fails when the server cannot be reached.
    @param describe: the server as log lines name it.
    @param rotation: several servers (C{--websocket --rendezvous A,B}): when
        two streams in a row end without registering, the next stream goes to
        the next server (L{StreamFailover}); C{on_switch} hears it first and
        points C{connect} (and C{describe}) there.
    @ivar link: the stream now open, or None.
    """

    _log = Logger()

    def __init__(
        self,
        registration: StreamRegistration,
        connect: Callable[[IProtocol], Coroutine[Any, Any, None]],
        handler: IPushHandler,
        clock: IReactorTime,
        describe: str,
        tick: float = 1.0,
        rotation: ServerRotation | None = None,
        on_switch: Callable[[Address], None] | None = None,
    ) -> None:
        self.registration = registration
        self.failover = StreamFailover(registration, rotation)
        self.on_switch = on_switch
        self.connect = connect
        self.handler = handler
        self.clock = clock
        self.describe = describe
        self._tick_interval = tick
        self._pushes = PushDispatcher(handler)
        self.link: _StreamLink | None = None
        self._loop: LoopingCall | None = None
        self._retry: IDelayedCall | None = None
        self._connecting: Deferred[None] | None = None
        self.streams = 0  # streams opened so far

    # -- service ----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._open()

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._stop_loop()
        if self._connecting is not None:
            self._connecting.cancel()
        link, self.link = self.link, None
        if link is None or link.transport is None or link.ended.called:
            return None
        link.transport.loseConnection()
        # Returned so that twistd (and a test) waits for the close, briefly.
        ended = link.ended
        ended.addTimeout(STOP_TIMEOUT, self.clock)
        ended.addErrback(lambda _: None)
        return ended

    # -- streams ----------------------------------------------------------------------

    def _open(self) -> None:
        self._retry = None
        if not self.running:
            return
        d: Deferred[None] = ensureDeferred(self.connect(_StreamLink(self)))
        self._connecting = d

        def failed(f: Failure) -> None:
            if self._connecting is d:
                self._connecting = None
            if not self.running:
                return
            self._log.warn("{error}", error=f.getErrorMessage())
            self._schedule(self.clock.seconds())

        def done(_: object) -> None:
            if self._connecting is d:
                self._connecting = None

        d.addCallbacks(done, failed)

    def _schedule(self, now: float) -> None:
        delay, events, switch_to = self.failover.closed(now)
        if switch_to is not None and self.on_switch is not None:
            self.on_switch(switch_to)
        self._events(events)
        if delay is None or not self.running:
            return
        self._retry = self.clock.callLater(delay, self._open)

    def stream_opened(self, link: _StreamLink) -> None:
        if not self.running:
            if link.transport is not None:
                link.transport.loseConnection()
            return
        self.link = link
        self.streams += 1
        self._apply(self.registration.opened(self.clock.seconds()))
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self._tick_interval, now=False)

    def stream_closed(self, link: _StreamLink) -> None:
        if link is not self.link:
            return
        self.link = None
        self._stop_loop()
        if self.running:
            self._schedule(self.clock.seconds())

    def _stop_loop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self) -> None:
        try:
            self._apply(self.registration.tick(self.clock.seconds()))
        except Exception:
            # The loop must survive a bad tick or the host silently goes offline.
            self._log.failure("Registration tick failed")

    def frame_received(self, frame: bytes) -> None:
        now = self.clock.seconds()
        if not frame:
            self._apply(self.registration.received(None, now))
            return
        msg = parse_rendezvous(frame)
        if msg is None:
            self._log.debug("Ignored an unparsable frame from {server}", server=self.describe)
            return
        out = self.registration.received(msg, now)
        self._apply(out)
        self._pushes.dispatch(msg, now)

    def _apply(self, out: StreamOutput) -> None:
        link = self.link
        if link is not None:
            for msg in out.send:
                link.send(msg.SerializeToString())
            if out.heartbeat:
                link.send(b"")
        self._events(out.events)
        if out.close and link is not None:
            link.close(out.close)

    def _events(self, events: list[Event]) -> None:
        for event in events:
            self.handler.registration_event(event)

    def log_close(self, reason: str) -> None:
        self._log.info(
            "Closing the rendezvous stream to {server}: {reason}",
            server=self.describe,
            reason=reason,
        )
