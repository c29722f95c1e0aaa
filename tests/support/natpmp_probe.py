"""A stand-in host for the NAT-PMP/PCP lab tests, run inside a lab namespace.

C{python -m tests.support.natpmp_probe PORT LIFETIME [natpmp]} runs the host's
L{NatPmpService} with probe protocols instead of QUIC and sessions: UDP
PORT answers every datagram with C{b"echo " + datagram}, TCP PORT greets
each connection with C{b"session\\n"}, so a peer on the WAN can tell that
the gateway's mapping reaches the host.  The mapper asks for LIFETIME
seconds and talks to the namespace's default gateway (PCP, or only NAT-PMP
with C{natpmp}).  One JSON line on
stdout when the mapping stands (C{mapped}, C{external_ip}, C{tcp}); on
SIGTERM the service stops (the mappings are removed) and C{stopped} is
printed.  The log goes to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import globalLogBeginner, textFileLogObserver

from litedesk.host.natpmp_service import NatPmpService
from litedesk.nat.natpmp_mapper import NatPmpMapper

reactor: Any = _reactor


class Echo(DatagramProtocol):
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.transport.write(b"echo " + data, addr)  # type: ignore[union-attr]


class Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"session\n")  # type: ignore[union-attr]


def _say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main(argv: list[str]) -> None:
    port, lifetime = int(argv[0]), int(argv[1])
    pcp = argv[2:] != ["natpmp"]
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    mapper = NatPmpMapper(reactor, port, port, lifetime=lifetime, pcp=pcp)
    service = NatPmpService(reactor, mapper, Echo, Factory.forProtocol(Greeter))

    def report(port: int | None) -> None:
        _say(
            mapped=port or 0,
            external_ip=mapper.external_ip,
            tcp=mapper.tcp_mapped_port,
            version=mapper.version,
        )

    def started() -> None:
        service.startService()
        if service.mapping is not None:
            service.mapping.addCallback(report)

    def stopping() -> Any:
        d = service.stopService()
        d.addCallback(lambda _: _say(stopped=True))
        return d

    reactor.callWhenRunning(started)
    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
