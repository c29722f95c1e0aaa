"""Registration over several rendezvous servers, one at a time (sans-IO).

Issue 17: a host given every node of a cluster re-registers on another node
when its own dies.  L{Failover} wraps the single-server state machine
(L{litedesk.host.registration.Registration}): when the current server stops
answering (the machine's C{UNREACHABLE}: 2 requests unanswered, 6 s with
RustDesk's 3 s timeout) and another server is known, it moves to the next
one, round robin, and registers there from scratch (C{RegisterPk}, then
C{RegisterPeer}, as at start).  With one server nothing changes: the host
keeps retrying it, as before.

A host registered on a stream (C{--websocket}) moves the same way when
L{StreamRegistration} gives up on its server (two streams in a row ended
without registering): L{StreamFailover}.

A C{ConfigUpdate} newer than the host's serial (by UDP after a heartbeat, or
in the NAT test's C{TestNatResponse.cu}) replaces the adopted servers
(L{litedesk.host.server_list.ServerRotation.adopt}); the configured ones
stay first.  Time is passed in (C{now}), so tests drive it with a Clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from litedesk.host.registration import (
    STREAM_RETRY,
    Event,
    Output,
    Registration,
    StreamRegistration,
)
from litedesk.host.server_list import ServerRotation, describe, servers_from_update
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.address import Address

__all__ = ["Failover", "FailoverOutput", "StreamFailover"]


@dataclass
class FailoverOutput(Output):
    """What to send and log, and where to.

    @ivar switch_to: the server to use from now on (before sending C{send});
        None: keep the current one.
    @ivar adopted: the adopted servers after a C{ConfigUpdate} changed the
        list (to save); None: unchanged.
    """

    switch_to: Address | None = None
    adopted: list[Address] | None = None


class Failover:
    """One host's registration with the first of several servers that answers."""

    def __init__(self, registration: Registration, rotation: ServerRotation) -> None:
        self.registration = registration
        self.rotation = rotation
        self.switches = 0

    @property
    def current(self) -> Address:
        return self.rotation.current

    def _wrap(self, out: Output) -> FailoverOutput:
        return FailoverOutput(send=out.send, events=out.events)

    def tick(self, now: float) -> FailoverOutput:
        """Call about once a second."""
        out = self._wrap(self.registration.tick(now))
        unreachable = [e for e in out.events if e.kind == "unreachable"]
        if not unreachable or len(self.rotation.servers) < 2:
            return out
        old = self.rotation.current
        new = self.rotation.advance()
        self.switches += 1
        self.registration.restart()
        # The retransmit was for the old server; the new one gets RegisterPk.
        switched = self._wrap(self.registration.tick(now))
        others = [e for e in out.events if e.kind != "unreachable"]
        why = f"{unreachable[0].detail.removeprefix('no answer to ')} unanswered"
        switched.events[:0] = [*others, _switched(old, new, why)]
        switched.switch_to = new
        return switched

    def received(self, msg: rz.RendezvousMessage, now: float) -> FailoverOutput:
        """A datagram from the current server."""
        out = self._wrap(self.registration.received(msg, now))
        if any(e.kind == "config_update" for e in out.events):
            self._adopt(msg.configure_update, out)
        return out

    def config_update(self, cu: rz.ConfigUpdate, now: float) -> FailoverOutput:
        """A C{ConfigUpdate} that came another way (the NAT test's answer)."""
        return self.received(rz.RendezvousMessage(configure_update=cu), now)

    def _adopt(self, cu: rz.ConfigUpdate, out: FailoverOutput) -> None:
        if self.rotation.adopt(servers_from_update(cu.rendezvous_servers)):
            out.adopted = list(self.rotation.adopted)
            out.events.append(
                Event(
                    "servers_changed",
                    "rendezvous servers now "
                    + ", ".join(describe(s) for s in self.rotation.servers),
                )
            )


def _switched(old: Address, new: Address, why: str) -> Event:
    return Event(
        "switched",
        f"rendezvous server {describe(old)} unreachable ({why}); registering with {describe(new)}",
    )


class StreamFailover:
    """A stream-registered host's move to the next server (sans-IO).

    @param rotation: the servers; None (or one server): never moves.
    """

    def __init__(self, registration: StreamRegistration, rotation: ServerRotation | None) -> None:
        self.registration = registration
        self.rotation = rotation
        self.switches = 0

    def closed(self, now: float) -> tuple[float | None, list[Event], Address | None]:
        """The stream ended: seconds until the next one (None: never), events,
        and the server to open it to when that is another one."""
        delay, events = self.registration.closed(now)
        unreachable = [e for e in events if e.kind == "unreachable"]
        rotation = self.rotation
        if not unreachable or rotation is None or len(rotation.servers) < 2:
            return delay, events, None
        old = rotation.current
        new = rotation.advance()
        self.switches += 1
        self.registration.restart()
        others = [e for e in events if e.kind != "unreachable"]
        return STREAM_RETRY[0], [*others, _switched(old, new, unreachable[0].detail)], new
