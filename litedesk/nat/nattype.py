"""The NAT type test (docs/protocol.rst §7.4).

From one local port L, connect to the rendezvous server's port P and then to
P-1, sending C{TestNatRequest} on each; the server answers with the source
port it saw.  The same port twice means the NAT keeps one mapping per local
port whatever the destination (C{ASYMMETRIC}: punchable); different ports
mean a new mapping per destination (C{SYMMETRIC}: use the relay).

The decision and the retry schedule are plain functions; L{probe_nat_type}
does one test over the network and L{NatTypeMonitor} repeats it with
backoff (1, 3, 7, 15 ... s, capped) until a type is known.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, FirstError, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from litedesk.nat.sockets import (
    ConnectFailed,
    connect_from,
    family_of,
    local_port_of,
    reuse_socket,
)
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.session.links import LinkError, RendezvousLink
from litedesk.wire.address import DEFAULT_RENDEZVOUS_PORT, Address, parse_host_port

UNKNOWN = rz.UNKNOWN_NAT
ASYMMETRIC = rz.ASYMMETRIC
SYMMETRIC = rz.SYMMETRIC
NAMES: dict[int, str] = {UNKNOWN: "UNKNOWN_NAT", ASYMMETRIC: "ASYMMETRIC", SYMMETRIC: "SYMMETRIC"}
BACKOFF_CAP = 300.0
REFRESH = 600.0  # re-test a known NAT type this often (the network may change)
PROBE_TIMEOUT = 3.0

_log = Logger(namespace="litedesk.nat.nattype")


def classify(port_p: int, port_p_minus_1: int) -> int:
    """C{ASYMMETRIC} when both probes saw one public port, else C{SYMMETRIC}."""
    if port_p <= 0 or port_p_minus_1 <= 0:
        raise ValueError("a probe without an observed port cannot be classified")
    return ASYMMETRIC if port_p == port_p_minus_1 else SYMMETRIC


def backoff_delays(cap: float = BACKOFF_CAP) -> Iterator[float]:
    """1, 3, 7, 15, ... seconds (2**n - 1), never more than C{cap}."""
    n = 1
    while True:
        yield min(float(2**n - 1), cap)
        n += 1


def wildcard_for(host: str) -> str:
    return "::" if ":" in host else "0.0.0.0"


@dataclass(frozen=True)
class NatProbe:
    """One finished NAT test."""

    nat_type: int
    local: Address  # the local address of the probe sockets (L)
    ports: tuple[int, int]  # public ports the server saw on P and P-1
    #: The server's C{ConfigUpdate} (C{TestNatResponse.cu}), when it sent one.
    update: rz.ConfigUpdate | None = None


async def _ask_port(
    reactor: Any, local: Address, server: Address, serial: int, timeout: float
) -> tuple[int, Address, rz.ConfigUpdate | None]:
    link = RendezvousLink()
    try:
        await connect_from(reactor, local, server, link, timeout)
    except ConnectFailed as e:
        raise LinkError(f"NAT test: {e}") from None
    try:
        assert link.transport is not None
        bound = local_port_of(link.transport)
        link.send(rz.RendezvousMessage(test_nat_request=rz.TestNatRequest(serial=serial)))
        while True:
            msg = await link.next_message(reactor, timeout)
            if msg.WhichOneof("union") == "test_nat_response":
                tnr = msg.test_nat_response
                return int(tnr.port), bound, (tnr.cu if tnr.HasField("cu") else None)
    finally:
        link.close()
        closed = link.closed
        closed.addTimeout(1.0, reactor)
        with contextlib.suppress(Exception):
            await closed


async def probe_nat_type(
    reactor: Any, server: Address, serial: int = 0, timeout: float = PROBE_TIMEOUT
) -> NatProbe:
    """Run the two-port test once against an IP-literal C{server} (P and P-1).

    Both probes leave from one reserved local port at the same time (the
    spec runs them one after the other; in parallel the test costs one
    round trip less and decides the same).  Raises L{LinkError} when either
    probe gets no answer.
    """
    host, port = server
    wildcard = wildcard_for(host)
    try:
        reservation = reuse_socket(family_of(host), (wildcard, 0))
    except OSError as e:
        raise LinkError(f"NAT test: no local port ({e})") from None
    local = (wildcard, int(reservation.getsockname()[1]))
    probes = [
        ensureDeferred(_ask_port(reactor, local, server, serial, timeout)),
        ensureDeferred(_ask_port(reactor, local, (host, port - 1), serial, timeout)),
    ]
    try:
        answers = await gatherResults(probes, consumeErrors=True)
    except FirstError as e:
        for d in probes:  # the other probe cannot help any more
            d.cancel()
        for d in probes:
            with contextlib.suppress(Exception):
                await d
        error = e.subFailure.value
        if isinstance(error, LinkError):
            raise error from None
        raise LinkError(f"NAT test: {error}") from None
    finally:
        reservation.close()
    (first, bound, update), (second, _, _) = answers
    nat = classify(first, second)
    _log.info(
        "NAT test from port {port}: {a} / {b} -> {nat}",
        port=bound[1],
        a=first,
        b=second,
        nat=NAMES[nat],
    )
    return NatProbe(nat, bound, (first, second), update)


def resolve_ip(host: str, port: int) -> str:
    """The first address of C{host} (an IP literal is returned unchanged)."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return str(info[0][4][0])


class NatTypeMonitor:
    """Keeps testing until the NAT type is known; C{nat_type} is UNKNOWN until then.

    Once known, the test runs again every C{refresh} seconds (None: never),
    so a host that moved to another network notices; a failed re-test keeps
    the last known type and retries with backoff.  C{probe} is injected
    (tests pass a fake); C{clock} schedules the retries.
    """

    def __init__(
        self,
        clock: IReactorTime,
        probe: Callable[[], Deferred[NatProbe]],
        cap: float = BACKOFF_CAP,
        refresh: float | None = REFRESH,
    ) -> None:
        self.clock = clock
        self.probe = probe
        self.cap = cap
        self.refresh = refresh
        self.nat_type: int = UNKNOWN
        self.last: NatProbe | None = None
        self._delays = backoff_delays(cap)
        self._call: Any = None
        self._running = False
        self._waiters: list[Deferred[int]] = []

    def start(self) -> None:
        self._running = True
        self._attempt()

    def stop(self) -> None:
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def known(self) -> Deferred[int]:
        """Fires with the NAT type once one is known."""
        if self.nat_type != UNKNOWN:
            return Deferred.fromCoroutine(self._now())
        d: Deferred[int] = Deferred()
        self._waiters.append(d)
        return d

    async def _now(self) -> int:
        return self.nat_type

    def _attempt(self) -> None:
        self._call = None
        if not self._running:
            return
        d = self.probe()
        d.addCallbacks(self._done, self._failed)

    def _done(self, result: NatProbe) -> None:
        if self.nat_type not in (UNKNOWN, result.nat_type):
            _log.info(
                "NAT type changed: {old} -> {new}",
                old=NAMES[self.nat_type],
                new=NAMES[result.nat_type],
            )
        self.last = result
        self.nat_type = result.nat_type
        self._delays = backoff_delays(self.cap)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.callback(self.nat_type)
        if self._running and self.refresh is not None:
            self._call = self.clock.callLater(self.refresh, self._attempt)

    def _failed(self, failure: Any) -> None:
        delay = next(self._delays)
        _log.warn(
            "NAT test failed ({error}); again in {delay} s",
            error=failure.getErrorMessage(),
            delay=delay,
        )
        if self._running:
            self._call = self.clock.callLater(delay, self._attempt)


def monitor_for(reactor: Any, server: Address) -> NatTypeMonitor:
    """A monitor probing C{server} (host, P) over the network."""

    def probe() -> Deferred[NatProbe]:
        async def run() -> NatProbe:
            ip = resolve_ip(*server)
            return await probe_nat_type(reactor, (ip, server[1]))

        return ensureDeferred(run())

    return NatTypeMonitor(reactor, probe)


class NatTypeService(Service):
    """Runs a L{NatTypeMonitor} while the service runs (the host's NAT test)."""

    def __init__(self, monitor: NatTypeMonitor) -> None:
        self.monitor = monitor

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.monitor.start()

    def stopService(self) -> Deferred[None] | None:
        self.monitor.stop()
        return super().stopService()  # type: ignore[no-any-return,no-untyped-call]


def main(argv: list[str] | None = None) -> None:
    """C{python -m litedesk.nat.nattype HOST[:PORT]}: run the test once, print JSON."""
    import argparse
    import json
    import sys

    from twisted.internet.task import react

    p = argparse.ArgumentParser(prog="python -m litedesk.nat.nattype")
    p.add_argument("server", help="rendezvous server HOST[:PORT] (the NAT test uses PORT-1 too)")
    args = p.parse_args(argv)
    server = parse_host_port(args.server, DEFAULT_RENDEZVOUS_PORT)

    async def run(reactor: Any) -> None:
        try:
            r = await probe_nat_type(reactor, (resolve_ip(*server), server[1]))
        except (LinkError, OSError) as e:
            print(f"NAT test failed: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        print(
            json.dumps(
                {"nat_type": NAMES[r.nat_type], "local": list(r.local), "ports": list(r.ports)}
            )
        )

    react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
