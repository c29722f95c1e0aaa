"""litedesk.twisted_internals: each internal against this Twisted, and each fallback forced.

The fallbacks are what runs if a Twisted upgrade renames an internal; each is
forced here and must keep what a user sees: a relay pair still delivers
every byte in order, a port still shows its number in logs, a busy port still
stops the service at start, a TLS close still ends.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any, cast

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import abstract, defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import ILoggingContext
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from litedesk import twisted_internals as ti
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.relay import leg as leg_module
from litedesk.relay import service as service_module
from litedesk.relay.limiter import BandwidthSettings
from litedesk.relay.settings import MODES, RelaySettings
from litedesk.relay.table import Deadlines
from litedesk.relay.transport import RelayServerTransport
from litedesk.screen.backpressure import transport_buffered
from litedesk.wire.bytescodec import encode_frame


class _Writable(abstract.FileDescriptor):
    """A connected descriptor that never really writes: its buffer stays as written."""

    connected = 1

    def startWriting(self) -> None:
        pass


def _fd() -> _Writable:
    return _Writable(reactor=cast(Any, ti._NoReactor()))


class WriteBufferTests(unittest.TestCase):
    def test_this_twisted_has_them(self) -> None:
        """On the Twisted we ship with, the relay uses the write-buffer internals."""
        self.assertTrue(ti.WRITE_BUFFER_INTERNALS)
        self.assertIs(ti.output_idle, ti._output_idle_internal)
        self.assertIs(ti.buffered_bytes, ti._buffered_internal)

    def test_missing_internals_detected(self) -> None:
        """A descriptor class without them selects the fallbacks."""

        class Renamed:
            def __init__(self, reactor: object = None) -> None:
                self.dataBuffer = b""

        self.assertFalse(ti.has_write_buffer_internals(Renamed))

    def test_internal_reads_what_is_queued(self) -> None:
        fd = _fd()
        self.assertTrue(ti._output_idle_internal(fd))
        self.assertEqual(ti._buffered_internal(fd), 0)
        fd.write(b"abc")
        fd.write(b"de")
        self.assertFalse(ti._output_idle_internal(fd))
        self.assertEqual(ti._buffered_internal(fd), 5)

    def test_fallbacks_are_safe(self) -> None:
        """Public fallbacks: never "idle" (writes go through the transport), 0 unknown."""
        fd = _fd()
        self.assertFalse(ti._output_idle_public(fd))
        self.assertEqual(ti._buffered_public(fd), 0)

    def test_settle_attributes_skips_missing(self) -> None:
        class T:
            present = 7

        t = T()
        ti.settle_attributes(t, ["present", "absent"])
        self.assertEqual(vars(t), {"present": 7})


def _request_relay(uuid: str) -> bytes:
    msg = rz.RendezvousMessage(request_relay=rz.RequestRelay(uuid=uuid))
    return encode_frame(msg.SerializeToString())


class _Peer(Protocol):
    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.count = 0

    def dataReceived(self, data: bytes) -> None:
        self.sha.update(data)
        self.count += len(data)


async def _until(pred: Any, limit: float = 60.0) -> None:
    for _ in range(int(limit / 0.01)):
        if pred():
            return
        await task.deferLater(reactor, 0.01)
    raise AssertionError(f"condition not met within {limit} s")


class RelayFallbackTests(unittest.TestCase):
    """A real relay on 127.0.0.1 with every relay-side internal replaced by its fallback."""

    async def test_pair_relays_intact_on_fallbacks(self) -> None:
        self.patch(leg_module, "output_idle", ti._output_idle_public)
        self.patch(leg_module, "buffered_bytes", ti._buffered_public)
        self.patch(leg_module, "settle_attributes", lambda obj, names: None)
        self.patch(service_module, "install_connection_class", lambda port, cls: False)
        data_dir = Path(self.mktemp())
        data_dir.mkdir()
        settings = RelaySettings(
            deadlines=Deadlines(first_frame=60, partner=60, idle=60, drain=60),
            bandwidth=BandwidthSettings(0, 0, 0),
        )
        svc = service_module.make_relay_service(
            reactor, "tcp:0:interface=127.0.0.1", settings, "", data_dir
        )
        svc.startService()
        self.addCleanup(svc.stopService)
        port = cast(Any, await svc.when_listening()).getHost().port
        ep = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        a = await connectProtocol(ep, _Peer())
        b = await connectProtocol(ep, _Peer())

        def abort(p: _Peer) -> None:
            if p.transport is not None:
                p.transport.abortConnection()  # type: ignore[attr-defined]

        for p in (a, b):
            self.addCleanup(abort, p)
        assert a.transport is not None and b.transport is not None
        a.transport.write(_request_relay("F") + b"early")
        await _until(lambda: "F" in svc.relay.table.waiting)
        b.transport.write(_request_relay("F"))
        await _until(lambda: svc.stats().active_pairs == 1)
        [pair] = svc.relay.table.pairs
        for conn in (pair.a, pair.b):
            # The port kept Twisted's class; the legs still read on the fast path.
            self.assertNotIsInstance(conn.handle.transport, RelayServerTransport)
            self.assertEqual(conn.handle._mode, MODES[settings.read_mode])
        total = 8 * 1024 * 1024
        blocks = [os.urandom(64 * 1024) for _ in range(2)]
        sent = [hashlib.sha256(b"early"), hashlib.sha256()]
        for i, (src, block) in enumerate(zip((a, b), blocks, strict=True)):
            for _ in range(total // len(block)):
                src.transport.write(block)
                sent[i].update(block)
        await _until(lambda: b.count >= total + 5 and a.count >= total)
        self.assertEqual(b.sha.hexdigest(), sent[0].hexdigest())
        self.assertEqual(a.sha.hexdigest(), sent[1].hexdigest())
        self.assertEqual(svc.relay.max_buffered(), 0)  # unknown on the fallback


@implementer(ILoggingContext)
class _Named(Protocol):
    def logPrefix(self) -> str:
        return "Named"


class LogNameTests(unittest.TestCase):
    def test_log_prefix_fallback_matches(self) -> None:
        """The public fallback names objects as Twisted's own internal does."""
        fd = _fd()
        for obj in (_Named(), Protocol()):
            self.assertEqual(ti.log_prefix(object(), obj), ti.log_prefix(fd, obj))
        self.assertEqual(ti.log_prefix(object(), _Named()), "Named")
        self.assertEqual(ti.log_prefix(object(), Protocol()), "Protocol")

    async def test_port_number_fallback_matches(self) -> None:
        port = cast(Any, reactor).listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        real = port.getHost().port

        class Public:
            def getHost(self) -> Any:
                return port.getHost()

        self.assertEqual(ti.port_number(port), real)
        self.assertEqual(ti.port_number(Public()), real)
        await defer.maybeDeferred(port.stopListening)
        self.assertEqual(ti.port_number(port), "?")


class ListenFailureTests(unittest.TestCase):
    """A second listener on a busy port must fail the service's start, not only log."""

    def setUp(self) -> None:
        self.busy = socket.socket()
        self.busy.bind(("127.0.0.1", 0))
        self.busy.listen(1)
        self.addCleanup(self.busy.close)

    def _service(self) -> StreamServerEndpointService:
        ep = TCP4ServerEndpoint(reactor, self.busy.getsockname()[1], interface="127.0.0.1")
        return StreamServerEndpointService(ep, Factory.forProtocol(Protocol))

    def test_internal(self) -> None:
        svc = self._service()
        ti.raise_listen_failures(svc)
        self.assertRaises(CannotListenError, svc.privilegedStartService)

    def test_fallback(self) -> None:
        svc = self._service()
        ti._raise_via_endpoint(svc)
        self.assertRaises(CannotListenError, svc.privilegedStartService)

    def test_without_either_it_only_logs(self) -> None:
        """The control: Twisted's default swallows the error (and logs it)."""
        svc = self._service()
        svc.privilegedStartService()
        self.assertEqual(len(self.flushLoggedErrors(CannotListenError)), 1)

    def test_fallback_passes_later_failures_on(self) -> None:
        """A listen that fails later still reaches the caller's errback."""
        later: defer.Deferred[Any] = defer.Deferred()

        class Slow:
            def listen(self, factory: object) -> defer.Deferred[Any]:
                return later

        d = ti._ListenNow(Slow()).listen(Factory())  # type: ignore[arg-type]
        seen: list[Failure] = []
        d.addErrback(seen.append)
        later.errback(CannotListenError("127.0.0.1", 1, OSError("busy")))
        self.assertEqual(len(seen), 1)


class TlsCloseTests(unittest.TestCase):
    def _tls(self) -> tuple[Any, StringTransport]:
        factory = TLSMemoryBIOFactory(
            optionsForClientTLS("example.invalid"), True, Factory.forProtocol(Protocol)
        )
        tls = factory.buildProtocol(None)
        tcp = StringTransport()
        tls.makeConnection(tcp)
        return tls, tcp

    def test_closes_tcp_under_tls(self) -> None:
        tls, tcp = self._tls()
        tls.loseConnection()
        self.assertTrue(ti.close_tcp_under_tls(tls))
        self.assertTrue(tcp.disconnecting)

    def test_fallback_leaves_it(self) -> None:
        """No inner transport to reach: nothing is closed and the caller is told."""

        class Opaque:
            def loseConnection(self) -> None:
                pass

        self.assertFalse(ti.close_tcp_under_tls(Opaque()))

    def test_before_connection(self) -> None:
        tls = TLSMemoryBIOFactory(
            optionsForClientTLS("example.invalid"), True, Factory.forProtocol(Protocol)
        ).buildProtocol(None)
        self.assertFalse(ti.close_tcp_under_tls(tls))


class QueuedBytesTests(unittest.TestCase):
    """What the video backpressure reads from each transport layer."""

    def test_socket_layer(self) -> None:
        fd = _fd()
        fd.write(b"x" * 1000)
        self.assertEqual(ti.queued_in_layer(fd), (1000, True))

    def test_tls_before_handshake(self) -> None:
        """Cleartext written before the handshake ends waits in the TLS layer."""
        factory = TLSMemoryBIOFactory(
            optionsForClientTLS("example.invalid"), True, Factory.forProtocol(Protocol)
        )
        tls = factory.buildProtocol(None)
        tcp = StringTransport()
        tls.makeConnection(tcp)
        tls.write(b"y" * 500)
        queued, bottom = ti.queued_in_layer(tls)
        self.assertFalse(bottom)
        self.assertEqual(queued, 500)
        self.assertIs(ti.inner_transport(tls), tcp)

    def test_fallback_unknown_layer(self) -> None:
        """A layer without the internals counts 0 and is not the bottom; a
        stack of them reads 0 (streaming goes on without drops)."""

        class Renamed:
            def __init__(self, below: object | None) -> None:
                self.transport = below
                self.pending = [b"z" * 100]

        self.assertEqual(ti.queued_in_layer(Renamed(None)), (0, False))
        self.assertEqual(transport_buffered(Renamed(Renamed(None))), 0)
        fd = _fd()
        fd.write(b"w" * 300)
        self.assertEqual(transport_buffered(Renamed(fd)), 300)
