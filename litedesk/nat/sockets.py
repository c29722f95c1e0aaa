"""TCP sockets that share one local port, adopted into the reactor.

Hole punching needs several TCP sockets on the same local address: the
connection to the rendezvous server, the outgoing connect to the peer, and a
listener.  All of them set C{SO_REUSEADDR} and C{SO_REUSEPORT} before
C{bind}.  Twisted's endpoints cannot set C{SO_REUSEPORT}, so the sockets are
made here, connected without blocking, and handed to the reactor with
C{adoptStreamConnection} / C{adoptStreamPort} once they are ready.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferTimeout
from twisted.internet.interfaces import IListeningPort, IProtocol, IProtocolFactory
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from litedesk.wire.address import Address

_log = Logger(namespace="litedesk.nat.sockets")


def local_address_towards(host: str, port: int) -> str:
    """The local IP this machine would use to reach C{host} (no packet is sent:
    connecting a UDP socket only picks the route)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        return str(s.getsockname()[0])


class ConnectFailed(Exception):
    """A connect from a shared port failed (refused, unreachable or timed out)."""

    def __init__(self, remote: Address, reason: str) -> None:
        super().__init__(f"connect to {remote[0]}:{remote[1]} failed: {reason}")
        self.remote = remote
        self.reason = reason


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def reuse_socket(family: int, local: Address) -> socket.socket:
    """A non-blocking TCP socket with SO_REUSEADDR + SO_REUSEPORT, bound to C{local}."""
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setblocking(False)
        s.bind(local)
    except OSError:
        s.close()
        raise
    return s


class _OneProtocol(Factory):
    def __init__(self, proto: IProtocol) -> None:
        self.proto = proto

    def buildProtocol(self, addr: Any) -> Any:
        return self.proto


class _PendingConnect:
    """Waits (in the reactor) for a non-blocking connect to finish."""

    def __init__(self, reactor: Any, sock: socket.socket, remote: Address) -> None:
        self.reactor = reactor
        self.sock = sock
        self.remote = remote
        self.done: Deferred[socket.socket] = Deferred(lambda _d: self._cancel())
        self._watching = False

    def start(self, timeout: float) -> Deferred[socket.socket]:
        err = self.sock.connect_ex(self.remote)
        if err in (0, errno.EISCONN):
            self.done.callback(self.sock)
        elif err in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
            self._watching = True
            self.reactor.addWriter(self)
            self.done.addTimeout(timeout, self.reactor)
        else:
            self._fail(errno.errorcode.get(err, str(err)))
        return self.done

    # IWriteDescriptor
    def fileno(self) -> int:
        try:
            return self.sock.fileno()
        except OSError:
            return -1

    def logPrefix(self) -> str:
        return "PendingConnect"

    def doWrite(self) -> None:
        self._unwatch()
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(errno.errorcode.get(err, str(err)))
        elif not self.done.called:
            self.done.callback(self.sock)

    def connectionLost(self, reason: Any) -> None:
        self._unwatch()
        self._fail("lost")

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self.reactor.removeWriter(self)

    def _fail(self, reason: str) -> None:
        self.sock.close()
        if not self.done.called:
            self.done.errback(ConnectFailed(self.remote, reason))

    def _cancel(self) -> None:
        self._unwatch()
        self.sock.close()


async def connect_socket(
    reactor: Any, local: Address, remote: Address, timeout: float
) -> socket.socket:
    """A socket bound to C{local} (shared port) and connected to C{remote}, not adopted.

    Raises L{ConnectFailed} on refusal, unreachability or after C{timeout}.
    """
    family = family_of(remote[0])
    try:
        sock = reuse_socket(family, local)
    except OSError as e:
        raise ConnectFailed(remote, f"bind {local[0]}:{local[1]}: {e.strerror}") from None
    pending = _PendingConnect(reactor, sock, remote)
    try:
        return await pending.start(timeout)
    except (CancelledError, DeferTimeout, TimeoutError):
        raise ConnectFailed(remote, "timed out") from None


def adopt(reactor: Any, sock: socket.socket, protocol: IProtocol) -> IProtocol:
    """Hand a connected socket to the reactor, running C{protocol} on it."""
    try:
        reactor.adoptStreamConnection(sock.fileno(), sock.family, _OneProtocol(protocol))
    finally:
        sock.close()  # the reactor holds its own duplicate
    return protocol


async def connect_from(
    reactor: Any,
    local: Address,
    remote: Address,
    protocol: IProtocol,
    timeout: float,
) -> IProtocol:
    """Connect from C{local} (shared port) to C{remote}; run C{protocol} on the stream."""
    sock = await connect_socket(reactor, local, remote, timeout)
    return adopt(reactor, sock, protocol)


def listen_on(reactor: Any, local: Address, factory: IProtocolFactory) -> IListeningPort:
    """Listen on C{local} with SO_REUSEADDR + SO_REUSEPORT (shared with outgoing sockets)."""
    family = family_of(local[0])
    sock = reuse_socket(family, local)
    try:
        sock.listen(8)
        port: IListeningPort = reactor.adoptStreamPort(sock.fileno(), family, factory)
    finally:
        sock.close()
    return port


def local_port_of(transport: Any) -> Address:
    """The local address of a connected transport, as (host, port)."""
    h = transport.getHost()
    return (str(h.host), int(h.port))
