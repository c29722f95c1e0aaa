"""Talking to the gateway's PCP / NAT-PMP server: where it is, and a socket.

The host's C{--natpmp} mapper (L{litedesk.nat.natpmp_mapper}) asks the
default route's gateway (L{default_gateway}, from C{/proc/net/route}) unless
told another.  L{GatewaySocket} is the I/O: one UDP socket, requests sent
to the gateway's port 5351 and repeated after 250 ms, 500 ms, ... (RFC 6886 §3.1; PCP's own
3 s first wait, RFC 6887 §8.1.1, would make the NAT-PMP fallback slow), a
bounded number of times.  Datagrams from any other address are ignored,
and so is anything that is not the answer to a request in flight (the
codec, L{litedesk.nat.natpmp}, decides).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from litedesk.nat.sockets import local_address_towards

__all__ = [
    "FIRST_WAIT",
    "TRIES",
    "GatewayError",
    "GatewayRequest",
    "GatewaySocket",
    "default_gateway",
    "local_address_towards",
]

#: Seconds before the first repetition of a request; doubled each time.
FIRST_WAIT = 0.25
#: Sends of one request before the gateway counts as not answering
#: (0.25 + 0.5 + 1 + 2 s of waiting).
TRIES = 4
_RTF_UP_GATEWAY = 0x3


class GatewayError(Exception):
    """No gateway, no answer from it, or it refused the mapping."""


def default_gateway(route_file: str = "/proc/net/route") -> str | None:
    """The IPv4 gateway of the default route with the lowest metric, or None."""
    best: tuple[int, str] | None = None
    try:
        with open(route_file) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        try:
            dest, gateway, flags = int(fields[1], 16), int(fields[2], 16), int(fields[3], 16)
            metric, mask = int(fields[6]), int(fields[7], 16)
        except (IndexError, ValueError):
            continue
        if dest or mask or flags & _RTF_UP_GATEWAY != _RTF_UP_GATEWAY:
            continue
        # The kernel writes the address in host byte order.
        ip = str(ipaddress.IPv4Address(struct.pack("=I", gateway)))
        if best is None or metric < best[0]:
            best = (metric, ip)
    return best[1] if best else None


class GatewayRequest(Protocol):
    """A request of L{litedesk.nat.natpmp}: its bytes, and its answer's decoder."""

    def encode(self) -> bytes: ...

    def match(self, data: bytes) -> object | None: ...


@dataclass
class _Exchange:
    request: GatewayRequest
    sends_left: int
    wait: float
    done: Deferred[Any] | None = None
    timer: IDelayedCall | None = None


class GatewaySocket(DatagramProtocol):
    """Requests to the gateway and their answers, repeated until answered.

    @ivar ignored: datagrams dropped because they came from another address
        or answered nothing in flight.
    """

    _log = Logger()

    def __init__(
        self, clock: IReactorTime, gateway: tuple[str, int], first_wait: float = FIRST_WAIT
    ) -> None:
        self.clock = clock
        self.gateway = gateway
        self.first_wait = first_wait
        self.ignored = 0
        self._exchanges: list[_Exchange] = []

    def request(self, request: GatewayRequest, tries: int = TRIES) -> Deferred[Any]:
        """Send C{request} until its answer comes (the Deferred's result) or
        C{tries} sends went unanswered (L{GatewayError}); cancellable."""
        exchange = _Exchange(request, tries, self.first_wait)
        done: Deferred[Any] = Deferred(lambda _: self._end(exchange))
        exchange.done = done
        self._exchanges.append(exchange)
        self._send(exchange)
        return done

    def _send(self, exchange: _Exchange) -> None:
        exchange.timer = None
        if exchange.sends_left <= 0:
            self._fail(exchange, GatewayError(f"no answer from {self.gateway[0]}"))
            return
        exchange.sends_left -= 1
        if self.transport is not None:
            try:
                self.transport.write(exchange.request.encode(), self.gateway)
            except OSError as e:  # no route yet: the next try may have one
                self._log.debug("NAT-PMP: cannot send: {error}", error=e)
        exchange.timer = self.clock.callLater(exchange.wait, self._send, exchange)
        exchange.wait *= 2

    def _end(self, exchange: _Exchange) -> None:
        if exchange.timer is not None and exchange.timer.active():
            exchange.timer.cancel()
        exchange.timer = None
        if exchange in self._exchanges:
            self._exchanges.remove(exchange)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if (addr[0], addr[1]) != self.gateway:
            self.ignored += 1
            self._log.debug("NAT-PMP: ignored a datagram from {addr}", addr=addr)
            return
        for exchange in self._exchanges:
            answer = exchange.request.match(datagram)
            if answer is not None and exchange.done is not None:
                self._end(exchange)
                exchange.done.callback(answer)
                return
        self.ignored += 1
        self._log.debug("NAT-PMP: ignored {n} bytes answering nothing asked", n=len(datagram))

    def _fail(self, exchange: _Exchange, error: GatewayError) -> None:
        self._end(exchange)
        if exchange.done is not None:
            exchange.done.errback(error)

    def stopProtocol(self) -> None:
        for exchange in list(self._exchanges):
            self._fail(exchange, GatewayError("socket closed"))
