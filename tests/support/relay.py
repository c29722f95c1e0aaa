"""Helpers shared by the relay tests: a running relay on 127.0.0.1:0 and test peers."""

from __future__ import annotations

import hashlib
import resource
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.relay.service import RelayService, make_relay_service
from litedesk.relay.settings import RelaySettings
from litedesk.wire.bytescodec import encode_frame

from .polling import until


def request_relay(uuid: str, licence_key: str = "") -> bytes:
    """The framed first message a RustDesk peer sends to hbbr."""
    msg = rz.RendezvousMessage(request_relay=rz.RequestRelay(uuid=uuid, licence_key=licence_key))
    return encode_frame(msg.SerializeToString())


def raise_nofile(n: int) -> None:
    """Raise RLIMIT_NOFILE to at least C{n} (root may raise the hard limit too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, max(n, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


class Peer(Protocol):
    """A test client: records (or hashes) what it receives and when it is closed."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.received = bytearray()
        self.count = 0
        self.sha = hashlib.sha256()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None
        self.closed = False
        self.first_at: float | None = None
        self.last_at: float | None = None

    def dataReceived(self, data: bytes) -> None:
        now = reactor.seconds()
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.count += len(data)
        self.sha.update(data)
        if self.keep:
            self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        self.reason = reason
        self.lost.callback(None)


@implementer(IPullProducer)
class Source:
    """Writes C{total} bytes of C{block} repeated, as a pull producer, hashing as it goes."""

    def __init__(self, transport: Any, block: bytes, total: int) -> None:
        self.transport = transport
        self.block = block
        self.total = total
        self.sent = 0
        self.sha = hashlib.sha256()
        self.done: defer.Deferred[None] = defer.Deferred()
        transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        if self.sent >= self.total:
            return
        chunk = self.block[: self.total - self.sent]
        self.sent += len(chunk)
        self.sha.update(chunk)
        self.transport.write(chunk)
        if self.sent >= self.total:
            self.transport.unregisterProducer()
            self.done.callback(None)

    def stopProducing(self) -> None:
        pass


async def connect_peer(port: int, first: bytes = b"", keep: bool = True) -> Peer:
    ep = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    p: Peer = await connectProtocol(ep, Peer(keep))
    if first:
        assert p.transport is not None
        p.transport.write(first)
    return p


class RelayFixture:
    """A relay service on 127.0.0.1:0 plus captured relay log events."""

    def __init__(self, settings: RelaySettings, data_dir: Path, licence: str = "") -> None:
        self.events: list[dict[str, Any]] = []
        self.service: RelayService = make_relay_service(
            reactor, "tcp:0:interface=127.0.0.1:backlog=4096", settings, licence, data_dir
        )
        self.port = 0
        self.peers: list[Peer] = []

    async def connect(self, first: bytes = b"", keep: bool = True) -> Peer:
        """A new test peer connected to the relay, having sent C{first}."""
        p = await connect_peer(self.port, first, keep)
        self.peers.append(p)
        return p

    def _observe(self, event: dict[str, Any]) -> None:
        if "relay_event" in event:
            self.events.append(event)

    async def start(self) -> None:
        globalLogPublisher.addObserver(self._observe)  # type: ignore[arg-type]
        self.service.startService()
        port = await self.service.when_listening()
        self.port = port.getHost().port  # type: ignore[attr-defined]

    async def stop(self) -> None:
        await defer.maybeDeferred(self.service.stopService)
        for p in self.peers:
            if not p.closed and p.transport is not None:
                p.transport.abortConnection()  # type: ignore[attr-defined]
        await until(lambda: self.service.relay.table.connections == 0)
        await task.deferLater(reactor, 0)
        globalLogPublisher.removeObserver(self._observe)  # type: ignore[arg-type]

    def named(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("relay_event") == kind]
