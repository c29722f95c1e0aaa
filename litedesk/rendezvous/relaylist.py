"""The relay servers handed to peers (hbbs C{-r}), with hbbs' health check.

Every C{interval} seconds, when more than one relay is configured, each is
probed with a TCP connect; the reachable ones become the active list (left
unchanged if none answers).  C{pick()} is a round robin over the active list.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.wire.address import parse_host_port

DEFAULT_RELAY_PORT = 21117


def parse_relay_list(text: str) -> list[str]:
    """Comma-separated list; entries that do not parse are dropped (as hbbs does)."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            parse_host_port(item, DEFAULT_RELAY_PORT)
        except ValueError:
            continue
        out.append(item)
    return out


class _Probe(Protocol):
    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


class _ProbeFactory(ClientFactory):
    def __init__(self, done: Deferred[bool]) -> None:
        self.done = done

    def buildProtocol(self, addr: object) -> Protocol:
        if not self.done.called:
            self.done.callback(True)
        return _Probe()

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        if not self.done.called:
            self.done.callback(False)


class RelayList:
    _log = Logger()

    def __init__(self, relays: Sequence[str], timeout: float = 3.0) -> None:
        self.configured = list(relays)
        self.active = list(relays)
        self.timeout = timeout
        self._next = 0

    def pick(self) -> str:
        if not self.active:
            return ""
        relay = self.active[self._next % len(self.active)]
        self._next += 1
        return relay

    def check(self, reactor: IReactorTCP) -> Deferred[None]:
        """Probe every configured relay once; update the active list."""
        if len(self.configured) < 2:
            return succeed(None)  # nothing to choose between
        probes: list[Deferred[bool]] = []
        for entry in self.configured:
            d: Deferred[bool] = Deferred()
            try:
                host, port = parse_host_port(entry, DEFAULT_RELAY_PORT)
                reactor.connectTCP(host, port, _ProbeFactory(d), timeout=self.timeout)
            except Exception:
                d.callback(False)
            probes.append(d)

        def update(results: list[tuple[bool, bool]]) -> None:
            up = [
                e for e, (ok, alive) in zip(self.configured, results, strict=True) if ok and alive
            ]
            if up and up != self.active:
                self._log.info(
                    "Active relay servers now {relays} (of {configured})",
                    relays=up,
                    configured=self.configured,
                )
                self.active = up
            elif not up:
                self._log.warn(
                    "No relay server answered the health check; keeping {relays}",
                    relays=self.active,
                )

        dl: Deferred[list[tuple[bool, bool]]] = DeferredList(probes)
        return dl.addCallback(update)
