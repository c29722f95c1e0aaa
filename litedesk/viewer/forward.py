# -*- test-case-name: tests.test_port_forward_e2e -*-
"""C{litedesk-viewer --forward LPORT:HOST:PORT}: a local port tunnelled to the host.

The viewer listens on 127.0.0.1:LPORT and opens one port-forward session
(docs/protocol.rst §13; rustdesk src/port_forward.rs) per accepted
connection; once the host has reached HOST:PORT and answered, the session
is raw and spliced to the local connection (L{litedesk.forward.splice}).
Bytes the local client sends during the login are held (at most
L{litedesk.forward.splice.HOLD_LIMIT}, then its reading pauses) and go first.

Failing fast: RustDesk only learns that a forward is refused or its target
unreachable when the first local client connects.  Here the first session
is opened at start-up instead, so "forward not allowed" or "forward target
unreachable" ends the viewer at once (C{litedesk-viewer: <reason>}, exit
1).  A probe that were closed again would cost the target a connection it
never serves; this one is kept and becomes the first local client's
session, so the target sees no more connections than clients.  What the
target sends before that client comes (an SSH or SMTP banner) is held for
it.  If the target or the host ends that session before anyone connects it
is dropped, and the next client gets a fresh session.

The forward runs until C{--duration} seconds have passed or the viewer is
interrupted (C{--duration 0}, the default).  A later session that fails
closes only its own local connection (logged).  C{--stats-json} prints
C{{"forward": {"listen", "target", "connections", "bytes_in", "bytes_out"}}}.
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.forward.rules import ForwardSpec, parse_forward_spec
from litedesk.forward.splice import HOLD_LIMIT, Splice, TcpLeg
from litedesk.proto import message_pb2 as pb
from litedesk.session.viewer_session import ViewerSession
from litedesk.viewer.connection import (
    UsageFailure,
    connect,
    read_password,
    session_protocol,
    with_timeout,
)

__all__ = ["FORWARD_IDLE_TIMEOUT", "LocalForward", "run_forward"]

# Like the host's: a tunnelled connection may stay silent for an hour.
FORWARD_IDLE_TIMEOUT = 3600.0

_log = Logger(namespace="litedesk.viewer.forward")


class _RawHold:
    """A raw session's receiver: holds the bytes until a splice takes them."""

    def __init__(self, session: ViewerSession) -> None:
        self.session = session
        self.splice: Splice | None = None
        self.held = bytearray()
        self._paused = False

    def receive(self, data: bytes) -> None:
        if self.splice is not None:
            self.splice.from_session(data)
            return
        self.held += data
        if len(self.held) > HOLD_LIMIT and not self._paused:
            self._paused = True
            _pause(self.session.transport, "pauseProducing")

    def attach(self, splice: Splice) -> bytes:
        self.splice = splice
        held, self.held = bytes(self.held), bytearray()
        if self._paused:
            self._paused = False
            _pause(self.session.transport, "resumeProducing")
        return held


def _pause(transport: Any, name: str) -> None:
    method = getattr(transport, name, None)
    if method is not None:
        method()


class LocalForward:
    """The listening side of C{--forward}: sessions, splices and their counts."""

    def __init__(self, reactor: Any, args: argparse.Namespace, spec: ForwardSpec, password: str):
        self.reactor = reactor
        self.args = args
        self.spec = spec
        self.password = password
        self.connections = 0
        self.bytes_in = 0  # from the target, to local clients
        self.bytes_out = 0  # from local clients, to the target
        self.path: str | None = None
        self.protocol: str | None = None
        self.splices: set[Splice] = set()
        self.sessions: set[ViewerSession] = set()
        self._spare: tuple[ViewerSession, _RawHold] | None = None
        # Why the latest local client's session failed ("" while none has).
        self.last_error = ""

    async def open_session(self) -> tuple[ViewerSession, _RawHold]:
        """One port-forward session, logged in and raw (its bytes held)."""
        session = ViewerSession(
            self.reactor,
            self.args.target,
            self.password,
            port_forward=pb.PortForward(host=self.spec.host, port=self.spec.port),
        )
        hold = _RawHold(session)

        def go_raw(info: pb.PeerInfo) -> pb.PeerInfo:
            # Synchronously on the LoginResponse: the host's raw bytes may
            # follow it in the same read.
            session.set_idle_timeout(FORWARD_IDLE_TIMEOUT)
            session.start_raw(hold.receive)
            return info

        session.logged_in.addCallback(go_raw)
        self.sessions.add(session)
        session.ended.addBoth(lambda _: self.sessions.discard(session))
        path = await connect(self.reactor, self.args, session)
        await with_timeout(self.reactor, session.logged_in, self.args.timeout, "the login")
        if self.path is None:
            self.path, self.protocol = path, session_protocol(session)
        return session, hold

    async def probe(self) -> None:
        """Open the first session now; it waits for the first local client."""
        session, hold = await self.open_session()
        self._spare = (session, hold)
        session.ended.addBoth(lambda _: self._drop_spare(session))

    def _drop_spare(self, session: ViewerSession) -> None:
        if self._spare is not None and self._spare[0] is session:
            _log.info("The forward's waiting session ended before a client came; dropped")
            self._spare = None

    def accepted(self, leg: TcpLeg) -> None:
        self.connections += 1
        spare, self._spare = self._spare, None
        if spare is not None and not spare[0].closing:
            self._splice(leg, *spare)
            return
        d = Deferred.fromCoroutine(self.open_session())
        d.addCallbacks(lambda sh: self._splice(leg, *sh), lambda f: self._failed(leg, f))

    def _splice(self, leg: TcpLeg, session: ViewerSession, hold: _RawHold) -> None:
        splice = Splice(session, leg, self.reactor, self._ended)
        self.splices.add(splice)
        session.ended.addBoth(lambda _: splice.session_lost())
        splice.start(first_to_tcp=hold.attach(splice))

    async def listen(self) -> IListeningPort:
        """Listen on 127.0.0.1:LPORT; each connection accepted gets a session."""
        endpoint = serverFromString(
            self.reactor, f"tcp:{self.spec.listen_port}:interface=127.0.0.1"
        )
        port: IListeningPort = await endpoint.listen(_LegFactory(self))
        return port

    def _failed(self, leg: TcpLeg, failure: Failure) -> None:
        self.last_error = str(getattr(failure.value, "reason", None) or failure.getErrorMessage())
        _log.warn(
            "Forward session for a local client failed: {error}",
            error=failure.getErrorMessage(),
        )
        if leg.transport is not None:
            leg.transport.loseConnection()

    def _ended(self, splice: Splice, why: str) -> None:
        self.splices.discard(splice)
        self._count(splice)
        _log.info(
            "Forwarded connection ended after {duration:.1f} s ({why}): "
            "{bytes_in} bytes in, {bytes_out} bytes out",
            duration=splice.duration,
            why=why,
            bytes_in=splice.bytes_to_tcp,
            bytes_out=splice.bytes_to_session,
        )

    def _count(self, splice: Splice) -> None:
        self.bytes_in += splice.bytes_to_tcp
        self.bytes_out += splice.bytes_to_session

    def stop(self) -> Deferred[Any]:
        """Close every session; fires when they are gone (or after 3 s)."""
        waits = [s.ended for s in self.sessions if not s.ended.called]
        for splice in list(self.splices):
            splice.close()
        for session in list(self.sessions):
            session.close("forward stopped")
        d: Deferred[Any] = DeferredList(waits, consumeErrors=True)
        return d.addTimeout(3.0, self.reactor).addErrback(lambda _: None)

    def stats(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "protocol": self.protocol,
            "forward": {
                "listen": self.spec.listen_port,
                "target": self.spec.target,
                "connections": self.connections,
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
            },
        }


class _LegFactory(Factory):
    def __init__(self, forward: LocalForward) -> None:
        self.forward = forward

    def buildProtocol(self, addr: Any) -> TcpLeg:
        leg = _AcceptedLeg(self.forward)
        leg.factory = self
        return leg


class _AcceptedLeg(TcpLeg):
    def __init__(self, forward: LocalForward) -> None:
        super().__init__()
        self._forward = forward

    def connectionMade(self) -> None:
        self._forward.accepted(self)


async def run_forward(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Run C{--forward} until C{--duration} passes or the reactor stops; the stats."""
    try:
        spec = parse_forward_spec(args.forward)
    except ValueError as e:
        raise UsageFailure(f"--forward: {e}") from None
    forward = LocalForward(reactor, args, spec, read_password(args))
    await forward.probe()
    try:
        port = await forward.listen()
    except Exception as e:
        forward.stop()
        raise UsageFailure(
            f"--forward: cannot listen on 127.0.0.1:{spec.listen_port} ({e})"
        ) from None
    _log.info(
        "Forwarding 127.0.0.1:{lport} to {target} through {host}",
        lport=spec.listen_port,
        target=spec.target,
        host=args.target,
    )
    stopped: Deferred[str] = Deferred()
    finished: Deferred[str] = Deferred()
    # Ctrl-C stops the reactor: the shutdown waits for the sessions to close
    # and the stats to be taken.
    trigger = reactor.addSystemEventTrigger("before", "shutdown", _stop_and_wait, stopped, finished)
    timer = (
        reactor.callLater(args.duration, _fire, stopped, "duration") if args.duration > 0 else None
    )
    why = await stopped
    if timer is not None and timer.active():
        timer.cancel()
    await maybeDeferred(port.stopListening)
    await forward.stop()
    stats = forward.stats()
    if why != "shutdown":
        reactor.removeSystemEventTrigger(trigger)
    _fire(finished, "done")
    return stats


def _fire(d: Deferred[str], why: str) -> None:
    if not d.called:
        d.callback(why)


def _stop_and_wait(stopped: Deferred[str], finished: Deferred[str]) -> Deferred[str]:
    _fire(stopped, "shutdown")
    return finished
