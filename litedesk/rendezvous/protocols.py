"""Wire side of the rendezvous server: UDP 21116, TCP 21116 and TCP 21115.

UDP: one datagram is one bare C{RendezvousMessage}.  TCP: BytesCodec frames
carrying C{RendezvousMessage}s, at most C{max_frame} bytes each (64 KiB by
default; clients' messages are a few hundred bytes), and at most 30 s between
messages.  These classes only parse and write; decisions are made by
L{litedesk.rendezvous.server.RendezvousServer}.  On TCP 21116 a connection
silent for C{key_exchange_wait} is offered secure TCP
(L{litedesk.rendezvous.secure_tcp}); from then on frames pass through its
state, which seals and opens them once the client has answered.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from twisted.internet import tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITransport
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.floodguard import FloodGuard
from litedesk.rendezvous.secure_tcp import (
    KEY_EXCHANGE_WAIT,
    KeyExchangeCounters,
    Phase,
    SecureTcpError,
    SecureTcpServer,
)
from litedesk.rendezvous.server import RendezvousServer
from litedesk.wire.address import Address
from litedesk.wire.addrmangle import normalize, normalize_host
from litedesk.wire.bytescodec import FrameDecoder, FrameError, encode_frame

DEFAULT_MAX_FRAME = 64 * 1024
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux
READ_TIMEOUT = 30.0


def peer_address(addr: IAddress) -> Address:
    if isinstance(addr, (IPv4Address, IPv6Address)):
        return normalize((addr.host, addr.port))
    return ("0.0.0.0", 0)


def write_now(transport: ITransport | None, data: bytes) -> None:
    """C{transport.write(data)}, sent at once when nothing is waiting before it.

    Twisted's C{write} only buffers: the bytes leave on the reactor's next
    turn, after an C{epoll_ctl} to watch for writability, an C{epoll_wait}
    and one more to stop watching.  A punch answer is the last step of a
    round trip that a viewer waits on (bench/rendezvous.py part 2), so on a
    plain TCP connection with an empty buffer it goes out with one C{send}
    here; whatever the kernel does not take (or an error, which Twisted then
    finds and reports as usual) goes through C{write}, in order.
    """
    if transport is None:
        return
    if (
        isinstance(transport, tcp.Connection)
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):
            if sent >= len(data):
                return
            data = data[sent:]
    transport.write(data)


class RendezvousDatagramProtocol(DatagramProtocol):
    """UDP 21116: host registrations in, pushes to hosts out."""

    _log = Logger()
    noisy = False

    def __init__(self, server: RendezvousServer, guard: FloodGuard, rcvbuf: int = 0) -> None:
        self.server = server
        self.guard = guard
        self.rcvbuf = rcvbuf
        self._v6_socket = False
        #: The socket's own C{sendto} once listening (None: the transport's
        #: C{write}).  Twisted's C{write} checks the address three times with
        #: C{inet_pton} per datagram, a fifth of a heartbeat's cost, for
        #: addresses that came from the kernel or the registry, already IPs.
        self._sendto: Callable[[bytes, tuple[str, int]], int] | None = None

    def startProtocol(self) -> None:
        assert self.transport is not None
        sock = self.transport.getHandle()  # type: ignore[attr-defined]
        self._v6_socket = sock.family == socket.AF_INET6
        self._sendto = sock.sendto
        if self.rcvbuf:
            # hbbs' -M/RMEM: a bigger kernel queue rides out pauses (a GC, a
            # burst of registrations) instead of dropping heartbeats.
            try:
                # Root (CAP_NET_ADMIN) may exceed net.core.rmem_max.
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            if got < self.rcvbuf:
                self._log.warn(
                    "UDP receive buffer is {got} bytes, not {wanted}: raise net.core.rmem_max",
                    got=got,
                    wanted=self.rcvbuf,
                )
        self.server.udp = self

    def stopProtocol(self) -> None:
        self._sendto = None
        if self.server.udp is self:
            self.server.udp = None

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        # An IPv4 socket's sources are dotted quads as the kernel writes
        # them, already normal, and the tuple is passed on as it came (one
        # tuple less per heartbeat); an IPv6 one's may be v4-mapped.
        if self._v6_socket:
            addr = (normalize_host(addr[0]), addr[1])
        host = addr[0]
        guard = self.guard
        # A disabled guard (rate 0) needs no clock reading per datagram.
        if guard.rate > 0 and not guard.allow(host, self.server.clock.seconds()):
            return
        try:
            self.server.handle_datagram(datagram, addr)
        except Exception:
            # A bug triggered by one datagram must not stop the listener.
            self._log.failure("Error handling a datagram from {ip}", ip=host)

    def send_datagram(self, data: bytes, addr: Address) -> None:
        if self.transport is None:
            return
        if self._v6_socket and ":" not in addr[0]:
            addr = ("::ffff:" + addr[0], addr[1])
        sendto = self._sendto
        try:
            if sendto is not None:
                sendto(data, addr)
            else:
                self.transport.write(data, addr)
        except BlockingIOError:
            # The kernel's send queue is full: the datagram is dropped, as
            # Twisted's write drops it (UDP may lose it anyway).
            return
        except OSError as e:
            self._log.warn(
                "UDP send to {ip}:{port} failed: {error}", ip=addr[0], port=addr[1], error=e
            )


class _FramedRendezvousProtocol(Protocol):
    """Shared by both TCP ports: framing, size cap, read timeout, per-IP cap."""

    _log = Logger()
    factory: RendezvousStreamFactory
    #: Whether a silent client is offered secure TCP on this port.
    offers_key_exchange = False

    def __init__(self) -> None:
        self.addr: Address = ("0.0.0.0", 0)
        self._local: Address | None = None
        self._decoder: FrameDecoder | None = None
        self._closing = False
        self._timer: IDelayedCall | None = None
        self._secure: SecureTcpServer | None = None
        self._offer_timer: IDelayedCall | None = None

    @property
    def local(self) -> Address:
        """The local address the connection arrived on.

        Read from the socket on first use (only a relay's vouching asks):
        a C{getsockname} and an address object less for every connection.
        """
        if self._local is None:
            try:
                self._local = peer_address(self.transport.getHost())  # type: ignore[union-attr]
            except (AttributeError, OSError):  # no transport, or its socket is gone
                return ("0.0.0.0", 0)
        return self._local

    @local.setter
    def local(self, value: Address) -> None:
        self._local = value

    def _set_timeout(self, seconds: float | None) -> None:
        """(Re)start or cancel the per-message read deadline on the factory's clock."""
        timer = self._timer
        if seconds is None:
            if timer is not None and timer.active():
                timer.cancel()
            self._timer = None
        elif timer is not None and timer.active():
            # A later deadline only updates the call: no new object, no heap push.
            timer.reset(seconds)
        else:
            self._timer = self.factory.clock.callLater(seconds, self.timeoutConnection)

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.addr = peer_address(self.transport.getPeer())
        self._decoder = FrameDecoder(self.factory.max_frame)
        if not self.factory.connection_opened(self):
            self._log.warn(
                "Refused TCP connection from {ip}: more than {limit} open connections",
                ip=self.addr[0],
                limit=self.factory.max_per_ip,
            )
            self._close()
            return
        self._set_timeout(READ_TIMEOUT)
        wait = self.factory.key_exchange_wait
        self._secure = self.factory.secure_tcp(self)
        if self._secure is None or wait is None:
            return
        if wait <= 0:
            # Written before the first read: every client sees the offer
            # first, and no timer is kept per connection.
            self._offer_key_exchange()
        else:
            self._offer_timer = self.factory.clock.callLater(wait, self._offer_key_exchange)

    def _cancel_offer(self) -> None:
        if self._offer_timer is not None and self._offer_timer.active():
            self._offer_timer.cancel()
        self._offer_timer = None

    def _offer_key_exchange(self) -> None:
        self._offer_timer = None
        payload = self._secure.offer() if self._secure is not None else None
        if payload is not None and not self._closing and self.transport is not None:
            self.transport.write(encode_frame(payload))

    def _close(self) -> None:
        self._closing = True
        self._set_timeout(None)
        self._cancel_offer()
        if self.transport is not None:
            self.transport.loseConnection()

    def _open(self, frame: bytes) -> bytes | None:
        """The frame's message payload; None when there is none to handle or on a close."""
        if self._secure is None:
            return frame
        try:
            return self._secure.receive(frame)
        except SecureTcpError as e:
            self._log.warn(
                "Closing TCP connection from {ip}: secure TCP: {reason}",
                ip=self.addr[0],
                reason=e,
            )
            self._close()
            return None

    def dataReceived(self, data: bytes) -> None:
        if self._closing or self._decoder is None:
            return
        if self._secure is not None and data:
            # Any byte before the offer is a client that speaks first: plaintext.
            self._secure.peer_spoke()
            self._cancel_offer()
        try:
            frames = self._decoder.feed(data)
        except FrameError as e:
            self._log.warn("Closing TCP connection from {ip}: {reason}", ip=self.addr[0], reason=e)
            self._close()
            return
        for frame in frames:
            self._set_timeout(READ_TIMEOUT)
            payload = self._open(frame)
            if payload is None:
                if self._closing:
                    return
                continue  # the client's KeyExchange: sealed from the next frame on
            msg = self.factory.server.message_from_bytes(payload)
            if msg is None:
                self._log.warn(
                    "Closing TCP connection from {ip}: undecodable message ({size} bytes)",
                    ip=self.addr[0],
                    size=len(frame),
                )
                self._close()
                return
            try:
                keep = self.handle(msg)
            except Exception:
                self._log.failure("Error handling a message from {ip}", ip=self.addr[0])
                keep = False
            if not keep:
                self._close()
                return

    def handle(self, msg: rz.RendezvousMessage) -> bool:
        raise NotImplementedError

    def send_message(self, msg: rz.RendezvousMessage) -> None:
        if self.transport is not None:
            payload = msg.SerializeToString()
            if self._secure is not None:
                payload = self._secure.send(payload)
            write_now(self.transport, encode_frame(payload))

    def timeoutConnection(self) -> None:
        unanswered = self._secure is not None and self._secure.phase is Phase.OFFERED
        self._log.info(
            "Closing idle TCP connection from {ip} (30 s without a message{what})",
            ip=self.addr[0],
            what="; KeyExchange unanswered" if unanswered else "",
        )
        self._closing = True
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._set_timeout(None)
        self._cancel_offer()
        self.factory.connection_closed(self)


class RendezvousStreamProtocol(_FramedRendezvousProtocol):
    """TCP 21116: viewers' punch/relay requests and hosts' answers."""

    offers_key_exchange = True

    def handle(self, msg: rz.RendezvousMessage) -> bool:
        return self.factory.server.handle_stream_message(self, msg)


class NatTestProtocol(_FramedRendezvousProtocol):
    """TCP 21115: one C{TestNatRequest} or C{OnlineRequest}, one answer, close."""

    def handle(self, msg: rz.RendezvousMessage) -> bool:
        self.factory.server.handle_nat_port_message(self, msg)
        return False


class RendezvousStreamFactory(Factory):
    """Builds either TCP protocol; counts connections per source IP.

    C{key_exchange_wait}: seconds of silence after which a connection to a
    protocol that C{offers_key_exchange} gets the server's C{KeyExchange}
    (C{--key-exchange-wait}); 0 offers on accepting, None never offers.
    Only a server key that signs can offer.
    """

    noisy = False

    def __init__(
        self,
        server: RendezvousServer,
        protocol_class: type[_FramedRendezvousProtocol],
        *,
        clock: IReactorTime,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_per_ip: int = 256,
        key_exchange_wait: float | None = KEY_EXCHANGE_WAIT,
    ) -> None:
        self.server = server
        self.protocol = protocol_class  # type: ignore[assignment]
        self.clock = clock
        self.max_frame = max_frame
        self.max_per_ip = max_per_ip
        self._per_ip: dict[str, int] = {}
        self.open_connections = 0
        self.key_exchange_wait = key_exchange_wait
        self.key_exchanges = KeyExchangeCounters()

    def secure_tcp(self, proto: _FramedRendezvousProtocol) -> SecureTcpServer | None:
        """A connection's secure-TCP state, or None where secure TCP is not offered."""
        signing_key = self.server.key.signing_key
        if self.key_exchange_wait is None or signing_key is None:
            return None
        if not proto.offers_key_exchange:
            return None
        return SecureTcpServer(signing_key, self.key_exchanges)

    def connection_opened(self, proto: _FramedRendezvousProtocol) -> bool:
        self.open_connections += 1
        n = self._per_ip.get(proto.addr[0], 0) + 1
        self._per_ip[proto.addr[0]] = n
        return self.max_per_ip <= 0 or n <= self.max_per_ip

    def connection_closed(self, proto: _FramedRendezvousProtocol) -> None:
        self.open_connections -= 1
        n = self._per_ip.get(proto.addr[0], 0) - 1
        if n > 0:
            self._per_ip[proto.addr[0]] = n
        else:
            self._per_ip.pop(proto.addr[0], None)
        self.server.connection_closed(proto)
