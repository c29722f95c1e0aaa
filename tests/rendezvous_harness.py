"""Real-socket harness for rendezvous tests: the service on loopback, and clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.python.failure import Failure

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.relay_tap import Options, makeService
from litedesk.wire.bytescodec import FrameDecoder, encode_frame

TIMEOUT = 5.0
reactor: Any = _reactor  # the global reactor provides far more than its declared type


def start_server(data_dir: Path, *extra: str, host: str = "127.0.0.1") -> Any:
    """Start litedesk-relay's services on ephemeral loopback ports.

    @return: the L{litedesk.server.assembly.LiteDeskServer}; tests reach its
        parts by name (C{server}, C{relay}, C{rendezvous_udp}, ...).  Typed
        C{Any} because they are C{None} only for options these tests never give.
    """
    esc = host.replace(":", "\\:")
    kind = "tcp6" if ":" in host else "tcp"
    opts = Options()
    opts.parseOptions(
        [
            "--data-dir",
            str(data_dir),
            "--udp-endpoint",
            f"udp:0:interface={esc}",
            "--tcp-endpoint",
            f"{kind}:0:interface={esc}",
            "--nat-endpoint",
            f"{kind}:0:interface={esc}",
            "--relay-endpoint",
            f"{kind}:0:interface={esc}",
            *extra,
        ]
    )
    svc = makeService(opts, reactor)
    svc.privilegedStartService()
    svc.startService()
    return svc


def ports(svc: Any) -> dict[str, int]:
    return {
        "udp": svc.rendezvous_udp.listening.getHost().port,
        "tcp": svc.rendezvous_tcp.listening.getHost().port,
        "nat": svc.nat_test.listening.getHost().port,
    }


def with_timeout(d: Deferred[Any], seconds: float = TIMEOUT) -> Deferred[Any]:
    return d.addTimeout(seconds, reactor)


def sleep(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class UDPClient(DatagramProtocol):
    """A host's UDP socket: send bytes, await datagrams."""

    def __init__(self) -> None:
        self.queue: DeferredQueue[tuple[bytes, tuple[str, int]]] = DeferredQueue()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.queue.put((datagram, addr))

    def recv(self, timeout: float = TIMEOUT) -> Deferred[tuple[bytes, tuple[str, int]]]:
        return with_timeout(self.queue.get(), timeout)

    def send(self, data: bytes, port: int, host: str | None = None) -> None:
        assert self.transport is not None
        if host is None:
            host = "::1" if ":" in self.transport.getHost().host else "127.0.0.1"
        self.transport.write(data, (host, port))

    @inlineCallbacks
    def nothing_within(self, seconds: float) -> Any:
        """True if no datagram arrives within C{seconds}."""
        yield sleep(seconds)
        return len(self.queue.pending) == 0

    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.getHost().port)


def udp_client(interface: str = "127.0.0.1") -> UDPClient:
    c = UDPClient()
    reactor.listenUDP(0, c, interface=interface)
    return c


class TCPClient(Protocol):
    """A framed TCP client; frames arrive in C{queue}, C{closed} fires on disconnect."""

    def __init__(self) -> None:
        self.queue: DeferredQueue[bytes] = DeferredQueue()
        self.decoder = FrameDecoder()
        self.closed: Deferred[None] = Deferred()
        self.raw = b""

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        for frame in self.decoder.feed(data):
            self.queue.put(frame)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.closed.callback(None)

    def send_msg(self, msg: rz.RendezvousMessage) -> None:
        self.send_raw(encode_frame(msg.SerializeToString()))

    def send_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def recv(self, timeout: float = TIMEOUT) -> Deferred[bytes]:
        return with_timeout(self.queue.get(), timeout)

    @inlineCallbacks
    def recv_msg(self, timeout: float = TIMEOUT) -> Any:
        frame = yield self.recv(timeout)
        msg = rz.RendezvousMessage()
        msg.ParseFromString(frame)
        return msg

    def local(self) -> tuple[str, int]:
        assert self.transport is not None
        h: Any = self.transport.getHost()
        return (h.host, h.port)

    def close(self) -> Deferred[None]:
        if not self.closed.called and self.transport is not None:
            self.transport.loseConnection()
        return self.closed


def tcp_client(port: int, bind: str = "127.0.0.1", host: str = "127.0.0.1") -> Deferred[TCPClient]:
    ep = TCP4ClientEndpoint(reactor, host, port, bindAddress=(bind, 0))
    d: Deferred[TCPClient] = connectProtocol(ep, TCPClient())
    return d
