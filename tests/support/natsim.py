"""In-memory NATs and a datagram wire on a C{Clock}, for the UDP punch state machine.

L{SimNat} behaves like the lab's Linux routers (tests/support/natlab.py),
reduced to what punching depends on:

  - C{cone} (plain C{MASQUERADE}): one public port per inside socket,
    the inside port kept when free (endpoint-independent mapping);
  - C{symmetric} (C{MASQUERADE --random-fully}): a new random public port in
    1024..65535 for every destination (endpoint-dependent mapping);
  - both filter by address and port: a datagram from outside passes only if
    the inside socket sent to exactly that address and port before (a
    port-restricted cone), and an unsolicited one leaves no state (the
    routers' WAN-side input drop).

L{SimSide} runs one L{UdpPunch} behind a NAT (or none) the way the Twisted
driver does, and L{SimWire} carries datagrams between sides with a fixed
one-way delay, recording every send for rate checks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock

from litedesk.nat.udp_probe import Address, Send, UdpPunch

__all__ = ["SimNat", "SimSide", "SimWire", "run_until"]


@dataclass
class SimNat:
    """A NAT with one public address; C{mode} is C{cone} or C{symmetric}."""

    public_ip: str
    mode: str
    rng: random.Random = field(default_factory=random.Random)
    _mapped: dict[object, int] = field(default_factory=dict)
    _inside: dict[int, Address] = field(default_factory=dict)
    _allowed: dict[int, set[Address]] = field(default_factory=dict)

    def outbound(self, source: Address, destination: Address) -> Address:
        """The public source of a datagram from C{source} to C{destination}."""
        key: object = source if self.mode == "cone" else (source, destination)
        port = self._mapped.get(key)
        if port is None:
            port = source[1]
            if self.mode != "cone" or port in self._inside:
                port = self.rng.randint(1024, 65535)
                while port in self._inside:
                    port = self.rng.randint(1024, 65535)
            self._mapped[key] = port
            self._inside[port] = source
            self._allowed[port] = set()
        self._allowed[port].add(destination)
        return (self.public_ip, port)

    def inbound(self, source: Address, port: int) -> Address | None:
        """The inside socket for a datagram from C{source} to public C{port}, or None."""
        if source in self._allowed.get(port, ()):
            return self._inside[port]
        return None

    def public_port(self, source: Address, destination: Address) -> int | None:
        """The public port C{source} has towards C{destination}, if it has one."""
        key: object = source if self.mode == "cone" else (source, destination)
        return self._mapped.get(key)


class SimWire:
    """Datagrams between sides, C{delay} seconds one way; C{sends} records (time, Send)."""

    def __init__(self, clock: Clock, delay: float = 0.01) -> None:
        self.clock = clock
        self.delay = delay
        self.sides: dict[str, SimSide] = {}
        self.sends: list[tuple[float, Send]] = []
        self.dropped = 0

    def send(self, side: SimSide, send: Send) -> None:
        self.sends.append((self.clock.seconds(), send))
        source = side.inside(send.socket)
        if side.nat is not None:
            source = side.nat.outbound(source, send.address)
        self.clock.callLater(self.delay, self._arrive, source, send.address, send.payload)

    def inject(self, source: Address, destination: Address, payload: bytes) -> None:
        """A datagram from anywhere (e.g. an attacker's), arriving after the delay."""
        self.clock.callLater(self.delay, self._arrive, source, destination, payload)

    def _arrive(self, source: Address, destination: Address, payload: bytes) -> None:
        side = self.sides.get(destination[0])
        if side is None:
            self.dropped += 1
            return
        inside = side.nat.inbound(source, destination[1]) if side.nat else destination
        if inside is None or inside[0] != side.lan_ip:
            self.dropped += 1
            return
        side.deliver(inside[1] - side.first_port, payload, source)


class SimSide:
    """One L{UdpPunch} behind C{nat}, its sockets at C{lan_ip}:C{first_port}+i."""

    def __init__(
        self, wire: SimWire, lan_ip: str, nat: SimNat | None, first_port: int = 40000
    ) -> None:
        self.wire = wire
        self.lan_ip = lan_ip
        self.nat = nat
        self.first_port = first_port
        self.punch: UdpPunch | None = None
        self.finished_at: float | None = None
        self._timer: IDelayedCall | None = None
        wire.sides[nat.public_ip if nat else lan_ip] = self

    @property
    def public_ip(self) -> str:
        return self.nat.public_ip if self.nat else self.lan_ip

    def inside(self, index: int) -> Address:
        return (self.lan_ip, self.first_port + index)

    def start(self, punch: UdpPunch) -> None:
        self.punch = punch
        self._send(punch.start(self.wire.clock.seconds()))

    def deliver(self, index: int, payload: bytes, source: Address) -> None:
        if self.punch is None:
            return
        now = self.wire.clock.seconds()
        self._send(self.punch.received(index, payload, source, now))

    def _tick(self) -> None:
        self._timer = None
        assert self.punch is not None
        self._send(self.punch.tick(self.wire.clock.seconds()))

    def _send(self, sends: list[Send]) -> None:
        for send in sends:
            self.wire.send(self, send)
        assert self.punch is not None
        if self.punch.finished and self.finished_at is None:
            self.finished_at = self.wire.clock.seconds()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        deadline = self.punch.next_deadline()
        if deadline is not None:
            delay = max(0.0, deadline - self.wire.clock.seconds())
            self._timer = self.wire.clock.callLater(delay, self._tick)


def run_until(clock: Clock, done: Callable[[], bool], limit: float) -> None:
    """Run C{clock}'s calls in order until C{done()} is true or C{limit} seconds passed."""
    end = clock.seconds() + limit
    calls = clock.getDelayedCalls()
    while not done() and calls:
        due = min(c.getTime() for c in calls)
        if due > end:
            break
        clock.advance(max(0.0, due - clock.seconds()))
    if clock.seconds() < end and not done():
        clock.advance(end - clock.seconds())
