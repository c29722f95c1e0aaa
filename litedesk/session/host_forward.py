# -*- test-case-name: tests.test_host_forward -*-
"""The host's port-forward session (docs/protocol.rst §13).

L{HostForwardSession} is mixed into L{litedesk.session.host_session.HostSession}.
A viewer's C{LoginRequest} with C{port_forward{host, port}} is refused with
"No permission of IP tunneling" unless the mapped target is on the host's
C{--allow-forward} list (L{litedesk.forward.rules}); after the password the
host connects to the target within L{FORWARD_CONNECT_TIMEOUT} seconds, as
RustDesk does (rustdesk src/server/connection.rs, the PortForward branch of
C{on_message}):

- it cannot: C{LoginResponse.error} "Failed to access remote HOST:PORT.
  Please make sure it is reachable/open.", then the session closes;
- it can: C{LoginResponse{peer_info}} (no displays, no TestDelay pings), and
  the session goes raw (inside TLS for a LiteDesk viewer; unframed and
  unsealed in RustDesk's channel, as RustDesk's C{set_raw}) and is spliced
  to the target's connection (L{litedesk.forward.splice}) until either
  ends or nothing moves for L{FORWARD_IDLE_TIMEOUT} seconds.

Each forward is logged with its target, the bytes each way and its duration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTCP
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.forward.rules import ForwardTarget, forward_allowed, map_target
from litedesk.forward.splice import Splice, TcpLeg
from litedesk.proto import message_pb2 as pb
from litedesk.session.login_errors import ERROR_FORWARD_FAILED

__all__ = ["FORWARD_CONNECT_TIMEOUT", "FORWARD_IDLE_TIMEOUT", "HostForwardSession"]

# RustDesk's host gives the target 3 s, and a raw forward an hour of silence.
FORWARD_CONNECT_TIMEOUT = 3.0
FORWARD_IDLE_TIMEOUT = 3600.0

_log = Logger(namespace="litedesk.session.host_forward")


class HostForwardSession:
    """The port-forward half of a host session (a mixin of HostSession).

    @ivar forward_splice: the running forward, once the target answered.
    """

    ctx: Any
    viewer_id: str
    peer: str
    closing: bool
    forward_splice: Splice | None = None
    _forward_connecting: Deferred[Any] | None = None
    _forward_target: ForwardTarget | None = None

    # Provided by HostSession and MessageProtocol (declared only: a method
    # here would shadow MessageProtocol's, which comes later in the MRO).
    send_message: Callable[[pb.Message], None]
    _peer_info: Callable[[bool], pb.PeerInfo]
    _refuse: Callable[[str, str], None]
    start_raw: Callable[[Callable[[bytes], None]], None]
    set_idle_timeout: Callable[[float | None], None]

    def _forward_allowed(self, pf: pb.PortForward) -> bool:
        return forward_allowed(self.ctx.allow_forward, map_target(pf.host, pf.port))

    def _forward_reactor(self) -> Any:
        # The context's clock is the reactor in the agent; a test clock that
        # cannot connect leaves the connecting to the global reactor.
        clock = self.ctx.clock
        if IReactorTCP.providedBy(clock):
            return clock
        from twisted.internet import reactor

        return reactor

    def _start_port_forward(self, pf: pb.PortForward) -> None:
        """Logged in: connect to the target, then answer and go raw (or refuse)."""
        target = self._forward_target = map_target(pf.host, pf.port)
        reactor = self._forward_reactor()
        endpoint = HostnameEndpoint(
            reactor, target.host, target.port, timeout=FORWARD_CONNECT_TIMEOUT
        )
        leg = TcpLeg()
        d = connectProtocol(endpoint, leg)
        # The endpoint's timeout covers each connection attempt; this one
        # covers the name lookup too.
        d.addTimeout(FORWARD_CONNECT_TIMEOUT, self.ctx.clock)
        self._forward_connecting = d
        d.addCallbacks(self._forward_connected, self._forward_failed)

    def _forward_connected(self, leg: TcpLeg) -> None:
        self._forward_connecting = None
        target = self._forward_target
        assert target is not None
        if self.closing:
            # The viewer left while the target was being reached.
            leg.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.send_message(
            pb.Message(login_response=pb.LoginResponse(peer_info=self._peer_info(False)))
        )
        splice = Splice(self, leg, self.ctx.clock, self._forward_ended)  # type: ignore[arg-type]
        self.forward_splice = splice
        self.set_idle_timeout(FORWARD_IDLE_TIMEOUT)
        self.start_raw(splice.from_session)
        _log.info(
            "Port forward for {viewer} ({peer}) to {target} started",
            viewer=self.viewer_id or "viewer",
            peer=self.peer,
            target=target.label,
            forward_target=target.label,
        )
        splice.start()

    def _forward_failed(self, failure: Failure) -> None:
        self._forward_connecting = None
        target = self._forward_target
        assert target is not None
        if self.closing:
            return
        _log.info(
            "Port forward for {viewer} ({peer}): cannot reach {target}: {error}",
            viewer=self.viewer_id or "viewer",
            peer=self.peer,
            target=target.label,
            error=failure.getErrorMessage() or type(failure.value).__name__,
        )
        self._refuse(ERROR_FORWARD_FAILED.format(addr=target.label), "forward target unreachable")

    def _forward_ended(self, splice: Splice, why: str) -> None:
        target = self._forward_target
        _log.info(
            "Port forward for {viewer} ({peer}) to {target} ended after {duration:.1f} s "
            "({why}): {bytes_out} bytes to the target, {bytes_in} bytes from it",
            viewer=self.viewer_id or "viewer",
            peer=self.peer,
            target=target.label if target is not None else "?",
            duration=splice.duration,
            why=why,
            bytes_out=splice.bytes_to_tcp,
            bytes_in=splice.bytes_to_session,
            forward_summary=True,
        )

    def _end_port_forward(self) -> None:
        """The session's connection is gone (any kind of session)."""
        connecting, self._forward_connecting = self._forward_connecting, None
        if connecting is not None:
            connecting.cancel()
        if self.forward_splice is not None:
            self.forward_splice.session_lost()
