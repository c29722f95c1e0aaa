"""The host's UDP link to the rendezvous server: registration and pushes.

One UDP socket, as RustDesk hosts use: heartbeats and key registration go
out, the server's answers and its pushes (C{PunchHole}, C{FetchLocalAddr},
C{RequestRelay}) come in.  Pushes are handed to an L{IPushHandler}; the
registration rules live in L{litedesk.host.registration.Registration}.
"""

from __future__ import annotations

import socket
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from litedesk.host.registration import Event, Output, Registration
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.addrmangle import decode, normalize, normalize_host
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


class RendezvousClient(DatagramProtocol):
    """Keeps one host registered with one server and receives its pushes."""

    _log = Logger()
    noisy = False

    def __init__(
        self,
        registration: Registration,
        server: tuple[str, int],
        handler: IPushHandler,
        clock: IReactorTime,
        tick: float = 1.0,
    ) -> None:
        self.registration = registration
        self.server = server
        self.handler = handler
        self.clock = clock
        self._tick_interval = tick
        self._loop: LoopingCall | None = None
        self._server_addr: tuple[str, int] | None = None
        self._recent: dict[tuple[str, str], float] = {}

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
            out = self.registration.tick(self.clock.seconds())
            if self.registration.misses >= 4:
                self._server_addr = None
            self._apply(out)
        except Exception:
            # The loop must survive a bad tick or the host silently goes offline.
            self._log.failure("Registration tick failed")

    def _apply(self, out: Output) -> None:
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
            self._apply(self.registration.received(msg, now))
            return
        if kind not in ("punch_hole", "fetch_local_addr", "request_relay"):
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
